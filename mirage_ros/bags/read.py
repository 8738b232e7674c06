"""Read ROS 2 bags (sqlite3 or MCAP) with ``rosbags``, no ROS graph: their TF, and stamp-matched RGB-D frames.

``BAG_TOPICS`` is the layout the synthetic camera records (:mod:`mirage_ros.bags.write`) and the default of
every reader here; other bags name their topics.
"""

from __future__ import annotations

from pathlib import Path

from mirage_ros.conversions.time import NS_PER_SECOND

__all__ = ["BAG_TOPICS", "typestore", "open_bag", "read_bag_tf", "iter_bag_frames"]

BAG_TOPICS = {
    "rgb": "/rgb/image",
    "depth": "/depth/image",
    "info": "/rgb/camera_info",
    "tf": "/tf",
    "tf_static": "/tf_static",
}


def typestore():
    """The rosbags message types (ROS 2 Kilted definitions; the messages used here are the same in Jazzy)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def open_bag(bag: str | Path):
    """A rosbags Reader over ``bag``; ValueError when there is no bag there."""
    from rosbags.rosbag2 import Reader

    path = Path(bag)
    if not path.exists():
        raise ValueError(f"no bag at {path}")
    return Reader(path)


def read_bag_tf(bag: str | Path, tf_topic: str = BAG_TOPICS["tf"], tf_static_topic: str = BAG_TOPICS["tf_static"]):
    """Every /tf and /tf_static transform of the bag in one :class:`~mirage_ros.tf_buffer.TransformBuffer`."""
    from mirage_ros.tf_buffer import TransformBuffer

    ts = typestore()
    with open_bag(bag) as reader:
        span = max(reader.duration / NS_PER_SECOND, 0.0) + 10.0
        buffer = TransformBuffer(cache_time=span)  # offline: keep the whole bag
        conns = [c for c in reader.connections if c.topic in (tf_topic, tf_static_topic)]
        for conn, _, raw in reader.messages(connections=conns):
            buffer.set_tf_message(ts.deserialize_cdr(raw, conn.msgtype), static=conn.topic == tf_static_topic)
    return buffer


def iter_bag_frames(bag: str | Path, rgb_topic: str = BAG_TOPICS["rgb"], depth_topic: str = BAG_TOPICS["depth"],
                    info_topic: str = BAG_TOPICS["info"], slop: float = 0.02):
    """Yield :class:`~mirage_ros.core.ingest.FramePair` of stamp-matched rgb, depth, camera_info, in bag order.

    ``arrival`` is the bag's receive time in seconds. Raises ValueError when a topic is missing.
    """
    from mirage_ros.core.ingest import FramePair
    from mirage_ros.sync import ApproximateTimeSync

    ts = typestore()
    sync = ApproximateTimeSync(("rgb", "depth", "info"), slop=slop, queue_size=10)
    keys = {rgb_topic: "rgb", depth_topic: "depth", info_topic: "info"}
    with open_bag(bag) as reader:
        topics = {c.topic for c in reader.connections}
        missing = [t for t in keys if t not in topics]
        if missing:
            raise ValueError(f"bag has no topic(s) {missing}; it has {sorted(topics)}")
        conns = [c for c in reader.connections if c.topic in keys]
        for conn, t_ns, raw in reader.messages(connections=conns):
            synced = sync.add(keys[conn.topic], ts.deserialize_cdr(raw, conn.msgtype))
            if synced is not None:
                yield FramePair(synced["rgb"], synced["depth"], synced["info"], t_ns / NS_PER_SECOND)
