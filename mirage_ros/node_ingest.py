"""Deprecated: moved to :mod:`mirage_ros.core.ingest`, :mod:`mirage_ros.core.queue` and :mod:`mirage.frames`."""

import warnings

from mirage.frames import KeyframeSelector, fit_to_size  # noqa: F401
from mirage_ros.core.ingest import FrameIngestor, FramePair, IngestStats, TransformUnavailable  # noqa: F401
from mirage_ros.core.queue import IngestWorker, KeepLatestQueue  # noqa: F401

__all__ = ["KeepLatestQueue", "KeyframeSelector", "IngestStats", "IngestWorker", "FrameIngestor", "FramePair",
           "TransformUnavailable", "fit_to_size"]

warnings.warn("mirage_ros.node_ingest is deprecated; import from mirage_ros.core.ingest, mirage_ros.core.queue "
              "or mirage.frames", DeprecationWarning, stacklevel=2)
