"""mirage_ros.conversions.transform: Pose / Transform <-> (4, 4).

Readers are tested on plain namespaces (what rosbags messages look like) so they run without ROS; writers and
round trips through real rclpy messages are marked ``ros``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch

from mirage.camera import pose_from_tq
from mirage_ros import conversions as conv


def fake_pose(t, q) -> NS:
    return NS(position=NS(x=t[0], y=t[1], z=t[2]), orientation=NS(x=q[0], y=q[1], z=q[2], w=q[3]))


def test_pose_and_transform_to_matrix():
    q = [0.0, 0.0, math.sin(math.pi / 8), math.cos(math.pi / 8)]  # 45 degrees about z
    T = conv.pose_to_matrix(fake_pose([1.0, 2.0, 3.0], q))
    torch.testing.assert_close(T, pose_from_tq([1.0, 2.0, 3.0], q))
    assert T[0, 0].item() == pytest.approx(math.sqrt(0.5), abs=1e-6)
    tf = NS(translation=NS(x=1.0, y=2.0, z=3.0), rotation=NS(x=q[0], y=q[1], z=q[2], w=q[3]))
    torch.testing.assert_close(conv.transform_to_matrix(tf), T)


def test_non_unit_quaternion_rejected_unless_normalised():
    pose = fake_pose([0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="not unit length"):
        conv.pose_to_matrix(pose)
    torch.testing.assert_close(conv.pose_to_matrix(pose, normalize=True), torch.eye(4))


@pytest.mark.ros
def test_rclpy_pose_round_trip():
    q = np.array([0.1, -0.2, 0.3, 0.9])
    q /= np.linalg.norm(q)
    T = pose_from_tq([0.5, -1.0, 2.0], q)
    torch.testing.assert_close(conv.pose_to_matrix(conv.matrix_to_pose(T)), T, atol=1e-6, rtol=0)
    torch.testing.assert_close(conv.transform_to_matrix(conv.matrix_to_transform(T.numpy())), T, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"shape \(4, 4\)"):
        conv.matrix_to_pose(np.eye(3))
