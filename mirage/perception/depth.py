"""Depth providers for generated frames, and scale alignment to the memory.

After each chunk the world model needs metric depth for the frames it generated, to back-project their
latents into the memory (paper Eq. 6). The camera is known (it is the trajectory the caller asked for),
so only depth must be found. Every provider has one interface::

    provider(frames, *, intrinsics=None, cam_to_world=None, frame_indices=None, memory=None) -> depth

* ``frames``: (T, 3, H, W) float in [0, 1].
* ``intrinsics`` (T, 3, 3) at (H, W), ``cam_to_world`` (T, 4, 4), ``frame_indices`` (T,) positions of the
  frames in the rollout's trajectory, ``memory`` the :class:`~mirage.memory.LatentSpatialMemory`: context a
  provider may use or ignore.
* returns (T, H, W) float32 metres; 0 / NaN / inf where the provider has no depth (see :mod:`mirage.camera`).

``metric`` on a provider says whether its depth is already in metres; depth that is only known up to scale
is aligned to the memory with :func:`align_depth_to_reference` before it is used.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from mirage.camera import latent_size, valid_depth_mask
from mirage.memory.lifting import pool_depth

__all__ = [
    "DepthProvider",
    "GivenDepth",
    "ReadoutDepth",
    "DepthAnythingProvider",
    "align_depth_scale",
    "align_depth_to_reference",
    "upsample_depth_nearest",
]


@runtime_checkable
class DepthProvider(Protocol):
    metric: bool

    def __call__(self, frames: torch.Tensor, **context) -> torch.Tensor: ...


def _check_frames(frames: torch.Tensor) -> None:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"frames must be a (T, 3, H, W) tensor in [0, 1], got {shape}")
    if frames.shape[0] == 0:
        raise ValueError("frames is empty (T = 0)")


# --------------------------------------------------------------------------------------------------
# Resampling between the pixel and the latent grid
# --------------------------------------------------------------------------------------------------
def upsample_depth_nearest(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., h, w) depth -> (..., H, W) by nearest neighbour (each latent cell covers its block of pixels).

    Nearest, never bilinear: interpolating across a depth edge invents surfaces floating between objects.
    """
    lead = depth.shape[:-2]
    flat = depth.reshape(-1, 1, *depth.shape[-2:]).float()
    out = F.interpolate(flat, size=tuple(size), mode="nearest")
    return out.reshape(*lead, *size)


# --------------------------------------------------------------------------------------------------
# Scale alignment
# --------------------------------------------------------------------------------------------------
def align_depth_scale(
    pred: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor | None = None, min_cells: int = 1
) -> float | None:
    """Least-squares scale ``s`` minimising ``sum (s * pred - reference)^2`` over overlapping valid cells.

    pred, reference: (..., H, W) depth of the same shape; mask: optional (..., H, W) bool of cells to use.
    A cell counts when both depths are valid (finite, > 0) and ``mask`` is True. Returns ``None`` when fewer
    than ``min_cells`` cells overlap (the scale is then unknown, not 1).
    """
    if pred.shape != reference.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and reference {tuple(reference.shape)} differ in shape")
    use = valid_depth_mask(pred) & valid_depth_mask(reference)
    if mask is not None:
        if mask.shape != pred.shape:
            raise ValueError(f"mask {tuple(mask.shape)} does not match depth {tuple(pred.shape)}")
        use &= mask.bool()
    if int(use.sum()) < max(1, min_cells):
        return None
    p = pred[use].double()
    r = reference[use].double()
    scale = float((p * r).sum() / (p * p).sum())
    return scale if math.isfinite(scale) and scale > 0 else None


def align_depth_to_reference(
    pred: torch.Tensor,
    reference: torch.Tensor,
    mask: torch.Tensor | None = None,
    min_cells: int = 8,
) -> tuple[torch.Tensor, float | None]:
    """Scale ``pred`` (..., H, W) to ``reference`` (..., h, w), e.g. estimated depth to the memory's readout.

    ``reference`` may be at a coarser grid (the latent grid): ``pred`` is then pooled to it with the
    memory's own cell rule (median of the valid pixels, :func:`mirage.memory.lifting.pool_depth`) for the fit. ``mask`` is at the reference's size. Returns ``(scaled pred, scale)``; with too little
    overlap the depth comes back unchanged and ``scale`` is ``None`` (callers decide whether unscaled depth
    may be used: for a non-metric provider it may not).
    """
    sampled = pred
    if pred.shape[-2:] != reference.shape[-2:]:
        sampled, _ = pool_depth(pred, reference.shape[-2:])
    scale = align_depth_scale(sampled, reference, mask, min_cells=min_cells)
    if scale is None:
        return pred, None
    return pred * scale, scale


# --------------------------------------------------------------------------------------------------
# Providers
# --------------------------------------------------------------------------------------------------
class GivenDepth:
    """Depth that is already known: a sensor, a simulator or ground truth, passed through.

    ``source`` is either a (N, H, W) tensor over the whole trajectory (indexed with ``frame_indices``) or a
    callable ``source(intrinsics (T,3,3), cam_to_world (T,4,4)) -> (T, H, W)`` (e.g. a renderer).
    """

    metric = True

    def __init__(self, source: torch.Tensor | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        if isinstance(source, torch.Tensor):
            if source.ndim != 3 or not source.is_floating_point():
                raise ValueError(f"GivenDepth tensor must be (N, H, W) float metres, got {tuple(source.shape)} "
                                 f"{source.dtype}")
        elif not callable(source):
            raise ValueError("GivenDepth source must be a (N, H, W) tensor or a callable(intrinsics, cam_to_world)")
        self.source = source

    def __call__(self, frames, *, intrinsics=None, cam_to_world=None, frame_indices=None, memory=None, **_):
        _check_frames(frames)
        T, _, H, W = frames.shape
        if isinstance(self.source, torch.Tensor):
            if frame_indices is None:
                raise ValueError("GivenDepth with a depth tensor needs frame_indices")
            idx = torch.as_tensor(frame_indices, dtype=torch.long)
            if idx.numel() != T or int(idx.min()) < 0 or int(idx.max()) >= self.source.shape[0]:
                raise ValueError(f"frame_indices {idx.tolist()} out of range for {self.source.shape[0]} depth maps")
            depth = self.source[idx.to(self.source.device)]
        else:
            if intrinsics is None or cam_to_world is None:
                raise ValueError("GivenDepth with a callable needs intrinsics and cam_to_world")
            depth = self.source(intrinsics, cam_to_world)
        if tuple(depth.shape) != (T, H, W):
            raise ValueError(f"given depth has shape {tuple(depth.shape)}, frames need {(T, H, W)}")
        return depth.float().to(frames.device)


class ReadoutDepth:
    """Depth of the memory itself at each target view, upsampled to pixels; invalid where it holds nothing.

    No estimator: the frames are ignored. It re-anchors generated latents on the geometry already stored,
    which is the sensible default when no depth network exists (the tiny CPU model); it cannot add
    geometry the memory has never seen.
    """

    metric = True

    def __call__(self, frames, *, intrinsics=None, cam_to_world=None, memory=None, grid_size=None, **_):
        """grid_size: the (h, w) grid the memory is read at (the model's latent grid; default: stride 16)."""
        _check_frames(frames)
        if memory is None or intrinsics is None or cam_to_world is None:
            raise ValueError("ReadoutDepth needs memory, intrinsics and cam_to_world")
        T, _, H, W = frames.shape
        K = intrinsics.expand(T, 3, 3) if intrinsics.ndim == 2 else intrinsics
        grid = tuple(grid_size) if grid_size is not None else latent_size(H, W)
        if hasattr(memory, "visibility"):  # depth only: no features gathered, nothing encoded (RGB memory)
            mask, cell_depth = memory.visibility(K, cam_to_world, (H, W), grid)
        else:
            readout = memory.read_batch(K, cam_to_world, (H, W), grid)
            mask, cell_depth = readout.mask, readout.depth
        depth = torch.where(mask, cell_depth.float(), torch.zeros_like(cell_depth, dtype=torch.float32))
        return upsample_depth_nearest(depth, (H, W)).to(frames.device)


class DepthAnythingProvider:
    """Monocular depth from Depth Anything (V1/V2, relative or metric) through ``transformers``.

    Metric checkpoints (``depth_estimation_type="metric"``) give metres directly. Relative ones predict
    affine-invariant inverse depth; we return ``1 / prediction`` (0 where the prediction is ~0), i.e. depth
    up to scale with the shift ignored, and mark the provider ``metric=False`` so the world model aligns it
    to the memory. Pre-processing follows the checkpoint's image processor (target size, keep-aspect-ratio,
    multiple-of constraint, mean/std) but runs batched in torch on the model's device.
    """

    def __init__(self, model, image_processor=None, *, inverse_eps: float = 1e-6):
        self.model = model.eval()
        cfg = model.config
        self.metric = getattr(cfg, "depth_estimation_type", "relative") == "metric"
        p = image_processor
        size = getattr(p, "size", None) or {}
        side = {k: (size.get(k) if isinstance(size, dict) else getattr(size, k, None)) for k in ("height", "width")}
        self.target_size = (int(side["height"] or 518), int(side["width"] or 518))
        self.keep_aspect_ratio = bool(getattr(p, "keep_aspect_ratio", True))
        patch = int(getattr(cfg, "patch_size", 14))
        self.multiple_of = int(getattr(p, "ensure_multiple_of", None) or patch)
        self.mean = torch.tensor(getattr(p, "image_mean", None) or (0.485, 0.456, 0.406), dtype=torch.float32)
        self.std = torch.tensor(getattr(p, "image_std", None) or (0.229, 0.224, 0.225), dtype=torch.float32)
        self.inverse_eps = inverse_eps

    @classmethod
    def from_pretrained(cls, name_or_path: str, device="cpu", torch_dtype=torch.float32, **kwargs):
        """Load from a local directory or a hub id (e.g. ``depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf``)."""
        from transformers import AutoImageProcessor, DepthAnythingForDepthEstimation

        looks_local = os.path.isabs(name_or_path) or name_or_path.startswith(".") or os.path.exists(name_or_path)
        if looks_local and not os.path.isdir(name_or_path):
            raise FileNotFoundError(f"Depth Anything checkpoint directory not found: {name_or_path}")
        try:
            model = DepthAnythingForDepthEstimation.from_pretrained(name_or_path, dtype=torch_dtype, **kwargs)
            processor = AutoImageProcessor.from_pretrained(name_or_path, **kwargs)
        except (OSError, ValueError) as err:  # missing files, or a directory holding no such model
            raise FileNotFoundError(f"could not load Depth Anything from {name_or_path!r} (a local directory or a "
                                    f"hub id reachable from here): {err}") from err
        return cls(model.to(device), processor)

    def _input_size(self, H: int, W: int) -> tuple[int, int]:
        th, tw = self.target_size
        sh, sw = th / H, tw / W
        if self.keep_aspect_ratio:  # scale as little as possible, like DPT's resize
            if abs(1 - sw) < abs(1 - sh):
                sh = sw
            else:
                sw = sh
        m = self.multiple_of

        def snap(x: float) -> int:
            return max(m, int(round(x / m)) * m)

        return snap(sh * H), snap(sw * W)

    @torch.no_grad()
    def __call__(self, frames, **_):
        _check_frames(frames)
        T, _, H, W = frames.shape
        param = next(self.model.parameters())
        x = frames.to(param.device, torch.float32).clamp(0, 1)
        x = F.interpolate(x, size=self._input_size(H, W), mode="bicubic", align_corners=False).clamp(0, 1)
        x = (x - self.mean.to(x.device)[:, None, None]) / self.std.to(x.device)[:, None, None]
        pred = self.model(pixel_values=x.to(param.dtype)).predicted_depth.float()  # (T, h', w')
        pred = F.interpolate(pred[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
        if self.metric:
            return pred
        return torch.where(pred > self.inverse_eps, 1.0 / pred.clamp_min(self.inverse_eps), torch.zeros_like(pred))
