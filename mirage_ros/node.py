"""The ``mirage`` ROS 2 node: live RGB-D + TF -> latent spatial memory -> imagined trajectories.

Wiring only: parameters (:mod:`~mirage_ros.params`), subscriptions, publishers, timers, services and the
action (:mod:`~mirage_ros.action_server`). The logic is rclpy-free in :mod:`mirage_ros.core`: the ingest
(:class:`~mirage_ros.core.ingest.FrameIngestor`), the queue and its worker, the goals
(:class:`~mirage_ros.core.goals.GoalRunner`) and the memory with its one lock
(:class:`~mirage_ros.core.memory_holder.MemoryHolder`); the maths is the library's (:mod:`mirage`).

Threads: subscription callbacks only pair messages and push into a bounded keep-latest queue; one worker
thread encodes and inserts; the action server runs goals in a reentrant callback group on a multi-threaded
executor, so cancel requests and services are served while a rollout runs. Who may touch the memory when is
written down once, in :mod:`mirage_ros.core.memory_holder`.

Topics (relative, remappable): subscribes ``rgb/image``, ``depth/image`` (or, with ``input_transport:=compressed``,
``rgb/image/compressed`` and ``depth/image/compressedDepth``), ``rgb/camera_info``, ``/tf``, ``/tf_static``;
publishes ``~/imagined/image``, ``~/imagined/camera_info``, ``~/cache/points`` (observed colours, or PCA:
``cloud_colors``), ``~/cache/stats``, ``/diagnostics``. Services ``~/query_coverage``, ``~/save_cache``,
``~/load_cache``, ``~/clear_cache``, ``~/clear_region``, ``~/set_ingest_paused``; action ``~/imagine_trajectory``.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from mirage_ros import conversions as conv
from mirage_ros.action_server import ImagineActionServer
from mirage_ros.core.goal_poses import GoalError
from mirage_ros.core.goals import FrameBatch, GoalRunner
from mirage_ros.core.ingest import FrameIngestor, FramePair, TransformUnavailable
from mirage_ros.core.memory_holder import MemoryBusy, MemoryHolder
from mirage_ros.core.model_loading import world_model_from_params
from mirage_ros.core.queue import IngestWorker, KeepLatestQueue
from mirage_ros.msg import CacheStats
from mirage_ros.operations import NodeOperations
from mirage_ros.params import NodeParams, declare_parameters, read_parameters
from mirage_ros.srv import LoadCache, QueryCoverage, SaveCache
from mirage_ros.sync import ApproximateTimeSync
from mirage_ros.tf_buffer import TransformBuffer, attach_tf_listener

__all__ = ["MirageNode", "main"]


class MirageNode(NodeOperations, Node):
    """See the module docstring. ``world_model`` injects a ready model (tests); otherwise parameters pick it.

    Live parameters, ``/diagnostics``, pause / clear-region / decay and compressed inputs are wired by
    :class:`~mirage_ros.operations.NodeOperations`."""

    def __init__(self, *, world_model=None, node_name: str = "mirage", **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        declare_parameters(self)
        self.params: NodeParams = read_parameters(self)
        p = self.params
        log = self.get_logger()
        if world_model is not None:
            self.world_model, self.model_name = world_model, type(world_model).__name__ + " (given)"
        else:
            self.world_model, self.model_name = world_model_from_params(p, log.info)
        self.image_size = (int(self.world_model.height), int(self.world_model.width))
        self.holder = MemoryHolder(self.world_model.new_memory(voxel_size=p.voxel_size or None,
                                                               max_points=p.max_points or None))
        log.info(f"model {self.model_name} on {p.device} ({p.dtype}), frames "
                 f"{self.image_size[0]}x{self.image_size[1]}, world frame '{p.world_frame}'")

        # ---------------------------------------------------------------- TF and input
        self.tf = TransformBuffer(cache_time=max(10.0, 4 * p.input_timeout))
        # Input and TF callbacks are cheap and thread-safe (the buffer and the sync lock themselves): reentrant
        # groups, because rclpy's MultiThreadedExecutor busy-loops on ready callbacks of a mutually exclusive
        # group that is busy, which at 30 Hz RGB-D starves every other thread of the GIL.
        attach_tf_listener(self, self.tf, callback_group=ReentrantCallbackGroup())
        self.ingestor = FrameIngestor(self.world_model, self.holder, self._lookup_at_stamp, p.world_frame,
                                      self.image_size, p.keyframe_translation, p.keyframe_rotation_deg)
        self.queue: KeepLatestQueue[FramePair] = KeepLatestQueue(p.ingest_queue_size)
        self.sync = ApproximateTimeSync(("rgb", "depth", "info"), slop=p.sync_slop, queue_size=2 * p.input_queue_depth)
        self._received = {"rgb": 0, "depth": 0, "info": 0}
        self._received_lock = threading.Lock()
        self._last_pair_time = time.monotonic()
        self._warned_at = 0.0
        # sensor data: best effort, volatile (what camera drivers offer); reliable for bags and tests
        input_qos = QoSProfile(depth=p.input_queue_depth, history=HistoryPolicy.KEEP_LAST,
                               durability=DurabilityPolicy.VOLATILE,
                               reliability=ReliabilityPolicy.BEST_EFFORT if p.input_qos == "sensor_data"
                               else ReliabilityPolicy.RELIABLE)
        inputs = ReentrantCallbackGroup()
        self.rgb_sub = self._subscribe_image("rgb", "rgb/image", p.rgb_transport, input_qos, inputs)
        self.depth_sub = self._subscribe_image("depth", "depth/image", p.depth_input_transport, input_qos, inputs)
        self.info_sub = self.create_subscription(CameraInfo, "rgb/camera_info", lambda m: self._offer("info", m),
                                                 input_qos, callback_group=inputs)
        self.worker = IngestWorker(self.queue, self.ingestor.process, self._on_ingest_error).start()

        # ---------------------------------------------------------------- outputs
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
        self.image_pub = self.create_publisher(Image, "~/imagined/image", 10)
        self.image_info_pub = self.create_publisher(CameraInfo, "~/imagined/camera_info", 10)
        self.cloud_pub = self.create_publisher(PointCloud2, "~/cache/points", latched)
        self.stats_pub = self.create_publisher(CacheStats, "~/cache/stats", 10)
        self._cloud_version = None
        timers = MutuallyExclusiveCallbackGroup()
        self.cloud_timer = self.create_timer(1.0 / p.cloud_rate, self._publish_cloud, callback_group=timers)
        self.stats_timer = self.create_timer(1.0 / p.stats_rate, self._publish_stats, callback_group=timers)
        self.watchdog = self.create_timer(1.0, self._check_input, callback_group=timers)

        # ---------------------------------------------------------------- goals, services and action
        self.runner = GoalRunner(self.world_model, self.holder, self.ingestor.cameras, self._lookup_at_stamp,
                                 world_frame=p.world_frame, policy=p.goal_policy, fps=p.fps,
                                 max_frames=p.max_goal_frames, steps=p.steps,
                                 now_ns=lambda: conv.stamp_to_ns(self.get_clock().now()), log=log)
        services = MutuallyExclusiveCallbackGroup()
        self.create_service(QueryCoverage, "~/query_coverage", self._on_query_coverage, callback_group=services)
        self.create_service(SaveCache, "~/save_cache", self._on_save, callback_group=services)
        self.create_service(LoadCache, "~/load_cache", self._on_load, callback_group=services)
        self.create_service(Trigger, "~/clear_cache", self._on_clear, callback_group=services)
        self.action = ImagineActionServer(self, self.runner, publish_frames=self._publish_frames)

        # ---------------------------------------------------------------- live parameters, diagnostics, upkeep
        self._setup_operations()

    # ==================================================================================== input
    def _offer(self, key: str, msg) -> None:
        """Pair by stamp; a complete rgb + depth + camera_info set goes to the ingest queue (nothing heavy here)."""
        arrival = time.monotonic()
        with self._received_lock:
            self._received[key] += 1
        synced = self.sync.add(key, msg)
        if synced is None:
            return
        self._last_pair_time = arrival
        self.queue.put(FramePair(synced["rgb"], synced["depth"], synced["info"], arrival))

    def _lookup_at_stamp(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """T_target_source at a stamp (int nanoseconds; 0 = latest), waiting up to tf_timeout."""
        return self.tf.lookup_transform(target, source, int(stamp_ns), timeout=self.params.tf_timeout).matrix

    def _on_ingest_error(self, item: FramePair, exc: BaseException) -> None:
        log = self.get_logger()
        if isinstance(exc, TransformUnavailable):
            log.warning(f"frame dropped: {exc}", throttle_duration_sec=5.0)
        elif isinstance(exc, ValueError):
            log.error(f"frame rejected: {exc}", throttle_duration_sec=2.0)
        else:
            log.error(f"frame ingest failed ({type(exc).__name__}): {exc}", throttle_duration_sec=2.0)

    def _check_input(self) -> None:
        now = time.monotonic()
        if now - self._last_pair_time < self.params.input_timeout or now - self._warned_at < self.params.input_timeout:
            return
        self._warned_at = now
        subs = (("rgb", self.rgb_sub), ("depth", self.depth_sub), ("info", self.info_sub))
        seen = ", ".join(f"{sub.topic_name} ({self._received[k]} msgs)" for k, sub in subs)
        self.get_logger().warning(f"no synced rgb/depth input for {now - self._last_pair_time:.1f} s; "
                                  f"listening on {seen}; world frame '{self.params.world_frame}'")

    # ==================================================================================== outputs
    def _header(self) -> Header:
        return Header(stamp=self.get_clock().now().to_msg(), frame_id=self.params.world_frame)

    def _publish_cloud(self) -> None:
        if self.cloud_pub.get_subscription_count() == 0:
            return
        version = self.holder.version()
        if version == self._cloud_version:
            return
        xyz, rgb = self.holder.export_points(self.params.cloud_max_points, colorize=self.params.cloud_colors)
        self.cloud_pub.publish(conv.numpy_to_pointcloud2(xyz, rgb, stamp=self.get_clock().now().to_msg(),
                                                         frame_id=self.params.world_frame))
        self._cloud_version = version

    def _publish_stats(self) -> None:
        s = self.holder.stats()
        self.stats_pub.publish(CacheStats(
            header=self._header(), points=int(s.get("points", 0)), bytes=int(s.get("bytes", 0)),
            keyframes=int(s.get("keyframes", 0)), last_insert_latency=float(self.ingestor.stats.last_insert_latency),
            world_frame=self.params.world_frame))

    def _publish_frames(self, batch: FrameBatch) -> None:
        """Each imagined frame and its camera_info as soon as its chunk is decoded."""
        h, w = self.image_size
        for frame, t in zip(batch.frames, batch.stamps):
            stamp = int(t)
            self.image_pub.publish(conv.numpy_to_image(frame, "rgb8", stamp=stamp, frame_id=batch.frame_id))
            self.image_info_pub.publish(conv.intrinsics_to_camera_info(batch.intrinsics, h, w, stamp=stamp,
                                                                       frame_id=batch.frame_id))

    # ==================================================================================== services
    def _on_save(self, request, response):
        try:
            path = self.holder.save(request.path)
            response.success, response.message = True, f"saved {len(self.holder.memory)} points to {path}"
        except Exception as exc:  # noqa: BLE001 - any failure goes back to the caller
            response.success, response.message = False, f"save failed: {exc}"
            self.get_logger().error(response.message)
        return response

    def _on_load(self, request, response):
        try:
            n = self.holder.load(request.path, expect_channels=getattr(self.holder.memory, "channels", None),
                                 device=self.params.device)
            self.ingestor.reset()
            response.success, response.message = True, f"loaded {n} points from {request.path}"
        except Exception as exc:  # noqa: BLE001 - ValueError (bad file), MemoryBusy (a goal runs), ...
            response.success, response.message = False, f"{exc}"
            self.get_logger().error(response.message)
        return response

    def _on_clear(self, request, response):
        try:
            self.holder.clear()
            self.ingestor.reset()
            response.success, response.message = True, "memory cleared"
        except MemoryBusy as exc:
            response.success, response.message = False, f"clear refused: {exc}"
        return response

    def _on_query_coverage(self, request, response):
        try:
            response.coverage, response.mean_depth = self.runner.query_coverage(request.poses, request.body_frame)
        except (GoalError, ValueError) as exc:
            self.get_logger().error(f"query_coverage rejected: {exc}")
            response.coverage, response.mean_depth = [], []
        return response

    # ==================================================================================== lifecycle
    def destroy_node(self):
        self.worker.stop()
        return super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``mirage_node`` (``--ros-args`` as usual)."""
    from mirage_ros.run import run

    return run(lambda graph: graph.add(MirageNode(context=graph.context)), argv, prog="mirage_node", threads=4)


if __name__ == "__main__":
    sys.exit(main())
