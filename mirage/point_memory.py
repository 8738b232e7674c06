"""What the latent memory and the RGB baseline share: a bounded point store, swapped copy-on-write.

:class:`PointMemory` holds a :class:`~mirage.pointcloud.PointStore`, its growth bounds (voxel dedup, capacity)
and counters, and saves / loads it with safetensors. Subclasses decide what a point's value is (a latent
vector, a colour), how frames become points and how the store is read.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from mirage.pointcloud import PointStore, load_store, save_store, voxel_keys

__all__ = ["PointMemory"]


class PointMemory:
    """Points (N, 3) float32 in the world frame with one (N, C) value row each.

    Updates are copy-on-write: an insert builds a new store and swaps it in with one assignment, so a read
    running on another thread sees the memory before or after an insert, never half of it (one writer at a
    time; serialise writers yourself).
    """

    FORMAT = "mirage.PointMemory"  # safetensors metadata "format"; each subclass names its own

    def __init__(self, channels: int, voxel_size: float | None, max_points: int | None, device, dtype):
        if voxel_size is not None and not (np.isfinite(voxel_size) and voxel_size > 0):
            raise ValueError(f"voxel_size must be a positive number or None, got {voxel_size}")
        if max_points is not None and int(max_points) <= 0:
            raise ValueError(f"max_points must be positive or None, got {max_points}")
        self.voxel_size = None if voxel_size is None else float(voxel_size)
        self.max_points = None if max_points is None else int(max_points)
        self.frames_inserted = 0
        self.version = 0
        self._store = PointStore.empty(int(channels), torch.device(device), dtype)

    @property
    def points(self) -> torch.Tensor:
        """(N, 3) float32 world points, oldest first."""
        return self._store.points

    @property
    def device(self) -> torch.device:
        return self._store.points.device

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        values = self._store.values
        self._store = PointStore.empty(values.shape[1], self.device, values.dtype)
        self.frames_inserted = 0
        self.version += 1

    def to(self, device=None, dtype=None):
        """Move points and values (in place) to ``device``; cast values to ``dtype``. Returns self."""
        self._store = self._store.to(device, dtype)
        self.version += 1
        return self

    def stats(self) -> dict:
        return {"points": len(self), "bytes": self._store.nbytes, "frames_inserted": self.frames_inserted,
                "voxel_size": self.voxel_size, "max_points": self.max_points, "version": self.version}

    def _merge(self, points: torch.Tensor, values: torch.Tensor, frame: torch.Tensor, priority: torch.Tensor,
               num_frames: int) -> int:
        """Add points of ``num_frames`` new frames (``frame`` (M,) their 0-based index among them) and commit."""
        stamps = (self.frames_inserted + 1 + frame).to(torch.int32)
        store, written = self._store.merged(points, values, stamps, priority, self.voxel_size, self.max_points)
        # Commit only after everything above succeeded: a failed insert leaves the memory unchanged.
        self._store = store
        self.frames_inserted += num_frames
        self.version += 1
        return written

    # ------------------------------------------------------------------ persistence
    def _config(self) -> dict:
        return {"voxel_size": self.voxel_size, "max_points": self.max_points, "frames_inserted": self.frames_inserted}

    @classmethod
    def _from_config(cls, config: dict, values: torch.Tensor):
        """An empty instance for a saved config and its (N, C) values; KeyError / TypeError / ValueError if bad."""
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> None:
        """Write to a .safetensors file (points, values, write stamps; config in metadata), atomically."""
        save_store(path, self._store, self.FORMAT, self._config())

    @classmethod
    def load(cls, path: str | os.PathLike, device=None):
        """Read a file written by :meth:`save`; ValueError if it is corrupt, truncated or of another kind."""
        tensors, config = load_store(path, cls.FORMAT)
        try:
            memory = cls._from_config(config, tensors["values"])
            frames = int(config["frames_inserted"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: bad {cls.__name__} file (config {config}): {exc}") from exc
        points = tensors["points"]
        keys = (voxel_keys(points, memory.voxel_size) if memory.voxel_size is not None
                else torch.zeros(0, dtype=torch.int64))
        memory._store = PointStore(points, tensors["values"], tensors["stamps"].to(torch.int32), keys).to(device)
        memory.frames_inserted = frames
        return memory
