"""Goal poses -> camera poses in the world frame, for ``~/imagine_trajectory`` and ``~/query_coverage`` (no ROS).

Turns the poses of a goal (each in its own header frame, for a body frame or the camera itself) into
camera-to-world matrices in the world frame, interpolates them to the requested number of frames
(linear translation, spherical-linear rotation) and stamps them: with the poses' own stamps when every pose has
one and they increase (interpolated like the poses), otherwise the first pose's stamp (or now) + i / fps. Transforms
come from a ``lookup(target_frame, source_frame, stamp_ns) -> (4, 4)`` callable (0 = latest), so this module
runs the same under the live TF buffer and in tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.spatial.transform import Rotation, Slerp

from mirage_ros.conversions.time import NS_PER_SECOND, stamp_to_ns

__all__ = ["GoalError", "ResolvedGoal", "pose_to_matrix", "resolve_poses", "interpolate_poses", "frame_stamps",
           "goal_stamps", "resolve_goal"]

Lookup = Callable[[str, str, int], np.ndarray]


class GoalError(ValueError):
    """A goal or request that cannot be served (the message says why)."""


@dataclass
class ResolvedGoal:
    cam_to_world: torch.Tensor   # (T, 4, 4) float32, camera optical frame in the world frame
    stamps: np.ndarray           # (T,) int64 nanoseconds
    frame_id: str                # header frame of the first pose (the world frame when it has none)
    fps: float
    stamps_from: str = "fps"     # "poses": the goal poses' own stamps (interpolated); "fps": start + i / fps


def pose_to_matrix(pose, name: str = "pose") -> np.ndarray:
    """geometry_msgs/Pose (or anything with .position.x.. / .orientation.x..) -> (4, 4) float64.

    Raises GoalError on non-finite values or a quaternion that is not unit length.
    """
    from mirage_ros.conversions.transform import pose_to_matrix as to_matrix

    try:
        T = to_matrix(pose).double().numpy()
    except ValueError as exc:
        raise GoalError(f"{name}: {exc}") from None
    return T


def resolve_poses(poses: Sequence, body_frame: str, camera_frame: str, world_frame: str,
                  lookup: Lookup) -> np.ndarray:
    """PoseStamped list -> (P, 4, 4) camera-to-world in ``world_frame``.

    Each pose gives ``body_frame`` (empty: the camera optical frame itself) in its header frame (empty: the
    world frame), looked up at its stamp (0: latest). The body -> camera transform is looked up as latest.
    """
    if len(poses) == 0:
        raise GoalError("the goal has no poses")
    body_to_cam = np.eye(4)
    if body_frame and body_frame != camera_frame:
        if not camera_frame:
            raise GoalError("body_frame is set but no camera frame is known yet (no camera_info received)")
        try:
            body_to_cam = np.asarray(lookup(body_frame, camera_frame, 0), dtype=np.float64)
        except Exception as exc:  # noqa: BLE001 - any lookup failure becomes a clear goal error
            raise GoalError(f"no transform from body_frame '{body_frame}' to camera frame '{camera_frame}': {exc}") \
                from None
    out = []
    for i, ps in enumerate(poses):
        frame = ps.header.frame_id or world_frame
        T_frame_body = pose_to_matrix(ps.pose, name=f"poses[{i}]")
        if frame == world_frame:
            T_world_frame = np.eye(4)
        else:
            try:
                T_world_frame = np.asarray(lookup(world_frame, frame, stamp_to_ns(ps.header.stamp)), dtype=np.float64)
            except Exception as exc:  # noqa: BLE001
                raise GoalError(f"poses[{i}]: no transform from '{frame}' to world frame '{world_frame}': {exc}") \
                    from None
        out.append(T_world_frame @ T_frame_body @ body_to_cam)
    return np.stack(out)


def interpolate_poses(c2w: np.ndarray, num_frames: int) -> np.ndarray:
    """(P, 4, 4) key poses -> (num_frames, 4, 4), evenly spaced in the key index.

    Translation is linear, rotation spherical-linear between neighbouring keys. ``num_frames == 0`` keeps
    the keys; a single key is held still.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    P = c2w.shape[0]
    if num_frames == 0 or num_frames == P:
        return c2w.copy()
    if num_frames < 0:
        raise GoalError(f"num_frames must be >= 0, got {num_frames}")
    if P == 1:
        return np.repeat(c2w, num_frames, axis=0)
    if num_frames == 1:
        return c2w[:1].copy()
    s = np.linspace(0.0, P - 1.0, num_frames)
    rot = Slerp(np.arange(P, dtype=np.float64), Rotation.from_matrix(c2w[:, :3, :3]))(s).as_matrix()
    i0 = np.clip(np.floor(s).astype(int), 0, P - 2)
    w = (s - i0)[:, None]
    trans = (1.0 - w) * c2w[i0, :3, 3] + w * c2w[i0 + 1, :3, 3]
    out = np.tile(np.eye(4), (num_frames, 1, 1))
    out[:, :3, :3] = rot
    out[:, :3, 3] = trans
    return out


def frame_stamps(start_ns: int, num_frames: int, fps: float) -> np.ndarray:
    """Stamps (int64 nanoseconds) of ``num_frames`` frames spaced by ``1 / fps`` from ``start_ns``."""
    if not fps > 0:
        raise GoalError(f"fps must be > 0, got {fps}")
    return int(start_ns) + np.round(np.arange(num_frames, dtype=np.float64) * (NS_PER_SECOND / fps)).astype(np.int64)


def goal_stamps(pose_stamps_ns: Sequence[int], num_frames: int, fps: float, now_ns: int) -> tuple[np.ndarray, str]:
    """Stamps (num_frames,) int64 ns of a goal's frames and where they came from ("poses" or "fps").

    When every pose carries a stamp and they strictly increase, the frames follow them: the pose stamps
    themselves (num_frames == number of poses), or interpolated linearly in the key index like the poses
    (:func:`interpolate_poses`). Otherwise frames are spaced by ``1 / fps`` from the first pose's stamp, or from
    ``now_ns`` when it has none.
    """
    keys = np.asarray(pose_stamps_ns, dtype=np.int64)
    if len(keys) >= 2 and (keys > 0).all() and (np.diff(keys) > 0).all():
        if num_frames == len(keys):
            return keys.copy(), "poses"
        s = np.linspace(0.0, len(keys) - 1.0, num_frames) if num_frames > 1 else np.zeros(1)
        return np.round(np.interp(s, np.arange(len(keys)), keys.astype(np.float64))).astype(np.int64), "poses"
    start = int(keys[0]) if len(keys) and keys[0] > 0 else int(now_ns)
    return frame_stamps(start, num_frames, fps), "fps"


def resolve_goal(goal, *, camera_frame: str, world_frame: str, lookup: Lookup, default_fps: float,
                 max_frames: int, now_ns: int) -> ResolvedGoal:
    """Validate an ImagineTrajectory goal and resolve it to camera poses and stamps (raises GoalError)."""
    if len(goal.poses) == 0:
        raise GoalError("the goal has no poses")
    fps = float(goal.fps) if goal.fps > 0 else float(default_fps)
    if not np.isfinite(fps) or fps <= 0:
        raise GoalError(f"fps must be a positive number, got {goal.fps}")
    num_frames = int(goal.num_frames) or len(goal.poses)
    if num_frames > max_frames:
        raise GoalError(f"the goal asks for {num_frames} frames, more than max_goal_frames={max_frames}")
    keys = resolve_poses(goal.poses, goal.body_frame, camera_frame, world_frame, lookup)
    c2w = interpolate_poses(keys, int(goal.num_frames))
    first = goal.poses[0].header
    stamps, source = goal_stamps([stamp_to_ns(p.header.stamp) for p in goal.poses], c2w.shape[0], fps, now_ns)
    return ResolvedGoal(
        cam_to_world=torch.from_numpy(c2w).float(),
        stamps=stamps,
        frame_id=first.frame_id or world_frame,
        fps=fps,
        stamps_from=source,
    )
