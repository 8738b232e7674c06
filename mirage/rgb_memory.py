"""Deprecated: the RGB baseline is :class:`mirage.memory.RGBPointCloudMemory` (one class, holding its encoder).

:class:`RGBCacheMemory` keeps the old ``RGBCacheMemory(cache, encoder, channels)`` constructor and the
``stores_pixels`` flag that callers written before :class:`~mirage.memory.SpatialMemory` test for.
"""

from __future__ import annotations

import warnings

from mirage.memory.protocol import Encoder
from mirage.memory.rgb import RGBPointCloudMemory

warnings.warn("mirage.rgb_memory is deprecated; use mirage.memory.RGBPointCloudMemory(encoder, channels)",
              DeprecationWarning, stacklevel=2)

__all__ = ["RGBCacheMemory"]


class RGBCacheMemory(RGBPointCloudMemory):
    """``RGBCacheMemory(cache, encoder, channels)``: an :class:`RGBPointCloudMemory` that starts from ``cache``'s
    contents and bounds (an O(1) snapshot: later inserts go to this memory, not to ``cache``)."""

    stores_pixels = True  # read by callers written before SpatialMemory.observe_batch

    def __init__(self, cache: RGBPointCloudMemory, encoder: Encoder, channels: int = 48):
        super().__init__(encoder, channels, cache.voxel_size, cache.max_points, cache.device)
        self._store, self.frames_inserted, self.version = cache._store, cache.frames_inserted, cache.version

    @property
    def cache(self) -> "RGBCacheMemory":
        """The old wrapper's ``.cache``: this memory renders and stores itself."""
        return self
