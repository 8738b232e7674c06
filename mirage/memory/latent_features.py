"""The part shared by the memories whose values are VAE latent features: channels, dtype, the latents' contract.

:class:`~mirage.memory.latent.LatentSpatialMemory` (one point per latent cell) and
:class:`~mirage.memory.pixel_lift.PixelLiftMemory` (the paper's pixel-lift ablation: one point per pixel) differ
in how they lift and read; what they store, validate and save is written once here.
"""

from __future__ import annotations

import torch

from mirage.memory.base import PointMemory
from mirage.memory.lifting import check_frames, check_rgb

__all__ = ["LatentFeatureMemory", "describe_shape"]


def describe_shape(x) -> object:
    """A tensor's shape, or the type name of anything else (for error messages)."""
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


class LatentFeatureMemory(PointMemory):
    """Points (N, 3) float32 with latent features (N, C) in a floating dtype and observed colours (N, 3) uint8."""

    KEEPS_COLORS = True

    def __init__(self, channels: int = 48, voxel_size: float | None = None, max_points: int | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        if int(channels) <= 0:
            raise ValueError(f"channels must be positive, got {channels}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point dtype, got {dtype}")
        super().__init__(channels, voxel_size, max_points, device, dtype)
        self.channels = int(channels)

    @property
    def features(self) -> torch.Tensor:
        """(N, C) features in the memory dtype."""
        return self._store.values

    @property
    def colors(self) -> torch.Tensor:
        """(N, 3) uint8 observed colour of each point."""
        return self._store.colors

    @property
    def dtype(self) -> torch.dtype:
        return self._store.values.dtype

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(points={len(self)}, channels={self.channels}, voxel_size={self.voxel_size}, "
                f"max_points={self.max_points}, device={self.device}, dtype={self.dtype})")

    def to(self, device=None, dtype=None):
        """Move points and features (in place) to ``device``; cast features to ``dtype``. Returns self."""
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point dtype, got {dtype}")
        return super().to(device, dtype)

    def check_latents(self, latents, depth_shape: tuple[int, int, int], name: str) -> None:
        """ValueError unless ``latents`` is (T, C, h, w) floating point, finite, with this memory's C, one frame per
        depth map of ``depth_shape`` (T, H, W), and a grid that divides (H, W)."""
        T, H, W = depth_shape
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
            raise ValueError(f"{name} must be a (T, C, h, w) tensor, got {describe_shape(latents)}")
        if not latents.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {latents.dtype}")
        if latents.shape[1] != self.channels:
            raise ValueError(f"latent channel mismatch: memory has {self.channels} channels, {name} has "
                             f"{latents.shape[1]}")
        if latents.shape[0] != T:
            raise ValueError(f"got {latents.shape[0]} latent frames ({name}) but {T} depth maps")
        h, w = latents.shape[-2:]
        if H % h or W % w:
            raise ValueError(f"latent grid {h}x{w} ({name}) does not divide the depth image {H}x{W}")
        if not torch.isfinite(latents).all():
            raise ValueError(f"{name} have non-finite values")

    def checked_frames(self, rgb, depth, intrinsics, cam_to_world, exclude, encode, latents):
        """Step 1-2 of ``observe_batch``: validate the frames (before any encode, so bad input costs nothing and
        changes nothing), then take ``latents`` or ``encode(rgb)`` and hold them to :meth:`check_latents`.
        Returns (depth (T, H, W), intrinsics (T, 3, 3), cam_to_world (T, 4, 4), exclude or None, latents)."""
        depth, intrinsics, cam_to_world, exclude = check_frames(depth, intrinsics, cam_to_world, exclude)
        check_rgb(rgb, depth)
        if latents is None and encode is None:
            raise ValueError("observe_batch needs latents (T, C, h, w) or an encode callable, got neither")
        if latents is not None:
            self.check_latents(latents, depth.shape, "latents")
        else:
            latents = encode(rgb)
            self.check_latents(latents, depth.shape, "encode(rgb)")
        return depth, intrinsics, cam_to_world, exclude, latents

    # ------------------------------------------------------------------ persistence
    def _config(self) -> dict:
        return {"channels": self.channels, **super()._config()}

    @classmethod
    def _from_config(cls, config: dict, values: torch.Tensor):
        if values.shape[1] != config["channels"]:
            raise ValueError(f"features have {values.shape[1]} channels, metadata says {config['channels']}")
        return cls(channels=config["channels"], voxel_size=config["voxel_size"], max_points=config["max_points"],
                   dtype=values.dtype)
