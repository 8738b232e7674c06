"""The one readout path: z-buffer a store's points into T views and gather the winners' values.

The latent memory reads its features at the latent grid; the RGB baseline reads its colours at pixel
resolution (then encodes). Both go through :func:`check_views` and :func:`read_points`.
"""

from __future__ import annotations

import numpy as np
import torch

from mirage.camera import batch_intrinsics, validate_pose
from mirage.memory.lifting import check_grid_sizes
from mirage.memory.protocol import Readout
from mirage.ops import rasterize

__all__ = ["read_points", "check_views", "pixel_visibility"]


def check_views(intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size, latent_size,
                near: float) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int], tuple[int, int]]:
    """Validate the arguments of a batched read; ValueError naming the problem.

    intrinsics (3, 3) | (T, 3, 3) at ``image_size``; cam_to_world (T, 4, 4); sizes (H, W), (h, w) positive;
    near finite >= 0. Returns (K (T, 3, 3), cam_to_world (T, 4, 4), (H, W), (h, w)).
    """
    H, W, h, w = check_grid_sizes(image_size, latent_size)
    validate_pose(cam_to_world, "cam_to_world")
    if cam_to_world.ndim != 3:
        raise ValueError(f"cam_to_world must be (T, 4, 4), got {tuple(cam_to_world.shape)}")
    K = batch_intrinsics(intrinsics, cam_to_world.shape[0], "intrinsics")
    if not (np.isfinite(near) and near >= 0):
        raise ValueError(f"near must be a finite number >= 0, got {near}")
    return K, cam_to_world, (H, W), (h, w)


def read_points(
    points: torch.Tensor, values: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor,
    grid_size: tuple[int, int], near: float, backend: str = "auto",
) -> Readout:
    """Z-buffered readout of (N, 3) points with (N, C) values into T views of a (h, w) grid, one scatter.

    intrinsics (T, 3, 3) at the grid; cam_to_world (T, 4, 4). Returns a T-leading :class:`Readout`
    whose features are (T, C, h, w) in the values' dtype (zeros where unseen). ``backend``: the z-buffer
    implementation (:func:`mirage.ops.rasterize`).
    """
    h, w = grid_size
    T = intrinsics.shape[0]
    winner, depth = rasterize(points, intrinsics, cam_to_world, h, w, near, backend=backend)  # (T, h, w)
    mask = winner >= 0
    if values.shape[0] == 0:
        features = torch.zeros(T, h, w, values.shape[1], dtype=values.dtype, device=values.device)
    else:  # a gather and a select: no boolean indexing, so no host sync on the GPU
        gathered = values[winner.clamp(min=0)]
        features = torch.where(mask[..., None], gathered, torch.zeros((), dtype=values.dtype, device=values.device))
    return Readout(features.permute(0, 3, 1, 2).contiguous(), mask, depth)


def pixel_visibility(points: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size,
                     latent_size, near: float, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Visibility of per-pixel points at the latent grid: z-buffer at pixel resolution, then the cell rule.

    points (N, 3); intrinsics (3, 3) | (T, 3, 3) at ``image_size``; cam_to_world (T, 4, 4). Returns the cell mask
    (T, h, w) and cell depth (T, h, w) that :func:`mirage.memory.lifting.pool_depth` gives the rendered depth.
    Used by the memories that store one point per pixel (the RGB baseline, the pixel-lift ablation).
    """
    from mirage.memory.lifting import pool_depth

    K, cam_to_world, (H, W), grid = check_views(intrinsics, cam_to_world, image_size, latent_size, near)
    _, depth = rasterize(points, K.to(points.device, torch.float32), cam_to_world.to(points.device, torch.float32),
                         H, W, near, backend=backend)
    cell_depth, cell_mask = pool_depth(depth, grid)
    return cell_mask, cell_depth
