"""The node's one memory, behind one lock (no ROS).

Live inserts (ingest worker), rollouts (action thread, which read and update the memory), the services
and the cloud publisher all go through :class:`MemoryHolder`, so a rollout's update and a live insert never
interleave inside one memory operation, and ``load`` / ``clear`` swap or reset the memory atomically.
A failed ``load`` leaves the current memory untouched.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["MemoryHolder"]


class MemoryHolder:
    def __init__(self, memory, memory_class=None):
        self.lock = threading.RLock()
        self.memory = memory
        self._memory_class = memory_class or type(memory)
        self.keyframes = 0          # live keyframes inserted since the last clear / load
        self.path = ""              # last file saved to or loaded from
        self.generation = 0         # bumps on clear / load (the memory's own version may restart)

    def version(self) -> tuple[int, int]:
        """Changes whenever the memory content does (cheap; for publish-on-change)."""
        with self.lock:
            return self.generation, int(getattr(self.memory, "version", 0))

    def run(self, fn: Callable[[Any], Any]) -> Any:
        """Call ``fn(memory)`` under the lock."""
        with self.lock:
            return fn(self.memory)

    def stats(self) -> dict:
        with self.lock:
            out = dict(self.memory.stats())
            out.setdefault("points", len(self.memory))
            out["keyframes"] = self.keyframes
            out["path"] = self.path
            return out

    def clear(self) -> None:
        with self.lock:
            self.memory.clear()
            self.keyframes = 0
            self.generation += 1

    def save(self, path: str) -> str:
        """Write the memory to ``path`` (parent directories are created). Raises ValueError on a bad path."""
        if not path:
            raise ValueError("save: empty path")
        target = Path(path).expanduser()
        if target.is_dir():
            raise ValueError(f"save: {target} is a directory, give a file name")
        target.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            self.memory.save(str(target))
            self.path = str(target)
        return str(target)

    def load(self, path: str, expect_channels: int | None = None, device=None) -> int:
        """Replace the memory with the one saved at ``path``; returns its number of points.

        Raises ValueError (memory unchanged) when the file is missing, unreadable or has the wrong channels.
        """
        if not path:
            raise ValueError("load: empty path")
        source = Path(path).expanduser()
        if not source.is_file():
            raise ValueError(f"load: no file at {source}")
        try:
            loaded = self._memory_class.load(str(source), device=device)
        except Exception as exc:  # noqa: BLE001 - any read failure is a bad file for the caller
            raise ValueError(f"load: cannot read a memory from {source}: {exc}") from None
        channels = getattr(loaded, "channels", None)
        if expect_channels is not None and channels is not None and int(channels) != int(expect_channels):
            raise ValueError(f"load: {source} holds {channels}-channel features, the model needs {expect_channels}")
        with self.lock:
            if hasattr(loaded, "to") and device is not None:
                loaded = loaded.to(device=device, dtype=getattr(self.memory, "dtype", None))
            self.memory = loaded
            self.keyframes = 0
            self.path = str(source)
            self.generation += 1
            return len(loaded)

    def export_points(self, max_points: int, colorize: Any = "pca") -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            if len(self.memory) == 0:
                return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
            return self.memory.export_points(colorize=colorize, max_points=max_points)


class LockedMemory:
    """A view of the holder's current memory whose every method call runs under the holder's lock.

    Handed to a rollout so its reads and updates interleave safely with live inserts at operation
    granularity, instead of blocking live ingest for the whole (possibly minutes long) rollout.
    """

    def __init__(self, holder: MemoryHolder):
        object.__setattr__(self, "_holder", holder)

    def __getattr__(self, name: str):
        holder = object.__getattribute__(self, "_holder")
        with holder.lock:
            attr = getattr(holder.memory, name)
        if not callable(attr):
            return attr

        def locked(*args, **kwargs):
            with holder.lock:
                return attr(*args, **kwargs)

        return locked

    def __len__(self) -> int:
        holder = object.__getattribute__(self, "_holder")
        with holder.lock:
            return len(holder.memory)
