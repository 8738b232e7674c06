"""Latent spatial memory (Mirage paper, Eq. 3-6): latent tokens stored at world-space points.

* observe / insert (Eq. 4, 6): pool the depth map to the latent grid, lift each valid cell centre to world
  space and store it with that cell's latent vector and observed colour (:mod:`mirage.memory.lifting`).
  Invalid depth and excluded pixels (dynamic objects, sky) never enter the memory.
* read (Eq. 5): project every point into the target camera's latent grid, keep the frontmost point per
  cell with a deterministic z-buffer (:mod:`mirage.ops.zbuffer`), zero-fill the rest, and return the
  visibility mask and the depth of the kept points (:mod:`mirage.memory.readout`).
* bounded growth: voxel dedup (a newer observation replaces the older one in its voxel) and an
  optional capacity that evicts the least recently written points (:class:`mirage.memory.store.PointStore`).
"""

from __future__ import annotations

import torch

from mirage.camera import scale_intrinsics
from mirage.memory.latent_features import LatentFeatureMemory, describe_shape
from mirage.memory.lifting import check_frames, check_rgb, lift_frames, pool_colors
from mirage.memory.protocol import Encoder, Readout
from mirage.memory.readout import check_views, read_points
from mirage.ops import rasterize

__all__ = ["LatentSpatialMemory"]


class LatentSpatialMemory(LatentFeatureMemory):
    """Persistent cache M = {(p_i, f_i)}: points (N, 3) float32 in the world frame, features (N, C), and the
    observed colour of each point (N, 3) uint8 (neutral grey when inserted without RGB).

    Args:
        channels: latent channels C (48 for Wan2.2).
        voxel_size: edge of the dedup voxel in metres; None keeps every point (unbounded growth).
            Pick it below the latent cell footprint at working distances (a 44x80 grid at 60 deg field
            of view covers ~1.5 cm per metre of depth), or nearby cells merge.
        max_points: capacity; beyond it the least recently written points are evicted first
            (ties: lowest storage index). None means no cap.
        device, dtype: where the points live and the dtype of the features (points stay float32).

    Implements :class:`~mirage.memory.protocol.SpatialMemory`. Updates are copy-on-write
    (:class:`~mirage.memory.base.PointMemory`).
    """

    FORMAT = "mirage.LatentSpatialMemory"
    KIND = "latent"

    def __init__(self, channels: int = 48, voxel_size: float | None = 0.05, max_points: int | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        super().__init__(channels, voxel_size, max_points, device, dtype)

    # ------------------------------------------------------------------ observe / insert
    def observe_batch(self, rgb: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor,
                      cam_to_world: torch.Tensor, exclude: torch.Tensor | None = None, *,
                      encode: Encoder | None = None, latents: torch.Tensor | None = None) -> int:
        """Store T frames: ``latents`` (T, C, h, w) when given, else ``encode(rgb)``, with the pixels' colours.

        rgb (T, 3, H, W) in [0, 1]; depth (T, H, W) metres; intrinsics (3, 3) | (T, 3, 3) at (H, W);
        cam_to_world (T, 4, 4); exclude (T, H, W) bool or None. Returns the number of cells written.
        Everything is validated before ``encode`` runs; ValueError leaves the memory unchanged.
        """
        # 1-2. Check the frames (nothing encoded, nothing changed on bad input), then encode and check the latents.
        depth, intrinsics, cam_to_world, exclude, latents = self.checked_frames(rgb, depth, intrinsics, cam_to_world,
                                                                                exclude, encode, latents)
        # 3. Lift and commit.
        return self._store_frames(latents, depth, intrinsics, cam_to_world, exclude, rgb)

    def insert(self, latent: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor,
               cam_to_world: torch.Tensor, exclude: torch.Tensor | None = None, rgb: torch.Tensor | None = None) -> int:
        """Store one frame (Eq. 4 / 6).

        latent (C, h, w); depth (H, W) metres (<= 0, NaN, inf: no depth); intrinsics (3, 3) at (H, W);
        cam_to_world (4, 4); exclude (H, W) bool, True on pixels that must not be stored; rgb (3, H, W) in
        [0, 1] or None (colours then neutral grey). H, W must be whole multiples of h, w. The cell rule is
        :mod:`mirage.memory.lifting`'s. Returns the number of cells written (after merging cells of this
        frame that share a voxel). Raises ValueError on bad input, leaving the memory unchanged.
        """
        if not isinstance(latent, torch.Tensor) or latent.ndim != 3:
            raise ValueError(f"latent must be a (C, h, w) tensor, got {describe_shape(latent)}")
        for name, x, nd in (("depth", depth, 2), ("cam_to_world", cam_to_world, 2)):
            if not isinstance(x, torch.Tensor) or x.ndim != nd:
                raise ValueError(f"{name} must be a {nd}-D tensor, got {describe_shape(x)}")
        if exclude is not None and (not isinstance(exclude, torch.Tensor) or exclude.ndim != 2):
            raise ValueError("exclude must be an (H, W) bool tensor")
        if rgb is not None and (not isinstance(rgb, torch.Tensor) or rgb.ndim != 3):
            raise ValueError(f"rgb must be a (3, H, W) tensor, got {describe_shape(rgb)}")
        return self.insert_batch(latent[None], depth[None], intrinsics, cam_to_world[None],
                                 None if exclude is None else exclude[None], None if rgb is None else rgb[None])

    def insert_batch(self, latents: torch.Tensor, depths: torch.Tensor, intrinsics: torch.Tensor,
                     cam_to_world: torch.Tensor, exclude: torch.Tensor | None = None,
                     rgb: torch.Tensor | None = None) -> int:
        """Store T frames at once, as if inserted one after another in order (a later frame is newer).

        latents (T, C, h, w); depths (T, H, W); intrinsics (3, 3) or (T, 3, 3) at (H, W);
        cam_to_world (T, 4, 4); exclude (T, H, W) bool or None; rgb (T, 3, H, W) in [0, 1] or None (neutral
        grey colours). Returns the number of cells written.
        """
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
            raise ValueError(f"latents must be a (T, C, h, w) tensor, got {describe_shape(latents)}")
        depths, intrinsics, cam_to_world, exclude = check_frames(depths, intrinsics, cam_to_world, exclude)
        self.check_latents(latents, depths.shape, "latents")
        if rgb is not None:
            check_rgb(rgb, depths)
        return self._store_frames(latents, depths, intrinsics, cam_to_world, exclude, rgb)

    def _store_frames(self, latents, depths, intrinsics, cam_to_world, exclude, rgb) -> int:
        """Lift checked frames and commit: latents (T, C, h, w), depths (T, H, W), K (T, 3, 3), c2w (T, 4, 4)."""
        dev = self.device
        T, _, h, w = latents.shape
        frame, cell, points, z = lift_frames(depths.to(dev), intrinsics.to(dev), cam_to_world.to(dev), (h, w),
                                             None if exclude is None else exclude.to(dev))
        flat = frame * (h * w) + cell
        values = latents.to(dev, self.dtype).permute(0, 2, 3, 1).reshape(T * h * w, self.channels)[flat]
        colors = None
        if rgb is not None:
            colors = pool_colors(rgb.to(dev), depths.to(dev), (h, w)).reshape(T * h * w, 3)[flat]
        return self._merge(points, values, frame, z, T, colors)

    # ------------------------------------------------------------------ read
    def read_batch(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: tuple[int, int],
                   latent_size: tuple[int, int], near: float = 1e-3) -> Readout:
        """Memory seen from T cameras in one z-buffer pass (Eq. 5).

        intrinsics (3, 3) or (T, 3, 3) at ``image_size`` (H, W); cam_to_world (T, 4, 4); ``latent_size``
        (h, w) is the grid read out; points with camera z <= ``near`` are ignored.
        Returns features (T, C, h, w) (zeros where unseen), mask (T, h, w), depth (T, h, w).
        """
        K, cam_to_world, image_size, latent_size = check_views(intrinsics, cam_to_world, image_size, latent_size,
                                                               near)
        store = self._store  # one snapshot: an insert on another thread swaps in a new store, never edits it
        device = store.points.device
        K = scale_intrinsics(K.to(device, torch.float32), image_size, latent_size)
        return read_points(store.points, store.values, K, cam_to_world.to(device, torch.float32), latent_size, near,
                           backend=self.zbuffer_backend)

    def visibility(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: tuple[int, int],
                   latent_size: tuple[int, int], near: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
        """mask (T, h, w) bool and depth (T, h, w) float32 of :meth:`read_batch`, without gathering features."""
        K, cam_to_world, image_size, (h, w) = check_views(intrinsics, cam_to_world, image_size, latent_size, near)
        points = self._store.points
        K = scale_intrinsics(K.to(points.device, torch.float32), image_size, (h, w))
        winner, depth = rasterize(points, K, cam_to_world.to(points.device, torch.float32), h, w, near,
                                  backend=self.zbuffer_backend)
        return winner >= 0, depth
