"""Where the ingest's time goes: seconds per stage, per set and per inserted keyframe (rclpy-free).

A set's stages, in order (what the input -> memory latency of a keyframe is the sum of, up to a few clock reads):

    queue           arrival of the complete set -> the pose worker takes it (keep-latest pose queue)
    check           header check (encodings, sizes, camera_info -> K; no pixels)
    pose            TF lookup at the stamp (the attempt that found the pose)
    hold            waiting in the pose hold for a late transform (0 for a set posed at once)
    select          keyframe? (distance to the camera's last keyframe)
    encoder_queue   keyframe candidate handed to the encoder -> the encode worker takes it
    convert         pixels: Image / CompressedImage -> rgb uint8, depth float32 metres (keyframes only)
    fit             :func:`mirage.frames.fit_to_size`: crop, resize, K
    encode          waiting for the memory's writer lock (held by a goal for its rollout: the lock serialises the
                    world model), then the model's encoder (``world_model.encode_images``)
    insert          back-project and insert the latents

:class:`StageTimes` keeps the recent values of each stage (bounded) and summarises them as median / p95; the
ingest benchmark prints that table next to the latency it explains.
"""

from __future__ import annotations

import collections
import threading

import numpy as np

__all__ = ["STAGES", "SET_STAGES", "StageTimes", "format_stage_table"]

SET_STAGES = ("queue", "check", "pose", "hold", "select")
STAGES = SET_STAGES + ("encoder_queue", "convert", "fit", "encode", "insert")


class StageTimes:
    """Recent durations (seconds) per stage name, ``keep`` per stage; ``add`` from any thread."""

    def __init__(self, keep: int = 10000):
        self.keep = int(keep)
        self._lock = threading.Lock()
        self._times: dict[str, collections.deque[float]] = {}
        self._added: dict[str, int] = {}

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            if stage not in self._times:
                self._times[stage] = collections.deque(maxlen=self.keep)
            self._times[stage].append(float(seconds))
            self._added[stage] = self._added.get(stage, 0) + 1

    def add_all(self, durations: dict[str, float]) -> None:
        for stage, seconds in durations.items():
            self.add(stage, seconds)

    def counts(self) -> dict[str, int]:
        """How many values each stage was given so far (kept or not): a mark for ``since``."""
        with self._lock:
            return dict(self._added)

    def values(self, stage: str, since: int = 0) -> np.ndarray:
        """The kept durations of ``stage`` (seconds) given after its ``since``-th value."""
        with self._lock:
            kept = list(self._times.get(stage, ()))
            newer = self._added.get(stage, 0) - since
        return np.asarray(kept[len(kept) - min(max(newer, 0), len(kept)):], dtype=np.float64)

    def summary(self, since: dict[str, int] | None = None) -> dict[str, tuple[int, float, float]]:
        """``stage -> (n, median s, p95 s)`` of the values kept (given after ``since[stage]`` of them, a
        :meth:`counts` taken earlier), in stage order."""
        since = since or {}
        names = self.counts()
        order = [s for s in STAGES if s in names] + sorted(set(names) - set(STAGES))
        out = {}
        for stage in order:
            v = self.values(stage, since.get(stage, 0))
            if v.size:
                out[stage] = (int(v.size), float(np.median(v)), float(np.percentile(v, 95)))
        return out


def format_stage_table(columns: dict[str, dict[str, tuple[int, float, float]]], indent: str = "  ") -> str:
    """One row per stage, ``median / p95 ms (n)`` per column (e.g. ``{"every set": ..., "keyframes": ...}``)."""
    stages = [s for s in STAGES if any(s in c for c in columns.values())]
    stages += sorted({s for c in columns.values() for s in c} - set(stages))
    width = max([28] + [len(name) + 2 for name in columns])
    rows = [f"{indent}{'ms: p50 / p95 (n)':<16}" + "".join(f"{name:>{width}}" for name in columns)]
    for stage in stages:
        cells = [f"{col[stage][1] * 1e3:.2f} / {col[stage][2] * 1e3:.2f} ({col[stage][0]})" if stage in col else "-"
                 for col in columns.values()]
        rows.append(f"{indent}{stage:<16}" + "".join(f"{c:>{width}}" for c in cells))
    return "\n".join(rows)
