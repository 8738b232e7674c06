"""sensor_msgs/CameraInfo <-> mirage intrinsics.

mirage puts pixel centres at +0.5 (:mod:`mirage.camera`); ROS ``CameraInfo`` puts them at integers. Binning and a
region of interest are applied on reading (REP 104), so K describes the image actually published.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mirage.camera import intrinsics_from_opencv, intrinsics_to_opencv, scale_intrinsics, validate_intrinsics
from mirage_ros.conversions.time import fill_header

__all__ = ["camera_info_to_intrinsics", "pinhole_fields", "intrinsics_to_camera_info"]


def _field(msg: Any, *names: str) -> Any:
    for name in names:
        if hasattr(msg, name):
            return getattr(msg, name)
    raise ValueError(f"{type(msg).__name__} has none of the fields {names}")


def camera_info_to_intrinsics(info: Any, image_size: tuple[int, int] | None = None
                              ) -> tuple[torch.Tensor, tuple[int, int]]:
    """sensor_msgs/CameraInfo -> (K (3, 3) float32 in mirage's convention, (H, W) of the image it describes).

    Binning and a region of interest are applied (REP 104), so K describes the published image. The distortion
    model is not applied: feed rectified images (``image_rect``) or a camera with negligible distortion.
    ``image_size``: the (H, W) of the image this info accompanies; a different size raises ValueError.
    """
    K_cv = np.asarray(_field(info, "k", "K"), dtype=np.float64)
    if K_cv.size != 9:
        raise ValueError(f"CameraInfo.k must have 9 entries, got {K_cv.size}")
    K_cv = K_cv.reshape(3, 3).copy()
    if not np.isfinite(K_cv).all():
        raise ValueError("CameraInfo.k has non-finite entries")
    if K_cv[0, 0] <= 0 or K_cv[1, 1] <= 0:
        raise ValueError(f"CameraInfo.k has a zero or negative focal length (fx={K_cv[0, 0]}, fy={K_cv[1, 1]}): "
                         "the camera is uncalibrated")
    height, width = int(info.height), int(info.width)
    if height <= 0 or width <= 0:
        raise ValueError(f"CameraInfo has an empty image size {height}x{width}")
    roi = getattr(info, "roi", None)
    if roi is not None and int(roi.width) > 0 and int(roi.height) > 0 and \
            (int(roi.width), int(roi.height)) != (width, height):
        K_cv[0, 2] -= int(roi.x_offset)
        K_cv[1, 2] -= int(roi.y_offset)
        height, width = int(roi.height), int(roi.width)
    K = intrinsics_from_opencv(K_cv)
    bin_x, bin_y = max(int(getattr(info, "binning_x", 0)), 1), max(int(getattr(info, "binning_y", 0)), 1)
    if bin_x > 1 or bin_y > 1:
        binned = (height // bin_y, width // bin_x)
        K = scale_intrinsics(K, (binned[0] * bin_y, binned[1] * bin_x), binned)
        height, width = binned
    validate_intrinsics(K, "CameraInfo.k")
    if image_size is not None and (int(image_size[0]), int(image_size[1])) != (height, width):
        raise ValueError(f"CameraInfo describes a {height}x{width} image but the image is "
                         f"{int(image_size[0])}x{int(image_size[1])} (H x W)")
    return K, (height, width)


def pinhole_fields(K: torch.Tensor | np.ndarray, height: int, width: int) -> dict[str, Any]:
    """mirage K (3, 3) at (height, width) -> the CameraInfo fields of an ideal pinhole (zero distortion):
    height, width, distortion_model and d, k, r, p as float64 arrays. Shared by :func:`intrinsics_to_camera_info`
    and the bag writer (rosbags messages). Raises ValueError on bad intrinsics or an empty size."""
    K = torch.as_tensor(np.asarray(K, dtype=np.float64) if not isinstance(K, torch.Tensor) else K)
    validate_intrinsics(K, "K")
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    K_cv = intrinsics_to_opencv(K.double()).numpy()
    P = np.zeros((3, 4))
    P[:, :3] = K_cv
    return {"height": int(height), "width": int(width), "distortion_model": "plumb_bob", "d": np.zeros(5),
            "k": K_cv.reshape(-1), "r": np.eye(3).reshape(-1), "p": P.reshape(-1)}


def intrinsics_to_camera_info(K: torch.Tensor | np.ndarray, height: int, width: int, *, stamp: Any = None,
                              frame_id: str = "", msg_type: type | None = None) -> Any:
    """mirage K (3, 3) at (height, width) -> sensor_msgs/CameraInfo of an ideal pinhole (zero distortion)."""
    fields = pinhole_fields(K, height, width)
    if msg_type is None:
        from sensor_msgs.msg import CameraInfo as msg_type
    info = msg_type()
    fill_header(info, stamp, frame_id)
    for name, value in fields.items():
        if isinstance(value, np.ndarray):
            value = value.astype(np.float64) if isinstance(getattr(info, name), np.ndarray) else value.tolist()
        setattr(info, name, value)
    return info
