"""mirage_ros.sync: approximate-time pairing by stamp, bounded slop and queues."""

from __future__ import annotations

import threading
from types import SimpleNamespace as NS

import pytest

from mirage_ros.sync import ApproximateTimeSync

MS = 1_000_000  # ns per millisecond


def msg(stamp_ms: float, name: str = "") -> NS:
    ns = int(stamp_ms * MS)
    return NS(name=name, header=NS(stamp=NS(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)))


def test_pairs_within_slop_using_header_stamps():
    sync = ApproximateTimeSync(("rgb", "depth"), slop=0.01)
    assert sync.add("rgb", msg(1000, "rgb0")) is None
    matched = sync.add("depth", msg(1004, "depth0"))
    assert matched is not None
    assert matched["rgb"].name == "rgb0" and matched["depth"].name == "depth0"
    assert matched.stamps_ns == {"rgb": 1000 * MS, "depth": 1004 * MS} and matched.stamp_ns == 1000 * MS
    assert sync.pending() == {"rgb": 0, "depth": 0}


def test_no_pair_beyond_slop():
    sync = ApproximateTimeSync(("rgb", "depth"), slop=0.01)
    sync.add("rgb", msg(1000))
    assert sync.add("depth", msg(1020)) is None
    assert sync.pending() == {"rgb": 1, "depth": 1}


def test_picks_closest_and_drops_older_unmatched():
    sync = ApproximateTimeSync(("rgb", "depth"), slop=0.02)
    for t in (1000, 1033, 1066):
        sync.add("rgb", msg(t, f"rgb{t}"))
    matched = sync.add("depth", msg(1040, "d"))
    assert matched["rgb"].name == "rgb1033"
    assert sync.pending() == {"rgb": 1, "depth": 0}  # rgb1000 dropped as stale, rgb1066 kept
    assert sync.dropped == 1 and sync.emitted == 1
    assert sync.add("depth", msg(1070))["rgb"].name == "rgb1066"


def test_three_streams_with_camera_info():
    sync = ApproximateTimeSync(("rgb", "depth", "info"), slop=0.005)
    sync.add("rgb", msg(500))
    assert sync.add("depth", msg(502)) is None  # info still missing
    matched = sync.add("info", msg(500))
    assert set(matched.messages) == {"rgb", "depth", "info"}


def test_all_stamps_must_fit_in_slop_together():
    sync = ApproximateTimeSync(("a", "b", "c"), slop=0.010)
    sync.add("a", msg(100))
    sync.add("b", msg(108))
    assert sync.add("c", msg(92)) is None  # within 10 ms of b? no: 108 - 92 = 16 ms spread


def test_late_message_older_than_emitted_set_is_dropped():
    sync = ApproximateTimeSync(("rgb", "depth"), slop=0.005)
    sync.add("rgb", msg(1000))
    assert sync.add("depth", msg(1001)) is not None
    assert sync.add("rgb", msg(900)) is None
    assert sync.pending() == {"rgb": 0, "depth": 0} and sync.dropped == 1


def test_queues_are_bounded():
    sync = ApproximateTimeSync(("rgb", "depth"), slop=0.001, queue_size=3)
    for t in range(10):
        sync.add("rgb", msg(t * 100))
    assert sync.pending()["rgb"] == 3 and sync.dropped == 7
    assert sync.add("depth", msg(0)) is None  # its partner was evicted
    assert sync.add("depth", msg(900)) is not None


def test_callback_and_explicit_stamps():
    got = []
    sync = ApproximateTimeSync(("left", "right"), slop=0.0, callback=got.append)
    sync.add("left", "L", stamp_ns=5)
    sync.add("right", "R", stamp_ns=5)
    assert len(got) == 1 and got[0].messages == {"left": "L", "right": "R"}


def test_invalid_arguments():
    with pytest.raises(ValueError, match="two distinct"):
        ApproximateTimeSync(("rgb", "rgb"))
    with pytest.raises(ValueError, match="slop"):
        ApproximateTimeSync(("a", "b"), slop=-1)
    with pytest.raises(ValueError, match="queue_size"):
        ApproximateTimeSync(("a", "b"), queue_size=0)
    with pytest.raises(ValueError, match="unknown stream 'c'"):
        ApproximateTimeSync(("a", "b")).add("c", msg(0))


def test_concurrent_producers_emit_each_pair_once():
    sync = ApproximateTimeSync(("rgb", "depth"), slop=0.002, queue_size=2000)
    pairs = []
    lock = threading.Lock()

    def produce(key, offset_ms):
        for i in range(500):
            matched = sync.add(key, msg(i * 33 + offset_ms))
            if matched is not None:
                with lock:
                    pairs.append(matched.stamps_ns["rgb"])

    threads = [threading.Thread(target=produce, args=("rgb", 0)), threading.Thread(target=produce, args=("depth", 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(pairs) == len(set(pairs))  # no frame emitted twice
    assert len(pairs) >= 1
