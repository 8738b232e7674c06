"""The RGB point-cloud baseline (mirage.memory.rgb): pixels stored, read by rasterising + encoding."""

import numpy as np
import pytest
import torch

from mirage.autoencoders import PatchifyAutoencoder
from mirage.camera import intrinsics_from_fov
from mirage.memory import LatentSpatialMemory, RGBPointCloudMemory, read_ply

H, W = 32, 48
K = intrinsics_from_fov(60.0, H, W)
EYE = torch.eye(4)
AE = PatchifyAutoencoder(16)


def image(seed=0):
    return torch.rand(3, H, W, generator=torch.Generator().manual_seed(seed))


def quantised(rgb):
    return (rgb * 255).round() / 255


def translated(x=0.0, y=0.0, z=0.0):
    T = torch.eye(4)
    T[:3, 3] = torch.tensor([x, y, z])
    return T


def memory(**kw):
    return RGBPointCloudMemory(AE.encode, channels=AE.latent_channels, **kw)


def test_render_at_inserting_view_is_exact():
    c = memory()
    rgb = image()
    assert c.insert(rgb, torch.full((H, W), 2.0), K, EYE) == H * W
    out, mask, depth = c.render(K, EYE, (H, W))
    assert mask.all() and torch.allclose(out, quantised(rgb), atol=1e-6)
    assert torch.allclose(depth, torch.full((H, W), 2.0))


def test_one_point_per_valid_pixel_and_exclude():
    depth = torch.full((H, W), 2.0)
    depth[0, :] = float("nan")
    depth[1, :3] = 0.0
    exclude = torch.zeros(H, W, dtype=torch.bool)
    exclude[5, 5] = True
    c = memory()
    assert c.insert(image(), depth, K, EYE, exclude) == H * W - W - 3 - 1
    _, mask, _ = c.render(K, EYE, (H, W))
    assert not mask[0].any() and not mask[1, :3].any() and not mask[5, 5] and mask.sum() == len(c)


def test_occlusion_and_pixel_shift():
    c = memory()
    near, far = image(1), image(2)
    c.insert(far, torch.full((H, W), 4.0), K, EYE)
    c.insert(near, torch.full((H, W), 1.0), K, EYE)
    out, _, depth = c.render(K, EYE, (H, W))
    assert torch.allclose(out, quantised(near), atol=1e-6) and (depth == 1.0).all()
    # One pixel's footprint at depth 1 to the right: the near image shifts one pixel left.
    out, mask, _ = c.render(K, translated(x=1.0 / K[0, 0].item()), (H, W))
    assert torch.allclose(out[:, :, : W - 1], quantised(near)[:, :, 1:], atol=1e-6)


def test_read_reencodes_and_pools_mask():
    c = memory()
    rgb = image()
    depth = torch.full((H, W), 2.0)
    depth[:16, :16] = float("nan")  # latent cell (0, 0) is empty
    c.insert(rgb, depth, K, EYE)
    out = c.read(K, EYE, (H, W), (2, 3))
    assert out.features.shape == (3 * 256, 2, 3) and out.features.dtype == torch.float32
    assert out.mask.tolist() == [[False, True, True], [True, True, True]]
    assert torch.allclose(out.features[:, 1, 1], AE.encode(quantised(rgb)[None])[0, :, 1, 1], atol=1e-6)
    assert torch.equal(c.coverage(K, EYE[None], (H, W), (2, 3)), torch.tensor([5 / 6]))
    batch = c.read_batch(K, torch.stack([EYE, translated(x=0.5)]), (H, W), (2, 3))
    assert batch.features.shape == (2, 3 * 256, 2, 3) and torch.equal(batch.mask[0], out.mask)


def test_read_checks_the_encoder():
    c = RGBPointCloudMemory(lambda x: x[:, :1], channels=AE.latent_channels)
    c.insert(image(), torch.full((H, W), 2.0), K, EYE)
    with pytest.raises(ValueError, match="encoder"):
        c.read(K, EYE, (H, W), (2, 3))
    with pytest.raises(ValueError, match="no encoder"):
        RGBPointCloudMemory(channels=8).read(K, EYE, (H, W), (2, 3))
    calls = []
    c.encoder = lambda x: calls.append(x) or AE.encode(x)
    with pytest.raises(ValueError, match="multiple"):
        c.read(K, EYE, (H, W), (5, 3))  # checked before rendering and encoding
    assert calls == []


def test_same_geometry_as_latent_memory():
    # Both memories read the same cells from the same frame: the latent memory readout decodes to the
    # RGB memory's render pooled per cell wherever whole cells are covered.
    rgb = quantised(image(3))
    depth = torch.full((H, W), 2.0)
    pose = translated(x=16 * 2.0 / K[0, 0].item())  # exactly one latent cell to the right
    mem = LatentSpatialMemory(channels=AE.latent_channels, voxel_size=None)
    mem.insert(AE.encode(rgb[None])[0], depth, K, EYE)
    cache = memory()
    cache.insert(rgb, depth, K, EYE)
    lat = mem.read(K, pose, (H, W), (2, 3))
    pix, mask, _ = cache.render(K, pose, (H, W))
    assert lat.mask.tolist() == [[True, True, False], [True, True, False]]
    decoded = AE.decode(lat.features[None])[0]
    assert torch.allclose(decoded[:, :, :32], pix[:, :, :32], atol=1e-6)
    assert torch.equal(cache.read(K, pose, (H, W), (2, 3)).mask, lat.mask)


def test_voxel_capacity_and_bytes():
    c = memory(voxel_size=0.02, max_points=H * W + 10)
    d = torch.full((H, W), 2.0)
    n = c.insert(image(), d, K, EYE)
    c.insert(image(1), d, K, EYE)  # revisit: replaces, adds nothing
    assert len(c) == n
    c.insert(image(2), torch.full((H, W), 3.0), K, EYE)
    assert len(c) == H * W + 10
    s = c.stats()
    assert s["bytes"] == len(c) * (12 + 3 + 4 + 8) and s["kind"] == "rgb" and s["channels"] == AE.latent_channels


def test_validation_leaves_memory_unchanged():
    c = memory()
    c.insert(image(), torch.full((H, W), 2.0), K, EYE)
    before = (c.points.clone(), c.colors.clone(), c.version)
    with pytest.raises(ValueError, match="rgb"):
        c.insert(image()[:, :-1], torch.full((H, W), 2.0), K, EYE)
    with pytest.raises(ValueError, match="focal"):
        c.insert(image(), torch.full((H, W), 2.0), K * 0, EYE)
    bad = EYE.clone()
    bad[1, 1] = 3.0
    with pytest.raises(ValueError, match="rigid"):
        c.insert(image(), torch.full((H, W), 2.0), K, bad)
    with pytest.raises(ValueError, match="rgb"):
        c.observe_batch(image()[None].double().long(), torch.full((1, H, W), 2.0), K, EYE[None])
    assert torch.equal(c.points, before[0]) and torch.equal(c.colors, before[1]) and c.version == before[2]


def test_save_load_and_ply(tmp_path):
    c = memory(voxel_size=0.05, dtype=torch.bfloat16)
    c.insert(image(), torch.full((H, W), 2.0), K, EYE)
    c.save(tmp_path / "c.safetensors")
    r = RGBPointCloudMemory.load(tmp_path / "c.safetensors", encoder=AE.encode)
    assert torch.equal(r.points, c.points) and torch.equal(r.colors, c.colors) and r.voxel_size == 0.05
    assert (r.channels, r.dtype, r.frames_inserted) == (AE.latent_channels, torch.bfloat16, 1)
    assert torch.equal(r.read(K, EYE, (H, W), (2, 3)).features, c.read(K, EYE, (H, W), (2, 3)).features)
    assert RGBPointCloudMemory.load(tmp_path / "c.safetensors").encoder is None
    with pytest.raises(ValueError, match="format"):
        LatentSpatialMemory.load(tmp_path / "c.safetensors")
    c.export_ply(tmp_path / "c.ply")
    xyz, rgb = read_ply(tmp_path / "c.ply")
    assert np.array_equal(xyz, c.points.numpy()) and np.array_equal(rgb, c.colors.numpy())


def test_patchify_autoencoder_is_exact():
    x = torch.rand(2, 3, 32, 64)
    z = AE.encode(x)
    assert z.shape == (2, 768, 2, 4) and torch.equal(AE.decode(z), x)
    assert torch.equal(z[0, :, 1, 2].reshape(3, 16, 16), x[0, :, 16:32, 32:48])
    with pytest.raises(ValueError, match="multiple"):
        AE.encode(torch.rand(1, 3, 30, 64))
    with pytest.raises(ValueError):
        AE.decode(torch.rand(1, 10, 2, 2))
