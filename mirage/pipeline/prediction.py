"""What the transformer's output means: the flow (velocity) itself, or the clean sample it implies.

The sampler and the flow-matching loss work on the flow ``v = eps - x0`` (rectified flow, ``x_s = (1 - s) x0 +
s eps``). A model may instead predict the clean latents ``x0`` ("sample"); its flow is then
``v = (x_s - x0_hat) / s``. Why a model would: a flow (or noise) prediction has to reproduce the noise it was
given, and a transformer whose hidden width is below its patch dimension cannot pass that noise through (the tiny
model: 2x2 patches of 48 channels = 192 values per token, 128 hidden); what it cannot copy stays in the sample
as per-cell colour noise. A clean sample lies near a low-dimensional manifold and passes (Li & He 2025, "Back to
Basics: Let Denoising Generative Models Denoise", arXiv 2511.13720: x-prediction with a velocity loss). Wan2.2
is trained with flow prediction and keeps it.
"""

from __future__ import annotations

import torch

__all__ = ["PREDICTION_TYPES", "prediction_to_flow"]

PREDICTION_TYPES = ("flow", "sample")


def prediction_to_flow(prediction: torch.Tensor, latents: torch.Tensor, frame_sigmas: torch.Tensor,
                       prediction_type: str = "flow", min_sigma: float = 0.0) -> torch.Tensor:
    """The flow implied by a model output.

    prediction, latents (the noisy input x_s): (B, C, F, h, w); frame_sigmas: (B, F) or (F,) noise level per
    latent frame in [0, 1] (0 for clean context frames). "flow" returns ``prediction`` unchanged; "sample"
    returns ``(latents - prediction) / max(s, min_sigma)`` in float32. A frame at s = 0 (context) gets flow 0
    there: its latents are clean and re-imposed, and a division by zero would only spread inf.
    ``min_sigma`` > 0 bounds the loss weight ``1 / s^2`` of a velocity loss on an x0 prediction (0.05 in
    training, as Li & He); sampling uses 0, so the scheduler's ``x0 = x_s - s v`` returns the prediction exactly.
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    if prediction_type == "flow":
        return prediction
    if prediction.shape != latents.shape or prediction.ndim != 5:
        raise ValueError(f"prediction {tuple(prediction.shape)} and latents {tuple(latents.shape)} must both be "
                         "(B, C, F, h, w)")
    B, _, F = prediction.shape[:3]
    s = frame_sigmas.to(device=prediction.device, dtype=torch.float32)
    s = s.expand(B, F) if s.ndim == 1 else s
    if tuple(s.shape) != (B, F):
        raise ValueError(f"frame_sigmas must be ({F},) or ({B}, {F}), got {tuple(frame_sigmas.shape)}")
    clean = s <= 0
    denominator = torch.where(clean, torch.ones_like(s), s.clamp_min(min_sigma)).view(B, 1, F, 1, 1)
    flow = (latents.float() - prediction.float()) / denominator
    return torch.where(clean.view(B, 1, F, 1, 1), torch.zeros_like(flow), flow)
