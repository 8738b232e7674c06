"""Imagination checked against what the camera later saw: the memory from the past of a recording, the rollout along
the path the robot drove afterwards, the imagined frames against the recorded ones (``mirage eval-bag``).

A *recording* is a :class:`~mirage.data.clip.Clip` of every frame of a drive in time order (a bag read by
:mod:`mirage_ros.bags.eval_recording`, or any RGB-D sequence with cameras) plus each frame's stamp. :func:`evaluate_recording`:

1. **split**: frames ``[0, n_past)`` are the past, ``n_past = round(memory_fraction * N)``;
2. **memory**: the past's keyframes (:class:`mirage.frames.KeyframeSelector`, the node's default thresholds 0.1 m /
   10 deg) seed each memory method through ``world_model.observe`` (the node's path);
3. **target path**: the last past frame (where the robot stands: the rollout's conditioning frame, already in the
   memory) followed by every ``frame_stride``-th later frame, cut to ``1 + s k`` frames for the model's temporal
   stride ``s`` (and to ``max_frames``);
4. **imagine**: every method of :mod:`mirage.eval.methods` (default ``latent`` and ``none``) rolls out along those
   poses with the recorded intrinsics; the depth of generated frames is the model's own provider (default: the
   memory's depth, :class:`~mirage.perception.depth.ReadoutDepth`), never the later recording;
5. **compare** each imagined frame ``t >= 1`` with the frame recorded at that pose: PSNR and SSIM over the whole
   frame, and split by the **observed / imagined mask**: ``memory.visibility`` of the latent memory built in step 2
   at the target camera (latent cells, each covering its block of pixels): ``covered`` pixels show something the
   memory holds, ``uncovered`` ones only the model can fill. PSNR per part is one MSE over its pixels, SSIM per
   part the mean of the local SSIM map (:func:`mirage.metrics.ssim_map`) over the windows wholly inside it. LPIPS
   (whole frame only) when its weights are local. 3D / photometric consistency of the imagined frames against the
   recorded depth and poses (:mod:`mirage.eval.consistency`).

Outputs: ``results.json`` (settings, per-method means, per-frame values), ``results.md`` (the table and the per-frame
table), ``side_by_side.mp4`` (recorded | each method | the recorded frame with uncovered cells tinted red) and
``side_by_side.png`` (its middle frame).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mirage.data.clip import Clip

__all__ = ["RECORDING_METRICS", "split_recording", "coverage_masks", "masked_ssim", "frame_scores",
           "evaluate_recording"]

RECORDING_METRICS = ("coverage", "PSNR", "PSNR_covered", "PSNR_uncovered", "SSIM", "SSIM_covered", "SSIM_uncovered",
                     "LPIPS")
HIGHER = {"coverage": True, "PSNR": True, "PSNR_covered": True, "PSNR_uncovered": True, "SSIM": True,
          "SSIM_covered": True, "SSIM_uncovered": True, "LPIPS": False}


def split_recording(recording: Clip, memory_fraction: float = 0.5, frame_stride: int = 1,
                    max_frames: int | None = None, temporal_stride: int = 4, keyframe_translation: float = 0.1,
                    keyframe_rotation_deg: float = 10.0) -> tuple[Clip, Clip, list[int], list[int]]:
    """(memory keyframes, target clip, their indices in the recording, the target's indices); see the module
    docstring, steps 1-3. ValueError when the recording is too short for a past and one chunk of future."""
    from mirage.frames import KeyframeSelector

    N = recording.num_frames
    if not 0.0 < memory_fraction < 1.0:
        raise ValueError(f"memory_fraction must be in (0, 1), got {memory_fraction}")
    if frame_stride < 1:
        raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
    n_past = int(round(memory_fraction * N))
    later = list(range(n_past, N, frame_stride))
    if max_frames is not None:
        later = later[: max(0, int(max_frames) - 1)]
    usable = (len(later) // temporal_stride) * temporal_stride
    if n_past < 1 or usable < 1:
        raise ValueError(f"a recording of {N} frames split at {memory_fraction} (stride {frame_stride}) leaves "
                         f"{n_past} past and {len(later)} later frames; the rollout needs at least {temporal_stride} "
                         "later frames (record more, or lower --frame-stride)")
    target_index = [n_past - 1, *later[:usable]]
    selector = KeyframeSelector(keyframe_translation, keyframe_rotation_deg)
    keys = []
    for i in range(n_past):
        pose = recording.cam_to_world[i].double().numpy()
        if selector.is_keyframe(pose):
            selector.accept(pose)
            keys.append(i)
    memory = recording.select(keys)
    target = recording.select(target_index)
    return memory, target, keys, target_index


def coverage_masks(world_model, memory_frames: Clip, target: Clip) -> torch.Tensor:
    """(T, H, W) bool: pixels of the target views whose latent cell sees a point of the latent memory seeded with
    ``memory_frames`` (``memory.visibility``, each cell's mask spread over its pixels)."""
    from mirage.eval.methods import method_memory

    memory, _ = method_memory("latent", world_model, target, memory_frames)
    mask, _ = memory.visibility(target.intrinsics, target.cam_to_world, world_model.image_size,
                                world_model.latent_size)
    return F.interpolate(mask[:, None].float().cpu(), size=tuple(world_model.image_size), mode="nearest")[:, 0] > 0.5


def masked_ssim(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, window_size: int = 11) -> float:
    """Mean local SSIM over the windows lying wholly inside ``mask`` (N, H, W) (a window that straddles the mask's
    edge belongs to neither part); images (N, 3, H, W) in [0, 1]. NaN when no window fits inside."""
    from mirage.metrics import ssim_map

    local = ssim_map(prediction, target, window_size=window_size).mean(1)  # (N, H', W')
    outside = (~mask.bool())[:, None].float()
    inner = F.max_pool2d(outside, window_size, stride=1)[:, 0] == 0  # (N, H', W'): no pixel outside the mask
    inner = inner.to(local.device)
    if not bool(inner.any()):
        return float("nan")
    return float(local[inner].mean())


def frame_scores(generated: torch.Tensor, truth: torch.Tensor, covered: torch.Tensor, lpips=None
                 ) -> list[dict[str, float]]:
    """Per frame of (T, 3, H, W) videos (frame 0, the conditioning frame, included; callers drop it):
    :data:`RECORDING_METRICS` with ``covered`` (T, H, W) bool the observed / imagined mask."""
    from mirage.eval.closed_loop import masked_psnr
    from mirage.metrics import psnr, ssim

    if generated.shape != truth.shape or tuple(covered.shape) != (truth.shape[0], *truth.shape[-2:]):
        raise ValueError(f"shapes do not fit: generated {tuple(generated.shape)}, recorded {tuple(truth.shape)}, "
                         f"mask {tuple(covered.shape)}")
    whole_psnr, whole_ssim = psnr(generated, truth), ssim(generated, truth)
    whole_lpips = lpips(generated, truth) if lpips is not None else None
    out = []
    for t in range(truth.shape[0]):
        g, y, m = generated[t: t + 1], truth[t: t + 1], covered[t: t + 1]
        out.append({"coverage": float(m.float().mean()), "PSNR": float(whole_psnr[t]),
                    "PSNR_covered": masked_psnr(g, y, m), "PSNR_uncovered": masked_psnr(g, y, ~m),
                    "SSIM": float(whole_ssim[t]), "SSIM_covered": masked_ssim(g, y, m),
                    "SSIM_uncovered": masked_ssim(g, y, ~m),
                    "LPIPS": float(whole_lpips[t]) if whole_lpips is not None else float("nan")})
    return out


def _mean(values) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def _overlay(rgb: torch.Tensor, covered: torch.Tensor) -> torch.Tensor:
    """The recorded frames with uncovered pixels tinted red: (T, 3, H, W) in [0, 1]."""
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    tint = 0.5 * rgb + 0.5 * red
    return torch.where(covered[:, None], rgb, tint)


def _table(rows: dict[str, dict[str, float]], label: str = "method") -> str:
    from mirage.eval.report import markdown_table

    return markdown_table(rows, (), RECORDING_METRICS, HIGHER, label=label)


def evaluate_recording(world_model, recording: Clip, output_dir: str | os.PathLike, *,
                       stamps: Sequence[float] | None = None, methods: Sequence[str] = ("latent", "none"),
                       memory_fraction: float = 0.5, frame_stride: int = 1, max_frames: int | None = None,
                       keyframe_translation: float = 0.1, keyframe_rotation_deg: float = 10.0, seed: int = 0,
                       num_inference_steps: int | None = None, lpips_dir: str | None = None, video: bool = True,
                       consistency: bool = True, settings: dict | None = None) -> dict:
    """Steps 1-5 of the module docstring; returns {"table", "consistency", "per_frame", "settings", "notes"}.

    recording: every frame in time order at the model's image size, with depth; stamps (N,) seconds (default
    the frame index).
    """
    from mirage.eval.closed_loop import masked_psnr
    from mirage.eval.consistency import CONSISTENCY_HIGHER_IS_BETTER, CONSISTENCY_METRICS, consistency_metrics
    from mirage.eval.methods import ALL_METHODS, run_method
    from mirage.metrics import lpips_status
    from mirage.eval.report import markdown_table, side_by_side
    from mirage.media import write_png, write_video

    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown methods {unknown}; choose from {ALL_METHODS}")
    if recording.depth is None:
        raise ValueError("the recording has no depth: the memory cannot be built")
    stamps = [float(i) for i in range(recording.num_frames)] if stamps is None else [float(s) for s in stamps]
    if len(stamps) != recording.num_frames:
        raise ValueError(f"{len(stamps)} stamps for {recording.num_frames} frames")
    # 1.-3. split, keyframes, target path
    memory_frames, target, keys, target_index = split_recording(
        recording, memory_fraction, frame_stride, max_frames, world_model.temporal_stride, keyframe_translation,
        keyframe_rotation_deg)
    covered = coverage_masks(world_model, memory_frames, target)
    lpips, lpips_message = lpips_status(lpips_dir, device=world_model.device)
    # 4.-5. imagine and compare
    generated, per_frame, table, geometry = {}, {}, {}, {}
    for method in methods:
        frames = run_method(method, world_model, target, seed=seed, num_inference_steps=num_inference_steps,
                            gt_depth=False, memory_frames=memory_frames)
        generated[method] = frames
        scores = frame_scores(frames, target.rgb, covered, lpips)[1:]  # frame 0 is the conditioning frame
        per_frame[method] = [{"frame": target_index[t + 1], "stamp": stamps[target_index[t + 1]], **s}
                             for t, s in enumerate(scores)]
        table[method] = {k: _mean(s[k] for s in scores) for k in RECORDING_METRICS}
        # one MSE over every covered / uncovered pixel of all frames, beside the per-frame means
        table[method]["PSNR_covered_pooled"] = masked_psnr(frames[1:], target.rgb[1:], covered[1:])
        table[method]["PSNR_uncovered_pooled"] = masked_psnr(frames[1:], target.rgb[1:], ~covered[1:])
        if consistency:
            geometry[method] = consistency_metrics(frames, target.intrinsics, target.cam_to_world, target.depth)
    if consistency:
        geometry = {"recorded": consistency_metrics(target.rgb, target.intrinsics, target.cam_to_world,
                                                    target.depth), **geometry}
    span = (stamps[0], stamps[target_index[0]], stamps[target_index[-1]])
    all_settings = {"frames in the recording": recording.num_frames, "image_size": list(recording.image_size),
                    "memory": f"{len(keys)} keyframes of the first {target_index[0] + 1} frames "
                              f"({span[0]:.2f}..{span[1]:.2f} s), thresholds {keyframe_translation} m / "
                              f"{keyframe_rotation_deg} deg",
                    "imagined": f"{target.num_frames - 1} frames after the context frame, recording frames "
                                f"{target_index[1]}..{target_index[-1]} (every {frame_stride}), up to {span[2]:.2f} s",
                    "methods": list(methods), "seed": seed,
                    "num_inference_steps": num_inference_steps or world_model.config.num_inference_steps,
                    "depth of generated frames": type(world_model.depth_provider).__name__, **(settings or {})}
    notes = [lpips_message,
             f"coverage: share of the imagined frames' pixels whose latent cell sees the memory (mean "
             f"{float(covered[1:].float().mean()):.3f}); *_covered / *_uncovered split every frame by it; "
             "PSNR_*_pooled: one MSE over all frames' covered / uncovered pixels",
             "frame 0 (the last remembered frame, where the rollout starts) is left out of every mean"]
    # outputs
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"settings": all_settings, "table": table, "consistency": geometry or None, "per_frame": per_frame,
              "notes": notes, "memory_keyframes": keys, "target_frames": target_index}

    def clean(x):
        if isinstance(x, float) and math.isnan(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    (out_dir / "results.json").write_text(json.dumps(clean(result), indent=2))
    metrics = (*RECORDING_METRICS, "PSNR_covered_pooled", "PSNR_uncovered_pooled")
    text = "# mirage eval-bag\n\n" + "\n".join(f"- {k}: {v}" for k, v in all_settings.items()) + "\n\n"
    text += markdown_table(table, notes, metrics, {**HIGHER, "PSNR_covered_pooled": True,
                                                   "PSNR_uncovered_pooled": True})
    if geometry:
        text += "\n## Consistency (against the recorded depth and poses)\n\n" + markdown_table(
            geometry, (), CONSISTENCY_METRICS, CONSISTENCY_HIGHER_IS_BETTER)
    text += "\n## Per frame\n\n| frame | stamp (s) | coverage | " + " | ".join(
        f"{m} PSNR / covered / uncovered" for m in methods) + " |\n|---|---|---|" + "---|" * len(methods) + "\n"
    for t in range(len(per_frame[methods[0]])):
        first = per_frame[methods[0]][t]
        cells = " | ".join("{:.2f} / {} / {}".format(per_frame[m][t]["PSNR"], *(
            "n/a" if math.isnan(per_frame[m][t][k]) else f"{per_frame[m][t][k]:.2f}"
            for k in ("PSNR_covered", "PSNR_uncovered"))) for m in methods)
        text += f"| {first['frame']} | {first['stamp']:.2f} | {first['coverage']:.3f} | {cells} |\n"
    (out_dir / "results.md").write_text(text)
    if video:
        panels = {"recorded": target.rgb, **generated, "memory (red: unseen)": _overlay(target.rgb, covered)}
        frames = side_by_side(panels)
        write_video(out_dir / "side_by_side.mp4", frames)
        write_png(out_dir / "side_by_side.png", frames[len(frames) // 2])  # a still of the middle frame
    return result
