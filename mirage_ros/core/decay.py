"""Decay without ROS: which write stamp is "not re-observed for N seconds" (:class:`StampClock`).

The memory stamps every point with the frame counter of its last write (``frames_inserted`` at that time; a point
seen again in its voxel takes the new stamp). Seconds are the node's business: it samples the counter on a timer,
and a sample ``(f, t)`` proves that every point with stamp <= f was written at or before ``t``. So with
``t <= now - seconds``, ``forget_older_than(f + 1)`` removes only points not written for at least ``seconds``, and
a point is forgotten at most one sampling period late. A clear or load (a new memory generation) restarts the
samples: stamps restart with the memory.
"""

from __future__ import annotations

import collections

__all__ = ["StampClock"]


class StampClock:
    """Samples of (write counter, time) of one memory generation; see the module docstring."""

    def __init__(self):
        self._samples: collections.deque[tuple[int, float]] = collections.deque()
        self._generation = None

    def sample(self, generation, frames_inserted: int, now: float) -> None:
        """Record that the memory of ``generation`` had ``frames_inserted`` writes at time ``now`` (seconds)."""
        if generation != self._generation:
            self._samples.clear()
            self._generation = generation
        frames_inserted = int(frames_inserted)
        if not self._samples or frames_inserted > self._samples[-1][0]:
            self._samples.append((frames_inserted, float(now)))  # the first time a count is seen: tightest claim

    def forget_stamp(self, seconds: float, now: float) -> int | None:
        """The stamp to pass to ``forget_older_than`` so that points not written for ``seconds`` go, or None when
        no sample is that old yet. Drops samples that later calls (with the same or a larger ``now``) cannot need."""
        cutoff = float(now) - float(seconds)
        best = None
        while self._samples and self._samples[0][1] <= cutoff:
            best = self._samples[0]
            if len(self._samples) > 1 and self._samples[1][1] <= cutoff:
                self._samples.popleft()
            else:
                break
        return None if best is None else best[0] + 1
