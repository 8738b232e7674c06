"""The RGB point-cloud baseline the Mirage paper compares against (Eq. 1-2).

M_rgb = {(p_i, c_i)}: one coloured point per valid pixel. Reading it for a video model means
rasterising at pixel resolution and re-encoding the image with the VAE: z_t = E(Rasterise(M_rgb; E_t, K_t)).
Same storage (:class:`mirage.pointcloud.PointStore`) and z-buffer (:mod:`mirage.zbuffer`) as the latent
memory, so the two differ only in what they store and where they are read.
"""

from __future__ import annotations

import os
from typing import Callable

import torch

from mirage.camera import validate_intrinsics, validate_pose
from mirage.memory import Readout, read_points
from mirage.point_memory import PointMemory
from mirage.pointcloud import check_frames, check_grid_sizes, lift_frames, pool_depth, subsample_indices, write_ply

__all__ = ["RGBPointCache"]

class RGBPointCache(PointMemory):
    """Coloured points (N, 3) float32 with colours (N, 3) uint8 (15 bytes a point plus bookkeeping).

    ``voxel_size`` / ``max_points`` bound growth exactly as in :class:`mirage.memory.LatentSpatialMemory`
    (both None by default: the paper's baseline keeps every pixel).
    """

    FORMAT = "mirage.RGBPointCache"

    def __init__(self, voxel_size: float | None = None, max_points: int | None = None, device="cpu"):
        super().__init__(3, voxel_size, max_points, device, torch.uint8)

    @property
    def colors(self) -> torch.Tensor:
        """(N, 3) uint8."""
        return self._store.values

    def to(self, device=None) -> "RGBPointCache":
        return super().to(device)

    # ------------------------------------------------------------------ insert
    def insert(self, rgb: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor,
               exclude: torch.Tensor | None = None) -> int:
        """Store one point per pixel with valid depth outside ``exclude``.

        rgb (3, H, W) in [0, 1]; depth (H, W) metres; intrinsics (3, 3) at (H, W); cam_to_world (4, 4);
        exclude (H, W) bool. Returns the number of points written. ValueError leaves the cache unchanged.
        """
        if not isinstance(rgb, torch.Tensor) or rgb.ndim != 3 or not isinstance(depth, torch.Tensor) \
                or depth.ndim != 2 or not isinstance(cam_to_world, torch.Tensor) or cam_to_world.ndim != 2:
            raise ValueError("insert expects rgb (3, H, W), depth (H, W) and cam_to_world (4, 4) tensors")
        if exclude is not None and (not isinstance(exclude, torch.Tensor) or exclude.ndim != 2):
            raise ValueError("exclude must be an (H, W) bool tensor")
        return self.insert_batch(rgb[None], depth[None], intrinsics, cam_to_world[None],
                                 None if exclude is None else exclude[None])

    def insert_batch(self, rgb: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor,
                     cam_to_world: torch.Tensor, exclude: torch.Tensor | None = None) -> int:
        """T frames at once: rgb (T, 3, H, W), depth (T, H, W), intrinsics (3, 3) | (T, 3, 3), c2w (T, 4, 4)."""
        depth, intrinsics, cam_to_world, exclude = check_frames(depth, intrinsics, cam_to_world, exclude)
        T, H, W = depth.shape
        if not isinstance(rgb, torch.Tensor) or rgb.shape != (T, 3, H, W) or not rgb.is_floating_point():
            raise ValueError(f"rgb must be a float tensor of shape {(T, 3, H, W)}, got "
                             f"{tuple(rgb.shape) if isinstance(rgb, torch.Tensor) else type(rgb).__name__}")
        if not torch.isfinite(rgb).all():
            raise ValueError("rgb has non-finite values")
        dev = self.device
        frame, cell, points, z = lift_frames(depth.to(dev), intrinsics.to(dev), cam_to_world.to(dev), (H, W),
                                             None if exclude is None else exclude.to(dev))
        colors8 = (rgb.to(dev).clamp(0, 1) * 255).round().to(torch.uint8)
        values = colors8.permute(0, 2, 3, 1).reshape(T * H * W, 3)[frame * (H * W) + cell]
        return self._merge(points, values, frame, z, T)

    # ------------------------------------------------------------------ read
    def render(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: tuple[int, int],
               near: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rasterise at pixel resolution, one point per pixel, frontmost wins (no splatting).

        intrinsics (3, 3) at ``image_size`` (H, W); cam_to_world (4, 4).
        Returns rgb (3, H, W) float32 in [0, 1] (0 where empty), mask (H, W) bool, depth (H, W) float32.
        """
        rgb, mask, depth = self.render_batch(intrinsics, cam_to_world[None] if isinstance(cam_to_world, torch.Tensor)
                                             and cam_to_world.ndim == 2 else cam_to_world, image_size, near)
        return rgb[0], mask[0], depth[0]

    def render_batch(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: tuple[int, int],
                     near: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """T views: intrinsics (3, 3) | (T, 3, 3); cam_to_world (T, 4, 4) -> rgb (T, 3, H, W), mask, depth (T, H, W)."""
        H, W, _, _ = check_grid_sizes(image_size, image_size)
        validate_pose(cam_to_world, "cam_to_world")
        validate_intrinsics(intrinsics, "intrinsics")
        if cam_to_world.ndim != 3:
            raise ValueError(f"cam_to_world must be (T, 4, 4), got {tuple(cam_to_world.shape)}")
        T = cam_to_world.shape[0]
        K = intrinsics.expand(T, 3, 3) if intrinsics.ndim == 2 else intrinsics
        if K.shape != (T, 3, 3):
            raise ValueError(f"intrinsics must be (3, 3) or ({T}, 3, 3), got {tuple(intrinsics.shape)}")
        store = self._store  # one snapshot (copy-on-write updates, as in LatentSpatialMemory)
        device = store.points.device
        out = read_points(store.points, store.values, K.to(device, torch.float32),
                          cam_to_world.to(device, torch.float32), (H, W), near)
        return out.features.float() / 255.0, out.mask, out.depth

    def read(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: tuple[int, int],
             encoder: Callable[[torch.Tensor], torch.Tensor], near: float = 1e-3) -> Readout:
        """The baseline's readout (Eq. 2): rasterise, then re-encode to latents.

        encoder maps (1, 3, H, W) images in [0, 1] to (1, C, h, w) latents (wrap a VAE to its own
        value range). The mask and depth are pooled to (h, w) with the memory's insert rule: a cell is
        visible when at least half its pixels are covered; its depth is their median.
        """
        rgb, _, depth = self.render(intrinsics, cam_to_world, image_size, near)
        latents = encoder(rgb[None])
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or latents.shape[0] != 1:
            raise ValueError(f"encoder must return a (1, C, h, w) tensor, got "
                             f"{tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__}")
        cell_depth, cell_mask = pool_depth(depth, latents.shape[-2:])
        return Readout(latents[0], cell_mask, cell_depth)

    # ------------------------------------------------------------------ persistence / export
    @classmethod
    def _from_config(cls, config: dict, values: torch.Tensor) -> "RGBPointCache":
        if values.dtype != torch.uint8 or values.shape[1] != 3:
            raise ValueError(f"colours must be (N, 3) uint8, got {tuple(values.shape)} {values.dtype}")
        return cls(voxel_size=config["voxel_size"], max_points=config["max_points"])

    def export_ply(self, path: str | os.PathLike, max_points: int | None = None) -> None:
        idx = subsample_indices(len(self), max_points).to(self.device)
        write_ply(path, self.points[idx].cpu().numpy(), self.colors[idx].cpu().numpy())
