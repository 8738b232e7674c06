"""Which pixels of a clip need memory: visible in an earlier pass but not in the context frame(s).

A target pixel with valid, static depth is lifted to its world point; the point is *seen* by a source
frame when it projects inside that frame, in front of it, and is not hidden: among the 2x2 source pixels
around the projection (pixel centres at +0.5, :mod:`mirage.camera`) at least one is valid and has a depth
``d`` with ``z <= d (1 + rel_tol) + abs_tol``, ``z`` being the point's depth in the source camera. Taking the
most permissive of the 2x2 neighbours keeps grazing surfaces (a floor seen far away changes depth by several
per cent per pixel) from counting as hidden; the price is that points within a pixel of an occluding edge
count as seen.

Then per target pixel (all on pixels with valid static depth; sky, invalid depth and excluded pixels are in
neither class):

* ``needs_memory``: not seen by any context frame, seen by some earlier-pass frame: only the memory holds it;
* ``unseen``: seen by neither: nothing the model was given shows it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mirage.camera import PIXEL_CENTER, backproject_depth, invert_pose, valid_depth_mask

__all__ = ["seen_by", "MemoryNeed", "memory_need"]

_POINT_BUDGET = 1 << 21  # (source frames x target points) handled at once


def seen_by(points: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor,
            valid: torch.Tensor | None = None, rel_tol: float = 0.03, abs_tol: float = 0.02, near: float = 1e-3
            ) -> torch.Tensor:
    """(F, P) bool: whether each of P world points (P, 3) is seen by each of F frames (see the module rule).

    depth (F, H, W) metres; intrinsics (F, 3, 3) at (H, W); cam_to_world (F, 4, 4); valid (F, H, W) bool
    (default: valid depth) marks the pixels whose depth may vouch for a point.
    """
    F, H, W = depth.shape
    if valid is None:
        valid = valid_depth_mask(depth)
    # float32 is plenty for metres in a room; only (frame, point) pairs inside the frustum go further.
    w2c = invert_pose(cam_to_world.double()).float()
    cam = torch.einsum("fij,pj->fpi", w2c[:, :3, :3], points.float()) + w2c[:, None, :3, 3]  # (F, P, 3)
    z = cam[..., 2]
    K = intrinsics.float()
    u = K[:, 0, 0, None] * cam[..., 0] / z.clamp_min(near) + K[:, 0, 2, None]
    v = K[:, 1, 1, None] * cam[..., 1] / z.clamp_min(near) + K[:, 1, 2, None]
    inside = (z > near) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    f, p = inside.nonzero(as_tuple=True)
    u, v, z = u[f, p], v[f, p], z[f, p]
    j0 = torch.floor(u - PIXEL_CENTER).long()
    i0 = torch.floor(v - PIXEL_CENTER).long()
    flat_depth = torch.where(valid, depth.float(), torch.full_like(depth, -1.0, dtype=torch.float32)).reshape(-1)
    hit = torch.zeros_like(z, dtype=torch.bool)
    for di in (0, 1):
        for dj in (0, 1):
            i = (i0 + di).clamp(0, H - 1)
            j = (j0 + dj).clamp(0, W - 1)
            d = flat_depth[(f * H + i) * W + j]  # -1 on invalid pixels: never vouches
            hit |= (d > 0) & (z <= d * (1.0 + rel_tol) + abs_tol)
    seen = torch.zeros_like(inside)
    seen[f[hit], p[hit]] = True
    return seen


@dataclass
class MemoryNeed:
    """Per-pixel classes of T target frames (all (T, H, W) bool); see the module docstring."""

    valid: torch.Tensor
    needs_memory: torch.Tensor
    unseen: torch.Tensor

    def fraction(self, mask: torch.Tensor, frames=None) -> float:
        """Share of the valid pixels of ``frames`` (indices; default all) that are in ``mask``; 0 when none is valid."""
        idx = slice(None) if frames is None else torch.as_tensor(list(frames), dtype=torch.long)
        total = int(self.valid[idx].sum())
        return float(mask[idx].sum()) / total if total else 0.0

    def per_frame(self, mask: torch.Tensor) -> torch.Tensor:
        """(T,) float32 share of each frame's valid pixels in ``mask`` (0 where a frame has none)."""
        total = self.valid.flatten(1).sum(1).float()
        return torch.where(total > 0, mask.flatten(1).sum(1).float() / total.clamp_min(1), torch.zeros_like(total))


def memory_need(target_depth: torch.Tensor, target_intrinsics: torch.Tensor, target_cam_to_world: torch.Tensor,
                context_depth: torch.Tensor, context_intrinsics: torch.Tensor, context_cam_to_world: torch.Tensor,
                earlier_depth: torch.Tensor, earlier_intrinsics: torch.Tensor, earlier_cam_to_world: torch.Tensor,
                target_exclude: torch.Tensor | None = None, context_exclude: torch.Tensor | None = None,
                earlier_exclude: torch.Tensor | None = None, rel_tol: float = 0.03, abs_tol: float = 0.02,
                context_holes_seen: bool = False) -> MemoryNeed:
    """Classify every pixel of T target frames against C context frames and N earlier-pass frames.

    *_depth (T|C|N, H, W) metres at one image size; *_intrinsics (…, 3, 3) at that size; *_cam_to_world
    (…, 4, 4); *_exclude (…, H, W) bool, True on pixels that are not static scene (moving objects): they
    are never counted in the target and never vouch for a point in a source.

    context_holes_seen: a context pixel without depth vouches for every point projecting there (a real sensor's
    depth has holes where its image still shows the surface; without this, every point behind a hole of the
    context frame would count as needing memory).
    """
    for name, d in (("target_depth", target_depth), ("context_depth", context_depth),
                    ("earlier_depth", earlier_depth)):
        if not isinstance(d, torch.Tensor) or d.ndim != 3:
            raise ValueError(f"{name} must be a (frames, H, W) tensor, got {tuple(getattr(d, 'shape', ()))}")
    if not (target_depth.shape[-2:] == context_depth.shape[-2:] == earlier_depth.shape[-2:]):
        raise ValueError(f"depth maps must share (H, W): target {tuple(target_depth.shape)}, context "
                         f"{tuple(context_depth.shape)}, earlier {tuple(earlier_depth.shape)}")

    def usable(depth, exclude):
        ok = valid_depth_mask(depth)
        return ok if exclude is None else ok & ~exclude.bool()

    valid = usable(target_depth, target_exclude)
    context_valid = usable(context_depth, context_exclude)
    if context_holes_seen:  # a hole sees everything behind it: depth +inf, valid wherever not excluded
        context_depth = torch.where(valid_depth_mask(context_depth), context_depth,
                                    torch.full_like(context_depth, float("inf")))
        context_valid = torch.ones_like(context_valid) if context_exclude is None else ~context_exclude.bool()
    earlier_valid = usable(earlier_depth, earlier_exclude)
    points = backproject_depth(target_depth.double(), target_intrinsics, target_cam_to_world)  # (T, H, W, 3)
    needs, unseen = torch.zeros_like(valid), torch.zeros_like(valid)
    sources = context_depth.shape[0] + earlier_depth.shape[0]
    per_frame = max(1, valid[0].numel() * sources)
    group = max(1, _POINT_BUDGET // per_frame)  # frames at once, bounding the (sources, points) work arrays
    for first in range(0, target_depth.shape[0], group):
        frames = slice(first, first + group)
        mask = valid[frames]
        p = points[frames][mask]
        in_context = seen_by(p, context_depth, context_intrinsics, context_cam_to_world, context_valid,
                             rel_tol, abs_tol).any(0)
        in_earlier = seen_by(p, earlier_depth, earlier_intrinsics, earlier_cam_to_world, earlier_valid,
                             rel_tol, abs_tol).any(0)
        needs[frames][mask] = ~in_context & in_earlier
        unseen[frames][mask] = ~in_context & ~in_earlier
    return MemoryNeed(valid=valid, needs_memory=needs, unseen=unseen)
