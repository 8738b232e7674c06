"""Write a trained world model to a directory that :meth:`MirageWorldModel.from_pretrained` reads back.

``MirageWorldModel.save_pretrained`` does the work (config, ``backbone/`` for a backbone we own, and the
trained parts in :func:`mirage.models.checkpoints.save_adapters` layout). ``merge=True`` first folds LoRA into
the backbone's own weights, for models that ship their backbone (the tiny one): fewer files, no peft at load.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["export_world_model", "load_world_model"]


def export_world_model(world_model, path: str | os.PathLike, merge: bool = False,
                       copy_backbone: bool | None = None) -> Path:
    """Save ``world_model`` to ``path``. merge: fold LoRA into the backbone first (changes the model in place;
    refused for a pretrained backbone that is referenced rather than saved). copy_backbone: as in
    ``save_pretrained`` (None: copy a backbone we own, reference a pretrained one; True after training it)."""
    from mirage.models.lora import lora_adapters, merge_lora

    path = Path(path)
    transformer = world_model.transformer
    if merge and lora_adapters(transformer):
        owned = getattr(world_model.backbone, "random_weights", False) or Path(world_model.config.backbone).name == "backbone"
        if not owned:
            raise ValueError("merge=True would fold LoRA into a referenced pretrained backbone that is not saved")
        merge_lora(transformer)
        if getattr(transformer.backbone, "peft_config", None) is not None:
            del transformer.backbone.peft_config
        world_model.save_pretrained(path, copy_backbone=True)
        return path
    world_model.save_pretrained(path, copy_backbone=copy_backbone)
    return path


def load_world_model(name_or_path: str | os.PathLike = "tiny", device="cpu", torch_dtype=None, **overrides):
    """``MirageWorldModel.from_pretrained`` (built-in name, trained directory or hub id)."""
    from mirage.pipeline import MirageWorldModel

    if torch_dtype is not None:
        overrides["torch_dtype"] = torch_dtype
    return MirageWorldModel.from_pretrained(str(name_or_path), device=device, **overrides)
