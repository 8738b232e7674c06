"""The Triton readout kernel against the torch z-buffer: bit-identical winners and depths, on any machine.

Exact, not within a tolerance, because nothing here depends on the CPU: both sides project with the one formula
of :func:`mirage.camera.project` (separate IEEE multiplies, divides and adds in a fixed order, no BLAS, no
fused multiply-add: IEEE-754 rounds each of those one way only), the winner of a cell is defined by its
(depth, index) key, and the reported depth is the winner's z from that same projection (checked below against
``project`` of the winning points themselves).

Without a GPU the kernels run under Triton's interpreter on CPU tensors (TRITON_INTERPRET=1, set here only
while the kernel module is imported, so nothing else in the test process is interpreted). The interpreter runs
each program in Python (~0.1-0.3 s), so inputs are small and fit in a few blocks; the block size never changes
the result. With CUDA the same tests run the compiled kernel. Skipped where triton is not installed.
"""

import importlib
import importlib.util
import os
import sys

import pytest
import torch

from mirage.camera import intrinsics_from_fov, look_at, project
from mirage.ops.zbuffer import rasterize as torch_rasterize

triton = pytest.importorskip("triton", reason="triton is not installed (pip install triton): the fused readout "
                                              "kernel and its exactness test need it")



def _import_kernel():
    if "mirage.ops.zbuffer_triton" in sys.modules:
        return sys.modules["mirage.ops.zbuffer_triton"]
    saved = os.environ.get("TRITON_INTERPRET")
    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        return importlib.import_module("mirage.ops.zbuffer_triton")
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved


kernel = _import_kernel()
# NaN / inf points: the interpreter's numpy warns about inf * 0 in the projection (the reference computes the same)
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
DEVICE = torch.device("cpu") if kernel.interpreted() else torch.device("cuda")
if DEVICE.type == "cuda" and not torch.cuda.is_available():
    pytest.skip("the kernel module was imported compiled (no TRITON_INTERPRET) and there is no CUDA device",
                allow_module_level=True)


def _cameras(T, H, W, seed=0):
    g = torch.Generator().manual_seed(seed)
    K = intrinsics_from_fov(70.0, H, W)[None].expand(T, 3, 3).contiguous()
    eyes = torch.randn(T, 3, generator=g) * 2.5
    c2w = torch.stack([look_at(eye, torch.randn(3, generator=g) * 0.3) for eye in eyes]).float()
    return K, c2w


def _points(N, seed=0):
    """Random points with exact depth ties (duplicates), points behind every camera's near plane, NaN / inf."""
    g = torch.Generator().manual_seed(seed)
    pts = torch.randn(N, 3, generator=g) * 1.5
    pts = (pts * 4).round() / 4  # a coarse lattice: many points share a depth in some view
    pts[N // 4 : N // 2] = pts[: N // 4]  # duplicates: the same depth, the same cell, different indices
    pts[-3] = float("nan")
    pts[-2] = float("inf")
    return pts


def _assert_same(points, K, c2w, H, W, **kw):
    expected_winner, expected_depth = torch_rasterize(points, K, c2w, H, W, **({"near": kw["near"]} if "near" in kw
                                                                               else {}))
    winner, depth = kernel.rasterize(points.to(DEVICE), K.to(DEVICE), c2w.to(DEVICE), H, W, **kw)
    assert winner.shape == (K.shape[0], H, W) and winner.dtype == torch.int64
    assert depth.shape == (K.shape[0], H, W) and depth.dtype == torch.float32
    assert torch.equal(winner.cpu(), expected_winner)
    assert torch.equal(depth.cpu().view(torch.int32), expected_depth.view(torch.int32))  # bits, not values
    _assert_depth_is_the_winners_z(points, K, c2w, winner.cpu(), depth.cpu())
    return expected_winner


def _assert_depth_is_the_winners_z(points, K, c2w, winner, depth):
    """The reported depth of every cell is ``project``'s z of the winning point in that view, to the bit."""
    for t in range(K.shape[0]):
        hit = winner[t] >= 0
        _, z = project(points[winner[t][hit]].unsqueeze(0), K[t : t + 1], c2w[t : t + 1])
        assert torch.equal(depth[t][hit].view(torch.int32), z[0].view(torch.int32))
        assert (depth[t][~hit] == 0).all()


def test_latent_grid_bit_identical():
    K, c2w = _cameras(2, 44, 80, seed=3)
    _assert_same(_points(2048, seed=3) * 2, K, c2w, 44, 80, block_size=1024)


def test_random_points_several_views_bit_identical():
    H, W = 6, 8  # few cells: many candidates per cell
    K, c2w = _cameras(3, H, W)
    c2w[2] = look_at(torch.tensor([0.0, -30.0, 0.0]), torch.tensor([0.0, -60.0, 0.0]))  # looks away: all behind
    points = _points(96)
    winner = _assert_same(points, K, c2w, H, W, block_size=32)
    assert (winner[:2] >= 0).float().mean() > 0.5 and (winner[2] == -1).all()
    ties = winner[:2][(winner[:2] >= 24) & (winner[:2] < 48)]  # a duplicate won: its twin has a lower index
    assert ties.numel() == 0


def test_near_plane_and_grid_edges():
    H, W = 8, 12
    K, c2w = _cameras(1, H, W)
    K, c2w = K[:1], torch.eye(4)[None]
    fx, cx, fy, cy = K[0, 0, 0], K[0, 0, 2], K[0, 1, 1], K[0, 1, 2]
    z = 2.0
    # u exactly 0 and exactly W (outside), v exactly H - 1e-3, one point closer than near, one behind
    uv = torch.tensor([[0.0, 0.0], [W, 3.0], [5.5, H - 1e-3], [5.5, 3.5], [5.5, 3.5], [-1e-4, 2.0]])
    pts = torch.stack([(uv[:, 0] - cx) / fx * z, (uv[:, 1] - cy) / fy * z, torch.full((6,), z)], dim=1)
    pts[3, 2], pts[4] = 1e-4, torch.tensor([0.0, 0.0, -1.0])
    _assert_same(pts.float(), K, c2w, H, W, block_size=16)
    _assert_same(pts.float(), K, c2w, H, W, block_size=16, near=0.0)


def test_block_size_never_changes_the_result():
    H, W = 5, 7
    K, c2w = _cameras(2, H, W, seed=1)
    points = _points(64, seed=1)
    results = [kernel.rasterize(points.to(DEVICE), K.to(DEVICE), c2w.to(DEVICE), H, W, block_size=b)
               for b in (16, 64, 1024)]
    for winner, depth in results[1:]:
        assert torch.equal(winner, results[0][0]) and torch.equal(depth, results[0][1])
    _assert_same(points, K, c2w, H, W, block_size=64)


def test_empty_memory_and_no_views():
    K, c2w = _cameras(2, 4, 6)
    winner, depth = kernel.rasterize(torch.zeros(0, 3, device=DEVICE), K.to(DEVICE), c2w.to(DEVICE), 4, 6)
    assert winner.shape == (2, 4, 6) and (winner == -1).all() and (depth == 0).all()
    winner, depth = kernel.rasterize(_points(8).to(DEVICE), K[:0].to(DEVICE), c2w[:0].to(DEVICE), 4, 6)
    assert winner.shape == (0, 4, 6) and depth.shape == (0, 4, 6)


@pytest.mark.parametrize("change, problem", [
    (dict(points=torch.zeros(4, 2)), "points must have shape"),
    (dict(points=torch.zeros(4, 3, dtype=torch.float64)), "float32"),
    (dict(K=torch.zeros(2, 3, 3)), "cam_to_world"),
    (dict(height=0), "positive"),
    (dict(near=-1.0), "near"),
    (dict(block_size=48), "block_size"),
    (dict(height=1 << 15, width=1 << 14), "too large"),
])
def test_rejects_bad_input(change, problem):
    K, c2w = _cameras(1, 4, 6)
    args = dict(points=torch.zeros(4, 3), K=K, cam_to_world=c2w, height=4, width=6)
    args.update(change)
    args = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    with pytest.raises(ValueError, match=problem):
        kernel.rasterize(**args)


def test_compiles_for_cuda_without_a_gpu(monkeypatch):
    """The compiled path (not the interpreter): PTX for sm_90 keeps the IEEE projection and the 64-bit min."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    spec = importlib.util.spec_from_file_location("_zbuffer_triton_compiled", kernel.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # a second copy, its kernels compiled-mode JITFunctions
    types = dict(points_ptr="*fp32", cameras_ptr="*fp32", best_ptr="*i64", num_points="i32", num_views="i32",
                 height="i32", width="i32", near="fp32", BLOCK="constexpr", LOG2_BLOCK="constexpr")
    source = ASTSource(module._zbuffer_kernel, types, constexprs={"BLOCK": 64, "LOG2_BLOCK": 6})
    try:
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                                  options={"num_warps": 2, "enable_fp_fusion": False})
    except (FileNotFoundError, RuntimeError) as exc:  # no ptxas / CUDA backend in this triton build
        pytest.skip(f"triton cannot compile for CUDA here: {exc}")
    ptx = compiled.asm["ptx"]
    assert "min.s64" in ptx and "div.rn.f32" in ptx and "mul.rn.f32" in ptx and "add.rn.f32" in ptx
    # the projection is separate IEEE operations, as in mirage.camera.project: a contracted FMA would round once
    # where the reference rounds twice
    assert "fma" not in ptx and "div.full.f32" not in ptx and "div.approx" not in ptx
    resolve = ASTSource(module._resolve_kernel, dict(best_ptr="*i64", winner_ptr="*i64", depth_ptr="*fp32",
                                                     total="i32", BLOCK="constexpr"), constexprs={"BLOCK": 256})
    triton.compile(resolve, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "enable_fp_fusion": False})


@pytest.mark.gpu
def test_cuda_latent_grid_one_million_points_nine_views():
    if not torch.cuda.is_available() or kernel.interpreted():
        pytest.skip("needs CUDA and the compiled kernel")
    g = torch.Generator().manual_seed(2)
    points = (torch.randn(1_000_000, 3, generator=g) * 3).cuda()
    points[: 300_000] = points[300_000:600_000]  # exact ties
    K, c2w = _cameras(9, 44, 80, seed=2)
    for block in (256, 1024, 4096):
        expected = torch_rasterize(points, K.cuda(), c2w.cuda(), 44, 80)
        got = kernel.rasterize(points, K.cuda(), c2w.cuda(), 44, 80, block_size=block)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1].view(torch.int32), expected[1].view(torch.int32))
