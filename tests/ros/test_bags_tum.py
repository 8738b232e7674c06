"""``mirage tum-to-bag`` on the committed TUM fr1/rpy slice: the bag holds the loader's frames, poses and camera; the
offline tools read it; the node replaying it builds the same memory as ``mirage build-cache``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SLICE = Path(__file__).parent.parent / "data" / "tum_fr1_rpy_slice"
FRAMES = 12


@pytest.fixture(scope="module")
def sequence():
    from mirage.data.tum import TUMSequence

    return TUMSequence(SLICE)


@pytest.fixture(scope="module")
def tum_bag(sequence, tmp_path_factory):
    from mirage_ros.bags.tum import write_tum_bag

    return write_tum_bag(tmp_path_factory.mktemp("tum") / "fr1_rpy", sequence, indices=range(FRAMES), progress=False)


@pytest.fixture(scope="module")
def world_model():
    from mirage.pipeline import MirageWorldModel

    return MirageWorldModel.from_pretrained("tiny", num_inference_steps=1)


def test_bag_holds_the_loaders_frames_poses_and_camera(tum_bag, sequence):
    from rosbags.rosbag2 import Reader

    from mirage_ros import conversions as conv
    from mirage_ros.bags.eval_recording import read_bag_recording
    from mirage_ros.bags.read import typestore

    ts = typestore()
    with Reader(tum_bag) as reader:
        assert {c.topic: (c.msgtype, c.msgcount) for c in reader.connections} == {
            "/rgb/image": ("sensor_msgs/msg/Image", FRAMES), "/depth/image": ("sensor_msgs/msg/Image", FRAMES),
            "/rgb/camera_info": ("sensor_msgs/msg/CameraInfo", FRAMES), "/tf": ("tf2_msgs/msg/TFMessage", FRAMES)}
        assert "mcap" in {p.suffix.lstrip(".") for p in Path(tum_bag).iterdir()}
        for conn, t_ns, raw in reader.messages():
            msg = ts.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == "/depth/image":
                assert msg.encoding == "32FC1" and msg.header.frame_id == "openni_rgb_optical_frame"
                i = int(np.argmin(np.abs(sequence.stamps - t_ns / 1e9)))
                depth = conv.image_to_numpy(msg)  # the wire values (image_to_depth maps holes to 0)
                truth = sequence.frame(i)[1]
                np.testing.assert_array_equal(np.isnan(depth), np.isnan(truth))  # NaN holes, as loaded
                np.testing.assert_array_equal(depth[~np.isnan(depth)], truth[~np.isnan(truth)])
            elif conn.topic == "/rgb/image":
                assert msg.encoding == "rgb8"
            elif conn.topic == "/tf":
                (tf,) = msg.transforms
                assert (tf.header.frame_id, tf.child_frame_id) == ("odom", "openni_rgb_optical_frame")
                assert t_ns == conv.stamp_to_ns(tf.header.stamp)
    recording = read_bag_recording(tum_bag, sequence.image_size, world_frame="odom")
    clip = sequence.clip(range(FRAMES))
    assert recording.skipped == {} and recording.clip.num_frames == FRAMES
    np.testing.assert_allclose(recording.stamps, sequence.stamps[:FRAMES], atol=1e-6)
    torch.testing.assert_close(recording.clip.rgb, clip.rgb, atol=0.5 / 255 + 1e-6, rtol=0)  # 8-bit both ways
    np.testing.assert_allclose(recording.clip.cam_to_world.numpy(), clip.cam_to_world.numpy(), atol=1e-5)
    np.testing.assert_allclose(recording.clip.intrinsics.numpy(), clip.intrinsics.numpy(), atol=1e-4)


def test_resized_bag_and_bad_arguments(sequence, tmp_path):
    from mirage_ros.bags.eval_recording import read_bag_recording
    from mirage_ros.bags.tum import write_tum_bag

    path = write_tum_bag(tmp_path / "small", sequence, image_size=(64, 96), indices=[0, 2, 4], storage="sqlite3",
                         progress=False)
    recording = read_bag_recording(path, (64, 96))
    np.testing.assert_allclose(recording.clip.intrinsics[0].numpy(), sequence.clip([0], (64, 96)).intrinsics[0],
                               atol=1e-4)
    with pytest.raises(FileExistsError):
        write_tum_bag(path, sequence, progress=False)
    with pytest.raises(ValueError, match="storage"):
        write_tum_bag(tmp_path / "x", sequence, storage="zip", progress=False)
    with pytest.raises(ValueError, match="frame indices"):
        write_tum_bag(tmp_path / "y", sequence, indices=[36], progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_cli_converts_then_build_cache_and_eval_bag_read_it(tmp_path, capsys):
    import json

    from mirage.cli import main

    bag = tmp_path / "bag"
    assert main(["tum-to-bag", "--tum", str(SLICE), "--out", str(bag), "--frames", "24", "--height", "64",
                 "--width", "96"]) == 0
    assert "wrote 24 frames of tum_fr1_rpy_slice" in capsys.readouterr().out
    assert main(["tum-to-bag", "--tum", str(SLICE), "--out", str(bag)]) == 2  # exists
    assert main(["tum-to-bag", "--tum", str(tmp_path / "missing"), "--out", str(tmp_path / "b2")]) == 2
    assert main(["tum-to-bag", "--tum", str(SLICE), "--out", str(tmp_path / "b3"), "--height", "64"]) == 2
    assert "give both --height and --width" in capsys.readouterr().err
    assert main(["build-cache", "--bag", str(bag), "--out", str(tmp_path / "m.safetensors"), "--model", "tiny"]) == 0
    assert "24 frames" in capsys.readouterr().out and (tmp_path / "m.safetensors").exists()
    out = tmp_path / "eval"
    assert main(["eval-bag", "--bag", str(bag), "--output", str(out), "--model", "tiny", "--steps", "1",
                 "--methods", "latent", "repeat_first", "--no-video", "--no-consistency"]) == 0
    table = json.loads((out / "results.json").read_text())["table"]
    assert set(table) == {"latent", "repeat_first"} and 0 < table["latent"]["coverage"] <= 1


@pytest.mark.ros
def test_node_replaying_a_tum_bag_builds_the_offline_memory(tum_bag, world_model):
    """The launch file's ``bag:=`` replay path (mirage_ros.bags.replay with its default topics) into a node on sim
    time: the same memory as ``mirage build-cache`` on the bag."""
    from test_bags import DOMAIN, WAIT, _node  # tests/ros is on sys.path (pytest's prepend import mode)

    from mirage_ros.bags.build_memory import build_cache
    from mirage_ros.bags.replay import BagReplayer
    from mirage_ros.run import LocalGraph

    offline, stats = build_cache(tum_bag, None, world_model, progress=False)
    with LocalGraph(domain_id=DOMAIN) as graph:
        node = _node(graph, world_model, "mirage_tum", sim_time=True)
        replayer = BagReplayer(graph.node("tum_player"), tum_bag, rate=1.0)
        assert replayer.wait_for(1, timeout=WAIT)
        assert replayer.play() == 4 * FRAMES
        graph.wait_until(lambda: node.ingestor.stats.frames_in == FRAMES and node.worker.wait_idle(0.05), WAIT,
                         "replayed TUM frames")
        memory = node.holder.memory
        assert node.ingestor.stats.keyframes == stats.keyframes
    assert len(offline) > 0 and len(memory) == len(offline)
    np.testing.assert_allclose(memory.points.numpy(), offline.points.numpy(), atol=1e-6)
    np.testing.assert_allclose(memory.features.float().numpy(), offline.features.float().numpy(), atol=1e-5)
