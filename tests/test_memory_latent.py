import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from mirage.camera import intrinsics_from_fov, look_at, make_intrinsics, scale_intrinsics
from mirage.memory import LatentSpatialMemory, read_points, read_ply

H, W, S = 64, 96, 16
h, w = H // S, W // S
C = 8
K = intrinsics_from_fov(60.0, H, W)
EYE = torch.eye(4)


def latent(seed=0, channels=C):
    return torch.randn(channels, h, w, generator=torch.Generator().manual_seed(seed))


def plane(depth=2.0):
    return torch.full((H, W), depth)


def translated(x=0.0, y=0.0, z=0.0):
    T = torch.eye(4)
    T[:3, 3] = torch.tensor([x, y, z])
    return T


def snapshot(m):
    return (m.points.clone(), m.features.clone(), m.version, m.frames_inserted)


def assert_unchanged(m, snap):
    assert torch.equal(m.points, snap[0]) and torch.equal(m.features, snap[1])
    assert (m.version, m.frames_inserted) == snap[2:]


# --------------------------------------------------------------------------- exact geometry
@pytest.mark.parametrize("voxel_size", [None, 0.01])
def test_read_at_inserting_view_returns_inserted_cells(voxel_size):
    m = LatentSpatialMemory(channels=C, voxel_size=voxel_size)
    z = latent()
    assert m.insert(z, plane(2.0), K, EYE) == h * w
    out = m.read(K, EYE, (H, W), (h, w))
    assert out.mask.all()
    assert torch.equal(out.features, z)
    assert torch.allclose(out.depth, torch.full((h, w), 2.0))


def test_box_depth_map_and_posed_camera():
    # A box face at depth 1.5 in front of a wall at depth 4, seen from a rotated, translated camera.
    depth = plane(4.0)
    depth[16:48, 32:64] = 1.5
    c2w = look_at([1.0, -2.0, 0.5], [1.0, 3.0, 0.5])
    m = LatentSpatialMemory(channels=C, voxel_size=None)
    z = latent(1)
    m.insert(z, depth, K, c2w)
    out = m.read(K, c2w, (H, W), (h, w))
    assert out.mask.all() and torch.equal(out.features, z)
    expected = torch.full((h, w), 4.0)
    expected[1:3, 2:4] = 1.5
    assert torch.allclose(out.depth, expected, atol=1e-5)


def test_sideways_move_shifts_cells_by_pinhole_amount():
    d = 2.0
    fx_latent = scale_intrinsics(K, (H, W), (h, w))[0, 0].item()
    m = LatentSpatialMemory(channels=C, voxel_size=None)
    z = latent(2)
    m.insert(z, plane(d), K, EYE)
    # Moving right by one cell's footprint at depth d shifts the image one cell left.
    out = m.read(K, translated(x=d / fx_latent), (H, W), (h, w))
    assert torch.equal(out.features[:, :, : w - 1], z[:, :, 1:])
    assert out.mask[:, : w - 1].all() and not out.mask[:, w - 1].any()
    # Two cells down: y is down in OpenCV.
    out = m.read(K, translated(y=2 * d / fx_latent), (H, W), (h, w))
    assert torch.equal(out.features[:, : h - 2], z[:, 2:]) and not out.mask[h - 2 :].any()


def test_forward_move_reduces_depth():
    m = LatentSpatialMemory(channels=C, voxel_size=None)
    m.insert(latent(), plane(3.0), K, EYE)
    out = m.read(K, translated(z=1.0), (H, W), (h, w))
    assert out.mask.any()
    assert torch.allclose(out.depth[out.mask], torch.tensor(2.0), atol=1e-5)


def test_read_batch_equals_single_reads():
    m = LatentSpatialMemory(channels=C, voxel_size=None)
    m.insert(latent(), plane(2.0), K, EYE)
    poses = torch.stack([EYE, translated(x=0.3), translated(z=0.5), look_at([0, 0, 0], [0.3, 0.0, 1.0], up=[0, -1, 0])])
    batch = m.read_batch(K, poses, (H, W), (h, w))
    assert batch.features.shape == (4, C, h, w) and batch.mask.shape == (4, h, w)
    for t in range(4):
        single = m.read(K, poses[t], (H, W), (h, w))
        assert torch.equal(batch.features[t], single.features) and torch.equal(batch.mask[t], single.mask)
        assert torch.equal(batch.depth[t], single.depth)


def test_read_at_other_resolution_uses_scaled_intrinsics():
    m = LatentSpatialMemory(channels=C, voxel_size=None)
    z = latent()
    m.insert(z, plane(2.0), K, EYE)
    # Same camera described at twice the image size reads the same cells.
    out = m.read(scale_intrinsics(K, (H, W), (2 * H, 2 * W)), EYE, (2 * H, 2 * W), (h, w))
    assert torch.equal(out.features, z)


# --------------------------------------------------------------------------- occlusion, determinism
@pytest.mark.parametrize("near_first", [True, False])
def test_near_beats_far_whatever_the_order(near_first):
    m = LatentSpatialMemory(channels=C, voxel_size=None)
    near, far = (latent(1), plane(1.0)), (latent(2), plane(3.0))
    for z, d in ([near, far] if near_first else [far, near]):
        m.insert(z, d, K, EYE)
    out = m.read(K, EYE, (H, W), (h, w))
    assert torch.equal(out.features, near[0])
    assert torch.allclose(out.depth, torch.ones(h, w))


def test_points_behind_or_at_near_plane_are_ignored():
    m = LatentSpatialMemory(channels=C, voxel_size=None)
    m.insert(latent(), plane(2.0), K, EYE)
    assert not m.read(K, translated(z=2.5), (H, W), (h, w)).mask.any()  # plane behind
    assert not m.read(K, translated(z=1.95), (H, W), (h, w), near=0.1).mask.any()  # plane inside near


def test_readout_is_deterministic_and_independent_of_storage_order():
    g = torch.Generator().manual_seed(3)
    m = LatentSpatialMemory(channels=C, voxel_size=None)
    for i in range(4):
        depth = 1.0 + 3.0 * torch.rand(H, W, generator=g)
        m.insert(latent(i), depth, K, look_at([0.1 * i, 0, 0], [0.1 * i, 0.0, 1.0], up=[0, -1, 0]))
    pose = look_at([0.15, 0.05, 0.1], [0.1, 0.0, 1.0], up=[0, -1, 0])
    Kl = scale_intrinsics(K, (H, W), (h, w))[None]
    first = read_points(m.points, m.features, Kl, pose[None], (h, w), 1e-3)
    again = read_points(m.points, m.features, Kl, pose[None], (h, w), 1e-3)
    perm = torch.randperm(len(m), generator=g)
    shuffled = read_points(m.points[perm], m.features[perm], Kl, pose[None], (h, w), 1e-3)
    assert first.mask.sum() > 0
    for a, b in ((first, again), (first, shuffled)):
        assert torch.equal(a.features, b.features) and torch.equal(a.mask, b.mask) and torch.equal(a.depth, b.depth)


# --------------------------------------------------------------------------- insert rules
def test_depth_pooling_rule_invalid_and_exclude():
    depth = plane(2.0)
    depth[0:16, 0:16] = float("nan")  # cell (0,0): no valid depth
    depth[0:16, 16:32][:8] = float("inf")  # cell (0,1): exactly half valid -> kept
    depth[0:16, 32:48][:9] = 0.0  # cell (0,2): less than half valid -> skipped
    depth[16:32, 0:16] = torch.linspace(1, 3, 256).reshape(16, 16)  # cell (1,0): median
    exclude = torch.zeros(H, W, dtype=torch.bool)
    exclude[40, 40] = True  # one pixel excludes cell (2, 2)
    m = LatentSpatialMemory(channels=C, voxel_size=None)
    written = m.insert(latent(), depth, K, EYE, exclude)
    assert written == h * w - 3 == len(m)
    out = m.read(K, EYE, (H, W), (h, w))
    assert not out.mask[0, 0] and out.mask[0, 1] and not out.mask[0, 2] and not out.mask[2, 2]
    assert out.depth[1, 0] == torch.linspace(1, 3, 256)[127]  # lower median: an observed value
    assert torch.isfinite(m.points).all()


def test_all_invalid_depth_stores_nothing():
    m = LatentSpatialMemory(channels=C, voxel_size=None)
    depth = torch.full((H, W), float("nan"))
    assert m.insert(latent(), depth, K, EYE) == 0 and len(m) == 0


def test_reinserting_a_seen_view_adds_nothing():
    m = LatentSpatialMemory(channels=C, voxel_size=0.02)
    depth = 2.0 + 0.5 * torch.sin(torch.linspace(0, 6, W))[None].expand(H, W)
    n = m.insert(latent(0), depth, K, EYE)
    assert n == len(m) > 0
    v = m.version
    m.insert(latent(1), depth, K, EYE)
    assert len(m) == n and m.version == v + 1
    # The newer observation replaced the older one.
    assert torch.equal(m.read(K, EYE, (H, W), (h, w)).features, latent(1))


def test_within_one_insert_nearest_cell_wins_a_voxel():
    depth = plane(2.0)
    depth[16:32, 48:64] = 1.9  # cell (1, 3) is the nearest
    m = LatentSpatialMemory(channels=C, voxel_size=1000.0)
    z = latent()
    # All cells inside the voxel [0, 1000)^3.
    assert m.insert(z, depth, K, translated(500.0, 500.0, 0.0)) == 1 and len(m) == 1
    assert torch.equal(m.features[0], z[:, 1, 3])


def test_within_one_insert_ties_go_to_first_cell():
    m = LatentSpatialMemory(channels=C, voxel_size=1000.0)
    z = latent()
    m.insert(z, plane(2.0), K, translated(500.0, 500.0, 0.0))
    assert len(m) == 1 and torch.equal(m.features[0], z[:, 0, 0])


def test_eviction_drops_least_recently_written_first():
    m = LatentSpatialMemory(channels=C, voxel_size=None, max_points=30)
    z1, z2 = latent(1), latent(2)
    m.insert(z1, plane(2.0), K, EYE)
    m.insert(z2, plane(3.0), K, EYE)
    assert len(m) == 30
    kept_old = z1.permute(1, 2, 0).reshape(-1, C)[-6:]  # the last 6 cells of frame 1 (row-major)
    assert torch.equal(m.features[:6], kept_old)
    assert torch.equal(m.features[6:], z2.permute(1, 2, 0).reshape(-1, C))


def test_insert_batch_equals_sequential_inserts():
    g = torch.Generator().manual_seed(5)
    lats = torch.randn(3, C, h, w, generator=g)
    depths = 1.5 + torch.rand(3, H, W, generator=g)
    poses = torch.stack([translated(x=0.05 * t) for t in range(3)])
    a = LatentSpatialMemory(channels=C, voxel_size=0.05)
    b = LatentSpatialMemory(channels=C, voxel_size=0.05)
    for t in range(3):
        a.insert(lats[t], depths[t], K, poses[t])
    b.insert_batch(lats, depths, K, poses)
    assert torch.equal(a.points, b.points) and torch.equal(a.features, b.features)
    assert a.frames_inserted == b.frames_inserted == 3


# --------------------------------------------------------------------------- validation
def test_bad_inputs_raise_and_leave_memory_unchanged():
    m = LatentSpatialMemory(channels=C, voxel_size=0.05)
    m.insert(latent(), plane(), K, EYE)
    snap = snapshot(m)
    non_rigid = EYE.clone()
    non_rigid[0, 0] = 2.0
    nan_pose = EYE.clone()
    nan_pose[0, 3] = float("nan")
    cases = [
        ((latent(channels=C + 1), plane(), K, EYE), "channel"),
        ((latent()[None], plane(), K, EYE), "latent"),
        ((latent(), plane()[:, :92], K, EYE), "divide|multiple"),
        ((latent(), plane()[None], K, EYE), "depth"),
        ((latent(), plane(), make_intrinsics(0.0, 50.0, 48, 32), EYE), "focal"),
        ((latent(), plane(), K[:2], EYE), "intrinsics"),
        ((latent(), plane(), K, non_rigid), "rigid"),
        ((latent(), plane(), K, nan_pose), "non-finite"),
        ((latent(), plane(), K, EYE[:3]), "cam_to_world"),
        ((latent(), plane().long(), K, EYE), "floating"),
        ((latent() * float("nan"), plane(), K, EYE), "non-finite"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            m.insert(*args)
        assert_unchanged(m, snap)
    with pytest.raises(ValueError, match="exclude"):
        m.insert(latent(), plane(), K, EYE, exclude=torch.zeros(H, W))
    with pytest.raises(ValueError, match="voxels"):
        m.insert(latent(), plane(1e6), K, EYE)  # beyond the voxel key range
    assert_unchanged(m, snap)
    with pytest.raises(ValueError, match="rigid"):
        m.read(K, non_rigid, (H, W), (h, w))
    with pytest.raises(ValueError, match="size"):
        m.read(K, EYE, (H, W), (0, w))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from([float("nan"), float("inf"), -float("inf"), -1.0, 0.0]), min_size=h * w,
                max_size=h * w))
def test_invalid_depth_cells_are_skipped(bad_values):
    depth = plane(2.0)
    bad = torch.tensor([i % 3 == 0 for i in range(h * w)]).reshape(h, w)
    cells = depth.view(h, S, w, S)
    for i in range(h):
        for j in range(w):
            if bad[i, j]:
                cells[i, :, j, :] = bad_values[i * w + j]
    m = LatentSpatialMemory(channels=C, voxel_size=None)
    assert m.insert(latent(), depth, K, EYE) == int((~bad).sum())
    assert torch.isfinite(m.points).all()
    assert torch.equal(m.read(K, EYE, (H, W), (h, w)).mask, ~bad)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 3), st.integers(0, 3), st.sampled_from([float("nan"), float("inf"), 0.0, -2.0, 1e-9]))
def test_bad_poses_and_intrinsics_raise(row, col, value):
    m = LatentSpatialMemory(channels=C, voxel_size=None)
    m.insert(latent(), plane(), K, EYE)
    snap = snapshot(m)
    pose = EYE.clone()
    pose[row, col] = value
    # A finite translation, or a change within the rigidity tolerance, is still a fine pose.
    if math.isfinite(value) and (abs(value - float(EYE[row, col])) < 1e-6 or (row < 3 and col == 3)):
        m.insert(latent(), plane(), K, pose)
        return
    with pytest.raises(ValueError):
        m.insert(latent(), plane(), K, pose)
    assert_unchanged(m, snap)
    Kbad = K.clone()
    Kbad[0, 0] = value if value <= 0 or not math.isfinite(value) else -value
    with pytest.raises(ValueError):
        m.insert(latent(), plane(), Kbad, EYE)
    assert_unchanged(m, snap)


# --------------------------------------------------------------------------- state, persistence
def test_dtype_device_and_stats():
    m = LatentSpatialMemory(channels=C, voxel_size=0.05, dtype=torch.bfloat16)
    m.insert(latent(), plane(), K, EYE)
    assert m.features.dtype == torch.bfloat16 and m.points.dtype == torch.float32
    out = m.read(K, EYE, (H, W), (h, w))
    assert out.features.dtype == torch.bfloat16 and out.depth.dtype == torch.float32
    s = m.stats()
    n = h * w
    assert s["points"] == n and s["frames_inserted"] == 1
    assert s["bytes"] == n * (12 + 2 * C + 4 + 8 + 3)  # xyz + bf16 features + stamp + voxel key + colour
    assert s["kind"] == "latent" and s["channels"] == C
    v = m.version
    m.to(dtype=torch.float32)
    assert m.features.dtype == torch.float32 and m.version == v + 1
    m.clear()
    assert len(m) == 0 and m.frames_inserted == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_save_load_round_trip(tmp_path, dtype):
    m = LatentSpatialMemory(channels=C, voxel_size=0.05, max_points=1000, dtype=dtype)
    m.insert(latent(0), plane(2.0), K, EYE)
    m.insert(latent(1), plane(2.5), K, translated(x=0.2))
    path = tmp_path / "mem.safetensors"
    m.save(path)
    r = LatentSpatialMemory.load(path)
    assert (r.channels, r.voxel_size, r.max_points, r.dtype, r.frames_inserted) == (C, 0.05, 1000, dtype, 2)
    assert torch.equal(r.points, m.points) and torch.equal(r.features, m.features)
    assert torch.equal(r.read(K, EYE, (H, W), (h, w)).features, m.read(K, EYE, (H, W), (h, w)).features)
    # Dedup keeps working after load.
    n = len(r)
    r.insert(latent(1), plane(2.5), K, translated(x=0.2))
    assert len(r) == n


def test_corrupt_truncated_and_foreign_files_raise(tmp_path):
    from safetensors.torch import save_file

    m = LatentSpatialMemory(channels=C, voxel_size=None)
    m.insert(latent(), plane(), K, EYE)
    good = tmp_path / "good.safetensors"
    m.save(good)
    data = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 64)
    save_file({"points": torch.zeros(1, 3)}, tmp_path / "foreign.safetensors", metadata={"format": "other"})
    save_file({"points": torch.zeros(1, 3), "values": torch.zeros(1, C), "stamps": torch.zeros(1, dtype=torch.int32)},
              tmp_path / "future.safetensors",
              metadata={"format": "mirage.LatentSpatialMemory", "format_version": "99", "config": "{}",
                        "dtype": "float32"})
    for name, match in [("trunc", "safetensors"), ("garbage", "safetensors"), ("foreign", "format"),
                        ("future", "format_version")]:
        with pytest.raises(ValueError, match=match):
            LatentSpatialMemory.load(tmp_path / f"{name}.safetensors")


def test_export_points_and_ply(tmp_path):
    m = LatentSpatialMemory(channels=C, voxel_size=None)
    m.insert(latent(), plane(), K, EYE)
    xyz, rgb = m.export_points(colorize="pca")
    assert xyz.shape == (h * w, 3) and xyz.dtype == np.float32 and rgb.dtype == np.uint8
    assert rgb.min() == 0 and rgb.max() == 255  # stretched to the full range
    xyz2, rgb2 = m.export_points(colorize="pca")
    assert np.array_equal(rgb, rgb2)
    xyz3, rgb3 = m.export_points(colorize=lambda f: torch.full((f.shape[0], 3), 0.5), max_points=10)
    assert xyz3.shape == (10, 3) and (rgb3 == 128).all()
    with pytest.raises(ValueError, match="colorize"):
        m.export_points(colorize=lambda f: f)
    m.export_ply(tmp_path / "m.ply", colorize="pca")
    rx, rc = read_ply(tmp_path / "m.ply")
    assert np.array_equal(rx, xyz) and np.array_equal(rc, rgb)


@pytest.mark.gpu
def test_cuda_memory_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    g = torch.Generator().manual_seed(7)
    cpu = LatentSpatialMemory(channels=C, voxel_size=0.05, dtype=torch.bfloat16)
    gpu = LatentSpatialMemory(channels=C, voxel_size=0.05, dtype=torch.bfloat16, device="cuda")
    for i in range(3):
        z, d = latent(i), 1.0 + torch.rand(H, W, generator=g)
        pose = translated(x=0.1 * i)
        assert cpu.insert(z, d, K, pose) == gpu.insert(z, d, K, pose)
    assert torch.equal(cpu.features, gpu.features.cpu())
    assert torch.allclose(cpu.points, gpu.points.cpu(), atol=1e-5)
    poses = torch.stack([translated(x=0.05), translated(z=0.3)])
    a = cpu.read_batch(K, poses, (H, W), (h, w))
    b = gpu.read_batch(K, poses, (H, W), (h, w))
    assert torch.equal(a.mask, b.mask.cpu()) and torch.equal(a.features, b.features.cpu())
