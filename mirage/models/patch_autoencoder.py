"""A per-frame patch autoencoder: the latent space of mirage-tiny v2 (temporal stride 1).

Why not a small causal Wan VAE: with temporal stride 4, a frame encoded alone is a latent-0-type code while every
later target latent is a 4-frame group code, and the two are nearly unrelated for a small VAE (see DESIGN.md,
"Latent type"). Here every frame is encoded on its own, so a frame encoded alone *is* its latent inside a clip and
the memory stores exactly the type of latent the transformer predicts.

Architecture (one frame, ``S = scale_factor_spatial``, ``n = len(block_out_channels)``):

    encode: pixel_unshuffle(S / 2^(n-1)) -> conv3x3 -> [res blocks, stride-2 conv] x (n-1) -> res blocks -> conv1x1 -> z
    decode: conv3x3 -> [res blocks, conv3x3 + pixel_shuffle(2)] x (n-1) -> res blocks -> conv3x3 -> pixel_shuffle

No normalisation layers (fast on CPU; the last conv of every residual block starts at zero, so the network starts
as a shallow patch codec and deepens smoothly). The encoder is deterministic: :meth:`encode` returns the diffusers
``AutoencoderKLOutput`` whose ``latent_dist`` has zero variance, so ``.mode()``, ``.mean`` and ``.sample()`` all give
the same latents, and code written for ``AutoencoderKLWan`` (``vae.encode(x).latent_dist.mode()``,
``vae.decode(z).sample``) runs unchanged. There is no KL term: the transformer sees latents normalised by the
measured per-channel ``latents_mean`` / ``latents_std`` (as for Wan), so a prior on the raw scale adds nothing, and
posterior noise would only cost reconstruction quality; training keeps the raw scale bounded with a tiny L2 penalty.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

__all__ = ["PatchAutoencoder", "PATCH_AUTOENCODER_CLASS_NAME"]

PATCH_AUTOENCODER_CLASS_NAME = "PatchAutoencoder"


class ResidualBlock(nn.Module):
    """x + conv3x3(silu(conv3x3(silu(x)))), the second conv zero-initialised. (N, C, h, w) -> same."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class Upsample2x(nn.Module):
    """conv3x3 to 4 * out channels, then pixel_shuffle(2): (N, C_in, h, w) -> (N, C_out, 2h, 2w)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4 * out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), 2)


class PatchAutoencoder(ModelMixin, ConfigMixin):
    """Per-frame convolutional autoencoder with the ``AutoencoderKLWan`` calling convention.

    Args:
        in_channels: image channels (3).
        z_dim: latent channels (48, like Wan2.2).
        scale_factor_spatial: spatial stride S (a power of two); latents are (H / S, W / S).
        scale_factor_temporal: always 1 (frames are independent); present so code reading
            ``vae.config.scale_factor_temporal`` works for every autoencoder.
        block_out_channels: channels per level; level i runs at 1 / (S / 2^(n-1-i)), the last at 1 / S.
        layers_per_block: residual blocks per level, in the encoder and the decoder.
        latents_mean, latents_std: per-channel statistics of the raw latents (``z_dim`` values each); the backbone
            normalises ``z = (mu - mean) / std``. Measured on data after training.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        z_dim: int = 48,
        scale_factor_spatial: int = 8,
        scale_factor_temporal: int = 1,
        block_out_channels: Sequence[int] = (128, 192),
        layers_per_block: int = 2,
        latents_mean: Sequence[float] | None = None,
        latents_std: Sequence[float] | None = None,
    ):
        super().__init__()
        channels = [int(c) for c in block_out_channels]
        levels = len(channels)
        stride = int(scale_factor_spatial)
        if int(scale_factor_temporal) != 1:
            raise ValueError(f"PatchAutoencoder encodes frames independently: scale_factor_temporal must be 1, "
                             f"got {scale_factor_temporal}")
        if in_channels < 1 or z_dim < 1 or layers_per_block < 0 or levels < 1 or min(channels) < 1:
            raise ValueError(f"bad PatchAutoencoder shape: in_channels={in_channels}, z_dim={z_dim}, "
                             f"block_out_channels={channels}, layers_per_block={layers_per_block}")
        patch = stride // 2 ** (levels - 1)
        if stride < 1 or stride & (stride - 1) or patch < 1:
            raise ValueError(f"scale_factor_spatial must be a power of two >= 2^(levels - 1) = {2 ** (levels - 1)}, "
                             f"got {scale_factor_spatial}")
        for name, stats in (("latents_mean", latents_mean), ("latents_std", latents_std)):
            if stats is not None and len(stats) != z_dim:
                raise ValueError(f"{name} must hold z_dim = {z_dim} values, got {len(stats)}")
        if latents_std is not None and not all(float(s) > 0 for s in latents_std):
            raise ValueError("latents_std must be positive")
        if latents_mean is None or latents_std is None:
            # Identity normalisation until statistics are measured (set_latent_statistics); register them so that
            # config.latents_mean / latents_std always exist, as for AutoencoderKLWan.
            self.register_to_config(latents_mean=[0.0] * z_dim if latents_mean is None else list(latents_mean),
                                    latents_std=[1.0] * z_dim if latents_std is None else list(latents_std))
        self.patch_size = patch

        # Encoder: pixels folded into channels, then convolutions down to 1 / S.
        self.encoder_in = nn.Conv2d(in_channels * patch * patch, channels[0], 3, padding=1)
        self.encoder_levels = nn.ModuleList()
        for i, width in enumerate(channels):
            blocks: list[nn.Module] = [ResidualBlock(width) for _ in range(layers_per_block)]
            if i + 1 < levels:
                blocks.append(nn.Conv2d(width, channels[i + 1], 3, stride=2, padding=1))
            self.encoder_levels.append(nn.Sequential(*blocks))
        self.encoder_out = nn.Conv2d(channels[-1], z_dim, 1)

        # Decoder: the mirror image, upsampling by convolution + pixel shuffle.
        self.decoder_in = nn.Conv2d(z_dim, channels[-1], 3, padding=1)
        self.decoder_levels = nn.ModuleList()
        for i in reversed(range(levels)):
            blocks = [ResidualBlock(channels[i]) for _ in range(layers_per_block)]
            if i > 0:
                blocks.append(Upsample2x(channels[i], channels[i - 1]))
            self.decoder_levels.append(nn.Sequential(*blocks))
        self.decoder_out = nn.Conv2d(channels[0], in_channels * patch * patch, 3, padding=1)

    # ------------------------------------------------------------------ strides
    @property
    def spatial_stride(self) -> int:
        return int(self.config.scale_factor_spatial)

    @property
    def temporal_stride(self) -> int:
        return 1

    # ------------------------------------------------------------------ per-image codec
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) latents of independent images: (N, 3, H, W) in [-1, 1] -> (N, z_dim, H/S, W/S)."""
        self._check_images(images)
        x = self.encoder_in(F.pixel_unshuffle(images, self.patch_size))
        for level in self.encoder_levels:
            x = level(x)
        return self.encoder_out(F.silu(x))

    def decode_images(self, latents: torch.Tensor) -> torch.Tensor:
        """Images of raw latents: (N, z_dim, h, w) -> (N, 3, S h, S w), about [-1, 1] (not clamped)."""
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or latents.shape[1] != self.config.z_dim:
            raise ValueError(f"latents must have shape (N, {self.config.z_dim}, h, w), "
                             f"got {tuple(getattr(latents, 'shape', ()))}")
        x = self.decoder_in(latents)
        for level in self.decoder_levels:
            x = level(x)
        return F.pixel_shuffle(self.decoder_out(F.silu(x)), self.patch_size)

    # ------------------------------------------------------------------ AutoencoderKLWan convention
    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """Encode a video frame by frame: x (B, 3, F, H, W) in [-1, 1] -> ``AutoencoderKLOutput`` whose
        ``latent_dist`` is deterministic with mean (B, z_dim, F, H/S, W/S) raw latents. Any F >= 1."""
        B, F_ = self._check_video(x)
        frames = x.transpose(1, 2).flatten(0, 1)                      # (B F, 3, H, W)
        z = self._per_frame(self.encode_images, frames)               # (B F, z, h, w)
        z = z.unflatten(0, (B, F_)).transpose(1, 2)                    # (B, z, F, h, w)
        posterior = DiagonalGaussianDistribution(torch.cat([z, torch.zeros_like(z)], dim=1), deterministic=True)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        """Decode raw latents frame by frame: z (B, z_dim, F, h, w) -> ``DecoderOutput`` with sample
        (B, 3, F, S h, S w)."""
        if not isinstance(z, torch.Tensor) or z.ndim != 5 or z.shape[1] != self.config.z_dim:
            raise ValueError(f"latents must have shape (B, {self.config.z_dim}, F, h, w), "
                             f"got {tuple(getattr(z, 'shape', ()))}")
        B, F_ = z.shape[0], z.shape[2]
        video = self._per_frame(self.decode_images, z.transpose(1, 2).flatten(0, 1))  # (B F, 3, H, W)
        video = video.unflatten(0, (B, F_)).transpose(1, 2)            # (B, 3, F, H, W)
        return DecoderOutput(sample=video) if return_dict else (video,)

    def forward(self, sample: torch.Tensor, return_dict: bool = True):
        """Reconstruction of a video (B, 3, F, H, W) through the latents."""
        video = self.decode(self.encode(sample).latent_dist.mode()).sample
        return DecoderOutput(sample=video) if return_dict else (video,)

    def _per_frame(self, codec, frames: torch.Tensor) -> torch.Tensor:
        """Run ``codec`` over (N, ...) frames: batched in training, one frame at a time in eval mode.

        oneDNN picks convolution algorithms by batch size, so a batched result differs from the frame's own in the
        last bits (~1e-5). In eval mode every frame goes through alone, so a frame's latent is bit-identical
        whatever else is in the clip, and the memory holds exactly the codes the targets have.
        """
        if self.training or frames.shape[0] == 1:
            return codec(frames)
        return torch.cat([codec(frame.contiguous()) for frame in frames.split(1)])

    # ------------------------------------------------------------------ checks
    def _check_images(self, images) -> None:
        C = self.config.in_channels
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != C:
            raise ValueError(f"images must have shape (N, {C}, H, W), got {tuple(getattr(images, 'shape', ()))}")
        H, W = images.shape[-2:]
        s = self.spatial_stride
        if H == 0 or W == 0 or H % s or W % s:
            raise ValueError(f"image height and width must be positive multiples of {s}, got {H}x{W}")

    def _check_video(self, x) -> tuple[int, int]:
        C = self.config.in_channels
        if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[1] != C:
            raise ValueError(f"video must have shape (B, {C}, F, H, W), got {tuple(getattr(x, 'shape', ()))}")
        if x.shape[0] == 0 or x.shape[2] == 0:
            raise ValueError(f"video must hold at least one frame, got shape {tuple(x.shape)}")
        return x.shape[0], x.shape[2]
