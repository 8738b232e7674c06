"""mirage_ros.conversions: Image / CameraInfo / PointCloud2 / Pose <-> numpy and mirage types.

Readers are tested on plain namespaces (what rosbags messages look like) so they run without ROS; writers and
round trips through real rclpy messages are marked ``ros``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch

from mirage.camera import intrinsics_from_opencv, pose_from_tq
from mirage_ros import conversions as conv


def fake_image(array: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> NS:
    """A duck-typed sensor_msgs/Image with ``pad`` bytes of junk after each row."""
    height, width = array.shape[:2]
    order = ">" if bigendian else "<"
    rows = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(order)).reshape(height, -1).view(np.uint8)
    junk = np.full((height, pad), 0xAB, dtype=np.uint8)
    data = np.concatenate([rows, junk], axis=1).reshape(-1)
    return NS(height=height, width=width, encoding=encoding, is_bigendian=int(bigendian), step=rows.shape[1] + pad,
              data=data.tobytes(), header=NS(stamp=NS(sec=1, nanosec=5), frame_id="cam"))


# ----------------------------------------------------------------------------------------------- images
@pytest.mark.parametrize("encoding,channels", [("rgb8", 3), ("bgr8", 3), ("rgba8", 4), ("bgra8", 4), ("mono8", 1)])
@pytest.mark.parametrize("pad", [0, 3])
def test_colour_images_decode_with_padding(encoding, channels, pad):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 7, channels), dtype=np.uint8)
    msg = fake_image(pixels if channels > 1 else pixels[..., 0], encoding, pad=pad)
    decoded = conv.image_to_numpy(msg)
    assert decoded.shape == ((5, 7, channels) if channels > 1 else (5, 7))
    np.testing.assert_array_equal(decoded.reshape(5, 7, channels), pixels)
    rgb = conv.image_to_rgb(msg)
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8
    if encoding.startswith("rgb"):
        expected = pixels[..., :3]
    elif encoding.startswith("bgr"):
        expected = pixels[..., 2::-1]
    else:
        expected = np.repeat(pixels, 3, axis=2)
    np.testing.assert_array_equal(rgb, expected)


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 2])
def test_depth_16uc1_is_millimetres_with_zero_invalid(bigendian, pad):
    mm = np.array([[0, 1, 1000], [1500, 65535, 250]], dtype=np.uint16)
    depth = conv.image_to_depth(fake_image(mm, "16UC1", pad=pad, bigendian=bigendian))
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, mm.astype(np.float64) / 1000.0, rtol=1e-6)
    assert depth[0, 0] == 0.0


@pytest.mark.parametrize("bigendian", [False, True])
def test_depth_32fc1_non_finite_and_negative_become_zero(bigendian):
    metres = np.array([[1.25, np.nan, np.inf], [-2.0, 0.0, 3.5]], dtype=np.float32)
    depth = conv.image_to_depth(fake_image(metres, "32FC1", pad=4, bigendian=bigendian))
    np.testing.assert_array_equal(depth, np.array([[1.25, 0, 0], [0, 0, 3.5]], dtype=np.float32))


def test_image_errors_name_the_problem():
    msg = fake_image(np.zeros((4, 4, 3), np.uint8), "rgb8")
    msg.encoding = "yuv422"
    with pytest.raises(ValueError, match="unsupported image encoding 'yuv422'"):
        conv.image_to_numpy(msg)
    msg = fake_image(np.zeros((4, 4, 3), np.uint8), "rgb8")
    msg.data = msg.data[:-1]
    with pytest.raises(ValueError, match="expected step\\*height"):
        conv.image_to_numpy(msg)
    msg = fake_image(np.zeros((4, 4, 3), np.uint8), "rgb8")
    msg.step = 11
    with pytest.raises(ValueError, match="step 11 is smaller"):
        conv.image_to_numpy(msg)
    with pytest.raises(ValueError, match="depth encoding"):
        conv.image_to_depth(fake_image(np.zeros((2, 2, 3), np.uint8), "rgb8"))
    with pytest.raises(ValueError, match="image_to_depth"):
        conv.image_to_rgb(fake_image(np.zeros((2, 2), np.uint16), "16UC1"))


def test_image_writer_validates_before_building():
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\)"):
        conv.numpy_to_image(np.zeros((4, 4), np.uint8), "rgb8")
    with pytest.raises(ValueError, match="dtype uint8"):
        conv.numpy_to_image(np.zeros((4, 4, 3), np.float32), "rgb8")
    with pytest.raises(ValueError, match="unsupported"):
        conv.depth_to_image(np.ones((2, 2)), "8UC1")


# ------------------------------------------------------------------------------------------- camera info
def fake_info(K_cv, height, width, binning=(0, 0), roi=(0, 0, 0, 0)) -> NS:
    x, y, h, w = roi
    return NS(k=list(np.asarray(K_cv, float).reshape(-1)), height=height, width=width, binning_x=binning[0],
              binning_y=binning[1], roi=NS(x_offset=x, y_offset=y, height=h, width=w, do_rectify=False))


def test_camera_info_moves_principal_point_to_pixel_centre_convention():
    K_cv = [[500.0, 0, 319.5], [0, 510.0, 239.5], [0, 0, 1]]
    K, size = conv.camera_info_to_intrinsics(fake_info(K_cv, 480, 640), image_size=(480, 640))
    assert size == (480, 640)
    torch.testing.assert_close(K, intrinsics_from_opencv(np.array(K_cv)))
    assert K[0, 2].item() == pytest.approx(320.0) and K[1, 2].item() == pytest.approx(240.0)


def test_camera_info_binning_and_roi():
    K_cv = np.array([[400.0, 0, 199.5], [0, 400.0, 99.5], [0, 0, 1]])
    K, size = conv.camera_info_to_intrinsics(fake_info(K_cv, 200, 400, binning=(2, 2)))
    assert size == (100, 200)
    torch.testing.assert_close(K, torch.tensor([[200.0, 0, 100.0], [0, 200.0, 50.0], [0, 0, 1]]))
    K, size = conv.camera_info_to_intrinsics(fake_info(K_cv, 200, 400, roi=(10, 20, 100, 50)))
    assert size == (100, 50)
    torch.testing.assert_close(K, torch.tensor([[400.0, 0, 190.0], [0, 400.0, 80.0], [0, 0, 1]]))


def test_camera_info_rejects_uncalibrated_and_mismatched():
    with pytest.raises(ValueError, match="zero or negative focal length"):
        conv.camera_info_to_intrinsics(fake_info(np.zeros((3, 3)), 480, 640))
    with pytest.raises(ValueError, match="describes a 480x640 image but the image is 240x320"):
        conv.camera_info_to_intrinsics(fake_info(np.diag([500.0, 500.0, 1.0]), 480, 640), image_size=(240, 320))
    with pytest.raises(ValueError, match="9 entries"):
        conv.camera_info_to_intrinsics(NS(k=[1.0, 2.0], height=4, width=4))


# ----------------------------------------------------------------------------------------- point clouds
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


# ----------------------------------------------------------------------------------------------- poses
def fake_pose(t, q) -> NS:
    return NS(position=NS(x=t[0], y=t[1], z=t[2]), orientation=NS(x=q[0], y=q[1], z=q[2], w=q[3]))


def test_pose_and_transform_to_matrix():
    q = [0.0, 0.0, math.sin(math.pi / 8), math.cos(math.pi / 8)]  # 45 degrees about z
    T = conv.pose_to_matrix(fake_pose([1.0, 2.0, 3.0], q))
    torch.testing.assert_close(T, pose_from_tq([1.0, 2.0, 3.0], q))
    assert T[0, 0].item() == pytest.approx(math.sqrt(0.5), abs=1e-6)
    tf = NS(translation=NS(x=1.0, y=2.0, z=3.0), rotation=NS(x=q[0], y=q[1], z=q[2], w=q[3]))
    torch.testing.assert_close(conv.transform_to_matrix(tf), T)


def test_non_unit_quaternion_rejected_unless_normalised():
    pose = fake_pose([0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="not unit length"):
        conv.pose_to_matrix(pose)
    torch.testing.assert_close(conv.pose_to_matrix(pose, normalize=True), torch.eye(4))


def test_stamp_conversions():
    assert conv.stamp_to_ns(NS(sec=3, nanosec=7)) == 3_000_000_007
    assert conv.stamp_to_ns(NS(nanoseconds=42)) == 42
    assert conv.stamp_to_ns(5) == 5
    with pytest.raises(ValueError):
        conv.stamp_to_ns("now")


# ------------------------------------------------------------------------------- rclpy message round trips
@pytest.mark.ros
@pytest.mark.parametrize("encoding,shape,dtype", [("rgb8", (6, 5, 3), np.uint8), ("bgra8", (6, 5, 4), np.uint8),
                                                  ("mono8", (6, 5), np.uint8), ("16UC1", (6, 5), np.uint16),
                                                  ("32FC1", (6, 5), np.float32)])
def test_rclpy_image_round_trip(encoding, shape, dtype):
    from sensor_msgs.msg import Image

    rng = np.random.default_rng(3)
    array = (rng.random(shape) * 200).astype(dtype)
    msg = conv.numpy_to_image(array, encoding, stamp=1_500_000_001, frame_id="cam")
    assert isinstance(msg, Image) and msg.header.stamp.sec == 1 and msg.header.stamp.nanosec == 500_000_001
    assert msg.step == shape[1] * (shape[2] if len(shape) == 3 else 1) * np.dtype(dtype).itemsize
    np.testing.assert_array_equal(conv.image_to_numpy(msg), array)


@pytest.mark.ros
def test_rclpy_depth_round_trip():
    depth = np.array([[0.5, 1.2345, np.nan], [70.0, -1.0, 2.0]], dtype=np.float32)
    back16 = conv.image_to_depth(conv.depth_to_image(depth, "16UC1"))
    np.testing.assert_allclose(back16, [[0.5, 1.234, 0], [0, 0, 2.0]], atol=1e-3)  # 70 m does not fit in mm
    back32 = conv.image_to_depth(conv.depth_to_image(torch.from_numpy(depth), "32FC1"))
    np.testing.assert_array_equal(back32, np.array([[0.5, 1.2345, 0], [70.0, 0, 2.0]], dtype=np.float32))


@pytest.mark.ros
def test_rclpy_camera_info_round_trip():
    from sensor_msgs.msg import CameraInfo

    K = torch.tensor([[300.0, 0.0, 160.0], [0.0, 310.0, 120.0], [0.0, 0.0, 1.0]])
    info = conv.intrinsics_to_camera_info(K, 240, 320, stamp=7, frame_id="cam_optical")
    assert isinstance(info, CameraInfo) and info.header.frame_id == "cam_optical"
    assert info.k[2] == pytest.approx(159.5) and info.p[3] == 0.0 and list(info.d) == [0.0] * 5
    K2, size = conv.camera_info_to_intrinsics(info, image_size=(240, 320))
    assert size == (240, 320)
    torch.testing.assert_close(K2, K)


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


@pytest.mark.ros
def test_rclpy_pose_round_trip():
    q = np.array([0.1, -0.2, 0.3, 0.9])
    q /= np.linalg.norm(q)
    T = pose_from_tq([0.5, -1.0, 2.0], q)
    torch.testing.assert_close(conv.pose_to_matrix(conv.matrix_to_pose(T)), T, atol=1e-6, rtol=0)
    torch.testing.assert_close(conv.transform_to_matrix(conv.matrix_to_transform(T.numpy())), T, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"shape \(4, 4\)"):
        conv.matrix_to_pose(np.eye(3))
