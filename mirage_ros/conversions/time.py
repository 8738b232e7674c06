"""Time stamps: the one reader (anything -> int nanoseconds) and the one writer (int nanoseconds -> a message).

Stamps stay integer nanoseconds inside mirage_ros: a float of epoch seconds cannot hold them exactly
(2**53 ns is 104 days). Every module that reads a ``header.stamp``, a TF time or a clock, and every one that
writes a ``builtin_interfaces/Time`` (rclpy or ``rosbags`` message class), goes through these two functions.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import numpy as np

__all__ = ["NS_PER_SECOND", "stamp_to_ns", "ns_to_stamp", "ns_to_seconds", "fill_header"]

NS_PER_SECOND = 1_000_000_000


def stamp_to_ns(t: Any) -> int:
    """int nanoseconds | float seconds | rclpy ``Time`` / ``Duration`` (``.nanoseconds``) |
    builtin_interfaces/Time (``.sec``, ``.nanosec``; rclpy or rosbags) -> int nanoseconds.

    Raises ValueError for anything else (a bool, a non-finite float, a string, ...).
    """
    if isinstance(t, (bool, np.bool_)):
        raise ValueError("a time cannot be a bool")
    if isinstance(t, (int, np.integer)):
        return int(t)
    if isinstance(t, (float, np.floating)):
        if not np.isfinite(t):
            raise ValueError(f"time must be finite, got {t}")
        # through the float's shortest decimal form: epoch seconds such as 1305031237.529735 (TUM, CSV logs) come
        # back as the nanoseconds they were written with; t * 1e9 in float64 would be off by up to 128 ns
        return int(Decimal(repr(float(t))).scaleb(9).to_integral_value(ROUND_HALF_EVEN))
    if hasattr(t, "nanoseconds"):
        return int(t.nanoseconds)
    if hasattr(t, "sec") and hasattr(t, "nanosec"):
        return int(t.sec) * NS_PER_SECOND + int(t.nanosec)
    raise ValueError(f"cannot read a time stamp from {type(t).__name__}")


def ns_to_seconds(ns: int) -> float:
    """int nanoseconds -> float seconds (for tables and plots; keep int ns for arithmetic)."""
    return int(ns) / NS_PER_SECOND


def ns_to_stamp(ns: int, msg_type: type | None = None) -> Any:
    """int nanoseconds (>= 0) -> builtin_interfaces/Time, or ``msg_type(sec=..., nanosec=...)`` (e.g. the
    rosbags class ``typestore.types["builtin_interfaces/msg/Time"]``)."""
    ns = stamp_to_ns(ns)
    if ns < 0:
        raise ValueError(f"time stamps must be >= 0, got {ns} ns")
    if msg_type is None:
        from builtin_interfaces.msg import Time as msg_type
    sec, nanosec = divmod(ns, NS_PER_SECOND)
    return msg_type(sec=int(sec), nanosec=int(nanosec))


def fill_header(msg: Any, stamp: Any, frame_id: str) -> None:
    """Set ``msg.header``: ``stamp`` a Time message (kept as is), int nanoseconds or float seconds (converted to
    the header's own Time class), or None (left as it is)."""
    if stamp is not None:
        if isinstance(stamp, (int, np.integer, float, np.floating)) and not isinstance(stamp, (bool, np.bool_)):
            stamp = ns_to_stamp(stamp_to_ns(stamp), type(msg.header.stamp))
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
