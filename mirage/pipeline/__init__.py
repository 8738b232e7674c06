"""The world model and its rollout, split as diffusers splits a model from its pipeline.

* :mod:`~mirage.pipeline.model`: :class:`MirageWorldModel` (components, encode / decode, observe, new_memory);
* :mod:`~mirage.pipeline.loading`: ``from_pretrained`` / ``save_pretrained`` bodies, name resolution, parts;
* :mod:`~mirage.pipeline.config`: :class:`WorldModelConfig`;
* :mod:`~mirage.pipeline.rollout`: the rollout as numbered steps over a :class:`RolloutState`;
* :mod:`~mirage.pipeline.conditioning`: the one chunk-conditioning function, shared with training;
* :mod:`~mirage.pipeline.chunks`: chunk planning and goal padding;
* :mod:`~mirage.pipeline.outputs`: result, progress, cancellation, timings;
* :mod:`~mirage.pipeline.sampling`: flow-matching sampling of one window with clean context.
"""

from mirage.pipeline.chunks import Chunk, pad_trajectory, padded_length, plan_chunks
from mirage.pipeline.conditioning import ChunkConditioning, chunk_conditioning, window_relative_poses
from mirage.pipeline.config import CONFIG_NAME, MEMORY_LATENTS, WorldModelConfig
from mirage.pipeline.loading import SHIPPED, load_world_model, save_world_model
from mirage.pipeline.model import MirageWorldModel
from mirage.pipeline.outputs import (
    PHASES,
    CancelToken,
    PhaseTimer,
    RolloutCancelled,
    RolloutProgress,
    RolloutResult,
)
from mirage.pipeline.rollout import MODES, RolloutHooks, RolloutState, rollout
from mirage.pipeline.sampling import make_scheduler, sample_chunk

__all__ = [
    "MirageWorldModel",
    "WorldModelConfig",
    "CONFIG_NAME",
    "MEMORY_LATENTS",
    "SHIPPED",
    "load_world_model",
    "save_world_model",
    "rollout",
    "RolloutState",
    "RolloutHooks",
    "MODES",
    "ChunkConditioning",
    "chunk_conditioning",
    "window_relative_poses",
    "Chunk",
    "plan_chunks",
    "padded_length",
    "pad_trajectory",
    "RolloutResult",
    "RolloutProgress",
    "CancelToken",
    "RolloutCancelled",
    "PhaseTimer",
    "PHASES",
    "make_scheduler",
    "sample_chunk",
]
