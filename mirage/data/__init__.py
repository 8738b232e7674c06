"""Training and evaluation data: RealEstate10K-format clips, synthetic scenes, and a latent cache."""

from mirage.data.clip import Clip, collate_clips
from mirage.data.re10k import ClipSkippedWarning, RealEstate10KDataset, parse_camera_file, write_camera_file

__all__ = ["Clip", "collate_clips", "ClipSkippedWarning", "RealEstate10KDataset", "parse_camera_file",
           "write_camera_file"]
