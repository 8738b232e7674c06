"""The reference's 96-channel hint input, folded into our 49-channel one (readout + visibility mask).

The reference implementation (``mirage_pipeline.build_vace_context_96``) feeds its VACE branch
``cat(readout latents (48), score latent (48))``, where the score latent is the normalised VAE encoding of an
all-ones video of the window's length: the same tensor for every window of that length, whatever the memory
holds. Its contribution to the hint tokens is therefore a constant of the model, which we fold into the weights
instead of spending 48 input channels on it:

    conv(W_s, s) = conv(W_s, s_bar) + conv(W_s, s - s_bar)
                 = sum_{c, kernel} W_s[:, c] s_bar_c   (a constant per output channel: folded into the bias)
                 + offset (D, F, h/p_h, w/p_w)         (per token; zero when the score latent is constant)

with ``s_bar`` its per-channel mean. Measured with the tiny Wan VAE the score latent is NOT constant per
channel: zero padding makes border cells differ and causality makes latents 0 and 1 differ from the steady
state (max deviation 0.6 on 48 x 3 x 4 x 6). The offset keeps the fold exact; it is kept by the side branch
(:meth:`MemorySideBranch.set_hint_offset`) and saved with it. Because the VAE is causal, the score latent of a
shorter window is a prefix of a longer one's (checked: 0.0 difference), so one offset serves every window up to
its length, sliced ``[:, :F]``.

Our 49th channel, the visibility mask, has no counterpart (the reference does not feed it): its weights are
zero, so a folded branch ignores the mask exactly as the reference does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mirage.models.configs import LATENT_CHANNELS

__all__ = ["REFERENCE_HINT_CHANNELS", "FoldedHint", "reference_score_latent", "fold_score_channels"]

# readout latents + the score latent (``VaceWanModel(vace_in_dim=96)``)
REFERENCE_HINT_CHANNELS = 2 * LATENT_CHANNELS


@dataclass
class FoldedHint:
    """weight (D, 48 + 1, *patch) (mask channel zero), bias (D,), offset (D, F, h', w') or None, and the largest
    deviation of the score latent from its per-channel mean (0 for a constant one)."""

    weight: torch.Tensor
    bias: torch.Tensor
    offset: torch.Tensor | None
    max_score_deviation: float


@torch.no_grad()
def reference_score_latent(backbone, latent_frames: int, latent_size) -> torch.Tensor:
    """(48, F, h, w) float32: the backbone's normalised encoding of an all-ones video (pixel value 1 = white in
    [-1, 1]) of ``1 + s (F - 1)`` frames at ``(h, w) * spatial_stride`` pixels, as the reference computes it for a
    window of F latent frames (it encodes tiled at 704x1280 with DiffSynth's tiles; we encode whole frames).
    """
    h, w = int(latent_size[0]), int(latent_size[1])
    frames = 1 + backbone.temporal_stride * (int(latent_frames) - 1)
    stride = backbone.spatial_stride
    video = torch.ones(1, 3, frames, h * stride, w * stride, device=backbone.device, dtype=backbone.dtype)
    return backbone.encode(video)[0].float().cpu()


@torch.no_grad()
def fold_score_channels(weight: torch.Tensor, bias: torch.Tensor, score_latent: torch.Tensor,
                        mask_channels: int = 1, tolerance: float = 1e-6) -> FoldedHint:
    """Fold the score half of a reference hint embedding (see the module docstring).

    weight: (D, 96, p_t, p_h, p_w); bias: (D,); score_latent: (48, F, h, w) (:func:`reference_score_latent`).
    The score latent counts as constant (offset None) when it deviates from its per-channel mean by at most
    ``tolerance`` times its largest magnitude. Computed in float64, returned in ``weight``'s dtype.
    """
    c = LATENT_CHANNELS
    if weight.ndim != 5 or weight.shape[1] != REFERENCE_HINT_CHANNELS or tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"expected a (D, {REFERENCE_HINT_CHANNELS}, p_t, p_h, p_w) hint weight and a (D,) bias, "
                         f"got {tuple(weight.shape)} and {tuple(bias.shape)}")
    if score_latent.ndim != 4 or score_latent.shape[0] != c:
        raise ValueError(f"score_latent must be ({c}, F, h, w), got {tuple(score_latent.shape)}")
    patch = tuple(weight.shape[2:])
    if score_latent.shape[1] % patch[0] or score_latent.shape[2] % patch[1] or score_latent.shape[3] % patch[2]:
        raise ValueError(f"score_latent {tuple(score_latent.shape)} does not fit the patch size {patch}")
    w64, s64 = weight.double().cpu(), score_latent.double().cpu()
    w_read, w_score = w64[:, :c], w64[:, c:]
    mean = s64.mean(dim=(1, 2, 3))  # (48,)
    folded_bias = bias.double().cpu() + torch.einsum("dckij,c->d", w_score, mean)
    residual = s64 - mean.view(-1, 1, 1, 1)
    deviation = float(residual.abs().max())
    offset = None
    if deviation > tolerance * max(float(s64.abs().max()), 1.0):
        offset = F.conv3d(residual[None], w_score, stride=patch)[0].to(weight.dtype)  # (D, F', h', w')
    mask = torch.zeros(w64.shape[0], mask_channels, *patch, dtype=torch.float64)
    return FoldedHint(torch.cat([w_read, mask], dim=1).to(weight.dtype), folded_bias.to(bias.dtype), offset,
                      deviation)
