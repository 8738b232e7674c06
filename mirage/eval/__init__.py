"""Evaluation: image metrics, the closed-loop protocol, the compared memory methods, reports (``mirage eval``);
ablation variants and consistency scores (``mirage eval --variants``); imagination against a recording
(``mirage eval-bag``)."""

from mirage.eval.closed_loop import FRAME_PRESETS, evaluation_clips, frame_metrics, loop_pairs
from mirage.eval.consistency import CONSISTENCY_METRICS, consistency_metrics
from mirage.eval.methods import METHODS, run_method
from mirage.metrics import LPIPSUnavailable, load_lpips, lpips_status, psnr, ssim, ssim_map
from mirage.eval.variants import ALL_VARIANTS, run_variant, variant_specs

__all__ = ["FRAME_PRESETS", "evaluation_clips", "frame_metrics", "loop_pairs", "METHODS",
           "run_method", "LPIPSUnavailable", "load_lpips", "lpips_status", "psnr", "ssim", "ssim_map",
           "CONSISTENCY_METRICS", "consistency_metrics", "ALL_VARIANTS", "run_variant", "variant_specs"]
