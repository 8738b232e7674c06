"""Saving and loading what mirage trains: side branch, camera embedding and LoRA (safetensors + config json).

Layout of an adapter directory written by :func:`save_adapters`::

    side_branch/        config.json + diffusion_pytorch_model.safetensors   (MemorySideBranch.save_pretrained)
    camera_embedding/   config.json + diffusion_pytorch_model.safetensors   (PluckerEmbedding.save_pretrained)
    lora/               adapter_config.json + adapter_model.safetensors     (keys blocks.N.attn1.to_q.lora_A.weight)

:func:`mirage.models.reference.load_reference_checkpoint` reads weights of the paper's reference implementation
(github microsoft/LatentSpatialMemory, DiffSynth-style Wan names; the names: :mod:`mirage.models.reference_keys`).
A side branch loaded from them may carry a hint offset (``side_branch/hint_offset.safetensors``,
:meth:`MemorySideBranch.save_pretrained`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from safetensors.torch import load_file, save_file

from mirage.models.camera_embedding import PluckerEmbedding
from mirage.models.lora import (
    add_lora,
    check_lora_state_dict,
    load_lora_state_dict,
    lora_adapters,
    lora_config,
    lora_state_dict,
)
from mirage.models.side_branch import MemorySideBranch
from mirage.models.transformer import MirageTransformer

__all__ = ["save_adapters", "load_adapters", "LORA_WEIGHTS_NAME", "LORA_CONFIG_NAME"]

LORA_WEIGHTS_NAME = "adapter_model.safetensors"
LORA_CONFIG_NAME = "adapter_config.json"


def save_adapters(model: MirageTransformer, path: str | os.PathLike, lora_adapter: str = "default") -> list[str]:
    """Write the side branch, camera embedding and (if attached) LoRA adapter of ``model``; returns parts written."""
    if not isinstance(model, MirageTransformer):
        raise ValueError(f"save_adapters expects a MirageTransformer, got {type(model).__name__}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    written = []
    for name, module in model.adapter_modules().items():
        module.save_pretrained(path / name, safe_serialization=True)
        written.append(name)
    if lora_adapter in lora_adapters(model):
        (path / "lora").mkdir(exist_ok=True)
        weights = {k: v.detach().contiguous().cpu() for k, v in lora_state_dict(model, lora_adapter).items()}
        save_file(weights, str(path / "lora" / LORA_WEIGHTS_NAME))
        with open(path / "lora" / LORA_CONFIG_NAME, "w") as f:
            json.dump(lora_config(model, lora_adapter), f, indent=2)
        written.append("lora")
    return written


def load_adapters(model: MirageTransformer | WanTransformer3DModel, path: str | os.PathLike,
                  lora_adapter: str = "default") -> MirageTransformer:
    """Load an adapter directory.

    Given a bare ``WanTransformer3DModel`` a new MirageTransformer is built around it (parts absent from the
    directory stay absent). Given a MirageTransformer the weights go into its existing parts, all or nothing:
    a part whose config or keys do not match raises ValueError before anything is changed.
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"adapter directory {str(path)!r} does not exist")
    parts = [p for p in ("side_branch", "camera_embedding", "lora") if (path / p).is_dir()]
    if not parts:
        raise ValueError(f"{str(path)!r} holds none of side_branch/, camera_embedding/, lora/")
    backbone = model.backbone if isinstance(model, MirageTransformer) else model
    if not isinstance(backbone, WanTransformer3DModel):
        raise ValueError(f"load_adapters expects a MirageTransformer or WanTransformer3DModel, got "
                         f"{type(model).__name__}")
    dtype = backbone.patch_embedding.weight.dtype
    loaded = {}
    if "side_branch" in parts:
        loaded["side_branch"] = MemorySideBranch.from_pretrained(path / "side_branch", torch_dtype=dtype)
    if "camera_embedding" in parts:
        loaded["camera_embedding"] = PluckerEmbedding.from_pretrained(path / "camera_embedding", torch_dtype=dtype)
    lora = None
    if "lora" in parts:
        with open(path / "lora" / LORA_CONFIG_NAME) as f:
            lora = (json.load(f), load_file(str(path / "lora" / LORA_WEIGHTS_NAME)))

    if not isinstance(model, MirageTransformer):
        out = MirageTransformer(model, loaded.get("side_branch"), loaded.get("camera_embedding"))
        out.to(backbone.device)
        if lora is not None:
            cfg, weights = lora
            add_lora(out, rank=cfg["rank"], alpha=cfg["alpha"], dropout=cfg.get("dropout", 0.0),
                     adapter_name=lora_adapter, targets=cfg["targets"])
            load_lora_state_dict(out, weights, lora_adapter)
        return out

    # Into an existing model: check every part first, then copy.
    for name, new in loaded.items():
        own = getattr(model, name)
        if own is None:
            raise ValueError(f"the checkpoint has {name}/ but the model has no {name}")
        a, b = _plain_config(own.config), _plain_config(new.config)
        diff = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
        if diff:
            raise ValueError(f"{name} config differs from the checkpoint (model, checkpoint): {diff}")
    if lora is not None:
        cfg, weights = lora
        if lora_adapter not in lora_adapters(model):
            raise ValueError(f"the checkpoint has LoRA but the model has no adapter {lora_adapter!r}; "
                             "attach it with add_lora first (or load into the bare backbone)")
        have = lora_config(model, lora_adapter)
        if (have["rank"], sorted(have["targets"])) != (cfg["rank"], sorted(cfg["targets"])):
            raise ValueError(f"LoRA config differs: model {have}, checkpoint {cfg}")
        check_lora_state_dict(model, weights, lora_adapter)
    for name, new in loaded.items():
        getattr(model, name).load_state_dict(new.state_dict())
    if "side_branch" in loaded:  # not in the state dict (its shape follows the window)
        model.side_branch.set_hint_offset(loaded["side_branch"].hint_offset)
    if lora is not None:
        load_lora_state_dict(model, lora[1], lora_adapter)
    return model


def _plain_config(config) -> dict:
    # JSON round trip: tuples and lists compare equal, private diffusers keys dropped.
    return json.loads(json.dumps({k: v for k, v in dict(config).items() if not k.startswith("_")}))
