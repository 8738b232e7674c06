"""Deterministic z-buffer: project points onto a grid and keep the frontmost point per cell (fast path).

The hot path of every memory readout and of the RGB baseline's rasteriser. Each candidate (point, cell)
pair is packed into one int64 key::

    key = float32_bits(depth) << 32 | point_index

For depth > 0 the IEEE-754 bit pattern of a float32, read as an int32, increases with the value, so the
smallest key in a cell is the nearest point, and among points at exactly the same depth the one with
the lowest index. One ``scatter_reduce(amin)`` then resolves every cell; ``amin`` is order-independent,
so the result is the same run to run and on CPU and GPU (unlike "last write wins" index assignment,
which PyTorch leaves undefined for duplicate indices on GPU).

Pure torch. The readable twin with the same signatures and contract is
:mod:`mirage.ops._zbuffer_reference` (sorts instead of packed keys, a loop over views); the input checks
below are shared by both, so the contract is written once.
"""

from __future__ import annotations

import torch

from mirage.camera import project

__all__ = ["EMPTY_KEY", "MAX_POINTS", "pack_depth_index", "zbuffer_select", "zbuffer_select_batched", "rasterize",
           "check_select_inputs", "check_rasterize_inputs"]

EMPTY_KEY = torch.iinfo(torch.int64).max
# The point index lives in the low 32 bits of the key.
MAX_POINTS = 2**32 - 1


def _shape(x) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def check_select_inputs(cell_index: torch.Tensor, depth: torch.Tensor, point_index: torch.Tensor | None) -> None:
    """ValueError unless cell_index and depth (and point_index) are (M,) tensors with M < 2^32."""
    if not isinstance(cell_index, torch.Tensor) or not isinstance(depth, torch.Tensor) \
            or cell_index.shape != depth.shape or cell_index.ndim != 1:
        raise ValueError(f"cell_index and depth must both be (M,), got {_shape(cell_index)} and {_shape(depth)}")
    if point_index is not None and (not isinstance(point_index, torch.Tensor) or point_index.shape != depth.shape):
        raise ValueError(f"point_index must be (M,) like depth {tuple(depth.shape)}, got {_shape(point_index)}")
    if point_index is None and cell_index.numel() > MAX_POINTS:
        raise ValueError(f"zbuffer_select: ids must fit 32 bits, got {cell_index.numel()} candidates")


def check_rasterize_inputs(points: torch.Tensor, K: torch.Tensor, cam_to_world: torch.Tensor, height: int,
                           width: int) -> None:
    """ValueError unless points (N, 3), K (T, 3, 3), cam_to_world (T, 4, 4), N < 2^32 and a positive grid."""
    if not isinstance(points, torch.Tensor) or points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {_shape(points)}")
    if not isinstance(K, torch.Tensor) or K.ndim != 3 or K.shape[1:] != (3, 3):
        raise ValueError(f"K must be (T, 3, 3), got {_shape(K)}")
    if not isinstance(cam_to_world, torch.Tensor) or cam_to_world.shape != (K.shape[0], 4, 4):
        raise ValueError(f"cam_to_world must be ({K.shape[0]}, 4, 4), got {_shape(cam_to_world)}")
    if points.shape[0] > MAX_POINTS:
        raise ValueError(f"rasterize: at most {MAX_POINTS} points (ids must fit 32 bits), got {points.shape[0]}")
    if int(height) <= 0 or int(width) <= 0:
        raise ValueError(f"rasterize: grid must be positive, got {height}x{width}")


def pack_depth_index(depth: torch.Tensor, point_index: torch.Tensor) -> torch.Tensor:
    """Pack depth (M,) float32 > 0 and point_index (M,) int64 in [0, 2^32) into sortable int64 keys (M,)."""
    depth_bits = depth.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    return (depth_bits << 32) | point_index.to(torch.int64)


def zbuffer_select(
    cell_index: torch.Tensor,
    depth: torch.Tensor,
    num_cells: int,
    point_index: torch.Tensor | None = None,
    return_depth: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Frontmost point per cell.

    Args:
        cell_index: (M,) int64 in [0, num_cells): the cell each candidate falls in.
        depth: (M,) float32, finite and > 0 (callers drop points at or behind the near plane).
        num_cells: number of cells in the (flattened) grid.
        point_index: (M,) int64 in [0, 2^32): the id reported for each candidate; defaults to arange(M).
            Ties in depth go to the lowest id.
        return_depth: also return the winning depth per cell.

    Returns:
        winner: (num_cells,) int64, the id of the frontmost candidate, -1 where no candidate fell.
        depth: (num_cells,) float32, its depth, 0 where empty (only with ``return_depth``).
    """
    check_select_inputs(cell_index, depth, point_index)
    if point_index is None:
        point_index = torch.arange(cell_index.numel(), device=cell_index.device, dtype=torch.int64)
    keys = pack_depth_index(depth, point_index)
    best = torch.full((num_cells,), EMPTY_KEY, dtype=torch.int64, device=cell_index.device)
    best.scatter_reduce_(0, cell_index.to(torch.int64), keys, reduce="amin", include_self=True)
    empty = best == EMPTY_KEY
    winner = torch.where(empty, torch.full_like(best, -1), best & 0xFFFFFFFF)
    if not return_depth:
        return winner
    depth_bits = (best >> 32).to(torch.int32)
    best_depth = torch.where(empty, torch.zeros((), device=best.device), depth_bits.view(torch.float32))
    return winner, best_depth


def zbuffer_select_batched(
    view_index: torch.Tensor,
    cell_index: torch.Tensor,
    depth: torch.Tensor,
    num_views: int,
    num_cells: int,
    point_index: torch.Tensor | None = None,
    return_depth: bool = False,
):
    """:func:`zbuffer_select` for T views in one scatter: cells of view t are offset by t * num_cells.

    view_index, cell_index, depth, point_index: (M,). Returns winner (T, num_cells) [and depth (T, num_cells)].
    """
    if not isinstance(view_index, torch.Tensor) or view_index.shape != getattr(cell_index, "shape", None):
        raise ValueError(f"view_index must be (M,) like cell_index, got {_shape(view_index)} and {_shape(cell_index)}")
    flat = view_index.to(torch.int64) * num_cells + cell_index.to(torch.int64)
    out = zbuffer_select(flat, depth, num_views * num_cells, point_index, return_depth)
    if return_depth:
        return out[0].view(num_views, num_cells), out[1].view(num_views, num_cells)
    return out.view(num_views, num_cells)


def rasterize(
    points: torch.Tensor, K: torch.Tensor, cam_to_world: torch.Tensor, height: int, width: int,
    near: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-point-per-cell z-buffer of N points into T views of (height, width), one scatter for all views.

    points: (N, 3); K: (T, 3, 3) at (height, width); cam_to_world: (T, 4, 4).
    Returns winner (T, height, width) int64 point index (-1 where empty) and depth (T, height, width)
    float32 (0 where empty). A point falls in the cell containing its projection (pixel centres at +0.5,
    so cell (i, j) covers u in [j, j+1), v in [i, i+1)) when its camera z is > ``near``.

    Candidates are never compacted: points outside a view (or at or behind its near plane) go to one
    extra "discard" cell, which avoids a data-dependent ``nonzero`` (a host sync on GPU) and the
    gathers after it.
    """
    check_rasterize_inputs(points, K, cam_to_world, height, width)
    T, N = K.shape[0], points.shape[0]
    num_cells = height * width
    uv, z = project(points.unsqueeze(0), K, cam_to_world)  # (T, N, 2), (T, N)
    u, v = uv[..., 0], uv[..., 1]
    inside = (z > near) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    zero = torch.zeros((), dtype=u.dtype, device=u.device)
    col = torch.where(inside, u, zero).to(torch.int64).clamp_(max=width - 1)  # u >= 0: truncation is floor
    row = torch.where(inside, v, zero).to(torch.int64).clamp_(max=height - 1)
    view = torch.arange(T, device=points.device).unsqueeze(1)
    cell = torch.where(inside, view * num_cells + row * width + col, T * num_cells)
    depth = torch.where(inside, z, torch.ones((), dtype=z.dtype, device=z.device)).float()
    index = torch.arange(N, device=points.device).expand(T, N)
    winner, best_depth = zbuffer_select(cell.reshape(-1), depth.reshape(-1), T * num_cells + 1,
                                        index.reshape(-1), return_depth=True)
    return winner[:-1].view(T, height, width), best_depth[:-1].view(T, height, width)
