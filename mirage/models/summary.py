"""Parameter counts and one-line config summaries (used by benchmarks and reprs)."""

from __future__ import annotations

import torch.nn as nn

__all__ = ["count_parameters", "summarize"]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once); works on meta-device modules."""
    seen, total = set(), 0
    for p in module.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def summarize(model) -> dict:
    """Parameter counts of a Backbone / MirageTransformer and their parts, plus the key shapes.

    ``model`` is anything with ``parameter_summary() -> (counts, diffusers transformer config)``; the two model
    classes define it, so this module imports neither (they import :func:`count_parameters` from here).
    Returns a flat dict, e.g. {"transformer": 5.0e9, "side_branch": ..., "lora": ..., "num_layers": 30, ...}.
    """
    if not callable(getattr(model, "parameter_summary", None)):
        raise ValueError(f"summarize expects a Backbone or MirageTransformer, got {type(model).__name__}")
    counts, cfg = model.parameter_summary()
    out = dict(counts)
    out.update(num_layers=cfg.num_layers, inner_dim=cfg.num_attention_heads * cfg.attention_head_dim,
               num_attention_heads=cfg.num_attention_heads, ffn_dim=cfg.ffn_dim, text_dim=cfg.text_dim,
               patch_size=tuple(cfg.patch_size))
    return out
