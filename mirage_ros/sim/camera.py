"""``synthetic_camera``: an RGB-D camera moving through a :mod:`mirage.scenes` scene, as a ROS 2 node.

Publishes at ``rate`` Hz, all with the same stamp per frame: ``rgb/image`` (rgb8), ``depth/image`` (16UC1 mm or
32FC1 m) and / or (``transport``) their image_transport siblings ``rgb/image/compressed`` (jpeg or png) and
``depth/image/compressedDepth``, ``rgb/camera_info`` and ``/tf`` (world -> body, or world -> camera optical frame
when ``body_frame`` is empty), plus ``/tf_static`` (body -> camera optical frame, transient local). Frames come from
:class:`~mirage_ros.sim.rig.SyntheticRig` (rendered once per trajectory pass, then cached), so the node,
the bag writer and the demo see identical data.

    python -m mirage_ros.sim.camera --ros-args -p rate:=10.0 -p trajectory:=orbit
    (or python -m mirage_ros.synthetic_camera, the ROS executable synthetic_camera)
"""

from __future__ import annotations

import sys
from typing import Any

from mirage_ros.conversions.time import stamp_to_ns

__all__ = ["SyntheticCamera", "CAMERA_PARAMS", "main"]

# name -> (default, description)
CAMERA_PARAMS: dict[str, tuple[Any, str]] = {
    "scene_seed": (0, "Seed of the random scene."),
    "num_objects": (6, "Objects in the scene."),
    "height": (120, "Image height (pixels)."),
    "width": (160, "Image width (pixels)."),
    "trajectory": ("orbit", "Camera path: forward, turn, orbit or loop."),
    "num_frames": (40, "Frames in one pass of the trajectory."),
    "rate": (10.0, "Publish rate (Hz)."),
    "loop": (True, "Repeat the trajectory forever; false: stop publishing after one pass."),
    "depth_encoding": ("16UC1", "16UC1 (millimetres) or 32FC1 (metres)."),
    "world_frame": ("odom", "Fixed frame (parent of the moving transform)."),
    "body_frame": ("base_link", "Moving body frame; empty: publish world -> camera directly."),
    "camera_frame": ("camera_color_optical_frame", "Optical frame of the images (REP 103 axes)."),
    "reliable": (False, "Publish images reliably (default: best effort, like real sensor drivers)."),
    "transport": ("raw", "Images as raw (rgb/image, depth/image), compressed (rgb/image/compressed in "
                  "compressed_format and depth/image/compressedDepth, as image_transport's plugins write them) "
                  "or both."),
    "compressed_format": ("jpeg", "Format of rgb/image/compressed: jpeg or png."),
}


class SyntheticCamera:
    """Owns an rclpy node (``self.node``) that publishes a :class:`SyntheticRig`'s frames on a timer."""

    def __init__(self, node_name: str = "synthetic_camera", rig=None, start_frame: int = 0, autostart: bool = True,
                 **node_kwargs):
        """``rig`` overrides the scene parameters; ``autostart=False`` publishes only on :meth:`publish_frame`."""
        from rcl_interfaces.msg import ParameterDescriptor
        from rclpy.node import Node
        from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                               qos_profile_sensor_data)
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage

        from mirage_ros.sim.rig import RigConfig, SyntheticRig

        self.node = node = Node(node_name, **node_kwargs)
        for name, (default, description) in CAMERA_PARAMS.items():
            node.declare_parameter(name, default, ParameterDescriptor(description=description, read_only=True))
        value = {name: node.get_parameter(name).value for name in CAMERA_PARAMS}
        if not value["rate"] > 0:
            raise ValueError(f"rate must be > 0, got {value['rate']}")
        if value["transport"] not in ("raw", "compressed", "both"):
            raise ValueError(f"transport must be raw, compressed or both, got {value['transport']!r}")
        if value["compressed_format"] not in ("jpeg", "png"):
            raise ValueError(f"compressed_format must be jpeg or png, got {value['compressed_format']!r}")
        self.transport, self.compressed_format = value["transport"], value["compressed_format"]
        self.rig = rig or SyntheticRig(RigConfig(
            scene_seed=value["scene_seed"], num_objects=value["num_objects"], height=value["height"],
            width=value["width"], trajectory=value["trajectory"], num_frames=value["num_frames"],
            depth_encoding=value["depth_encoding"], world_frame=value["world_frame"],
            body_frame=value["body_frame"], camera_frame=value["camera_frame"]))
        self.loop = bool(value["loop"])
        self.index = int(start_frame)
        self.published = 0
        image_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST) \
            if value["reliable"] else qos_profile_sensor_data
        self.rgb_pub = node.create_publisher(Image, "rgb/image", image_qos)
        self.depth_pub = node.create_publisher(Image, "depth/image", image_qos)
        self.info_pub = node.create_publisher(CameraInfo, "rgb/camera_info", image_qos)
        self.rgb_compressed_pub = self.depth_compressed_pub = None
        if self.transport != "raw":
            from sensor_msgs.msg import CompressedImage

            self.rgb_compressed_pub = node.create_publisher(CompressedImage, "rgb/image/compressed", image_qos)
            self.depth_compressed_pub = node.create_publisher(CompressedImage, "depth/image/compressedDepth",
                                                              image_qos)
        self.tf_pub = node.create_publisher(TFMessage, "/tf",
                                            QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        static_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
        self.tf_static_pub = node.create_publisher(TFMessage, "/tf_static", static_qos)
        c = self.rig.config
        if c.body_frame:
            now = stamp_to_ns(node.get_clock().now())
            self.tf_static_pub.publish(self._tf([(c.body_frame, c.camera_frame, self.rig.body_to_camera())], now))
        self.timer = node.create_timer(1.0 / float(value["rate"]), self.publish_next) if autostart else None
        from mirage_ros import dds

        if dds.decision:  # what this process did about large images over DDS (mirage_ros.run loads the profile)
            node.get_logger().info(dds.decision)

    def _tf(self, transforms, stamp_ns: int):
        from mirage_ros.conversions import tf_message

        return tf_message(transforms, stamp_ns)

    def publish_frame(self, index: int, stamp_ns: int | None = None) -> int:
        """Publish frame ``index`` of the rig (tf first, then rgb, depth, camera_info); returns the stamp used."""
        from mirage_ros.conversions import intrinsics_to_camera_info, numpy_to_image

        c = self.rig.config
        stamp_ns = stamp_to_ns(self.node.get_clock().now()) if stamp_ns is None else int(stamp_ns)
        f = self.rig.frame(index)
        moving = (c.world_frame, c.body_frame, f.world_to_body) if c.body_frame else \
            (c.world_frame, c.camera_frame, f.cam_to_world)
        self.tf_pub.publish(self._tf([moving], stamp_ns))
        if self.transport != "compressed":
            self.rgb_pub.publish(numpy_to_image(f.rgb, "rgb8", stamp=stamp_ns, frame_id=c.camera_frame))
            self.depth_pub.publish(numpy_to_image(f.depth, c.depth_encoding, stamp=stamp_ns, frame_id=c.camera_frame))
        if self.transport != "raw":
            from mirage_ros.conversions.compressed import (compressed_message, encode_compressed,
                                                           encode_compressed_depth)

            rgb = encode_compressed(f.rgb, "rgb8", self.compressed_format)
            depth = encode_compressed_depth(f.depth, c.depth_encoding)
            for pub, (fmt, data) in ((self.rgb_compressed_pub, rgb), (self.depth_compressed_pub, depth)):
                pub.publish(compressed_message(fmt, data, stamp=stamp_ns, frame_id=c.camera_frame))
        self.info_pub.publish(intrinsics_to_camera_info(f.intrinsics, c.height, c.width, stamp=stamp_ns,
                                                        frame_id=c.camera_frame))
        self.published += 1
        return stamp_ns

    def publish_next(self) -> None:
        if not self.loop and self.index >= len(self.rig):
            return
        self.publish_frame(self.index)
        self.index += 1

    def destroy(self) -> None:
        self.node.destroy_node()


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``synthetic_camera`` (``--ros-args`` as usual)."""
    from mirage_ros.run import run

    def build(graph):
        camera = SyntheticCamera(context=graph.context)
        graph.add(camera.node)
        return camera

    return run(build, argv, prog="synthetic_camera", single_threaded=True)


if __name__ == "__main__":
    sys.exit(main())
