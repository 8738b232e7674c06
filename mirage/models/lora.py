"""LoRA on the backbone's blocks through peft.

Default targets ``attn1.to_q, attn1.to_k, attn1.to_v, attn1.to_out.0`` of every backbone block and nothing else:
cross-attention (``attn2``, same leaf names) and the side branch's hint blocks are never hit, because the
pattern is anchored to ``blocks.<i>.`` of the backbone itself. Rank 64 with alpha = rank (scale 1)
by default, as in the paper's stage 2 (47.2M parameters on the 5B model). :data:`REFERENCE_LORA_TARGETS` are the
reference implementation's targets (``scripts/train.py``: peft ``q,k,v,o,ffn.0,ffn.2``, which match self- and
cross-attention and both FFN linears of every DiT block; rank 32, alpha 32), in diffusers names.

Adapters are attachable, removable (the original ``nn.Linear`` modules come back untouched, so outputs are
restored exactly) and mergeable into the base weights for inference.
"""

from __future__ import annotations

import re
from typing import Iterable

import torch
import torch.nn as nn
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer

__all__ = [
    "LORA_TARGETS",
    "REFERENCE_LORA_TARGETS",
    "lora_target_pattern",
    "add_lora",
    "remove_lora",
    "merge_lora",
    "lora_adapters",
    "lora_target_names",
    "lora_config",
    "lora_state_dict",
    "load_lora_state_dict",
    "check_lora_state_dict",
]

LORA_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0")
REFERENCE_LORA_TARGETS = LORA_TARGETS + ("attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
                                         "ffn.net.0.proj", "ffn.net.2")
_LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B)\.(?P<adapter>[^.]+)\.weight$")


def lora_target_pattern(targets: Iterable[str] = LORA_TARGETS) -> str:
    """Regex (peft full match on module names of the backbone) for the target linears of every block."""
    return r"blocks\.\d+\.(" + "|".join(re.escape(t) for t in targets) + r")"


def _backbone(model: nn.Module) -> WanTransformer3DModel:
    from mirage.models.transformer import MirageTransformer

    if isinstance(model, MirageTransformer):
        return model.backbone
    if isinstance(model, WanTransformer3DModel):
        return model
    raise ValueError(f"LoRA attaches to a MirageTransformer or WanTransformer3DModel, got {type(model).__name__}")


def _lora_layers(model: nn.Module) -> list[tuple[str, LoraLayer]]:
    return [(n, m) for n, m in _backbone(model).named_modules() if isinstance(m, LoraLayer)]


def lora_adapters(model: nn.Module) -> list[str]:
    """Names of the LoRA adapters attached to the backbone."""
    names: list[str] = []
    for _, layer in _lora_layers(model):
        for a in layer.lora_A.keys():
            if a not in names:
                names.append(a)
    return names


def lora_target_names(model: nn.Module, adapter_name: str = "default") -> list[str]:
    """Backbone module names that carry ``adapter_name``."""
    return [n for n, layer in _lora_layers(model) if adapter_name in layer.lora_A]


def add_lora(model: nn.Module, rank: int = 64, alpha: float | None = None, dropout: float = 0.0,
             adapter_name: str = "default", targets: Iterable[str] = LORA_TARGETS) -> list[str]:
    """Attach a LoRA adapter (B initialised to zero: outputs unchanged) and return the wrapped module names.

    peft leaves only adapter weights trainable in the backbone (``requires_grad=False`` elsewhere in it);
    the side branch and camera embedding are untouched.
    """
    if int(rank) <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
    if adapter_name in lora_adapters(model):
        raise ValueError(f"LoRA adapter {adapter_name!r} is already attached")
    backbone = _backbone(model)
    config = LoraConfig(r=int(rank), lora_alpha=float(alpha if alpha is not None else rank), lora_dropout=dropout,
                        target_modules=lora_target_pattern(targets), bias="none", init_lora_weights=True)
    inject_adapter_in_model(config, backbone, adapter_name=adapter_name)
    return lora_target_names(model, adapter_name)


def lora_config(model: nn.Module, adapter_name: str = "default") -> dict:
    """{"rank", "alpha", "dropout", "targets"} of an attached adapter."""
    layers = [(n, m) for n, m in _lora_layers(model) if adapter_name in m.lora_A]
    if not layers:
        raise ValueError(f"no LoRA adapter {adapter_name!r} attached (have {lora_adapters(model)})")
    name, layer = layers[0]
    rank = int(layer.r[adapter_name])
    dropout = layer.lora_dropout[adapter_name]
    targets = sorted({re.sub(r"^blocks\.\d+\.", "", n) for n, _ in layers})
    return {"rank": rank, "alpha": float(layer.lora_alpha[adapter_name]),
            "dropout": float(getattr(dropout, "p", 0.0)), "targets": targets}


def _replace_with_base(backbone: nn.Module, name: str, layer: LoraLayer) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = backbone.get_submodule(parent_name) if parent_name else backbone
    setattr(parent, child, layer.get_base_layer())


def remove_lora(model: nn.Module, adapter_name: str | None = None) -> None:
    """Detach ``adapter_name`` (all adapters if None); layers left without adapters become plain linears again.

    Parameters of the restored linears keep the ``requires_grad`` peft gave them (False): call
    ``requires_grad_`` to train the backbone afterwards.
    """
    backbone = _backbone(model)
    layers = _lora_layers(model)
    if adapter_name is not None and adapter_name not in lora_adapters(model):
        raise ValueError(f"no LoRA adapter {adapter_name!r} attached (have {lora_adapters(model)})")
    for name, layer in layers:
        if layer.merged:
            raise ValueError(f"LoRA of {name} is merged into the weights; it cannot be removed exactly")
        names = list(layer.lora_A.keys()) if adapter_name is None else [adapter_name]
        for a in names:
            if a in layer.lora_A:
                layer.delete_adapter(a)
        if not layer.lora_A:
            _replace_with_base(backbone, name, layer)


def merge_lora(model: nn.Module, adapter_name: str | None = None) -> None:
    """Fold the adapter(s) into the base weights and drop the LoRA layers (for inference)."""
    backbone = _backbone(model)
    if adapter_name is not None and adapter_name not in lora_adapters(model):
        raise ValueError(f"no LoRA adapter {adapter_name!r} attached (have {lora_adapters(model)})")
    for name, layer in _lora_layers(model):
        names = list(layer.lora_A.keys()) if adapter_name is None else [adapter_name]
        names = [a for a in names if a in layer.lora_A]
        if names:
            layer.merge(adapter_names=names)
        others = [a for a in layer.lora_A.keys() if a not in names]
        if others:
            raise ValueError(f"{name} carries other adapters {others}; merge them too (adapter_name=None)")
        _replace_with_base(backbone, name, layer)


def lora_state_dict(model: nn.Module, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """Adapter weights with backbone-relative names: ``blocks.0.attn1.to_q.lora_A.weight`` -> (r, in) etc."""
    out = {}
    for key, p in _backbone(model).named_parameters():
        m = _LORA_KEY.match(key)
        if m and m["adapter"] == adapter_name:
            out[f"{m['module']}.{m['kind']}.weight"] = p.detach()
    if not out:
        raise ValueError(f"no LoRA adapter {adapter_name!r} attached (have {lora_adapters(model)})")
    return out


def _matching_lora_parameters(model: nn.Module, state_dict: dict[str, torch.Tensor],
                              adapter_name: str) -> dict[str, nn.Parameter]:
    own = {}
    for key, p in _backbone(model).named_parameters():
        m = _LORA_KEY.match(key)
        if m and m["adapter"] == adapter_name:
            own[f"{m['module']}.{m['kind']}.weight"] = p
    if not own:
        raise ValueError(f"no LoRA adapter {adapter_name!r} attached (have {lora_adapters(model)})")
    unknown = sorted(set(state_dict) - set(own))
    missing = sorted(set(own) - set(state_dict))
    bad = [f"{k}: {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in state_dict.items()
           if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if unknown or missing or bad:
        raise ValueError(f"LoRA state dict does not fit adapter {adapter_name!r}: unknown {unknown[:5]}, "
                         f"missing {missing[:5]}, shape mismatches {bad[:5]}")
    return own


def check_lora_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], adapter_name: str = "default") -> None:
    """Raise ValueError unless ``state_dict`` has exactly the keys and shapes of the attached adapter."""
    _matching_lora_parameters(model, state_dict, adapter_name)


def load_lora_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor],
                         adapter_name: str = "default") -> None:
    """Copy adapter weights in, all or nothing: unknown or missing keys and shape mismatches raise ValueError."""
    own = _matching_lora_parameters(model, state_dict, adapter_name)
    with torch.no_grad():
        for k, v in state_dict.items():
            own[k].copy_(v.to(dtype=own[k].dtype, device=own[k].device))
