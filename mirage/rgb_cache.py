"""Deprecated: the RGB baseline is :class:`mirage.memory.RGBPointCloudMemory` (one class, holding its encoder).

:class:`RGBPointCache` keeps the old constructor and the old ``read(..., encoder, near)`` signature for
callers that have not moved yet; everything else is the new class.
"""

from __future__ import annotations

import os
import warnings

import torch

from mirage.memory.lifting import pool_depth
from mirage.memory.protocol import Encoder, Readout
from mirage.memory.rgb import RGBPointCloudMemory

warnings.warn("mirage.rgb_cache is deprecated; use mirage.memory.RGBPointCloudMemory", DeprecationWarning,
              stacklevel=2)

__all__ = ["RGBPointCache"]


class RGBPointCache(RGBPointCloudMemory):
    """The old storage-only RGB cache: ``RGBPointCloudMemory`` without an encoder of its own."""

    def __init__(self, voxel_size: float | None = None, max_points: int | None = None, device="cpu", *,
                 encoder: Encoder | None = None, channels: int = 48, dtype: torch.dtype = torch.float32):
        super().__init__(encoder, channels, voxel_size, max_points, device, dtype)

    def read(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: tuple[int, int],
             encoder: Encoder, near: float = 1e-3) -> Readout:
        """Old signature: rasterise one view, encode with ``encoder`` ((1, 3, H, W) -> (1, C, h, w), any C) and
        pool mask / depth to the encoder's grid."""
        rgb, _, depth = self.render(intrinsics, cam_to_world, image_size, near)
        latents = encoder(rgb[None])
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or latents.shape[0] != 1:
            raise ValueError(f"encoder must return a (1, C, h, w) tensor, got "
                             f"{tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__}")
        cell_depth, cell_mask = pool_depth(depth, latents.shape[-2:])
        return Readout(latents[0], cell_mask, cell_depth)

    def export_ply(self, path: str | os.PathLike, max_points: int | None = None) -> None:
        super().export_ply(path, "observed", max_points)
