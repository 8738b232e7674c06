"""One training / evaluation clip: frames with cameras, and optional depth and dynamic masks.

Every data source (RealEstate10K-format folders, synthetic scenes) yields :class:`Clip` objects, and the
trainer and evaluator only ever see this type. Conventions are those of :mod:`mirage.camera`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch

from mirage.camera import validate_intrinsics, validate_pose

__all__ = ["Clip", "collate_clips"]


@dataclass
class Clip:
    """A clip of ``T`` frames at ``(H, W)``.

    rgb: (T, 3, H, W) float32 in [0, 1].
    intrinsics: (T, 3, 3) float32 at (H, W), pixel centres at +0.5.
    cam_to_world: (T, 4, 4) float32, OpenCV optical frame.
    depth: (T, H, W) float32 metres (0 / NaN / inf = no depth) or None.
    dynamic: (T, H, W) bool, True on moving things that must not enter the memory, or None.
    name: identifier (file stem, scene seed, ...), used for caching and reports.
    """

    rgb: torch.Tensor
    intrinsics: torch.Tensor
    cam_to_world: torch.Tensor
    depth: torch.Tensor | None = None
    dynamic: torch.Tensor | None = None
    name: str = ""

    def __post_init__(self):
        self.validate()

    @property
    def num_frames(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.rgb.shape[-2]), int(self.rgb.shape[-1])

    def validate(self) -> None:
        """Raise ValueError naming the first field whose shape or values do not fit."""
        rgb = self.rgb
        if not isinstance(rgb, torch.Tensor) or rgb.ndim != 4 or rgb.shape[1] != 3 or not rgb.is_floating_point():
            raise ValueError(f"clip {self.name!r}: rgb must be a float (T, 3, H, W) tensor, got "
                             f"{tuple(getattr(rgb, 'shape', ()))}")
        T, _, H, W = rgb.shape
        if T == 0:
            raise ValueError(f"clip {self.name!r} has no frames")
        validate_intrinsics(self.intrinsics, "intrinsics")
        validate_pose(self.cam_to_world, "cam_to_world")
        if tuple(self.intrinsics.shape) != (T, 3, 3):
            raise ValueError(f"clip {self.name!r}: intrinsics must be ({T}, 3, 3), got {tuple(self.intrinsics.shape)}")
        if tuple(self.cam_to_world.shape) != (T, 4, 4):
            raise ValueError(f"clip {self.name!r}: cam_to_world must be ({T}, 4, 4), got "
                             f"{tuple(self.cam_to_world.shape)}")
        if self.depth is not None and (tuple(self.depth.shape) != (T, H, W) or not self.depth.is_floating_point()):
            raise ValueError(f"clip {self.name!r}: depth must be float ({T}, {H}, {W}), got "
                             f"{tuple(self.depth.shape)} {self.depth.dtype}")
        if self.dynamic is not None and (tuple(self.dynamic.shape) != (T, H, W) or self.dynamic.dtype != torch.bool):
            raise ValueError(f"clip {self.name!r}: dynamic must be bool ({T}, {H}, {W}), got "
                             f"{tuple(self.dynamic.shape)} {self.dynamic.dtype}")

    def select(self, indices: Sequence[int] | torch.Tensor) -> "Clip":
        """The frames at ``indices`` (in that order) as a new clip."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        if idx.ndim != 1 or idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= self.num_frames:
            raise ValueError(f"clip {self.name!r}: frame indices {idx.tolist()} out of range [0, {self.num_frames})")
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return replace(self, rgb=self.rgb[idx], intrinsics=self.intrinsics[idx], cam_to_world=self.cam_to_world[idx],
                       depth=pick(self.depth), dynamic=pick(self.dynamic))


def collate_clips(clips: Sequence[Clip]) -> dict:
    """Stack clips of equal size into a batch dict: rgb (B,T,3,H,W), intrinsics (B,T,3,3), cam_to_world
    (B,T,4,4), depth (B,T,H,W) (NaN where a clip has none), dynamic (B,T,H,W) bool, name list[str]."""
    if not clips:
        raise ValueError("cannot collate an empty list of clips")
    shapes = {tuple(c.rgb.shape) for c in clips}
    if len(shapes) != 1:
        raise ValueError(f"clips in a batch must share (T, 3, H, W), got {sorted(shapes)}")
    T, _, H, W = clips[0].rgb.shape
    nan_depth = torch.full((T, H, W), float("nan"))
    no_dynamic = torch.zeros((T, H, W), dtype=torch.bool)
    return {
        "rgb": torch.stack([c.rgb for c in clips]),
        "intrinsics": torch.stack([c.intrinsics for c in clips]),
        "cam_to_world": torch.stack([c.cam_to_world for c in clips]),
        "depth": torch.stack([c.depth if c.depth is not None else nan_depth for c in clips]),
        "dynamic": torch.stack([c.dynamic if c.dynamic is not None else no_dynamic for c in clips]),
        "name": [c.name for c in clips],
    }
