"""mirage_ros.conversions.image: sensor_msgs/Image <-> numpy (colour, depth, padding, byte order).

Readers are tested on plain namespaces (what rosbags messages look like) so they run without ROS; writers and
round trips through real rclpy messages are marked ``ros``.
"""

from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch

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
