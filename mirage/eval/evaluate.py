"""Run every method on every clip, score them, write the table and the side-by-side videos."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from mirage.data.clip import Clip
from mirage.eval.closed_loop import frame_metrics, is_out_and_back
from mirage.eval.methods import METHODS, run_method
from mirage.eval.metrics import lpips_status
from mirage.eval.report import side_by_side, write_report
from mirage.media import write_video

logger = logging.getLogger(__name__)

__all__ = ["evaluate"]


def evaluate(world_model, clips: Sequence[Clip], output_dir: str | os.PathLike, methods: Sequence[str] = METHODS,
             *, num_inference_steps: int | None = None, seed: int = 0, gt_depth: bool = True,
             lpips_dir: str | None = None, videos: bool = True, settings: dict | None = None,
             progress: bool = True) -> dict:
    """Evaluate ``methods`` on ``clips``; returns {"table", "per_clip", "notes", "seconds"}. Closed-loop metrics are
    computed on out-and-back clips (:func:`is_out_and_back`), novel-view metrics on all.

    Writes ``results.json``, ``results.md`` and (``videos``) ``videos/<clip>.mp4`` with the ground truth and
    every method side by side.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown methods {unknown}; choose from {METHODS}")
    if not clips:
        raise ValueError("no clips to evaluate")
    output_dir = Path(output_dir)
    lpips, lpips_message = lpips_status(lpips_dir, device=world_model.device)
    logger.info(lpips_message)
    per_clip: dict[str, dict[str, dict[str, float]]] = {m: {} for m in methods}
    seconds: dict[str, float] = {m: 0.0 for m in methods}
    bar = tqdm(total=len(clips) * len(methods), desc="evaluating", disable=not progress)
    for clip in clips:
        generated = {}
        for method in methods:
            start = time.perf_counter()
            frames = run_method(method, world_model, clip, seed=seed, num_inference_steps=num_inference_steps,
                                gt_depth=gt_depth)
            seconds[method] += time.perf_counter() - start
            generated[method] = frames
            per_clip[method][clip.name] = frame_metrics(frames, clip.rgb, lpips,
                                                        closed_loop=is_out_and_back(clip.cam_to_world)).values
            bar.update(1)
        if videos:
            video = side_by_side({"ground truth": clip.rgb, **generated})
            write_video(output_dir / "videos" / f"{clip.name}.mp4", video)  # creates videos/
    bar.close()
    loops = sum(is_out_and_back(c.cam_to_world) for c in clips)
    notes = [lpips_message, f"closed-loop metrics over the {loops} of {len(clips)} clips that go out and back",
             "PSNR/SSIM/LPIPS: every generated frame vs the ground truth at its pose (frame 0 excluded); "
             "*_C: returning frames vs the ground truth of the outgoing frames at the same pose; "
             "PSNR_self: returning vs the method's own outgoing frames.",
             "seconds per clip: " + ", ".join(f"{m} {seconds[m] / len(clips):.2f}" for m in methods)]
    depth_source = "ground truth" if gt_depth else type(world_model.depth_provider).__name__
    all_settings = {"clips": len(clips), "frames": clips[0].num_frames, "image_size": list(clips[0].image_size),
                    "methods": list(methods), "num_inference_steps": num_inference_steps or
                    world_model.config.num_inference_steps, "seed": seed,
                    "depth of generated frames": depth_source, **(settings or {})}
    table = write_report(output_dir, per_clip, all_settings, notes)
    return {"table": table, "per_clip": per_clip, "notes": notes, "seconds": seconds}
