"""Evaluation outputs: a results table (markdown + JSON) and side-by-side videos."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mirage.media import to_uint8

__all__ = ["METRICS", "HIGHER_IS_BETTER", "summarize", "markdown_table", "write_report", "side_by_side"]

METRICS = ("PSNR", "SSIM", "LPIPS", "PSNR_C", "SSIM_C", "LPIPS_C", "PSNR_self")
HIGHER_IS_BETTER = {"PSNR": True, "SSIM": True, "LPIPS": False, "PSNR_C": True, "SSIM_C": True, "LPIPS_C": False,
                    "PSNR_self": True}


def summarize(per_clip: dict[str, dict[str, dict[str, float]]], metrics: Sequence[str] | None = None
              ) -> dict[str, dict[str, float]]:
    """{method: {clip: {metric: value}}} -> {method: {metric: mean over clips}} (NaN if skipped everywhere);
    ``metrics`` default :data:`METRICS`."""
    table = {}
    for method, clips in per_clip.items():
        row = {}
        for metric in metrics or METRICS:
            vals = [c[metric] for c in clips.values() if metric in c and not math.isnan(c[metric])]
            row[metric] = float(np.mean(vals)) if vals else float("nan")
        table[method] = row
    return table


def markdown_table(table: dict[str, dict[str, float]], notes: Sequence[str] = (), metrics: Sequence[str] | None = None,
                   higher_is_better: dict[str, bool] | None = None, label: str = "method") -> str:
    """One row per method, one column per metric (default :data:`METRICS`); PSNR-like and pixel metrics with
    two decimals, the rest with four; then the notes as a list."""
    metrics = tuple(metrics or METRICS)
    directions = {**HIGHER_IS_BETTER, **(higher_is_better or {})}
    arrows = {m: ("↑" if directions[m] else "↓") if m in directions else "" for m in metrics}
    lines = [f"| {label} | " + " | ".join(f"{m} {arrows[m]}".strip() for m in metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    for method, row in table.items():
        cells = []
        for m in metrics:
            v = row.get(m, float("nan"))
            two = "PSNR" in m or m.endswith("_px") or m == "matches"
            cells.append("n/a" if math.isnan(v) else (f"{v:.2f}" if two else f"{v:.4f}"))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    out = "\n".join(lines) + "\n"
    if notes:
        out += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    return out


def write_report(directory: str | os.PathLike, per_clip: dict, settings: dict, notes: Sequence[str] = (),
                 consistency: dict | None = None, consistency_notes: Sequence[str] = ()) -> dict:
    """Write ``results.json`` (settings, table, per-clip values) and ``results.md``; returns the table.

    consistency: {row: {clip: {metric: value}}} of :mod:`mirage.eval.consistency` (rows may include "ground
    truth"): a second table, ``consistency`` / ``consistency_per_clip`` in the JSON and a section in the markdown.
    """
    from mirage.eval.consistency import CONSISTENCY_HIGHER_IS_BETTER, CONSISTENCY_METRICS

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    table = summarize(per_clip)
    consistency_table = summarize(consistency, CONSISTENCY_METRICS) if consistency else None

    def clean(x):
        if isinstance(x, float) and math.isnan(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        return x

    out = {"settings": settings, "table": clean(table), "per_clip": clean(per_clip), "notes": list(notes)}
    if consistency_table is not None:
        out |= {"consistency": clean(consistency_table), "consistency_per_clip": clean(consistency),
                "consistency_notes": list(consistency_notes)}
    with open(directory / "results.json", "w") as f:
        json.dump(out, f, indent=2)
    header = "# mirage eval\n\n" + "\n".join(f"- {k}: {v}" for k, v in settings.items()) + "\n\n"
    text = header + markdown_table(table, notes)
    if consistency_table is not None:
        text += "\n## Consistency\n\n" + markdown_table(consistency_table, consistency_notes, CONSISTENCY_METRICS,
                                                          CONSISTENCY_HIGHER_IS_BETTER)
    (directory / "results.md").write_text(text)
    return table


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    import cv2

    out = panel.copy()
    scale = max(0.3, panel.shape[0] / 256)
    cv2.putText(out, text, (2, int(12 * scale) + 2), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.5, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def side_by_side(videos: dict[str, torch.Tensor]) -> np.ndarray:
    """{label: (T, 3, H, W) in [0, 1]} -> (T, H, W * n, 3) uint8, panels in the given order, labelled."""
    if not videos:
        raise ValueError("side_by_side needs at least one video")
    shapes = {tuple(v.shape) for v in videos.values()}
    if len(shapes) != 1:
        raise ValueError(f"videos must share (T, 3, H, W), got {sorted(shapes)}")
    rows = []
    for label, video in videos.items():
        frames = to_uint8(video)
        rows.append(np.stack([_label(f, label) for f in frames]))
    return np.concatenate(rows, axis=2)


def still_frames(video: np.ndarray, frames, count: int = 2, scale: int = 2) -> np.ndarray:
    """(H * count * scale, W * scale, 3) uint8: ``count`` frames of a side-by-side ``video`` (T, H, W, 3) picked
    evenly inside ``frames`` (indices, e.g. a memory task's scored frames), stacked, enlarged ``scale`` times
    (nearest neighbour: the pixels stay pixels)."""
    frames = sorted(int(f) for f in frames)
    if not frames or count < 1 or scale < 1:
        raise ValueError(f"need frames, count >= 1 and scale >= 1, got {frames}, {count}, {scale}")
    if max(frames) >= len(video) or min(frames) < 0:
        raise ValueError(f"frames {frames} outside a video of {len(video)} frames")
    picks = [frames[min(len(frames) - 1, (i + 1) * len(frames) // (count + 1))] for i in range(count)]
    stacked = np.concatenate([video[i] for i in picks], axis=0)
    return stacked.repeat(scale, axis=0).repeat(scale, axis=1)

