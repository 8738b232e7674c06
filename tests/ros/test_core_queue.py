"""mirage_ros.core.queue: the keep-latest queue never grows or blocks; the worker survives bad items and drains."""

from __future__ import annotations

import threading
import time

from mirage_ros.core.queue import IngestWorker, KeepLatestQueue


def test_keep_latest_queue_drops_oldest_and_never_grows():
    q = KeepLatestQueue(2)
    for i in range(10):
        q.put(i)
    assert len(q) == 2 and q.dropped == 8 and q.high_water == 2
    assert [q.get(0), q.get(0), q.get(0)] == [8, 9, None]


def test_worker_survives_errors_and_drains():
    q, seen, errors = KeepLatestQueue(100), [], []

    def process(item):
        if item == 3:
            raise ValueError("bad frame")
        time.sleep(0.001)
        seen.append(item)

    worker = IngestWorker(q, process, on_error=lambda item, exc: errors.append((item, str(exc)))).start()
    try:
        for i in range(6):
            q.put(i)
        assert worker.wait_idle(5.0)
        assert seen == [0, 1, 2, 4, 5] and errors == [(3, "bad frame")]
    finally:
        worker.stop()


def test_slow_consumer_does_not_build_latency():
    q = KeepLatestQueue(1)
    gate, done = threading.Event(), []
    worker = IngestWorker(q, lambda item: (gate.wait(10.0), done.append(item))).start()
    try:
        for i in range(50):  # the consumer is stuck: everything but the newest is dropped
            q.put(i)
        gate.set()
        assert worker.wait_idle(5.0)
    finally:
        worker.stop()
    assert q.high_water == 1 and done[-1] == 49 and len(done) <= 2 and q.dropped >= 48


def test_queue_put_is_thread_safe():
    q = KeepLatestQueue(3)
    threads = [threading.Thread(target=lambda: [q.put(i) for i in range(200)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert q.pushed == 800 and len(q) == 3 and q.dropped == 797


def test_each_key_has_its_own_bound():
    q = KeepLatestQueue(1)
    for i in range(5):
        q.put(("front", i), key="front")
    q.put(("wrist", 0), key="wrist")  # a slow camera is never pushed out by a fast one
    q.put(("front", 5), key="front")
    assert len(q) == 2 and q.dropped == 5 and q.high_water == 1
    assert [q.get(0), q.get(0), q.get(0)] == [("wrist", 0), ("front", 5), None]


def test_wake_returns_a_waiting_get_and_the_worker_runs_its_idle_step():
    q = KeepLatestQueue(1)
    t0 = time.monotonic()
    threading.Timer(0.05, q.wake).start()
    assert q.get(timeout=5.0) is None and time.monotonic() - t0 < 2.0
    pending = [3]
    idle_calls, errors = [], []

    def idle():
        idle_calls.append(time.monotonic())
        if pending[0]:
            pending[0] -= 1
            return [("held", ValueError("expired"))] if pending[0] == 0 else []
        return []

    worker = IngestWorker(q, lambda item: None, on_error=lambda item, exc: errors.append((item, str(exc))),
                          idle=idle, pending=lambda: pending[0], tick=0.01).start()
    try:
        assert worker.wait_idle(5.0)  # waits for what idle() still owes
        assert pending[0] == 0 and errors == [("held", "expired")] and len(idle_calls) >= 3
    finally:
        worker.stop()
