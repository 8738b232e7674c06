"""ROS 2 messages <-> numpy / mirage types, one module per message family, without cv_bridge or sensor_msgs_py.

    time          the one stamp reader (``stamp_to_ns``) and writer (``ns_to_stamp``), ``fill_header``
    image         sensor_msgs/Image (colour and depth)
    compressed    sensor_msgs/CompressedImage: image_transport's compressed (jpeg / png) and compressedDepth
    camera_info   sensor_msgs/CameraInfo <-> intrinsics
    pointcloud    sensor_msgs/PointCloud2
    transform     geometry_msgs Pose / Transform, tf2_msgs/TFMessage

Readers are duck-typed: they take rclpy messages and ``rosbags`` message objects alike (same field names).
Writers build rclpy messages and import those classes lazily (``msg_type`` overrides the class with any
default-constructible one with the same fields), so this package imports without ROS.

Conventions are mirage's (:mod:`mirage.camera`): depth in metres with 0 meaning "no depth", intrinsics with
pixel centres at +0.5 (ROS ``CameraInfo`` puts them at integers), quaternions (x, y, z, w), 4x4 transforms.
"""

from mirage_ros.conversions.camera_info import camera_info_to_intrinsics, intrinsics_to_camera_info, pinhole_fields
from mirage_ros.conversions.compressed import (
    CorruptPayload,
    compressed_to_depth,
    compressed_to_rgb,
    depth_to_compressed_depth,
    is_compressed,
    rgb_to_compressed,
)
from mirage_ros.conversions.image import (
    COLOUR_ENCODINGS,
    DEPTH_ENCODINGS,
    IMAGE_ENCODINGS,
    depth_to_image,
    encode_image,
    image_to_depth,
    image_to_numpy,
    image_to_rgb,
    numpy_to_image,
)
from mirage_ros.conversions.pointcloud import numpy_to_pointcloud2, pack_rgb, pointcloud2_to_numpy, unpack_rgb
from mirage_ros.conversions.time import NS_PER_SECOND, fill_header, ns_to_seconds, ns_to_stamp, stamp_to_ns
from mirage_ros.conversions.transform import (
    matrix_to_pose,
    matrix_to_transform,
    pose_to_matrix,
    tf_message,
    transform_to_matrix,
)

__all__ = [
    "IMAGE_ENCODINGS",
    "DEPTH_ENCODINGS",
    "COLOUR_ENCODINGS",
    "NS_PER_SECOND",
    "stamp_to_ns",
    "ns_to_stamp",
    "ns_to_seconds",
    "fill_header",
    "image_to_numpy",
    "encode_image",
    "numpy_to_image",
    "image_to_rgb",
    "image_to_depth",
    "depth_to_image",
    "camera_info_to_intrinsics",
    "pinhole_fields",
    "intrinsics_to_camera_info",
    "pack_rgb",
    "unpack_rgb",
    "pointcloud2_to_numpy",
    "numpy_to_pointcloud2",
    "pose_to_matrix",
    "transform_to_matrix",
    "matrix_to_pose",
    "matrix_to_transform",
    "tf_message",
    "CorruptPayload",
    "is_compressed",
    "compressed_to_rgb",
    "compressed_to_depth",
    "rgb_to_compressed",
    "depth_to_compressed_depth",
]
