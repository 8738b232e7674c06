"""Where a world model comes from: its config, name resolution, trained parts (used by :mod:`mirage.world_model`).

A world-model directory (written by :meth:`MirageWorldModel.save_pretrained`)::

    mirage_world_model.json   WorldModelConfig
    backbone/                 diffusers layout, only for a random built-in backbone (else config names a path / id)
    side_branch/ camera_embedding/ lora/     :func:`mirage.models.checkpoints.save_adapters` layout
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path

from .camera import TEMPORAL_STRIDE
from .depth import ReadoutDepth

logger = logging.getLogger(__name__)

__all__ = ["CONFIG_NAME", "WorldModelConfig", "resolve_pretrained", "build_transformer", "load_parts",
           "depth_provider_from_name", "PART_PATHS", "SHIPPED"]

CONFIG_NAME = "mirage_world_model.json"
ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED = {"mirage-tiny": ASSETS / "mirage-tiny"}


@dataclass
class WorldModelConfig:
    """Everything a saved world model needs besides weights.

    backbone: a built-in backbone ("tiny", "wan22_5b-random"), a directory (absolute, or relative to the saved
        world-model directory) or a hub id. height, width: the image size (multiples of 32: 16x VAE times the
        transformer's 2x2 patches). chunk_frames: pixel frames per chunk window (1 + 4k; 33 as in the paper).
    """

    backbone: str = "tiny"
    height: int = 64
    width: int = 96
    chunk_frames: int = 9
    context_latent_frames: int = 1
    num_inference_steps: int = 20
    flow_shift: float = 5.0
    memory_scale: float = 1.0
    side_branch: bool = True
    camera: bool = True
    injection_layers: list[int] | None = None
    concat_rays: bool = False
    voxel_size: float | None = 0.05
    max_depth: float | None = None
    inconsistency_threshold: float = 0.1
    align_depth: bool = True
    min_alignment_cells: int = 8
    backbone_seed: int = 0

    def __post_init__(self):
        if self.height <= 0 or self.width <= 0 or self.height % 32 or self.width % 32:
            raise ValueError(f"image size {self.height}x{self.width} must be positive multiples of 32 "
                             "(16x VAE compression times 2x2 transformer patches)")
        if self.chunk_frames < 5 or (self.chunk_frames - 1) % TEMPORAL_STRIDE:
            raise ValueError(f"chunk_frames must be 1 + {TEMPORAL_STRIDE}k with k >= 1 (e.g. 9, 33), "
                             f"got {self.chunk_frames}")
        if not 1 <= self.context_latent_frames < self.chunk_latent_frames:
            raise ValueError(f"context_latent_frames must be in [1, {self.chunk_latent_frames}), "
                             f"got {self.context_latent_frames}")
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")

    @property
    def chunk_latent_frames(self) -> int:
        return 1 + (self.chunk_frames - 1) // TEMPORAL_STRIDE

    @classmethod
    def preset(cls, name: str, **overrides) -> "WorldModelConfig":
        presets = {
            "tiny": dict(backbone="tiny", height=64, width=96, chunk_frames=9),
            "wan22_5b": dict(backbone="wan22_5b-random", height=704, width=1280, chunk_frames=33),
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose one of {list(presets)}")
        return cls(**{**presets[name], **overrides})

    @classmethod
    def from_dict(cls, data: dict) -> "WorldModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown world model config keys {sorted(unknown)}")
        return cls(**data)



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
    from .models import MemorySideBranch, MirageTransformer, PluckerEmbedding
    from .models.checkpoints import load_adapters

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


# reference_checkpoint_path: weights of the paper's reference implementation (a .safetensors file or a directory of
# them, DiffSynth / VACE names), mapped where names and shapes allow (mirage.models.reference).
PART_PATHS = ("side_branch_path", "camera_embedding_path", "lora_path", "reference_checkpoint_path")


def load_parts(transformer, paths: dict) -> None:
    """Load single parts (each a directory in :func:`mirage.models.checkpoints.save_adapters`' layout)."""
    from safetensors.torch import load_file

    from .models import MemorySideBranch, PluckerEmbedding, add_lora
    from .models.checkpoints import LORA_CONFIG_NAME, LORA_WEIGHTS_NAME
    from .models.lora import load_lora_state_dict, lora_adapters

    for key, path in paths.items():
        if not (os.path.isdir(path) or (key == "reference_checkpoint_path" and os.path.isfile(path))):
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
        from .models.reference import load_reference_checkpoint

        # The reference's hint input is 96 channels (readout + an encoded "score" video), ours 49 (readout +
        # mask): the 48 readout channels carry over, the mask channel starts at zero.
        report = load_reference_checkpoint(transformer, paths["reference_checkpoint_path"],
                                           adapt_hint_embedding=True)
        logger.info("reference checkpoint %s: %s", paths["reference_checkpoint_path"], report.summary())
        transformer.reference_report = report


def depth_provider_from_name(name: str, device):
    if name == "readout":
        return ReadoutDepth()
    from .depth import DepthAnythingProvider

    return DepthAnythingProvider.from_pretrained(name, device=device)
