"""Hot-path tensor ops with a clear tensor contract (gsplat's pairing).

Every fast op has a readable pure-torch twin in an underscore module beside it, with the same signature
and contract; tests compare the two and benchmarks use the twin as their baseline.

* :mod:`mirage.ops.zbuffer` - the deterministic z-buffer (fast path, pure torch).
* :mod:`mirage.ops._zbuffer_reference` - the same z-buffer written the obvious way (sorts and a loop
  over views), for tests and benchmarks.
* :mod:`mirage.ops.zbuffer_triton` - the fused GPU kernel (one launch for all views, a shared-memory
  z-buffer per block of points), bit-identical to :mod:`mirage.ops.zbuffer`.

:func:`rasterize` here picks the implementation from its ``backend`` argument (memories pass their
``zbuffer_backend``): "torch", "triton", or "auto" = Triton on CUDA tensors when triton imports, the torch fast path
otherwise. Both return the same bits.

The environment variable ``MIRAGE_ZBUFFER`` (one of the backends) overrides "auto" only, for benchmarks and
debugging without touching code; this module is the one place that reads it. An explicit "torch" or "triton" wins.
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
           "rasterize_backend", "check_backend", "BACKENDS", "BACKEND_OVERRIDE_ENV"]

BACKENDS = ("auto", "torch", "triton")
BACKEND_OVERRIDE_ENV = "MIRAGE_ZBUFFER"


def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`BACKENDS`, else ValueError."""
    if backend not in BACKENDS:
        raise ValueError(f"z-buffer backend must be one of {BACKENDS}, got {backend!r}")
    return backend


@functools.lru_cache(maxsize=1)
def _triton_rasterize():
    """The Triton kernel's entry point, or None where triton does not import (CPU-only installs)."""
    try:
        from mirage.ops.zbuffer_triton import rasterize as kernel
    except Exception:  # noqa: BLE001 - ImportError, or a triton that cannot initialise on this machine
        return None
    return kernel


def rasterize_backend(device: torch.device, backend: str = "auto") -> str:
    """Which implementation :func:`rasterize` uses for tensors on ``device`` when asked for ``backend``:
    "triton" or "torch". "triton" is only for CUDA tensors (the interpreter path is the tests' business)."""
    choice = check_backend(backend)
    if choice == "auto":
        override = os.environ.get(BACKEND_OVERRIDE_ENV, "auto")
        if override not in BACKENDS:
            raise ValueError(f"{BACKEND_OVERRIDE_ENV} must be one of {BACKENDS}, got {override!r}")
        choice = override
    if choice == "torch" or torch.device(device).type != "cuda":
        return "torch"
    if _triton_rasterize() is None:
        if choice == "triton":
            raise RuntimeError("the triton z-buffer was asked for, but triton does not import here (pip install "
                               "triton)")
        return "torch"
    return "triton"


def rasterize(points: torch.Tensor, K: torch.Tensor, cam_to_world: torch.Tensor, height: int, width: int,
              near: float = 1e-3, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Z-buffer (N, 3) points into T views: winner (T, height, width) int64 (-1 empty), depth (T, height, width).

    Same contract as :func:`mirage.ops.zbuffer.rasterize`; ``backend`` and the device pick the implementation
    (see the module docstring).
    """
    if rasterize_backend(points.device, backend) == "triton" and points.dtype == torch.float32:
        return _triton_rasterize()(points, K, cam_to_world, height, width, near)
    return _torch_zbuffer.rasterize(points, K, cam_to_world, height, width, near)
