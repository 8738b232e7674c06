"""ROS test setup: tests marked ``ros`` are skipped, with the reason, when rclpy or the built interfaces are missing.

The rclpy-free parts of mirage_ros (core, conversions, TF buffer, sync, bags) are tested without that marker and run
everywhere. ``scripts/test.sh`` builds the interfaces and sources ``scripts/env.sh`` first.
"""

from __future__ import annotations

import functools
import os

import pytest


@functools.lru_cache(maxsize=1)
def ros_unavailable_reason() -> str | None:
    """None when rclpy, mirage_ros's generated interfaces and tf2_msgs all import; otherwise why not."""
    try:
        import rclpy  # noqa: F401
    except Exception as exc:  # ImportError, or OSError from a missing shared library
        return f"rclpy is not importable ({exc.__class__.__name__}: {exc})"
    hint = "run scripts/bootstrap.sh and `source scripts/env.sh`"
    try:
        from mirage_ros.action import ImagineTrajectory  # noqa: F401
        from mirage_ros.msg import CacheStats  # noqa: F401
        from mirage_ros.srv import LoadCache, QueryCoverage, SaveCache  # noqa: F401
    except Exception as exc:
        return f"the mirage_ros interfaces are not built or not on the path ({exc}); {hint}"
    try:
        from tf2_msgs.msg import TFMessage  # noqa: F401
    except Exception as exc:
        return f"tf2_msgs is not importable ({exc}); {hint}"
    return None


def pytest_collection_modifyitems(config, items):
    reason = ros_unavailable_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if item.get_closest_marker("ros") is not None:  # not item.keywords: that holds the directory name "ros"
            item.add_marker(skip)


@pytest.fixture
def ros_context():
    """A fresh, initialised rclpy Context for one test (nodes and executors must be created with it)."""
    import rclpy

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        context.try_shutdown()
