"""Deprecated: the z-buffer moved to :mod:`mirage.ops.zbuffer` (its torch reference: :mod:`mirage.ops._zbuffer_reference`)."""

import warnings

from mirage.ops.zbuffer import (  # noqa: F401
    EMPTY_KEY,
    MAX_POINTS,
    pack_depth_index,
    rasterize,
    zbuffer_select,
    zbuffer_select_batched,
)

warnings.warn("mirage.zbuffer is deprecated; import from mirage.ops.zbuffer", DeprecationWarning, stacklevel=2)

__all__ = ["EMPTY_KEY", "MAX_POINTS", "pack_depth_index", "zbuffer_select", "zbuffer_select_batched", "rasterize"]
