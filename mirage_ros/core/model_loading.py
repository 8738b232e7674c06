"""The node's parameters -> the library's one ``load_world_model`` (no ROS).

``model`` / ``model_path`` / ``checkpoints`` / ``device`` / ``dtype`` / ``steps`` / ``chunk_frames`` /
``image_height`` / ``image_width`` / ``cpu_offload`` map onto the keyword arguments of
:func:`mirage.train.export.load_world_model` (``MirageWorldModel.from_pretrained``), so the embedded default
(mirage-tiny on the CPU) and the 5B model on a GPU differ by parameters alone. What this module adds is only
the mapping and the node's fallback from the shipped mirage-tiny weights to the untrained ``tiny`` model; it is
named apart from the library's function so there is one ``load_world_model`` in the project.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["DTYPES", "CHECKPOINT_KEYS", "parse_checkpoints", "world_model_kwargs", "world_model_from_params"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CHECKPOINT_KEYS = {"side_branch": "side_branch_path", "camera_embedding": "camera_embedding_path", "lora": "lora_path",
                   "reference": "reference_checkpoint_path"}
EMBEDDED = "mirage-tiny"
FALLBACK = "tiny"


def parse_checkpoints(spec: str) -> dict[str, str]:
    """``"side_branch=/a,lora=/b"`` -> ``{"side_branch_path": "/a", "lora_path": "/b"}``; ValueError if malformed."""
    out: dict[str, str] = {}
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        key, sep, path = entry.partition("=")
        if not sep or key.strip() not in CHECKPOINT_KEYS or not path.strip():
            raise ValueError(f"checkpoints entry {entry!r} must be NAME=PATH with NAME one of "
                             f"{sorted(CHECKPOINT_KEYS)}")
        out[CHECKPOINT_KEYS[key.strip()]] = path.strip()
    return out


def world_model_kwargs(params) -> dict:
    """NodeParams -> keyword arguments of ``load_world_model`` / ``from_pretrained`` (besides the name)."""
    kw: dict = dict(device=params.device, torch_dtype=DTYPES[params.dtype], voxel_size=params.voxel_size or None)
    if params.steps:
        kw["num_inference_steps"] = params.steps
    if params.chunk_frames:
        kw["chunk_frames"] = params.chunk_frames
    if params.image_height:
        kw["height"] = params.image_height
    if params.image_width:
        kw["width"] = params.image_width
    if params.cpu_offload:
        kw["backbone_kwargs"] = {"cpu_offload": True}
    kw.update(parse_checkpoints(params.checkpoints))
    return kw


def world_model_from_params(params, log: Callable[[str], None] = print):
    """``(world_model, name actually loaded)`` for the node's parameters, through the library's
    :func:`mirage.train.export.load_world_model`. ``model: mirage-tiny`` falls back to the random ``tiny`` model
    (with a message) when the trained tiny weights are not installed; any other failure raises."""
    # lead: at merge, import the library's one load_world_model from wherever it lands (mirage.pipeline.loading?)
    from mirage.train.export import load_world_model as load

    name = params.model_path or params.model
    kw = world_model_kwargs(params)
    try:
        return load(name, **kw), name
    except FileNotFoundError as exc:
        if params.model_path or params.model != EMBEDDED:
            raise
        log(f"{exc}; using the untrained '{FALLBACK}' model instead")
        return load(FALLBACK, **kw), FALLBACK
