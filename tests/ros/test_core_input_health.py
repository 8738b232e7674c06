"""mirage_ros.core.input_health: lost samples, TF lag and expirations become one throttled warning naming the fix."""

from __future__ import annotations

from mirage_ros.core.input_health import TRANSPORT_FIX, InputHealth


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_a_bad_window_gives_one_warning_with_the_fix():
    clock = Clock()
    health = InputHealth(period=10.0, tf_lag_warn=0.1, clock=clock)
    health.message_lost("/rgb/image", 20)
    health.message_lost("/depth/image", 17)
    health.message_lost("/depth/image", 0)
    for lag in (1.1, 0.9, 1.3):
        health.tf_lag("front", lag)
    health.expired(4)
    assert health.warning() is None  # the window is not over
    clock.t = 10.0
    line = health.warning(context="DDS: loading x.xml")
    assert "37 samples lost below rclpy" in line and "/depth/image 17" in line and "/rgb/image 20" in line
    assert "1.10 s (median, camera front)" in line and "4 sets found no pose within tf_hold" in line
    assert TRANSPORT_FIX in line and line.endswith("DDS: loading x.xml")
    assert health.lost_total == {"/rgb/image": 20, "/depth/image": 17}
    clock.t = 20.0
    assert health.warning() is None  # a clean window says nothing


def test_small_lag_is_fine_and_warnings_are_throttled():
    clock = Clock()
    health = InputHealth(period=10.0, clock=clock)
    health.tf_lag("front", 0.03)
    clock.t = 10.0
    assert health.warning() is None
    health.message_lost("/rgb/image", 1)
    clock.t = 20.0
    assert health.warning() is not None
    health.message_lost("/rgb/image", 1)
    clock.t = 25.0
    assert health.warning() is None  # window not over
    clock.t = 30.0
    assert "1 samples lost" in health.warning()
