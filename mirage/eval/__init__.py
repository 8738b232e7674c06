"""Evaluation: image metrics, the closed-loop protocol, the compared memory methods, reports: ``mirage eval``."""

from mirage.eval.closed_loop import FRAME_PRESETS, evaluation_clips, frame_metrics, loop_pairs
from mirage.eval.methods import METHODS, run_method
from mirage.eval.metrics import LPIPSUnavailable, load_lpips, lpips_status, psnr, ssim

__all__ = ["FRAME_PRESETS", "evaluation_clips", "frame_metrics", "loop_pairs", "METHODS",
           "run_method", "LPIPSUnavailable", "load_lpips", "lpips_status", "psnr", "ssim"]
