"""Frames that wait for their pose: a bounded hold in the manner of tf2_ros's MessageFilter (no ROS).

A camera's images and its /tf travel on different topics, so a complete rgb + depth + camera_info set often
arrives a few milliseconds before the transform at its stamp. Dropping it at once loses frames that would have
been posed a moment later; blocking the worker on a TF timeout stalls every frame behind it. The hold keeps
such sets for at most ``wait`` seconds, at most ``capacity`` of them (the oldest is dropped beyond that), and the
ingest worker retries them whenever a transform arrives or on its tick (:meth:`PoseHold.retry`), oldest first.
What waited too long expires and is counted.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

__all__ = ["Held", "PoseHold"]

T = TypeVar("T")


@dataclass
class Held(Generic[T]):
    item: T
    since: float      # clock time it entered the hold
    deadline: float   # clock time it expires


class PoseHold(Generic[T]):
    """Bounded FIFO of items waiting for a pose.

    Args:
        wait: longest time an item waits (seconds); 0 disables the hold (:attr:`enabled` is False).
        capacity: most items held at once; adding beyond it drops the oldest (returned by :meth:`add`).
        clock: monotonic seconds.
    One thread adds and retries (the ingest worker); ``len`` may be read from any thread.
    """

    def __init__(self, wait: float, capacity: int = 32, clock: Callable[[], float] = time.monotonic):
        if not wait >= 0:
            raise ValueError(f"wait must be >= 0 seconds, got {wait}")
        if int(capacity) < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.wait, self.capacity, self.clock = float(wait), int(capacity), clock
        self._items: list[Held[T]] = []
        self._lock = threading.Lock()
        self.held = 0        # items that had to wait
        self.expired = 0     # items that waited ``wait`` seconds and found no pose
        self.overflowed = 0  # items dropped because the hold was full
        self.waits: list[float] = []  # seconds each posed item waited (recent, bounded)

    @property
    def enabled(self) -> bool:
        return self.wait > 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def add(self, item: T) -> T | None:
        """Hold ``item``; returns the oldest item dropped to make room (None when there was room)."""
        now = self.clock()
        with self._lock:
            self._items.append(Held(item, now, now + self.wait))
            self.held += 1
            if len(self._items) > self.capacity:
                self.overflowed += 1
                return self._items.pop(0).item
        return None

    def retry(self, ready: Callable[[T], bool]) -> list[T]:
        """Offer every held item, oldest first, to ``ready(item) -> bool`` (True: it was posed and handled, leave
        the hold). Returns the items that expired instead (past their deadline and still not ready)."""
        with self._lock:
            items = list(self._items)
        done, expired = set(), []
        for held in items:
            if ready(held.item):
                done.add(id(held))
                self._record_wait(self.clock() - held.since)
            elif self.clock() >= held.deadline:
                done.add(id(held))
                expired.append(held.item)
        if done:
            with self._lock:
                self._items = [h for h in self._items if id(h) not in done]
            self.expired += len(expired)
        return expired

    def clear(self) -> list[T]:
        """Drop every held item (returned)."""
        with self._lock:
            items, self._items = [h.item for h in self._items], []
        return items

    def _record_wait(self, seconds: float, keep: int = 10000) -> None:
        self.waits.append(float(seconds))
        if len(self.waits) > keep:
            del self.waits[: len(self.waits) - keep]
