"""The hand-off between the subscription callbacks and the ingest: a keep-latest queue and its worker thread.

Callbacks only :meth:`KeepLatestQueue.put` (never blocks, drops the oldest item when full); one
:class:`IngestWorker` thread pops and processes, so a slow model drops stale frames instead of building latency.
With several cameras each one has its own bound (``put(item, key=camera)``), so a fast camera never pushes a
slow one's frames out. The worker also runs an ``idle`` step (retrying the sets that wait for their pose) on every
wake-up: after each item, on :meth:`KeepLatestQueue.wake` (a transform arrived) and at least every ``tick``.
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
    ``maxsize`` bounds the items of each ``key`` (one key, None, unless the caller names one).
    ``high_water`` records the largest length of one key's items ever seen (the benchmark checks it stays <= maxsize).
    """

    def __init__(self, maxsize: int = 1):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = int(maxsize)
        self._items: collections.deque[tuple[object, T]] = collections.deque()
        self._woken = False
        self._cond = threading.Condition()
        self.dropped = 0
        self.pushed = 0
        self.high_water = 0
        self._in_flight = 0  # items handed out by get() and not yet marked done
        self._closed = False

    def put(self, item: T, key: object = None) -> bool:
        """Enqueue; returns True when an older item of the same ``key`` was dropped to make room."""
        with self._cond:
            dropped = False
            while sum(1 for k, _ in self._items if k == key) >= self.maxsize:
                oldest = next(i for i, (k, _) in enumerate(self._items) if k == key)
                del self._items[oldest]
                self.dropped += 1
                dropped = True
            self._items.append((key, item))
            self.pushed += 1
            self.high_water = max(self.high_water, sum(1 for k, _ in self._items if k == key))
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None) -> T | None:
        """Oldest item, or None after ``timeout`` seconds, after :meth:`wake`, or once closed and empty."""
        with self._cond:
            if not self._items and not self._closed and not self._woken:
                self._cond.wait(timeout)
            self._woken = False
            if not self._items:
                return None
            self._in_flight += 1
            return self._items.popleft()[1]

    def wake(self) -> None:
        """Make a waiting (or the next) :meth:`get` return at once, with None when nothing is queued."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

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

    def unfinished(self) -> int:
        """Items queued or taken and not yet marked done."""
        with self._cond:
            return len(self._items) + self._in_flight


class IngestWorker:
    """A thread that turns queued frames into memory inserts.

    ``process(item) -> bool | None`` does the work for one item and returns whether it inserted a keyframe
    (None when the frame was dropped or held). Exceptions are caught and passed to ``on_error`` so one bad frame
    never stops the worker. ``idle() -> [(item, exception), ...]`` runs after every item, on every
    :meth:`KeepLatestQueue.wake` and at least every ``tick`` seconds (retrying held sets; what it returns goes to
    ``on_error``); ``pending() -> int`` counts work still owed (held sets, keyframes queued for the encoder stage),
    for :meth:`wait_idle`.
    """

    def __init__(self, queue: KeepLatestQueue, process: Callable[[Any], Any],
                 on_error: Callable[[Any, BaseException], None] | None = None, name: str = "mirage-ingest",
                 idle: Callable[[], list] | None = None, pending: Callable[[], int] | None = None,
                 tick: float = 0.02):
        self.queue = queue
        self.process = process
        self.on_error = on_error
        self.idle = idle
        self.pending = pending or (lambda: 0)
        self.tick = float(tick)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "IngestWorker":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self.queue.get(timeout=self.tick if self.pending() else 0.1)
            if item is not None:
                try:
                    self.process(item)
                except Exception as exc:  # noqa: BLE001 - a bad frame must not kill the worker
                    self._report(item, exc)
                finally:
                    self.queue.task_done()
            if self.idle is not None:
                try:
                    failures = self.idle()
                except Exception as exc:  # noqa: BLE001
                    failures = [(None, exc)]
                for failed, exc in failures or ():
                    self._report(failed, exc)

    def _report(self, item, exc: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(item, exc)

    def wait_idle(self, timeout: float) -> bool:
        """Block until the queue is empty, no item is being processed and none is pending; False on timeout."""
        deadline = time.monotonic() + timeout
        if not self.queue.join(timeout):
            return False
        while self.pending():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return self.queue.join(max(deadline - time.monotonic(), 0.0))

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.queue.close()
        if self._thread.is_alive():
            self._thread.join(timeout)
