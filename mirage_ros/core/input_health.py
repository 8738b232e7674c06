"""What the transport does to the input before the node sees it, said in one throttled warning (no ROS).

Two measured failure modes of large images between processes (issue 11): Fast DDS drops samples that do not fit
its shared-memory segment (the subscription's DDS "message lost" events count them), and /tf, reliable over the
same transport, stalls until the writer's next heartbeat, so the newest transform lags the images by up to
seconds and frames find no pose. :class:`InputHealth` counts both (plus the sets that expired in the pose hold)
and :meth:`InputHealth.warning` turns a bad window into one line that names the fix, at most once per ``period``.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np

__all__ = ["InputHealth", "TRANSPORT_FIX"]

TRANSPORT_FIX = ("large images overflow Fast DDS's default 512 KB shared-memory segment and /tf stalls behind "
                 "them: load config/fastdds_large_data.xml in the camera driver's process as well as this node's "
                 "(export FASTDDS_DEFAULT_PROFILES_FILE=<mirage_ros share>/config/fastdds_large_data.xml; README "
                 "'Large images over DDS')")


class InputHealth:
    """Counters of lost samples (per topic), TF lag samples and pose-hold expirations, by window.

    Args:
        period: seconds between warnings (and the window they describe).
        tf_lag_warn: a median TF lag above this many seconds is worth a warning.
        clock: monotonic seconds.
    Thread-safe: the input thread reports lost samples, the watchdog samples TF lag and asks for the warning.
    """

    def __init__(self, period: float = 10.0, tf_lag_warn: float = 0.1, clock: Callable[[], float] = time.monotonic):
        self.period, self.tf_lag_warn, self.clock = float(period), float(tf_lag_warn), clock
        self._lock = threading.Lock()
        self.lost_total: dict[str, int] = {}
        self._lost: dict[str, int] = {}
        self._lags: dict[str, list[float]] = {}
        self._expired = 0
        self._window_start = clock()
        self._warned_at = float("-inf")

    def message_lost(self, topic: str, count_change: int) -> None:
        """A DDS message-lost event on ``topic`` (``total_count_change`` samples)."""
        if count_change <= 0:
            return
        with self._lock:
            self._lost[topic] = self._lost.get(topic, 0) + int(count_change)
            self.lost_total[topic] = self.lost_total.get(topic, 0) + int(count_change)

    def tf_lag(self, camera: str, seconds: float) -> None:
        """How far the newest transform of ``camera``'s pose chain is behind its newest paired set (s)."""
        with self._lock:
            self._lags.setdefault(camera, []).append(float(seconds))

    def expired(self, count: int) -> None:
        """``count`` sets expired in the pose hold."""
        with self._lock:
            self._expired += int(count)

    def warning(self, fix: str = TRANSPORT_FIX, context: str = "") -> str | None:
        """The warning for the window that just ended, or None (nothing bad, or warned less than ``period`` ago).

        Each call after ``period`` starts a new window. ``context`` (e.g. what this process did about DDS) ends it.
        """
        now = self.clock()
        with self._lock:
            if now - self._window_start < self.period:
                return None
            seconds = now - self._window_start
            lost, lags, expired = self._lost, self._lags, self._expired
            self._lost, self._lags, self._expired, self._window_start = {}, {}, 0, now
        problems = []
        if lost:
            per_topic = ", ".join(f"{topic} {n}" for topic, n in sorted(lost.items()))
            problems.append(f"{sum(lost.values())} samples lost below rclpy (DDS message-lost events: {per_topic})")
        late = {cam: float(np.median(v)) for cam, v in lags.items() if v and np.median(v) > self.tf_lag_warn}
        if late:
            problems.append("TF lags the images by " + ", ".join(f"{s:.2f} s (median, camera {cam or 'default'})"
                                                                 for cam, s in sorted(late.items())))
        if expired:
            problems.append(f"{expired} sets found no pose within tf_hold")
        if not problems or now - self._warned_at < self.period:
            return None
        self._warned_at = now
        line = f"input in the last {seconds:.0f} s: " + "; ".join(problems) + f". Likely fix: {fix}"
        return f"{line}. {context}" if context else line
