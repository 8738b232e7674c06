"""PointMemory.clear_region and forget_older_than: what goes, what stays, copy-on-write, bad input."""

import numpy as np
import pytest
import torch

from mirage.camera import intrinsics_from_fov
from mirage.memory import LatentSpatialMemory, RGBPointCloudMemory

H, W, S = 64, 96, 16
h, w = H // S, W // S
C = 8
K = intrinsics_from_fov(60.0, H, W)


def translated(x=0.0, y=0.0, z=0.0):
    T = torch.eye(4)
    T[:3, 3] = torch.tensor([x, y, z])
    return T


def latent(seed=0):
    return torch.randn(C, h, w, generator=torch.Generator().manual_seed(seed))


def plane(depth=2.0):
    return torch.full((H, W), depth)


def two_walls(voxel_size=0.01):
    """Frame 1: a wall at z=2 seen from x=0; frame 2: a wall at z=2 seen from x=10 (far apart)."""
    m = LatentSpatialMemory(channels=C, voxel_size=voxel_size)
    m.insert(latent(0), plane(2.0), K, torch.eye(4))
    m.insert(latent(1), plane(2.0), K, translated(x=10.0))
    return m


@pytest.mark.parametrize("voxel_size", [None, 0.01])
def test_clear_region_removes_exactly_the_points_inside(voxel_size):
    m = two_walls(voxel_size)
    n, version = len(m), m.version
    points = m.points.clone()
    inside = (points[:, 0] >= -5) & (points[:, 0] <= 5)
    removed = m.clear_region([-5.0, -5.0, -5.0], (5.0, 5.0, 5.0))
    assert removed == int(inside.sum()) == h * w
    assert len(m) == n - removed and m.version == version + 1
    assert torch.equal(m.points, points[~inside])
    assert (m.points[:, 0] > 5).all()
    assert m.features.shape == (len(m), C) and m.colors.shape == (len(m), 3)
    # nothing inside: no change at all, not even the version
    assert m.clear_region(np.array([100.0, 100.0, 100.0]), torch.tensor([101.0, 101.0, 101.0])) == 0
    assert m.version == version + 1


def test_clear_region_bounds_are_inclusive_and_the_box_may_be_flat():
    m = LatentSpatialMemory(channels=C, voxel_size=None)
    m.insert(latent(), plane(2.0), K, torch.eye(4))
    z = float(m.points[0, 2])  # every point lies on the plane z = 2
    assert m.clear_region([-100, -100, z], [100, 100, z]) == h * w and len(m) == 0


def test_clear_region_leaves_snapshots_alone():
    m = two_walls()
    snap = m.copy()
    before = snap.points.clone()
    m.clear_region([-5, -5, -5], [5, 5, 5])
    assert torch.equal(snap.points, before) and len(snap) == 2 * h * w


@pytest.mark.parametrize("low, high, word", [
    ([1, 0, 0], [0, 1, 1], "<="), ([0, 0], [1, 1, 1], "3"), ([0, 0, float("nan")], [1, 1, 1], "finite"),
    ("abc", [1, 1, 1], "3"), ([0, 0, 0], [1, 1, float("inf")], "finite"),
])
def test_clear_region_bad_box_raises_and_keeps_memory(low, high, word):
    m = two_walls()
    points, version = m.points.clone(), m.version
    with pytest.raises(ValueError, match=word):
        m.clear_region(low, high)
    assert torch.equal(m.points, points) and m.version == version


def test_forget_older_than_drops_points_not_rewritten():
    m = LatentSpatialMemory(channels=C, voxel_size=0.01)
    m.insert(latent(0), plane(2.0), K, torch.eye(4))            # stamp 1: wall A
    m.insert(latent(1), plane(2.0), K, translated(x=10.0))      # stamp 2: wall B
    m.insert(latent(2), plane(2.0), K, torch.eye(4))            # stamp 3: wall A re-observed (same voxels)
    assert len(m) == 2 * h * w and m.frames_inserted == 3
    assert m.forget_older_than(0) == 0 and m.forget_older_than(1) == 0
    version = m.version
    assert m.forget_older_than(3) == h * w                      # wall B was last written by frame 2
    assert m.version == version + 1
    assert (m.points[:, 0] < 5).all() and len(m) == h * w
    out = m.read(K, torch.eye(4), (H, W), (h, w))
    assert out.mask.all() and torch.equal(out.features, latent(2))  # the re-observed values stay
    assert m.forget_older_than(m.frames_inserted + 1) == h * w and len(m) == 0


@pytest.mark.parametrize("bad", [-1, 1.5, "3", None, True])
def test_forget_older_than_rejects_bad_stamps(bad):
    m = two_walls()
    n = len(m)
    with pytest.raises(ValueError, match="stamp"):
        m.forget_older_than(bad)
    assert len(m) == n


def test_rgb_memory_forgets_too_and_round_trips(tmp_path):
    m = RGBPointCloudMemory(voxel_size=0.01)
    rgb = torch.rand(3, H, W, generator=torch.Generator().manual_seed(0))
    m.insert(rgb, plane(2.0), K, torch.eye(4))
    m.insert(rgb, plane(2.0), K, translated(x=10.0))
    n = len(m)
    removed = m.clear_region([5, -5, -5], [15, 5, 5])
    assert 0 < removed < n and len(m) == n - removed
    path = tmp_path / "rgb.safetensors"
    m.save(path)
    loaded = RGBPointCloudMemory.load(path)
    assert torch.equal(loaded.points, m.points) and torch.equal(loaded.colors, m.colors)
    left = len(loaded)
    assert loaded.forget_older_than(2) == left and len(loaded) == 0  # everything left was written by frame 1
