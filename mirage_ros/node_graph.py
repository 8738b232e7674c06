"""Deprecated: moved to :mod:`mirage_ros.run` (this module re-exports it for one release)."""

import warnings

from mirage_ros.run import LocalGraph, wait_future  # noqa: F401

__all__ = ["LocalGraph", "wait_future"]

warnings.warn("mirage_ros.node_graph is deprecated; import from mirage_ros.run", DeprecationWarning, stacklevel=2)
