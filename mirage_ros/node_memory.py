"""Deprecated: moved to :mod:`mirage_ros.core.memory_holder` (this module re-exports it for one release)."""

import warnings

from mirage_ros.core.memory_holder import *  # noqa: F401,F403
from mirage_ros.core.memory_holder import __all__  # noqa: F401

warnings.warn("mirage_ros.node_memory is deprecated; import from mirage_ros.core.memory_holder", DeprecationWarning, stacklevel=2)
