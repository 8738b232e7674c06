"""Deprecated: moved to :mod:`mirage_ros.sim.rig` (this module re-exports it for one release)."""

import warnings

from mirage_ros.sim.rig import *  # noqa: F401,F403
from mirage_ros.sim.rig import __all__  # noqa: F401

warnings.warn("mirage_ros.synthetic_rig is deprecated; import from mirage_ros.sim.rig", DeprecationWarning,
              stacklevel=2)
