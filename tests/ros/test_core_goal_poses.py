"""mirage_ros.core.goal_poses: goal poses through TF and a body frame, interpolation, stamps, errors."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mirage.camera import look_at
from mirage.frames import KeyframeSelector
from mirage_ros.core.goal_poses import GoalError, frame_stamps, interpolate_poses, resolve_goal, resolve_poses


def _pose_stamped(T, frame="odom", sec=0):
    t = T[:3, 3]
    from mirage.camera import matrix_to_quat

    q = matrix_to_quat(T[:3, :3])
    return SimpleNamespace(
        header=SimpleNamespace(frame_id=frame, stamp=SimpleNamespace(sec=sec, nanosec=0)),
        pose=SimpleNamespace(position=SimpleNamespace(x=t[0], y=t[1], z=t[2]),
                             orientation=SimpleNamespace(x=q[0], y=q[1], z=q[2], w=q[3])))


def test_interpolate_poses_slerps_between_keys():
    A = look_at([0, 0, 0], [1, 0, 0]).double().numpy()
    B = look_at([1, 0, 0], [1, 1, 0]).double().numpy()  # moved 1 m and turned 90 degrees
    out = interpolate_poses(np.stack([A, B]), 3)
    assert out.shape == (3, 4, 4)
    np.testing.assert_allclose(out[0], A, atol=1e-9)
    np.testing.assert_allclose(out[2], B, atol=1e-9)
    np.testing.assert_allclose(out[1][:3, 3], [0.5, 0, 0], atol=1e-9)
    mid = KeyframeSelector()
    mid.accept(A)
    assert mid.distance(out[1])[1] == pytest.approx(45.0, abs=1e-6)
    assert interpolate_poses(A[None], 4).shape == (4, 4, 4)


def test_resolve_goal_composes_frames_and_body():
    world_T_map = np.eye(4)
    world_T_map[:3, 3] = [10, 0, 0]
    body_T_cam = np.eye(4)
    body_T_cam[:3, 3] = [0, 0, 1]
    table = {("odom", "map"): world_T_map, ("base_link", "cam"): body_T_cam}

    def lookup(target, source, stamp):
        if (target, source) not in table:
            raise LookupError(f"{target} <- {source} unknown")
        return table[(target, source)]

    goal = SimpleNamespace(poses=[_pose_stamped(np.eye(4), "map")], body_frame="base_link", fps=0.0, num_frames=0)
    r = resolve_goal(goal, camera_frame="cam", world_frame="odom", lookup=lookup, default_fps=5.0, max_frames=10,
                     now_ns=100_000_000_000)
    np.testing.assert_allclose(r.cam_to_world[0, :3, 3].numpy(), [10, 0, 1])
    assert r.frame_id == "map" and r.fps == 5.0 and r.stamps[0] == 100_000_000_000
    assert frame_stamps(1_795_000_000_000_000_001, 3, 4.0).tolist() == [
        1_795_000_000_000_000_001, 1_795_000_000_250_000_001, 1_795_000_000_500_000_001]

    with pytest.raises(GoalError, match="no poses"):
        resolve_poses([], "", "cam", "odom", lookup)
    with pytest.raises(GoalError, match="nowhere"):
        resolve_poses([_pose_stamped(np.eye(4), "nowhere")], "", "cam", "odom", lookup)
    bad = _pose_stamped(np.eye(4))
    bad.pose.orientation.w = 2.0
    with pytest.raises(GoalError, match="unit"):
        resolve_poses([bad], "", "cam", "odom", lookup)
    goal.num_frames = 11
    with pytest.raises(GoalError, match="max_goal_frames"):
        resolve_goal(goal, camera_frame="cam", world_frame="odom", lookup=lookup, default_fps=5.0, max_frames=10,
                     now_ns=0)
