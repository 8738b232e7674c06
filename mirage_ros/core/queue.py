"""The hand-off between the subscription callbacks and the ingest: a keep-latest queue and its worker thread.

Callbacks only :meth:`KeepLatestQueue.put` (never blocks, drops the oldest item when full); one
:class:`IngestWorker` thread pops and processes, so a slow model drops stale frames instead of building latency.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")

__all__ = ["KeepLatestQueue", "IngestWorker"]


class KeepLatestQueue(Generic[T]):
    """Bounded FIFO that drops its oldest item when full (never blocks the producer).

    ``put`` is safe to call from executor callbacks; ``get`` blocks the consumer up to a timeout.
    ``high_water`` records the largest length ever seen (the benchmark checks it stays <= maxsize).
    """

    def __init__(self, maxsize: int = 1):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = int(maxsize)
        self._items: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()
        self.dropped = 0
        self.pushed = 0
        self.high_water = 0
        self._in_flight = 0  # items handed out by get() and not yet marked done
        self._closed = False

    def put(self, item: T) -> bool:
        """Enqueue; returns True when an older item was dropped to make room."""
        with self._cond:
            dropped = False
            while len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
                dropped = True
            self._items.append(item)
            self.pushed += 1
            self.high_water = max(self.high_water, len(self._items))
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None) -> T | None:
        """Oldest item, or None after ``timeout`` seconds / once closed and empty."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if not self._items:
                return None
            self._in_flight += 1
            return self._items.popleft()

    def task_done(self) -> None:
        """Mark an item returned by :meth:`get` as processed."""
        with self._cond:
            self._in_flight = max(0, self._in_flight - 1)
            self._cond.notify_all()

    def join(self, timeout: float) -> bool:
        """Wait until the queue is empty and every item taken was marked done; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._items or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class IngestWorker:
    """A thread that turns queued frames into memory inserts.

    ``process(item) -> bool | None`` does the work for one item and returns whether it inserted a keyframe
    (None when the frame was dropped). Exceptions are caught and passed to ``on_error`` so one bad frame never
    stops the worker.
    """

    def __init__(self, queue: KeepLatestQueue, process: Callable[[Any], Any],
                 on_error: Callable[[Any, BaseException], None] | None = None, name: str = "mirage-ingest"):
        self.queue = queue
        self.process = process
        self.on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "IngestWorker":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self.queue.get(timeout=0.1)
            if item is None:
                continue
            try:
                self.process(item)
            except Exception as exc:  # noqa: BLE001 - a bad frame must not kill the worker
                if self.on_error is not None:
                    self.on_error(item, exc)
            finally:
                self.queue.task_done()

    def wait_idle(self, timeout: float) -> bool:
        """Block until the queue is empty and no item is being processed; False on timeout."""
        return self.queue.join(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.queue.close()
        if self._thread.is_alive():
            self._thread.join(timeout)
