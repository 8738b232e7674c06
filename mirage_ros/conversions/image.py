"""sensor_msgs/Image <-> numpy: colour (rgb8, bgr8, rgba8, bgra8, mono8) and depth (16UC1 mm, 32FC1 m).

Depth follows mirage's convention: metres, 0 meaning "no depth". Readers are duck-typed (rclpy and ``rosbags``
messages alike); writers build rclpy messages, imported lazily, unless ``msg_type`` names another class.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mirage_ros.conversions._buffers import as_uint8, message_bytes
from mirage_ros.conversions.time import fill_header

__all__ = ["IMAGE_ENCODINGS", "DEPTH_ENCODINGS", "COLOUR_ENCODINGS", "image_to_numpy", "encode_image",
           "numpy_to_image", "image_to_rgb", "image_to_depth", "depth_to_image"]

# encoding -> (numpy dtype of one channel, channels)
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
DEPTH_ENCODINGS = ("16UC1", "32FC1")
COLOUR_ENCODINGS = tuple(sorted(set(IMAGE_ENCODINGS) - set(DEPTH_ENCODINGS)))


def image_to_numpy(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> (H, W) or (H, W, C) array of the encoding's dtype in native byte order (a copy).

    Row padding (``step`` larger than a row) is dropped and ``is_bigendian`` honoured. Raises ValueError on an
    unknown encoding or when ``step`` / the data size do not fit ``height`` x ``width``.
    """
    pixels = _wire_pixels(msg)
    return pixels.astype(pixels.dtype.newbyteorder("="), copy=True)


def _wire_pixels(msg: Any) -> np.ndarray:
    """:func:`image_to_numpy` without the copy: the message's own bytes where the rows have no padding, in the
    wire's byte order (read-only use; a converter makes its own output array from it)."""
    encoding = str(msg.encoding)
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}; supported: {sorted(IMAGE_ENCODINGS)}")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    if height <= 0 or width <= 0:
        raise ValueError(f"image has an empty size {height}x{width}")
    if step < row_bytes:
        raise ValueError(f"image step {step} is smaller than one {encoding} row of {width} pixels ({row_bytes} bytes)")
    data = as_uint8(msg.data)
    if data.size != step * height:
        raise ValueError(f"image data has {data.size} bytes, expected step*height = {step}*{height} = {step * height}")
    rows = data.reshape(height, step)[:, :row_bytes]
    wire = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    pixels = np.ascontiguousarray(rows).view(wire)
    return pixels.reshape(height, width) if channels == 1 else pixels.reshape(height, width, channels)


def encode_image(array: np.ndarray, encoding: str) -> tuple[int, int, int, bytes]:
    """(H, W) or (H, W, C) array -> (height, width, step, little-endian bytes without padding) of ``encoding``.

    The wire layout shared by :func:`numpy_to_image` (rclpy messages) and the bag writer (rosbags messages).
    Raises ValueError when the shape or dtype does not fit the encoding.
    """
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}; supported: {sorted(IMAGE_ENCODINGS)}")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    array = np.asarray(array)
    expected = 2 if channels == 1 else 3
    if array.ndim == 3 and channels == 1 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != expected or (channels > 1 and array.shape[2] != channels):
        raise ValueError(f"{encoding} needs an array of shape (H, W{'' if channels == 1 else f', {channels}'}), "
                         f"got {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image has an empty size {array.shape[:2]}")
    if array.dtype != dtype:
        raise ValueError(f"{encoding} needs dtype {dtype}, got {array.dtype}")
    little = np.ascontiguousarray(array, dtype=dtype.newbyteorder("<"))
    return int(array.shape[0]), int(array.shape[1]), int(array.shape[1] * channels * dtype.itemsize), little.tobytes()


def numpy_to_image(array: np.ndarray, encoding: str, *, stamp: Any = None, frame_id: str = "",
                   msg_type: type | None = None) -> Any:
    """(H, W) or (H, W, C) array -> sensor_msgs/Image with the given encoding (little-endian, no padding).

    ``stamp``: builtin_interfaces/Time or int nanoseconds. ``msg_type`` defaults to sensor_msgs.msg.Image.
    """
    height, width, step, raw = encode_image(array, encoding)
    if msg_type is None:
        from sensor_msgs.msg import Image as msg_type
    msg = msg_type()
    fill_header(msg, stamp, frame_id)
    msg.height, msg.width = height, width
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = step
    msg.data = message_bytes(msg, raw)
    return msg


def image_to_rgb(msg: Any) -> np.ndarray:
    """Colour or mono8 sensor_msgs/Image -> (H, W, 3) uint8 RGB (alpha dropped, BGR swapped, grey replicated)."""
    pixels = image_to_numpy(msg)
    encoding = str(msg.encoding)
    if encoding in DEPTH_ENCODINGS:
        raise ValueError(f"{encoding} is a depth encoding; use image_to_depth")
    if encoding == "mono8":
        return np.repeat(pixels[..., None], 3, axis=2)
    rgb = pixels[..., :3]
    return np.ascontiguousarray(rgb[..., ::-1] if encoding.startswith("bgr") else rgb)


def image_to_depth(msg: Any) -> np.ndarray:
    """Depth sensor_msgs/Image -> (H, W) float32 metres, 0 where there is no depth.

    16UC1 is millimetres (0 = invalid); 32FC1 is metres (NaN, inf and values <= 0 are invalid).
    """
    encoding = str(msg.encoding)
    if encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"unsupported depth encoding {encoding!r}; expected one of {DEPTH_ENCODINGS}")
    raw = _wire_pixels(msg)  # no copy: each branch writes a new float32 array in one pass
    if encoding == "16UC1":
        return np.multiply(raw, np.float32(1e-3), dtype=np.float32)
    return np.where(np.isfinite(raw) & (raw > 0), raw, np.float32(0.0)).astype(np.float32, copy=False)


def depth_to_image(depth: np.ndarray | torch.Tensor, encoding: str = "32FC1", *, stamp: Any = None,
                   frame_id: str = "", msg_type: type | None = None) -> Any:
    """(H, W) depth in metres -> sensor_msgs/Image. Invalid depth (<= 0, NaN, inf) is written as 0 (16UC1) or NaN
    (32FC1); for 16UC1, depth beyond 65.535 m cannot be represented and is written as 0 (invalid)."""
    if isinstance(depth, torch.Tensor):
        depth = depth.detach().cpu().numpy()
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must have shape (H, W), got {depth.shape}")
    valid = np.isfinite(depth) & (depth > 0)
    if encoding == "16UC1":
        mm = np.where(valid, np.round(depth * 1000.0), 0.0)
        mm = np.where(mm > np.iinfo(np.uint16).max, 0.0, mm).astype(np.uint16)
        return numpy_to_image(mm, "16UC1", stamp=stamp, frame_id=frame_id, msg_type=msg_type)
    if encoding == "32FC1":
        metres = np.where(valid, depth, np.nan).astype(np.float32)
        return numpy_to_image(metres, "32FC1", stamp=stamp, frame_id=frame_id, msg_type=msg_type)
    raise ValueError(f"unsupported depth encoding {encoding!r}; expected one of {DEPTH_ENCODINGS}")
