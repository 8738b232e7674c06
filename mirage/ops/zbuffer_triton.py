"""Fused z-buffer readout in Triton: project, z-buffer and resolve all T views of a chunk in one kernel launch.

The fast twin of the torch reference ``mirage.ops.zbuffer.rasterize`` (same signature, same tensor contract, the same
bits): each candidate (point, view) gets the key ``float32_bits(depth) << 32 | point_index`` and every cell keeps
its smallest key, the nearest point and among equal depths the lowest index. The torch reference resolves all
keys with one ``scatter_reduce(amin)``, which is atomic-contention bound on a GPU (1M points into the 3,520 cells
of a 44x80 latent grid: ~280 atomics per cell). Here each program takes a block of points in one view and

1. projects them exactly as ``mirage.camera.project`` does (its camera transform is a fixed chain of separate
   IEEE multiplies and adds, :func:`mirage.camera.rigid_transform_points`, then IEEE multiply, divide and add;
   the kernel is compiled without contraction), so cells and depths are the reference's to the bit on any
   machine: IEEE-754 rounds each of these operations one way only;
2. z-buffers the block on chip: one sort of ``cell | depth bits | lane`` packed into 63 bits puts each cell's
   candidates together, nearest first and, among equal depths, lowest index first (the key order);
3. merges once per touched cell: the first candidate of each run goes to the cell with one global 64-bit
   ``atomic_min``, skipped when the cell already holds a smaller key (values only decrease: skipping is exact).

``atomic_min`` is order-independent, so the result is the same run to run and equal to the reference. A second
small kernel turns the keys into (winner, depth). Runs on CUDA tensors, or on CPU tensors under Triton's
interpreter (``TRITON_INTERPRET=1`` set before this module is imported), which is how the exactness test runs
without a GPU. Import raises ImportError without ``triton``.
"""

from __future__ import annotations

import math

import torch

try:
    import triton
    import triton.language as tl
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("mirage.ops.zbuffer_triton needs triton (pip install triton); the torch reference is "
                      "mirage.ops.zbuffer.rasterize") from exc

from mirage.camera import invert_pose

__all__ = ["rasterize", "interpreted", "effective_block_size", "EMPTY_KEY", "MAX_POINTS"]

EMPTY_KEY = torch.iinfo(torch.int64).max
MAX_POINTS = 2**32 - 1
_CAMERA_FIELDS = 16  # R (9, row-major), t (3), fx, fy, cx, cy of world-to-camera, float32


# The block sort: Triton's bitonic sort on a (2, 2, ..., 2) hypercube (adapted from triton 3.9
# triton.language.standard.sort), with the partner of each element found as pair sum - self (int64 wraps, so it
# is exact) instead of an xor reduction, through tl.reduce with triton's own sum combine. Two reasons: the
# interpreter runs that reduction vectorised (numpy) where tl.sort's xor reduction runs element by element
# (~4 s per 256-point block), and a kernel imported under TRITON_INTERPRET=1 can then run even when triton itself
# was imported earlier without it (tl.sort, tl.sum, ... are compiled-mode @jit functions then).
@triton.jit
def _indicator(n_dims: tl.constexpr, j: tl.constexpr):
    return tl.reshape(tl.arange(0, 2), [1] * (n_dims - j - 1) + [2] + [1] * j)


@triton.jit
def _compare_and_swap(x, flip, i: tl.constexpr, n_dims: tl.constexpr):
    partner = tl.reduce(x, n_dims - 1 - i, tl.standard._sum_combine, keep_dims=True) - x
    is_right = _indicator(n_dims, i)
    return tl.where((x > partner) != (flip ^ is_right).to(tl.int1), partner, x)


@triton.jit
def _bitonic_merge(h, stage: tl.constexpr, order: tl.constexpr, n_dims: tl.constexpr):
    if order == 2:  # alternating directions
        flip = _indicator(n_dims, stage)
    else:
        flip = order
    for i in tl.static_range(stage):
        h = _compare_and_swap(h, flip, stage - 1 - i, n_dims)
    return h


@triton.jit
def _sort(x, LOG2_N: tl.constexpr):
    """Ascending sort of a 1-D int64 tensor of 2**LOG2_N elements."""
    h = tl.reshape(x, [2] * LOG2_N)
    for i in tl.static_range(1, LOG2_N + 1):
        h = _bitonic_merge(h, i, 2 if i < LOG2_N else 0, LOG2_N)
    return tl.reshape(h, x.shape)


@triton.jit
def _zbuffer_kernel(points_ptr, cameras_ptr, best_ptr, num_points, num_views, height, width, near,
                    BLOCK: tl.constexpr, LOG2_BLOCK: tl.constexpr):
    # Program p: block p // T of BLOCK points, in view p % T (consecutive programs share points in cache).
    pid = tl.program_id(0)
    view = pid % num_views
    lane = tl.arange(0, BLOCK)
    index = (pid // num_views).to(tl.int64) * BLOCK + lane
    valid = index < num_points

    # 1. Project (mirage.camera.project, operation for operation)
    x = tl.load(points_ptr + index * 3, mask=valid, other=0.0)
    y = tl.load(points_ptr + index * 3 + 1, mask=valid, other=0.0)
    z = tl.load(points_ptr + index * 3 + 2, mask=valid, other=0.0)
    camera = cameras_ptr + view * 16
    r = camera  # R row-major at 0..8, t at 9..11
    # mirage.camera.rigid_transform_points' chain: ((R_i0 x + R_i1 y) + R_i2 z) + t_i, no contraction
    cam_x = ((tl.load(r + 0) * x + tl.load(r + 1) * y) + tl.load(r + 2) * z) + tl.load(camera + 9)
    cam_y = ((tl.load(r + 3) * x + tl.load(r + 4) * y) + tl.load(r + 5) * z) + tl.load(camera + 10)
    cam_z = ((tl.load(r + 6) * x + tl.load(r + 7) * y) + tl.load(r + 8) * z) + tl.load(camera + 11)
    safe_z = tl.where(tl.abs(cam_z) > 1e-12, cam_z, 1e-12)
    u = tl.math.div_rn(tl.load(camera + 12) * cam_x, safe_z) + tl.load(camera + 14)
    v = tl.math.div_rn(tl.load(camera + 13) * cam_y, safe_z) + tl.load(camera + 15)
    inside = valid & (cam_z > near) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    col = tl.minimum(tl.where(inside, u, 0.0).to(tl.int32), width - 1)  # u >= 0: truncation is floor
    row = tl.minimum(tl.where(inside, v, 0.0).to(tl.int32), height - 1)
    cells = height * width
    cell = tl.where(inside, row * width + col, cells)  # outside: one sentinel cell past the grid
    depth_bits = tl.where(inside, cam_z, 1.0).to(tl.int32, bitcast=True).to(tl.int64)

    # 2. Block z-buffer: sort (cell, depth, lane) packed in 63 bits; the first of each run of equal cells is the
    #    block's nearest point there, lowest index among equal depths (depth > near >= 0: its sign bit is 0)
    composite = (cell.to(tl.int64) << (31 + LOG2_BLOCK)) | (depth_bits << LOG2_BLOCK) | lane
    composite = _sort(composite, LOG2_BLOCK)
    sorted_cell = (composite >> (31 + LOG2_BLOCK)).to(tl.int32)
    previous = tl.gather(sorted_cell, tl.maximum(lane - 1, 0), 0)
    run_start = ((sorted_cell != previous) | (lane == 0)) & (sorted_cell < cells)
    block_start = (pid // num_views).to(tl.int64) * BLOCK
    run_min = (((composite >> LOG2_BLOCK) & 0x7FFFFFFF) << 32) | (block_start + (composite & (BLOCK - 1)))

    # 3. One global merge per touched cell, skipped when the cell already holds a smaller key
    target = best_ptr + view.to(tl.int64) * cells + sorted_cell
    held = tl.load(target, mask=run_start, other=0)
    tl.atomic_min(target, run_min, mask=run_start & (run_min < held), sem="relaxed")


@triton.jit
def _resolve_kernel(best_ptr, winner_ptr, depth_ptr, total, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = offsets < total
    best = tl.load(best_ptr + offsets, mask=valid, other=0)
    empty = best == 9223372036854775807  # EMPTY_KEY
    low = best.to(tl.uint32).to(tl.int64)  # the point index: the key's low 32 bits
    winner = tl.where(empty, -1, low)
    depth = tl.where(empty, 0.0, (best >> 32).to(tl.int32).to(tl.float32, bitcast=True))
    tl.store(winner_ptr + offsets, winner, mask=valid)
    tl.store(depth_ptr + offsets, depth, mask=valid)


def interpreted() -> bool:
    """True when the kernels run under Triton's interpreter (TRITON_INTERPRET=1 at import): CPU tensors only."""
    return not isinstance(_zbuffer_kernel, triton.runtime.JITFunction)


def rasterize(
    points: torch.Tensor, K: torch.Tensor, cam_to_world: torch.Tensor, height: int, width: int,
    near: float = 1e-3, *, block_size: int = 1024, num_warps: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-point-per-cell z-buffer of N points into T views of (height, width), one kernel launch for all views.

    points: (N, 3) float32; K: (T, 3, 3) at (height, width); cam_to_world: (T, 4, 4), all on one device (CUDA,
    or CPU under the interpreter). Returns winner (T, height, width) int64 point index (-1 where empty) and
    depth (T, height, width) float32 (0 where empty), equal to ``mirage.ops.zbuffer.rasterize``.
    near must be >= 0. block_size (power of two, 16..16384; lowered for grids over 2^(32 - log2 block) cells)
    and num_warps tune the kernel; they never change the result.
    """
    if not isinstance(points, torch.Tensor) or points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {tuple(getattr(points, 'shape', ()))}")
    if points.dtype != torch.float32:
        raise ValueError(f"points must be float32 (the reference projects in the points' dtype), got {points.dtype}")
    if K.ndim != 3 or K.shape[1:] != (3, 3) or cam_to_world.shape != (K.shape[0], 4, 4):
        raise ValueError(f"K must be (T, 3, 3) and cam_to_world (T, 4, 4), got {tuple(K.shape)} and "
                         f"{tuple(cam_to_world.shape)}")
    if int(height) <= 0 or int(width) <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    if block_size < 16 or block_size > 16384 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two in [16, 16384], got {block_size}")
    N, T, H, W = points.shape[0], K.shape[0], int(height), int(width)
    if N > MAX_POINTS:
        raise ValueError(f"rasterize: at most {MAX_POINTS} points (ids must fit 32 bits), got {N}")
    if (H * W).bit_length() > 32 - 4:
        raise ValueError(f"grid {H}x{W} too large: at most 2^28 - 1 cells per view")
    if not near >= 0:
        raise ValueError(f"near must be >= 0 (keys pack positive depths), got {near}")
    device = points.device
    if K.device != device or cam_to_world.device != device:
        raise ValueError(f"points, K and cam_to_world must be on one device, got {device}, {K.device}, "
                         f"{cam_to_world.device}")
    if device.type == "cpu" and not interpreted():
        raise ValueError("CPU tensors need Triton's interpreter: set TRITON_INTERPRET=1 before importing "
                         "mirage.ops.zbuffer_triton (or use mirage.ops.zbuffer.rasterize)")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device}")

    cameras = _camera_table(K, cam_to_world, points.dtype)
    best = torch.full((T * H * W,), EMPTY_KEY, dtype=torch.int64, device=device)
    if N and T:
        block = effective_block_size(block_size, N, H, W)
        log2_block = block.bit_length() - 1
        grid = (triton.cdiv(N, block) * T,)
        _zbuffer_kernel[grid](points.contiguous(), cameras, best, N, T, H, W, float(near), BLOCK=block,
                              LOG2_BLOCK=log2_block, num_warps=num_warps, enable_fp_fusion=False)
    winner = torch.empty_like(best)
    depth = torch.empty(best.shape, dtype=torch.float32, device=device)
    if best.numel():
        resolve_block = 1024
        _resolve_kernel[(triton.cdiv(best.numel(), resolve_block),)](best, winner, depth, best.numel(),
                                                                     BLOCK=resolve_block, enable_fp_fusion=False)
    return winner.view(T, H, W), depth.view(T, H, W)


def effective_block_size(block_size: int, num_points: int, height: int, width: int) -> int:
    """The block the kernel runs with: ``block_size``, lowered so that the packed sort key fits 63 bits (the cell,
    H*W + 1 values with "outside", above 31 depth bits and log2(block) lane bits) and to no more than the points
    need (at least 16). The result never depends on it."""
    log2 = min(int(math.log2(block_size)), 32 - (int(height) * int(width)).bit_length(),
               max(4, (int(num_points) - 1).bit_length()))
    return 1 << log2


def _camera_table(K: torch.Tensor, cam_to_world: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(T, 16): world-to-camera R (row-major), t, then fx, fy, cx, cy, computed as ``mirage.camera.project`` does."""
    w2c = invert_pose(cam_to_world.to(dtype))
    K = K.to(dtype)
    T = K.shape[0]
    table = torch.cat([w2c[:, :3, :3].reshape(T, 9), w2c[:, :3, 3], K[:, 0, 0, None], K[:, 1, 1, None],
                       K[:, 0, 2, None], K[:, 1, 2, None]], dim=1)
    assert table.shape[1] == _CAMERA_FIELDS
    return table.contiguous()
