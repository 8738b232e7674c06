"""Novel-view and closed-loop evaluation on held-out synthetic scenes.

Closed loop (as in Spatia / the Mirage paper): the camera goes out along a path and comes back the same
way, so frame ``T-1-i`` has the pose of frame ``i``. Every method generates the whole trajectory from the
first frame; the returning frames are compared with the ground truth of the outgoing ones they revisit
(PSNR_C, SSIM_C, LPIPS_C). Novel-view metrics (PSNR, SSIM, LPIPS) compare every generated frame with the
ground truth at its own pose. ``PSNR_self`` compares each returning frame with the method's own outgoing
frame at the same pose: how well it remembers what it generated, whatever the ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from mirage.data.clip import Clip
from mirage.data.synthetic import EVAL_SEED_OFFSET
from mirage.eval.metrics import psnr, ssim

__all__ = ["FRAME_PRESETS", "loop_pairs", "is_out_and_back", "evaluation_clips", "frame_metrics", "ClipScores"]

FRAME_PRESETS = {"small": 9, "medium": 17, "large": 33}


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
