"""The point store under every memory: points with one value row each, bounded by voxel dedup and a capacity.

A store is never edited in place: :meth:`PointStore.merged` returns a new store, so a memory commits an
update with one assignment (copy-on-write) and a snapshot (``memory.copy()``) shares the old one for free.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["voxel_keys", "PointStore", "NEUTRAL_GREY"]

_VOXEL_BITS = 21  # per axis; three axes fill 63 bits of an int64
_VOXEL_RANGE = 2 ** (_VOXEL_BITS - 1)
NEUTRAL_GREY = 128  # the colour of a point stored without an observed colour (uint8, all three channels)


def voxel_keys(points: torch.Tensor, voxel_size: float) -> torch.Tensor:
    """Integer voxel coordinates of (N, 3) points packed into (N,) int64 keys (21 bits per axis).

    Raises ValueError for points beyond +-2^20 voxels of the origin (about 52 km at 5 cm voxels).
    """
    coords = torch.floor(points.double() / voxel_size)
    if coords.numel() and coords.abs().max() >= _VOXEL_RANGE:
        raise ValueError(f"points lie more than {_VOXEL_RANGE} voxels ({_VOXEL_RANGE * voxel_size:.4g} m) from "
                         "the world origin; use a larger voxel_size or recentre the world frame")
    c = (coords.to(torch.int64) + _VOXEL_RANGE)
    return (c[:, 0] << (2 * _VOXEL_BITS)) | (c[:, 1] << _VOXEL_BITS) | c[:, 2]


def _contains(keys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """(Q,) bool: whether each query is in ``keys`` (M,). O(Q log M), cheap for the few new keys of
    one insert against many stored points (torch.isin sorts both sides)."""
    if keys.numel() == 0:
        return torch.zeros_like(queries, dtype=torch.bool)
    sorted_keys = torch.sort(keys).values
    pos = torch.searchsorted(sorted_keys, queries).clamp_(max=keys.numel() - 1)
    return sorted_keys[pos] == queries


def _stable_argsort(x: torch.Tensor) -> torch.Tensor:
    return torch.sort(x, stable=True).indices


@dataclass(frozen=True)
class PointStore:
    """N points, one value row each, kept in write order (oldest first).

    points (N, 3) float32; values (N, C) any dtype; stamps (N,) int32 frame counter of the write;
    keys (N,) int64 voxel keys (empty when voxel_size is None); colors (N, 3) uint8 observed colour of
    each point, or None for a store whose values are the colours (the RGB memory).

    Growth rules (:meth:`merged`):
      * voxel dedup: a new point replaces every stored point in its voxel (newer observation wins);
        among new points sharing a voxel, the newest frame wins, then the smallest ``priority``
        (camera depth: the nearest observation), then the lowest position in the input.
      * capacity: beyond ``max_points`` the least recently written points are evicted first; within
        one frame, the earliest stored (lowest index) go first. Storage order is write order, so
        eviction drops a prefix.
    """

    points: torch.Tensor
    values: torch.Tensor
    stamps: torch.Tensor
    keys: torch.Tensor
    colors: torch.Tensor | None = None

    @classmethod
    def empty(cls, channels: int, device=None, dtype=torch.float32, with_colors: bool = False) -> "PointStore":
        return cls(
            points=torch.zeros(0, 3, dtype=torch.float32, device=device),
            values=torch.zeros(0, channels, dtype=dtype, device=device),
            stamps=torch.zeros(0, dtype=torch.int32, device=device),
            keys=torch.zeros(0, dtype=torch.int64, device=device),
            colors=torch.zeros(0, 3, dtype=torch.uint8, device=device) if with_colors else None,
        )

    def __len__(self) -> int:
        return self.points.shape[0]

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        base = (self.points, self.values, self.stamps, self.keys)
        return base if self.colors is None else (*base, self.colors)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._tensors())

    def to(self, device=None, dtype=None) -> "PointStore":
        return PointStore(self.points.to(device), self.values.to(device=device, dtype=dtype),
                          self.stamps.to(device), self.keys.to(device),
                          None if self.colors is None else self.colors.to(device))

    def merged(
        self, points: torch.Tensor, values: torch.Tensor, stamps: torch.Tensor, priority: torch.Tensor,
        voxel_size: float | None, max_points: int | None, colors: torch.Tensor | None = None,
    ) -> tuple["PointStore", int]:
        """New store with (M, 3) points / (M, C) values / (M,) stamps [/ (M, 3) uint8 colors] added; self is
        not modified. ``colors`` is required exactly when this store keeps colours.

        Stamps must be >= every stored stamp and non-decreasing along M (frames in time order).
        Returns (store, number of new points kept after dedup within the new batch).
        """
        if (colors is None) != (self.colors is None):
            raise ValueError("colors must be given exactly when the store keeps colours")
        if voxel_size is not None:
            keys = voxel_keys(points, voxel_size)
            # Lexicographic (key, -stamp, priority, index) via stable sorts, least significant first.
            order = _stable_argsort(priority)
            order = order[_stable_argsort(-stamps[order].to(torch.int64))]
            order = order[_stable_argsort(keys[order])]
            sorted_keys = keys[order]
            first = torch.ones_like(sorted_keys, dtype=torch.bool)
            first[1:] = sorted_keys[1:] != sorted_keys[:-1]
            chosen = torch.sort(order[first]).values  # back to input (write) order
            keys = keys[chosen]
            points, values, stamps = points[chosen], values[chosen], stamps[chosen]
            colors = None if colors is None else colors[chosen]
            keep_old = ~_contains(keys, self.keys)
            if bool(keep_old.all()):
                keep_old = None  # nothing replaced: skip the masked copy
        else:
            keys = self.keys[:0]
            keep_old = None

        def grow(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            if keep_old is not None:
                old = old[keep_old]
            return torch.cat([old, new.to(device=old.device, dtype=old.dtype)])

        out = PointStore(grow(self.points, points), grow(self.values, values), grow(self.stamps, stamps),
                         grow(self.keys, keys) if voxel_size is not None else self.keys,
                         None if colors is None else grow(self.colors, colors))
        if max_points is not None and len(out) > max_points:
            out = out.tail(max_points)
        return out, points.shape[0]

    def tail(self, n: int) -> "PointStore":
        """The n most recently written points."""
        start = max(len(self) - n, 0)
        return PointStore(self.points[start:], self.values[start:], self.stamps[start:], self.keys[start:],
                          None if self.colors is None else self.colors[start:])
