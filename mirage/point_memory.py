"""Deprecated: :class:`PointMemory` moved to :mod:`mirage.memory.base`."""

import warnings

from mirage.memory.base import PointMemory  # noqa: F401

warnings.warn("mirage.point_memory is deprecated; import PointMemory from mirage.memory", DeprecationWarning,
              stacklevel=2)

__all__ = ["PointMemory"]
