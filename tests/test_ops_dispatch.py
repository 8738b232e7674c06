"""mirage.ops.rasterize picks the kernel by device and returns the torch fast path's bits on CPU."""

import pytest
import torch

import mirage.ops as ops
from mirage.camera import look_at, make_intrinsics
from mirage.ops import zbuffer


def _scene(n=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    points = torch.randn(n, 3, generator=g) + torch.tensor([0.0, 3.0, 0.0])
    K = make_intrinsics(8.0, 8.0, 6.0, 4.0).expand(3, 3, 3)
    c2w = torch.stack([look_at([0.1 * i, 0, 0], [0, 3, 0]) for i in range(3)])
    return points, K, c2w


def test_cpu_uses_torch_and_matches_it(monkeypatch):
    monkeypatch.delenv("MIRAGE_ZBUFFER", raising=False)
    assert ops.rasterize_backend(torch.device("cpu")) == "torch"
    points, K, c2w = _scene()
    got = ops.rasterize(points, K, c2w, 8, 12)
    want = zbuffer.rasterize(points, K, c2w, 8, 12)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_backend_choice_is_validated(monkeypatch):
    monkeypatch.setenv("MIRAGE_ZBUFFER", "fastest")
    with pytest.raises(ValueError, match="MIRAGE_ZBUFFER"):
        ops.rasterize_backend(torch.device("cpu"))
    monkeypatch.setenv("MIRAGE_ZBUFFER", "torch")
    assert ops.rasterize_backend(torch.device("cuda")) == "torch"


def test_forced_triton_without_triton_says_so(monkeypatch):
    monkeypatch.setenv("MIRAGE_ZBUFFER", "triton")
    monkeypatch.setattr(ops, "_triton_rasterize", lambda: None)
    with pytest.raises(RuntimeError, match="pip install triton"):
        ops.rasterize_backend(torch.device("cuda"))
