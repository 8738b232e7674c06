"""Deprecated: moved to :mod:`mirage_ros.core.model_loading` (padding to 1 + 4k frames: :mod:`mirage_ros.core.goals`)."""

import warnings

from mirage_ros.core.goals import padded_length as rollout_length  # noqa: F401
from mirage_ros.core.model_loading import *  # noqa: F401,F403
from mirage_ros.core.model_loading import __all__ as _moved
from mirage_ros.core.model_loading import world_model_from_params as load_world_model  # noqa: F401

__all__ = [*_moved, "load_world_model", "rollout_length"]

warnings.warn("mirage_ros.node_model is deprecated; import from mirage_ros.core.model_loading",
              DeprecationWarning, stacklevel=2)
