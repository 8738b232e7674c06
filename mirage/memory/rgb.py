"""The RGB point-cloud baseline the Mirage paper compares against (Eq. 1-2), behind the same contract.

M_rgb = {(p_i, c_i)}: one coloured point per valid pixel. Reading it for a video model means rasterising
at pixel resolution and re-encoding the image: z_t = E(Rasterise(M_rgb; E_t, K_t)). The memory holds its
encoder, so callers read latents from it exactly as from :class:`~mirage.memory.LatentSpatialMemory`; the
store, lifting and z-buffered readout are the latent memory's, at pixel resolution.
"""

from __future__ import annotations

import torch

from mirage.memory.base import PointMemory
from mirage.memory.lifting import check_frames, check_grid_sizes, check_rgb, lift_frames, pool_depth, to_uint8_colors
from mirage.memory.protocol import Encoder, Readout
from mirage.memory.readout import check_views, pixel_visibility, read_points
from mirage.memory.store import PointStore

__all__ = ["RGBPointCloudMemory"]


class RGBPointCloudMemory(PointMemory):
    """Coloured points (N, 3) float32 with colours (N, 3) uint8 (15 bytes a point plus bookkeeping), read as
    latents through ``encoder``.

    Args:
        encoder: images (T, 3, H, W) in [0, 1] -> latents (T, C, h, w) (e.g. ``MirageWorldModel.encode_images``).
            Needed by :meth:`read_batch` only; storing, rendering, coverage and save / load work without it.
        channels: C of the encoder's latents.
        voxel_size, max_points: growth bounds as in :class:`~mirage.memory.LatentSpatialMemory` (both None by
            default: the paper's baseline keeps every pixel).
        device: where the points live; dtype: the dtype of :attr:`Readout.features`.

    Implements :class:`~mirage.memory.protocol.SpatialMemory`.
    """

    FORMAT = "mirage.RGBPointCloudMemory"
    LEGACY_FORMATS = ("mirage.RGBPointCache",)
    KIND = "rgb"

    def __init__(self, encoder: Encoder | None = None, channels: int = 48, voxel_size: float | None = None,
                 max_points: int | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        if int(channels) <= 0:
            raise ValueError(f"channels must be positive, got {channels}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point dtype, got {dtype}")
        if encoder is not None and not callable(encoder):
            raise ValueError(f"encoder must be callable, got {type(encoder).__name__}")
        super().__init__(3, voxel_size, max_points, device, torch.uint8)
        self.encoder = encoder
        self.channels = int(channels)
        self._dtype = dtype

    @property
    def colors(self) -> torch.Tensor:
        """(N, 3) uint8."""
        return self._store.values

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the readout's features (the colours stay uint8)."""
        return self._dtype

    def __repr__(self) -> str:
        return (f"RGBPointCloudMemory(points={len(self)}, channels={self.channels}, voxel_size={self.voxel_size}, "
                f"max_points={self.max_points}, device={self.device}, dtype={self.dtype})")

    def to(self, device=None, dtype=None) -> "RGBPointCloudMemory":
        """Move the points (in place) to ``device``; ``dtype`` sets the readout dtype. Returns self."""
        if dtype is not None:
            if not dtype.is_floating_point:
                raise ValueError(f"dtype must be a floating point dtype, got {dtype}")
            self._dtype = dtype
        return super().to(device)

    # ------------------------------------------------------------------ observe / insert
    def observe_batch(self, rgb: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor,
                      cam_to_world: torch.Tensor, exclude: torch.Tensor | None = None, *,
                      encode: Encoder | None = None, latents: torch.Tensor | None = None) -> int:
        """Store the pixels of T frames (``encode`` and ``latents`` are ignored: this memory keeps pixels).

        Same arguments as :meth:`insert_batch`; returns the number of points written.
        """
        return self.insert_batch(rgb, depth, intrinsics, cam_to_world, exclude)

    def insert(self, rgb: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor,
               exclude: torch.Tensor | None = None) -> int:
        """Store one point per pixel with valid depth outside ``exclude``.

        rgb (3, H, W) in [0, 1]; depth (H, W) metres; intrinsics (3, 3) at (H, W); cam_to_world (4, 4);
        exclude (H, W) bool. Returns the number of points written. ValueError leaves the memory unchanged.
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
        """T frames at once: rgb (T, 3, H, W) in [0, 1], depth (T, H, W), intrinsics (3, 3) | (T, 3, 3),
        cam_to_world (T, 4, 4), exclude (T, H, W) bool or None."""
        depth, intrinsics, cam_to_world, exclude = check_frames(depth, intrinsics, cam_to_world, exclude)
        check_rgb(rgb, depth)
        T, H, W = depth.shape
        dev = self.device
        frame, cell, points, z = lift_frames(depth.to(dev), intrinsics.to(dev), cam_to_world.to(dev), (H, W),
                                             None if exclude is None else exclude.to(dev))
        values = to_uint8_colors(rgb.to(dev)).permute(0, 2, 3, 1).reshape(T * H * W, 3)[frame * (H * W) + cell]
        return self._merge(points, values, frame, z, T)

    # ------------------------------------------------------------------ read
    def render_batch(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: tuple[int, int],
                     near: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rasterise T views at pixel resolution, one point per pixel, frontmost wins (no splatting).

        intrinsics (3, 3) | (T, 3, 3) at ``image_size`` (H, W); cam_to_world (T, 4, 4).
        Returns rgb (T, 3, H, W) float32 in [0, 1] (0 where empty), mask (T, H, W) bool, depth (T, H, W) float32.
        """
        K, cam_to_world, size, _ = check_views(intrinsics, cam_to_world, image_size, image_size, near)
        store = self._store  # one snapshot (copy-on-write updates)
        device = store.points.device
        out = read_points(store.points, store.values, K.to(device, torch.float32),
                          cam_to_world.to(device, torch.float32), size, near, backend=self.zbuffer_backend)
        return out.features.float() / 255.0, out.mask, out.depth

    def render(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: tuple[int, int],
               near: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One view of :meth:`render_batch`: cam_to_world (4, 4) -> rgb (3, H, W), mask (H, W), depth (H, W)."""
        if not isinstance(cam_to_world, torch.Tensor) or cam_to_world.shape != (4, 4):
            raise ValueError(f"cam_to_world must be (4, 4), got {getattr(cam_to_world, 'shape', cam_to_world)}")
        rgb, mask, depth = self.render_batch(intrinsics, cam_to_world[None], image_size, near)
        return rgb[0], mask[0], depth[0]

    def _encode_rendered(self, rgb: torch.Tensor, depth: torch.Tensor, latent_size: tuple[int, int]) -> Readout:
        """The baseline's readout from rendered views (Eq. 2): rgb (T, 3, H, W), depth (T, H, W) -> Readout.

        Features: ``encoder(rgb)`` (T, C, h, w) cast to the memory dtype; mask and depth pooled to (h, w) with
        the memory's insert rule (a cell is visible when at least half its pixels are covered; its depth is
        their median).
        """
        if self.encoder is None:
            raise ValueError("this RGBPointCloudMemory has no encoder: pass encoder= to the constructor (or set "
                             ".encoder) before reading latents")
        latents = self.encoder(rgb)
        expected = (rgb.shape[0], self.channels, *latent_size)
        if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != expected:
            raise ValueError(f"encoder must return a {expected} tensor, got "
                             f"{tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__}")
        cell_depth, cell_mask = pool_depth(depth, latent_size)
        device = self.device
        return Readout(latents.to(device, self.dtype), cell_mask.to(device), cell_depth.to(device))

    def read_batch(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: tuple[int, int],
                   latent_size: tuple[int, int], near: float = 1e-3) -> Readout:
        """T views: rasterise at ``image_size`` (H, W) and encode. intrinsics (3, 3) | (T, 3, 3) at (H, W);
        cam_to_world (T, 4, 4). Returns features (T, C, h, w), mask (T, h, w), depth (T, h, w)."""
        H, W, h, w = check_grid_sizes(image_size, latent_size)
        if H % h or W % w:  # checked before the (costly) render and encode
            raise ValueError(f"image size {H}x{W} is not a whole multiple of the latent grid {h}x{w}")
        rgb, _, depth = self.render_batch(intrinsics, cam_to_world, image_size, near)
        return self._encode_rendered(rgb, depth, (h, w))

    def visibility(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: tuple[int, int],
                   latent_size: tuple[int, int], near: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
        """mask (T, h, w) and depth (T, h, w) of :meth:`read_batch`, without colours or encoding."""
        return pixel_visibility(self._store.points, intrinsics, cam_to_world, image_size, latent_size, near,
                                backend=self.zbuffer_backend)

    # ------------------------------------------------------------------ persistence / export
    def _display_features(self, store: PointStore) -> torch.Tensor:
        return store.values.float() / 255.0

    def _observed_colors(self, store: PointStore) -> torch.Tensor:
        return store.values

    def _config(self) -> dict:
        return {"channels": self.channels, "dtype": str(self.dtype).replace("torch.", ""), **super()._config()}

    @classmethod
    def _from_config(cls, config: dict, values: torch.Tensor) -> "RGBPointCloudMemory":
        if values.dtype != torch.uint8 or values.shape[1] != 3:
            raise ValueError(f"colours must be (N, 3) uint8, got {tuple(values.shape)} {values.dtype}")
        dtype = getattr(torch, str(config.get("dtype", "float32")), None)  # old RGBPointCache files: no dtype
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown readout dtype {config.get('dtype')!r}")
        return cls(channels=config.get("channels", 48), voxel_size=config["voxel_size"],
                   max_points=config["max_points"], dtype=dtype)

    @classmethod
    def load(cls, path, device=None, encoder: Encoder | None = None) -> "RGBPointCloudMemory":
        """Read a file written by :meth:`save` (or by the old ``RGBPointCache``); ``encoder`` is not saved."""
        memory = super().load(path, device)
        memory.encoder = encoder
        return memory
