"""Deprecated: moved to :mod:`mirage_ros.bags.write` (this module re-exports it for one release)."""

import warnings

from mirage_ros.bags.write import BAG_TOPICS, typestore, write_rig_bag  # noqa: F401

__all__ = ["BAG_TOPICS", "write_rig_bag", "typestore"]

warnings.warn("mirage_ros.bag_writer is deprecated; import from mirage_ros.bags.write", DeprecationWarning,
              stacklevel=2)
