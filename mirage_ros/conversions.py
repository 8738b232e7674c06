"""ROS 2 messages <-> numpy / mirage types, without cv_bridge or sensor_msgs_py.

Readers are duck-typed: they take rclpy messages and ``rosbags`` message objects alike (same field names).
Writers build rclpy messages and import those classes lazily (``msg_type`` overrides the class with any
default-constructible one with the same fields), so this module imports without ROS.

Conventions are mirage's (:mod:`mirage.camera`): depth in metres with 0 meaning "no depth", intrinsics with
pixel centres at +0.5 (ROS ``CameraInfo`` puts them at integers), quaternions (x, y, z, w), 4x4 transforms.
"""

from __future__ import annotations

import array
from typing import Any

import numpy as np
import torch

from mirage.camera import (
    intrinsics_from_opencv,
    intrinsics_to_opencv,
    pose_from_tq,
    pose_to_tq,
    scale_intrinsics,
    validate_intrinsics,
)

__all__ = [
    "IMAGE_ENCODINGS",
    "DEPTH_ENCODINGS",
    "stamp_to_ns",
    "ns_to_stamp",
    "image_to_numpy",
    "numpy_to_image",
    "image_to_rgb",
    "image_to_depth",
    "depth_to_image",
    "camera_info_to_intrinsics",
    "intrinsics_to_camera_info",
    "pack_rgb",
    "unpack_rgb",
    "pointcloud2_to_numpy",
    "numpy_to_pointcloud2",
    "pose_to_matrix",
    "transform_to_matrix",
    "matrix_to_pose",
    "matrix_to_transform",
]

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

_POINTFIELD_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
_FLOAT32 = 7


# --------------------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------------------
def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (``sec``, ``nanosec``), an rclpy ``Time`` or an int of nanoseconds -> int ns."""
    if isinstance(stamp, (int, np.integer)):
        return int(stamp)
    if hasattr(stamp, "nanoseconds"):
        return int(stamp.nanoseconds)
    if hasattr(stamp, "sec") and hasattr(stamp, "nanosec"):
        return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    raise ValueError(f"cannot read a time stamp from {type(stamp).__name__}")


def ns_to_stamp(ns: int, msg_type: type | None = None) -> Any:
    """int nanoseconds -> builtin_interfaces/Time (or ``msg_type(sec=..., nanosec=...)``)."""
    if ns < 0:
        raise ValueError(f"time stamps must be >= 0, got {ns} ns")
    if msg_type is None:
        from builtin_interfaces.msg import Time as msg_type
    return msg_type(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def _fill_header(msg: Any, stamp: Any, frame_id: str) -> None:
    if stamp is not None:
        msg.header.stamp = stamp if not isinstance(stamp, (int, np.integer)) else ns_to_stamp(
            int(stamp), type(msg.header.stamp))
    msg.header.frame_id = frame_id


def _buffer(data: Any) -> np.ndarray:
    """Message ``data`` (bytes, array.array, numpy array or list of ints) -> flat uint8 array (no copy if possible)."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 else data.reshape(-1)
    if isinstance(data, (list, tuple)):
        return np.asarray(data, dtype=np.uint8)
    return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)


def _message_bytes(msg: Any, raw: bytes) -> Any:
    """``raw`` in the container the message class stores uint8[] in: a numpy array (rosbags) or array.array('B')
    (rclpy, which would otherwise validate a bytes object element by element)."""
    if isinstance(getattr(msg, "data", None), np.ndarray):
        return np.frombuffer(raw, dtype=np.uint8).copy()
    return array.array("B", raw)


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------
def image_to_numpy(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> (H, W) or (H, W, C) array of the encoding's dtype in native byte order (a copy).

    Row padding (``step`` larger than a row) is dropped and ``is_bigendian`` honoured. Raises ValueError on an
    unknown encoding or when ``step`` / the data size do not fit ``height`` x ``width``.
    """
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
    data = _buffer(msg.data)
    if data.size != step * height:
        raise ValueError(f"image data has {data.size} bytes, expected step*height = {step}*{height} = {step * height}")
    rows = data.reshape(height, step)[:, :row_bytes]
    wire = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    pixels = np.ascontiguousarray(rows).view(wire).astype(dtype, copy=True)
    return pixels.reshape(height, width) if channels == 1 else pixels.reshape(height, width, channels)


def numpy_to_image(array: np.ndarray, encoding: str, *, stamp: Any = None, frame_id: str = "",
                   msg_type: type | None = None) -> Any:
    """(H, W) or (H, W, C) array -> sensor_msgs/Image with the given encoding (little-endian, no padding).

    ``stamp``: builtin_interfaces/Time or int nanoseconds. ``msg_type`` defaults to sensor_msgs.msg.Image.
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
    if msg_type is None:
        from sensor_msgs.msg import Image as msg_type
    msg = msg_type()
    _fill_header(msg, stamp, frame_id)
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(array.shape[1] * channels * dtype.itemsize)
    little = np.ascontiguousarray(array, dtype=dtype.newbyteorder("<"))
    msg.data = _message_bytes(msg, little.tobytes())
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
    raw = image_to_numpy(msg)
    if encoding == "16UC1":
        return raw.astype(np.float32) * np.float32(1e-3)
    depth = raw.astype(np.float32, copy=False)
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0.0)).astype(np.float32)


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


# --------------------------------------------------------------------------------------------------
# Camera info
# --------------------------------------------------------------------------------------------------
def _field(msg: Any, *names: str) -> Any:
    for name in names:
        if hasattr(msg, name):
            return getattr(msg, name)
    raise ValueError(f"{type(msg).__name__} has none of the fields {names}")


def camera_info_to_intrinsics(info: Any, image_size: tuple[int, int] | None = None
                              ) -> tuple[torch.Tensor, tuple[int, int]]:
    """sensor_msgs/CameraInfo -> (K (3, 3) float32 in mirage's convention, (H, W) of the image it describes).

    Binning and a region of interest are applied (REP 104), so K describes the published image. The distortion
    model is not applied: feed rectified images (``image_rect``) or a camera with negligible distortion.
    ``image_size``: the (H, W) of the image this info accompanies; a different size raises ValueError.
    """
    K_cv = np.asarray(_field(info, "k", "K"), dtype=np.float64)
    if K_cv.size != 9:
        raise ValueError(f"CameraInfo.k must have 9 entries, got {K_cv.size}")
    K_cv = K_cv.reshape(3, 3).copy()
    if not np.isfinite(K_cv).all():
        raise ValueError("CameraInfo.k has non-finite entries")
    if K_cv[0, 0] <= 0 or K_cv[1, 1] <= 0:
        raise ValueError(f"CameraInfo.k has a zero or negative focal length (fx={K_cv[0, 0]}, fy={K_cv[1, 1]}): "
                         "the camera is uncalibrated")
    height, width = int(info.height), int(info.width)
    if height <= 0 or width <= 0:
        raise ValueError(f"CameraInfo has an empty image size {height}x{width}")
    roi = getattr(info, "roi", None)
    if roi is not None and int(roi.width) > 0 and int(roi.height) > 0 and \
            (int(roi.width), int(roi.height)) != (width, height):
        K_cv[0, 2] -= int(roi.x_offset)
        K_cv[1, 2] -= int(roi.y_offset)
        height, width = int(roi.height), int(roi.width)
    K = intrinsics_from_opencv(K_cv)
    bin_x, bin_y = max(int(getattr(info, "binning_x", 0)), 1), max(int(getattr(info, "binning_y", 0)), 1)
    if bin_x > 1 or bin_y > 1:
        binned = (height // bin_y, width // bin_x)
        K = scale_intrinsics(K, (binned[0] * bin_y, binned[1] * bin_x), binned)
        height, width = binned
    validate_intrinsics(K, "CameraInfo.k")
    if image_size is not None and (int(image_size[0]), int(image_size[1])) != (height, width):
        raise ValueError(f"CameraInfo describes a {height}x{width} image but the image is "
                         f"{int(image_size[0])}x{int(image_size[1])} (H x W)")
    return K, (height, width)


def intrinsics_to_camera_info(K: torch.Tensor | np.ndarray, height: int, width: int, *, stamp: Any = None,
                              frame_id: str = "", msg_type: type | None = None) -> Any:
    """mirage K (3, 3) at (height, width) -> sensor_msgs/CameraInfo of an ideal pinhole (zero distortion)."""
    K = torch.as_tensor(np.asarray(K, dtype=np.float64) if not isinstance(K, torch.Tensor) else K)
    validate_intrinsics(K, "K")
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    K_cv = intrinsics_to_opencv(K.double()).numpy()
    if msg_type is None:
        from sensor_msgs.msg import CameraInfo as msg_type
    info = msg_type()
    _fill_header(info, stamp, frame_id)
    info.height, info.width = int(height), int(width)
    info.distortion_model = "plumb_bob"
    P = np.zeros((3, 4))
    P[:, :3] = K_cv
    values = {"d": np.zeros(5), "k": K_cv.reshape(-1), "r": np.eye(3).reshape(-1), "p": P.reshape(-1)}
    for name, value in values.items():
        current = getattr(info, name)
        setattr(info, name, value.astype(np.float64) if isinstance(current, np.ndarray) else value.tolist())
    return info


# --------------------------------------------------------------------------------------------------
# Point clouds
# --------------------------------------------------------------------------------------------------
def _subsample(count: int, max_points: int | None, seed: int) -> np.ndarray | None:
    """Sorted indices of a deterministic random subset of ``max_points`` out of ``count``, or None for all."""
    if max_points is None or count <= max_points:
        return None
    if max_points < 0:
        raise ValueError(f"max_points must be >= 0, got {max_points}")
    return np.sort(np.random.default_rng(seed).choice(count, size=max_points, replace=False))


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 -> (N,) float32 whose bits are 0x00RRGGBB (PCL / RViz ``rgb`` field)."""
    rgb = rgb.astype(np.uint32)
    return ((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]).astype(np.uint32).view(np.float32)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """(N,) float32 or uint32 with 0x00RRGGBB bits -> (N, 3) uint8."""
    bits = np.ascontiguousarray(packed).view(np.uint32)
    return np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF], axis=1).astype(np.uint8)


def pointcloud2_to_numpy(msg: Any, max_points: int | None = None, seed: int = 0
                         ) -> tuple[np.ndarray, np.ndarray | None]:
    """sensor_msgs/PointCloud2 -> (xyz (N, 3) float32, rgb (N, 3) uint8 or None when there is no rgb/rgba field).

    Reads x, y, z (float32 or float64) and a packed ``rgb``/``rgba`` field at any offsets, honouring ``row_step``
    padding and ``is_bigendian``. Points with a non-finite coordinate are dropped; then, above ``max_points``, a
    deterministic random subset (``seed``) is kept in the original order.
    """
    fields = {f.name: f for f in msg.fields}
    missing = [name for name in ("x", "y", "z") if name not in fields]
    if missing:
        raise ValueError(f"PointCloud2 lacks the fields {missing} (has {sorted(fields)})")
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for name in ("x", "y", "z"):
        if int(fields[name].datatype) not in (7, 8):
            raise ValueError(f"PointCloud2 field {name!r} must be FLOAT32 or FLOAT64, got datatype "
                             f"{fields[name].datatype}")
    color = next((fields[n] for n in ("rgb", "rgba") if n in fields), None)
    for f in [fields["x"], fields["y"], fields["z"]] + ([color] if color is not None else []):
        if int(f.datatype) not in _POINTFIELD_DTYPES:
            raise ValueError(f"PointCloud2 field {f.name!r} has an unknown datatype {f.datatype}")
        names.append(f.name)
        formats.append(order + _POINTFIELD_DTYPES[int(f.datatype)])
        offsets.append(int(f.offset))
    point_step, width, height = int(msg.point_step), int(msg.width), int(msg.height)
    row_step = int(msg.row_step)
    if point_step <= 0 or any(o + np.dtype(fm).itemsize > point_step for o, fm in zip(offsets, formats)):
        raise ValueError(f"PointCloud2 point_step {point_step} is too small for its fields")
    if row_step < width * point_step:
        raise ValueError(f"PointCloud2 row_step {row_step} < width*point_step = {width * point_step}")
    data = _buffer(msg.data)
    if data.size < row_step * height:
        raise ValueError(f"PointCloud2 data has {data.size} bytes, expected row_step*height = {row_step * height}")
    record = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})
    rows = np.ascontiguousarray(data[: row_step * height].reshape(height, row_step)[:, : width * point_step])
    points = rows.reshape(-1).view(record)
    xyz = np.stack([points["x"], points["y"], points["z"]], axis=1).astype(np.float32)
    rgb = None
    if color is not None:
        raw = points[color.name]
        if raw.dtype.itemsize != 4:
            raise ValueError(f"PointCloud2 field {color.name!r} must be 4 bytes (packed 0x00RRGGBB)")
        rgb = unpack_rgb(raw.astype(raw.dtype.newbyteorder("=")))
    keep = np.isfinite(xyz).all(axis=1)
    if not keep.all():
        xyz = xyz[keep]
        rgb = rgb[keep] if rgb is not None else None
    index = _subsample(len(xyz), max_points, seed)
    if index is not None:
        xyz = xyz[index]
        rgb = rgb[index] if rgb is not None else None
    return xyz, rgb


def numpy_to_pointcloud2(xyz: np.ndarray | torch.Tensor, rgb: np.ndarray | torch.Tensor | None = None, *,
                         stamp: Any = None, frame_id: str = "", max_points: int | None = None, seed: int = 0,
                         msg_type: type | None = None, field_type: type | None = None) -> Any:
    """(N, 3) points (+ optional (N, 3) uint8 colours) -> unorganised sensor_msgs/PointCloud2.

    Fields x, y, z float32 and, with colours, ``rgb`` as a float32 holding 0x00RRGGBB (what RViz reads).
    Non-finite points are dropped; above ``max_points`` a deterministic random subset (``seed``) is kept.
    """
    xyz = xyz.detach().cpu().numpy() if isinstance(xyz, torch.Tensor) else np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must have shape (N, 3), got {xyz.shape}")
    if rgb is not None:
        rgb = rgb.detach().cpu().numpy() if isinstance(rgb, torch.Tensor) else np.asarray(rgb)
        if rgb.shape != xyz.shape:
            raise ValueError(f"rgb must have the shape of xyz {xyz.shape}, got {rgb.shape}")
        if rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8, got {rgb.dtype}")
    keep = np.isfinite(xyz).all(axis=1)
    xyz = xyz[keep].astype(np.float32)
    rgb = rgb[keep] if rgb is not None else None
    index = _subsample(len(xyz), max_points, seed)
    if index is not None:
        xyz = xyz[index]
        rgb = rgb[index] if rgb is not None else None
    names = ["x", "y", "z"] + (["rgb"] if rgb is not None else [])
    record = np.dtype({"names": names, "formats": ["<f4"] * len(names), "offsets": [4 * i for i in range(len(names))],
                       "itemsize": 4 * len(names)})
    points = np.empty(len(xyz), dtype=record)
    points["x"], points["y"], points["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if rgb is not None:
        points["rgb"] = pack_rgb(rgb)
    if msg_type is None:
        from sensor_msgs.msg import PointCloud2 as msg_type
    if field_type is None:
        from sensor_msgs.msg import PointField as field_type
    msg = msg_type()
    _fill_header(msg, stamp, frame_id)
    msg.height, msg.width = 1, len(points)
    msg.fields = [field_type(name=n, offset=4 * i, datatype=_FLOAT32, count=1) for i, n in enumerate(names)]
    msg.is_bigendian = False
    msg.point_step = record.itemsize
    msg.row_step = record.itemsize * len(points)
    msg.is_dense = True
    msg.data = _message_bytes(msg, points.tobytes())
    return msg


# --------------------------------------------------------------------------------------------------
# Poses and transforms
# --------------------------------------------------------------------------------------------------
def _vector(v: Any) -> list[float]:
    return [float(v.x), float(v.y), float(v.z)]


def _quaternion(q: Any) -> list[float]:
    return [float(q.x), float(q.y), float(q.z), float(q.w)]


def pose_to_matrix(pose: Any, normalize: bool = False) -> torch.Tensor:
    """geometry_msgs/Pose -> (4, 4) float32. A non-unit quaternion raises ValueError unless ``normalize``."""
    return pose_from_tq(_vector(pose.position), _quaternion(pose.orientation), normalize=normalize)


def transform_to_matrix(transform: Any, normalize: bool = False) -> torch.Tensor:
    """geometry_msgs/Transform -> (4, 4) float32. A non-unit quaternion raises ValueError unless ``normalize``."""
    return pose_from_tq(_vector(transform.translation), _quaternion(transform.rotation), normalize=normalize)


def _tq(T: Any) -> tuple[np.ndarray, np.ndarray]:
    T = torch.as_tensor(np.asarray(T, dtype=np.float64)) if not isinstance(T, torch.Tensor) else T
    if tuple(T.shape) != (4, 4):
        raise ValueError(f"transform must have shape (4, 4), got {tuple(T.shape)}")
    if not torch.isfinite(T).all():
        raise ValueError("transform has non-finite entries")
    return pose_to_tq(T)


def matrix_to_pose(T: torch.Tensor | np.ndarray, msg_type: type | None = None) -> Any:
    """(4, 4) rigid transform -> geometry_msgs/Pose."""
    t, q = _tq(T)
    if msg_type is None:
        from geometry_msgs.msg import Pose as msg_type
    pose = msg_type()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in t)
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in q)
    return pose


def matrix_to_transform(T: torch.Tensor | np.ndarray, msg_type: type | None = None) -> Any:
    """(4, 4) rigid transform -> geometry_msgs/Transform."""
    t, q = _tq(T)
    if msg_type is None:
        from geometry_msgs.msg import Transform as msg_type
    tf = msg_type()
    tf.translation.x, tf.translation.y, tf.translation.z = (float(v) for v in t)
    tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w = (float(v) for v in q)
    return tf

