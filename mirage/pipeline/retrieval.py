"""Reference frames: earlier latents retrieved for a chunk by how much of the scene they share with its cameras.

The reference rollout (``select_reference_latents``, ``update_frame_visibility``, ``compute_points_iou``): after
each chunk's memory update, every latent frame the chunk added (chunk 0: all of them, its first included) records
the voxels (0.1 m) of the memory points in its view: inside its latent image and in front of it, with no occlusion
test. A later chunk takes the union of the voxels in view of its own window cameras (the memory before its
update), scores every recorded frame by voxel IoU, keeps those with IoU >= 0.04, best first (ties: the earlier
frame first, as Python's stable sort leaves them), at most 4, and prepends their latents to the window: clean,
at their own RoPE positions, without a hint (:mod:`mirage.models.reference_frames`). ``WorldModelConfig.
reference_frames`` (0 = off, the default; 4 in the reference) with ``reference_iou_threshold`` and
``reference_voxel_size``.
"""

from __future__ import annotations

import torch

from mirage.camera import project, scale_intrinsics
from mirage.memory.store import voxel_keys
from mirage.pipeline.chunks import Chunk
from mirage.pipeline.conditioning import ChunkConditioning, chunk_conditioning

__all__ = ["visible_voxels", "voxel_iou", "record_visibility", "select_reference_frames", "with_reference_frames"]

def visible_voxels(points: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size,
                   latent_size, voxel: float) -> torch.Tensor:
    """Sorted unique int64 keys (M,) of the ``voxel``-sized voxels of the ``points`` (N, 3) in view: in front of
    the camera and projecting inside its latent image (``latent_size``; intrinsics (3, 3) at ``image_size``)."""
    K = scale_intrinsics(intrinsics.double(), image_size, latent_size)
    uv, z = project(points.double(), K, cam_to_world.double())
    u, v = uv[:, 0], uv[:, 1]
    keep = (z > 0) & (u >= 0) & (u < latent_size[1]) & (v >= 0) & (v < latent_size[0])
    return torch.unique(voxel_keys(points[keep], voxel))


def voxel_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a & b| / |a | b| of two sorted unique key tensors (0 when both are empty)."""
    inter = int(torch.isin(a, b).sum())
    union = a.numel() + b.numel() - inter
    return inter / union if union else 0.0


def record_visibility(model, state, chunk: Chunk) -> None:
    """After the chunk's memory update: ``state.visible[i]`` = the voxels in view of each latent frame ``i`` the
    chunk added (chunk 0: all, the first frame's included)."""
    first = 0 if chunk.index == 0 else chunk.context
    points = state.memory.points.cpu()
    for pos in range(first, chunk.length):
        pixel = (chunk.start + pos) * chunk.temporal_stride
        state.visible[chunk.start + pos] = visible_voxels(points, state.intrinsics[pixel], state.cam_to_world[pixel],
                                                          model.image_size, model.latent_size,
                                                          model.config.reference_voxel_size)


def select_reference_frames(model, state, chunk: Chunk) -> list[int]:
    """Latent indices of the recorded frames to prepend to this chunk's window, best first (module docstring)."""
    cfg = model.config
    if not cfg.reference_frames or not state.visible:
        return []
    points = state.memory.points.cpu()
    targets = torch.unique(torch.cat([visible_voxels(points, state.intrinsics[p], state.cam_to_world[p],
                                                     model.image_size, model.latent_size, cfg.reference_voxel_size)
                                      for p in chunk.pixel_frames.tolist()]))
    scored = [(i, voxel_iou(targets, keys)) for i, keys in sorted(state.visible.items())]
    scored = sorted((s for s in scored if s[1] >= cfg.reference_iou_threshold), key=lambda s: -s[1])
    return [i for i, _ in scored[: cfg.reference_frames]]


def with_reference_frames(model, state, chunk: Chunk, cond: ChunkConditioning, indices: list[int]) -> ChunkConditioning:
    """``cond`` with the latents of ``indices`` prepended (window, is_context and rays get R more frames; the
    readout and mask keep covering the frames after them); ``indices`` empty returns ``cond`` itself."""
    if not indices:
        return cond
    latents = torch.stack([state.history[i][0] for i in indices], dim=1)[None].to(cond.window)  # (1, C, R, h, w)
    window = torch.cat([latents, cond.window], dim=2)
    is_context = torch.cat([torch.ones(len(indices), dtype=torch.bool), cond.is_context])
    rays = cond.rays
    if rays is not None:  # their cameras relative to the window's first camera
        frames = torch.cat([chunk.pixel_frames[:1], torch.tensor(indices) * chunk.temporal_stride])
        rays = torch.cat([chunk_conditioning(model, None, state.intrinsics[frames],
                                             state.cam_to_world[frames]).rays[:, :, 1:], rays], dim=2)
    return ChunkConditioning(cond.memory_latents, cond.memory_mask, rays, window, is_context, cond.readout,
                             reference_frames=len(indices))
