"""mirage_ros.core.stage_times: per-stage durations and the bench's table (no ROS, no timing: fake clocks)."""

from __future__ import annotations

import pytest

from mirage_ros.core.stage_times import STAGES, StageTimes, format_stage_table


def test_summary_is_median_and_p95_per_stage_in_stage_order_and_since_skips_earlier_values():
    times = StageTimes(keep=100)
    for i in range(1, 101):
        times.add("fit", i * 1e-3)
        times.add("queue", 2e-3)
    times.add("custom", 1.0)
    summary = times.summary()
    assert list(summary) == ["queue", "fit", "custom"]  # STAGES order first, unknown names after
    n, p50, p95 = summary["fit"]
    assert n == 100 and p50 == pytest.approx(50.5e-3, abs=1e-12) and p95 == pytest.approx(95.05e-3, abs=1e-12)
    since = times.counts()
    times.add("fit", 7.0)
    assert times.summary(since)["fit"] == (1, 7.0, 7.0) and "queue" not in times.summary(since)


def test_keep_bounds_each_stage():
    times = StageTimes(keep=3)
    for i in range(10):
        times.add("encode", float(i))
    assert times.values("encode").tolist() == [7.0, 8.0, 9.0]


def test_table_has_a_row_per_stage_and_a_column_per_summary():
    a, b = StageTimes(), StageTimes()
    a.add("pose", 1e-3)
    b.add("pose", 2e-3)
    b.add("encode", 8e-3)
    table = format_stage_table({"every set": a.summary(), "keyframes": b.summary()}).splitlines()
    assert "every set" in table[0] and "keyframes" in table[0]
    rows = {line.split()[0]: line for line in table[1:]}
    assert set(rows) == {"pose", "encode"} and set(rows) <= set(STAGES)
    assert "1.00 / 1.00 (1)" in rows["pose"] and "2.00 / 2.00 (1)" in rows["pose"]
    assert "8.00 / 8.00 (1)" in rows["encode"] and " - " in rows["encode"] + " "
