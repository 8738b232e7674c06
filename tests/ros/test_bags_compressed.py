"""Compressed bags (image_transport's compressed / compressedDepth layouts): written by the bag writer, read by
``mirage build-cache`` through the node's own ingest. Lossless PNG gives the very memory of the raw bag."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def rig():
    from mirage_ros.sim.rig import RigConfig, SyntheticRig

    return SyntheticRig(RigConfig(height=48, width=64, num_frames=12, trajectory="orbit"))


@pytest.fixture(scope="module")
def world_model():
    from mirage.pipeline import MirageWorldModel

    return MirageWorldModel.from_pretrained("tiny", num_inference_steps=2)


COMPRESSED_TOPICS = {"rgb": "/rgb/image/compressed", "depth": "/depth/image/compressedDepth"}


def test_compressed_bag_layout(rig, tmp_path):
    from rosbags.rosbag2 import Reader

    from mirage_ros.bags.write import typestore, write_rig_bag
    from mirage_ros.conversions import compressed as cc

    path = write_rig_bag(tmp_path / "bag", rig, 2, transport="compressed", progress=False)
    ts = typestore()
    with Reader(path) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types["/rgb/image/compressed"] == types["/depth/image/compressedDepth"] == \
            "sensor_msgs/msg/CompressedImage"
        assert "/rgb/image" not in types
        conn = next(c for c in reader.connections if c.topic == "/depth/image/compressedDepth")
        _, _, raw = next(reader.messages(connections=[conn]))
        msg = ts.deserialize_cdr(raw, conn.msgtype)
        assert msg.format == "16UC1; compressedDepth png"
        np.testing.assert_array_equal(cc.compressed_to_depth(msg), rig.frame(0).depth * np.float32(1e-3))
    with pytest.raises(ValueError, match="transport"):
        write_rig_bag(tmp_path / "x", rig, 1, transport="theora", progress=False)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_build_cache_from_a_compressed_bag(rig, world_model, tmp_path, fmt):
    from mirage_ros.bags.build_memory import build_cache
    from mirage_ros.bags.write import write_rig_bag

    raw = write_rig_bag(tmp_path / "raw", rig, 6, progress=False)
    packed = write_rig_bag(tmp_path / "packed", rig, 6, transport="compressed", compressed_format=fmt, progress=False)
    m_raw, s_raw = build_cache(raw, None, world_model, progress=False, log=lambda m: None)
    m_c, s_c = build_cache(packed, None, world_model, topics=COMPRESSED_TOPICS, progress=False, log=lambda m: None)
    assert s_c.frames_in == s_raw.frames_in == 6 and s_c.frames_rejected == 0
    assert s_c.keyframes == s_raw.keyframes >= 2
    assert torch.equal(m_c.points, m_raw.points)  # depth is lossless either way
    if fmt == "png":
        assert torch.equal(m_c.features, m_raw.features) and torch.equal(m_c.colors, m_raw.colors)
    else:
        assert (m_c.colors.int() - m_raw.colors.int()).abs().float().mean() < 8
