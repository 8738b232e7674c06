"""Deprecated: moved to :mod:`mirage_ros.core.goal_poses` (this module re-exports it for one release)."""

import warnings

from mirage_ros.core.goal_poses import *  # noqa: F401,F403
from mirage_ros.core.goal_poses import __all__  # noqa: F401

warnings.warn("mirage_ros.node_imagine is deprecated; import from mirage_ros.core.goal_poses", DeprecationWarning, stacklevel=2)
