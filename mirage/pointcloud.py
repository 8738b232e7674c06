"""Deprecated: the point-cloud pieces moved into the :mod:`mirage.memory` package.

store -> :mod:`mirage.memory.store`, depth pooling / lifting -> :mod:`mirage.memory.lifting`,
safetensors and PLY -> :mod:`mirage.memory.io`, PCA colours -> :mod:`mirage.memory.export`.
"""

import warnings

from mirage.memory.export import pca_colors, subsample_indices  # noqa: F401
from mirage.memory.io import load_store, read_ply, save_store, write_ply  # noqa: F401
from mirage.memory.lifting import check_frames, check_grid_sizes, lift_frames, pool_depth  # noqa: F401
from mirage.memory.store import PointStore, voxel_keys  # noqa: F401

warnings.warn("mirage.pointcloud is deprecated; import from mirage.memory (store, lifting, io, export)",
              DeprecationWarning, stacklevel=2)

__all__ = ["pool_depth", "voxel_keys", "PointStore", "save_store", "load_store", "pca_colors",
           "subsample_indices", "write_ply", "read_ply", "check_frames", "lift_frames", "check_grid_sizes"]
