"""PatchAutoencoder: shapes, per-frame independence, safetensors round trip, Backbone loading and strides."""

import json

import pytest
import torch

from mirage.models import Backbone, PatchAutoencoder, build_backbone, load_backbone


def _autoencoder(stride=8, seed=0, **kw):
    torch.manual_seed(seed)
    model = PatchAutoencoder(scale_factor_spatial=stride, block_out_channels=(8, 16), layers_per_block=1, **kw)
    with torch.no_grad():  # the residual branches start at zero: give them weights so the test sees a deep net
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _video(B=2, F=3, H=32, W=48, seed=1):
    return torch.rand(B, 3, F, H, W, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_shapes_and_diffusers_convention():
    model = _autoencoder()
    video = _video()
    posterior = model.encode(video).latent_dist
    z = posterior.mode()
    assert z.shape == (2, 48, 3, 4, 6)
    assert torch.equal(posterior.mean, z) and torch.equal(posterior.sample(), z)  # deterministic
    out = model.decode(z).sample
    assert out.shape == video.shape
    assert torch.equal(model(video).sample, out)
    assert model.encode_images(video[:, :, 0]).shape == (2, 48, 4, 6)
    assert model.decode_images(z[:, :, 0]).shape == (2, 3, 32, 48)
    assert (model.spatial_stride, model.temporal_stride, model.patch_size) == (8, 1, 4)
    assert model.config.latents_mean == [0.0] * 48 and model.config.latents_std == [1.0] * 48
    assert model.config.scale_factor_temporal == 1
    stride16 = _autoencoder(stride=16)
    assert stride16.patch_size == 8 and stride16.encode(_video(H=32, W=48)).latent_dist.mode().shape[-2:] == (2, 3)


def test_frame_encoded_alone_is_exactly_its_latent_in_the_clip():
    model = _autoencoder()
    video = _video(B=2, F=5)
    with torch.no_grad():
        z = model.encode(video).latent_dist.mode()
        for b, f in ((0, 0), (1, 3), (0, 4)):
            alone = model.encode(video[b:b + 1, :, f:f + 1]).latent_dist.mode()
            assert torch.equal(alone, z[b:b + 1, :, f:f + 1])
        decoded = model.decode(z).sample
        assert torch.equal(model.decode(z[1:2, :, 2:3]).sample, decoded[1:2, :, 2:3])
        # Changing one frame leaves every other frame's latent untouched.
        changed = video.clone()
        changed[:, :, 2] = -changed[:, :, 2]
        z2 = model.encode(changed).latent_dist.mode()
        assert torch.equal(z2[:, :, [0, 1, 3, 4]], z[:, :, [0, 1, 3, 4]]) and not torch.equal(z2[:, :, 2], z[:, :, 2])
    # Training mode batches the frames (faster); the result agrees to float rounding.
    model.train()
    with torch.no_grad():
        torch.testing.assert_close(model.encode(video).latent_dist.mode(), z, rtol=1e-4, atol=1e-5)


def test_save_load_round_trip_with_safetensors(tmp_path):
    model = _autoencoder(latents_mean=[0.1] * 48, latents_std=[2.0] * 48)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "PatchAutoencoder" and config["scale_factor_spatial"] == 8
    loaded = PatchAutoencoder.from_pretrained(tmp_path).eval()
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.config.latents_mean == [0.1] * 48 and loaded.config.latents_std == [2.0] * 48
    video = _video(B=1, F=2)
    with torch.no_grad():
        assert torch.equal(loaded(video).sample, model(video).sample)


def _patch_backbone(stride=8):
    wan = build_backbone("tiny")
    mean, std = [0.05 * (i % 5) for i in range(48)], [0.5 + 0.02 * i for i in range(48)]
    vae = _autoencoder(stride=stride, latents_mean=mean, latents_std=std)
    return Backbone(wan.transformer, vae, wan.scheduler, max_sequence_length=wan.max_sequence_length,
                    name_or_path="tiny-patch", random_weights=True)


def test_backbone_strides_and_normalised_codec():
    wan = build_backbone("tiny")
    assert (wan.spatial_stride, wan.temporal_stride) == (16, 4)
    assert (wan.spatial_compression, wan.temporal_compression) == (16, 4)
    backbone = _patch_backbone()
    assert (backbone.spatial_stride, backbone.temporal_stride) == (8, 1)
    assert isinstance(backbone.spatial_stride, int) and isinstance(backbone.temporal_stride, int)
    video = _video(B=1, F=3)  # any frame count at temporal stride 1
    with torch.no_grad():
        z = backbone.encode(video)
        assert z.shape == (1, 48, 3, 4, 6)
        mean, std = backbone.latents_stats()
        torch.testing.assert_close(z, (backbone.vae.encode(video).latent_dist.mode() - mean) / std)
        out = backbone.decode(z)
        assert out.shape == video.shape
        torch.testing.assert_close(out, backbone.vae(video).sample, rtol=1e-4, atol=1e-5)
        assert torch.equal(backbone.encode(video[:, :, 1:2]), z[:, :, 1:2])


def test_backbone_saves_and_loads_the_patch_autoencoder(tmp_path):
    backbone = _patch_backbone()
    backbone.save_pretrained(tmp_path / "model")
    loaded = load_backbone(str(tmp_path / "model"))
    assert isinstance(loaded.vae, PatchAutoencoder)
    assert (loaded.spatial_stride, loaded.temporal_stride) == (8, 1)
    assert loaded.vae.config.latents_std == backbone.vae.config.latents_std
    video = _video(B=1, F=2)
    with torch.no_grad():
        assert torch.equal(loaded.encode(video), backbone.encode(video))
    # A Wan backbone directory still loads its AutoencoderKLWan.
    build_backbone("tiny").save_pretrained(tmp_path / "wan")
    assert type(load_backbone(str(tmp_path / "wan")).vae).__name__ == "AutoencoderKLWan"


@pytest.mark.parametrize("kwargs", [
    dict(scale_factor_temporal=4),
    dict(scale_factor_spatial=12),
    dict(scale_factor_spatial=1),                 # below 2^(levels - 1) for two levels
    dict(latents_mean=[0.0] * 47),
    dict(latents_std=[1.0] * 47 + [0.0]),
    dict(block_out_channels=()),
    dict(z_dim=0),
])
def test_bad_configuration_raises(kwargs):
    with pytest.raises(ValueError):
        PatchAutoencoder(**{"block_out_channels": (8, 16), **kwargs})


def test_bad_input_raises():
    model = _autoencoder()
    with pytest.raises(ValueError, match="video must have shape"):
        model.encode(torch.zeros(1, 3, 32, 48))                  # an image, not a video
    with pytest.raises(ValueError, match="video must have shape"):
        model.encode(torch.zeros(1, 4, 1, 32, 48))
    with pytest.raises(ValueError, match="multiples of 8"):
        model.encode(torch.zeros(1, 3, 1, 30, 48))
    with pytest.raises(ValueError, match="at least one frame"):
        model.encode(torch.zeros(1, 3, 0, 32, 48))
    with pytest.raises(ValueError, match="latents must have shape"):
        model.decode(torch.zeros(1, 16, 1, 4, 6))
    with pytest.raises(ValueError, match="latents must have shape"):
        model.decode_images(torch.zeros(1, 48, 1, 4, 6))
    backbone = _patch_backbone()
    with pytest.raises(ValueError, match="multiples of 8"):
        backbone.encode(torch.zeros(1, 3, 1, 36, 48))
