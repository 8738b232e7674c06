"""Deprecated: chunk bookkeeping lives in :mod:`mirage.pipeline.chunks`, results and progress in
:mod:`mirage.pipeline.outputs`, the rollout itself in :mod:`mirage.pipeline.rollout`."""

import warnings

from mirage.camera import TEMPORAL_STRIDE
from mirage.pipeline.chunks import Chunk
from mirage.pipeline.chunks import plan_chunks as _plan_chunks
from mirage.pipeline.outputs import (  # noqa: F401
    PHASES,
    CancelToken,
    PhaseTimer,
    RolloutCancelled,
    RolloutProgress,
    RolloutResult,
)


def plan_chunks(num_frames: int, chunk_latent_frames: int, context_latent_frames: int = 1,
                temporal_stride: int = TEMPORAL_STRIDE) -> list[Chunk]:
    """:func:`mirage.pipeline.chunks.plan_chunks` with the old default stride (Wan2.2's 4)."""
    return _plan_chunks(num_frames, chunk_latent_frames, context_latent_frames, temporal_stride=temporal_stride)


warnings.warn("mirage.rollout is deprecated; import from mirage.pipeline", DeprecationWarning, stacklevel=2)

__all__ = ["CancelToken", "RolloutCancelled", "RolloutProgress", "RolloutResult", "Chunk", "plan_chunks",
           "PhaseTimer", "PHASES"]
