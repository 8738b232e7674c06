"""mirage_ros.conversions.time: the one stamp reader and the one stamp writer, and nobody else converting."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest

from mirage_ros.conversions.time import NS_PER_SECOND, fill_header, ns_to_stamp, stamp_to_ns

PACKAGE = Path(__file__).resolve().parents[2] / "mirage_ros"


def test_reader_takes_every_time_type():
    assert stamp_to_ns(NS(sec=3, nanosec=7)) == 3_000_000_007
    assert stamp_to_ns(NS(nanoseconds=42)) == 42  # rclpy Time / Duration
    assert stamp_to_ns(5) == 5 and stamp_to_ns(np.int64(6)) == 6
    assert stamp_to_ns(1.5) == 1_500_000_000
    # epoch seconds as written in a dataset's text files come back exactly (float(s) * 1e9 is 128 ns off here)
    assert stamp_to_ns(1305031237.529735) == 1_305_031_237_529_735_000
    assert stamp_to_ns(np.float64(0.1) + np.float64(0.2)) == 300_000_000
    # a stamp past 2**53 ns stays exact as an int
    assert stamp_to_ns(NS(sec=1_795_000_000, nanosec=1)) == 1_795_000_000_000_000_001
    for bad in ("now", True, float("nan"), None):
        with pytest.raises(ValueError):
            stamp_to_ns(bad)


def test_writer_round_trips_into_any_time_class():
    class Time:  # the shape of rosbags' builtin_interfaces/msg/Time: every field given at construction
        def __init__(self, sec, nanosec):
            self.sec, self.nanosec = sec, nanosec

    t = ns_to_stamp(1_795_000_000_250_000_001, Time)
    assert (t.sec, t.nanosec) == (1_795_000_000, 250_000_001)
    assert stamp_to_ns(t) == 1_795_000_000_250_000_001
    with pytest.raises(ValueError, match=">= 0"):
        ns_to_stamp(-1, Time)


def test_fill_header_converts_numbers_and_keeps_messages():
    class Time:
        def __init__(self, sec=0, nanosec=0):
            self.sec, self.nanosec = sec, nanosec

    msg = NS(header=NS(stamp=Time(), frame_id=""))
    fill_header(msg, 2 * NS_PER_SECOND + 3, "cam")
    assert isinstance(msg.header.stamp, Time) and stamp_to_ns(msg.header.stamp) == 2 * NS_PER_SECOND + 3
    kept = Time(9, 9)
    fill_header(msg, kept, "odom")
    assert msg.header.stamp is kept and msg.header.frame_id == "odom"
    fill_header(msg, None, "map")
    assert msg.header.stamp is kept and msg.header.frame_id == "map"


def test_no_other_module_converts_stamps_by_hand():
    """Every stamp <-> ns conversion goes through conversions/time.py (one reader, one writer)."""
    by_hand = re.compile(r"\.nanosec\b|\bnanosec=|\.nanoseconds\b|\b1e9\b|\b1e-9\b|divmod\(")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "conversions" / "time.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if "``" not in code and by_hand.search(code):  # ``...`` marks a docstring mention
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
