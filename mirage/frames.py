"""Sensor frames -> the model's frames: fit RGB-D and intrinsics to the model's size, pick keyframes.

One observe path for every producer of RGB-D (the ROS node's ingest, ``mirage build-cache`` over a bag, a
library user with their own camera)::

    selector = KeyframeSelector(translation=0.1, rotation_deg=10.0)
    if selector.is_keyframe(c2w):
        rgb_t, depth_t, K_t = fit_to_size(rgb, depth, K, world_model.image_size)
        world_model.observe(memory, rgb_t, depth_t, K_t, torch.from_numpy(c2w).float())
        selector.accept(c2w)

:func:`fit_intrinsics` is the intrinsics half of :func:`fit_to_size` alone, so a caller that imagines with a
camera's intrinsics (e.g. a goal of the node) uses exactly the crop and scale its keyframes were fitted with.
"""

from __future__ import annotations

import numpy as np
import torch

from mirage.camera import scale_intrinsics

__all__ = ["FIT_BACKENDS", "crop_box", "fit_intrinsics", "fit_to_size", "nearest_indices", "KeyframeSelector"]


def crop_box(src_size: tuple[int, int], dst_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The centred crop of an image of ``src_size = (H, W)`` with the aspect ratio of ``dst_size = (h, w)``.

    Returns (y0, x0, crop_h, crop_w) in source pixels. Raises ValueError on an empty size.
    """
    H, W = int(src_size[0]), int(src_size[1])
    h, w = int(dst_size[0]), int(dst_size[1])
    if min(H, W, h, w) <= 0:
        raise ValueError(f"image sizes must be positive, got {H}x{W} -> {h}x{w}")
    crop_h, crop_w = (H, round(H * w / h)) if W * h > H * w else (round(W * h / w), W)
    return (H - crop_h) // 2, (W - crop_w) // 2, crop_h, crop_w


def fit_intrinsics(K: torch.Tensor, src_size: tuple[int, int], dst_size: tuple[int, int]) -> torch.Tensor:
    """(3, 3) intrinsics at ``src_size`` -> (3, 3) float32 at ``dst_size`` after :func:`crop_box` and a resize."""
    y0, x0, crop_h, crop_w = crop_box(src_size, dst_size)
    K = torch.as_tensor(K).clone().float()
    if K.shape != (3, 3):
        raise ValueError(f"K must have shape (3, 3), got {tuple(K.shape)}")
    K[0, 2] -= x0
    K[1, 2] -= y0
    return scale_intrinsics(K, (crop_h, crop_w), (int(dst_size[0]), int(dst_size[1])))


FIT_BACKENDS = ("auto", "cv2", "torch")


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each of ``n_out`` samples resampling ``n_in`` (torch's ``nearest-exact``, PIL's nearest).

    Sample ``i`` takes source pixel ``floor((i + 0.5) * n_in / n_out)``, clamped to ``n_in - 1``."""
    scale = np.float32(n_in) / np.float32(n_out)  # in float32, as torch's CPU kernel computes it
    idx = np.floor((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def _resize_rgb(crop: np.ndarray, size: tuple[int, int], backend: str) -> torch.Tensor:
    """(H, W, 3) uint8 (a view is fine) -> (3, h, w) float32 in [0, 255], area resampling."""
    h, w = size
    H, W = crop.shape[:2]
    if (H, W) == (h, w):
        return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float()
    if backend == "auto":  # cv2's INTER_AREA is a true area average when both axes shrink (or stay)
        backend = "cv2" if H >= h and W >= w else "torch"
    if backend == "cv2":
        import cv2

        small = cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_AREA)  # uint8, rounded
        return torch.from_numpy(np.ascontiguousarray(small.transpose(2, 0, 1))).float()
    x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float()
    return torch.nn.functional.interpolate(x[None], size=(h, w), mode="area")[0]


def fit_to_size(rgb: np.ndarray, depth: np.ndarray, K: torch.Tensor, size: tuple[int, int], backend: str = "auto"):
    """Centre-crop a frame to the aspect ratio of ``size = (h, w)`` and resize it there.

    rgb (H, W, 3) uint8, depth (H, W) float32 metres, K (3, 3) at (H, W). Returns rgb (3, h, w) float32 in
    [0, 1] (area resampling), depth (h, w) float32 (nearest: never blends a foreground and a background
    depth into a surface that does not exist, and a hole, 0 or NaN, stays a hole; each output depth is the
    source pixel that torch's ``nearest-exact`` picks, :func:`nearest_indices`), K (3, 3) at (h, w).

    ``backend`` of the colour resize: ``"cv2"`` (``cv2.INTER_AREA`` on the uint8 pixels: the exact area
    average, rounded once to a grey level), ``"torch"`` (``interpolate(mode="area")``, i.e. adaptive average
    pooling over whole-pixel windows: the same average for whole-number factors, up to about one pixel's
    gradient apart for others) or ``"auto"`` (cv2 when the crop shrinks in both axes, which is what it is fast
    and exact for; torch when it is enlarged, where cv2's INTER_AREA turns into a bilinear filter).
    ``bench/ros_ingest.py --fit-bench`` compares the two.
    """
    if backend not in FIT_BACKENDS:
        raise ValueError(f"backend must be one of {FIT_BACKENDS}, got {backend!r}")
    rgb, depth = np.asarray(rgb), np.asarray(depth)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if depth.shape != rgb.shape[:2]:
        raise ValueError(f"depth must be (H, W) = {rgb.shape[:2]}, got {depth.shape}")
    H, W = depth.shape
    h, w = int(size[0]), int(size[1])
    y0, x0, crop_h, crop_w = crop_box((H, W), (h, w))
    K_fit = fit_intrinsics(K, (H, W), (h, w))
    rgb_t = _resize_rgb(rgb[y0:y0 + crop_h, x0:x0 + crop_w], (h, w), backend)
    # depth: a gather of the nearest source pixels (no copy of the full frame, nothing averaged)
    rows = y0 + nearest_indices(crop_h, h)
    cols = x0 + nearest_indices(crop_w, w)
    depth_t = torch.from_numpy(np.ascontiguousarray(depth[rows[:, None], cols[None, :]], dtype=np.float32))
    return rgb_t.div_(255.0).clamp_(0.0, 1.0), depth_t, K_fit


class KeyframeSelector:
    """Accept a frame when the camera moved or turned enough since the last accepted one.

    The first frame is always accepted. Poses are camera-to-world (4, 4); thresholds in metres and degrees
    (a threshold of 0 accepts every frame). Not thread-safe: one producer owns one selector.
    """

    def __init__(self, translation: float = 0.1, rotation_deg: float = 10.0):
        if translation < 0 or rotation_deg < 0:
            raise ValueError(f"keyframe thresholds must be >= 0, got {translation} m, {rotation_deg} deg")
        self.translation = float(translation)
        self.rotation_deg = float(rotation_deg)
        self.last: np.ndarray | None = None

    def distance(self, c2w: np.ndarray) -> tuple[float, float]:
        """(metres, degrees) from the last keyframe; (inf, inf) before the first."""
        if self.last is None:
            return float("inf"), float("inf")
        c2w = np.asarray(c2w, dtype=np.float64)
        dt = float(np.linalg.norm(c2w[:3, 3] - self.last[:3, 3]))
        R = self.last[:3, :3].T @ c2w[:3, :3]
        cos = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
        return dt, float(np.degrees(np.arccos(cos)))

    def is_keyframe(self, c2w: np.ndarray) -> bool:
        if self.last is None or self.translation == 0 or self.rotation_deg == 0:
            return True
        dt, dr = self.distance(c2w)
        return dt >= self.translation or dr >= self.rotation_deg

    def accept(self, c2w: np.ndarray) -> None:
        self.last = np.asarray(c2w, dtype=np.float64).copy()

    def reset(self) -> None:
        self.last = None
