"""The RGB point-cloud baseline behind the memory interface that :class:`~mirage.world_model.MirageWorldModel`
reads and writes, so one rollout loop runs both (the paper's comparison, Fig. 5).

Reading costs what the baseline costs (paper Eq. 2): rasterise the cache at pixel resolution for every
target view, then VAE-encode each rendered view into latents. Writing stores pixels, not latents, so the
world model hands it RGB frames (``stores_pixels = True``) and skips re-encoding them.
"""

from __future__ import annotations

from typing import Callable

import torch

from .memory import Readout
from .pointcloud import pool_depth
from .rgb_cache import RGBPointCache

__all__ = ["RGBCacheMemory"]


class RGBCacheMemory:
    """``RGBPointCache`` + an image encoder ``encoder(rgb (N,3,H,W) [0,1]) -> latents (N,C,h,w)``
    (e.g. :meth:`MirageWorldModel.encode_images`)."""

    stores_pixels = True

    def __init__(self, cache: RGBPointCache, encoder: Callable[[torch.Tensor], torch.Tensor], channels: int = 48):
        self.cache = cache
        self.encoder = encoder
        self.channels = int(channels)

    @property
    def version(self) -> int:
        return self.cache.version

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def __len__(self) -> int:
        return len(self.cache)

    def stats(self) -> dict:
        return {**self.cache.stats(), "channels": self.channels}

    def read_batch(self, intrinsics, cam_to_world, image_size, latent_size) -> Readout:
        """Render T views at ``image_size`` and encode them: features (T, C, h, w), mask / depth (T, h, w)
        pooled with the memory's insert rule (a cell is seen when half its pixels are)."""
        rgb, _, depth = self.cache.render_batch(intrinsics, cam_to_world, image_size)
        latents = self.encoder(rgb)
        if latents.ndim != 4 or tuple(latents.shape[-2:]) != tuple(latent_size) or latents.shape[1] != self.channels:
            raise ValueError(f"encoder returned {tuple(latents.shape)}, expected (T, {self.channels}, *{latent_size})")
        cell_depth, cell_mask = pool_depth(depth, latent_size)
        return Readout(latents, cell_mask.to(latents.device), cell_depth.to(latents.device))

    def read(self, intrinsics, cam_to_world, image_size, latent_size) -> Readout:
        out = self.read_batch(intrinsics, cam_to_world[None], image_size, latent_size)
        return Readout(out.features[0], out.mask[0], out.depth[0])

    def insert_batch(self, rgb, depth, intrinsics, cam_to_world, exclude=None) -> int:
        """rgb (T, 3, H, W) in [0, 1] (pixels, not latents); the rest as :meth:`LatentSpatialMemory.insert_batch`."""
        return self.cache.insert_batch(rgb, depth, intrinsics, cam_to_world, exclude)

    # SHIM (branch wt-pipeline only, drop at merge): the memory protocol's observe_batch (pixels stored,
    # encode / latents ignored), so the pipeline runs against this class before mirage/memory/ lands.
    def observe_batch(self, rgb, depth, intrinsics, cam_to_world, exclude=None, *, encode=None, latents=None) -> int:
        return self.cache.insert_batch(rgb, depth, intrinsics, cam_to_world, exclude)

    def insert(self, rgb, depth, intrinsics, cam_to_world, exclude=None) -> int:
        return self.cache.insert(rgb, depth, intrinsics, cam_to_world, exclude)
