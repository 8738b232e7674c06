"""Observed colours and the fixed PCA display basis: stored, exported, saved, loaded (also from old files)."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mirage.camera import intrinsics_from_fov
from mirage.memory import NEUTRAL_GREY, LatentSpatialMemory, PCABasis, RGBPointCloudMemory, pca_colors, read_ply

H, W, S = 32, 48, 16
h, w = H // S, W // S
C = 8
K = intrinsics_from_fov(60.0, H, W)
EYE = torch.eye(4)


def latents(T=1, seed=0, scale=1.0):
    return scale * torch.randn(T, C, h, w, generator=torch.Generator().manual_seed(seed))


def cell_image():
    """(1, 3, H, W): cell (i, j) is a flat colour, except cell (0, 0) whose left half is white."""
    rgb = torch.zeros(1, 3, H, W)
    for i in range(h):
        for j in range(w):
            rgb[0, :, i * S:(i + 1) * S, j * S:(j + 1) * S] = torch.tensor([i / 2, j / 3, 0.25])[:, None, None]
    rgb[0, :, :S, : S // 2] = 1.0
    return rgb


def rewrite_without(path, out, drop, metadata=None):
    """Copy a memory file without the tensors in ``drop`` (an older writer), optionally with other metadata."""
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys() if k not in drop}
    meta.update(metadata or {})
    save_file(tensors, str(out), metadata=meta)


def test_observed_colour_is_the_mean_of_valid_depth_pixels():
    rgb = cell_image()
    depth = torch.full((1, H, W), 2.0)
    depth[0, :S, S // 2:S] = float("nan")  # cell (0, 0): only its white half has depth (exactly half: kept)
    m = LatentSpatialMemory(channels=C, voxel_size=None)
    assert m.observe_batch(rgb, depth, K, EYE[None], latents=latents()) == h * w
    colors = m.colors.reshape(h, w, 3)
    assert colors[0, 0].tolist() == [255, 255, 255]
    assert colors[1, 2].tolist() == [128, 170, 64]  # (0.5, 2/3, 0.25) * 255, rounded
    assert m.stats()["bytes"] == h * w * (12 + 4 * C + 4 + 3)  # xyz, features, stamp, colour (no voxel keys)
    xyz, shown = m.export_points()  # "observed" is the default
    assert np.array_equal(shown, m.colors.numpy()) and np.array_equal(xyz, m.points.numpy())


def test_insert_without_rgb_stores_neutral_grey():
    m = LatentSpatialMemory(channels=C, voxel_size=None)
    m.insert_batch(latents(), torch.full((1, H, W), 2.0), K, EYE[None])
    assert (m.colors == NEUTRAL_GREY).all() and m.colors.shape == (h * w, 3)
    m.insert(latents(seed=1)[0], torch.full((H, W), 3.0), K, EYE, rgb=cell_image()[0])
    assert (m.colors[h * w:] != NEUTRAL_GREY).any()
    with pytest.raises(ValueError, match="rgb"):
        m.insert_batch(latents(), torch.full((1, H, W), 2.0), K, EYE[None], rgb=cell_image()[:, :, :-1])


def test_colours_follow_dedup_and_survive_save_and_load(tmp_path):
    m = LatentSpatialMemory(channels=C, voxel_size=0.01, max_points=10)
    m.observe_batch(cell_image(), torch.full((1, H, W), 2.0), K, EYE[None], latents=latents())
    m.observe_batch(1 - cell_image(), torch.full((1, H, W), 2.0), K, EYE[None], latents=latents(seed=1))
    assert len(m) == h * w  # the second view replaced the first in every voxel, colours included
    newer = LatentSpatialMemory(channels=C, voxel_size=None)
    newer.observe_batch(1 - cell_image(), torch.full((1, H, W), 2.0), K, EYE[None], latents=latents(seed=1))
    assert torch.equal(m.colors, newer.colors) and torch.equal(m.features, newer.features)
    m.save(tmp_path / "m.safetensors")
    r = LatentSpatialMemory.load(tmp_path / "m.safetensors")
    assert torch.equal(r.colors, m.colors) and torch.equal(r.features, m.features)
    r.export_ply(tmp_path / "m.ply")
    assert np.array_equal(read_ply(tmp_path / "m.ply")[1], m.colors.numpy())


def test_files_without_colours_still_load(tmp_path):
    m = LatentSpatialMemory(channels=C, voxel_size=0.05)
    m.observe_batch(cell_image(), torch.full((1, H, W), 2.0), K, EYE[None], latents=latents())
    m.save(tmp_path / "new.safetensors")
    rewrite_without(tmp_path / "new.safetensors", tmp_path / "old.safetensors", {"colors"})
    r = LatentSpatialMemory.load(tmp_path / "old.safetensors")
    assert torch.equal(r.features, m.features) and (r.colors == NEUTRAL_GREY).all() and len(r.colors) == len(m)
    r.observe_batch(cell_image(), torch.full((1, H, W), 3.0), K, EYE[None], latents=latents())  # keeps working
    assert len(r) == 2 * len(m)
    bad = tmp_path / "bad.safetensors"
    with safe_open(str(tmp_path / "new.safetensors"), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    save_file({**tensors, "colors": tensors["colors"][:-1]}, str(bad), metadata=meta)
    with pytest.raises(ValueError, match="colors"):
        LatentSpatialMemory.load(bad)


def test_old_rgb_cache_files_load_into_the_rgb_memory(tmp_path):
    m = RGBPointCloudMemory(channels=C, voxel_size=0.05)
    m.insert(cell_image()[0], torch.full((H, W), 2.0), K, EYE)
    m.save(tmp_path / "new.safetensors")
    old_config = {"voxel_size": 0.05, "max_points": None, "frames_inserted": 1}  # what RGBPointCache wrote
    rewrite_without(tmp_path / "new.safetensors", tmp_path / "old.safetensors", set(),
                    {"format": "mirage.RGBPointCache", "config": json.dumps(old_config)})
    r = RGBPointCloudMemory.load(tmp_path / "old.safetensors")
    assert torch.equal(r.colors, m.colors) and (r.channels, r.dtype, r.frames_inserted) == (48, torch.float32, 1)


def test_pca_basis_is_fixed_per_memory(tmp_path):
    m = LatentSpatialMemory(channels=C, voxel_size=None)
    assert m.pca_basis() is None and m.export_points("pca")[1].shape == (0, 3)
    m.insert_batch(latents(), torch.full((1, H, W), 2.0), K, EYE[None])
    _, first = m.export_points("pca")
    assert np.array_equal(first, (pca_colors(m.features) * 255).round().byte().numpy())  # fitted to these points
    basis = m.pca_basis()
    snap = m.copy()
    # Very different features arrive; the old points keep their colours.
    m.insert_batch(latents(seed=5, scale=10.0) + 3.0, torch.full((1, H, W), 3.0), K, EYE[None])
    _, later = m.export_points("pca")
    assert m.pca_basis() is basis and np.array_equal(later[: h * w], first)
    assert not np.array_equal(later[h * w:], (pca_colors(m.features) * 255).round().byte().numpy()[h * w:])
    assert snap.pca_basis() is basis
    # Saved with the memory: a loaded memory shows the same colours.
    m.save(tmp_path / "m.safetensors")
    r = LatentSpatialMemory.load(tmp_path / "m.safetensors")
    assert np.array_equal(r.export_points("pca")[1], later)
    assert torch.equal(r.pca_basis().components, basis.components)
    # A file without a basis fits one at its first PCA export; clear() forgets it.
    rewrite_without(tmp_path / "m.safetensors", tmp_path / "nobasis.safetensors", set(PCABasis.TENSOR_NAMES))
    assert LatentSpatialMemory.load(tmp_path / "nobasis.safetensors")._pca is None
    rewrite_without(tmp_path / "m.safetensors", tmp_path / "half.safetensors", {"pca_range"})
    with pytest.raises(ValueError, match="PCA"):
        LatentSpatialMemory.load(tmp_path / "half.safetensors")
    m.clear()
    assert m.pca_basis() is None


def test_export_options():
    m = RGBPointCloudMemory(channels=C)
    m.insert(cell_image()[0], torch.full((H, W), 2.0), K, EYE)
    xyz, rgb = m.export_points(max_points=100)
    assert xyz.shape == (100, 3) and rgb.dtype == np.uint8
    assert m.export_points("pca")[1].shape == (H * W, 3)
    with pytest.raises(ValueError, match="colorize"):
        m.export_points("rainbow")
