"""Camera conventions, written down once.

Everything in mirage follows these rules; other modules import them rather than restating them.

* Poses are camera-to-world 4x4 matrices (``c2w``) in the OpenCV optical frame: x right, y down,
  z forward. ROS ``*_optical_frame`` frames use the same axes (REP 103).
* Intrinsics ``K`` are 3x3 in pixels at a stated image size ``(H, W)``.
* Pixel centres sit at +0.5: pixel ``(row i, col j)`` covers ``[j, j+1) x [i, i+1)`` in continuous image
  coordinates and its centre is ``(j + 0.5, i + 0.5)``. With this rule, resizing an image by a factor
  ``s`` scales ``fx, cx`` (and ``fy, cy``) by exactly ``s``, which is how we move intrinsics to the
  latent grid. OpenCV / ROS ``CameraInfo`` put pixel centres at integers, so their principal point is
  ours minus 0.5: use :func:`intrinsics_from_opencv` / :func:`intrinsics_to_opencv` at the boundary.
* Depth is in metres along the optical axis (z). 0, negative, NaN and inf mean "no depth".
* Quaternions are ``(x, y, z, w)`` (ROS and scipy order).
* The Wan2.2 VAE compresses 16x in space and 4x in time. Latent frame 0 encodes pixel frame 0 alone;
  latent frame ``k >= 1`` encodes pixel frames ``4k-3 .. 4k``. Where one camera must stand for a latent
  frame (memory readout, rays, memory update) we use the last pixel frame of its group, ``4k``
  (:func:`latent_frame_indices`), which also makes latent 0 -> frame 0 the same rule.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

SPATIAL_STRIDE = 16
TEMPORAL_STRIDE = 4
PIXEL_CENTER = 0.5

__all__ = [
    "rigid_transform_points",
    "SPATIAL_STRIDE",
    "batch_intrinsics",
    "TEMPORAL_STRIDE",
    "PIXEL_CENTER",
    "make_intrinsics",
    "scale_intrinsics",
    "intrinsics_from_opencv",
    "intrinsics_to_opencv",
    "intrinsics_from_fov",
    "validate_intrinsics",
    "validate_pose",
    "validate_depth",
    "invert_pose",
    "pixel_centers",
    "backproject",
    "backproject_depth",
    "project",
    "plucker_rays",
    "quat_to_matrix",
    "matrix_to_quat",
    "pose_from_tq",
    "pose_to_tq",
    "look_at",
    "latent_size",
    "latent_frame_indices",
    "num_latent_frames",
    "valid_depth_mask",
]


# --------------------------------------------------------------------------------------------------
# Intrinsics
# --------------------------------------------------------------------------------------------------
def make_intrinsics(fx: float, fy: float, cx: float, cy: float, dtype=torch.float32) -> torch.Tensor:
    """Build a (3, 3) pinhole matrix (pixel centres at +0.5)."""
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype)


def intrinsics_from_fov(fov_x_deg: float, height: int, width: int, dtype=torch.float32) -> torch.Tensor:
    """Centred pinhole (3, 3) with horizontal field of view ``fov_x_deg`` and square pixels."""
    if not 0.0 < fov_x_deg < 180.0:
        raise ValueError(f"fov_x_deg must be in (0, 180), got {fov_x_deg}")
    f = 0.5 * width / np.tan(np.deg2rad(fov_x_deg) / 2.0)
    return make_intrinsics(f, f, width / 2.0, height / 2.0, dtype=dtype)


def scale_intrinsics(
    K: torch.Tensor, from_size: Sequence[int], to_size: Sequence[int]
) -> torch.Tensor:
    """Move intrinsics from an image of ``from_size=(H, W)`` to a grid of ``to_size=(h, w)``.

    K: (..., 3, 3). Returns a new tensor of the same shape: fx, cx scaled by w/W; fy, cy by h/H.
    """
    H, W = int(from_size[0]), int(from_size[1])
    h, w = int(to_size[0]), int(to_size[1])
    if min(H, W, h, w) <= 0:
        raise ValueError(f"image sizes must be positive, got from {from_size} to {to_size}")
    out = K.clone()
    out[..., 0, :] = K[..., 0, :] * (w / W)
    out[..., 1, :] = K[..., 1, :] * (h / H)
    return out


def intrinsics_from_opencv(K_cv: torch.Tensor | np.ndarray) -> torch.Tensor:
    """OpenCV / ROS CameraInfo ``K`` (pixel centres at integers) -> mirage ``K`` (centres at +0.5)."""
    K = torch.as_tensor(np.asarray(K_cv, dtype=np.float64)).clone().float().reshape(3, 3)
    K[0, 2] += PIXEL_CENTER
    K[1, 2] += PIXEL_CENTER
    return K


def intrinsics_to_opencv(K: torch.Tensor) -> torch.Tensor:
    """mirage ``K`` -> OpenCV / ROS CameraInfo ``K`` (pixel centres at integers)."""
    out = K.detach().clone().reshape(3, 3)
    out[0, 2] -= PIXEL_CENTER
    out[1, 2] -= PIXEL_CENTER
    return out


def validate_intrinsics(K: torch.Tensor, name: str = "K") -> None:
    """Raise ValueError unless K is (..., 3, 3), finite, with positive focal lengths."""
    if not isinstance(K, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (..., 3, 3), got {type(K).__name__}")
    if K.ndim < 2 or tuple(K.shape[-2:]) != (3, 3):
        raise ValueError(f"{name} must have shape (..., 3, 3), got {tuple(K.shape)}")
    if not torch.isfinite(K).all():
        raise ValueError(f"{name} has non-finite entries")
    if (K[..., 0, 0] <= 0).any() or (K[..., 1, 1] <= 0).any():
        raise ValueError(f"{name} has a zero or negative focal length (fx={K[..., 0, 0].flatten()[:4].tolist()}, "
                         f"fy={K[..., 1, 1].flatten()[:4].tolist()})")


def batch_intrinsics(K: torch.Tensor, num: int, name: str = "intrinsics") -> torch.Tensor:
    """(3, 3) or (num, 3, 3) intrinsics -> (num, 3, 3) (a view for the shared case); ValueError otherwise.

    The one place the "(3, 3) or (T, 3, 3)" rule is checked (also validates finiteness and focal lengths).
    """
    validate_intrinsics(K, name)
    if K.ndim == 2:
        return K.expand(num, 3, 3)
    if K.shape != (num, 3, 3):
        raise ValueError(f"{name} must be (3, 3) or ({num}, 3, 3), got {tuple(K.shape)}")
    return K


def validate_pose(c2w: torch.Tensor, name: str = "cam_to_world", atol: float = 1e-3) -> None:
    """Raise ValueError unless c2w is (..., 4, 4), finite and rigid (orthonormal rotation, det +1)."""
    if not isinstance(c2w, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (..., 4, 4), got {type(c2w).__name__}")
    if c2w.ndim < 2 or tuple(c2w.shape[-2:]) != (4, 4):
        raise ValueError(f"{name} must have shape (..., 4, 4), got {tuple(c2w.shape)}")
    if not torch.isfinite(c2w).all():
        raise ValueError(f"{name} has non-finite entries")
    m = c2w.double()
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64, device=m.device)
    if not torch.allclose(m[..., 3, :], bottom.expand_as(m[..., 3, :]), atol=atol):
        raise ValueError(f"{name} last row must be [0, 0, 0, 1]")
    R = m[..., :3, :3]
    eye = torch.eye(3, dtype=torch.float64, device=m.device)
    err = (R.transpose(-1, -2) @ R - eye).abs().amax()
    if err > atol or (torch.linalg.det(R) <= 0).any():
        raise ValueError(f"{name} is not a rigid transform (rotation part not orthonormal with det +1; "
                         f"max |R^T R - I| = {err.item():.3g})")


def valid_depth_mask(depth: torch.Tensor) -> torch.Tensor:
    """Boolean mask of usable depth: finite and strictly positive."""
    return torch.isfinite(depth) & (depth > 0)


def validate_depth(depth: torch.Tensor, name: str = "depth") -> None:
    """Raise ValueError unless depth is a floating (..., H, W) tensor (invalid values are allowed)."""
    if not isinstance(depth, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(depth).__name__}")
    if depth.ndim < 2:
        raise ValueError(f"{name} must have shape (..., H, W), got {tuple(depth.shape)}")
    if not depth.is_floating_point():
        raise ValueError(f"{name} must be floating point metres, got dtype {depth.dtype}")


# --------------------------------------------------------------------------------------------------
# Poses
# --------------------------------------------------------------------------------------------------
def rigid_transform_points(points: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``points @ R^T + t`` written out as ``((R_i0 x + R_i1 y) + R_i2 z) + t_i`` per output row.

    points (..., N, 3); R (..., 3, 3); t (..., 3). Returns (..., N, 3).
    Separate IEEE multiplies and adds in this fixed order (no BLAS, no fused multiply-add), so the result is the
    same bits on every CPU and GPU: a matmul's summation order and FMA use depend on the BLAS kernel the machine
    picks. The Triton readout kernel computes this very chain, which is what makes its winners the reference's.
    """
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    rows = [((R[..., i, 0, None] * x + R[..., i, 1, None] * y) + R[..., i, 2, None] * z) + t[..., i, None]
            for i in range(3)]
    return torch.stack(rows, dim=-1)


def invert_pose(T: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid (..., 4, 4) transforms, computed as [R^T, -R^T t] (same bits on every machine: the
    product is :func:`rigid_transform_points`' fixed chain, not a matmul)."""
    R = T[..., :3, :3]
    Rt = R.transpose(-1, -2)
    out = torch.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -rigid_transform_points(T[..., None, :3, 3], Rt, torch.zeros_like(T[..., :3, 3]))[..., 0, :]
    out[..., 3, 3] = 1.0
    return out


def quat_to_matrix(q: Sequence[float] | np.ndarray, normalize: bool = False) -> np.ndarray:
    """Quaternion(s) (..., 4) in (x, y, z, w) order -> rotation matrices (..., 3, 3) float64.

    Non-unit quaternions raise ValueError unless ``normalize`` (|q| must still be finite and > 1e-6).
    """
    from scipy.spatial.transform import Rotation

    q = np.asarray(q, dtype=np.float64)
    if q.shape[-1] != 4:
        raise ValueError(f"quaternion must have 4 components (x, y, z, w), got shape {q.shape}")
    if not np.isfinite(q).all():
        raise ValueError("quaternion has non-finite components")
    norm = np.linalg.norm(q, axis=-1)
    if (norm < 1e-6).any():
        raise ValueError("quaternion has zero norm")
    if not normalize and (np.abs(norm - 1.0) > 1e-3).any():
        raise ValueError(f"quaternion is not unit length (|q| = {norm.flatten()[:4].tolist()})")
    return Rotation.from_quat(q.reshape(-1, 4)).as_matrix().reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat(R: np.ndarray | torch.Tensor) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> quaternions (..., 4) in (x, y, z, w) order, w >= 0."""
    from scipy.spatial.transform import Rotation

    R = np.asarray(R.detach().cpu() if isinstance(R, torch.Tensor) else R, dtype=np.float64)
    q = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_quat()
    q = np.where(q[:, 3:4] < 0, -q, q)
    return q.reshape(R.shape[:-2] + (4,))


def pose_from_tq(t: Sequence[float], q: Sequence[float], normalize: bool = False) -> torch.Tensor:
    """Translation (3,) and quaternion (x, y, z, w) -> (4, 4) float32 transform."""
    t = np.asarray(t, dtype=np.float64)
    if t.shape != (3,) or not np.isfinite(t).all():
        raise ValueError(f"translation must be 3 finite numbers, got {t.tolist()}")
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix(q, normalize=normalize)
    T[:3, 3] = t
    return torch.from_numpy(T).float()


def pose_to_tq(T: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(4, 4) transform -> (translation (3,), quaternion (x, y, z, w))."""
    T = np.asarray(T.detach().cpu() if isinstance(T, torch.Tensor) else T, dtype=np.float64)
    return T[:3, 3].copy(), matrix_to_quat(T[:3, :3])


def look_at(
    eye: Sequence[float] | torch.Tensor,
    target: Sequence[float] | torch.Tensor,
    up: Sequence[float] | torch.Tensor = (0.0, 0.0, 1.0),
) -> torch.Tensor:
    """Camera-to-world (4, 4) of an OpenCV camera at ``eye`` looking at ``target``.

    ``up`` is the world's up direction; the camera's y axis (down in the image) points against it.
    """
    eye = torch.as_tensor(eye, dtype=torch.float64)
    target = torch.as_tensor(target, dtype=torch.float64)
    up = torch.as_tensor(up, dtype=torch.float64)
    z = target - eye
    if z.norm() < 1e-9:
        raise ValueError("look_at: eye and target coincide")
    z = z / z.norm()
    x = torch.linalg.cross(z, up)
    if x.norm() < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to up")
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T.float()


# --------------------------------------------------------------------------------------------------
# Projection geometry
# --------------------------------------------------------------------------------------------------
def pixel_centers(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(H, W, 2) continuous (u, v) coordinates of pixel centres: (j + 0.5, i + 0.5)."""
    v = torch.arange(height, device=device, dtype=dtype) + PIXEL_CENTER
    u = torch.arange(width, device=device, dtype=dtype) + PIXEL_CENTER
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], dim=-1)


def backproject(uv: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
    """Lift image points to world space.

    uv: (..., N, 2) continuous pixel coordinates; depth: (..., N) z-depth in metres;
    K: (..., 3, 3); c2w: (..., 4, 4). Returns (..., N, 3) world points.
    """
    fx, fy = K[..., 0, 0, None], K[..., 1, 1, None]
    cx, cy = K[..., 0, 2, None], K[..., 1, 2, None]
    x = (uv[..., 0] - cx) / fx * depth
    y = (uv[..., 1] - cy) / fy * depth
    cam = torch.stack([x, y, depth], dim=-1)
    R = c2w[..., :3, :3]
    t = c2w[..., :3, 3]
    return cam @ R.transpose(-1, -2) + t.unsqueeze(-2)


def backproject_depth(depth: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
    """Every pixel of a depth map to world space.

    depth: (..., H, W); K: (..., 3, 3) for that (H, W); c2w: (..., 4, 4). Returns (..., H, W, 3).
    Invalid depth gives meaningless points: mask with :func:`valid_depth_mask`.
    """
    H, W = depth.shape[-2:]
    uv = pixel_centers(H, W, device=depth.device, dtype=depth.dtype).reshape(-1, 2)
    uv = uv.expand(*depth.shape[:-2], H * W, 2)
    pts = backproject(uv, depth.reshape(*depth.shape[:-2], H * W), K.to(depth.dtype), c2w.to(depth.dtype))
    return pts.reshape(*depth.shape, 3)


def project(points: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points into a camera.

    points: (..., N, 3); K: (..., 3, 3); c2w: (..., 4, 4).
    Returns uv (..., N, 2) continuous pixel coordinates and z (..., N) depth along the optical axis.
    Points behind the camera get z <= 0 (their uv is meaningless); callers mask them.
    Every step is a separate IEEE operation in a fixed order, so uv and z are the same bits on any machine.
    """
    w2c = invert_pose(c2w.to(points.dtype))
    cam = rigid_transform_points(points, w2c[..., :3, :3], w2c[..., :3, 3])
    z = cam[..., 2]
    safe_z = torch.where(z.abs() > 1e-12, z, torch.full_like(z, 1e-12))
    K = K.to(points.dtype)
    u = K[..., 0, 0, None] * cam[..., 0] / safe_z + K[..., 0, 2, None]
    v = K[..., 1, 1, None] * cam[..., 1] / safe_z + K[..., 1, 2, None]
    return torch.stack([u, v], dim=-1), z


def plucker_rays(K: torch.Tensor, c2w: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Plücker ray embedding per cell of an (height, width) grid.

    K: (..., 3, 3) already at (height, width) (see :func:`scale_intrinsics`); c2w: (..., 4, 4).
    Returns (..., 6, height, width): (o x d, d) with d the unit world-space ray through each cell centre
    and o the camera centre.
    """
    uv = pixel_centers(height, width, device=K.device, dtype=K.dtype).reshape(-1, 2)
    uv = uv.expand(*K.shape[:-2], height * width, 2)
    ones = torch.ones(uv.shape[:-1], device=K.device, dtype=K.dtype)
    fx, fy = K[..., 0, 0, None], K[..., 1, 1, None]
    cx, cy = K[..., 0, 2, None], K[..., 1, 2, None]
    d_cam = torch.stack([(uv[..., 0] - cx) / fx, (uv[..., 1] - cy) / fy, ones], dim=-1)
    c2w = c2w.to(K.dtype)
    d = d_cam @ c2w[..., :3, :3].transpose(-1, -2)
    d = d / d.norm(dim=-1, keepdim=True)
    o = c2w[..., :3, 3].unsqueeze(-2).expand_as(d)
    m = torch.linalg.cross(o, d, dim=-1)
    rays = torch.cat([m, d], dim=-1)  # (..., HW, 6)
    return rays.transpose(-1, -2).reshape(*K.shape[:-2], 6, height, width)


# --------------------------------------------------------------------------------------------------
# Latent grid bookkeeping
# --------------------------------------------------------------------------------------------------
def latent_size(height: int, width: int, stride: int = SPATIAL_STRIDE) -> tuple[int, int]:
    """Latent grid (h, w) of an (H, W) image; H and W must be multiples of ``stride``."""
    if height <= 0 or width <= 0 or height % stride or width % stride:
        raise ValueError(f"image size {height}x{width} must be positive multiples of {stride}")
    return height // stride, width // stride


def num_latent_frames(num_frames: int, stride: int = TEMPORAL_STRIDE) -> int:
    """Latent frames of a clip of ``num_frames`` pixel frames (must be 1 + stride * k)."""
    if num_frames < 1 or (num_frames - 1) % stride:
        raise ValueError(f"num_frames must be 1 + {stride}k (e.g. 1, 5, 9, 33), got {num_frames}")
    return 1 + (num_frames - 1) // stride


def latent_frame_indices(num_frames: int, stride: int = TEMPORAL_STRIDE) -> torch.Tensor:
    """Pixel frame that stands for each latent frame: 0, 4, 8, ... (the last of each group)."""
    return torch.arange(num_latent_frames(num_frames, stride)) * stride
