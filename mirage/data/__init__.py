"""Training and evaluation data: RealEstate10K-format clips, TUM RGB-D sequences, synthetic scenes, and a latent
cache."""

from mirage.data.clip import Clip, collate_clips
from mirage.data.re10k import ClipSkippedWarning, RealEstate10KDataset, parse_camera_file, write_camera_file
from mirage.data.tum import TUMSequence

__all__ = ["Clip", "collate_clips", "ClipSkippedWarning", "RealEstate10KDataset", "parse_camera_file",
           "write_camera_file", "TUMSequence"]
