"""The paper's "Feature Upsample, Pixel Lift" ablation (Table 3), behind the same memory contract.

The latent memory lifts one point per latent cell (its depth pooled to the cell, Eq. 4) and reads the frontmost
point per latent cell (Eq. 5). This variant instead

* **upsamples** each frame's latents (T, C, h, w) to pixel resolution (bilinear, ``align_corners=False``),
* **lifts every pixel** with valid depth outside the exclusion mask to its own world point carrying the
  upsampled feature vector (one point per pixel, like the RGB cache, but with latent features),
* **reads at pixel resolution** (the same z-buffer, :func:`mirage.memory.readout.read_points`) and **pools back
  to the latent grid**: a cell's feature is the mean of its covered pixels' features, it is visible when at
  least half its pixels are covered and its depth is their median (the memory's cell rule,
  :func:`mirage.memory.lifting.pool_depth`).

So it stores the latent memory's features with the RGB cache's geometry: ``h * w`` times more points (each a
C-vector), and its readout mixes features across depth edges and the upsampling blur, which is what the
paper's row measures. Everything else (store, copy-on-write, bounds, save / load) is :class:`PointMemory`'s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mirage.memory.latent_features import LatentFeatureMemory
from mirage.memory.lifting import check_grid_sizes, lift_frames, pool_depth, to_uint8_colors
from mirage.memory.protocol import Encoder, Readout
from mirage.memory.readout import check_views, pixel_visibility, read_points

__all__ = ["PixelLiftMemory", "upsample_latents", "pool_features"]


def upsample_latents(latents: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """(T, C, h, w) -> (T, C, H, W) float32, bilinear (``align_corners=False``: cell centres stay cell centres)."""
    return F.interpolate(latents.float(), size=tuple(int(s) for s in image_size), mode="bilinear",
                         align_corners=False)


def pool_features(features: torch.Tensor, covered: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """Mean feature of each cell's covered pixels: features (T, C, H, W), covered (T, H, W) bool -> (T, C, h, w)
    float32 (zeros in a cell with no covered pixel). H, W must be multiples of h, w."""
    T, C, H, W = features.shape
    h, w = int(grid_size[0]), int(grid_size[1])
    weights = covered[:, None].float()
    total = F.avg_pool2d(features.float() * weights, (H // h, W // w), divisor_override=1)
    count = F.avg_pool2d(weights, (H // h, W // w), divisor_override=1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))


class PixelLiftMemory(LatentFeatureMemory):
    """Upsampled latent features (N, C) at one world point per pixel (N, 3), with observed colours (N, 3) uint8.

    Args:
        channels: latent channels C.
        voxel_size, max_points: growth bounds as in :class:`~mirage.memory.LatentSpatialMemory` (both None by
            default: like the RGB cache, every pixel is kept).
        device, dtype: where the points live and the dtype of the features.

    Implements :class:`~mirage.memory.protocol.SpatialMemory`; ``stats()["kind"]`` is "pixel_lift".
    """

    FORMAT = "mirage.PixelLiftMemory"
    KIND = "pixel_lift"

    # ------------------------------------------------------------------ observe
    def observe_batch(self, rgb: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor,
                      cam_to_world: torch.Tensor, exclude: torch.Tensor | None = None, *,
                      encode: Encoder | None = None, latents: torch.Tensor | None = None) -> int:
        """Store T frames: ``latents`` (T, C, h, w) when given, else ``encode(rgb)``, upsampled and lifted per pixel.

        rgb (T, 3, H, W) in [0, 1]; depth (T, H, W) metres; intrinsics (3, 3) | (T, 3, 3) at (H, W);
        cam_to_world (T, 4, 4); exclude (T, H, W) bool or None. Returns the number of points written.
        Everything is validated before ``encode`` runs; ValueError leaves the memory unchanged.
        """
        # 1-2. Check the frames (nothing encoded, nothing changed on bad input), then encode and check the latents.
        depth, intrinsics, cam_to_world, exclude, latents = self.checked_frames(rgb, depth, intrinsics, cam_to_world,
                                                                                exclude, encode, latents)
        T, H, W = depth.shape
        # 2. Upsample the features and lift one point per valid pixel.
        dev = self.device
        features = upsample_latents(latents.to(dev), (H, W))  # (T, C, H, W)
        frame, cell, points, z = lift_frames(depth.to(dev), intrinsics.to(dev), cam_to_world.to(dev), (H, W),
                                             None if exclude is None else exclude.to(dev))
        flat = frame * (H * W) + cell
        values = features.permute(0, 2, 3, 1).reshape(T * H * W, self.channels)[flat].to(self.dtype)
        colors = to_uint8_colors(rgb.to(dev)).permute(0, 2, 3, 1).reshape(T * H * W, 3)[flat]
        # 3. Commit.
        return self._merge(points, values, frame, z, T, colors)

    # ------------------------------------------------------------------ read
    def read_batch(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: tuple[int, int],
                   latent_size: tuple[int, int], near: float = 1e-3) -> Readout:
        """T views: z-buffer at ``image_size`` (H, W), pool to ``latent_size`` (h, w) (see the module docstring).

        intrinsics (3, 3) | (T, 3, 3) at (H, W); cam_to_world (T, 4, 4).
        Returns features (T, C, h, w) (zeros where unseen), mask (T, h, w), depth (T, h, w).
        """
        H, W, h, w = check_grid_sizes(image_size, latent_size)
        if H % h or W % w:
            raise ValueError(f"image size {H}x{W} is not a whole multiple of the latent grid {h}x{w}")
        K, cam_to_world, size, _ = check_views(intrinsics, cam_to_world, image_size, latent_size, near)
        store = self._store  # one snapshot (copy-on-write updates)
        device = store.points.device
        pixels = read_points(store.points, store.values, K.to(device, torch.float32),
                             cam_to_world.to(device, torch.float32), size, near, backend=self.zbuffer_backend)
        cell_depth, cell_mask = pool_depth(pixels.depth, (h, w))
        features = pool_features(pixels.features, pixels.mask, (h, w))
        features = torch.where(cell_mask[:, None], features, torch.zeros_like(features)).to(self.dtype)
        return Readout(features, cell_mask, cell_depth)

    def visibility(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: tuple[int, int],
                   latent_size: tuple[int, int], near: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
        """mask (T, h, w) and depth (T, h, w) of :meth:`read_batch`, without gathering features."""
        return pixel_visibility(self._store.points, intrinsics, cam_to_world, image_size, latent_size, near,
                                backend=self.zbuffer_backend)
