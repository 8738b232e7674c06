"""What rendering returns: :class:`Frame` (views) and :class:`RayHits` (first hits of a bundle of rays)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

__all__ = ["Frame", "RayHits"]


@dataclass
class Frame:
    """One rendered view; :meth:`Scene.render_batch` returns the same fields with a leading T.

    rgb (3, H, W) float32 in [0, 1]; depth (H, W) float32 z-depth in metres, ``inf`` on sky;
    dynamic (H, W) bool, True where the first hit is a moving object; intrinsics (3, 3) at (H, W);
    cam_to_world (4, 4).
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    dynamic: torch.Tensor
    intrinsics: torch.Tensor
    cam_to_world: torch.Tensor

    def __len__(self) -> int:
        if self.rgb.ndim != 4:
            raise TypeError("len() of a single Frame; only batched frames (leading T) have a length")
        return self.rgb.shape[0]

    def __getitem__(self, index) -> Frame:
        """Index or slice the leading T of a batched frame."""
        if self.rgb.ndim != 4:
            raise TypeError("only batched frames (leading T) can be indexed")
        return Frame(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device) -> Frame:
        return Frame(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def sky(self) -> torch.Tensor:
        """(…, H, W) bool: rays that hit nothing (depth inf)."""
        return torch.isinf(self.depth)


@dataclass
class RayHits:
    """First hits of a bundle of rays (…) from :meth:`Scene.cast_rays`.

    distance (…): ray parameter of the hit in units of the direction's length (inf on sky);
    rgb (…, 3) in [0, 1]; dynamic (…) bool; surface (…) long: -1 sky, 0..5 room faces
    (x-, x+, y-, y+, floor, ceiling), 6 + k object k of :attr:`Scene.objects`.
    """

    distance: torch.Tensor
    rgb: torch.Tensor
    dynamic: torch.Tensor
    surface: torch.Tensor
