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
    monkeypatch.delenv("MIRAGE_ZBUFFER", raising=False)
    with pytest.raises(ValueError, match="backend"):
        ops.rasterize_backend(torch.device("cpu"), "fastest")
    assert ops.rasterize_backend(torch.device("cuda"), "torch") == "torch"
    assert ops.rasterize_backend(torch.device("cpu"), "triton") == "torch"  # the kernel runs on CUDA tensors only


def test_environment_overrides_auto_only(monkeypatch):
    monkeypatch.setattr(ops, "_triton_rasterize", lambda: object())  # as if triton imported
    monkeypatch.setenv("MIRAGE_ZBUFFER", "torch")
    assert ops.rasterize_backend(torch.device("cuda")) == "torch"  # auto -> the override
    assert ops.rasterize_backend(torch.device("cuda"), "triton") == "triton"  # an explicit choice wins
    monkeypatch.delenv("MIRAGE_ZBUFFER")
    assert ops.rasterize_backend(torch.device("cuda")) == "triton"
    monkeypatch.setenv("MIRAGE_ZBUFFER", "fastest")
    with pytest.raises(ValueError, match="MIRAGE_ZBUFFER"):
        ops.rasterize_backend(torch.device("cuda"))


def test_forced_triton_without_triton_says_so(monkeypatch):
    monkeypatch.setattr(ops, "_triton_rasterize", lambda: None)
    with pytest.raises(RuntimeError, match="pip install triton"):
        ops.rasterize_backend(torch.device("cuda"), "triton")


def test_memories_carry_their_backend_to_every_read(monkeypatch):
    from mirage.memory import LatentSpatialMemory

    memory = LatentSpatialMemory(4, voxel_size=None)
    assert memory.zbuffer_backend == "auto"
    with pytest.raises(ValueError, match="backend"):
        memory.zbuffer_backend = "cuda"
    memory.zbuffer_backend = "torch"
    assert memory.copy().zbuffer_backend == "torch"
    asked = []
    real = ops.rasterize_backend
    monkeypatch.setattr(ops, "rasterize_backend", lambda device, backend="auto": asked.append(backend)
                        or real(device, backend))
    K = make_intrinsics(8.0, 8.0, 6.0, 4.0)
    memory.insert(torch.rand(4, 2, 3), torch.full((8, 12), 2.0), K * 1.0, torch.eye(4))
    memory.read(K, torch.eye(4), (8, 12), (2, 3))
    memory.visibility(K, torch.eye(4)[None], (8, 12), (2, 3))
    assert asked and set(asked) == {"torch"}
