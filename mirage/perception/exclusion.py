"""Exclusion masks: which pixels must never enter the memory.

The memory stores static geometry. Moving objects and the sky have no stable 3D position, so the paper
keeps them out of the cache (ablation: -9 points WorldScore without the filter). Sources, combined with OR
by :func:`exclusion_mask`:

* a given mask (a segmenter, a simulator's dynamic mask, a user's mask);
* invalid depth: non-finite, <= 0 or beyond ``max_depth`` (the sky has infinite or saturated depth);
* geometric inconsistency with the memory: a pixel observed clearly *in front of* the static surface the
  memory holds along its ray is something that moved in (it was not there when the surface was seen);
* optionally an open-vocabulary segmenter (:class:`OpenVocabularySegmenter`: Grounding DINO boxes for
  prompts like "person. car. sky." refined to masks by SAM 2).

All masks are bool, True = exclude, (H, W) or (T, H, W) at pixel resolution.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mirage.camera import latent_size, valid_depth_mask
from mirage.perception.depth import upsample_depth_nearest
from mirage.memory.lifting import pool_depth

__all__ = [
    "invalid_depth_mask",
    "inconsistency_mask",
    "memory_inconsistency_mask",
    "exclusion_mask",
    "OpenVocabularySegmenter",
    "DEFAULT_DYNAMIC_LABELS",
]

DEFAULT_DYNAMIC_LABELS = ("person", "animal", "car", "bicycle", "robot", "sky")


def invalid_depth_mask(depth: torch.Tensor, max_depth: float | None = None) -> torch.Tensor:
    """True where depth (..., H, W) is unusable: non-finite, <= 0, or beyond ``max_depth`` metres."""
    bad = ~valid_depth_mask(depth)
    if max_depth is not None:
        if not max_depth > 0:
            raise ValueError(f"max_depth must be positive, got {max_depth}")
        bad |= depth > max_depth
    return bad


def inconsistency_mask(
    depth: torch.Tensor,
    reference_depth: torch.Tensor,
    reference_mask: torch.Tensor | None = None,
    relative_threshold: float = 0.1,
) -> torch.Tensor:
    """True where ``depth`` lies in front of the static surface ``reference_depth`` by more than the threshold.

    depth: (..., H, W) observed metres. reference_depth: (..., h, w) the memory's depth along the same rays:
    either at pixel resolution (compared pixel by pixel) or on a coarser grid such as the latent grid (then
    ``depth`` is pooled to that grid with the memory's own rule, and a flagged cell excludes all its pixels). reference_mask: (..., h, w) bool, where
    the reference exists (default: where it is valid). A pixel is flagged when both exist and
    ``depth < (1 - relative_threshold) * reference``: a relative test, because depth noise grows with range.
    Pixels behind the stored surface are not flagged: that is the normal case of revealing what the memory
    could not see (or of a stored object that left, which a static memory cannot tell apart).
    """
    if not 0.0 < relative_threshold < 1.0:
        raise ValueError(f"relative_threshold must be in (0, 1), got {relative_threshold}")
    if reference_depth.shape[:-2] != depth.shape[:-2]:
        raise ValueError(f"depth {tuple(depth.shape)} and reference {tuple(reference_depth.shape)} differ in "
                         "leading dimensions")
    has_ref = valid_depth_mask(reference_depth)
    if reference_mask is not None:
        has_ref &= reference_mask.bool()
    ref = torch.where(has_ref, reference_depth.float(), torch.zeros_like(reference_depth, dtype=torch.float32))
    ref = ref.to(depth.device)
    H, W = depth.shape[-2:]
    if ref.shape[-2:] == (H, W):
        return valid_depth_mask(depth) & (ref > 0) & (depth < (1.0 - relative_threshold) * ref)
    # Coarser reference (the latent grid): compare cell depths pooled exactly as the memory pools them on
    # insert, so a sloped surface whose pixels spread around the cell's depth is not flagged pixel by pixel.
    cell_depth, cell_valid = pool_depth(depth, ref.shape[-2:])
    flagged = cell_valid & (ref > 0) & (cell_depth < (1.0 - relative_threshold) * ref)
    return upsample_depth_nearest(flagged.float(), (H, W)) > 0.5


def memory_inconsistency_mask(
    memory, depth: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor,
    relative_threshold: float = 0.1,
) -> torch.Tensor:
    """:func:`inconsistency_mask` against the memory read at the same view(s).

    depth (H, W) with intrinsics (3, 3) and cam_to_world (4, 4), or (T, H, W) with (T|1, 3, 3) and (T, 4, 4).
    """
    H, W = depth.shape[-2:]
    if depth.ndim == 2:
        readout = memory.read(intrinsics, cam_to_world, (H, W), latent_size(H, W))
    else:
        K = intrinsics.expand(depth.shape[0], 3, 3) if intrinsics.ndim == 2 else intrinsics
        readout = memory.read_batch(K, cam_to_world, (H, W), latent_size(H, W))
    return inconsistency_mask(depth, readout.depth, readout.mask, relative_threshold)


def exclusion_mask(
    depth: torch.Tensor,
    *,
    given: torch.Tensor | None = None,
    max_depth: float | None = None,
    memory=None,
    intrinsics: torch.Tensor | None = None,
    cam_to_world: torch.Tensor | None = None,
    relative_threshold: float = 0.1,
    frames: torch.Tensor | None = None,
    segmenter=None,
) -> torch.Tensor:
    """Union of every exclusion source that is provided; (..., H, W) bool like ``depth``.

    ``memory`` (with ``intrinsics``, ``cam_to_world``) enables the inconsistency test; ``segmenter`` (with
    ``frames`` (..., 3, H, W) in [0, 1]) enables the open-vocabulary masks.
    """
    mask = invalid_depth_mask(depth, max_depth)
    if given is not None:
        if given.shape != depth.shape:
            raise ValueError(f"given exclusion mask {tuple(given.shape)} does not match depth {tuple(depth.shape)}")
        mask |= given.to(mask.device).bool()
    if memory is not None and len(memory) > 0:
        if intrinsics is None or cam_to_world is None:
            raise ValueError("the memory inconsistency test needs intrinsics and cam_to_world")
        mask |= memory_inconsistency_mask(memory, depth, intrinsics, cam_to_world, relative_threshold)
    if segmenter is not None:
        if frames is None:
            raise ValueError("a segmenter needs the frames")
        batched = frames if frames.ndim == 4 else frames[None]
        seg = segmenter(batched).to(mask.device)
        mask |= seg if frames.ndim == 4 else seg[0]
    return mask


class OpenVocabularySegmenter:
    """Masks of named things (moving actors, sky) from text prompts: Grounding DINO boxes -> SAM 2 masks.

    Loads from local directories or hub ids through ``transformers`` (AutoModelForZeroShotObjectDetection +
    AutoProcessor for the detector, Sam2Model for the masks). Called on (T, 3, H, W) frames in [0, 1]; returns
    (T, H, W) bool. SAM 2's input transform is done here in torch (resize to its square input, ImageNet
    normalisation, boxes scaled per axis, masks upsampled and thresholded at 0, as ``Sam2Processor`` does),
    batched on the model's device and without the torchvision dependency of transformers' SAM 2 image
    processor. Frames are segmented one by one (no video tracking): only frames written to the memory are.
    """

    def __init__(self, detector, detector_processor, segmenter, labels: Sequence[str] = DEFAULT_DYNAMIC_LABELS,
                 box_threshold: float = 0.35, text_threshold: float = 0.25, segmenter_input_size: int = 1024,
                 segmenter_mean: Sequence[float] = (0.485, 0.456, 0.406),
                 segmenter_std: Sequence[float] = (0.229, 0.224, 0.225)):
        if not labels:
            raise ValueError("labels must name at least one thing to segment")
        self.detector = detector.eval()
        self.detector_processor = detector_processor
        self.segmenter = segmenter.eval()
        self.labels = tuple(labels)
        self.box_threshold = box_threshold
        self.text_threshold = text_threshold
        self.segmenter_input_size = int(segmenter_input_size)
        self.segmenter_mean = torch.tensor(segmenter_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.segmenter_std = torch.tensor(segmenter_std, dtype=torch.float32).view(1, 3, 1, 1)

    @classmethod
    def from_pretrained(cls, detector: str = "IDEA-Research/grounding-dino-tiny",
                        segmenter: str = "facebook/sam2.1-hiera-tiny", device="cpu", **kwargs):
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor, Sam2Model

        for what, path in (("detector", detector), ("segmenter", segmenter)):
            looks_local = os.path.isabs(path) or path.startswith(".") or os.path.exists(path)
            if looks_local and not os.path.isdir(path):
                raise FileNotFoundError(f"{what} checkpoint directory not found: {path}")
        try:
            det = AutoModelForZeroShotObjectDetection.from_pretrained(detector).to(device)
            det_proc = AutoProcessor.from_pretrained(detector)
            seg = Sam2Model.from_pretrained(segmenter).to(device)
        except (OSError, ValueError) as err:  # missing files, or a directory holding no such model
            raise FileNotFoundError(f"could not load the open-vocabulary segmenter ({detector!r}, {segmenter!r}): "
                                    f"need local directories or hub ids reachable from here: {err}") from err
        size = getattr(getattr(seg.config.vision_config, "backbone_config", None), "image_size", None) or [1024]
        kwargs.setdefault("segmenter_input_size", int(size[0] if isinstance(size, (list, tuple)) else size))
        return cls(det, det_proc, seg, **kwargs)

    @property
    def prompt(self) -> str:
        # Grounding DINO expects lower-case phrases each ended by a period.
        return " ".join(f"{label.lower().strip()}." for label in self.labels)

    def detect(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> (N, 4) boxes (x0, y0, x1, y1) in pixels of that image."""
        H, W = image.shape[:2]
        device = next(self.detector.parameters()).device
        inputs = self.detector_processor(images=image, text=self.prompt, return_tensors="pt").to(device)
        detections = self.detector(**inputs)
        result = self.detector_processor.post_process_grounded_object_detection(
            detections, inputs["input_ids"], threshold=self.box_threshold, text_threshold=self.text_threshold,
            target_sizes=[(H, W)])[0]
        return result["boxes"].float().reshape(-1, 4)

    def segment(self, frame: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """frame (3, H, W) in [0, 1], boxes (N, 4) pixels -> (H, W) bool, the union of the N box masks."""
        H, W = frame.shape[-2:]
        param = next(self.segmenter.parameters())
        S = self.segmenter_input_size
        x = F.interpolate(frame[None].float().to(param.device), size=(S, S), mode="bilinear", align_corners=False)
        x = (x - self.segmenter_mean.to(x.device)) / self.segmenter_std.to(x.device)
        scale = torch.tensor([S / W, S / H, S / W, S / H], device=param.device)
        input_boxes = (boxes.to(param.device) * scale)[None]  # (1, N, 4)
        logits = self.segmenter(pixel_values=x.to(param.dtype), input_boxes=input_boxes,
                                multimask_output=False).pred_masks  # (1, N, 1, h, w)
        logits = F.interpolate(logits[0, :, :1].float(), size=(H, W), mode="bilinear", align_corners=False)
        return (logits[:, 0] > 0).any(0).cpu()

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (T, 3, H, W) in [0, 1], got {tuple(frames.shape)}")
        T, _, H, W = frames.shape
        out = torch.zeros(T, H, W, dtype=torch.bool)
        images = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for t in range(T):
            boxes = self.detect(images[t])
            if boxes.numel():
                out[t] = self.segment(frames[t].clamp(0, 1), boxes)
        return out
