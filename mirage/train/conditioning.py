"""Model inputs of one training sample, built by the same function that builds them at inference.

Every window's conditioning (memory readout + mask, Plücker rays, the clean context and which positions are
context) comes from :func:`mirage.pipeline.conditioning.chunk_conditioning`, the function the rollout calls in its
step 3; the memory is filled with the sample's memory sources, which were encoded with
:meth:`MirageWorldModel.encode_images` (target-type latents, what ``observe`` stores at inference). So training
readouts are built exactly as at inference, from the same latent type. :func:`training_batch` adds the noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from mirage.data.encoded_clips import EncodedClip
from mirage.models import per_token_timesteps
from mirage.pipeline.conditioning import ChunkConditioning, chunk_conditioning
from mirage.train.flow_matching import (SIGMA_SAMPLINGS, add_noise, context_zeroed, flow_target,
                                        sample_frame_sigmas, sample_sigmas)

__all__ = ["ChunkConditioning", "chunk_conditioning", "memory_from_sources", "TrainingBatch", "training_batch"]


def memory_from_sources(world_model, sample: EncodedClip):
    """A fresh latent memory holding the sample's memory-source frames, as ``observe`` would store them (the
    cache keeps their latents, not their pixels, so they go in through the latent memory's own writer)."""
    memory = world_model.new_memory()
    memory.insert_batch(sample.source_latents.to(memory.dtype), sample.source_depth, sample.source_intrinsics,
                        sample.source_cam_to_world, exclude=sample.source_exclude)
    return memory


@dataclass
class TrainingBatch:
    """Inputs and target of one forward pass (B samples of F latent frames each).

    noisy (B, 48, F, h, w); timestep (B, S) per token in [0, 1000]; context (B, F) bool; target (B, 48, F, h, w);
    memory_latents (B, 48, F, h, w) / memory_mask (B, 1, F, h, w) / rays (B, 6, F, h, w) or None;
    sigmas (B,) noise level of the generated frames, or (B, F) one per latent frame (per-frame sampling; the
    context frames' entries are ignored, they are clean).
    """

    noisy: torch.Tensor
    timestep: torch.Tensor
    context: torch.Tensor
    target: torch.Tensor
    memory_latents: torch.Tensor | None
    memory_mask: torch.Tensor | None
    rays: torch.Tensor | None
    sigmas: torch.Tensor

    @property
    def frame_sigmas(self) -> torch.Tensor:
        """(B, F) noise level per latent frame: the sample's sigma(s), 0 on its clean context frames."""
        return context_zeroed(self.sigmas, self.context)

    def model_kwargs(self) -> dict:
        kw = {"rays": self.rays}
        if self.memory_latents is not None:
            kw.update(memory_latents=self.memory_latents, memory_mask=self.memory_mask)
        return kw


def training_batch(world_model, samples: Sequence[EncodedClip], generator: torch.Generator,
                   context_latent_frames: int = 1, logit_mean: float = 0.0, logit_std: float = 1.0,
                   flow_shift: float = 5.0, memory_dropout: float = 0.0,
                   use_memory: bool = True, sigma_sampling: str = "per_clip_logit_normal") -> TrainingBatch:
    """Noise a batch of encoded clips and build their conditioning.

    Each sample's first ``c`` latent frames are clean context: ``c = 1`` (the first chunk of a rollout) or,
    when ``context_latent_frames > 1``, ``c`` is drawn from {1, context_latent_frames} with equal odds (later
    chunks carry that many). ``memory_dropout`` is the probability that a sample sees an empty memory (a
    rollout starting from a bare first frame, or a region the memory never saw). All randomness comes from
    ``generator`` (CPU), so a given generator state always gives the same batch. ``use_memory=False`` (stage 0)
    builds no memory and no readout, even for a model with a side branch. ``sigma_sampling``: one noise level per
    sample from the shifted logit-normal (``"per_clip_logit_normal"``) or one per latent frame from the shifted
    uniform (``"per_frame_uniform_shift"``, the reference's; ``logit_mean`` / ``logit_std`` then unused).
    """
    if sigma_sampling not in SIGMA_SAMPLINGS:
        raise ValueError(f"sigma_sampling must be one of {SIGMA_SAMPLINGS}, got {sigma_sampling!r}")
    if not samples:
        raise ValueError("training_batch needs at least one sample")
    frames = {s.num_latent_frames for s in samples}
    if len(frames) != 1:
        raise ValueError(f"samples in a batch must have the same number of latent frames, got {sorted(frames)}")
    F = frames.pop()
    if not 1 <= context_latent_frames < F:
        raise ValueError(f"context_latent_frames must be in [1, {F}) for clips of {F} latent frames, "
                         f"got {context_latent_frames}")
    device, dtype = world_model.device, world_model.dtype
    B = len(samples)
    x0 = torch.stack([s.latents for s in samples]).to(device, torch.float32)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    if sigma_sampling == "per_frame_uniform_shift":
        sigmas = sample_frame_sigmas(B, F, generator, flow_shift).to(device)
    else:
        sigmas = sample_sigmas(B, generator, logit_mean, logit_std, flow_shift).to(device)
    contexts = torch.ones(B, dtype=torch.long)
    if context_latent_frames > 1:
        pick = torch.rand(B, generator=generator) < 0.5
        contexts = torch.where(pick, torch.full_like(contexts, context_latent_frames), contexts)
    drop = torch.rand(B, generator=generator) < memory_dropout
    # The clean context of each sample is its own first c latents, placed by the rollout's conditioning function.
    reads_memory = use_memory and world_model.transformer.side_branch is not None
    parts = []
    for i, (sample, dropped) in enumerate(zip(samples, drop.tolist())):
        memory = None
        if reads_memory:
            memory = world_model.new_memory() if dropped else memory_from_sources(world_model, sample)
        parts.append(chunk_conditioning(world_model, memory, sample.intrinsics, sample.cam_to_world,
                                        context=x0[i, :, : int(contexts[i])].transpose(0, 1)))
    context = torch.stack([p.is_context for p in parts]).to(device)  # (B, F)
    noisy, frame_sigmas = add_noise(x0, noise, sigmas, context)
    noisy = torch.where(context[:, None, :, None, None], torch.cat([p.window for p in parts]), noisy)
    h, w = x0.shape[-2:]
    timestep = per_token_timesteps(frame_sigmas * 1000.0, (h, w), world_model.transformer.patch_size)

    def cat(name):
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat(values)

    return TrainingBatch(noisy=noisy.to(dtype), timestep=timestep, context=context,
                         target=flow_target(x0, noise), memory_latents=cat("memory_latents"),
                         memory_mask=cat("memory_mask"), rays=cat("rays"), sigmas=sigmas)
