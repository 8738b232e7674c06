"""The ``uint8[] data`` field of Image / PointCloud2 messages, read and written without per-element copies."""

from __future__ import annotations

import array
from typing import Any

import numpy as np

__all__ = ["as_uint8", "message_bytes"]


def as_uint8(data: Any) -> np.ndarray:
    """Message ``data`` (bytes, array.array, numpy array or list of ints) -> flat uint8 array (no copy if possible)."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 else data.reshape(-1)
    if isinstance(data, (list, tuple)):
        return np.asarray(data, dtype=np.uint8)
    return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)


def message_bytes(msg: Any, raw: bytes) -> Any:
    """``raw`` in the container the message class stores uint8[] in: a numpy array (rosbags) or array.array('B')
    (rclpy, which would otherwise validate a bytes object element by element)."""
    if isinstance(getattr(msg, "data", None), np.ndarray):
        return np.frombuffer(raw, dtype=np.uint8).copy()
    return array.array("B", raw)
