"""The written contract of a spatial memory: what the world model, trainer, evaluator and node program against.

Two implementations: :class:`~mirage.memory.LatentSpatialMemory` (the paper's latent memory, Eq. 3-6) and
:class:`~mirage.memory.RGBPointCloudMemory` (the RGB point-cloud baseline, Eq. 1-2). Callers never ask
which one they hold: both are observed with frames (``observe_batch``) and read into latents
(``read_batch``); ``stats()["kind"]`` says which for logs and tables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import torch

__all__ = ["Readout", "SpatialMemory", "Encoder"]

Encoder = Callable[[torch.Tensor], torch.Tensor]
"""Images (T, 3, H, W) in [0, 1] -> latents (T, C, h, w) (e.g. ``MirageWorldModel.encode_images``)."""


@dataclass
class Readout:
    """Memory seen from T cameras (unbatched, without the leading T, from the single-view ``read``)."""

    features: torch.Tensor  # (T, C, h, w) | (C, h, w), memory dtype; zeros where unseen
    mask: torch.Tensor  # (T, h, w) | (h, w) bool, True where a stored point is visible
    depth: torch.Tensor  # (T, h, w) | (h, w) float32 camera z of the kept point; 0 where unseen


@runtime_checkable
class SpatialMemory(Protocol):
    """A world-space memory of observed frames, read back as latents on the target cameras' latent grid.

    Conventions (:mod:`mirage.camera`): cam_to_world (T, 4, 4) OpenCV optical frame; intrinsics in pixels
    at ``image_size`` (H, W), pixel centres at +0.5; depth in metres, <= 0 / NaN / inf is "no depth".
    Bad input raises ValueError and leaves the memory unchanged. Updates are copy-on-write: a read on
    another thread sees the memory before or after an update, never half of one (one writer at a time).
    """

    channels: int  # C of Readout.features (the world model's latent channels)
    dtype: torch.dtype  # dtype of Readout.features
    device: torch.device
    version: int  # increases on every change
    frames_inserted: int

    def __len__(self) -> int:
        """Number of stored points."""

    def read_batch(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: tuple[int, int],
                   latent_size: tuple[int, int], near: float = 1e-3) -> Readout:
        """T views: intrinsics (3, 3) | (T, 3, 3) at ``image_size`` (H, W); cam_to_world (T, 4, 4).

        Returns features (T, C, h, w), mask (T, h, w), depth (T, h, w) on the (h, w) = ``latent_size`` grid;
        points with camera z <= ``near`` are ignored.
        """

    def observe_batch(self, rgb: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor,
                      cam_to_world: torch.Tensor, exclude: torch.Tensor | None = None, *,
                      encode: Encoder | None = None, latents: torch.Tensor | None = None) -> int:
        """Store T frames, in order (a later frame is newer). Returns the number of cells / points written.

        rgb (T, 3, H, W) in [0, 1]; depth (T, H, W) metres; intrinsics (3, 3) | (T, 3, 3) at (H, W);
        cam_to_world (T, 4, 4); exclude (T, H, W) bool (True: never store) or None.
        A latent memory stores ``latents`` (T, C, h, w) when given (e.g. a chunk's denoised latents), else
        ``encode(rgb)``; ValueError if neither. An RGB memory stores the pixels and ignores both.
        Inputs are validated before ``encode`` is called.
        """

    def copy(self) -> "SpatialMemory":
        """O(1) independent snapshot: later updates of either never show in the other (scratch for imagination)."""

    def coverage(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: tuple[int, int],
                 latent_size: tuple[int, int]) -> torch.Tensor:
        """(T,) float32: fraction of the latent cells of each view where a stored point is visible
        (the mean of ``read_batch(...).mask``, computed without reading features)."""

    def clear(self) -> None:
        """Forget every point (counters restart; ``version`` still increases)."""

    def stats(self) -> dict:
        """Always: points, bytes, channels, version, frames_inserted, kind ("latent" | "rgb")."""

    def save(self, path: str | os.PathLike) -> None:
        """Write to a .safetensors file, atomically (temp file, then rename)."""

    @classmethod
    def load(cls, path: str | os.PathLike, device=None) -> "SpatialMemory":
        """Read a file written by ``save``; ValueError if it is corrupt, truncated or of another kind."""
