"""Images and videos people look at: float frames to uint8, PNG and MP4 writers (one of each in the project).

PSNR / SSIM live in :mod:`mirage.metrics` (torch, batched); :func:`psnr_uint8` is the numpy twin for
uint8 frames that arrive from ROS messages or files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["to_uint8", "psnr_uint8", "write_png", "write_video"]


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) float in [0, 1] (clamped) -> (..., H, W, 3) uint8 numpy array."""
    if not isinstance(frames, torch.Tensor) or frames.ndim < 3 or frames.shape[-3] != 3:
        raise ValueError(f"frames must be a (..., 3, H, W) tensor, got {tuple(getattr(frames, 'shape', ()))}")
    out = (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    return out.movedim(-3, -1).numpy()


def psnr_uint8(a: np.ndarray, b: np.ndarray, max_db: float = 100.0) -> float:
    """PSNR in dB of two uint8 images / stacks of the same shape (identical images give ``max_db``)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ, {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return max_db if mse == 0 else min(max_db, 10.0 * float(np.log10(255.0**2 / mse)))


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """(H, W, 3) or (H, W) uint8 -> a PNG file (parent directories created)."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.imwrite(path, np.asarray(image, dtype=np.uint8))
    return path


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 8) -> Path:
    """(T, H, W, 3) uint8 -> an H.264 MP4 (imageio-ffmpeg). Odd sizes are cropped to even ones (yuv420p)."""
    import imageio.v2 as imageio

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    frames = frames[:, : h - h % 2, : w - w % 2]
    with imageio.get_writer(str(path), fps=fps, codec="libx264", macro_block_size=1, quality=8,
                            ffmpeg_log_level="error") as writer:
        for frame in frames:
            writer.append_data(frame)
    return path
