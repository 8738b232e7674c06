"""Spatial memories for video world models: the contract and its two implementations.

=====================  ==========================================================================
module                 owns
=====================  ==========================================================================
``protocol``           :class:`SpatialMemory` (the written contract) and :class:`Readout`
``latent``             :class:`LatentSpatialMemory`: latents at world points (the paper's memory)
``rgb``                :class:`RGBPointCloudMemory`: the RGB point-cloud baseline, with its encoder
``base``               :class:`PointMemory`: bounds, counters, copy-on-write, export, save / load
``store``              :class:`PointStore`: voxel dedup, eviction, copy-on-write merge
``lifting``            frames -> points: the cell rule (depth pooling), colours, input checks
``readout``            the one z-buffered readout path shared by both memories
``io``                 safetensors save / load (atomic), PLY write / read
``export``             display colours: PCA basis (fixed per memory), subsampling
``pixel_lift``         :class:`PixelLiftMemory`: the paper's "feature upsample, pixel lift" ablation
=====================  ==========================================================================

The z-buffer itself is :mod:`mirage.ops.zbuffer`.
"""

from mirage.memory.base import PointMemory
from mirage.memory.export import PCABasis, pca_colors, subsample_indices
from mirage.memory.io import load_store, read_ply, save_store, write_ply
from mirage.memory.latent import LatentSpatialMemory
from mirage.memory.lifting import check_frames, check_grid_sizes, lift_frames, pool_colors, pool_depth
from mirage.memory.protocol import Encoder, Readout, SpatialMemory
from mirage.memory.readout import read_points
from mirage.memory.pixel_lift import PixelLiftMemory
from mirage.memory.rgb import RGBPointCloudMemory
from mirage.memory.store import NEUTRAL_GREY, PointStore, voxel_keys

__all__ = [
    "SpatialMemory",
    "Readout",
    "Encoder",
    "LatentSpatialMemory",
    "RGBPointCloudMemory",
    "PixelLiftMemory",
    "PointMemory",
    "PointStore",
    "NEUTRAL_GREY",
    "PCABasis",
    "read_points",
    "pool_depth",
    "pool_colors",
    "lift_frames",
    "check_frames",
    "check_grid_sizes",
    "voxel_keys",
    "save_store",
    "load_store",
    "write_ply",
    "read_ply",
    "pca_colors",
    "subsample_indices",
]
