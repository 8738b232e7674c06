"""Memories for the controls of ``mirage eval``: the same points with other features.

:func:`shuffled_memory` keeps every point and the multiset of features but moves each feature to another point
(one random cycle through all points, fixed seed, so no point keeps its own): if a method does as well with it,
it did not use what the memory holds where.

:func:`memory_with_features` is the one place that builds a memory from given points and features. The memory's
public API reads ``memory.points`` / ``memory.features`` but has no writer for them, so this helper swaps the
value rows of a copy's point store (``_store``, a :class:`mirage.memory.store.PointStore`); adapt it here, and only
here, if the memory's storage changes.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch

__all__ = ["SHUFFLE_SEED", "shuffle_permutation", "memory_with_features", "shuffled_memory"]

SHUFFLE_SEED = 0


def shuffle_permutation(num_points: int, seed: int = SHUFFLE_SEED) -> torch.Tensor:
    """(N,) long ``source``: point ``i`` receives the feature of point ``source[i]``; a single N-cycle, so
    ``source[i] != i`` for every i when N >= 2. Deterministic in ``seed``."""
    if num_points < 0:
        raise ValueError(f"num_points must be >= 0, got {num_points}")
    order = torch.randperm(num_points, generator=torch.Generator().manual_seed(int(seed)))
    source = torch.empty(num_points, dtype=torch.long)
    source[order] = order.roll(-1)  # order[k] takes the feature of order[k + 1]
    return source


def memory_with_features(memory, features: torch.Tensor):
    """A copy of ``memory`` (a :class:`~mirage.memory.LatentSpatialMemory`) with the same points and
    ``features`` (N, C) in their place; ``memory`` is unchanged."""
    current = memory.features
    if not isinstance(features, torch.Tensor) or tuple(features.shape) != tuple(current.shape):
        raise ValueError(f"features must be {tuple(current.shape)} (one row per point), got "
                         f"{tuple(getattr(features, 'shape', ()))}")
    # The mirage.memory package's copy() is an O(1) snapshot sharing the immutable store; older memories deep-copy.
    out = memory.copy() if hasattr(memory, "copy") else copy.deepcopy(memory)
    out._store = replace(out._store, values=features.to(current.device, current.dtype).clone())
    out.version += 1
    return out


def shuffled_memory(memory, seed: int = SHUFFLE_SEED):
    """A copy of ``memory`` whose features are permuted among its points by :func:`shuffle_permutation`."""
    source = shuffle_permutation(len(memory), seed).to(memory.features.device)
    return memory_with_features(memory, memory.features[source])
