"""geometry_msgs Pose / Transform and tf2_msgs/TFMessage <-> (4, 4) matrices (quaternions x, y, z, w)."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch

from mirage.camera import pose_from_tq, pose_to_tq
from mirage_ros.conversions.time import ns_to_stamp

__all__ = ["pose_to_matrix", "transform_to_matrix", "matrix_to_pose", "matrix_to_transform", "tf_message"]


def _vector(v: Any) -> list[float]:
    return [float(v.x), float(v.y), float(v.z)]


def _quaternion(q: Any) -> list[float]:
    return [float(q.x), float(q.y), float(q.z), float(q.w)]


def pose_to_matrix(pose: Any, normalize: bool = False) -> torch.Tensor:
    """geometry_msgs/Pose -> (4, 4) float32. A non-unit quaternion raises ValueError unless ``normalize``."""
    return pose_from_tq(_vector(pose.position), _quaternion(pose.orientation), normalize=normalize)


def transform_to_matrix(transform: Any, normalize: bool = False) -> torch.Tensor:
    """geometry_msgs/Transform -> (4, 4) float32. A non-unit quaternion raises ValueError unless ``normalize``."""
    return pose_from_tq(_vector(transform.translation), _quaternion(transform.rotation), normalize=normalize)


def _tq(T: Any) -> tuple[np.ndarray, np.ndarray]:
    T = torch.as_tensor(np.asarray(T, dtype=np.float64)) if not isinstance(T, torch.Tensor) else T
    if tuple(T.shape) != (4, 4):
        raise ValueError(f"transform must have shape (4, 4), got {tuple(T.shape)}")
    if not torch.isfinite(T).all():
        raise ValueError("transform has non-finite entries")
    return pose_to_tq(T)


def matrix_to_pose(T: torch.Tensor | np.ndarray, msg_type: type | None = None) -> Any:
    """(4, 4) rigid transform -> geometry_msgs/Pose."""
    t, q = _tq(T)
    if msg_type is None:
        from geometry_msgs.msg import Pose as msg_type
    pose = msg_type()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in t)
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in q)
    return pose


def matrix_to_transform(T: torch.Tensor | np.ndarray, msg_type: type | None = None) -> Any:
    """(4, 4) rigid transform -> geometry_msgs/Transform."""
    t, q = _tq(T)
    if msg_type is None:
        from geometry_msgs.msg import Transform as msg_type
    tf = msg_type()
    tf.translation.x, tf.translation.y, tf.translation.z = (float(v) for v in t)
    tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w = (float(v) for v in q)
    return tf


def tf_message(transforms: Iterable[tuple[str, str, Any]], stamp_ns: int) -> Any:
    """[(parent, child, T_parent_child (4, 4)), ...] at one stamp -> tf2_msgs/TFMessage (rclpy)."""
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    msg = TFMessage()
    for parent, child, T in transforms:
        stamped = TransformStamped()
        stamped.header.stamp, stamped.header.frame_id, stamped.child_frame_id = ns_to_stamp(stamp_ns), parent, child
        stamped.transform = matrix_to_transform(T)
        msg.transforms.append(stamped)
    return msg
