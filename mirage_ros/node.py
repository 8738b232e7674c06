"""The ``mirage`` ROS 2 node: live RGB-D + TF -> latent spatial memory -> imagined trajectories.

Wiring only; the math lives in :mod:`mirage` and the per-concern helpers beside this file:
:mod:`~mirage_ros.node_params` (parameters), :mod:`~mirage_ros.node_ingest` (keyframes, keep-latest queue,
worker), :mod:`~mirage_ros.node_memory` (the locked memory), :mod:`~mirage_ros.node_imagine` (goal
resolution and pose interpolation), :mod:`~mirage_ros.conversions` (messages <-> arrays),
:mod:`~mirage_ros.tf_buffer` and :mod:`~mirage_ros.sync`.

Threads: subscription callbacks only pair messages and push into a bounded keep-latest queue; one worker
thread encodes and inserts; the action server runs in a reentrant callback group on a multi-threaded
executor, so cancel requests and services are served while a rollout runs.

Topics (relative, remappable): subscribes ``rgb/image``, ``depth/image``, ``rgb/camera_info``, ``/tf``,
``/tf_static``; publishes ``~/imagined/image``, ``~/imagined/camera_info``, ``~/cache/points``,
``~/cache/stats``. Services ``~/query_coverage``, ``~/save_cache``, ``~/load_cache``, ``~/clear_cache``;
action ``~/imagine_trajectory``.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from mirage_ros import conversions as conv
from mirage_ros.action import ImagineTrajectory
from mirage_ros.msg import CacheStats
from mirage_ros.node_imagine import GoalError, resolve_goal, resolve_poses
from mirage_ros.node_ingest import (FrameIngestor, FramePair, IngestWorker, KeepLatestQueue, TransformUnavailable)
from mirage_ros.node_memory import LockedMemory, MemoryHolder
from mirage_ros.node_model import load_world_model, rollout_length
from mirage_ros.node_params import NodeParams, declare_parameters, read_parameters
from mirage_ros.srv import LoadCache, QueryCoverage, SaveCache
from mirage_ros.sync import ApproximateTimeSync
from mirage_ros.tf_buffer import TransformBuffer, attach_tf_listener

__all__ = ["MirageNode", "main"]


class MirageNode(Node):
    """See the module docstring. ``world_model`` injects a ready model (tests); otherwise parameters pick it."""

    def __init__(self, *, world_model=None, node_name: str = "mirage", **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        declare_parameters(self)
        self.params: NodeParams = read_parameters(self)
        p = self.params
        log = self.get_logger()
        if world_model is not None:
            self.world_model, self.model_name = world_model, type(world_model).__name__ + " (given)"
        else:
            self.world_model, self.model_name = load_world_model(p, log.info)
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
        self._tf_group = ReentrantCallbackGroup()
        attach_tf_listener(self, self.tf, callback_group=self._tf_group)
        # The model keeps per-call state (the causal VAE's caches): live encoding and rollouts take turns.
        self.model_lock = threading.Lock()
        self.ingestor = FrameIngestor(self.world_model, self.holder, self._lookup_at_stamp, p.world_frame,
                                      self.image_size, p.keyframe_translation, p.keyframe_rotation_deg,
                                      model_lock=self.model_lock)
        self.queue: KeepLatestQueue[FramePair] = KeepLatestQueue(p.ingest_queue_size)
        self.sync = ApproximateTimeSync(("rgb", "depth", "info"), slop=p.sync_slop, queue_size=2 * p.input_queue_depth)
        self._received = {"rgb": 0, "depth": 0, "info": 0}
        self._last_pair_time = time.monotonic()
        self._warned_at = 0.0
        # sensor data: best effort, volatile (what camera drivers offer); reliable for bags and tests
        input_qos = QoSProfile(depth=p.input_queue_depth, history=HistoryPolicy.KEEP_LAST,
                               durability=DurabilityPolicy.VOLATILE,
                               reliability=ReliabilityPolicy.BEST_EFFORT if p.input_qos == "sensor_data"
                               else ReliabilityPolicy.RELIABLE)
        self._input_group = ReentrantCallbackGroup()
        self._received_lock = threading.Lock()
        self.rgb_sub = self.create_subscription(Image, "rgb/image", self._on_rgb, input_qos,
                                                callback_group=self._input_group)
        self.depth_sub = self.create_subscription(Image, "depth/image", self._on_depth, input_qos,
                                                  callback_group=self._input_group)
        self.info_sub = self.create_subscription(CameraInfo, "rgb/camera_info", self._on_info, input_qos,
                                                 callback_group=self._input_group)
        self.worker = IngestWorker(self.queue, self.ingestor.process, self._on_ingest_error).start()

        # ---------------------------------------------------------------- outputs
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
        self.image_pub = self.create_publisher(Image, "~/imagined/image", 10)
        self.image_info_pub = self.create_publisher(CameraInfo, "~/imagined/camera_info", 10)
        self.cloud_pub = self.create_publisher(PointCloud2, "~/cache/points", latched)
        self.stats_pub = self.create_publisher(CacheStats, "~/cache/stats", 10)
        self._cloud_version = None
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self.cloud_timer = self.create_timer(1.0 / p.cloud_rate, self._publish_cloud, callback_group=self._timer_group)
        self.stats_timer = self.create_timer(1.0 / p.stats_rate, self._publish_stats, callback_group=self._timer_group)
        self.watchdog = self.create_timer(1.0, self._check_input, callback_group=self._timer_group)

        # ---------------------------------------------------------------- services and action
        self._service_group = MutuallyExclusiveCallbackGroup()
        self.create_service(QueryCoverage, "~/query_coverage", self._on_query_coverage,
                            callback_group=self._service_group)
        self.create_service(SaveCache, "~/save_cache", self._on_save, callback_group=self._service_group)
        self.create_service(LoadCache, "~/load_cache", self._on_load, callback_group=self._service_group)
        self.create_service(Trigger, "~/clear_cache", self._on_clear, callback_group=self._service_group)
        self._goal_lock = threading.Lock()        # one rollout at a time
        self._active_lock = threading.Lock()      # guards _active
        self._active = None                       # (goal_handle, CancelToken) of the running goal
        self._pending = 0                         # accepted goals whose execution has not started
        self.action_server = ActionServer(
            self, ImagineTrajectory, "~/imagine_trajectory", execute_callback=self._execute,
            goal_callback=self._on_goal, cancel_callback=self._on_cancel,
            callback_group=ReentrantCallbackGroup())

    # ==================================================================================== input
    def _on_info(self, msg: CameraInfo) -> None:
        self._offer("info", msg)

    def _on_rgb(self, msg: Image) -> None:
        self._offer("rgb", msg)

    def _on_depth(self, msg: Image) -> None:
        self._offer("depth", msg)

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
        names = {k: s.topic_name for k, s in subs}
        seen = ", ".join(f"{names[k]} ({self._received[k]} msgs)" for k in ("rgb", "depth", "info"))
        self.get_logger().warning(f"no synced rgb/depth input for {now - self._last_pair_time:.1f} s; "
                                  f"listening on {seen}; world frame '{self.params.world_frame}'")

    # ==================================================================================== outputs
    def _header(self, frame_id: str | None = None, stamp=None) -> Header:
        return Header(stamp=stamp if stamp is not None else self.get_clock().now().to_msg(),
                      frame_id=frame_id or self.params.world_frame)

    def _publish_cloud(self) -> None:
        if self.cloud_pub.get_subscription_count() == 0:
            return
        version = self.holder.version()
        if version == self._cloud_version:
            return
        xyz, rgb = self.holder.export_points(self.params.cloud_max_points)
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
        except Exception as exc:  # noqa: BLE001
            response.success, response.message = False, f"{exc}"
            self.get_logger().error(response.message)
        return response

    def _on_clear(self, request, response):
        self.holder.clear()
        self.ingestor.reset()
        response.success, response.message = True, "memory cleared"
        return response

    def _on_query_coverage(self, request, response):
        try:
            c2w = resolve_poses(request.poses, request.body_frame, self.ingestor.camera_frame,
                                self.params.world_frame, self._lookup_at_stamp)
            K = self._goal_intrinsics()
            coverage, mean_depth = [], []
            for T in c2w:
                cov, depth = self.holder.run(lambda m, T=T: self.world_model_coverage(m, K, T))
                coverage.append(cov)
                mean_depth.append(depth)
            response.coverage, response.mean_depth = coverage, mean_depth
        except (GoalError, ValueError) as exc:
            self.get_logger().error(f"query_coverage rejected: {exc}")
            response.coverage, response.mean_depth = [], []
        return response

    def world_model_coverage(self, memory, K, c2w) -> tuple[float, float]:
        """Fraction of the latent grid the memory fills at one view, and the mean depth there."""
        import torch

        from mirage.camera import latent_size

        readout = memory.read(K, torch.as_tensor(c2w).float(), self.image_size, latent_size(*self.image_size))
        mask = readout.mask
        covered = int(mask.sum())
        return covered / mask.numel(), float(readout.depth[mask].mean()) if covered else 0.0

    # ==================================================================================== action
    def _goal_intrinsics(self):
        """Intrinsics of the live camera at the model's size; before any frame, a 75 degree pinhole."""
        if self.ingestor.intrinsics is not None:
            return self.ingestor.intrinsics
        from mirage.camera import intrinsics_from_fov

        self.get_logger().warning("no camera frame seen yet: imagining with a 75 degree field of view",
                                  throttle_duration_sec=30.0)
        return intrinsics_from_fov(75.0, *self.image_size)

    def _on_goal(self, goal) -> GoalResponse:
        with self._active_lock:
            busy = self._active is not None or self._pending > 0
            if busy and self.params.goal_policy == "reject":
                self.get_logger().warning("imagine_trajectory: rejected a goal, one is running (goal_policy=reject)")
                return GoalResponse.REJECT
            if self._active is not None:
                self.get_logger().info("imagine_trajectory: preempting the running goal (goal_policy=preempt)")
                self._active[1].cancel()
            self._pending += 1
        return GoalResponse.ACCEPT

    def _on_cancel(self, goal_handle) -> CancelResponse:
        with self._active_lock:
            if self._active is not None and self._active[0] is goal_handle:
                self._active[1].cancel()
        return CancelResponse.ACCEPT

    def _execute(self, goal_handle):
        from mirage.rollout import CancelToken, RolloutCancelled

        token = CancelToken()
        goal = goal_handle.request
        result = ImagineTrajectory.Result()
        with self._goal_lock:
            with self._active_lock:
                self._pending -= 1
                self._active = (goal_handle, token)
            try:
                if goal_handle.is_cancel_requested:
                    goal_handle.canceled()
                    result.message = "canceled before it started"
                    return result
                resolved = resolve_goal(goal, camera_frame=self.ingestor.camera_frame,
                                        world_frame=self.params.world_frame, lookup=self._lookup_at_stamp,
                                        default_fps=self.params.fps, max_frames=self.params.max_goal_frames,
                                        now_ns=self.get_clock().now().nanoseconds)
                frames, spf = self._rollout(goal, resolved, token, goal_handle)
                result.frames_generated = len(frames)
                result.seconds_per_frame = float(spf)
                if goal.return_frames:
                    result.frames = [conv.numpy_to_image(f, "rgb8", stamp=int(t), frame_id=resolved.frame_id)
                                     for f, t in zip(frames, resolved.stamps)]
                result.message = f"imagined {len(frames)} frames ({spf:.3f} s/frame)"
                goal_handle.succeed()
            except RolloutCancelled:
                result.message = "canceled" if goal_handle.is_cancel_requested else "preempted by a newer goal"
                if goal_handle.is_cancel_requested:
                    goal_handle.canceled()
                else:
                    goal_handle.abort()
            except GoalError as exc:
                result.message = f"bad goal: {exc}"
                self.get_logger().error(f"imagine_trajectory: {result.message}")
                goal_handle.abort()
            except Exception as exc:  # noqa: BLE001 - e.g. CUDA out of memory: report and keep serving
                result.message = f"rollout failed ({type(exc).__name__}): {exc}"
                self.get_logger().error(f"imagine_trajectory: {result.message}")
                goal_handle.abort()
                _release_accelerator_memory()
            finally:
                with self._active_lock:
                    self._active = None
        return result

    def _rollout(self, goal, resolved, token, goal_handle):
        """Run the world model along the resolved poses, publishing each chunk's frames as soon as they are
        decoded; returns (frames (T,H,W,3) uint8, seconds/frame)."""
        import torch

        requested = resolved.cam_to_world.shape[0]
        length = rollout_length(requested)
        c2w = resolved.cam_to_world
        if length > requested:  # the model generates 1 + 4k frames: hold the last pose, trim afterwards
            c2w = torch.cat([c2w, c2w[-1:].expand(length - requested, 4, 4)])
        K = self._goal_intrinsics()
        feedback = ImagineTrajectory.Feedback()
        t0 = time.monotonic()

        def progress(p) -> None:
            feedback.frames_done = int(min(p.frames_done, requested))
            feedback.frames_total = int(requested)
            feedback.chunks_done = int(p.chunks_done)
            feedback.seconds_elapsed = float(time.monotonic() - t0)
            goal_handle.publish_feedback(feedback)

        with self.model_lock:
            out = self.world_model.rollout(LockedMemory(self.holder), K.expand(length, 3, 3).clone(), c2w,
                                           prompt=goal.prompt, seed=int(goal.seed), progress=progress, cancel=token,
                                           num_inference_steps=self.params.steps,
                                           on_frames=lambda start, f: self._publish_frames(f, resolved, start,
                                                                                           requested))
        frames = np.asarray(out.frames)[:requested]
        return frames, float(out.seconds_per_frame)

    def _publish_frames(self, frames: np.ndarray, resolved, start: int, requested: int) -> None:
        """Publish frames start.. of a goal (those past ``requested``, padding to 1 + 4k, are dropped)."""
        K = self._goal_intrinsics()
        h, w = self.image_size
        frames = frames[: max(requested - start, 0)]
        for frame, t in zip(frames, resolved.stamps[start : start + len(frames)]):
            stamp = int(t)
            self.image_pub.publish(conv.numpy_to_image(frame, "rgb8", stamp=stamp, frame_id=resolved.frame_id))
            self.image_info_pub.publish(conv.intrinsics_to_camera_info(K, h, w, stamp=stamp,
                                                                       frame_id=resolved.frame_id))

    # ==================================================================================== lifecycle
    def destroy_node(self):
        self.worker.stop()
        return super().destroy_node()


def _release_accelerator_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``mirage_node`` (``--ros-args`` as usual)."""
    rclpy.init(args=sys.argv if argv is None else argv)
    node = None
    try:
        node = MirageNode()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, FileNotFoundError, ParameterException) as exc:  # bad parameters, missing model files
        print(f"mirage_node: {exc}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
