"""Training configuration: one dataclass, JSON round trip, and presets ("tiny" for CPU / CI, "wan22_5b")."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace

__all__ = ["TrainConfig", "PRESETS", "LR_SCHEDULES", "SIGMA_SAMPLINGS", "lr_factor"]

LR_SCHEDULES = ("constant", "cosine")
# How training draws noise levels: one per clip, logit-normal (ours) or one per latent frame, uniform (the reference).
SIGMA_SAMPLINGS = ("per_clip_logit_normal", "per_frame_uniform_shift")
MIN_LR_FRACTION = 0.1  # where the cosine schedule ends, as a fraction of the peak learning rate


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str = "constant") -> float:
    """Learning-rate multiplier after ``step`` optimizer steps: linear warm-up to 1 over ``warmup_steps``, then 1
    ("constant") or a cosine from 1 to ``MIN_LR_FRACTION`` at ``total_steps`` ("cosine"). A resumed run with more
    ``total_steps`` continues the curve stretched to the new end."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return MIN_LR_FRACTION + (1.0 - MIN_LR_FRACTION) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class TrainConfig:
    """Everything that decides a training run (the data source is given separately).

    model: what :meth:`MirageWorldModel.from_pretrained` loads (a built-in name, or a world-model directory
        such as stage 1's output, which is how stage 2 starts).
    stage: 0 trains the camera-conditioned backbone (transformer + camera embedding, no memory; a side branch
        stays frozen and unfed): pretraining for a small backbone that has no pretrained video model behind it
        (mirage-tiny), before stages 1 and 2. 1 trains the side branch on the frozen backbone (VAE frozen too);
        2 adds LoRA on the backbone's self-attention and trains LoRA + side branch (LoRA only with
        ``freeze_side_branch``).
    freeze_side_branch: stage 2 keeps the side branch frozen (bit-identical) and trains LoRA (+ the camera
        embedding when ``train_camera_embedding``), as the reference's "lora" stage does; stages 0 and 1 ignore it
        (stage 1 trains the side branch either way, the reference's "vace" stage). Default False: ours trains
        both jointly in stage 2.
    sigma_sampling: "per_clip_logit_normal" (default: one noise level per clip, sigmoid(N(logit_mean,
        logit_std)) shifted by ``flow_shift``) or "per_frame_uniform_shift" (the reference's: one per latent
        frame, U[0, 1) shifted by ``flow_shift``; logit_mean / logit_std unused). Context frames are clean (0)
        and out of the loss in both.
    train_camera_embedding: stages 1 and 2 also train the camera embedding (True: a pretrained backbone such
        as Wan2.2 has none; False after stage 0 trained it with the backbone).
    memory_frames: clip frames (pixel indices) that seed each sample's memory, as the first frame of a
        rollout does. context_latent_frames: clean latent frames carried at the start of a window (None: the
        world model's setting). memory_dropout: chance of an empty memory for a sample.
    mixed_precision: "no" or "bf16" (autocast; master weights stay float32).
    lr_schedule: "constant" or "cosine" after warm-up (:func:`lr_factor`).
    """

    model: str = "tiny"
    stage: int = 1
    train_camera_embedding: bool = True
    steps: int = 1000
    batch_size: int = 1
    grad_accum: int = 1
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    max_grad_norm: float = 1.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    lora_rank: int = 64
    lora_alpha: float | None = None
    logit_mean: float = 0.0
    logit_std: float = 1.0
    flow_shift: float = 5.0
    sigma_sampling: str = "per_clip_logit_normal"
    freeze_side_branch: bool = False
    memory_frames: tuple[int, ...] = (0,)
    context_latent_frames: int | None = None
    memory_dropout: float = 0.0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    seed: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 1
    num_workers: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.adam_betas = tuple(float(b) for b in self.adam_betas)
        self.memory_frames = tuple(int(i) for i in self.memory_frames)
        problems = []
        if self.stage not in (0, 1, 2):
            problems.append(f"stage must be 0, 1 or 2, got {self.stage}")
        for name in ("steps", "batch_size", "grad_accum", "lora_rank", "log_every"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpoint_every", "num_workers", "weight_decay"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.keep_checkpoints < 1:
            problems.append(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if not self.learning_rate > 0:
            problems.append(f"learning_rate must be positive, got {self.learning_rate}")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.sigma_sampling not in SIGMA_SAMPLINGS:
            problems.append(f"sigma_sampling must be one of {SIGMA_SAMPLINGS}, got {self.sigma_sampling!r}")
        if not isinstance(self.freeze_side_branch, bool):
            problems.append(f"freeze_side_branch must be true or false, got {self.freeze_side_branch!r}")
        if not (isinstance(self.flow_shift, (int, float)) and self.flow_shift > 0):
            problems.append(f"flow_shift must be positive, got {self.flow_shift!r}")
        if not self.logit_std > 0:
            problems.append(f"logit_std must be positive, got {self.logit_std}")
        if self.mixed_precision not in ("no", "bf16"):
            problems.append(f"mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}")
        if not 0.0 <= self.memory_dropout < 1.0:
            problems.append(f"memory_dropout must be in [0, 1), got {self.memory_dropout}")
        if not self.memory_frames or min(self.memory_frames) < 0:
            problems.append(f"memory_frames must be non-negative frame indices, got {self.memory_frames}")
        if self.context_latent_frames is not None and self.context_latent_frames < 1:
            problems.append(f"context_latent_frames must be >= 1, got {self.context_latent_frames}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            problems.append(f"max_grad_norm must be positive or None, got {self.max_grad_norm}")
        if problems:
            raise ValueError("bad training config: " + "; ".join(problems))

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown training preset {name!r}; choose one of {list(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def replace(self, **changes) -> "TrainConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}")
        return cls(**data)

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainConfig":
        with open(path) as f:
            return cls.from_dict(json.load(f))


PRESETS: dict[str, dict] = {
    # CPU-sized: the tiny backbone at 64x96, 9-frame clips (3 latent frames), LoRA rank 8.
    "tiny": dict(model="tiny", steps=200, batch_size=2, learning_rate=1e-3, lora_rank=8, warmup_steps=10,
                 checkpoint_every=50, memory_dropout=0.1),
    # The paper's setting on Wan2.2-TI2V-5B: rank-64 LoRA, bf16, gradient checkpointing.
    "wan22_5b": dict(model="Wan-AI/Wan2.2-TI2V-5B-Diffusers", steps=10000, batch_size=1, grad_accum=8,
                     learning_rate=1e-4, lora_rank=64, warmup_steps=200, mixed_precision="bf16",
                     gradient_checkpointing=True, checkpoint_every=500, context_latent_frames=2,
                     memory_dropout=0.1),
}
# The reference implementation's training (microsoft/LatentSpatialMemory scripts/train.py defaults) on the same
# backbone and its README's command: per-frame sigma (U[0, 1) shifted by 5), the side branch frozen in stage 2 (its
# "lora" stage trains LoRA only), rank-32 LoRA with alpha 32, AdamW lr 1e-5 with weight decay 0.01, a constant rate
# without warm-up, batch 1 x 4 accumulated, 10000 steps per stage, no memory dropout (it drops retrieved and
# preceding frames, which our training does not use). Not the reference: its LoRA also covers cross-attention and
# the FFN (ours: self-attention only).
PRESETS["reference"] = dict(PRESETS["wan22_5b"], sigma_sampling="per_frame_uniform_shift", freeze_side_branch=True,
                            lora_rank=32, lora_alpha=32.0, learning_rate=1e-5, weight_decay=0.01, warmup_steps=0,
                            grad_accum=4, memory_dropout=0.0)
