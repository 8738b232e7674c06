"""Model configurations: the real Wan2.2-TI2V-5B shapes and a tiny look-alike for tests and the CPU demo.

Both share the structure that the rest of mirage relies on: 48 latent channels, 16x spatial / 4x temporal
VAE compression, transformer patch size (1, 2, 2) and per-token timesteps. Only widths and depths differ.
"""

from __future__ import annotations

import copy

__all__ = [
    "LATENT_CHANNELS",
    "WAN22_5B_HUB_ID",
    "TINY_LATENTS_MEAN",
    "TINY_LATENTS_STD",
    "transformer_config",
    "vae_config",
    "scheduler_config",
    "max_sequence_length",
    "BUILTIN_CONFIGS",
    "TINY_V2_TRANSFORMER",
]

LATENT_CHANNELS = 48
WAN22_5B_HUB_ID = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"

# The VAE shape arguments that make 16x spatial / 4x temporal compression into 48 channels.
_WAN22_VAE_SHAPE = dict(
    z_dim=LATENT_CHANNELS,
    is_residual=True,
    in_channels=12,
    out_channels=12,
    patch_size=2,
    scale_factor_spatial=16,
    scale_factor_temporal=4,
    temperal_downsample=[False, True, True],
)

# Published per-channel statistics of the Wan2.2 VAE latents (vae/config.json of the hub model).
_WAN22_LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]
_WAN22_LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]
# Tiny model: fixed, non-trivial statistics so that tests exercise the normalisation (z - mean) / std.
TINY_LATENTS_MEAN = [round(-0.1 + 0.2 * i / 47, 6) for i in range(LATENT_CHANNELS)]
TINY_LATENTS_STD = [round(0.5 + 1.0 * i / 47, 6) for i in range(LATENT_CHANNELS)]

_TRANSFORMERS = {
    "wan22_5b": dict(
        patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128, in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS, text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
    ),
    "tiny": dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=32,
    ),
}
_VAES = {
    "wan22_5b": dict(base_dim=160, decoder_base_dim=256, latents_mean=_WAN22_LATENTS_MEAN,
                     latents_std=_WAN22_LATENTS_STD, **_WAN22_VAE_SHAPE),
    "tiny": dict(base_dim=8, decoder_base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                 latents_mean=TINY_LATENTS_MEAN, latents_std=TINY_LATENTS_STD, **_WAN22_VAE_SHAPE),
}
# mirage-tiny v2's transformer (issue 10): same structure, widths chosen from a measured CPU step time (one core,
# batch 8, 9 latent frames of 8x12 at temporal stride 1; see mirage/assets/mirage-tiny/README.md). Its autoencoder is
# the trained per-frame PatchAutoencoder (spatial stride 8, temporal stride 1), so it is not a built-in backbone:
# ``mirage.train.tiny_v2.build_backbone`` writes the pair to a directory.
TINY_V2_TRANSFORMER = dict(
    patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS, text_dim=32, freq_dim=64, ffn_dim=384, num_layers=4,
    cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64,
)

# Text tokens per prompt: Wan pipelines pad UMT5 outputs to 512; the tiny model uses a short context.
_MAX_SEQUENCE_LENGTH = {"wan22_5b": 512, "tiny": 16}

BUILTIN_CONFIGS = tuple(_TRANSFORMERS)


def _check(name: str) -> None:
    if name not in _TRANSFORMERS:
        raise ValueError(f"unknown built-in model config {name!r}; choose one of {list(_TRANSFORMERS)}")


def transformer_config(name: str) -> dict:
    """Keyword arguments of ``diffusers.WanTransformer3DModel`` for a built-in config ("tiny" | "wan22_5b")."""
    _check(name)
    return copy.deepcopy(_TRANSFORMERS[name])


def vae_config(name: str) -> dict:
    """Keyword arguments of ``diffusers.AutoencoderKLWan`` for a built-in config."""
    _check(name)
    return copy.deepcopy(_VAES[name])


def max_sequence_length(name: str) -> int:
    """Number of text tokens ``L`` the transformer sees per prompt."""
    _check(name)
    return _MAX_SEQUENCE_LENGTH[name]


def scheduler_config() -> dict:
    """``UniPCMultistepScheduler`` flow-matching settings used by Wan2.2 (shift 5)."""
    return dict(num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
