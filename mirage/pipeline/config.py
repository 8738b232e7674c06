"""WorldModelConfig: everything a saved world model needs besides its weights (``mirage_world_model.json``)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from mirage.pipeline.prediction import PREDICTION_TYPES

__all__ = ["CONFIG_NAME", "WorldModelConfig", "MEMORY_LATENTS", "MEMORY_LATENT_TYPES", "CHUNK_SEEDS",
           "MEMORY_UPDATES", "REFERENCE_INFERENCE"]

CONFIG_NAME = "mirage_world_model.json"

# What the rollout writes to a latent memory after each chunk (see :mod:`mirage.pipeline.rollout`, step 6).
MEMORY_LATENTS = ("denoised", "reencoded")
# The latent type a model's memory holds (and its side branch was trained on): "target" (what every target latent
# is; :meth:`MirageWorldModel.encode_images`) or "single_frame" (each frame encoded alone, the causal VAE's
# latent-0 type: every model saved before same-type latents, e.g. the shipped mirage-tiny v1).
MEMORY_LATENT_TYPES = ("target", "single_frame")
# Where a later chunk's clean context comes from (:func:`mirage.pipeline.rollout.next_context`): "reencoded" (the
# decoded frames encoded as the start of a window: latent-0-type codes, as a window starts in training) or
# "denoised" (the previous chunk's last denoised latents as they are: the reference code's choice).
CHUNK_SEEDS = ("reencoded", "denoised")
# How a new latent memory grows (:meth:`MirageWorldModel.new_memory`): "dedup" (one point per voxel of
# ``voxel_size``) or "append" (every point kept forever: the reference code's memory).
MEMORY_UPDATES = ("dedup", "append")
# The reference code's inference (``MirageConfig`` of its ``mirage_pipeline.py``: 8 preceding pixel frames, up to 4
# reference frames, no CFG) as config overrides: ``rollout(..., options=REFERENCE_INFERENCE)``, the action's
# ``inference: reference``, ``mirage eval --variants reference_inference``.
REFERENCE_INFERENCE = {"chunk_seed": "denoised", "memory_update": "append", "preceding_latent_frames": 2,
                       "reference_frames": 4}


@dataclass
class WorldModelConfig:
    """Everything a saved world model needs besides weights.

    backbone: a built-in backbone ("tiny", "wan22_5b-random"), a directory (absolute, or relative to the saved
        world-model directory) or a hub id.
    height, width: the image size; multiples of the autoencoder's spatial stride times the transformer's patch
        (32 for Wan2.2: 16x VAE, 2x2 patches), checked against the backbone by :meth:`check_backbone`.
    chunk_frames: pixel frames per chunk window, ``1 + s k`` for the backbone's temporal stride ``s`` (33 as in
        the paper at ``s = 4``). context_latent_frames: clean latent frames carried into each later chunk.
    memory_latents: what a chunk writes to a latent memory: "denoised" (default) stores the chunk's denoised
        latents at the pose of each latent frame's representative frame (the paper's reference code; they are
        target-type latents by construction and cost no encode); "reencoded" decodes, then re-encodes the
        representative frames with :meth:`MirageWorldModel.encode_images` (what a sensor keyframe gets).
    memory_latent_type: "target" (default) or "single_frame" (:data:`MEMORY_LATENT_TYPES`); a config saved without
        it predates same-type latents and loads as "single_frame" with "reencoded" memory latents, the setting its
        side branch was trained with (:meth:`from_dict`). The two differ only at temporal stride > 1.
    prediction_type: what the transformer outputs, "flow" (the velocity, as Wan2.2 is trained; default) or
        "sample" (the clean latents; mirage-tiny v2.1: :mod:`mirage.pipeline.prediction` says why).
    chunk_seed: a later chunk's clean context: "reencoded" (default; the decoded last frames encoded as a window
        start) or "denoised" (the previous chunk's last denoised latents, no encode: the reference code's choice,
        :data:`CHUNK_SEEDS`).
    memory_update: "dedup" (default; voxel dedup at ``voxel_size``) or "append" (no dedup, the reference code's
        memory): how the memories :meth:`MirageWorldModel.new_memory` makes grow (:data:`MEMORY_UPDATES`).
    guidance_scale: classifier-free guidance, ``uncond + s (cond - uncond)`` with the rollout's negative prompt
        (empty by default, as the reference's); 1.0 (default, the reference's ``no_cfg``) runs one pass a step.
    preceding_latent_frames: clean latents generated before a chunk's first, appended after its window (the
        reference's layout, 2 there; :mod:`mirage.pipeline.preceding`); 0 (default): none.
    reference_frames: at most this many earlier latents retrieved by voxel IoU (>= ``reference_iou_threshold`` with
        ``reference_voxel_size`` voxels) and prepended to each later chunk's window (the reference: 4, 0.04, 0.1;
        :mod:`mirage.pipeline.retrieval`); 0 (default): none.
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
    memory_latents: str = "denoised"
    memory_latent_type: str = "target"
    prediction_type: str = "flow"
    chunk_seed: str = "reencoded"
    memory_update: str = "dedup"
    guidance_scale: float = 1.0
    preceding_latent_frames: int = 0
    reference_frames: int = 0
    reference_iou_threshold: float = 0.04
    reference_voxel_size: float = 0.1

    def __post_init__(self):
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"image size {self.height}x{self.width} must be positive")
        if self.chunk_frames < 2:
            raise ValueError(f"chunk_frames must be at least 2 (a context frame and a generated one), "
                             f"got {self.chunk_frames}")
        if self.context_latent_frames < 1:
            raise ValueError(f"context_latent_frames must be >= 1, got {self.context_latent_frames}")
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if self.memory_latents not in MEMORY_LATENTS:
            raise ValueError(f"memory_latents must be one of {MEMORY_LATENTS}, got {self.memory_latents!r}")
        if self.memory_latent_type not in MEMORY_LATENT_TYPES:
            raise ValueError(f"memory_latent_type must be one of {MEMORY_LATENT_TYPES}, "
                             f"got {self.memory_latent_type!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if self.chunk_seed not in CHUNK_SEEDS:
            raise ValueError(f"chunk_seed must be one of {CHUNK_SEEDS}, got {self.chunk_seed!r}")
        if self.memory_update not in MEMORY_UPDATES:
            raise ValueError(f"memory_update must be one of {MEMORY_UPDATES}, got {self.memory_update!r}")
        if self.preceding_latent_frames < 0:
            raise ValueError(f"preceding_latent_frames must be >= 0, got {self.preceding_latent_frames}")
        if self.reference_frames < 0 or not self.reference_voxel_size > 0 or \
                not 0 <= self.reference_iou_threshold <= 1:
            raise ValueError(f"reference_frames must be >= 0 ({self.reference_frames}), reference_voxel_size > 0 "
                             f"({self.reference_voxel_size}), reference_iou_threshold in [0, 1] "
                             f"({self.reference_iou_threshold})")
        if not self.guidance_scale > 0:
            raise ValueError(f"guidance_scale must be positive (1.0: no guidance), got {self.guidance_scale}")
        if self.memory_latent_type == "single_frame" and self.memory_latents == "denoised":
            raise ValueError("memory_latent_type='single_frame' needs memory_latents='reencoded' (a chunk's "
                             "denoised latents are target-type group latents)")

    def chunk_latent_frames(self, temporal_stride: int) -> int:
        """Latent frames per chunk window for a backbone of ``temporal_stride`` (9 for 33 frames at stride 4)."""
        return 1 + (self.chunk_frames - 1) // int(temporal_stride)

    def check_backbone(self, spatial_stride: int, temporal_stride: int, patch_size=(1, 2, 2)) -> None:
        """Raise ValueError unless image size and chunk length fit a backbone with these strides."""
        multiple = int(spatial_stride) * int(patch_size[1])
        if self.height % multiple or self.width % multiple:
            raise ValueError(f"image size {self.height}x{self.width} must be positive multiples of {multiple} "
                             f"({spatial_stride}x autoencoder stride times {patch_size[1]}x{patch_size[2]} "
                             "transformer patches)")
        s = int(temporal_stride)
        if (self.chunk_frames - 1) % s:
            raise ValueError(f"chunk_frames must be 1 + {s}k with k >= 1 ({1 + s}, {1 + 2 * s}, ...) for a "
                             f"temporal stride of {s}, got {self.chunk_frames}")
        latents = self.chunk_latent_frames(s)
        if not 1 <= self.context_latent_frames < latents:
            raise ValueError(f"context_latent_frames must be in [1, {latents}), got {self.context_latent_frames}")

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
        if "memory_latent_type" not in data:  # saved before same-type latents: run it as it was trained
            data = {"memory_latent_type": "single_frame", "memory_latents": "reencoded", **data}
        return cls(**data)
