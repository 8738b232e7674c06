"""Latent spatial memory (Mirage paper, Eq. 3-6): latent tokens stored at world-space points.

* insert (Eq. 4, 6): pool the depth map to the latent grid, lift each valid cell centre to world space
  and store it with that cell's latent vector. Invalid depth and excluded pixels (dynamic objects, sky)
  never enter the memory.
* read (Eq. 5): project every point into the target camera's latent grid, keep the frontmost point per
  cell with a deterministic z-buffer (:mod:`mirage.zbuffer`), zero-fill the rest, and return the
  visibility mask and the depth of the kept points.
* bounded growth: voxel dedup (a newer observation replaces the older one in its voxel) and an
  optional capacity that evicts the least recently written points (:class:`mirage.pointcloud.PointStore`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from mirage.camera import scale_intrinsics, validate_intrinsics, validate_pose
from mirage.point_memory import PointMemory
from mirage.pointcloud import check_frames, check_grid_sizes, lift_frames, pca_colors, subsample_indices, write_ply
from mirage.zbuffer import rasterize

__all__ = ["Readout", "LatentSpatialMemory", "read_points"]

@dataclass
class Readout:
    """Memory seen from one camera (or T cameras, with a leading T on every field)."""

    features: torch.Tensor  # (C, h, w) | (T, C, h, w), memory dtype; zeros where unseen
    mask: torch.Tensor  # (h, w) | (T, h, w) bool, True where a stored point is visible
    depth: torch.Tensor  # (h, w) | (T, h, w) float32 camera z of the kept point; 0 where unseen


def read_points(
    points: torch.Tensor, values: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor,
    grid_size: tuple[int, int], near: float,
) -> Readout:
    """Z-buffered readout of (N, 3) points with (N, C) values into T views of a (h, w) grid, one scatter.

    intrinsics (T, 3, 3) at the grid; cam_to_world (T, 4, 4). Returns a T-leading :class:`Readout`
    whose features are (T, C, h, w).
    """
    h, w = grid_size
    T = intrinsics.shape[0]
    winner, depth = rasterize(points, intrinsics, cam_to_world, h, w, near)  # (T, h, w)
    mask = winner >= 0
    features = torch.zeros(T, h, w, values.shape[1], dtype=values.dtype, device=values.device)
    features[mask] = values[winner[mask]]
    return Readout(features.permute(0, 3, 1, 2).contiguous(), mask, depth)


class LatentSpatialMemory(PointMemory):
    """Persistent cache M = {(p_i, f_i)}: points (N, 3) float32 in the world frame, features (N, C).

    Args:
        channels: latent channels C (48 for Wan2.2).
        voxel_size: edge of the dedup voxel in metres; None keeps every point (unbounded growth).
            Pick it below the latent cell footprint at working distances (a 44x80 grid at 60 deg field
            of view covers ~1.5 cm per metre of depth), or nearby cells merge.
        max_points: capacity; beyond it the least recently written points are evicted first
            (ties: lowest storage index). None means no cap.
        device, dtype: where the points live and the dtype of the features (points stay float32).

    Updates are copy-on-write (:class:`mirage.point_memory.PointMemory`): reads on another thread see the
    memory before or after an insert, never half of it.
    """

    FORMAT = "mirage.LatentSpatialMemory"

    def __init__(self, channels: int = 48, voxel_size: float | None = 0.05, max_points: int | None = None,
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
    def dtype(self) -> torch.dtype:
        return self._store.values.dtype

    def __repr__(self) -> str:
        return (f"LatentSpatialMemory(points={len(self)}, channels={self.channels}, voxel_size={self.voxel_size}, "
                f"max_points={self.max_points}, device={self.device}, dtype={self.dtype})")

    def to(self, device=None, dtype=None) -> "LatentSpatialMemory":
        """Move points and features (in place) to ``device``; cast features to ``dtype``. Returns self."""
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point dtype, got {dtype}")
        return super().to(device, dtype)

    def stats(self) -> dict:
        return {**super().stats(), "channels": self.channels, "dtype": str(self.dtype).replace("torch.", ""),
                "device": str(self.device)}

    # ------------------------------------------------------------------ insert
    def insert(self, latent: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor,
               cam_to_world: torch.Tensor, exclude: torch.Tensor | None = None) -> int:
        """Store one frame (Eq. 4 / 6).

        latent (C, h, w); depth (H, W) metres (<= 0, NaN, inf: no depth); intrinsics (3, 3) at (H, W);
        cam_to_world (4, 4); exclude (H, W) bool, True on pixels that must not be stored.
        H, W must be whole multiples of h, w. A latent cell is stored when at least half its pixels
        have valid depth and none is excluded; its depth is the median of its valid pixels and its
        point is the back-projection of the cell centre (pixel centres at +0.5, K scaled to (h, w)).
        Returns the number of cells written (after merging cells of this frame that share a voxel).
        Raises ValueError on bad input, leaving the memory unchanged.
        """
        if not isinstance(latent, torch.Tensor) or latent.ndim != 3:
            raise ValueError(f"latent must be a (C, h, w) tensor, got "
                             f"{tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__}")
        for name, x, nd in (("depth", depth, 2), ("cam_to_world", cam_to_world, 2)):
            if not isinstance(x, torch.Tensor) or x.ndim != nd:
                raise ValueError(f"{name} must be a {nd}-D tensor, got "
                                 f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if exclude is not None and (not isinstance(exclude, torch.Tensor) or exclude.ndim != 2):
            raise ValueError("exclude must be an (H, W) bool tensor")
        return self.insert_batch(latent[None], depth[None], intrinsics, cam_to_world[None],
                                 None if exclude is None else exclude[None])

    def insert_batch(self, latents: torch.Tensor, depths: torch.Tensor, intrinsics: torch.Tensor,
                     cam_to_world: torch.Tensor, exclude: torch.Tensor | None = None) -> int:
        """Store T frames at once, as if inserted one after another in order (a later frame is newer).

        latents (T, C, h, w); depths (T, H, W); intrinsics (3, 3) or (T, 3, 3) at (H, W);
        cam_to_world (T, 4, 4); exclude (T, H, W) bool or None. Returns the number of cells written.
        """
        latents, depths, intrinsics, cam_to_world, exclude = self._check_insert(
            latents, depths, intrinsics, cam_to_world, exclude)
        T = latents.shape[0]
        h, w = latents.shape[-2:]
        frame, cell, points, z = lift_frames(depths, intrinsics, cam_to_world, (h, w), exclude)
        values = latents.permute(0, 2, 3, 1).reshape(T * h * w, self.channels)[frame * (h * w) + cell]
        return self._merge(points, values, frame, z, T)

    # SHIM (branch wt-pipeline only, drop at merge): the memory protocol's observe_batch, so the pipeline runs
    # against this class before mirage/memory/protocol.py lands.
    def observe_batch(self, rgb, depth, intrinsics, cam_to_world, exclude=None, *, encode=None, latents=None) -> int:
        if latents is None:
            if encode is None:
                raise ValueError("a latent memory needs latents or an encode callable")
            latents = encode(rgb)
        return self.insert_batch(latents.to(self.dtype), depth, intrinsics, cam_to_world, exclude)

    def _check_insert(self, latents, depths, intrinsics, cam_to_world, exclude):
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
            raise ValueError(f"latents must be a (T, C, h, w) tensor, got "
                             f"{tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__}")
        if not latents.is_floating_point():
            raise ValueError(f"latents must be floating point, got {latents.dtype}")
        T, C, h, w = latents.shape
        if C != self.channels:
            raise ValueError(f"latent channel mismatch: memory has {self.channels} channels, got {C}")
        if not torch.isfinite(latents).all():
            raise ValueError("latents have non-finite values")
        depths, intrinsics, cam_to_world, exclude = check_frames(depths, intrinsics, cam_to_world, exclude)
        if depths.shape[0] != T:
            raise ValueError(f"got {T} latent frames but {depths.shape[0]} depth maps")
        H, W = depths.shape[-2:]
        if H % h or W % w:
            raise ValueError(f"latent grid {h}x{w} does not divide the depth image {H}x{W}")
        dev = self.device
        return (latents.to(dev), depths.to(dev), intrinsics.to(dev), cam_to_world.to(dev),
                None if exclude is None else exclude.to(dev))

    # ------------------------------------------------------------------ read
    def read(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: tuple[int, int],
             latent_size: tuple[int, int], near: float = 1e-3) -> Readout:
        """Memory seen from one camera (Eq. 5).

        intrinsics (3, 3) at ``image_size`` (H, W); cam_to_world (4, 4); ``latent_size`` (h, w) is the
        grid read out. Points with camera z <= ``near`` are ignored. Returns features (C, h, w)
        (zeros where unseen), mask (h, w) and depth (h, w).
        """
        if not isinstance(cam_to_world, torch.Tensor) or cam_to_world.shape != (4, 4):
            raise ValueError(f"cam_to_world must be (4, 4), got "
                             f"{tuple(cam_to_world.shape) if isinstance(cam_to_world, torch.Tensor) else cam_to_world}")
        if not isinstance(intrinsics, torch.Tensor) or intrinsics.shape != (3, 3):
            raise ValueError(f"intrinsics must be (3, 3), got "
                             f"{tuple(intrinsics.shape) if isinstance(intrinsics, torch.Tensor) else intrinsics}")
        out = self.read_batch(intrinsics, cam_to_world[None], image_size, latent_size, near)
        return Readout(out.features[0], out.mask[0], out.depth[0])

    def read_batch(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: tuple[int, int],
                   latent_size: tuple[int, int], near: float = 1e-3) -> Readout:
        """Memory seen from T cameras in one z-buffer pass.

        intrinsics (3, 3) or (T, 3, 3) at ``image_size``; cam_to_world (T, 4, 4).
        Returns features (T, C, h, w), mask (T, h, w), depth (T, h, w).
        """
        H, W, h, w = check_grid_sizes(image_size, latent_size)
        validate_pose(cam_to_world, "cam_to_world")
        if cam_to_world.ndim != 3:
            raise ValueError(f"cam_to_world must be (T, 4, 4), got {tuple(cam_to_world.shape)}")
        T = cam_to_world.shape[0]
        validate_intrinsics(intrinsics, "intrinsics")
        if intrinsics.ndim == 2:
            intrinsics = intrinsics.expand(T, 3, 3)
        if intrinsics.shape != (T, 3, 3):
            raise ValueError(f"intrinsics must be (3, 3) or ({T}, 3, 3), got {tuple(intrinsics.shape)}")
        if not (np.isfinite(near) and near >= 0):
            raise ValueError(f"near must be a finite number >= 0, got {near}")
        store = self._store  # one snapshot: an insert on another thread swaps in a new store, never edits it
        device = store.points.device
        K = scale_intrinsics(intrinsics.to(device, torch.float32), (H, W), (h, w))
        return read_points(store.points, store.values, K, cam_to_world.to(device, torch.float32), (h, w), near)

    # ------------------------------------------------------------------ persistence
    def _config(self) -> dict:
        return {"channels": self.channels, **super()._config()}

    @classmethod
    def _from_config(cls, config: dict, values: torch.Tensor) -> "LatentSpatialMemory":
        if values.shape[1] != config["channels"]:
            raise ValueError(f"features have {values.shape[1]} channels, metadata says {config['channels']}")
        return cls(channels=config["channels"], voxel_size=config["voxel_size"], max_points=config["max_points"],
                   dtype=values.dtype)

    # ------------------------------------------------------------------ looking at it
    def export_points(self, colorize: str | Callable[[torch.Tensor], torch.Tensor] = "pca",
                      max_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Points and display colours: (xyz (N, 3) float32, rgb (N, 3) uint8).

        ``colorize`` is "pca" (top-3 principal components of the features) or a callable mapping
        (N, C) features to (N, 3) colours in [0, 1] (e.g. a latent decoder). ``max_points`` keeps an
        evenly spaced deterministic subset.
        """
        store = self._store
        idx = subsample_indices(len(store), max_points).to(store.points.device)
        feats = store.values[idx]
        if isinstance(colorize, str):
            if colorize != "pca":
                raise ValueError(f"colorize must be 'pca' or a callable, got {colorize!r}")
            rgb = pca_colors(feats)
        elif callable(colorize):
            rgb = torch.as_tensor(colorize(feats)).detach().float().cpu()
            if rgb.shape != (feats.shape[0], 3):
                raise ValueError(f"colorize returned shape {tuple(rgb.shape)}, expected {(feats.shape[0], 3)}")
        else:
            raise ValueError(f"colorize must be 'pca' or a callable, got {type(colorize).__name__}")
        rgb8 = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        return store.points[idx].detach().cpu().numpy().astype(np.float32), rgb8

    def export_ply(self, path: str | os.PathLike, colorize="pca", max_points: int | None = None) -> None:
        """Write the memory as a binary PLY point cloud with colours (see :meth:`export_points`)."""
        xyz, rgb = self.export_points(colorize, max_points)
        write_ply(path, xyz, rgb)
