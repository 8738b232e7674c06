"""Run every method on every clip, score them, write the table and the side-by-side videos."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from mirage.data.clip import Clip
from mirage.data.memory_task import MemoryTask
from mirage.eval.closed_loop import frame_metrics, is_out_and_back, memory_frame_metrics
from mirage.eval.methods import ALL_METHODS, METHODS, run_method
from mirage.metrics import lpips_status
from mirage.eval.report import side_by_side, still_frames, summarize, write_report
from mirage.media import write_png, write_video

logger = logging.getLogger(__name__)

__all__ = ["evaluate"]


def evaluate(world_model, clips: Sequence[Clip | MemoryTask], output_dir: str | os.PathLike,
             methods: Sequence[str] = METHODS,
             *, num_inference_steps: int | None = None, seed: int = 0, gt_depth: bool = True,
             lpips_dir: str | None = None, videos: bool = True, settings: dict | None = None,
             progress: bool = True, variants: Sequence = (), variant_resources=None, skipped_variants=None,
             consistency: bool = True, consistency_detector: str = "sift") -> dict:
    """Evaluate ``methods`` and ``variants`` on ``clips``; returns {"table", "per_clip", "notes", "seconds",
    "consistency"}. Closed-loop metrics are computed on out-and-back clips (:func:`is_out_and_back`), novel-view
    metrics on all.

    Items may also be :class:`~mirage.data.memory_task.MemoryTask` (the memory protocol): the memory methods
    are seeded with the task's earlier pass, the target clip is generated and scored with
    :func:`~mirage.eval.closed_loop.memory_frame_metrics` (conditioning frame excluded, scored frames only).

    variants: :class:`~mirage.eval.variants.VariantSpec` rows (the ablations, run with
    :func:`~mirage.eval.variants.run_variant` and ``variant_resources``) after the methods; ``skipped_variants``
    {name: reason} go into the notes. consistency: also score every row (and the ground truth) with
    :func:`mirage.eval.consistency.consistency_metrics` against the clip's cameras and depth.

    Writes ``results.json``, ``results.md`` and (``videos``) ``videos/<clip>.mp4`` with the ground truth and
    every method side by side, and for memory tasks ``stills/<clip>.png``: two of its scored (returning) frames
    of that video, one above the other, at twice the size.
    """
    from mirage.eval.consistency import CONSISTENCY_METRICS, consistency_metrics
    from mirage.eval.variants import run_variant

    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown or not (methods or variants):
        raise ValueError(f"unknown methods {unknown}; choose from {ALL_METHODS}")
    rows = [*methods, *(v.name for v in variants)]
    if len(set(rows)) != len(rows):
        raise ValueError(f"rows must be unique, got {rows}")
    if not clips:
        raise ValueError("no clips to evaluate")
    output_dir = Path(output_dir)
    lpips, lpips_message = lpips_status(lpips_dir, device=world_model.device)
    logger.info(lpips_message)
    per_clip: dict[str, dict[str, dict[str, float]]] = {m: {} for m in rows}
    geometry: dict[str, dict[str, dict[str, float]]] = {m: {} for m in ["ground truth", *rows]}
    seconds: dict[str, float] = {m: 0.0 for m in rows}
    bar = tqdm(total=len(clips) * len(rows), desc="evaluating", disable=not progress)
    for item in clips:
        task = item if isinstance(item, MemoryTask) else None
        clip = task.target if task is not None else item
        memory_frames = task.earlier if task is not None else None
        generated = {}
        for row in rows:
            start = time.perf_counter()
            if row in methods:
                frames = run_method(row, world_model, clip, seed=seed, num_inference_steps=num_inference_steps,
                                    gt_depth=gt_depth, memory_frames=memory_frames)
            else:
                spec = next(v for v in variants if v.name == row)
                frames = run_variant(spec, world_model, clip, memory_frames=memory_frames, seed=seed,
                                     num_inference_steps=num_inference_steps, resources=variant_resources)
            seconds[row] += time.perf_counter() - start
            generated[row] = frames
            if task is not None:
                per_clip[row][clip.name] = memory_frame_metrics(frames, task, lpips).values
            else:
                per_clip[row][clip.name] = frame_metrics(frames, clip.rgb, lpips,
                                                         closed_loop=is_out_and_back(clip.cam_to_world)).values
            bar.update(1)
        if consistency and clip.num_frames >= 2:
            for row, frames in {"ground truth": clip.rgb, **generated}.items():
                geometry[row][clip.name] = consistency_metrics(frames, clip.intrinsics, clip.cam_to_world, clip.depth,
                                                               detector=consistency_detector)
        if videos:
            video = side_by_side({"ground truth": clip.rgb, **generated})
            write_video(output_dir / "videos" / f"{clip.name}.mp4", video)  # creates videos/
            if task is not None and task.scored_frames:  # two returning frames, the ones a reader looks at
                write_png(output_dir / "stills" / f"{clip.name}.png", still_frames(video, task.scored_frames))
    bar.close()
    tasks = [c for c in clips if isinstance(c, MemoryTask)]
    targets = [c.target if isinstance(c, MemoryTask) else c for c in clips]
    if tasks:
        notes = [lpips_message, *_memory_notes(tasks, per_clip, rows)]
    else:
        loops = sum(is_out_and_back(c.cam_to_world) for c in targets)
        notes = [lpips_message, f"closed-loop metrics over the {loops} of {len(clips)} clips that go out and back",
                 "PSNR/SSIM/LPIPS: every generated frame vs the ground truth at its pose (frame 0 excluded); "
                 "*_C: returning frames vs the ground truth of the outgoing frames at the same pose; "
                 "PSNR_self: returning vs the method's own outgoing frames."]
    if variants:
        notes.append("variants: " + "; ".join(f"{v.name} = {v.description}" for v in variants))
    for name, reason in (skipped_variants or {}).items():
        notes.append(f"variant {name} skipped: {reason}")
    notes.append("seconds per clip: " + ", ".join(f"{m} {seconds[m] / len(clips):.2f}" for m in rows))
    depth_source = "ground truth" if gt_depth else type(world_model.depth_provider).__name__
    all_settings = {"clips": len(clips), "frames": targets[0].num_frames, "image_size": list(targets[0].image_size),
                    "methods": list(methods), "num_inference_steps": num_inference_steps or
                    world_model.config.num_inference_steps, "seed": seed,
                    "depth of generated frames": depth_source, **(settings or {})}
    if variants:
        all_settings["variants"] = [v.name for v in variants]
    consistency_notes = [f"3D consistency ({consistency_detector.upper()} matches between frames i and i+1, i+4, "
                         "checked against the clip's cameras and depth): reproj_px / epipolar_px median pixels, "
                         "reproj_inliers share within 1 px, matches per pair; photometric: frame i warped into "
                         "frame j with depth and cameras, photo_L1 / photo_PSNR over co-visible pixels "
                         "(occlusion test 5%); 'ground truth' is the floor the renderer itself reaches "
                         "(resampling, shading)"] if consistency else []
    table = write_report(output_dir, per_clip, all_settings, notes, consistency=geometry if consistency else None,
                         consistency_notes=consistency_notes)
    return {"table": table, "per_clip": per_clip, "notes": notes, "seconds": seconds,
            "consistency": summarize(geometry, CONSISTENCY_METRICS) if consistency else None,
            "consistency_notes": consistency_notes}


def _memory_notes(tasks: Sequence[MemoryTask], per_clip: dict, methods: Sequence[str]) -> list[str]:
    """What the memory protocol measured: the frames scored, how much of them needs memory, PSNR_M per method."""
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    scored = mean([len(t.scored_frames) for t in tasks])
    psnr_m = {m: mean([v["PSNR_M"] for v in per_clip[m].values() if v["PSNR_M"] == v["PSNR_M"]]) for m in methods}
    recorded = all(not is_out_and_back(t.target.cam_to_world) for t in tasks)
    items, frames = ("recorded windows", "later frames") if recorded else ("held-out rooms", "returning frames")
    return [f"memory protocol: {len(tasks)} {items}, memory seeded from a {tasks[0].earlier.num_frames}-frame "
            f"earlier pass, context = frame 0 only; variants {sorted({t.variant for t in tasks})}",
            f"needs memory (share of the {frames}' static pixels not seen by the context frame but seen "
            f"by the earlier pass): mean {mean([t.needs_memory for t in tasks]):.3f}, min "
            f"{min(t.needs_memory for t in tasks):.3f}; never seen by either: {mean([t.unseen for t in tasks]):.3f}",
            "PSNR/SSIM/LPIPS: every frame but the conditioning frame vs the ground truth at its pose; *_C: only the "
            f"scored frames ({frames} with >= the task's minimum share needing memory; {scored:.1f} per "
            "clip), conditioning frame excluded"
            + ("" if recorded else "; PSNR_self: scored frames vs the method's own outgoing frames"),
            "PSNR_M (needs-memory pixels of the scored frames only): "
            + ", ".join(f"{m} {psnr_m[m]:.2f}" for m in methods)]
