"""What the latent memory and the RGB baseline share: a bounded point store, swapped copy-on-write.

:class:`PointMemory` holds a :class:`~mirage.memory.store.PointStore`, its growth bounds (voxel dedup,
capacity), counters and display basis; it commits updates, takes O(1) snapshots, exports display colours and
saves / loads with safetensors. Subclasses decide what a point's value is (a latent vector, a colour), how
frames become points and how the store is read.

Copy-on-write, the invariant everything here relies on: no attribute of a memory is ever modified in place.
Every update builds new objects and assigns them (the store last), so a reader holding the old store sees a
consistent memory, and :meth:`PointMemory.copy` can share every attribute with its original.
"""

from __future__ import annotations

import copy as _copy
import os
from typing import Callable

import numpy as np
import torch

from mirage.memory.export import PCABasis, subsample_indices
from mirage.memory.io import load_store, save_store, write_ply
from mirage.memory.protocol import Readout
from mirage.memory.store import NEUTRAL_GREY, PointStore, voxel_keys
from mirage.ops import check_backend

__all__ = ["PointMemory"]

Colorize = str | Callable[[torch.Tensor], torch.Tensor]


class PointMemory:
    """Points (N, 3) float32 in the world frame with one (N, C) value row each (and, when the subclass keeps
    them, an (N, 3) uint8 observed colour).

    One writer at a time (serialise writers yourself); reads may run on other threads.
    """

    FORMAT = "mirage.PointMemory"  # safetensors metadata "format"; each subclass names its own
    LEGACY_FORMATS: tuple[str, ...] = ()  # older format names this class still loads
    KIND = "points"  # stats()["kind"]
    KEEPS_COLORS = False  # whether the store holds observed colours beside the values

    def __init__(self, value_channels: int, voxel_size: float | None, max_points: int | None, device, dtype):
        if voxel_size is not None and not (np.isfinite(voxel_size) and voxel_size > 0):
            raise ValueError(f"voxel_size must be a positive number or None, got {voxel_size}")
        if max_points is not None and int(max_points) <= 0:
            raise ValueError(f"max_points must be positive or None, got {max_points}")
        self.voxel_size = None if voxel_size is None else float(voxel_size)
        self.max_points = None if max_points is None else int(max_points)
        self.frames_inserted = 0
        self.version = 0
        self._pca: PCABasis | None = None
        self._store = PointStore.empty(int(value_channels), torch.device(device), dtype, self.KEEPS_COLORS)
        self._zbuffer_backend = "auto"

    @property
    def zbuffer_backend(self) -> str:
        """Which z-buffer reads use: "auto" (the Triton kernel on CUDA when it imports, else torch), "torch" or
        "triton" (:func:`mirage.ops.rasterize`). A runtime choice, kept by :meth:`copy`, not saved."""
        return self._zbuffer_backend

    @zbuffer_backend.setter
    def zbuffer_backend(self, backend: str) -> None:
        self._zbuffer_backend = check_backend(backend)

    @property
    def points(self) -> torch.Tensor:
        """(N, 3) float32 world points, oldest first."""
        return self._store.points

    @property
    def device(self) -> torch.device:
        return self._store.points.device

    def __len__(self) -> int:
        return len(self._store)

    def copy(self):
        """O(1) independent snapshot: both share the current (immutable) store; later updates of either
        replace their own store and never show in the other."""
        return _copy.copy(self)

    def clear(self) -> None:
        """Forget every point and the display basis; ``version`` still increases."""
        values = self._store.values
        self._store = PointStore.empty(values.shape[1], self.device, values.dtype, self.KEEPS_COLORS)
        self._pca = None
        self.frames_inserted = 0
        self.version += 1

    def to(self, device=None, dtype=None):
        """Move the store (in place) to ``device``; cast values to ``dtype``. Returns self."""
        self._store = self._store.to(device, dtype)
        self.version += 1
        return self

    def stats(self) -> dict:
        return {"kind": self.KIND, "points": len(self), "bytes": self._store.nbytes,
                "frames_inserted": self.frames_inserted, "voxel_size": self.voxel_size,
                "max_points": self.max_points, "version": self.version, "channels": self.channels,
                "dtype": str(self.dtype).replace("torch.", ""), "device": str(self.device)}

    def _merge(self, points: torch.Tensor, values: torch.Tensor, frame: torch.Tensor, priority: torch.Tensor,
               num_frames: int, colors: torch.Tensor | None = None) -> int:
        """Add points of ``num_frames`` new frames (``frame`` (M,) their 0-based index among them) and commit."""
        if self.KEEPS_COLORS and colors is None:
            colors = torch.full((points.shape[0], 3), NEUTRAL_GREY, dtype=torch.uint8, device=points.device)
        stamps = (self.frames_inserted + 1 + frame).to(torch.int32)
        store, written = self._store.merged(points, values, stamps, priority, self.voxel_size, self.max_points,
                                            colors if self.KEEPS_COLORS else None)
        # Commit only after everything above succeeded: a failed insert leaves the memory unchanged.
        self._store = store
        self.frames_inserted += num_frames
        self.version += 1
        return written

    # ------------------------------------------------------------------ forgetting (scenes that change)
    def clear_region(self, min_xyz, max_xyz) -> int:
        """Remove every point inside the axis-aligned box ``min_xyz <= p <= max_xyz`` (world frame, metres,
        bounds included); returns how many were removed. ValueError (memory unchanged) unless both corners are
        3 finite numbers with ``min_xyz <= max_xyz``. ``version`` increases only when a point goes."""
        low, high = _box_corner(min_xyz, "min_xyz"), _box_corner(max_xyz, "max_xyz")
        if bool((low > high).any()):
            raise ValueError(f"clear_region: min_xyz {low.tolist()} must be <= max_xyz {high.tolist()} on every axis")
        points = self._store.points
        inside = ((points >= low.to(points.device)) & (points <= high.to(points.device))).all(dim=1)
        return self._keep_only(~inside)

    def forget_older_than(self, stamp: int) -> int:
        """Remove every point last written before write stamp ``stamp``; returns how many were removed.

        Stamps count inserted frames: the k-th frame since the last :meth:`clear` writes stamp k (so
        ``frames_inserted`` is the newest), and a point re-observed in its voxel takes the newer stamp. So
        ``forget_older_than(frames_inserted - n + 1)`` keeps what the last n frames saw. ValueError for a stamp that
        is not an integer >= 0 (memory unchanged).
        """
        if isinstance(stamp, bool) or not isinstance(stamp, (int, np.integer)) or stamp < 0:
            raise ValueError(f"forget_older_than: stamp must be an integer >= 0, got {stamp!r}")
        stamps = self._store.stamps
        return self._keep_only(stamps.to(torch.int64) >= int(stamp))

    def _keep_only(self, keep: torch.Tensor) -> int:
        """Commit the store reduced to the rows where ``keep`` (N,) is True (one assignment: copy-on-write);
        returns the number of rows dropped. Nothing changes, not even ``version``, when none is."""
        store = self._store
        removed = int(keep.numel() - int(keep.sum()))
        if removed == 0:
            return 0
        keys = store.keys[keep] if store.keys.shape[0] == len(store) else store.keys  # empty without voxels
        self._store = PointStore(store.points[keep], store.values[keep], store.stamps[keep], keys,
                                 None if store.colors is None else store.colors[keep])
        self.version += 1
        return removed

    # ------------------------------------------------------------------ reading (subclasses: read_batch, visibility)
    def read_batch(self, intrinsics, cam_to_world, image_size, latent_size, near: float = 1e-3) -> Readout:
        raise NotImplementedError

    def visibility(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size, latent_size,
                   near: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
        """The mask (T, h, w) and depth (T, h, w) of :meth:`read_batch`, without reading features."""
        raise NotImplementedError

    def read(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: tuple[int, int],
             latent_size: tuple[int, int], near: float = 1e-3) -> Readout:
        """Memory seen from one camera: intrinsics (3, 3) at ``image_size`` (H, W); cam_to_world (4, 4).

        Returns features (C, h, w) (zeros where unseen), mask (h, w) and depth (h, w) (see :meth:`read_batch`).
        """
        if not isinstance(cam_to_world, torch.Tensor) or cam_to_world.shape != (4, 4):
            raise ValueError(f"cam_to_world must be (4, 4), got "
                             f"{tuple(cam_to_world.shape) if isinstance(cam_to_world, torch.Tensor) else cam_to_world}")
        if not isinstance(intrinsics, torch.Tensor) or intrinsics.shape != (3, 3):
            raise ValueError(f"intrinsics must be (3, 3), got "
                             f"{tuple(intrinsics.shape) if isinstance(intrinsics, torch.Tensor) else intrinsics}")
        out = self.read_batch(intrinsics, cam_to_world[None], image_size, latent_size, near)
        return Readout(out.features[0], out.mask[0], out.depth[0])

    def coverage(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: tuple[int, int],
                 latent_size: tuple[int, int], near: float = 1e-3) -> torch.Tensor:
        """(T,) float32 on the memory's device: fraction of each view's latent cells where a stored point is
        visible, i.e. ``read_batch(...).mask`` averaged per view (cam_to_world (T, 4, 4))."""
        mask, _ = self.visibility(intrinsics, cam_to_world, image_size, latent_size, near)
        return mask.flatten(1).float().mean(1)

    # ------------------------------------------------------------------ looking at it
    def _display_features(self, store: PointStore) -> torch.Tensor:
        """(N, C) values the "pca" colouring and a colorize callable see."""
        return store.values

    def _observed_colors(self, store: PointStore) -> torch.Tensor:
        """(N, 3) uint8 observed colour of every point."""
        return store.colors

    def pca_basis(self) -> PCABasis | None:
        """This memory's display basis: fitted to the stored features at the first call that finds points,
        then fixed (saved with the memory, reset by :meth:`clear`). None while the memory is empty."""
        if self._pca is None and len(self._store):
            store = self._store
            feats = self._display_features(store)
            self._pca = PCABasis.fit(feats[subsample_indices(len(store), 1_000_000).to(feats.device)])
        return self._pca

    def export_points(self, colorize: Colorize = "observed",
                      max_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Points and display colours: (xyz (N, 3) float32, rgb (N, 3) uint8).

        ``colorize``: "observed" (the pixels' colour), "pca" (this memory's fixed PCA basis,
        :meth:`pca_basis`) or a callable mapping (N, C) features to (N, 3) colours in [0, 1].
        ``max_points`` keeps an evenly spaced deterministic subset.
        """
        store = self._store
        idx = subsample_indices(len(store), max_points).to(store.points.device)
        if isinstance(colorize, str) and colorize == "observed":
            rgb8 = self._observed_colors(store)[idx].cpu()
        elif isinstance(colorize, str) and colorize == "pca":
            basis = self.pca_basis()
            rgb = basis.apply(self._display_features(store)[idx]) if basis is not None else torch.zeros(0, 3)
            rgb8 = (rgb.clamp(0, 1) * 255).round().to(torch.uint8)
        elif callable(colorize) and not isinstance(colorize, str):
            feats = self._display_features(store)[idx]
            rgb = torch.as_tensor(colorize(feats)).detach().float().cpu()
            if rgb.shape != (feats.shape[0], 3):
                raise ValueError(f"colorize returned shape {tuple(rgb.shape)}, expected {(feats.shape[0], 3)}")
            rgb8 = (rgb.clamp(0, 1) * 255).round().to(torch.uint8)
        else:
            raise ValueError(f"colorize must be 'observed', 'pca' or a callable, got {colorize!r}")
        return store.points[idx].detach().cpu().numpy().astype(np.float32), rgb8.numpy()

    def export_ply(self, path: str | os.PathLike, colorize: Colorize = "observed",
                   max_points: int | None = None) -> None:
        """Write the memory as a binary PLY point cloud with colours (see :meth:`export_points`)."""
        xyz, rgb = self.export_points(colorize, max_points)
        write_ply(path, xyz, rgb)

    # ------------------------------------------------------------------ persistence
    def _config(self) -> dict:
        return {"voxel_size": self.voxel_size, "max_points": self.max_points, "frames_inserted": self.frames_inserted}

    @classmethod
    def _from_config(cls, config: dict, values: torch.Tensor):
        """An empty instance for a saved config and its (N, C) values; KeyError / TypeError / ValueError if bad."""
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> None:
        """Write to a .safetensors file (points, values, stamps, colours, display basis; config in metadata),
        atomically."""
        store = self._store
        tensors = {"points": store.points, "values": store.values, "stamps": store.stamps}
        if store.colors is not None:
            tensors["colors"] = store.colors
        if self._pca is not None:
            tensors.update(self._pca.to_tensors())
        save_store(path, tensors, self.FORMAT, self._config())

    @classmethod
    def load(cls, path: str | os.PathLike, device=None):
        """Read a file written by :meth:`save`; ValueError if it is corrupt, truncated or of another kind.

        Files without colours (written before colours were stored) load with neutral grey colours.
        """
        tensors, config = load_store(path, (cls.FORMAT, *cls.LEGACY_FORMATS))
        values = tensors["values"]
        try:
            memory = cls._from_config(config, values)
            frames = int(config["frames_inserted"])
            pca = PCABasis.from_tensors(tensors, values.shape[1])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: bad {cls.__name__} file (config {config}): {exc}") from exc
        points = tensors["points"]
        keys = (voxel_keys(points, memory.voxel_size) if memory.voxel_size is not None
                else torch.zeros(0, dtype=torch.int64))
        colors = None
        if cls.KEEPS_COLORS:
            colors = tensors.get("colors")
            if colors is None:
                colors = torch.full((points.shape[0], 3), NEUTRAL_GREY, dtype=torch.uint8)
        store = PointStore(points, values, tensors["stamps"].to(torch.int32), keys, colors)
        memory._store = store.to(device if device is not None else memory.device)
        memory._pca = pca
        memory.frames_inserted = frames
        return memory


def _box_corner(value, name: str) -> torch.Tensor:
    """A box corner as a (3,) float32 tensor; ValueError unless it is 3 finite numbers."""
    try:
        corner = torch.as_tensor(np.asarray(value, dtype=np.float64)).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"clear_region: {name} must be 3 numbers, got {value!r}") from exc
    if corner.shape != (3,) or not bool(torch.isfinite(corner).all()):
        raise ValueError(f"clear_region: {name} must be 3 finite numbers, got {value!r}")
    return corner.float()
