"""Write the synthetic camera to a ROS 2 bag with ``rosbags`` (sqlite3 or MCAP), no ROS graph needed.

The bag holds exactly what the synthetic camera node publishes, at the same stamps: ``/rgb/image``
(rgb8), ``/depth/image`` (16UC1 mm or 32FC1 m), ``/rgb/camera_info``, ``/tf`` (world -> body) and
``/tf_static`` (body -> camera optical frame, offered as transient-local so a replayer latches it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from mirage.camera import intrinsics_to_opencv, pose_to_tq
from mirage_ros.synthetic_rig import SyntheticRig

__all__ = ["BAG_TOPICS", "write_rig_bag", "typestore"]

BAG_TOPICS = {
    "rgb": "/rgb/image",
    "depth": "/depth/image",
    "info": "/rgb/camera_info",
    "tf": "/tf",
    "tf_static": "/tf_static",
}


def typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


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
    """rosbags message builders for one typestore."""

    def __init__(self, ts):
        self.t = ts.types

    def header(self, stamp_ns: int, frame_id: str):
        time = self.t["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 1_000_000_000),
                                                     nanosec=int(stamp_ns % 1_000_000_000))
        return self.t["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)

    def image(self, array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str):
        array = np.ascontiguousarray(array)
        h, w = array.shape[:2]
        return self.t["sensor_msgs/msg/Image"](
            header=self.header(stamp_ns, frame_id), height=h, width=w, encoding=encoding, is_bigendian=0,
            step=array.strides[0], data=np.frombuffer(array.tobytes(), dtype=np.uint8))

    def camera_info(self, K, height: int, width: int, stamp_ns: int, frame_id: str):
        Kcv = intrinsics_to_opencv(K).double().numpy()
        P = np.zeros((3, 4))
        P[:3, :3] = Kcv
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.t["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp_ns, frame_id), height=height, width=width, distortion_model="plumb_bob",
            d=np.zeros(5), k=Kcv.reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0,
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


def write_rig_bag(path: str | Path, rig: SyntheticRig, num_frames: int | None = None, rate: float = 10.0,
                  start_ns: int = 1_000_000_000, storage: str = "sqlite3", progress: bool = True) -> Path:
    """Record ``num_frames`` frames (default: one pass) of ``rig`` at ``rate`` Hz into a new bag at ``path``.

    Per frame: /tf first, then rgb, depth, camera_info with the same stamp. /tf_static once at the start.
    Returns the bag directory. Raises ValueError on a bad storage name or rate, FileExistsError if ``path`` exists.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugins = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
    if storage not in plugins:
        raise ValueError(f"storage must be one of {sorted(plugins)}, got {storage!r}")
    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"bag {path} already exists")
    n = len(rig) if num_frames is None else int(num_frames)
    ts = typestore()
    build = _Builders(ts)
    c = rig.config
    with Writer(path, version=9, storage_plugin=plugins[storage]) as writer:
        def conn(name, msgtype, latched=False):
            return writer.add_connection(BAG_TOPICS[name], msgtype, typestore=ts,
                                         offered_qos_profiles=[_qos(transient_local=latched)])

        conns = {
            "tf_static": conn("tf_static", "tf2_msgs/msg/TFMessage", latched=True),
            "tf": conn("tf", "tf2_msgs/msg/TFMessage"),
            "rgb": conn("rgb", "sensor_msgs/msg/Image"),
            "depth": conn("depth", "sensor_msgs/msg/Image"),
            "info": conn("info", "sensor_msgs/msg/CameraInfo"),
        }

        def write(name, msg, stamp_ns):
            writer.write(conns[name], stamp_ns, ts.serialize_cdr(msg, msg.__msgtype__))

        if c.body_frame:
            write("tf_static", build.tf([(c.body_frame, c.camera_frame, rig.body_to_camera())], start_ns), start_ns)
        period_ns = int(round(1e9 / rate))
        for i in tqdm(range(n), desc="recording", disable=not progress):
            stamp = start_ns + i * period_ns
            f = rig.frame(i)
            moving = (c.world_frame, c.body_frame, f.world_to_body) if c.body_frame else \
                (c.world_frame, c.camera_frame, f.cam_to_world)
            write("tf", build.tf([moving], stamp), stamp)
            write("rgb", build.image(f.rgb, "rgb8", stamp, c.camera_frame), stamp)
            write("depth", build.image(f.depth, c.depth_encoding, stamp, c.camera_frame), stamp)
            write("info", build.camera_info(f.intrinsics, c.height, c.width, stamp, c.camera_frame), stamp)
    return path
