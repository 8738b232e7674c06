"""Approximate-time pairing of streams by stamp (rgb + depth [+ camera_info]), without message_filters.

Each stream keeps a bounded queue of recent messages. When a message arrives, the buffer looks for the
message closest in stamp in every other stream; if all of them lie within ``slop`` of the newcomer, the set
is emitted and every queued message up to those stamps is dropped (a set is never emitted twice and time
only moves forward). Messages arriving older than the last emitted set are dropped too. Pure Python and
thread-safe, so rclpy subscription callbacks on a MultiThreadedExecutor may call :meth:`add` concurrently.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from mirage_ros.conversions.time import stamp_to_ns

__all__ = ["SyncedSet", "ApproximateTimeSync"]


@dataclass(frozen=True)
class SyncedSet:
    """One matched set: ``messages[key]`` and its ``stamps_ns[key]``; ``stamp_ns`` is the first stream's stamp."""

    messages: dict[str, Any]
    stamps_ns: dict[str, int]

    @property
    def stamp_ns(self) -> int:
        return next(iter(self.stamps_ns.values()))

    def __getitem__(self, key: str) -> Any:
        return self.messages[key]


class ApproximateTimeSync:
    """Pair messages of ``keys`` whose stamps all lie within ``slop`` seconds.

    Args:
        keys: stream names, e.g. ``("rgb", "depth", "info")``; the first one names the set's stamp.
        slop: largest allowed difference between any two stamps of a set, in seconds.
        queue_size: messages kept per stream (the oldest is dropped beyond it).
        callback: optional ``callback(SyncedSet)`` called (outside the lock) for every set.
    """

    def __init__(self, keys: Sequence[str], slop: float = 0.02, queue_size: int = 10,
                 callback: Callable[[SyncedSet], None] | None = None):
        keys = tuple(keys)
        if len(keys) < 2 or len(set(keys)) != len(keys):
            raise ValueError(f"need at least two distinct stream keys, got {keys}")
        if not slop >= 0:
            raise ValueError(f"slop must be >= 0 seconds, got {slop}")
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.keys = keys
        self.slop_ns = stamp_to_ns(float(slop))
        self.queue_size = int(queue_size)
        self.callback = callback
        self._queues: dict[str, deque[tuple[int, Any]]] = {k: deque() for k in keys}
        self._last_emitted_ns: int | None = None
        self._lock = threading.Lock()
        self.emitted = 0
        self.dropped = 0

    def add(self, key: str, msg: Any, stamp_ns: int | None = None) -> SyncedSet | None:
        """Queue ``msg`` of stream ``key`` (stamp from ``msg.header.stamp`` unless given); return the set it
        completes, if any."""
        if key not in self._queues:
            raise ValueError(f"unknown stream {key!r}; streams: {self.keys}")
        stamp = stamp_to_ns(msg.header.stamp) if stamp_ns is None else int(stamp_ns)
        with self._lock:
            matched = self._add_locked(key, stamp, msg)
        if matched is not None and self.callback is not None:
            self.callback(matched)
        return matched

    def reset(self) -> None:
        """Drop every queued message (e.g. after a clock jump)."""
        with self._lock:
            for queue in self._queues.values():
                queue.clear()
            self._last_emitted_ns = None

    def pending(self) -> dict[str, int]:
        """Queued messages per stream."""
        with self._lock:
            return {k: len(q) for k, q in self._queues.items()}

    # ------------------------------------------------------------------------------------------ internals
    def _add_locked(self, key: str, stamp: int, msg: Any) -> SyncedSet | None:
        if self._last_emitted_ns is not None and stamp <= self._last_emitted_ns - self.slop_ns:
            self.dropped += 1  # older than a set already emitted: it could only pair with consumed messages
            return None
        queue = self._queues[key]
        position = len(queue)
        while position > 0 and queue[position - 1][0] > stamp:  # keep each queue sorted by stamp
            position -= 1
        queue.insert(position, (stamp, msg))
        if len(queue) > self.queue_size:
            queue.popleft()
            self.dropped += 1
        chosen: dict[str, tuple[int, Any]] = {key: (stamp, msg)}
        for other in self.keys:
            if other == key:
                continue
            candidates = self._queues[other]
            if not candidates:
                return None
            chosen[other] = min(candidates, key=lambda item: abs(item[0] - stamp))
        stamps = [s for s, _ in chosen.values()]
        if max(stamps) - min(stamps) > self.slop_ns:
            return None
        for k, (s, _) in chosen.items():
            q = self._queues[k]
            self.dropped += sum(1 for qs, _ in q if qs < s)
            while q and q[0][0] <= s:
                q.popleft()
        self._last_emitted_ns = max(stamps)
        self.emitted += 1
        return SyncedSet(messages={k: chosen[k][1] for k in self.keys}, stamps_ns={k: chosen[k][0] for k in self.keys})
