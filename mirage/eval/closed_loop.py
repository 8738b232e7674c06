"""Novel-view and closed-loop evaluation on held-out synthetic scenes.

Closed loop (as in Spatia / the Mirage paper): the camera goes out along a path and comes back the same
way, so frame ``T-1-i`` has the pose of frame ``i``. Every method generates the whole trajectory from the
first frame; the returning frames are compared with the ground truth of the outgoing ones they revisit
(PSNR_C, SSIM_C, LPIPS_C). Novel-view metrics (PSNR, SSIM, LPIPS) compare every generated frame with the
ground truth at its own pose. ``PSNR_self`` compares each returning frame with the method's own outgoing
frame at the same pose: how well it remembers what it generated, whatever the ground truth.
That is the ``"loop"`` protocol (:func:`evaluation_clips`, :func:`frame_metrics`), kept as it was for comparison.

The ``"memory"`` protocol (:func:`memory_evaluation_tasks`, :func:`memory_frame_metrics`) evaluates where memory
is needed: held-out :class:`~mirage.data.memory_task.MemoryTask` items, a fresh room each, whose memory is built
from an earlier pass through the room and whose 33-frame (default) out-and-back target starts from one context
frame and turns or walks out of its view. Exactly:

* **conditioning frames** ``task.context_frames`` (frame 0) are left out of every mean;
* **scored frames** ``task.scored_frames``: the returning frames (after the turning point ``(T-1)/2``) in which at
  least ``min_frame_fraction`` (default 0.1) of the valid static pixels are not seen by the context frame but
  were seen by the earlier pass (:mod:`mirage.data.visibility`): what only the memory holds;
* PSNR, SSIM, LPIPS: every frame but the conditioning ones vs the ground truth at its pose;
* PSNR_C, SSIM_C, LPIPS_C: the scored frames vs the ground truth at their pose;
* PSNR_self: the scored frames vs the method's own outgoing frames at the same pose (frame ``T-1-t``; NaN on a
  target that is not out and back, e.g. a recorded path, :func:`~mirage.data.memory_task.recorded_memory_task`);
* PSNR_M: PSNR over the needs-memory pixels of the scored frames only (one MSE over all of them);
* needs_memory: the task's share of needs-memory pixels over its returning frames (same for every method).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from mirage.data.clip import Clip
from mirage.data.synthetic import EVAL_SEED_OFFSET
from mirage.metrics import psnr, ssim

__all__ = ["FRAME_PRESETS", "PROTOCOLS", "loop_pairs", "is_out_and_back", "evaluation_clips", "frame_metrics",
           "ClipScores", "memory_evaluation_tasks", "memory_frame_metrics", "masked_psnr"]

FRAME_PRESETS = {"small": 9, "medium": 17, "large": 33}
PROTOCOLS = ("loop", "memory")  # frame_metrics on evaluation_clips; memory_frame_metrics on memory_evaluation_tasks


def loop_pairs(num_frames: int) -> tuple[list[int], list[int]]:
    """(returning, outgoing) frame indices of an out-and-back trajectory of ``num_frames`` (odd) frames:
    returning ``T-1-i`` revisits outgoing ``i`` for ``i < (T-1)/2`` (the turning point pairs with itself)."""
    if num_frames < 3 or num_frames % 2 == 0:
        raise ValueError(f"an out-and-back trajectory needs an odd number of frames >= 3, got {num_frames}")
    outgoing = list(range((num_frames - 1) // 2))
    return [num_frames - 1 - i for i in outgoing], outgoing


def is_out_and_back(cam_to_world: torch.Tensor, atol: float = 1e-4) -> bool:
    """True when frame ``T-1-i`` has the pose of frame ``i`` for every i (T odd): the closed-loop metrics apply."""
    T = cam_to_world.shape[0]
    if T < 3 or T % 2 == 0:
        return False
    return bool(torch.allclose(cam_to_world, cam_to_world.flip(0), atol=atol))


def evaluation_clips(num_scenes: int, num_frames: int, image_size: Sequence[int], seed: int = EVAL_SEED_OFFSET,
                     paths: Sequence[str] = ("forward", "turn", "orbit"), num_objects: int = 6, num_dynamic: int = 0,
                     trajectory_kwargs: dict | None = None) -> list[Clip]:
    """Held-out out-and-back clips: scene ``seed + i`` goes out along ``paths[i % len]`` and comes back."""
    from mirage.scenes import Scene

    if num_scenes < 1:
        raise ValueError(f"num_scenes must be >= 1, got {num_scenes}")
    loop_pairs(num_frames)
    H, W = int(image_size[0]), int(image_size[1])
    clips = []
    for i in range(num_scenes):
        scene = Scene.random(seed + i, num_objects=num_objects, num_dynamic=num_dynamic)
        path = paths[i % len(paths)]
        K = scene.default_intrinsics(H, W)
        c2w = scene.trajectory("loop", num_frames, path=path, **(trajectory_kwargs or {}))
        frames = scene.render_batch(K, c2w, H, W, times=torch.arange(num_frames, dtype=torch.float32) / 8.0)
        clips.append(Clip(rgb=frames.rgb.float().clamp(0, 1), intrinsics=K.expand(num_frames, 3, 3).clone(),
                          cam_to_world=c2w.float(), depth=frames.depth.float(), dynamic=frames.dynamic.bool(),
                          name=f"scene{seed + i}-loop-{path}-{num_frames}f"))
    return clips


@dataclass
class ClipScores:
    """Mean metrics of one method on one clip; NaN where a metric was skipped (LPIPS without weights)."""

    values: dict[str, float] = field(default_factory=dict)


def frame_metrics(generated: torch.Tensor, truth: torch.Tensor,
                  lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                  closed_loop: bool = True) -> ClipScores:
    """Metrics of one generated clip. generated, truth: (T, 3, H, W) in [0, 1].

    Frame 0 (the given first frame) is left out of the novel-view means. ``closed_loop=False`` (a clip that is
    not out-and-back, e.g. RealEstate10K) gives NaN for the closed-loop metrics.
    """
    if generated.shape != truth.shape:
        raise ValueError(f"generated {tuple(generated.shape)} and ground truth {tuple(truth.shape)} differ")
    T = generated.shape[0]
    nan = float("nan")
    gen, gt = generated[1:], truth[1:]
    values = {"PSNR": psnr(gen, gt).mean().item(), "SSIM": ssim(gen, gt).mean().item(),
              "LPIPS": lpips(gen, gt).mean().item() if lpips is not None else nan}
    if not closed_loop:
        return ClipScores({**values, "PSNR_C": nan, "SSIM_C": nan, "LPIPS_C": nan, "PSNR_self": nan})
    back, out = loop_pairs(T)
    values |= {"PSNR_C": psnr(generated[back], truth[out]).mean().item(),
              "SSIM_C": ssim(generated[back], truth[out]).mean().item(),
              "LPIPS_C": lpips(generated[back], truth[out]).mean().item() if lpips is not None else nan,
              "PSNR_self": psnr(generated[back], generated[out]).mean().item()}
    return ClipScores({k: (v if math.isfinite(v) or math.isnan(v) else nan) for k, v in values.items()})


def memory_evaluation_tasks(num_tasks: int, image_size: Sequence[int], num_frames: int = 33,
                            seed: int = EVAL_SEED_OFFSET, variants: Sequence[str] | None = None,
                            earlier_frames: int = 16, **task_kwargs) -> list:
    """Held-out memory tasks: room ``seed + i`` with variant ``variants[i % len]`` (default all of
    :data:`mirage.data.memory_task.VARIANTS`); ``task_kwargs`` go to :func:`~mirage.data.memory_task.make_memory_task`
    (``num_objects``, ``num_dynamic``, ``min_needs_memory``, ``min_frame_fraction``, ...)."""
    from mirage.data.memory_task import VARIANTS, make_memory_task

    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    variants = tuple(variants or VARIANTS)
    return [make_memory_task(seed + i, image_size, variants[i % len(variants)], num_frames, earlier_frames,
                             **task_kwargs) for i in range(num_tasks)]


def masked_psnr(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, max_db: float = 100.0) -> float:
    """PSNR in dB of one MSE over the pixels where ``mask`` (N, H, W) is True; images (N, 3, H, W) in [0, 1].
    NaN when the mask is empty."""
    if prediction.shape != target.shape or tuple(mask.shape) != (prediction.shape[0], *prediction.shape[-2:]):
        raise ValueError(f"masked_psnr: shapes {tuple(prediction.shape)}, {tuple(target.shape)}, mask "
                         f"{tuple(mask.shape)} do not fit")
    count = int(mask.sum()) * prediction.shape[1]
    if count == 0:
        return float("nan")
    err = (prediction.double() - target.double()).pow(2) * mask[:, None].double()
    mse = float(err.sum()) / count
    return min(max_db, 10.0 * math.log10(1.0 / max(mse, 1e-30)))


def memory_frame_metrics(generated: torch.Tensor, task, lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                         | None = None) -> ClipScores:
    """Metrics of one generated target clip (T, 3, H, W) in [0, 1] on a memory task (see the module docstring)."""
    truth = task.target.rgb
    if generated.shape != truth.shape:
        raise ValueError(f"generated {tuple(generated.shape)} and ground truth {tuple(truth.shape)} differ")
    T = generated.shape[0]
    nan = float("nan")
    given = set(task.context_frames)
    novel = [t for t in range(T) if t not in given]
    scored = [t for t in task.scored_frames if t not in given]
    gen, gt = generated[novel], truth[novel]
    values = {"PSNR": psnr(gen, gt).mean().item(), "SSIM": ssim(gen, gt).mean().item(),
              "LPIPS": lpips(gen, gt).mean().item() if lpips is not None else nan,
              "needs_memory": float(task.needs_memory)}
    if not scored:
        values |= {"PSNR_C": nan, "SSIM_C": nan, "LPIPS_C": nan, "PSNR_self": nan, "PSNR_M": nan}
    else:
        gen, gt = generated[scored], truth[scored]
        mirror = [T - 1 - t for t in scored]
        loop = is_out_and_back(task.target.cam_to_world)  # a recorded path has no outgoing twin frame
        values |= {"PSNR_C": psnr(gen, gt).mean().item(), "SSIM_C": ssim(gen, gt).mean().item(),
                   "LPIPS_C": lpips(gen, gt).mean().item() if lpips is not None else nan,
                   "PSNR_self": psnr(gen, generated[mirror]).mean().item() if loop else nan,
                   "PSNR_M": masked_psnr(gen, gt, task.needs_memory_mask[scored])}
    return ClipScores({k: (v if math.isfinite(v) or math.isnan(v) else nan) for k, v in values.items()})
