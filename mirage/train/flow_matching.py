"""Flow-matching objective on target latent frames (rectified flow, as Wan2.2 is trained).

    x_s = (1 - s) x0 + s eps,   target v = eps - x0,   timestep = 1000 s

``s`` is drawn per clip from a logit-normal distribution (``"per_clip_logit_normal"``, the default) or per latent
frame from a uniform one (``"per_frame_uniform_shift"``, what the reference's ``scripts/train.py`` does), then
shifted towards noise (shift 5 for the Wan2.2 5B model, the same ``flow_shift`` its sampler uses):
``s' = shift s / (1 + (shift - 1) s)``.
Context frames (the conditioning frame, carried frames) stay clean with timestep 0 and are excluded from
the loss, exactly as they are re-imposed at every sampling step (:mod:`mirage.pipeline.sampling`).
"""

from __future__ import annotations

import torch

from mirage.pipeline.prediction import prediction_to_flow
from mirage.train.config import SIGMA_SAMPLINGS

__all__ = ["shift_sigmas", "sample_sigmas", "sample_frame_sigmas", "SIGMA_SAMPLINGS", "add_noise", "context_zeroed",
           "flow_target", "masked_flow_loss", "batch_flow_loss", "MIN_LOSS_SIGMA"]

# Bounds the velocity-loss weight 1 / s^2 of a "sample" (x0) prediction at low noise (Li & He 2025 clip at 0.05).
MIN_LOSS_SIGMA = 0.05


def shift_sigmas(s: torch.Tensor, shift: float) -> torch.Tensor:
    """Time shift of flow-matching noise levels: s' = shift s / (1 + (shift - 1) s); shift 1 is the identity."""
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    return shift * s / (1.0 + (shift - 1.0) * s)


def sample_sigmas(batch: int, generator: torch.Generator | None = None, logit_mean: float = 0.0,
                  logit_std: float = 1.0, shift: float = 5.0, eps: float = 1e-3) -> torch.Tensor:
    """(batch,) float32 noise levels in [eps, 1 - eps]: sigmoid(N(logit_mean, logit_std)), then shifted."""
    if logit_std <= 0:
        raise ValueError(f"logit_std must be positive, got {logit_std}")
    u = torch.randn(batch, generator=generator) * logit_std + logit_mean
    return shift_sigmas(torch.sigmoid(u), shift).clamp(eps, 1.0 - eps)


def sample_frame_sigmas(batch: int, frames: int, generator: torch.Generator | None = None, shift: float = 5.0,
                        eps: float = 1e-3) -> torch.Tensor:
    """(batch, frames) float32 noise levels, independent per sample and latent frame: U[0, 1), shifted, clamped to
    [eps, 1 - eps]. With shift k, P(s' <= x) = x / (k - (k - 1) x). The reference draws one such vector per batch
    (its batch is 1); context frames are set to 0 afterwards (:func:`add_noise`), as its first latent is."""
    u = torch.rand(batch, frames, generator=generator)
    return shift_sigmas(u, shift).clamp(eps, 1.0 - eps)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor, context_frames: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy latents and per-frame noise levels.

    x0, noise: (B, C, F, h, w); sigmas: (B,) one per clip or (B, F) one per frame; context_frames: (F,) or (B, F)
    bool, True = clean context.
    Returns (x_s (B, C, F, h, w), frame_sigmas (B, F)) with context frames exactly x0 and sigma 0.
    """
    if x0.shape != noise.shape or x0.ndim != 5:
        raise ValueError(f"x0 {tuple(x0.shape)} and noise {tuple(noise.shape)} must both be (B, C, F, h, w)")
    B, _, Fr = x0.shape[:3]
    ctx = context_frames if context_frames.ndim == 2 else context_frames[None].expand(B, -1)
    if tuple(ctx.shape) != (B, Fr) or ctx.dtype != torch.bool:
        raise ValueError(f"context_frames must be bool (F,) or (B, F) with F={Fr}, got {tuple(context_frames.shape)}")
    frame_sigmas = context_zeroed(sigmas, ctx)
    s = frame_sigmas.to(x0.dtype).view(B, 1, Fr, 1, 1)
    return (1.0 - s) * x0 + s * noise, frame_sigmas


def context_zeroed(sigmas: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """(B, F) per-frame noise levels: ``sigmas`` ((B,) per clip, or (B, F) per frame) with 0 on the context frames
    (``context`` (B, F) bool)."""
    B, Fr = context.shape
    if tuple(sigmas.shape) not in ((B,), (B, Fr)):
        raise ValueError(f"sigmas must be ({B},) or ({B}, {Fr}), got {tuple(sigmas.shape)}")
    per_frame = sigmas if sigmas.ndim == 2 else sigmas[:, None].expand(B, Fr)
    return torch.where(context.to(sigmas.device), torch.zeros_like(per_frame), per_frame)


def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity the model predicts: eps - x0."""
    return noise - x0


def masked_flow_loss(prediction: torch.Tensor, target: torch.Tensor, context_frames: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the non-context frames only (float32 scalar).

    prediction, target: (B, C, F, h, w); context_frames: (F,) or (B, F) bool.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ")
    B, _, Fr = prediction.shape[:3]
    ctx = context_frames if context_frames.ndim == 2 else context_frames[None].expand(B, -1)
    weight = (~ctx).to(device=prediction.device, dtype=torch.float32).view(B, 1, Fr, 1, 1)
    if weight.sum() == 0:
        raise ValueError("every frame is context: nothing to train on")
    err = (prediction.float() - target.float()).pow(2) * weight
    per_cell = weight.expand_as(err).sum()
    return err.sum() / per_cell


def batch_flow_loss(prediction: torch.Tensor, batch, prediction_type: str = "flow") -> torch.Tensor:
    """The training loss of one :class:`~mirage.train.conditioning.TrainingBatch` over its generated frames.

    "flow": MSE against the flow target. "sample" (x0 prediction): MSE between the flows implied by the prediction
    and by the true x0, both divided by ``max(s, MIN_LOSS_SIGMA)`` instead of ``s``
    (:func:`mirage.pipeline.prediction.prediction_to_flow`), i.e. ``|x0_hat - x0|^2 / max(s, 0.05)^2``: the velocity
    loss with its weight bounded at low noise, as Li & He train."""
    frame_sigmas = batch.frame_sigmas
    flow = prediction_to_flow(prediction, batch.noisy, frame_sigmas, prediction_type, min_sigma=MIN_LOSS_SIGMA)
    target = batch.target
    if prediction_type == "sample":  # eps - x0 = (x_s - x0) / s, re-divided by the bounded sigma
        s = frame_sigmas.float()
        scale = s / s.clamp_min(MIN_LOSS_SIGMA)
        target = target.float() * scale.view(s.shape[0], 1, s.shape[1], 1, 1)
    return masked_flow_loss(flow, target, batch.context)
