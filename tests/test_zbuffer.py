"""The z-buffer: fast path (mirage.ops.zbuffer) against its torch twin (mirage.ops._zbuffer_reference)
and an obvious Python loop."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from mirage.camera import intrinsics_from_fov, look_at
from mirage.ops import _zbuffer_reference as ref
from mirage.ops.zbuffer import pack_depth_index, rasterize, zbuffer_select, zbuffer_select_batched


def loop_select(cell, depth, num_cells):
    """Obvious loop: smallest (depth, index) per cell."""
    winner = [-1] * num_cells
    best = [None] * num_cells
    for i, (c, d) in enumerate(zip(cell.tolist(), depth.tolist())):
        if best[c] is None or (d, i) < best[c]:
            best[c], winner[c] = (d, i), i
    return torch.tensor(winner)


def test_pack_is_monotonic_in_depth_then_index():
    depth = torch.tensor([0.001, 0.5, 0.5, 1.0, 1e6], dtype=torch.float32)
    index = torch.tensor([7, 2, 3, 0, 0])
    keys = pack_depth_index(depth, index)
    assert (keys[1:] > keys[:-1]).all()


def test_near_beats_far_regardless_of_order():
    cell = torch.tensor([0, 0, 1, 1])
    depth = torch.tensor([5.0, 1.0, 1.0, 5.0])
    winner, d = zbuffer_select(cell, depth, 3, return_depth=True)
    assert winner.tolist() == [1, 2, -1]
    assert d.tolist() == [1.0, 1.0, 0.0]


def test_ties_go_to_lowest_index():
    cell = torch.tensor([2, 2, 2])
    depth = torch.tensor([1.0, 1.0, 1.0])
    assert zbuffer_select(cell, depth, 3, point_index=torch.tensor([9, 4, 6])).tolist() == [-1, -1, 4]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.25])), min_size=1, max_size=60),
       st.randoms(use_true_random=False))
def test_matches_reference_and_is_order_independent(pairs, rnd):
    cell = torch.tensor([c for c, _ in pairs])
    depth = torch.tensor([d for _, d in pairs], dtype=torch.float32)
    expected = loop_select(cell, depth, 8)
    assert torch.equal(zbuffer_select(cell, depth, 8), expected)
    assert torch.equal(ref.zbuffer_select(cell, depth, 8), expected)
    perm = list(range(len(pairs)))
    rnd.shuffle(perm)
    perm = torch.tensor(perm)
    # Same candidates in another order, keeping their ids: same winners.
    assert torch.equal(zbuffer_select(cell[perm], depth[perm], 8, point_index=perm), expected)
    assert torch.equal(ref.zbuffer_select(cell[perm], depth[perm], 8, point_index=perm), expected)


def test_batched_equals_per_view():
    g = torch.Generator().manual_seed(0)
    M, T, C = 500, 4, 16
    view = torch.randint(0, T, (M,), generator=g)
    cell = torch.randint(0, C, (M,), generator=g)
    depth = torch.rand(M, generator=g) + 0.1
    batched = zbuffer_select_batched(view, cell, depth, T, C)
    for t in range(T):
        sel = (view == t).nonzero().squeeze(1)
        per = zbuffer_select(cell[sel], depth[sel], C, point_index=sel)
        assert torch.equal(batched[t], per)


def test_rasterize_plane_and_near_plane():
    H, W = 8, 12
    K = intrinsics_from_fov(60.0, H, W)[None]
    c2w = torch.eye(4)[None]
    # One point at the centre of pixel (row 3, col 5) at depth 2, one behind the camera, one in front
    # of it but closer than `near`.
    u, v, z = 5.5, 3.5, 2.0
    x = (u - K[0, 0, 2]) / K[0, 0, 0] * z
    y = (v - K[0, 1, 2]) / K[0, 1, 1] * z
    pts = torch.tensor([[x, y, z], [0.0, 0.0, -1.0], [0.0, 0.0, 1e-4]])
    winner, depth = rasterize(pts, K, c2w, H, W, near=1e-3)
    assert winner.shape == (1, H, W)
    assert (winner >= 0).sum() == 1 and winner[0, 3, 5] == 0
    assert depth[0, 3, 5] == pytest.approx(2.0)


def test_shapes_checked():
    for impl in (zbuffer_select, ref.zbuffer_select):
        with pytest.raises(ValueError, match="cell_index"):
            impl(torch.zeros(3, dtype=torch.long), torch.ones(4), 2)
        with pytest.raises(ValueError, match="point_index"):
            impl(torch.zeros(3, dtype=torch.long), torch.ones(3), 2, point_index=torch.zeros(2, dtype=torch.long))
    K, c2w = torch.eye(3)[None], torch.eye(4)[None]
    for impl in (rasterize, ref.rasterize):
        with pytest.raises(ValueError, match="points"):
            impl(torch.zeros(5, 2), K, c2w, 4, 4)
        with pytest.raises(ValueError, match="cam_to_world"):
            impl(torch.zeros(5, 3), K, torch.eye(4).expand(2, 4, 4), 4, 4)
        with pytest.raises(ValueError, match="K"):
            impl(torch.zeros(5, 3), torch.eye(3), c2w, 4, 4)


def random_scene(seed, n=4000, views=5, quantise=False):
    """Points in front of jittered cameras; quantised depths make many exact ties."""
    g = torch.Generator().manual_seed(seed)
    pts = torch.randn(n, 3, generator=g) * torch.tensor([1.5, 1.0, 1.0]) + torch.tensor([0.0, 0.0, 3.0])
    if quantise:
        pts = (pts * 4).round() / 4
    poses = torch.stack([look_at((torch.rand(3, generator=g) - 0.5).tolist(), [0.0, 0.0, 3.0], up=[0, -1, 0])
                         for _ in range(views)])
    return pts, poses


@pytest.mark.parametrize("seed, quantise, near", [(0, False, 1e-3), (1, True, 1e-3), (2, True, 2.5)])
def test_rasterize_matches_reference(seed, quantise, near):
    pts, poses = random_scene(seed, quantise=quantise)
    H, W = 12, 20
    K = intrinsics_from_fov(70.0, H, W).expand(len(poses), 3, 3)
    fast = rasterize(pts, K, poses, H, W, near)
    slow = ref.rasterize(pts, K, poses, H, W, near)
    assert (fast[0] >= 0).sum() > 0.3 * fast[0].numel()
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])
    if quantise:
        return  # coincident points tie on depth and go to the lowest index: storage order decides
    # Storage order does not matter once ids are mapped back (no exact ties).
    perm = torch.randperm(len(pts), generator=torch.Generator().manual_seed(seed))
    shuffled = rasterize(pts[perm], K, poses, H, W, near)[0]
    assert torch.equal(torch.where(shuffled >= 0, perm[shuffled.clamp_min(0)], -1), fast[0])


def test_batched_select_matches_reference():
    g = torch.Generator().manual_seed(4)
    M, T, C = 3000, 3, 50
    view, cell = torch.randint(0, T, (M,), generator=g), torch.randint(0, C, (M,), generator=g)
    depth = torch.randint(1, 20, (M,), generator=g).float() / 4
    fast = zbuffer_select_batched(view, cell, depth, T, C, return_depth=True)
    slow = ref.zbuffer_select_batched(view, cell, depth, T, C, return_depth=True)
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])


@pytest.mark.gpu
def test_cpu_and_cuda_agree():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    g = torch.Generator().manual_seed(1)
    M, C = 200_000, 3520
    cell = torch.randint(0, C, (M,), generator=g)
    depth = (torch.randint(1, 50, (M,), generator=g).float() / 10)  # many exact ties
    cpu = zbuffer_select(cell, depth, C)
    gpu = zbuffer_select(cell.cuda(), depth.cuda(), C).cpu()
    assert torch.equal(cpu, gpu)
    assert torch.equal(ref.zbuffer_select(cell.cuda(), depth.cuda(), C).cpu(), cpu)
