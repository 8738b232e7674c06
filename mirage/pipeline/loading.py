"""Where a world model comes from and where it goes: name resolution, the trained parts, load and save.

A world-model directory (written by :meth:`MirageWorldModel.save_pretrained`, read back by
:meth:`MirageWorldModel.from_pretrained`, both through :func:`load_world_model` / :func:`save_world_model`)::

    mirage_world_model.json   WorldModelConfig
    backbone/                 diffusers layout, only for a random built-in backbone (else config names a path / id)
    side_branch/ camera_embedding/ lora/     :func:`mirage.models.checkpoints.save_adapters` layout
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import asdict, replace
from pathlib import Path

import torch

from mirage.perception.depth import ReadoutDepth
from mirage.pipeline.config import CONFIG_NAME, WorldModelConfig

logger = logging.getLogger(__name__)

__all__ = ["load_world_model", "save_world_model", "resolve_pretrained", "build_transformer", "load_parts",
           "depth_provider_from_name", "PART_PATHS", "SHIPPED"]

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SHIPPED = {"mirage-tiny": ASSETS / "mirage-tiny"}


# Inference-time speed options of from_pretrained (issue 14); none is saved with the model. Defaults are exact.
INFERENCE_OPTIONS = ("modulation", "side_branch_target_only", "side_branch_blocks", "compile", "sdpa_backend", "fp8")


def apply_inference_options(transformer, modulation: str = "per_frame", side_branch_target_only: bool = False,
                            side_branch_blocks: int | None = None, compile: str | None = None,
                            sdpa_backend: str | None = None, fp8: bool = False) -> None:
    """Speed options on a built transformer, each measured by ``bench/gpu_suite.py`` (speed and difference):

    modulation: "per_frame" (default; timestep modulation once per latent frame, equal to diffusers' per-token
        path up to float rounding) or "per_token" (diffusers' own path). side_branch_target_only /
        side_branch_blocks: the side branch over the tokens being denoised only / its first n hint blocks (these
        change the output). compile ("regional"), sdpa_backend, fp8: :func:`mirage.models.acceleration.accelerate_transformer`.
    """
    from mirage.models.modulation import MODULATION_MODES

    if modulation not in MODULATION_MODES:
        raise ValueError(f"modulation must be one of {MODULATION_MODES}, got {modulation!r}")
    transformer.modulation = modulation
    branch = getattr(transformer, "side_branch", None)
    if branch is not None:
        branch.set_inference_options(target_only=side_branch_target_only, num_blocks=side_branch_blocks)
    elif side_branch_target_only or side_branch_blocks is not None:
        raise ValueError("side-branch options given, but this model has no side branch")
    if compile or sdpa_backend or fp8:
        from mirage.models.acceleration import accelerate_transformer

        accelerate_transformer(transformer, compile=compile, sdpa_backend=sdpa_backend, fp8=fp8)


def load_world_model(cls, name_or_path: str | os.PathLike = "tiny", device="cpu", torch_dtype=torch.float32,
                     **overrides):
    """The body of :meth:`MirageWorldModel.from_pretrained` (see there for the names and overrides):
    resolve the config, load the backbone, wrap it with the trained (or fresh) parts, build ``cls``."""
    from mirage.models import load_backbone

    adapters_path = overrides.pop("adapters_path", None)
    part_paths = {k: overrides.pop(k) for k in PART_PATHS if overrides.get(k) is not None}
    for k in PART_PATHS:
        overrides.pop(k, None)
    reference_strict = overrides.pop("reference_strict", True)
    depth_provider = overrides.pop("depth_provider", None)
    segmenter = overrides.pop("segmenter", None)
    backbone_kwargs = overrides.pop("backbone_kwargs", {}) or {}
    speed = {k: overrides.pop(k) for k in INFERENCE_OPTIONS if k in overrides}
    config, _, saved_adapters = resolve_pretrained(name_or_path, overrides)
    backbone = load_backbone(config.backbone, torch_dtype=torch_dtype, device=device, seed=config.backbone_seed,
                             **backbone_kwargs)
    transformer = build_transformer(backbone.transformer, config, adapters_path or saved_adapters)
    load_parts(transformer, part_paths, backbone=backbone, config=config, reference_strict=reference_strict)
    apply_inference_options(transformer, **speed)
    if isinstance(depth_provider, str):
        depth_provider = depth_provider_from_name(depth_provider, device)
    return cls(config, backbone, transformer, depth_provider=depth_provider, segmenter=segmenter)


def save_world_model(model, path: str | os.PathLike, copy_backbone: bool | None = None) -> None:
    """The body of :meth:`MirageWorldModel.save_pretrained`: the config json, the trained modules (side_branch/,
    camera_embedding/, lora/, :func:`mirage.models.checkpoints.save_adapters` layout) and, when
    ``copy_backbone``, the backbone weights (backbone/), so the directory reloads bit for bit. By default the
    backbone is copied when it has random weights (a built-in config) or was itself the backbone/ of a
    world-model directory (so re-saving a trained tiny model stays self-contained); otherwise (a Wan2.2
    directory or hub id) it is referenced, not copied."""
    from mirage.models.checkpoints import save_adapters
    from mirage.models.lora import lora_adapters, remove_lora

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = replace(model.config)
    adapters = lora_adapters(model.transformer)
    if copy_backbone is None:
        source = Path(model.config.backbone)
        copy_backbone = getattr(model.backbone, "random_weights", False) or (
            source.name == "backbone" and (source.parent / CONFIG_NAME).is_file())
    if copy_backbone:
        backbone = model.backbone
        if adapters:  # the backbone is saved bare; its LoRA goes to lora/ with the other adapters
            backbone = copy.copy(model.backbone)
            backbone.transformer = copy.deepcopy(model.backbone.transformer)
            remove_lora(backbone.transformer)
        backbone.save_pretrained(path / "backbone")
        config.backbone = "backbone"
    save_adapters(model.transformer, path, lora_adapter=adapters[0] if adapters else "default")
    with open(path / CONFIG_NAME, "w") as f:
        json.dump(asdict(config), f, indent=2)


def resolve_pretrained(name_or_path, overrides: dict) -> tuple[WorldModelConfig, Path | None, str | None]:
    """Name or path (+ config overrides) -> (config, world-model directory or None, adapters directory or None).

    Raises FileNotFoundError for names that resolve to nothing and ValueError for bad config values."""
    name = str(name_or_path)
    adapters_path = None
    root: Path | None = None
    if name in SHIPPED:
        root = SHIPPED[name]
        if not (root / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{name!r} resolves to {root}, which holds no {CONFIG_NAME}: the trained "
                                    "tiny weights are not installed (train them with `mirage train` or use 'tiny')")
    if name in ("tiny", "wan22_5b-random"):
        config = WorldModelConfig.preset("tiny" if name == "tiny" else "wan22_5b", **overrides)
    elif root is not None or os.path.isfile(os.path.join(name, CONFIG_NAME)):
        root = root or Path(name)
        with open(root / CONFIG_NAME) as f:
            config = WorldModelConfig.from_dict({**json.load(f), **overrides})
        if any((root / sub).is_dir() for sub in ("side_branch", "camera_embedding", "lora")):
            adapters_path = str(root)
    elif os.path.isdir(name) or (name.count("/") == 1 and not name.startswith((".", "/", "~"))):
        if os.path.isdir(name) and not os.path.isdir(os.path.join(name, "transformer")):
            raise FileNotFoundError(f"{name} is neither a mirage world model directory ({CONFIG_NAME}) nor a "
                                    "diffusers Wan2.2 directory (transformer/ vae/)")
        config = WorldModelConfig.preset("wan22_5b", **{"backbone": name, **overrides})
    else:
        raise FileNotFoundError(f"{name!r} is not 'tiny', 'wan22_5b-random', 'mirage-tiny', a world model "
                                "directory, a Wan2.2 directory or a hub id")
    if root is not None and not os.path.isabs(config.backbone) and (root / config.backbone).is_dir():
        # resolved now, so that saving this model elsewhere still points at the weights
        config.backbone = str((root / config.backbone).resolve())
    return config, root, adapters_path


def build_transformer(backbone_transformer, config: WorldModelConfig, adapters_path: str | None):
    """MirageTransformer around the backbone: trained parts from ``adapters_path`` (side_branch/,
    camera_embedding/, lora/ as written by :func:`mirage.models.checkpoints.save_adapters`), fresh zero-init
    parts for what the config asks for and the directory lacks."""
    from mirage.models import MemorySideBranch, MirageTransformer, PluckerEmbedding
    from mirage.models.checkpoints import load_adapters

    if adapters_path is None:
        return MirageTransformer.from_backbone(
            backbone_transformer, injection_layers=config.injection_layers, concat_rays=config.concat_rays,
            side_branch=config.side_branch, camera=config.camera)
    if not os.path.isdir(adapters_path):
        raise FileNotFoundError(f"adapter directory not found: {adapters_path}")
    transformer = load_adapters(backbone_transformer, adapters_path)
    if config.side_branch and transformer.side_branch is None:
        transformer.side_branch = MemorySideBranch.from_transformer(
            backbone_transformer, config.injection_layers, config.concat_rays)
    if config.camera and transformer.camera_embedding is None:
        transformer.camera_embedding = PluckerEmbedding.from_transformer(backbone_transformer)
    return transformer


# reference_checkpoint_path: weights of the paper's reference implementation (a .safetensors / .pt file, a directory
# of them, or a list such as [vace file, lora file]; DiffSynth / VACE names), loaded completely or not at all
# (mirage.models.reference; reference_strict=False loads what fits and warns).
PART_PATHS = ("side_branch_path", "camera_embedding_path", "lora_path", "reference_checkpoint_path")


def load_parts(transformer, paths: dict, backbone=None, config: WorldModelConfig | None = None,
               reference_strict: bool = True) -> None:
    """Load single parts (each a directory in :func:`mirage.models.checkpoints.save_adapters`' layout) and reference
    weights (which need ``backbone`` and ``config``: the score latent of the reference's hint input is the
    backbone's encoding of an all-ones window of ``config``'s chunk length and image size)."""
    from safetensors.torch import load_file

    from mirage.models import MemorySideBranch, PluckerEmbedding, add_lora
    from mirage.models.checkpoints import LORA_CONFIG_NAME, LORA_WEIGHTS_NAME
    from mirage.models.lora import load_lora_state_dict, lora_adapters

    for key, path in paths.items():
        if key == "reference_checkpoint_path":
            missing = [p for p in ([path] if isinstance(path, (str, os.PathLike)) else path) if not os.path.exists(p)]
            if missing:
                raise FileNotFoundError(f"{key}: checkpoint not found: {', '.join(map(str, missing))}")
        elif not os.path.isdir(path):
            raise FileNotFoundError(f"{key}: checkpoint not found: {path}")
    dtype, device = transformer.dtype, transformer.device
    if "side_branch_path" in paths:
        branch = MemorySideBranch.from_pretrained(paths["side_branch_path"], torch_dtype=dtype)
        branch.check_compatible(transformer.backbone)
        transformer.side_branch = branch.to(device).eval()
    if "camera_embedding_path" in paths:
        camera = PluckerEmbedding.from_pretrained(paths["camera_embedding_path"], torch_dtype=dtype)
        width = transformer.backbone.config.num_attention_heads * transformer.backbone.config.attention_head_dim
        if camera.config.inner_dim != width:
            raise ValueError(f"camera embedding width {camera.config.inner_dim} != backbone width {width}")
        transformer.camera_embedding = camera.to(device).eval()
    if "lora_path" in paths:
        if lora_adapters(transformer):
            raise ValueError("lora_path given but the model already has a LoRA adapter (from its directory)")
        with open(os.path.join(paths["lora_path"], LORA_CONFIG_NAME)) as f:
            cfg = json.load(f)
        add_lora(transformer, rank=cfg["rank"], alpha=cfg["alpha"], dropout=cfg.get("dropout", 0.0),
                 targets=cfg["targets"])
        load_lora_state_dict(transformer, load_file(os.path.join(paths["lora_path"], LORA_WEIGHTS_NAME)))
    if "reference_checkpoint_path" in paths:
        from mirage.models.reference import load_reference_checkpoint
        from mirage.models.reference_hint import reference_score_latent

        if backbone is None or config is None:
            raise ValueError("reference weights need the backbone and the config (the score latent)")
        stride = backbone.spatial_stride
        frames = config.chunk_latent_frames(backbone.temporal_stride) + config.preceding_latent_frames
        score = reference_score_latent(backbone, frames, (config.height // stride, config.width // stride))
        report = load_reference_checkpoint(transformer, paths["reference_checkpoint_path"], score_latent=score,
                                           strict=reference_strict)
        logger.info("reference checkpoint %s: %s", paths["reference_checkpoint_path"], report.summary())
        transformer.reference_report = report


def depth_provider_from_name(name: str, device):
    if name == "readout":
        return ReadoutDepth()
    from mirage.perception.depth import DepthAnythingProvider

    return DepthAnythingProvider.from_pretrained(name, device=device)
