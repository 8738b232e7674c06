"""Replay a ROS 2 bag into a running graph with ``/clock``, without ``ros2 bag`` (read with ``rosbags``).

Messages go out as their recorded CDR bytes on their recorded topics (optionally under a prefix or remapped),
``/clock`` follows the bag time (run the node with ``use_sim_time:=true``), and topics recorded as transient
local (``/tf_static``) are republished latched.

Nothing is played before the receivers listen: the replay waits (up to ``--wait`` seconds, 60 by default: a node
loading a model takes several) until every input topic of the bag (images, camera_info, /tf, /tf_static, or the
``--wait-for`` topics) has a matched subscription, and says when it starts and which topics, if any, nobody hears.

    python -m mirage_ros.bags.replay BAG [--rate 1.0] [--remap /rgb/image:=/camera/rgb/image] [--no-clock]
        [--wait 60] [--wait-for TOPIC ...]
    (or python -m mirage_ros.bag_replay)
"""

from __future__ import annotations

import argparse
import importlib
import sys
import threading
import time
from pathlib import Path

from mirage_ros.conversions.time import NS_PER_SECOND, ns_to_stamp

__all__ = ["BagReplayer", "main"]


def _message_class(msgtype: str):
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


INPUT_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo",
               "tf2_msgs/msg/TFMessage")


def _latched(conn) -> bool:
    from rosbags.interfaces import QosDurability

    profiles = getattr(getattr(conn, "ext", None), "offered_qos_profiles", None) or []
    return any(getattr(p, "durability", None) == QosDurability.TRANSIENT_LOCAL for p in profiles) \
        or conn.topic == "/tf_static"


class BagReplayer:
    """Publishes a bag from an rclpy node. ``rate`` scales bag time (0: as fast as possible, no sleeping).

    ``wait_for(subscribers)`` lets a caller hold the replay until the receivers match, so nothing is lost
    at the start; :meth:`play` runs the replay in the calling thread and returns the number of messages sent.
    """

    def __init__(self, node, bag: str | Path, rate: float = 1.0, remap: dict[str, str] | None = None,
                 publish_clock: bool = True, topics: list[str] | None = None, reliable: bool = True):
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock

        from mirage_ros.bags.read import open_bag

        if rate < 0:
            raise ValueError(f"rate must be >= 0, got {rate}")
        self.node, self.bag, self.rate = node, Path(bag), float(rate)
        self.remap = dict(remap or {})
        self._stop = threading.Event()
        self.sent = 0
        with open_bag(self.bag) as reader:
            self.connections = [c for c in reader.connections if topics is None or c.topic in topics]
        self.publishers = {}
        for conn in self.connections:
            latched = _latched(conn)
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=1 if latched else 100,
                reliability=ReliabilityPolicy.RELIABLE if (reliable or latched) else ReliabilityPolicy.BEST_EFFORT,
                durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            topic = self.remap.get(conn.topic, conn.topic)
            if conn.id not in self.publishers:
                self.publishers[conn.id] = node.create_publisher(_message_class(conn.msgtype), topic, qos)
        self.clock_pub = node.create_publisher(Clock, "/clock", 10) if publish_clock else None

    def input_topics(self) -> list[str]:
        """The topics (as published, after remapping) a mapping node subscribes to: images, camera_info and TF."""
        return sorted({self.remap.get(c.topic, c.topic) for c in self.connections if c.msgtype in INPUT_TYPES})

    def unmatched(self, topics: list[str] | None = None, subscribers: int = 1) -> list[str]:
        """Published topics (all, or those in ``topics``) with fewer than ``subscribers`` matched subscriptions."""
        out = set()
        for conn in self.connections:
            topic = self.remap.get(conn.topic, conn.topic)
            if (topics is None or topic in topics) and \
                    self.publishers[conn.id].get_subscription_count() < subscribers:
                out.add(topic)
        return sorted(out)

    def wait_for(self, topic_subscribers: int = 1, timeout: float = 5.0, topics: list[str] | None = None) -> bool:
        """Wait until the publishers of ``topics`` (default: every topic) have at least ``topic_subscribers``
        matched subscriptions; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.unmatched(topics, topic_subscribers):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()

    def play(self, progress=None) -> int:
        from rosbags.rosbag2 import Reader
        from rosgraph_msgs.msg import Clock

        with Reader(self.bag) as reader:
            ids = {c.id for c in self.connections}
            conns = [c for c in reader.connections if c.id in ids]
            start_wall, start_bag = time.monotonic(), None
            for conn, t_ns, raw in reader.messages(connections=conns):
                if self._stop.is_set():
                    break
                if start_bag is None:
                    start_bag = t_ns
                if self.rate > 0:
                    delay = (t_ns - start_bag) / NS_PER_SECOND / self.rate - (time.monotonic() - start_wall)
                    if delay > 0:
                        time.sleep(delay)
                if self.clock_pub is not None:
                    self.clock_pub.publish(Clock(clock=ns_to_stamp(t_ns)))
                self.publishers[conn.id].publish(bytes(raw))
                self.sent += 1
                if progress is not None:
                    progress(self.sent)
        return self.sent


def main(argv: list[str] | None = None) -> int:
    """Console entry point (``python -m mirage_ros.bags.replay BAG ...``; ``--ros-args`` go to rclpy)."""
    from mirage_ros.run import run

    parser = argparse.ArgumentParser(prog="python -m mirage_ros.bags.replay", description=__doc__.splitlines()[0])
    parser.add_argument("bag")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (0: as fast as possible)")
    parser.add_argument("--remap", action="append", default=[], metavar="FROM:=TO")
    parser.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    parser.add_argument("--wait", type=float, default=60.0,
                        help="seconds to wait for subscribers on the input topics before playing (default 60)")
    parser.add_argument("--wait-for", action="append", default=None, metavar="TOPIC",
                        help="wait for subscribers on this topic (repeatable; default: the bag's image, camera_info "
                             "and TF topics)")
    args, ros_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    remap = {}
    for item in args.remap:
        src, sep, dst = item.partition(":=")
        if not sep:
            parser.error(f"--remap needs FROM:=TO, got {item!r}")
        remap[src] = dst

    def build(graph):
        node = graph.node("mirage_bag_replay")
        return BagReplayer(node, args.bag, rate=args.rate, remap=remap, publish_clock=not args.no_clock)

    def play(replayer: BagReplayer) -> int:
        topics = args.wait_for or replayer.input_topics()
        print(f"bag_replay: waiting up to {args.wait:g} s for subscribers on {', '.join(topics)}", flush=True)
        t0 = time.monotonic()
        if replayer.wait_for(1, timeout=args.wait, topics=topics):
            print(f"bag_replay: starting {args.bag}: every input topic matched after {time.monotonic() - t0:.1f} s",
                  flush=True)
        else:
            print(f"bag_replay: starting {args.bag} after {args.wait:g} s although nobody subscribes to "
                  f"{', '.join(replayer.unmatched(topics))}: their messages are lost", flush=True)
        t0 = time.monotonic()
        sent = replayer.play()
        time.sleep(0.5)  # let reliable subscribers fetch the tail before the publishers go away
        print(f"bag_replay: replayed {sent} messages from {args.bag} in {time.monotonic() - t0:.1f} s", flush=True)
        return 0

    try:
        return run(build, [sys.argv[0], *ros_args], prog="bag_replay", single_threaded=True, work=play)
    except OSError as exc:
        print(f"bag_replay: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
