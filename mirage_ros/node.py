"""The ``mirage`` ROS 2 node: live RGB-D + TF -> latent spatial memory -> imagined trajectories.

Wiring only: parameters (:mod:`~mirage_ros.params`), subscriptions, publishers, timers, services and the
action (:mod:`~mirage_ros.action_server`). The logic is rclpy-free in :mod:`mirage_ros.core`: the ingest
(:class:`~mirage_ros.core.ingest.FrameIngestor` with its pose hold), the queues and their workers, the goals
(:class:`~mirage_ros.core.goals.GoalRunner`), the memory with its one lock
(:class:`~mirage_ros.core.memory_holder.MemoryHolder`), the cache directory and the input health; the maths is the
library's (:mod:`mirage`).

Threads: the input (every camera's rgb / depth / camera_info and /tf) lives on a second rclpy node spun by a
SingleThreadedExecutor in its own thread (:mod:`~mirage_ros.input_front`); its callbacks only pair messages and
push into a bounded keep-latest queue. One worker thread poses every set (a set whose TF is late waits up to
``tf_hold``) and picks keyframes; a second one encodes and inserts them behind a keep-latest queue of
``ingest_queue_size``, so a slow model drops stale keyframe candidates, never the poses in between. This node's
services, timers and the action server run on the caller's multi-threaded executor, the action in a reentrant
callback group, so cancel requests and services are served while a rollout runs. Who may touch the memory when is
written down once, in :mod:`mirage_ros.core.memory_holder`.

Topics (relative, remappable): subscribes per camera ``rgb/image``, ``depth/image`` (or, with
``input_transport:=compressed``, ``rgb/image/compressed`` and ``depth/image/compressedDepth``), ``rgb/camera_info``
(the ``cameras`` parameter; one camera with these names by default), ``/tf``, ``/tf_static``; publishes
``~/imagined/image``, ``~/imagined/camera_info``, ``~/imagined/observed_mask``, ``~/imagined/path``, the imagined
camera on ``/tf``, ``~/cache/points`` (observed colours, or PCA: ``cloud_colors``), ``~/cache/stats``,
``/diagnostics``. Services ``~/query_coverage``, ``~/save_cache``, ``~/load_cache``, ``~/clear_cache``,
``~/clear_region``, ``~/set_ingest_paused``; action ``~/imagine_trajectory``.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from mirage_ros import conversions as conv
from mirage_ros import dds
from mirage_ros.action_server import ImagineActionServer
from mirage_ros.core.cache_files import CacheDirectory
from mirage_ros.core.goal_poses import GoalError
from mirage_ros.core.goals import NO_KEYFRAME, GoalRunner
from mirage_ros.core.ingest import FrameIngestor, FramePair, TransformUnavailable
from mirage_ros.core.input_health import InputHealth
from mirage_ros.core.memory_holder import MemoryBusy, MemoryHolder
from mirage_ros.core.model_loading import world_model_from_params
from mirage_ros.core.queue import IngestWorker, KeepLatestQueue
from mirage_ros.core.tf_hold import PoseHold
from mirage_ros.imagined_output import ImaginedPublisher
from mirage_ros.input_front import InputFront
from mirage_ros.msg import CacheStats
from mirage_ros.operations import NodeOperations
from mirage_ros.params import NodeParams, declare_camera_parameters, declare_parameters, read_parameters
from mirage_ros.srv import LoadCache, QueryCoverage, SaveCache
from mirage_ros.tf_buffer import ExtrapolationError, TransformBuffer

__all__ = ["MirageNode", "main"]

HOLD_PER_CAMERA = 16        # sets one camera may have waiting for TF (0.2 s at 30 Hz is 6)
POSE_QUEUE_PER_CAMERA = 8   # sets one camera may have waiting to be posed (posing takes well under a millisecond)
QUIET_WARNING_MAX = 300.0   # s: the "no synced input" warning backs off up to this interval


def _pose_may_arrive(exc: BaseException) -> bool:
    """Waiting helps unless the stamp is older than everything the TF buffer still keeps."""
    return not (isinstance(exc, ExtrapolationError) and exc.requested_ns < exc.earliest_ns)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


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
        self.camera_configs = declare_camera_parameters(self, p.cameras)
        self._configure_process()
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
        self.hold: PoseHold = PoseHold(p.tf_hold, capacity=HOLD_PER_CAMERA * len(self.camera_configs))
        # two stages: every set is posed and judged (cheap), only keyframe candidates queue for the encoder
        self.encode_queue: KeepLatestQueue[tuple] = KeepLatestQueue(p.ingest_queue_size)
        self.ingestor = FrameIngestor(self.world_model, self.holder, self._lookup_now, p.world_frame,
                                      self.image_size, p.keyframe_translation, p.keyframe_rotation_deg,
                                      hold=self.hold, retryable=_pose_may_arrive, encoder=self.encode_queue.put)
        self.queue: KeepLatestQueue[FramePair] = KeepLatestQueue(POSE_QUEUE_PER_CAMERA)
        self.health = InputHealth()
        self.input = self._start_input()
        self.encoder = IngestWorker(self.encode_queue, self._encode, self._on_ingest_error,
                                    name="mirage-encode").start()
        self.worker = IngestWorker(self.queue, self.ingestor.offer, self._on_ingest_error, name="mirage-pose",
                                   idle=self.ingestor.retry_held,
                                   pending=lambda: len(self.hold) + self.encode_queue.unfinished()).start()

        # ---------------------------------------------------------------- outputs
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
        self.imagined = ImaginedPublisher(self, p.world_frame, self.image_size)
        self.cloud_pub = self.create_publisher(PointCloud2, "~/cache/points", latched)
        self.stats_pub = self.create_publisher(CacheStats, "~/cache/stats", 10)
        self._cloud_version = None
        timers = MutuallyExclusiveCallbackGroup()
        self.cloud_timer = self.create_timer(1.0 / p.cloud_rate, self._publish_cloud, callback_group=timers)
        self.stats_timer = self.create_timer(1.0 / p.stats_rate, self._publish_stats, callback_group=timers)
        self._start_watchdog(timers)

        # ---------------------------------------------------------------- goals, services and action
        self.cache_dir = CacheDirectory(p.cache_directory)
        self.runner = GoalRunner(self.world_model, self.holder, self.ingestor.cameras, self._lookup_at_stamp,
                                 world_frame=p.world_frame, policy=p.goal_policy, fps=p.fps,
                                 max_frames=p.max_goal_frames, steps=p.steps or None,
                                 now_ns=lambda: conv.stamp_to_ns(self.get_clock().now()), log=log,
                                 keep_imagined=p.keep_imagined, imagined_frame=p.imagined_frame,
                                 waiting_on=self.input.describe)
        services = MutuallyExclusiveCallbackGroup()
        self.create_service(QueryCoverage, "~/query_coverage", self._on_query_coverage, callback_group=services)
        self.create_service(SaveCache, "~/save_cache", self._on_save, callback_group=services)
        self.create_service(LoadCache, "~/load_cache", self._on_load, callback_group=services)
        self.create_service(Trigger, "~/clear_cache", self._on_clear, callback_group=services)
        self.action = ImagineActionServer(self, self.runner, publish_frames=self.imagined.publish_batch,
                                          publish_plan=self.imagined.publish_plan, poses=self.imagined.poses,
                                          before_goal=self.torch_threads_here)

        # ---------------------------------------------------------------- live parameters, diagnostics, upkeep
        self._setup_operations()

    # ==================================================================================== process (issue 11)
    def _configure_process(self) -> None:
        """Say what the process did about DDS (:mod:`mirage_ros.dds`, before rclpy initialised) and set torch's
        threads (:meth:`_apply_torch_threads`)."""
        import torch

        log = self.get_logger()
        log.info(dds.decision or "DDS: mirage_ros.dds.use_large_data_profile() did not run in this process; "
                                 "large images may be lost between processes (README: 'Large images over DDS')")
        self._torch_default_threads = torch.get_num_threads()
        self._apply_torch_threads(self.params.torch_threads)

    def _apply_torch_threads(self, requested: int) -> None:
        """``torch_threads`` at start-up and when it is set live: 0 means 1 on 2 cores or fewer (measured: a
        keyframe encode 284 ms with 2 threads next to the ROS callbacks, 12.9 ms with 1), torch's default
        otherwise."""
        import torch

        cores = available_cores()
        self.torch_threads = requested or (1 if cores <= 2 else self._torch_default_threads)
        torch.set_num_threads(self.torch_threads)  # this thread, and every thread that first uses torch later
        how = "torch_threads" if requested else "automatic"
        self.get_logger().info(f"torch threads {self.torch_threads} ({how}; {cores} cores available)")

    def torch_threads_here(self) -> None:
        """Adopt ``torch_threads`` in the calling thread: torch keeps a thread count per thread once that thread
        used it, so the encode worker and the goal threads catch up with a live change themselves."""
        import torch

        if torch.get_num_threads() != self.torch_threads:
            torch.set_num_threads(self.torch_threads)

    def _encode(self, candidate) -> bool:
        self.torch_threads_here()
        return self.ingestor.encode(candidate)

    # ==================================================================================== input
    def _start_input(self) -> InputFront:
        """Every camera's subscriptions and TF on their own node and thread (:mod:`~mirage_ros.input_front`)."""
        p = self.params
        # sensor data: best effort, volatile (what camera drivers offer); reliable for bags and tests
        qos = QoSProfile(depth=p.input_queue_depth, history=HistoryPolicy.KEEP_LAST,
                         durability=DurabilityPolicy.VOLATILE,
                         reliability=ReliabilityPolicy.BEST_EFFORT if p.input_qos == "sensor_data"
                         else ReliabilityPolicy.RELIABLE)
        front = InputFront(self, self.camera_configs, self.tf, qos=qos, slop=p.sync_slop,
                           queue_size=2 * p.input_queue_depth, deliver=self.queue.put, on_tf=self._on_tf,
                           health=self.health, transports={"rgb": p.rgb_transport, "depth": p.depth_input_transport})
        names = ", ".join(f"{c.name} ({c.topics['rgb']})" for c in front.cameras)
        self.get_logger().info(f"input on node {front.node.get_fully_qualified_name()}: cameras {names}; "
                               f"sets wait up to tf_hold={p.tf_hold:g} s for their pose")
        return front.start()

    def _on_tf(self) -> None:
        """A transform arrived: wake the worker when sets are waiting for one (cheap otherwise)."""
        if len(self.hold):
            self.queue.wake()

    def _lookup_now(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """T_target_source at a stamp, without waiting (a set whose pose is late waits in the hold instead)."""
        return self.tf.lookup_transform(target, source, int(stamp_ns)).matrix

    def _lookup_at_stamp(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """T_target_source at a stamp (int nanoseconds; 0 = latest), waiting up to tf_timeout (goals, coverage)."""
        return self.tf.lookup_transform(target, source, int(stamp_ns), timeout=self.params.tf_timeout).matrix

    def _on_ingest_error(self, item: FramePair, exc: BaseException) -> None:
        log = self.get_logger()
        if isinstance(exc, TransformUnavailable):
            log.warning(f"frame dropped: {exc}", throttle_duration_sec=5.0)
        elif isinstance(exc, ValueError):
            log.error(f"frame rejected: {exc}", throttle_duration_sec=2.0)
        else:
            log.error(f"frame ingest failed ({type(exc).__name__}): {exc}", throttle_duration_sec=2.0)

    # ==================================================================================== watchdog (issue 11)
    def _start_watchdog(self, group) -> None:
        """A 1 Hz check on the steady clock (under sim time the /clock stops with the bag, and ROS timers with it):
        no input for a while, what a finished input burst brought, lost samples and TF lag."""
        now = time.monotonic()
        self._started_at, self._loaded_at = now, None
        self._warned_at, self._warn_interval, self._warned_loaded = float("-inf"), self.params.input_timeout, False
        self._summary_base = self._ingest_snapshot()
        self._lag_paired: dict[str, int] = {}
        self._expired_seen = 0
        self.watchdog = self.create_timer(1.0, self._check_input, callback_group=group,
                                          clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _ingest_snapshot(self) -> dict:
        st = self.ingestor.stats
        return dict(paired=self.input.paired, frames_in=st.frames_in,
                    keyframes=st.keyframes, skipped=st.frames_skipped, no_pose=st.frames_dropped_tf,
                    rejected=st.frames_rejected, queue_dropped=self.queue.dropped + self.encode_queue.dropped)

    def _check_input(self) -> None:
        now = time.monotonic()
        last = self.input.last_pair_time
        quiet = now - (last if last is not None else max(self._started_at, self._loaded_at or 0.0))
        if quiet < self.params.input_timeout:
            self._warn_interval, self._warned_loaded = self.params.input_timeout, False
        else:
            self._summarise_input(quiet)
            self._warn_no_input(now, quiet)
        self._check_transport()

    def _summarise_input(self, quiet: float) -> None:
        """Once per burst of input (e.g. a bag): what it brought, logged when it has stopped."""
        now, base = self._ingest_snapshot(), self._summary_base
        if now["paired"] <= base["paired"]:
            return
        d = {k: now[k] - base[k] for k in now}
        self._summary_base = now
        self.get_logger().info(
            f"input stopped ({quiet:.1f} s without a synced set: the bag ended or the camera went quiet); it brought "
            f"{d['paired']} rgb/depth/camera_info sets: {d['keyframes']} keyframes inserted, {d['skipped']} not "
            f"keyframes, {d['no_pose']} without a pose, {d['rejected']} rejected, {d['queue_dropped']} dropped as "
            f"stale by the queues; memory {len(self.holder.memory)} points")

    def _warn_no_input(self, now: float, quiet: float) -> None:
        if now - self._warned_at < self._warn_interval:
            return
        memory = self.holder.memory
        last = self.input.last_pair_time
        serving_cache = self._loaded_at is not None and len(memory) > 0 and (last is None or last < self._loaded_at)
        if serving_cache and self._warned_loaded:
            return
        self._warned_at = now
        message = (f"no synced rgb/depth input for {quiet:.1f} s; listening on {self.input.describe()}; world frame "
                   f"'{self.params.world_frame}'")
        if serving_cache:
            self._warned_loaded = True
            self.get_logger().warning(f"{message}; serving the loaded cache {self.holder.path} ({len(memory)} "
                                      "points); not repeated until input arrives")
            return
        self._warn_interval = min(2 * self._warn_interval, QUIET_WARNING_MAX)
        self.get_logger().warning(f"{message} (next reminder in {self._warn_interval:.0f} s)")

    def _check_transport(self) -> None:
        """Sample each camera's TF lag, count pose-hold expirations, and warn (throttled) with the fix."""
        for camera in self.input.cameras:
            if camera.paired == self._lag_paired.get(camera.name, 0) or not camera.frame_id:
                continue
            self._lag_paired[camera.name] = camera.paired
            try:
                newest = self.tf.lookup_transform(self.params.world_frame, camera.frame_id, 0).stamp_ns
            except Exception:  # noqa: BLE001 - no chain yet: the frames say so themselves
                continue
            if newest > 0:
                self.health.tf_lag(camera.name, max(camera.last_stamp_ns - newest, 0) / conv.NS_PER_SECOND)
        expired = self.ingestor.stats.frames_expired_tf
        self.health.expired(expired - self._expired_seen)
        self._expired_seen = expired
        warning = self.health.warning(context=dds.decision)
        if warning:
            self.get_logger().warning(warning)

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

    # ==================================================================================== services
    def _on_save(self, request, response):
        try:
            target = self.cache_dir.for_save(request.path)
            path = self.holder.save(str(target))
            response.success, response.message = True, f"saved {len(self.holder.memory)} points to {path}"
        except Exception as exc:  # noqa: BLE001 - any failure goes back to the caller
            response.success, response.message = False, f"save refused: {exc}"
            self.get_logger().error(response.message)
        return response

    def _on_load(self, request, response):
        try:
            source = self.cache_dir.for_load(request.path)
            n = self.holder.load(str(source), expect_channels=getattr(self.holder.memory, "channels", None),
                                 device=self.params.device)
            self.ingestor.reset()
            self._loaded_at, self._warned_loaded = time.monotonic(), False
            response.success, response.message = True, f"loaded {n} points from {source}"
        except Exception as exc:  # noqa: BLE001 - ValueError (bad name or file), MemoryBusy (a goal runs), ...
            response.success, response.message = False, f"load refused: {exc}"
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
            response.coverage, response.mean_depth = self.runner.query_coverage(request.poses, request.body_frame,
                                                                                request.camera)
            n = len(self.holder.memory)
            response.success = True
            response.message = (f"{len(response.coverage)} poses against {n} observed points" if n else
                                f"the memory is empty: {NO_KEYFRAME} {self.input.describe()}")
        except (GoalError, ValueError) as exc:
            response.success, response.message = False, f"query_coverage refused: {exc}"
            response.coverage, response.mean_depth = [], []
            self.get_logger().error(response.message)
        return response

    # ==================================================================================== lifecycle
    def destroy_node(self):
        self.worker.stop()
        self.encoder.stop()
        self.input.destroy()
        return super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``mirage_node`` (``--ros-args`` as usual)."""
    from mirage_ros.run import run

    return run(lambda graph: graph.add(MirageNode(context=graph.context)), argv, prog="mirage_node", threads=4)


if __name__ == "__main__":
    sys.exit(main())
