"""Frames -> world points: the cell rule (pixel depth pooled to the latent grid) and back-projection.

The rule is written once here and used by the memory's insert, by readouts that pool a pixel mask to the
latent grid (the RGB baseline) and by depth alignment in the world model:

* a cell is valid when at least half its pixels have valid depth (finite, > 0) and none is excluded;
* its depth is the median of its valid pixels (the lower middle value: always an observed depth);
* its point is the back-projection of the cell centre (pixel centres at +0.5, K scaled to the grid);
* its colour is the mean RGB of its valid-depth pixels.
"""

from __future__ import annotations

import torch

from mirage.camera import (
    backproject_depth,
    batch_intrinsics,
    scale_intrinsics,
    valid_depth_mask,
    validate_depth,
    validate_pose,
)

__all__ = ["pool_depth", "pool_colors", "to_uint8_colors", "check_frames", "check_rgb", "check_grid_sizes",
           "lift_frames"]


def _cells(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(..., H, W) -> (..., h, w, sh * sw): the pixels of each grid cell along the last axis."""
    H, W = x.shape[-2:]
    lead = x.shape[:-2]
    sh, sw = H // h, W // w
    x = x.reshape(*lead, h, sh, w, sw).transpose(-3, -2)
    return x.reshape(*lead, h, w, sh * sw)


def _grid(shape, grid_size) -> tuple[int, int]:
    H, W = shape[-2:]
    h, w = int(grid_size[0]), int(grid_size[1])
    if h <= 0 or w <= 0 or H % h or W % w:
        raise ValueError(f"image size {H}x{W} is not a whole multiple of the latent grid {h}x{w}")
    return h, w


def pool_depth(
    depth: torch.Tensor, grid_size: tuple[int, int], exclude: torch.Tensor | None = None,
    min_valid_fraction: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Downsample depth (..., H, W) to a grid (..., h, w); H, W must be multiples of h, w.

    Rule: a cell is valid when at least ``min_valid_fraction`` of its pixels have valid depth (finite,
    > 0) and none of its pixels is in ``exclude`` (..., H, W) bool; its depth is the median of its valid
    pixels (the lower of the two middle values for an even count, so it is always an observed depth).
    Returns (cell_depth (..., h, w) float32, 0 where invalid; cell_valid (..., h, w) bool).
    """
    h, w = _grid(depth.shape, grid_size)
    d = depth.float()
    valid = valid_depth_mask(d)
    patches = _cells(torch.where(valid, d, torch.full_like(d, float("nan"))), h, w)
    fraction = _cells(valid, h, w).float().mean(-1)
    cell_valid = (fraction >= min_valid_fraction) & (fraction > 0)
    if exclude is not None:
        cell_valid &= ~_cells(exclude.bool(), h, w).any(-1)
    median = patches.nanmedian(dim=-1).values
    cell_depth = torch.where(cell_valid, median, torch.zeros_like(median))
    return cell_depth, cell_valid


def to_uint8_colors(rgb: torch.Tensor) -> torch.Tensor:
    """Colours in [0, 1] (any shape) -> uint8 (clamped, rounded: 0.5 -> 128)."""
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8)


def pool_colors(rgb: torch.Tensor, depth: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """Mean colour of each cell's valid-depth pixels: rgb (T, 3, H, W) in [0, 1], depth (T, H, W).

    Returns (T, h, w, 3) uint8; a cell without valid depth (never stored) gets the mean of all its pixels.
    """
    h, w = _grid(depth.shape, grid_size)
    valid = _cells(valid_depth_mask(depth.float()), h, w).unsqueeze(1).float()  # (T, 1, h, w, n)
    pixels = _cells(rgb.float(), h, w)  # (T, 3, h, w, n)
    count = valid.sum(-1)
    mean = torch.where(count > 0, (pixels * valid).sum(-1) / count.clamp_min(1), pixels.mean(-1))
    return to_uint8_colors(mean).permute(0, 2, 3, 1)


def check_grid_sizes(image_size, latent_size) -> tuple[int, int, int, int]:
    """Parse (H, W) and (h, w) size pairs -> H, W, h, w; ValueError unless positive integers."""
    try:
        H, W = (int(s) for s in image_size)
        h, w = (int(s) for s in latent_size)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"image_size and latent_size must be (height, width) pairs, got {image_size}, "
                         f"{latent_size}") from exc
    if min(H, W, h, w) <= 0:
        raise ValueError(f"image_size {image_size} and latent_size {latent_size} must be positive")
    return H, W, h, w


def check_frames(
    depth: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, exclude: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validate a T-leading batch of frames and broadcast it; ValueError naming the problem.

    depth (T, H, W) float; intrinsics (3, 3) or (T, 3, 3) at (H, W); cam_to_world (T, 4, 4);
    exclude None or (T, H, W) bool. Returns (depth, K (T, 3, 3), c2w (T, 4, 4), exclude) as float32/bool.
    """
    validate_depth(depth, "depth")
    if depth.ndim != 3:
        raise ValueError(f"depth must have shape (T, H, W), got {tuple(depth.shape)}")
    T, H, W = depth.shape
    intrinsics = batch_intrinsics(intrinsics, T, "intrinsics")
    validate_pose(cam_to_world, "cam_to_world")
    if cam_to_world.shape != (T, 4, 4):
        raise ValueError(f"cam_to_world must be ({T}, 4, 4), got {tuple(cam_to_world.shape)}")
    if exclude is not None:
        if not isinstance(exclude, torch.Tensor) or exclude.shape != (T, H, W):
            raise ValueError(f"exclude must be a bool tensor of shape {(T, H, W)}, got "
                             f"{tuple(exclude.shape) if isinstance(exclude, torch.Tensor) else type(exclude).__name__}")
        if exclude.dtype != torch.bool:
            raise ValueError(f"exclude must be bool, got {exclude.dtype}")
    return depth.float(), intrinsics.float(), cam_to_world.float(), exclude


def check_rgb(rgb: torch.Tensor, depth: torch.Tensor) -> None:
    """ValueError unless rgb is a finite float (T, 3, H, W) tensor matching depth (T, H, W)."""
    T, H, W = depth.shape
    if not isinstance(rgb, torch.Tensor) or rgb.shape != (T, 3, H, W) or not rgb.is_floating_point():
        raise ValueError(f"rgb must be a float tensor of shape {(T, 3, H, W)} in [0, 1], got "
                         f"{tuple(rgb.shape) if isinstance(rgb, torch.Tensor) else type(rgb).__name__}"
                         f"{'' if not isinstance(rgb, torch.Tensor) else ' ' + str(rgb.dtype)}")
    if not torch.isfinite(rgb).all():
        raise ValueError("rgb has non-finite values")


def lift_frames(
    depth: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, grid_size: tuple[int, int],
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Back-project every valid cell centre of T frames to world space.

    depth (T, H, W); intrinsics (T, 3, 3) at (H, W); cam_to_world (T, 4, 4); exclude (T, H, W) | None.
    Depth is pooled to ``grid_size`` with :func:`pool_depth` and each valid cell's centre is lifted with
    the intrinsics scaled to the grid (a grid equal to (H, W) keeps one point per valid pixel).
    Returns, for the M valid cells in (frame, row, col) order: frame_index (M,) int64,
    cell_index (M,) int64 (row-major in the grid), points (M, 3) float32, camera depth (M,) float32.
    """
    H, W = depth.shape[-2:]
    h, w = grid_size
    if (h, w) == (H, W):
        cell_depth = depth.float()
        cell_valid = valid_depth_mask(cell_depth)
        if exclude is not None:
            cell_valid &= ~exclude
    else:
        cell_depth, cell_valid = pool_depth(depth, grid_size, exclude)
    K = scale_intrinsics(intrinsics, (H, W), (h, w))
    frame_index, row, col = cell_valid.nonzero(as_tuple=True)
    z = cell_depth[frame_index, row, col]
    safe = torch.where(cell_valid, cell_depth, torch.ones_like(cell_depth))
    points = backproject_depth(safe, K, cam_to_world)[frame_index, row, col]
    return frame_index, row * w + col, points.float(), z.float()
