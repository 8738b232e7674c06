"""sensor_msgs/PointCloud2 <-> numpy (x, y, z float32 + a packed 0x00RRGGBB ``rgb`` field, what RViz reads)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mirage_ros.conversions._buffers import as_uint8, message_bytes
from mirage_ros.conversions.time import fill_header

__all__ = ["pack_rgb", "unpack_rgb", "pointcloud2_to_numpy", "numpy_to_pointcloud2"]

_POINTFIELD_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
_FLOAT32 = 7


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
    data = as_uint8(msg.data)
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
    fill_header(msg, stamp, frame_id)
    msg.height, msg.width = 1, len(points)
    msg.fields = [field_type(name=n, offset=4 * i, datatype=_FLOAT32, count=1) for i, n in enumerate(names)]
    msg.is_bigendian = False
    msg.point_step = record.itemsize
    msg.row_step = record.itemsize * len(points)
    msg.is_dense = True
    msg.data = message_bytes(msg, points.tobytes())
    return msg
