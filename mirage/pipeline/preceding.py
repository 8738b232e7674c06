"""The reference code's preceding context: clean latents of earlier frames appended AFTER a chunk's window.

The reference rollout (``MiragePipeline.generate_single_iteration``) conditions each later chunk on the latent that
seeds it (window position 0, as ours) and on up to ``preceding_pixel_frames / 4`` (8 / 4 = 2) latents generated
before that one, concatenated after the window: timestep 0, RoPE frame positions ``F .. F+p-1`` (after the
window's, since they are simply more frames of the same sequence), and in the hint the readouts that conditioned
them when they were generated (``generated_scene_latents``, not a fresh read). Only the window's frames are
denoised and decoded. ``WorldModelConfig.preceding_latent_frames = p`` reproduces that; 0 (default) is our layout,
where all clean context sits at the start of the window (``context_latent_frames``), as in training. A model
trained by mirage never saw appended context: the option is there for weights trained with the reference code.
"""

from __future__ import annotations

import torch

from mirage.pipeline.chunks import Chunk
from mirage.pipeline.conditioning import ChunkConditioning, chunk_conditioning

__all__ = ["record_history", "with_preceding"]


def record_history(state, chunk: Chunk, cond: ChunkConditioning, latents: torch.Tensor) -> None:
    """Keep each latent frame the chunk adds (all of chunk 0's, the first frame's included; the new ones after):
    ``state.history`` maps a global latent index to (latent (C, h, w), readout (C, h, w) or None, mask (h, w) or
    None), the readout being the one that conditioned it."""
    first = 0 if chunk.index == 0 else chunk.context
    for pos in range(first, chunk.length):
        readout = None if cond.memory_latents is None else cond.memory_latents[0, :, pos]
        mask = None if cond.memory_mask is None else cond.memory_mask[0, 0, pos]
        state.history[chunk.start + pos] = (latents[0, :, pos], readout, mask)


def with_preceding(model, state, chunk: Chunk, cond: ChunkConditioning, count: int) -> ChunkConditioning:
    """``cond`` with up to ``count`` clean latents before the window's first appended after its F positions:
    window, is_context, readout and mask (stored ones) and rays (their cameras, relative to the window's first)
    all get F + p frames. Chunk 0 (nothing generated before) and ``count == 0`` return ``cond`` itself."""
    indices = [i for i in range(max(0, chunk.start - count), chunk.start) if i in state.history]
    if chunk.index == 0 or not indices:
        return cond
    stored = [state.history[i] for i in indices]
    latents = torch.stack([s[0] for s in stored], dim=1)[None]  # (1, C, p, h, w)
    window = torch.cat([cond.window, latents.to(cond.window)], dim=2)
    is_context = torch.cat([cond.is_context, torch.ones(len(indices), dtype=torch.bool)])
    memory_latents = memory_mask = None
    if cond.memory_latents is not None:
        memory_latents = torch.cat([cond.memory_latents, torch.stack([s[1] for s in stored], 1)[None]], dim=2)
        memory_mask = torch.cat([cond.memory_mask, torch.stack([s[2] for s in stored], 0)[None, None]], dim=2)
    rays = cond.rays
    if rays is not None:  # the window's cameras then theirs, all relative to the window's first camera
        frames = torch.cat([chunk.pixel_frames, torch.tensor(indices) * chunk.temporal_stride])
        rays = chunk_conditioning(model, None, state.intrinsics[frames], state.cam_to_world[frames]).rays
    return ChunkConditioning(memory_latents, memory_mask, rays, window, is_context, cond.readout)
