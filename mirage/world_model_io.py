"""Deprecated: config and loading live in :mod:`mirage.pipeline.config` and :mod:`mirage.pipeline.loading`."""

import warnings

from mirage.pipeline.config import CONFIG_NAME, WorldModelConfig  # noqa: F401
from mirage.pipeline.loading import (  # noqa: F401
    ASSETS,
    PART_PATHS,
    SHIPPED,
    build_transformer,
    depth_provider_from_name,
    load_parts,
    resolve_pretrained,
)

warnings.warn("mirage.world_model_io is deprecated; import from mirage.pipeline.config / mirage.pipeline.loading",
              DeprecationWarning, stacklevel=2)

__all__ = ["CONFIG_NAME", "WorldModelConfig", "resolve_pretrained", "build_transformer", "load_parts",
           "depth_provider_from_name", "PART_PATHS", "SHIPPED"]
