"""Weight-free autoencoders.

:class:`PatchifyAutoencoder` folds each ``stride x stride`` pixel block into channels: an exactly
invertible stand-in for a VAE with the same spatial stride (16 for Wan2.2). A memory filled with its
latents and read at a new view decodes to the reprojected image, so the whole memory path (insert,
z-buffer, readout, decode) can be checked end to end without model weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mirage.camera import SPATIAL_STRIDE

__all__ = ["PatchifyAutoencoder"]


class PatchifyAutoencoder(nn.Module):
    """encode: (B, 3, H, W) -> (B, 3 * stride^2, H / stride, W / stride) by ``pixel_unshuffle``; decode inverts it.

    Images in any value range; H and W must be multiples of ``stride``. No parameters.
    """

    def __init__(self, stride: int = SPATIAL_STRIDE, in_channels: int = 3):
        super().__init__()
        if int(stride) < 1 or int(in_channels) < 1:
            raise ValueError(f"stride and in_channels must be positive, got {stride}, {in_channels}")
        self.config = {"stride": int(stride), "in_channels": int(in_channels)}
        self.stride = int(stride)
        self.in_channels = int(in_channels)

    @property
    def latent_channels(self) -> int:
        return self.in_channels * self.stride**2

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"images must be (B, {self.in_channels}, H, W), got {tuple(images.shape)}")
        H, W = images.shape[-2:]
        if H % self.stride or W % self.stride:
            raise ValueError(f"image size {H}x{W} must be a multiple of stride {self.stride}")
        return F.pixel_unshuffle(images, self.stride)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents must be (B, {self.latent_channels}, h, w), got {tuple(latents.shape)}")
        return F.pixel_shuffle(latents, self.stride)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))
