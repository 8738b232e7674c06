"""Imagined frames with their poses and what was observed, as topics a planner and RViz can use [rclpy].

For every imagined frame, all with the frame's stamp and in the imagined camera's frame (``imagined_frame``):

* ``/tf``: world frame -> ``imagined_frame``, the camera pose the frame was imagined at (published first, so RViz's
  Camera display and planners can place the image when it arrives);
* ``~/imagined/image`` (rgb8) and ``~/imagined/camera_info`` (the intrinsics it was imagined with);
* ``~/imagined/observed_mask`` (mono8): 255 where the node's observed memory held what the frame shows (the
  readout's visibility, at frame size), 0 where the frame is imagined.

Per goal, before its first frame: ``~/imagined/path`` (nav_msgs/Path in the world frame, transient local), the
camera poses of every requested frame at their stamps. The action result carries the same poses.
"""

from __future__ import annotations

import numpy as np

from mirage_ros import conversions as conv
from mirage_ros.core.goals import FrameBatch, GoalPlan

__all__ = ["ImaginedPublisher", "pose_stamped", "mask_image"]


def pose_stamped(cam_to_world: np.ndarray, stamp_ns: int, frame_id: str):
    """geometry_msgs/PoseStamped of a (4, 4) pose in ``frame_id`` at ``stamp_ns``."""
    from geometry_msgs.msg import PoseStamped

    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = conv.ns_to_stamp(int(stamp_ns)), frame_id
    msg.pose = conv.matrix_to_pose(np.asarray(cam_to_world, dtype=np.float64))
    return msg


def mask_image(mask: np.ndarray, stamp_ns: int, frame_id: str):
    """sensor_msgs/Image mono8 of an (H, W) uint8 observed mask (255 observed, 0 imagined)."""
    return conv.numpy_to_image(np.ascontiguousarray(mask, dtype=np.uint8), "mono8", stamp=int(stamp_ns),
                               frame_id=frame_id)


class ImaginedPublisher:
    """The publishers of :mod:`this module <mirage_ros.imagined_output>` on ``node``."""

    def __init__(self, node, world_frame: str, image_size: tuple[int, int]):
        from nav_msgs.msg import Path
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage

        self.world_frame, self.image_size = world_frame, image_size
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
        self.image_pub = node.create_publisher(Image, "~/imagined/image", 10)
        self.info_pub = node.create_publisher(CameraInfo, "~/imagined/camera_info", 10)
        self.mask_pub = node.create_publisher(Image, "~/imagined/observed_mask", 10)
        self.path_pub = node.create_publisher(Path, "~/imagined/path", latched)
        self.tf_pub = node.create_publisher(TFMessage, node.resolve_topic_name("/tf"),
                                            QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))

    def publish_plan(self, plan: GoalPlan) -> None:
        """The goal's camera poses as a nav_msgs/Path in the world frame."""
        from nav_msgs.msg import Path

        path = Path()
        first = int(plan.stamps[0]) if len(plan.stamps) else 0
        path.header.stamp, path.header.frame_id = conv.ns_to_stamp(first), self.world_frame
        path.poses = self.poses(plan.cam_to_world, plan.stamps)
        self.path_pub.publish(path)

    def poses(self, cam_to_world: np.ndarray, stamps: np.ndarray) -> list:
        """PoseStamped per frame, in the world frame."""
        return [pose_stamped(T, t, self.world_frame) for T, t in zip(cam_to_world, stamps)]

    def publish_batch(self, batch: FrameBatch) -> None:
        """TF, image, camera_info and observed mask of each frame of a decoded batch."""
        from mirage_ros.conversions import tf_message

        h, w = self.image_size
        for i, (frame, t) in enumerate(zip(batch.frames, batch.stamps)):
            stamp = int(t)
            if batch.cam_to_world is not None:
                self.tf_pub.publish(tf_message([(self.world_frame, batch.frame_id, batch.cam_to_world[i])], stamp))
            self.image_pub.publish(conv.numpy_to_image(frame, "rgb8", stamp=stamp, frame_id=batch.frame_id))
            self.info_pub.publish(conv.intrinsics_to_camera_info(batch.intrinsics, h, w, stamp=stamp,
                                                                 frame_id=batch.frame_id))
            if batch.masks is not None:
                self.mask_pub.publish(mask_image(batch.masks[i], stamp, batch.frame_id))
