"""Write the synthetic camera to a ROS 2 bag with ``rosbags`` (sqlite3 or MCAP), no ROS graph needed.

The bag holds exactly what the synthetic camera node publishes, at the same stamps: ``/rgb/image``
(rgb8), ``/depth/image`` (16UC1 mm or 32FC1 m) or their compressed siblings (``/rgb/image/compressed``,
``/depth/image/compressedDepth``), ``/rgb/camera_info``, ``/tf`` (world -> body) and ``/tf_static`` (body ->
camera optical frame, offered as transient-local so a replayer latches it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mirage.camera import pose_to_tq
from mirage_ros.bags.read import BAG_TOPICS, typestore
from mirage_ros.conversions.camera_info import pinhole_fields
from mirage_ros.conversions.compressed import encode_compressed, encode_compressed_depth
from mirage_ros.conversions.image import encode_image
from mirage_ros.conversions.time import NS_PER_SECOND, ns_to_stamp
from mirage_ros.sim.rig import RigConfig, SyntheticRig

__all__ = ["BAG_TOPICS", "STORAGE_PLUGINS", "open_bag_writer", "camera_connections", "write_rig_bag", "typestore",
           "add_record_arguments", "record_main"]


def _qos(transient_local: bool, reliable: bool = True):
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(sec=0, nsec=0)
    return Qos(
        history=QosHistory.KEEP_LAST, depth=1 if transient_local else 10,
        reliability=QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
        durability=QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
        deadline=zero, lifespan=zero, liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=zero,
        avoid_ros_namespace_conventions=False,
    )


class _Builders:
    """rosbags message builders for one typestore (rosbags classes take every field at construction, so the
    rclpy writers of :mod:`mirage_ros.conversions` cannot fill them; the wire layouts are theirs)."""

    def __init__(self, ts):
        self.t = ts.types

    def header(self, stamp_ns: int, frame_id: str):
        stamp = ns_to_stamp(stamp_ns, self.t["builtin_interfaces/msg/Time"])
        return self.t["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def image(self, array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str):
        h, w, step, raw = encode_image(array, encoding)
        return self.t["sensor_msgs/msg/Image"](
            header=self.header(stamp_ns, frame_id), height=h, width=w, encoding=encoding, is_bigendian=0,
            step=step, data=np.frombuffer(raw, dtype=np.uint8))

    def compressed(self, fmt: str, data: bytes, stamp_ns: int, frame_id: str):
        return self.t["sensor_msgs/msg/CompressedImage"](header=self.header(stamp_ns, frame_id), format=fmt,
                                                          data=np.frombuffer(data, dtype=np.uint8))

    def camera_info(self, K, height: int, width: int, stamp_ns: int, frame_id: str):
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.t["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp_ns, frame_id), **pinhole_fields(K, height, width), binning_x=0, binning_y=0,
            roi=roi)

    def tf(self, transforms: list[tuple[str, str, np.ndarray]], stamp_ns: int):
        out = []
        for parent, child, T in transforms:
            t, q = pose_to_tq(T)
            out.append(self.t["geometry_msgs/msg/TransformStamped"](
                header=self.header(stamp_ns, parent), child_frame_id=child,
                transform=self.t["geometry_msgs/msg/Transform"](
                    translation=self.t["geometry_msgs/msg/Vector3"](x=float(t[0]), y=float(t[1]), z=float(t[2])),
                    rotation=self.t["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                                                     w=float(q[3])))))
        return self.t["tf2_msgs/msg/TFMessage"](transforms=out)


STORAGE_PLUGINS = ("sqlite3", "mcap")


def open_bag_writer(path: str | Path, storage: str):
    """A new rosbags ``Writer`` (bag version 9) at ``path`` in ``storage`` (sqlite3 | mcap); ValueError on another
    storage, FileExistsError when ``path`` exists. Use it as a context manager."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugins = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
    if storage not in plugins:
        raise ValueError(f"storage must be one of {sorted(plugins)}, got {storage!r}")
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"bag {path} already exists")
    return Writer(path, version=9, storage_plugin=plugins[storage])


def camera_connections(writer, ts, compressed: bool = False, tf_static: bool = True):
    """Add the camera topics of :data:`BAG_TOPICS` (images raw or compressed, camera_info, /tf, and /tf_static
    latched when ``tf_static``) to an open ``writer``; returns ``write(name, msg, stamp_ns)``."""
    def conn(name, msgtype, latched=False, suffix=""):
        return writer.add_connection(BAG_TOPICS[name] + suffix, msgtype, typestore=ts,
                                     offered_qos_profiles=[_qos(transient_local=latched)])

    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    conns = {"tf_static": conn("tf_static", "tf2_msgs/msg/TFMessage", latched=True)} if tf_static else {}
    conns |= {
        "tf": conn("tf", "tf2_msgs/msg/TFMessage"),
        "rgb": conn("rgb", image_type, suffix="/compressed" if compressed else ""),
        "depth": conn("depth", image_type, suffix="/compressedDepth" if compressed else ""),
        "info": conn("info", "sensor_msgs/msg/CameraInfo"),
    }

    def write(name, msg, stamp_ns):
        writer.write(conns[name], stamp_ns, ts.serialize_cdr(msg, msg.__msgtype__))

    return write


def write_rig_bag(path: str | Path, rig: SyntheticRig, num_frames: int | None = None, rate: float = 10.0,
                  start_ns: int = NS_PER_SECOND, storage: str = "sqlite3", progress: bool = True,
                  transport: str = "raw", compressed_format: str = "jpeg") -> Path:
    """Record ``num_frames`` frames (default: one pass) of ``rig`` at ``rate`` Hz into a new bag at ``path``.

    Per frame: /tf first, then rgb, depth, camera_info with the same stamp. /tf_static once at the start.
    ``transport="compressed"`` records the images as image_transport's plugins publish them instead:
    ``/rgb/image/compressed`` (``compressed_format`` jpeg or png) and ``/depth/image/compressedDepth``.
    Returns the bag directory. Raises ValueError on a bad storage name, rate or transport, FileExistsError if
    ``path`` exists.
    """
    if storage not in STORAGE_PLUGINS:
        raise ValueError(f"storage must be one of {sorted(STORAGE_PLUGINS)}, got {storage!r}")
    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    if transport not in ("raw", "compressed"):
        raise ValueError(f"transport must be raw or compressed, got {transport!r}")
    compressed = transport == "compressed"
    path = Path(path)
    n = len(rig) if num_frames is None else int(num_frames)
    ts = typestore()
    build = _Builders(ts)
    c = rig.config
    with open_bag_writer(path, storage) as writer:
        write = camera_connections(writer, ts, compressed, tf_static=True)
        if c.body_frame:
            write("tf_static", build.tf([(c.body_frame, c.camera_frame, rig.body_to_camera())], start_ns), start_ns)
        period_ns = int(round(NS_PER_SECOND / rate))
        for i in tqdm(range(n), desc="recording", disable=not progress):
            stamp = start_ns + i * period_ns
            f = rig.frame(i)
            moving = (c.world_frame, c.body_frame, f.world_to_body) if c.body_frame else \
                (c.world_frame, c.camera_frame, f.cam_to_world)
            write("tf", build.tf([moving], stamp), stamp)
            if compressed:
                write("rgb", build.compressed(*encode_compressed(f.rgb, "rgb8", compressed_format), stamp,
                                              c.camera_frame), stamp)
                write("depth", build.compressed(*encode_compressed_depth(f.depth, c.depth_encoding), stamp,
                                                c.camera_frame), stamp)
            else:
                write("rgb", build.image(f.rgb, "rgb8", stamp, c.camera_frame), stamp)
                write("depth", build.image(f.depth, c.depth_encoding, stamp, c.camera_frame), stamp)
            write("info", build.camera_info(f.intrinsics, c.height, c.width, stamp, c.camera_frame), stamp)
    return path


# ------------------------------------------------------------------------------------------------ CLI
def add_record_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="bag directory to create")
    parser.add_argument("--storage", default="sqlite3", choices=["sqlite3", "mcap"])
    parser.add_argument("--frames", type=int, default=None, help="frames to record (default: one trajectory pass)")
    parser.add_argument("--rate", type=float, default=10.0, help="camera rate (Hz)")
    parser.add_argument("--scene-seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--trajectory", default="orbit")
    parser.add_argument("--num-frames", type=int, default=40, help="frames in one trajectory pass")
    parser.add_argument("--depth-encoding", default="16UC1", choices=["16UC1", "32FC1"])
    parser.add_argument("--world-frame", default="odom")
    parser.add_argument("--transport", default="raw", choices=["raw", "compressed"],
                        help="compressed: /rgb/image/compressed and /depth/image/compressedDepth")
    parser.add_argument("--compressed-format", default="jpeg", choices=["jpeg", "png"])


def record_main(args: argparse.Namespace) -> int:
    try:
        rig = SyntheticRig(RigConfig(scene_seed=args.scene_seed, height=args.height, width=args.width,
                                     trajectory=args.trajectory, num_frames=args.num_frames,
                                     depth_encoding=args.depth_encoding, world_frame=args.world_frame))
        path = write_rig_bag(args.out, rig, args.frames, rate=args.rate, storage=args.storage,
                             transport=args.transport, compressed_format=args.compressed_format)
    except (ValueError, FileExistsError) as exc:
        print(f"record: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
