"""Hot-path tensor ops with a clear tensor contract (gsplat's pairing).

Every fast op has a readable pure-torch twin in an underscore module beside it, with the same signature
and contract; tests compare the two and benchmarks use the twin as their baseline.

* :mod:`mirage.ops.zbuffer` - the deterministic z-buffer (fast path, pure torch).
* :mod:`mirage.ops._zbuffer_reference` - the same z-buffer written the obvious way (sorts and a loop
  over views), for tests and benchmarks.
* :mod:`mirage.ops.zbuffer_triton` - the fused GPU kernel (one launch for all views, a shared-memory
  z-buffer per block of points), bit-identical to :mod:`mirage.ops.zbuffer`.

:func:`rasterize` here picks the kernel: Triton on CUDA tensors when triton imports (and
``MIRAGE_ZBUFFER=torch`` is not set), the torch fast path otherwise. Both return the same bits.
"""

from __future__ import annotations

import functools
import os

import torch

from mirage.ops import zbuffer as _torch_zbuffer
from mirage.ops.zbuffer import (
    EMPTY_KEY,
    MAX_POINTS,
    pack_depth_index,
    zbuffer_select,
    zbuffer_select_batched,
)

__all__ = ["EMPTY_KEY", "MAX_POINTS", "pack_depth_index", "zbuffer_select", "zbuffer_select_batched", "rasterize",
           "rasterize_backend"]

BACKENDS = ("auto", "torch", "triton")


@functools.lru_cache(maxsize=1)
def _triton_rasterize():
    """The Triton kernel's entry point, or None where triton does not import (CPU-only installs)."""
    try:
        from mirage.ops.zbuffer_triton import rasterize as kernel
    except Exception:  # noqa: BLE001 - ImportError, or a triton that cannot initialise on this machine
        return None
    return kernel


def rasterize_backend(device: torch.device) -> str:
    """Which implementation :func:`rasterize` uses for tensors on ``device``: "triton" or "torch"."""
    choice = os.environ.get("MIRAGE_ZBUFFER", "auto")
    if choice not in BACKENDS:
        raise ValueError(f"MIRAGE_ZBUFFER must be one of {BACKENDS}, got {choice!r}")
    if choice == "torch" or torch.device(device).type != "cuda":
        return "torch"
    if _triton_rasterize() is None:
        if choice == "triton":
            raise RuntimeError("MIRAGE_ZBUFFER=triton but triton does not import here (pip install triton)")
        return "torch"
    return "triton"


def rasterize(points: torch.Tensor, K: torch.Tensor, cam_to_world: torch.Tensor, height: int, width: int,
              near: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-buffer (N, 3) points into T views: winner (T, height, width) int64 (-1 empty), depth (T, height, width).

    Same contract as :func:`mirage.ops.zbuffer.rasterize`; dispatches by device (see the module docstring).
    """
    if rasterize_backend(points.device) == "triton" and points.dtype == torch.float32:
        return _triton_rasterize()(points, K, cam_to_world, height, width, near)
    return _torch_zbuffer.rasterize(points, K, cam_to_world, height, width, near)
