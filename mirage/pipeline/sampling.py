"""Flow-matching sampling of one chunk with clean context frames (Wan2.2 TI2V ``expand_timesteps``).

Context latent frames (the conditioning frame, the previous chunk's last frames) are clean: their tokens get
timestep 0 and their latents are re-imposed after every scheduler step, exactly like diffusers'
``WanImageToVideoPipeline`` with ``expand_timesteps=True`` (which overwrites the first latent frame with the
image latent before every model call). Only the other frames are denoised.
"""

from __future__ import annotations

from typing import Callable

import torch
from diffusers import UniPCMultistepScheduler

from mirage.models.configs import scheduler_config
from mirage.models.transformer import per_token_timesteps
from mirage.pipeline.prediction import prediction_to_flow

__all__ = ["make_scheduler", "sample_chunk"]


def make_scheduler(flow_shift: float = 5.0, config: dict | None = None) -> UniPCMultistepScheduler:
    """A fresh UniPC flow-matching scheduler (it keeps per-run state, so one per chunk)."""
    cfg = dict(config) if config is not None else scheduler_config()
    cfg.update(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=float(flow_shift))
    return UniPCMultistepScheduler.from_config(cfg)


@torch.no_grad()
def sample_chunk(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    context: torch.Tensor,
    context_frames: torch.Tensor,
    scheduler: UniPCMultistepScheduler,
    num_steps: int,
    patch_size=(1, 2, 2),
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    prediction_type: str = "flow",
) -> torch.Tensor:
    """Denoise one window of latent frames.

    model: ``model(latents (B,C,F,h,w), per-token timesteps (B, S)) -> flow prediction (B,C,F,h,w)``.
    noise: (B, C, F, h, w) initial Gaussian noise. context: (B, C, F, h, w) clean latents, read at the
    positions where ``context_frames`` (F,) bool is True. ``on_step(i, latents)`` runs after every step (the
    context positions already re-imposed). ``should_stop()`` is polled before every step; when it returns
    True the function returns ``None`` without finishing. ``prediction_type``: what ``model`` returns ("flow", or
    "sample": the clean latents; :func:`mirage.pipeline.prediction.prediction_to_flow`). Returns the denoised
    latents (B, C, F, h, w).
    """
    if noise.shape != context.shape or context_frames.shape != (noise.shape[2],):
        raise ValueError(f"noise {tuple(noise.shape)}, context {tuple(context.shape)} and context_frames "
                         f"{tuple(context_frames.shape)} do not fit")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    keep = context_frames.to(noise.device).view(1, 1, -1, 1, 1)
    latents = torch.where(keep, context, noise)
    scheduler.set_timesteps(num_steps, device=noise.device)
    h, w = noise.shape[-2:]
    generated = (~context_frames).to(torch.float32).to(noise.device)
    for i, t in enumerate(scheduler.timesteps):
        if should_stop is not None and should_stop():
            return None
        timestep = per_token_timesteps(generated * t.float(), (h, w), patch_size).expand(noise.shape[0], -1)
        # The scheduler's own sigma (its timesteps are rounded to integers), so that its x0 = x_s - sigma v
        # gives back a "sample" prediction exactly.
        sigma = scheduler.sigmas[i].to(device=noise.device, dtype=torch.float32)
        flow = prediction_to_flow(model(latents, timestep), latents, generated * sigma, prediction_type)
        latents = scheduler.step(flow.float(), t, latents.float(), return_dict=False)[0].to(noise.dtype)
        latents = torch.where(keep, context, latents)
        if on_step is not None:
            on_step(i, latents)
    return latents
