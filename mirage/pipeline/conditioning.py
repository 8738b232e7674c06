"""The conditioning of one chunk window: ONE function, used by the rollout and by training.

For a window of ``F`` latent frames, :func:`chunk_conditioning` builds everything the transformer sees besides the
noise, exactly the same way at inference (:mod:`mirage.pipeline.rollout`, step 3) and in training
(:func:`mirage.train.conditioning.training_batch`):

* the memory readout at the camera of every latent frame (one z-buffer pass, ``memory.read_batch`` at the model's
  image size and latent grid) as ``memory_latents (1, C, F, h, w)`` and ``memory_mask (1, 1, F, h, w)``;
* Plücker rays of those cameras relative to the window's first camera (:func:`window_relative_poses`): the model
  sees the motion within a chunk, where the chunk sits in the world comes from the memory;
* the window with its clean context: ``window (1, C, F, h, w)`` float32 holding the context latents at the first
  ``c`` positions (zeros elsewhere) and ``is_context (F,)``; the sampler keeps those positions clean with
  timestep 0 (:mod:`mirage.pipeline.sampling`), training leaves them un-noised and out of the loss.

The memory is any object with the memory protocol's ``read_batch`` (a latent memory or the RGB baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mirage.camera import invert_pose

__all__ = ["ChunkConditioning", "chunk_conditioning", "window_relative_poses"]


def window_relative_poses(cam_to_world: torch.Tensor) -> torch.Tensor:
    """(F, 4, 4) poses -> the same poses (float64) in the frame of the first one (the first becomes identity)."""
    return invert_pose(cam_to_world[:1].double()) @ cam_to_world.double()


@dataclass
class ChunkConditioning:
    """The inputs of one window besides the noise (see the module docstring).

    memory_latents (1, C, F, h, w) in the model dtype and memory_mask (1, 1, F, h, w) bool, or None without a
    memory; rays (1, 6, F, h, w) or None without a camera embedding; window (1, C, F, h, w) float32 (model
    device) and is_context (F,) bool (CPU); readout: the memory's (F-leading) Readout, or None (its depth and mask place
    the depth of generated frames and flag inconsistent cells in the rollout's memory update). reference_frames: R
    retrieved frames at the window's start, which the memory inputs do not cover (0 unless the rollout adds them).
    """

    memory_latents: torch.Tensor | None
    memory_mask: torch.Tensor | None
    rays: torch.Tensor | None
    window: torch.Tensor
    is_context: torch.Tensor
    readout: object | None = None
    reference_frames: int = 0  # retrieved frames prepended to the window (mirage.pipeline.retrieval)


def chunk_conditioning(model, memory, intrinsics: torch.Tensor, cam_to_world: torch.Tensor,
                       context: torch.Tensor | None = None) -> ChunkConditioning:
    """Conditioning of a window whose ``F`` latent frames have cameras ``intrinsics`` (F, 3, 3) at the model's
    image size and ``cam_to_world`` (F, 4, 4).

    model: a :class:`~mirage.pipeline.MirageWorldModel`. memory: read when not None. context: (c, C, h, w) clean
    latents of window positions 0 .. c-1 (c < F), or None for no clean context. Tensors go to the model's device
    (readout and rays in its dtype; the window stays float32, as latents between sampler steps do).
    """
    from mirage.models import latent_rays

    if not isinstance(cam_to_world, torch.Tensor) or cam_to_world.ndim != 3 or cam_to_world.shape[-2:] != (4, 4):
        raise ValueError(f"cam_to_world must be (F, 4, 4), got {tuple(getattr(cam_to_world, 'shape', ()))}")
    F = cam_to_world.shape[0]
    image_size, grid = model.image_size, model.latent_size
    device, dtype = model.device, model.dtype
    channels = model.latent_channels
    c = 0 if context is None else int(context.shape[0])
    if context is not None and (context.ndim != 4 or tuple(context.shape[1:]) != (channels, *grid) or c >= F):
        raise ValueError(f"context must be (c < {F}, {channels}, {grid[0]}, {grid[1]}), got {tuple(context.shape)}")

    readout = memory_latents = memory_mask = rays = None
    if memory is not None:
        readout = memory.read_batch(intrinsics, cam_to_world, image_size, grid)
        memory_latents = readout.features.to(device, dtype).transpose(0, 1)[None]
        memory_mask = readout.mask.to(device)[None, None]
    if model.transformer.camera_embedding is not None:
        rel = window_relative_poses(cam_to_world).float()
        rays = latent_rays(intrinsics, rel, image_size, grid)[None].to(device, dtype)
    window = torch.zeros(1, channels, F, *grid, device=device, dtype=torch.float32)
    if c:
        window[0, :, :c] = context.detach().to(device, torch.float32).transpose(0, 1)
    is_context = torch.arange(F) < c
    return ChunkConditioning(memory_latents, memory_mask, rays, window, is_context, readout)
