"""Deprecated: the world model lives in :mod:`mirage.pipeline` (``from mirage.pipeline import MirageWorldModel``)."""

import warnings

from mirage.pipeline import (  # noqa: F401
    CONFIG_NAME,
    CancelToken,
    MirageWorldModel,
    RolloutCancelled,
    RolloutProgress,
    RolloutResult,
    WorldModelConfig,
    window_relative_poses,
)

warnings.warn("mirage.world_model is deprecated; import from mirage.pipeline", DeprecationWarning, stacklevel=2)

__all__ = ["MirageWorldModel", "WorldModelConfig", "CancelToken", "RolloutCancelled", "RolloutProgress",
           "RolloutResult", "window_relative_poses", "CONFIG_NAME"]
