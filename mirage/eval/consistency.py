"""3D and photometric consistency of generated frames, checked against the known cameras and depth.

In the spirit of WorldScore's 3D and photometric consistency, but computed against the geometry we *know* (the
commanded cameras, and the scene's or sensor's depth at those cameras) instead of geometry re-estimated from
the generated video, so the scores need no model stack and mean the same on every method. Exactly:

**Frame pairs** (:func:`frame_pairs`): every ``(i, j = i + g)`` for each gap ``g`` in ``gaps`` (default 1 and 4:
neighbours, and frames one latent group apart), all frames of the video (frame 0 included).

**(a) 3D consistency** (:func:`match_features`, :func:`feature_consistency`). Keypoints and descriptors on each
frame (grey uint8) from OpenCV: SIFT (default) or ORB. Matches ``i -> j``: brute force (L2 for SIFT, Hamming
for ORB), kept when they pass Lowe's ratio test (best / second best distance < ``ratio``, 0.8) and are mutual
(j's best match back is the same keypoint). OpenCV puts pixel centres at integers; coordinates are moved to
mirage's +0.5 convention (:mod:`mirage.camera`) before any geometry. For every match ``(x_i, x_j)``:

* **epipolar error** (pixels, needs no depth): the symmetric distance ``(d(x_j, F x_i) + d(x_i, F^T x_j)) / 2``
  of each point from the other's epipolar line, ``F = K_j^-T [t]_x R K_i^-1`` with ``(R, t)`` the pose of camera
  i in camera j. Undefined without a baseline (``|t| < 1e-6`` m): such pairs give no epipolar errors;
* **reprojection error** (pixels): ``x_i`` lifted with the known depth of frame i at its pixel (nearest) and
  projected into camera j, ``|pi_j(X) - x_j|``. Matches on invalid depth, or whose point lies behind camera j,
  are left out.

Per clip: ``reproj_px`` and ``epipolar_px`` are the **medians** over all matches of all pairs (a ratio test
still lets a few wrong matches through; a median is not moved by them), ``reproj_inliers`` the share of matches
with reprojection error <= ``inlier_px`` (1 px), ``matches`` the mean number of matches per pair.

**(b) photometric consistency** (:func:`warp_frame`, :func:`photometric_consistency`). Frame i is warped into
frame j: every pixel centre ``p`` of j with valid depth ``D_j(p)`` is lifted, projected into camera i at
``(u, z_i)`` and frame i is sampled there (bilinear). ``p`` is **co-visible** when ``u`` lies inside frame i
(the bilinear footprint included) and passes the **occlusion test**: frame i's own depth at ``u`` (nearest)
is valid and ``|z_i - D_i(u)| <= occlusion_tol * z_i`` (default 5%): the surface camera i sees there is the same
point, not one in front of it. ``photo_L1`` is the mean absolute difference ``|I_j(p) - I_i(u)|`` over
co-visible pixels and RGB channels of all pairs (images in [0, 1]); ``photo_PSNR`` the PSNR of the same
pixels (one MSE); ``covisible`` the share of frame-j pixels that were co-visible.

Known answers (tests/test_eval_consistency.py): a frame warped onto itself gives exactly zero; an image shifted
by s pixels with unchanged cameras gives a reprojection error of s; the exact rendering of a synthetic scene
gives near-zero errors and a perturbed one larger errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mirage.camera import PIXEL_CENTER, backproject, batch_intrinsics, invert_pose, pixel_centers, project, \
    valid_depth_mask, validate_pose
from mirage.media import to_uint8

__all__ = ["CONSISTENCY_METRICS", "CONSISTENCY_HIGHER_IS_BETTER", "DETECTORS", "Matches", "frame_pairs",
           "match_features", "epipolar_errors", "reprojection_errors", "feature_consistency", "warp_frame",
           "photometric_consistency", "consistency_metrics"]

CONSISTENCY_METRICS = ("reproj_px", "epipolar_px", "reproj_inliers", "photo_L1", "photo_PSNR", "matches")
CONSISTENCY_HIGHER_IS_BETTER = {"reproj_px": False, "epipolar_px": False, "reproj_inliers": True, "photo_L1": False,
                                "photo_PSNR": True, "matches": True}
DETECTORS = ("sift", "orb")
DEFAULT_GAPS = (1, 4)


# ---------------------------------------------------------------------------------------------------- inputs
def _check_video(frames: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor,
                 depth: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """frames (T, 3, H, W) in [0, 1]; intrinsics (3, 3) | (T, 3, 3); cam_to_world (T, 4, 4); depth (T, H, W) | None.
    Returns all four float64 (frames float32) on the CPU; ValueError naming the first that does not fit."""
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be a (T, 3, H, W) tensor in [0, 1], got {tuple(getattr(frames, 'shape', ()))}")
    T, _, H, W = frames.shape
    if not isinstance(cam_to_world, torch.Tensor) or tuple(cam_to_world.shape) != (T, 4, 4):
        raise ValueError(f"cam_to_world must be ({T}, 4, 4), got {tuple(getattr(cam_to_world, 'shape', ()))}")
    validate_pose(cam_to_world, "cam_to_world")
    K = batch_intrinsics(intrinsics, T, "intrinsics")
    if depth is not None:
        if not isinstance(depth, torch.Tensor) or tuple(depth.shape) != (T, H, W):
            raise ValueError(f"depth must be ({T}, {H}, {W}), got {tuple(getattr(depth, 'shape', ()))}")
        depth = depth.detach().cpu().double()
    return frames.detach().cpu().float(), K.detach().cpu().double(), cam_to_world.detach().cpu().double(), depth


def frame_pairs(num_frames: int, gaps: Sequence[int] = DEFAULT_GAPS) -> list[tuple[int, int]]:
    """Every ``(i, i + g)`` with ``0 <= i < i + g < num_frames`` for each gap ``g`` (positive), in gap order."""
    if not gaps or any(int(g) < 1 for g in gaps):
        raise ValueError(f"gaps must be positive integers, got {list(gaps)}")
    return [(i, i + int(g)) for g in gaps for i in range(num_frames - int(g))]


def _relative_pose(c2w_i: torch.Tensor, c2w_j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(R (3, 3), t (3,)) taking camera-i coordinates to camera-j coordinates."""
    T_ji = invert_pose(c2w_j) @ c2w_i
    return T_ji[:3, :3], T_ji[:3, 3]


# ---------------------------------------------------------------------------------------------------- (a) 3D
@dataclass
class Matches:
    """Feature matches between two frames: xy_i, xy_j (M, 2) float64 pixel coordinates, mirage convention."""

    xy_i: torch.Tensor
    xy_j: torch.Tensor

    def __len__(self) -> int:
        return int(self.xy_i.shape[0])


def _detector(kind: str):
    import cv2

    if kind == "sift":
        return cv2.SIFT_create(contrastThreshold=0.02), cv2.NORM_L2
    if kind == "orb":  # small patches: mirage's frames are small
        return cv2.ORB_create(nfeatures=1000, edgeThreshold=9, patchSize=9, fastThreshold=5), cv2.NORM_HAMMING
    raise ValueError(f"detector must be one of {DETECTORS}, got {kind!r}")


def _features(image: np.ndarray, detector):
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    keypoints, descriptors = detector.detectAndCompute(grey, None)
    xy = np.array([k.pt for k in keypoints], dtype=np.float64).reshape(-1, 2) + PIXEL_CENTER
    return xy, descriptors


def _match(desc_i, desc_j, norm: int, ratio: float) -> list[tuple[int, int]]:
    """Mutual ratio-test matches (index in i, index in j)."""
    import cv2

    if desc_i is None or desc_j is None or len(desc_i) < 2 or len(desc_j) < 2:
        return []
    matcher = cv2.BFMatcher(norm)
    forward = matcher.knnMatch(desc_i, desc_j, k=2)
    backward = {m[0].queryIdx: m[0].trainIdx for m in matcher.knnMatch(desc_j, desc_i, k=2) if m}
    out = []
    for pair in forward:
        if len(pair) < 2:
            continue
        best, second = pair
        if best.distance < ratio * second.distance and backward.get(best.trainIdx) == best.queryIdx:
            out.append((best.queryIdx, best.trainIdx))
    return out


def match_features(frames: torch.Tensor, pairs: Sequence[tuple[int, int]], detector: str = "sift",
                   ratio: float = 0.8) -> list[Matches]:
    """Matches of every pair ``(i, j)`` of ``frames`` (T, 3, H, W) in [0, 1] (see the module docstring)."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    det, norm = _detector(detector)
    images = to_uint8(frames)
    needed = sorted({k for pair in pairs for k in pair})
    feats = {k: _features(images[k], det) for k in needed}
    out = []
    for i, j in pairs:
        (xy_i, d_i), (xy_j, d_j) = feats[i], feats[j]
        idx = _match(d_i, d_j, norm, ratio)
        a = torch.from_numpy(xy_i[[m[0] for m in idx]].reshape(-1, 2))
        b = torch.from_numpy(xy_j[[m[1] for m in idx]].reshape(-1, 2))
        out.append(Matches(a, b))
    return out


def epipolar_errors(matches: Matches, K_i: torch.Tensor, K_j: torch.Tensor, c2w_i: torch.Tensor,
                    c2w_j: torch.Tensor, min_baseline: float = 1e-6) -> torch.Tensor:
    """(M,) symmetric epipolar distance in pixels of each match; empty when the cameras share a centre."""
    R, t = _relative_pose(c2w_i.double(), c2w_j.double())
    if float(t.norm()) < min_baseline or len(matches) == 0:
        return torch.zeros(0, dtype=torch.float64)
    tx = torch.tensor([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]], dtype=torch.float64)
    Fm = torch.linalg.inv(K_j.double()).T @ tx @ R @ torch.linalg.inv(K_i.double())
    ones = torch.ones(len(matches), 1, dtype=torch.float64)
    xi = torch.cat([matches.xy_i, ones], 1)
    xj = torch.cat([matches.xy_j, ones], 1)
    line_j = xi @ Fm.T  # (M, 3): F x_i
    line_i = xj @ Fm    # (M, 3): F^T x_j
    algebraic = (xj * line_j).sum(1).abs()
    d_j = algebraic / line_j[:, :2].norm(dim=1).clamp_min(1e-12)
    d_i = algebraic / line_i[:, :2].norm(dim=1).clamp_min(1e-12)
    return 0.5 * (d_i + d_j)


def reprojection_errors(matches: Matches, depth_i: torch.Tensor, K_i: torch.Tensor, K_j: torch.Tensor,
                        c2w_i: torch.Tensor, c2w_j: torch.Tensor) -> torch.Tensor:
    """(M',) pixels: ``x_i`` lifted with ``depth_i`` (H, W) at its pixel, projected into j, distance to ``x_j``;
    matches on invalid depth or behind camera j are left out."""
    if len(matches) == 0:
        return torch.zeros(0, dtype=torch.float64)
    H, W = depth_i.shape
    col = matches.xy_i[:, 0].floor().long().clamp(0, W - 1)
    row = matches.xy_i[:, 1].floor().long().clamp(0, H - 1)
    z = depth_i.double()[row, col]
    ok = valid_depth_mask(z)
    if not bool(ok.any()):
        return torch.zeros(0, dtype=torch.float64)
    world = backproject(matches.xy_i[ok], z[ok], K_i.double(), c2w_i.double())
    uv, zj = project(world, K_j.double(), c2w_j.double())
    front = zj > 1e-6
    return (uv[front] - matches.xy_j[ok][front]).norm(dim=1)


def feature_consistency(frames: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor,
                        depth: torch.Tensor | None = None, gaps: Sequence[int] = DEFAULT_GAPS,
                        detector: str = "sift", ratio: float = 0.8, inlier_px: float = 1.0) -> dict[str, float]:
    """(a) over the pairs of one video: {reproj_px, epipolar_px, reproj_inliers, matches} (NaN where undefined;
    reprojection needs ``depth`` (T, H, W))."""
    frames, K, c2w, depth = _check_video(frames, intrinsics, cam_to_world, depth)
    pairs = frame_pairs(frames.shape[0], gaps)
    if not pairs:
        raise ValueError(f"{frames.shape[0]} frames make no pair with gaps {list(gaps)}")
    epi, rep, counts = [], [], []
    for (i, j), m in zip(pairs, match_features(frames, pairs, detector, ratio)):
        counts.append(len(m))
        epi.append(epipolar_errors(m, K[i], K[j], c2w[i], c2w[j]))
        if depth is not None:
            rep.append(reprojection_errors(m, depth[i], K[i], K[j], c2w[i], c2w[j]))
    epi = torch.cat(epi)
    rep = torch.cat(rep) if rep else torch.zeros(0, dtype=torch.float64)
    nan = float("nan")
    return {"reproj_px": float(rep.median()) if rep.numel() else nan,
            "epipolar_px": float(epi.median()) if epi.numel() else nan,
            "reproj_inliers": float((rep <= inlier_px).double().mean()) if rep.numel() else nan,
            "matches": float(np.mean(counts))}


# ---------------------------------------------------------------------------------------------------- (b) photo
def warp_frame(image_i: torch.Tensor, depth_i: torch.Tensor, depth_j: torch.Tensor, K_i: torch.Tensor,
               K_j: torch.Tensor, c2w_i: torch.Tensor, c2w_j: torch.Tensor, occlusion_tol: float = 0.05
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame i (3, H, W) seen from camera j: (warped (3, H, W), co-visible (H, W) bool), see the module docstring.

    depth_i, depth_j (H, W) metres at cameras i and j; K_* (3, 3); c2w_* (4, 4).
    """
    if not occlusion_tol > 0:
        raise ValueError(f"occlusion_tol must be positive, got {occlusion_tol}")
    _, H, W = image_i.shape
    d_j = depth_j.double()
    valid_j = valid_depth_mask(d_j)
    uv_j = pixel_centers(H, W, dtype=torch.float64).reshape(-1, 2)
    safe = torch.where(valid_j, d_j, torch.ones_like(d_j)).reshape(-1)
    world = backproject(uv_j, safe, K_j.double(), c2w_j.double())
    uv, z = project(world, K_i.double(), c2w_i.double())
    u, v = uv[:, 0], uv[:, 1]
    # inside, with the whole bilinear footprint (pixel centres 0.5 .. W-0.5)
    inside = (z > 1e-6) & (u >= PIXEL_CENTER) & (u <= W - PIXEL_CENTER) & (v >= PIXEL_CENTER) & (v <= H - PIXEL_CENTER)
    col = u.floor().long().clamp(0, W - 1)
    row = v.floor().long().clamp(0, H - 1)
    seen = depth_i.double()[row, col]
    same_surface = valid_depth_mask(seen) & ((z - seen).abs() <= occlusion_tol * z.abs())
    covisible = (valid_j.reshape(-1) & inside & same_surface).reshape(H, W)
    grid = torch.stack([u / W * 2 - 1, v / H * 2 - 1], -1).reshape(1, H, W, 2)  # align_corners=False convention
    warped = F.grid_sample(image_i[None].double(), grid, mode="bilinear", padding_mode="border",
                           align_corners=False)[0]
    return warped.to(image_i.dtype), covisible


def photometric_consistency(frames: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor,
                            depth: torch.Tensor, gaps: Sequence[int] = DEFAULT_GAPS, occlusion_tol: float = 0.05
                            ) -> dict[str, float]:
    """(b) over the pairs of one video: {photo_L1, photo_PSNR, covisible} (NaN when no pixel is co-visible)."""
    frames, K, c2w, depth = _check_video(frames, intrinsics, cam_to_world, depth)
    if depth is None:
        raise ValueError("photometric consistency needs depth (T, H, W)")
    pairs = frame_pairs(frames.shape[0], gaps)
    if not pairs:
        raise ValueError(f"{frames.shape[0]} frames make no pair with gaps {list(gaps)}")
    abs_sum = sq_sum = 0.0
    count = 0
    total = 0
    for i, j in pairs:
        warped, covisible = warp_frame(frames[i].double(), depth[i], depth[j], K[i], K[j], c2w[i], c2w[j],
                                       occlusion_tol)
        diff = (warped - frames[j].double())[:, covisible]  # (3, n)
        abs_sum += float(diff.abs().sum())
        sq_sum += float(diff.pow(2).sum())
        count += int(diff.numel())
        total += covisible.numel()
    if count == 0:
        return {"photo_L1": float("nan"), "photo_PSNR": float("nan"), "covisible": 0.0}
    mse = sq_sum / count
    return {"photo_L1": abs_sum / count, "photo_PSNR": min(100.0, 10.0 * math.log10(1.0 / max(mse, 1e-30))),
            "covisible": count / 3 / total}


def consistency_metrics(frames: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor,
                        depth: torch.Tensor | None, gaps: Sequence[int] = DEFAULT_GAPS, detector: str = "sift",
                        occlusion_tol: float = 0.05) -> dict[str, float]:
    """Both measures of one video (:data:`CONSISTENCY_METRICS` plus ``covisible``); without depth only the
    epipolar error and the matches are defined (the rest NaN)."""
    values = feature_consistency(frames, intrinsics, cam_to_world, depth, gaps, detector)
    if depth is None:
        values |= {"photo_L1": float("nan"), "photo_PSNR": float("nan"), "covisible": float("nan")}
    else:
        values |= photometric_consistency(frames, intrinsics, cam_to_world, depth, gaps, occlusion_tol)
    return values
