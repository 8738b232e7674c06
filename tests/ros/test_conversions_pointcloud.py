"""mirage_ros.conversions.pointcloud: PointCloud2 <-> numpy (offsets, padding, byte order, budget).

Readers are tested on plain namespaces (what rosbags messages look like) so they run without ROS; writers and
round trips through real rclpy messages are marked ``ros``.
"""

from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch

from mirage_ros import conversions as conv


def fake_cloud(xyz: np.ndarray, rgb: np.ndarray | None, row_pad: int = 0, bigendian: bool = False,
               float64: bool = False) -> NS:
    order = ">" if bigendian else "<"
    ftype = order + ("f8" if float64 else "f4")
    names = ["x", "y", "z"] + (["rgb"] if rgb is not None else [])
    # an unrelated field first, so offsets are not 0/4/8
    formats = [order + "u2"] + [ftype] * 3 + ([order + "u4"] if rgb is not None else [])
    record = np.dtype({"names": ["ring"] + names, "formats": formats})
    pts = np.zeros(len(xyz), record)
    pts["x"], pts["y"], pts["z"] = xyz.T
    if rgb is not None:
        pts["rgb"] = (rgb[:, 0].astype(np.uint32) << 16) | (rgb[:, 1].astype(np.uint32) << 8) | rgb[:, 2]
    height = 2
    width = len(xyz) // height
    rows = pts.view(np.uint8).reshape(height, width * record.itemsize)
    data = np.concatenate([rows, np.zeros((height, row_pad), np.uint8)], axis=1).reshape(-1)
    fields = [NS(name=n, offset=record.fields[n][1], datatype={"u2": 4, "u4": 6, "f4": 7, "f8": 8}[
        record.fields[n][0].str[1:]], count=1) for n in ["ring"] + names]
    return NS(height=height, width=width, fields=fields, is_bigendian=bigendian, point_step=record.itemsize,
              row_step=width * record.itemsize + row_pad, data=data.tobytes(), is_dense=False)


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("float64", [False, True])
def test_pointcloud_reader_handles_offsets_padding_and_byte_order(bigendian, float64):
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(10, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (10, 3), dtype=np.uint8)
    xyz[3] = np.nan  # organised clouds mark missing points with NaN
    out_xyz, out_rgb = conv.pointcloud2_to_numpy(fake_cloud(xyz, rgb, row_pad=5, bigendian=bigendian,
                                                            float64=float64))
    keep = np.isfinite(xyz).all(axis=1)
    np.testing.assert_array_equal(out_xyz, xyz[keep])
    np.testing.assert_array_equal(out_rgb, rgb[keep])
    out_xyz, out_rgb = conv.pointcloud2_to_numpy(fake_cloud(xyz, None))
    assert out_rgb is None and len(out_xyz) == 9


def test_pointcloud_budget_is_deterministic_subset():
    rng = np.random.default_rng(2)
    xyz = rng.normal(size=(400, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (400, 3), dtype=np.uint8)
    a, ca = conv.pointcloud2_to_numpy(fake_cloud(xyz, rgb), max_points=50)
    b, cb = conv.pointcloud2_to_numpy(fake_cloud(xyz, rgb), max_points=50)
    assert a.shape == (50, 3)
    np.testing.assert_array_equal(a, b)
    rows = {tuple(p) for p in xyz.tolist()}
    assert all(tuple(p) in rows for p in a.tolist())  # a subset of the input, colours kept with their points
    index = [int(np.flatnonzero((xyz == p).all(axis=1))[0]) for p in a]
    np.testing.assert_array_equal(ca, rgb[index])
    assert index == sorted(index)


def test_pack_rgb_bits():
    packed = conv.pack_rgb(np.array([[0x12, 0x34, 0x56]], np.uint8))
    assert packed.dtype == np.float32 and packed.view(np.uint32)[0] == 0x00123456
    np.testing.assert_array_equal(conv.unpack_rgb(packed), [[0x12, 0x34, 0x56]])


def test_pointcloud_reader_errors():
    cloud = fake_cloud(np.zeros((4, 3), np.float32), None)
    cloud.fields = [f for f in cloud.fields if f.name != "z"]
    with pytest.raises(ValueError, match=r"lacks the fields \['z'\]"):
        conv.pointcloud2_to_numpy(cloud)
    cloud = fake_cloud(np.zeros((4, 3), np.float32), None)
    cloud.data = cloud.data[:-1]
    with pytest.raises(ValueError, match="expected row_step\\*height"):
        conv.pointcloud2_to_numpy(cloud)


@pytest.mark.ros
def test_rclpy_pointcloud_round_trip_and_budget():
    from sensor_msgs.msg import PointCloud2

    rng = np.random.default_rng(4)
    xyz = rng.normal(size=(300, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (300, 3), dtype=np.uint8)
    msg = conv.numpy_to_pointcloud2(xyz, rgb, frame_id="odom", stamp=3)
    assert isinstance(msg, PointCloud2) and msg.width == 300 and msg.point_step == 16
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb"]
    out_xyz, out_rgb = conv.pointcloud2_to_numpy(msg)
    np.testing.assert_array_equal(out_xyz, xyz)
    np.testing.assert_array_equal(out_rgb, rgb)
    small = conv.numpy_to_pointcloud2(torch.from_numpy(xyz), None, max_points=40)
    assert small.width == 40 and small.point_step == 12
    with pytest.raises(ValueError, match="uint8"):
        conv.numpy_to_pointcloud2(xyz, rgb.astype(np.float32))
