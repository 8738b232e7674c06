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

    Returns a flat dict, e.g. {"transformer": 5.0e9, "side_branch": ..., "lora": ..., "num_layers": 30, ...}.
    """
    from mirage.models.backbone import Backbone
    from mirage.models.transformer import MirageTransformer

    out: dict = {}
    if isinstance(model, Backbone):
        out["transformer"] = count_parameters(model.transformer)
        out["vae"] = count_parameters(model.vae)
        out["text_encoder"] = count_parameters(model.text_encoder) if model.text_encoder is not None else 0
        cfg = model.transformer.config
        out["max_sequence_length"] = model.max_sequence_length
    elif isinstance(model, MirageTransformer):
        lora = sum(p.numel() for n, p in model.backbone.named_parameters() if "lora_" in n)
        out["transformer"] = count_parameters(model.backbone) - lora
        out["lora"] = lora
        for name, module in model.adapter_modules().items():
            out[name] = count_parameters(module)
        if model.side_branch is not None:
            out["injection_layers"] = model.side_branch.injection_layers
        out["trainable"] = count_parameters(model, trainable_only=True)
        cfg = model.backbone.config
    else:
        raise ValueError(f"summarize expects a Backbone or MirageTransformer, got {type(model).__name__}")
    out.update(num_layers=cfg.num_layers, inner_dim=cfg.num_attention_heads * cfg.attention_head_dim,
               num_attention_heads=cfg.num_attention_heads, ffn_dim=cfg.ffn_dim, text_dim=cfg.text_dim,
               patch_size=tuple(cfg.patch_size))
    return out
