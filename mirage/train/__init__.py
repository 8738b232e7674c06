"""Two-stage flow-matching fine-tuning (side branch, then side branch + LoRA): ``mirage train``."""

from mirage.train.config import PRESETS, TrainConfig
from mirage.train.export import export_world_model, load_world_model
from mirage.train.trainer import StepSampler, Trainer, TrainResult

__all__ = ["PRESETS", "TrainConfig", "Trainer", "TrainResult", "StepSampler", "export_world_model", "load_world_model"]
