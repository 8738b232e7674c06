"""What a rollout hands back and how it is watched: result, progress, cancellation, per-phase timings."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

__all__ = ["CancelToken", "RolloutCancelled", "RolloutProgress", "RolloutResult", "PhaseTimer", "PHASES"]

# Where rollout time goes. memory_read: readout (+ Plücker rays) per chunk; denoise: the sampling loop
# (transformer + scheduler); decode: VAE decode of each window; depth: depth provider + scale alignment;
# memory_update: encoding the context latents and memory latents, exclusion masks, the memory write, and
# seeding the memory from first_depth.
PHASES = ("memory_read", "denoise", "decode", "depth", "memory_update")


class RolloutCancelled(RuntimeError):
    """Raised when a :class:`CancelToken` fires; the memory keeps every chunk finished before it."""


class CancelToken:
    """Thread-safe flag checked between denoising steps (e.g. set from a ROS action's cancel callback)."""

    def __init__(self):
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass
class RolloutProgress:
    frames_done: int
    frames_total: int
    chunks_done: int
    chunks_total: int
    step: int
    steps_total: int
    seconds_elapsed: float


@dataclass
class RolloutResult:
    """frames: (T, H, W, 3) uint8 (frame 0 is the conditioning frame); timings: seconds per phase
    (:data:`PHASES`, plus ``total``); seconds_per_frame: total / generated frames (T - 1)."""

    frames: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    seconds_per_frame: float = 0.0
    memory_points_added: int = 0
    depth_scales: list[float | None] = field(default_factory=list)


class PhaseTimer:
    """Accumulates wall-clock seconds per phase; ``sync`` (e.g. ``torch.cuda.synchronize``) makes GPU time honest."""

    def __init__(self, sync=None):
        self.seconds = {name: 0.0 for name in PHASES}
        self._sync = sync
        self._start = time.perf_counter()

    @contextmanager
    def phase(self, name: str):
        if self._sync is not None:
            self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self._sync is not None:
                self._sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start
