"""The node's input: every camera's rgb / depth / camera_info and /tf, on a node and a thread of their own [rclpy].

Measured on 2 cores (issue 11): rclpy's MultiThreadedExecutor spends most of the node's Python time rebuilding its
wait set and still loses 13% of 30 Hz RGB-D once the transport is fixed, where a SingleThreadedExecutor loses
none; rclpy binds executors per node, not per callback group. So the subscriptions live on a second rclpy node,
``<node name>_input`` in the same namespace, spun by a SingleThreadedExecutor in its own thread, while actions,
services and timers stay on the main node's MultiThreadedExecutor. (``rclpy.experimental.EventsExecutor`` in
rclpy 9.1.2 busy-loops holding its lock and deadlocks when another thread adds a node or publishes: not used.)

Topic names are resolved by the main node (its namespace and every remap, e.g. launch's ``rgb/image:=...``) and the
input node subscribes to the resolved names with no command-line arguments of its own, so a launch file's
``__node:=`` rename applies to the main node only. Callbacks stay cheap: count, pair by stamp per camera
(:class:`~mirage_ros.sync.ApproximateTimeSync`), hand a :class:`~mirage_ros.core.ingest.FramePair` on. Each image
subscription reports DDS "message lost" events to :class:`~mirage_ros.core.input_health.InputHealth`.

Transports (``input_transport`` / ``depth_transport``): a camera's rgb and depth arrive as raw ``sensor_msgs/Image``
or as image_transport's ``sensor_msgs/CompressedImage`` sibling (``<topic>/compressed``, ``<topic>/compressedDepth``:
the base name is resolved with the main node's remaps first, as image_transport does, so
``rgb/image:=/camera/color/image_raw`` also moves ``/camera/color/image_raw/compressed``). Decoding happens in the
encode worker, for keyframes only.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from mirage_ros.conversions.compressed import transport_topic
from mirage_ros.conversions.time import stamp_to_ns
from mirage_ros.core.ingest import FramePair
from mirage_ros.core.input_health import InputHealth
from mirage_ros.params import CameraConfig
from mirage_ros.sync import ApproximateTimeSync
from mirage_ros.tf_buffer import TransformBuffer, attach_tf_listener

__all__ = ["CameraInput", "InputFront"]

STREAMS = ("rgb", "depth", "info")


@dataclass
class CameraInput:
    """One camera's subscriptions, pairing and counters (written by the input thread only)."""

    config: CameraConfig
    topics: dict[str, str]                # stream -> resolved topic name
    sync: ApproximateTimeSync
    received: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))
    paired: int = 0
    last_pair_time: float | None = None   # monotonic seconds of the last complete set
    last_stamp_ns: int = 0                # stamp of the last complete set
    frame_id: str = ""                    # optical frame of the last set (parameter, else header)
    subscriptions: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name


class InputFront:
    """Owns the input node and its executor thread; ``deliver(pair, key)`` gets every complete set.

    Args:
        owner: the main node (names are resolved with its namespace and remaps; its context is used).
        cameras: one :class:`~mirage_ros.params.CameraConfig` per camera.
        tf: the buffer /tf and /tf_static feed; ``on_tf()`` runs after each stored TF message.
        qos: QoS profile of the image and camera_info subscriptions; ``slop`` / ``queue_size``: the pairing's.
        health: where DDS message-lost events go.
        transports: image_transport name per image stream, ``{"rgb": raw | compressed, "depth": raw |
            compressedDepth}`` (every camera alike; default raw).
    """

    def __init__(self, owner, cameras: list[CameraConfig], tf: TransformBuffer, *, qos, slop: float, queue_size: int,
                 deliver: Callable[[FramePair, str], None], on_tf: Callable[[], None], health: InputHealth,
                 transports: dict[str, str] | None = None):
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self.deliver, self.health = deliver, health
        self.node = Node(f"{owner.get_name()}_input", namespace=owner.get_namespace(), context=owner.context,
                         use_global_arguments=False, start_parameter_services=False)
        self.log = owner.get_logger()
        self.transports = {"rgb": "raw", "depth": "raw", **(transports or {})}
        self.cameras: list[CameraInput] = []
        for config in cameras:
            topics = {"rgb": transport_topic(owner.resolve_topic_name(config.rgb_topic), self.transports["rgb"]),
                      "depth": transport_topic(owner.resolve_topic_name(config.depth_topic), self.transports["depth"]),
                      "info": owner.resolve_topic_name(config.camera_info_topic)}
            camera = CameraInput(config, topics, ApproximateTimeSync(STREAMS, slop=slop, queue_size=queue_size))
            self._subscribe(camera, qos)
            self.cameras.append(camera)
        self.tf_subscriptions = attach_tf_listener(self.node, tf, tf_topic=owner.resolve_topic_name("/tf"),
                                                   tf_static_topic=owner.resolve_topic_name("/tf_static"),
                                                   on_change=on_tf)
        self.executor = SingleThreadedExecutor(context=owner.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name="mirage-input", daemon=True)

    # ------------------------------------------------------------------------------------------ wiring
    def _subscribe(self, camera: CameraInput, qos) -> None:
        from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        def image_type(key: str):
            return Image if self.transports[key] == "raw" else CompressedImage

        for key, msg_type in (("rgb", image_type("rgb")), ("depth", image_type("depth")), ("info", CameraInfo)):
            topic = camera.topics[key]
            def callback(msg, camera=camera, key=key):
                self._offer(camera, key, msg)

            lost = SubscriptionEventCallbacks(
                message_lost=lambda info, t=topic: self.health.message_lost(t, int(info.total_count_change)))
            try:
                sub = self.node.create_subscription(msg_type, topic, callback, qos, event_callbacks=lost)
            except UnsupportedEventTypeError:  # a middleware without message-lost events: count nothing
                sub = self.node.create_subscription(msg_type, topic, callback, qos)
            camera.subscriptions.append(sub)

    def start(self) -> "InputFront":
        self._thread.start()
        return self

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - context shutdown ends the spin; nothing to report
            pass

    def destroy(self) -> None:
        try:
            self.executor.shutdown(timeout_sec=5.0)
        except Exception:  # noqa: BLE001
            pass
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        self.node.destroy_node()

    # ------------------------------------------------------------------------------------------ callbacks
    def _offer(self, camera: CameraInput, key: str, msg) -> None:
        """Count, pair by stamp; a complete set goes on (nothing heavy here)."""
        arrival = time.monotonic()
        camera.received[key] += 1
        synced = camera.sync.add(key, msg)
        if synced is None:
            return
        camera.paired += 1
        camera.last_pair_time = arrival
        camera.last_stamp_ns = synced.stamp_ns
        camera.frame_id = camera.config.optical_frame or synced["rgb"].header.frame_id
        self.deliver(FramePair(synced["rgb"], synced["depth"], synced["info"], arrival, camera.name,
                               camera.config.optical_frame), camera.name)

    def set_slop(self, slop: float) -> None:
        """New pairing slop (s) for every camera (the live ``sync_slop``)."""
        for camera in self.cameras:
            camera.sync.slop_ns = stamp_to_ns(float(slop))

    # ------------------------------------------------------------------------------------------ queries
    @property
    def paired(self) -> int:
        return sum(c.paired for c in self.cameras)

    def received(self) -> dict[str, int]:
        """Messages received per stream, summed over the cameras."""
        return {k: sum(c.received[k] for c in self.cameras) for k in STREAMS}

    @property
    def last_pair_time(self) -> float | None:
        times = [c.last_pair_time for c in self.cameras if c.last_pair_time is not None]
        return max(times) if times else None

    def topics(self) -> list[str]:
        return [c.topics[k] for c in self.cameras for k in STREAMS]

    def describe(self) -> str:
        """Every input topic with its message count, per camera (for warnings and the goal refusal)."""
        parts = []
        for c in self.cameras:
            streams = ", ".join(f"{c.topics[k]} ({c.received[k]} msgs)" for k in STREAMS)
            parts.append(f"{streams}" if len(self.cameras) == 1 else f"camera {c.name}: {streams}")
        return "; ".join(parts)

    def matched(self) -> bool:
        """Whether every image and camera_info subscription has a publisher."""
        return all(sub.get_publisher_count() > 0 for c in self.cameras for sub in c.subscriptions)
