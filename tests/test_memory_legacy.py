"""The deprecated import paths still work (one release) and say where things went."""

import importlib

import pytest
import torch

from mirage.autoencoders import PatchifyAutoencoder
from mirage.camera import intrinsics_from_fov
from mirage.memory import SpatialMemory

H, W = 32, 48
K = intrinsics_from_fov(60.0, H, W)
EYE = torch.eye(4)
AE = PatchifyAutoencoder(16)


def image(seed=0):
    return torch.rand(3, H, W, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("old, names", [
    ("mirage.zbuffer", ["rasterize", "zbuffer_select", "zbuffer_select_batched", "pack_depth_index"]),
    ("mirage.pointcloud", ["pool_depth", "PointStore", "voxel_keys", "write_ply", "read_ply", "pca_colors",
                           "lift_frames", "check_frames"]),
    ("mirage.point_memory", ["PointMemory"]),
    ("mirage.rgb_cache", ["RGBPointCache"]),
    ("mirage.rgb_memory", ["RGBCacheMemory"]),
])
def test_old_modules_warn_and_reexport(old, names):
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=old.replace(".", r"\.")):
        module = importlib.reload(module)
    for name in names:
        assert getattr(module, name) is not None


def test_zbuffer_reexport_is_the_new_function():
    from mirage.ops import zbuffer
    from mirage.zbuffer import rasterize

    assert rasterize is zbuffer.rasterize


def test_rgb_point_cache_keeps_its_old_read():
    from mirage.rgb_cache import RGBPointCache

    c = RGBPointCache()
    rgb = image()
    depth = torch.full((H, W), 2.0)
    depth[:16, :16] = float("nan")
    c.insert(rgb, depth, K, EYE)
    out = c.read(K, EYE, (H, W), encoder=AE.encode)  # any channel count: the old cache had none of its own
    assert out.features.shape == (3 * 256, 2, 3)
    assert out.mask.tolist() == [[False, True, True], [True, True, True]]
    with pytest.raises(ValueError, match="encoder"):
        c.read(K, EYE, (H, W), encoder=lambda x: x[0])


def test_rgb_cache_memory_wraps_a_cache(tmp_path):
    from mirage.rgb_cache import RGBPointCache
    from mirage.rgb_memory import RGBCacheMemory

    cache = RGBPointCache(voxel_size=0.05)
    cache.insert(image(), torch.full((H, W), 2.0), K, EYE)
    m = RGBCacheMemory(cache, AE.encode, channels=AE.latent_channels)
    assert m.stores_pixels and isinstance(m, SpatialMemory) and m.cache is m
    assert len(m) == len(cache) and m.voxel_size == 0.05 and m.frames_inserted == 1
    m.insert(image(1), torch.full((H, W), 3.0), K, EYE)  # pixels, as before
    assert len(m) > len(cache) and m.frames_inserted == 2 and cache.frames_inserted == 1
    out = m.read(K, EYE, (H, W), (2, 3))
    assert out.features.shape == (AE.latent_channels, 2, 3) and out.mask.all()
    cache.save(tmp_path / "c.safetensors")
    assert len(RGBPointCache.load(tmp_path / "c.safetensors")) == len(cache)
    cache.export_ply(tmp_path / "c.ply", max_points=10)  # the old (path, max_points) signature
