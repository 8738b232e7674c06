"""Deprecated: moved to :mod:`mirage_ros.params` (this module re-exports it for one release)."""

import warnings

from mirage_ros.params import *  # noqa: F401,F403
from mirage_ros.params import __all__  # noqa: F401

warnings.warn("mirage_ros.node_params is deprecated; import from mirage_ros.params", DeprecationWarning, stacklevel=2)
