"""The z-buffer of :mod:`mirage.ops.zbuffer`, written the obvious way (the readable twin of the fast path).

Same signatures, same tensor contract, same results bit for bit; tests compare the two and
``bench/memory.py`` times the fast path against this one. It is slower, and written to be read:

* selection sorts the candidates by (cell, depth, id) with three stable sorts and takes the first of
  each cell's run, instead of packing depth bits and id into one int64 and reducing with ``amin``;
* rasterisation loops over views and compacts each view's visible points with a boolean mask,
  instead of routing invisible points to a discard cell in one batched scatter.
"""

from __future__ import annotations

import torch

from mirage.camera import project
from mirage.ops.zbuffer import check_rasterize_inputs, check_select_inputs

__all__ = ["zbuffer_select", "zbuffer_select_batched", "rasterize"]


def zbuffer_select(
    cell_index: torch.Tensor,
    depth: torch.Tensor,
    num_cells: int,
    point_index: torch.Tensor | None = None,
    return_depth: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Frontmost point per cell; contract of :func:`mirage.ops.zbuffer.zbuffer_select`.

    cell_index (M,), depth (M,) > 0, point_index (M,) | None (default arange(M)).
    Returns winner (num_cells,) int64 (-1 where empty) [and depth (num_cells,) float32, 0 where empty].
    """
    check_select_inputs(cell_index, depth, point_index)
    device = cell_index.device
    ids = (torch.arange(cell_index.numel(), device=device) if point_index is None else point_index).to(torch.int64)
    depth = depth.to(torch.float32)
    cells = cell_index.to(torch.int64)
    # 1. Order candidates by (cell, depth, id): stable sorts, least significant key first.
    order = torch.sort(ids, stable=True).indices
    order = order[torch.sort(depth[order], stable=True).indices]
    order = order[torch.sort(cells[order], stable=True).indices]
    # 2. The first candidate of each cell's run is the nearest (lowest id on a tie).
    sorted_cells = cells[order]
    first = torch.ones_like(sorted_cells, dtype=torch.bool)
    first[1:] = sorted_cells[1:] != sorted_cells[:-1]
    winners = order[first]
    # 3. Scatter the winners; each cell appears once, so the assignment is well defined.
    winner = torch.full((num_cells,), -1, dtype=torch.int64, device=device)
    winner[sorted_cells[first]] = ids[winners]
    if not return_depth:
        return winner
    best_depth = torch.zeros(num_cells, dtype=torch.float32, device=device)
    best_depth[sorted_cells[first]] = depth[winners]
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
    """One :func:`zbuffer_select` per view. view_index, cell_index, depth, point_index: (M,).

    Returns winner (T, num_cells) [and depth (T, num_cells)].
    """
    check_select_inputs(cell_index, depth, point_index)
    ids = torch.arange(depth.numel(), device=depth.device) if point_index is None else point_index
    winners, depths = [], []
    for t in range(num_views):
        sel = view_index == t
        w, d = zbuffer_select(cell_index[sel], depth[sel], num_cells, ids[sel], return_depth=True)
        winners.append(w)
        depths.append(d)
    winner = torch.stack(winners) if winners else torch.zeros(0, num_cells, dtype=torch.int64)
    if not return_depth:
        return winner
    return winner, torch.stack(depths) if depths else torch.zeros(0, num_cells)


def rasterize(
    points: torch.Tensor, K: torch.Tensor, cam_to_world: torch.Tensor, height: int, width: int,
    near: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contract of :func:`mirage.ops.zbuffer.rasterize`: points (N, 3), K (T, 3, 3) at (height, width),
    cam_to_world (T, 4, 4) -> winner (T, height, width) int64 (-1 empty), depth (T, height, width) float32."""
    check_rasterize_inputs(points, K, cam_to_world, height, width)
    # 1. Project into every view (the same camera.project call as the fast path, so the two z-buffers see
    #    bit-identical coordinates and differ only in how they select).
    uv, z = project(points.unsqueeze(0), K, cam_to_world)  # (T, N, 2), (T, N)
    winners, depths = [], []
    for t in range(K.shape[0]):
        # 2. Keep the points of view t in front of the near plane and inside the grid.
        u, v = uv[t, :, 0], uv[t, :, 1]
        visible = ((z[t] > near) & (u >= 0) & (u < width) & (v >= 0) & (v < height)).nonzero().squeeze(1)
        # 3. The cell containing each projection (pixel centres at +0.5: cell (i, j) is [j, j+1) x [i, i+1)).
        cell = v[visible].floor().long() * width + u[visible].floor().long()
        # 4. Nearest point per cell, reported by its index in ``points``.
        w, d = zbuffer_select(cell, z[t, visible].float(), height * width, visible, return_depth=True)
        winners.append(w.view(height, width))
        depths.append(d.view(height, width))
    return torch.stack(winners), torch.stack(depths)
