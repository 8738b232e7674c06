"""Camera control: Plücker rays per latent cell, projected to the backbone width and added to its patch tokens.

Like VideoX-Fun's Wan2.2-Fun-5B-Control-Camera, the ray map enters through the patch-embedding stage;
here a single patchifying convolution, zero-initialised so that a fresh model ignores the camera.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from mirage.camera import plucker_rays, scale_intrinsics, validate_intrinsics, validate_pose
from mirage.models.dtypes import cast_module
from mirage.models.placement import execution_device

__all__ = ["PluckerEmbedding", "latent_rays"]

RAY_CHANNELS = 6


class PluckerEmbedding(ModelMixin, ConfigMixin):
    """(B, 6, F, h, w) Plücker rays -> (B, D, F/p_t, h/p_h, w/p_w) additions to the patch embedding."""

    @register_to_config
    def __init__(self, inner_dim: int = 3072, patch_size: Sequence[int] = (1, 2, 2), ray_channels: int = RAY_CHANNELS):
        super().__init__()
        self.proj = nn.Conv3d(ray_channels, inner_dim, kernel_size=tuple(patch_size), stride=tuple(patch_size))
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    @classmethod
    def from_transformer(cls, transformer) -> "PluckerEmbedding":
        cfg = transformer.config
        with execution_device(transformer):
            emb = cls(inner_dim=cfg.num_attention_heads * cfg.attention_head_dim, patch_size=tuple(cfg.patch_size))
        return cast_module(emb, transformer.patch_embedding.weight.dtype)

    def forward(self, rays: torch.Tensor) -> torch.Tensor:
        return self.proj(rays.to(self.proj.weight.dtype))


def latent_rays(intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: Sequence[int],
                latent_size: Sequence[int]) -> torch.Tensor:
    """Plücker rays of each latent cell for one camera per latent frame.

    intrinsics: (F, 3, 3) or (3, 3) at ``image_size=(H, W)``; cam_to_world: (F, 4, 4).
    Returns (6, F, h, w) float32 with ``latent_size=(h, w)``; stack along a new dim 0 for a batch.
    """
    validate_intrinsics(intrinsics, "intrinsics")
    validate_pose(cam_to_world, "cam_to_world")
    if cam_to_world.ndim != 3:
        raise ValueError(f"cam_to_world must have shape (F, 4, 4), got {tuple(cam_to_world.shape)}")
    K = intrinsics.float()
    if K.ndim == 2:
        K = K.expand(cam_to_world.shape[0], 3, 3)
    if K.shape[0] != cam_to_world.shape[0]:
        raise ValueError(f"got {K.shape[0]} intrinsics for {cam_to_world.shape[0]} poses")
    h, w = int(latent_size[0]), int(latent_size[1])
    K_lat = scale_intrinsics(K, image_size, (h, w))
    rays = plucker_rays(K_lat, cam_to_world.float().to(K_lat.device), h, w)  # (F, 6, h, w)
    return rays.transpose(0, 1).contiguous()
