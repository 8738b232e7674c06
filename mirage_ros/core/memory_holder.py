"""The node's one memory and the one lock around it (no ROS).

The concurrency story, all of it:

* **Writers take the one lock, one at a time.** A writer is anything that changes the memory or uses the
  world model: the ingest worker for one keyframe (:meth:`MemoryHolder.observe`: encode + insert), a goal for
  its whole rollout (:meth:`MemoryHolder.exclusive`: it reads the memory and writes only a scratch copy, unless it
  was asked to keep what it imagined, then :meth:`MemoryHolder.adopt` swaps the copy in), ``clear`` and ``load``
  for their reset or swap. The world model is used only by these writers, so the same lock also
  serialises the model's per-call state (the causal VAE's caches): there is no separate model lock.
* **Readers never lock.** The cloud publisher, stats, coverage queries and ``save`` read :attr:`memory`
  directly. That is safe because the memory is copy-on-write (:class:`mirage.memory.base.PointMemory`): a
  write builds a new point store and swaps it in with one assignment, so a reader sees the store before or
  after a write, never half of one. Counters (``frames_inserted``, ``version``) may lag the write in progress.
* **A writer that cannot wait says so.** ``clear`` and ``load`` wait at most ``timeout`` seconds and then raise
  :class:`MemoryBusy` naming the holder (e.g. a goal rolling out for minutes), so a service call gets an answer
  instead of blocking its callback group for the length of a rollout.

This replaces four mechanisms that guarded one memory: a re-entrant lock taken per memory call, a proxy that
re-took it around every method a rollout called, a model lock that in effect also serialised ingest inserts
against rollouts, and a goal lock for one rollout at a time.
"""

from __future__ import annotations

import copy
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

__all__ = ["MemoryBusy", "MemoryHolder", "BUSY_TIMEOUT"]

BUSY_TIMEOUT = 2.0  # seconds clear / load wait for a writer (longer than one keyframe encode, shorter than a goal)


class MemoryBusy(RuntimeError):
    """The memory's writer lock stayed taken for longer than the caller would wait (the message names the holder)."""


class MemoryHolder:
    """Owns the memory, its one writer lock and the node's counters about it (see the module docstring).

    Args:
        memory: the initial memory (e.g. ``world_model.new_memory(...)``).
        memory_class: class whose ``load(path, device=)`` reads saved memories (default: ``type(memory)``).
    """

    def __init__(self, memory, memory_class=None):
        self._lock = threading.RLock()
        self._memory = memory
        self._memory_class = memory_class or type(memory)
        self._owner: tuple[str, float] | None = None  # (who holds the lock, since when): for MemoryBusy messages
        self.keyframes = 0          # live keyframes inserted since the last clear / load
        self.path = ""              # last file saved to or loaded from
        self.generation = 0         # bumps on clear / load (the memory's own version may restart)

    # ------------------------------------------------------------------------------------------ readers
    @property
    def memory(self):
        """The current memory, for reading without a lock (writers go through :meth:`exclusive`)."""
        return self._memory

    def version(self) -> tuple[int, int]:
        """Changes whenever the memory content does (cheap; for publish-on-change)."""
        return self.generation, int(getattr(self._memory, "version", 0))

    def stats(self) -> dict:
        memory = self._memory
        out = dict(memory.stats())
        out.setdefault("points", len(memory))
        out["keyframes"] = self.keyframes
        out["path"] = self.path
        return out

    def export_points(self, max_points: int, colorize: Any = "observed") -> tuple[np.ndarray, np.ndarray]:
        """(xyz (N, 3) float32, rgb (N, 3) uint8) of at most ``max_points`` points (empty arrays when empty);
        ``colorize`` "observed" (the pixels' colours) or "pca" (the memory's fixed basis), see ``export_points``."""
        memory = self._memory
        if len(memory) == 0:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        return memory.export_points(colorize=colorize, max_points=max_points)

    def snapshot(self):
        """A copy of the memory that later writes do not change (O(1): it shares the immutable point store).

        Writes to the copy do not reach the holder's memory either, so it is also a scratch memory.
        """
        return copy.copy(self._memory)

    def save(self, path: str) -> str:
        """Write the memory to ``path`` (parent directories are created). Raises ValueError on a bad path."""
        if not path:
            raise ValueError("save: empty path")
        target = Path(path).expanduser()
        if target.is_dir():
            raise ValueError(f"save: {target} is a directory, give a file name")
        target.parent.mkdir(parents=True, exist_ok=True)
        self._memory.save(str(target))  # reads one consistent point store, writes atomically
        self.path = str(target)
        return str(target)

    # ------------------------------------------------------------------------------------------ writers
    @contextmanager
    def exclusive(self, owner: str, timeout: float | None = None) -> Iterator[Any]:
        """Hold the writer lock; yields the memory to read and write. ``owner`` names the holder in
        :class:`MemoryBusy` messages; ``timeout`` None waits for ever, otherwise raises MemoryBusy after it."""
        if not self._lock.acquire(timeout=-1 if timeout is None else max(float(timeout), 0.0)):
            holder = self._owner
            who = f"{holder[0]} (for {time.monotonic() - holder[1]:.1f} s)" if holder else "another writer"
            raise MemoryBusy(f"the memory is in use by {who}; cancel it or retry when it ends")
        previous, self._owner = self._owner, (owner, time.monotonic())
        try:
            yield self._memory
        finally:
            self._owner = previous
            self._lock.release()

    def adopt(self, memory) -> None:
        """Make ``memory`` the node's memory (a goal's scratch copy that it was asked to keep). Call it while holding
        :meth:`exclusive` (the lock is re-entrant); from another thread it waits like any writer."""
        with self.exclusive("adopt"):
            self._memory = memory

    def observe(self, world_model, rgb: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor,
                cam_to_world: torch.Tensor, skip_if=None, on_encoded=None) -> int | None:
        """One keyframe through ``world_model.observe`` (encode + insert) under the lock; returns cells written.

        rgb (3, H, W) in [0, 1], depth (H, W) metres, intrinsics (3, 3) at (H, W) = the model's size,
        cam_to_world (4, 4). ValueError from the model or the memory leaves the memory unchanged.
        ``skip_if()`` is asked once the lock is taken; True skips the insert and returns None (a pause that came
        while this call waited for the lock). The encode runs under the lock too: the lock is what serialises the
        world model's per-call state (the causal VAE's caches) against a goal's rollout. ``on_encoded()`` is
        called between encode and insert (the ingest's stage timing); a model without ``encode_images``
        encodes inside ``observe``, after it.
        """
        with self.exclusive("ingest") as memory:
            if skip_if is not None and skip_if():
                return None
            encode = getattr(world_model, "encode_images", None)
            extra = {} if encode is None else {"latents": encode(rgb[None])}
            if on_encoded is not None:
                on_encoded()
            written = world_model.observe(memory, rgb, depth, intrinsics, cam_to_world, **extra)
            self.keyframes += 1
            return written

    def clear(self, timeout: float | None = BUSY_TIMEOUT) -> None:
        """Empty the memory (MemoryBusy when a writer holds it for longer than ``timeout`` s)."""
        with self.exclusive("clear", timeout) as memory:
            memory.clear()
            self.keyframes = 0
            self.generation += 1

    def load(self, path: str, expect_channels: int | None = None, device=None,
             timeout: float | None = BUSY_TIMEOUT) -> int:
        """Replace the memory with the one saved at ``path``; returns its number of points.

        Raises ValueError (memory unchanged) when the file is missing, unreadable or has the wrong channels,
        MemoryBusy when a writer holds the memory for longer than ``timeout`` s. The file is read and moved to
        ``device`` before the lock is taken; only the swap happens under it.
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
        if hasattr(loaded, "to") and device is not None:
            loaded = loaded.to(device=device, dtype=getattr(self._memory, "dtype", None))
        with self.exclusive("load", timeout):
            self._memory = loaded
            self.keyframes = 0
            self.path = str(source)
            self.generation += 1
        return len(loaded)

    # ------------------------------------------------------------------------------------------ forgetting
    def clear_region(self, min_xyz, max_xyz, timeout: float | None = BUSY_TIMEOUT) -> int:
        """Remove the points inside an axis-aligned world-frame box (the memory's ``clear_region``); returns how
        many. ValueError for a bad box (memory unchanged), MemoryBusy after ``timeout`` s of another writer."""
        with self.exclusive("clear_region", timeout) as memory:
            return int(memory.clear_region(min_xyz, max_xyz))

    def forget_older_than(self, stamp: int, timeout: float | None = BUSY_TIMEOUT) -> int:
        """Remove the points last written before write stamp ``stamp`` (the memory's ``forget_older_than``);
        returns how many. MemoryBusy after ``timeout`` s of another writer."""
        with self.exclusive("decay", timeout) as memory:
            return int(memory.forget_older_than(int(stamp)))
