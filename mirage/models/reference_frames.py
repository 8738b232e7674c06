"""Retrieved reference frames in the transformer: clean latents prepended to a window at their own RoPE positions.

The reference implementation (``model_fn_wan_video`` with ``num_ref_frames = R``) prepends up to 4 earlier latents
to the window. Their tokens get timestep 0 and RoPE positions apart from the window's: frame positions -R .. -1
(``ref_freqs``: Wan's table built from -1024), rows h' .. 2h'-1 (``ref_freqs[1][h:2h]``: shifted by one grid
height, so that no reference token shares a row position with a window token) and columns 0 .. w'-1. The VACE
branch never sees them (its hints cover the window's tokens only). This module builds that RoPE table from
diffusers' own (``WanRotaryPosEmbed`` buffers: cos is even and sin odd in the position, so position -k is row k
with the sine negated); :class:`~mirage.models.transformer.MirageTransformer` takes ``reference_frames=R``.
"""

from __future__ import annotations

import torch

__all__ = ["rope_with_reference_frames"]


def rope_with_reference_frames(rope, hidden_states: torch.Tensor, reference_frames: int):
    """(cos, sin), each (1, S, 1, head_dim): the first ``reference_frames`` latent frames of ``hidden_states``
    (B, C, F, h, w) at the reference's positions (module docstring), the rest at diffusers' positions 0 .. F-R-1.

    rope: the backbone's ``WanRotaryPosEmbed``; needs ``max_seq_len >= 2 h'`` and ``> R``."""
    R = int(reference_frames)
    cos_rest, sin_rest = rope(hidden_states[:, :, R:])
    if R == 0:
        return cos_rest, sin_rest
    p_t, p_h, p_w = rope.patch_size
    pf, ph, pw = R // p_t, hidden_states.shape[3] // p_h, hidden_states.shape[4] // p_w
    if max(2 * ph, pf + 1) > rope.max_seq_len:
        raise ValueError(f"reference frames need rope_max_seq_len >= {max(2 * ph, pf + 1)}, have {rope.max_seq_len}")
    split = [rope.t_dim, rope.h_dim, rope.w_dim]
    cos_t, cos_h, cos_w = rope.freqs_cos.split(split, dim=1)
    sin_t, sin_h, sin_w = rope.freqs_sin.split(split, dim=1)
    frames = torch.arange(pf, 0, -1, device=cos_t.device)  # positions -pf .. -1 -> rows pf .. 1, sine negated
    rows = torch.arange(ph, 2 * ph, device=cos_t.device)

    def grid(t, h, w):
        return torch.cat([t.view(pf, 1, 1, -1).expand(pf, ph, pw, -1), h.view(1, ph, 1, -1).expand(pf, ph, pw, -1),
                          w.view(1, 1, pw, -1).expand(pf, ph, pw, -1)], dim=-1).reshape(1, pf * ph * pw, 1, -1)

    cos_ref = grid(cos_t[frames], cos_h[rows], cos_w[:pw]).to(cos_rest)
    sin_ref = grid(-sin_t[frames], sin_h[rows], sin_w[:pw]).to(sin_rest)
    return torch.cat([cos_ref, cos_rest], dim=1), torch.cat([sin_ref, sin_rest], dim=1)
