"""Casting modules to a low-precision dtype the way diffusers' ``from_pretrained`` does."""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel

__all__ = ["cast_module", "WAN_KEEP_IN_FP32"]

# Modules the Wan transformer keeps in float32 under bf16/fp16 (RoPE tables, time embedder, modulation, norms).
WAN_KEEP_IN_FP32 = tuple(WanTransformer3DModel._keep_in_fp32_modules)


def cast_module(module: nn.Module, dtype: torch.dtype, keep_in_fp32: Iterable[str] = WAN_KEEP_IN_FP32) -> nn.Module:
    """Cast floating parameters and buffers to ``dtype`` in place, except those under a module named in
    ``keep_in_fp32`` (substring of the parameter name, as diffusers matches), which become float32.
    Returns ``module``."""
    keep = set(keep_in_fp32) if dtype in (torch.float16, torch.bfloat16) else set()
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        if not tensor.is_floating_point():
            continue
        target = torch.float32 if any(k in name for k in keep) else dtype
        if tensor.dtype != target:
            tensor.data = tensor.data.to(target)
    return module
