"""Rollout bookkeeping: how a trajectory is cut into chunks, progress, cancellation, results, timings.

Chunking (pixel frames are numbered 0 .. T-1; latent frame ``j`` stands for pixel frame ``4j``, see
:func:`mirage.camera.latent_frame_indices`):

* ``T`` must be ``1 + 4m`` (a whole number of latent frames, like every Wan clip), ``m >= 0``.
* A chunk is a window of up to ``chunk_latent_frames`` consecutive latent frames (33 pixel frames -> 9 latent
  frames). Its first ``c`` latent frames are clean *context*, already known; the rest are generated.
  The first chunk's context is the first frame (``c = 1``); later chunks carry the last
  ``context_latent_frames`` latent frames of what was generated before (re-encoded from pixels, so the
  first of them is a single-frame latent exactly like the VAE's latent 0).
* So with 33-frame chunks and one context latent every chunk adds 32 pixel frames; the last chunk may be
  shorter when ``T - 1`` is not a multiple of that (it just generates fewer latent frames).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from .camera import TEMPORAL_STRIDE

__all__ = [
    "CancelToken",
    "RolloutCancelled",
    "RolloutProgress",
    "RolloutResult",
    "Chunk",
    "plan_chunks",
    "PhaseTimer",
    "PHASES",
]

# Where rollout time goes. memory_read: readout (+ Plücker rays) per chunk; denoise: the sampling loop
# (transformer + scheduler); decode: VAE decode of each window; depth: depth provider + scale alignment;
# memory_update: re-encoding frames (memory latents and the next chunk's context), exclusion masks, insert,
# and seeding the memory from first_depth.
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


@dataclass(frozen=True)
class Chunk:
    """One window of latent frames. ``start`` is the global latent index of window position 0; positions
    ``0 .. context-1`` are clean context, ``context .. length-1`` are generated."""

    index: int
    start: int
    length: int
    context: int

    @property
    def new_latent_indices(self) -> range:
        return range(self.start + self.context, self.start + self.length)

    @property
    def latent_indices(self) -> range:
        return range(self.start, self.start + self.length)

    @property
    def new_pixel_frames(self) -> range:
        """Global pixel frames this chunk adds: after the last context latent's frame, up to its last latent's."""
        return range(TEMPORAL_STRIDE * (self.start + self.context - 1) + 1,
                     TEMPORAL_STRIDE * (self.start + self.length - 1) + 1)


def plan_chunks(num_frames: int, chunk_latent_frames: int, context_latent_frames: int = 1) -> list[Chunk]:
    """Cut ``num_frames`` pixel frames (1 + 4m) into chunks; see the module docstring. m = 0 gives no chunk."""
    if num_frames < 1:
        raise ValueError(f"a rollout needs at least one frame, got {num_frames}")
    if (num_frames - 1) % TEMPORAL_STRIDE:
        raise ValueError(f"the number of frames must be 1 + {TEMPORAL_STRIDE}m (1, 5, 9, ..., 33, ...) so that it "
                         f"is a whole number of latent frames; got {num_frames}")
    if context_latent_frames < 1 or chunk_latent_frames <= context_latent_frames:
        raise ValueError(f"chunks of {chunk_latent_frames} latent frames cannot carry {context_latent_frames} "
                         "context frames and still generate one")
    total_latents = 1 + (num_frames - 1) // TEMPORAL_STRIDE
    chunks: list[Chunk] = []
    done = 1  # latent 0 is the conditioning frame
    while done < total_latents:
        context = 1 if not chunks else min(context_latent_frames, done)
        length = min(chunk_latent_frames, context + total_latents - done)
        chunks.append(Chunk(index=len(chunks), start=done - context, length=length, context=context))
        done += length - context
    return chunks


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
