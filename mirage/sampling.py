"""Deprecated: flow-matching sampling lives in :mod:`mirage.pipeline.sampling`."""

import warnings

from mirage.pipeline.sampling import make_scheduler, sample_chunk  # noqa: F401

warnings.warn("mirage.sampling is deprecated; import from mirage.pipeline.sampling", DeprecationWarning,
              stacklevel=2)

__all__ = ["make_scheduler", "sample_chunk"]
