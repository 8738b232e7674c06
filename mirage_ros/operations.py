"""[rclpy] The node's run-time operations, mixed into :class:`~mirage_ros.node.MirageNode`.

What an operator or a planner does to a running node, wired here so the node file stays its data flow:

* **input transport** (``input_transport``, ``depth_transport``): subscribed per camera by
  :class:`~mirage_ros.input_front.InputFront`; the compressed pairs are checked and decoded by the ingest.
* **live parameters**: ``ros2 param set`` on a ``live`` parameter (:data:`mirage_ros.params.LIVE_PARAMETERS` and
  the table's own marks) is validated with the table's ranges and applied at once; read-only ones are refused
  by rclpy ("Trying to set a read-only parameter") and their descriptions say they need a restart.
* **``/diagnostics``**: :class:`~mirage_ros.core.diagnostics.DiagnosticsMonitor` over the node's counters at
  ``diagnostics_rate``: the input front's counters and topics, DDS lost samples per stream (from the message-lost
  events :class:`~mirage_ros.core.input_health.InputHealth` counts), both ingest stages.
* **``~/set_ingest_paused``** (std_srvs/SetBool): one idempotent service with the wanted state in the request (a
  planner sets and resets it without tracking what the node was doing; two Triggers would each need the caller
  to know the current state, and their answers could not say what it was). Once it returns true, no insert starts;
  one already running is waited for.
* **``~/clear_region``** (mirage_ros/ClearRegion) and **decay** (``decay_seconds``): points inside a world-frame
  box, or not re-observed for N seconds (:class:`~mirage_ros.core.decay.StampClock`), leave the memory.
"""

from __future__ import annotations

import time

import torch

from mirage_ros.conversions.time import stamp_to_ns
from mirage_ros.core.decay import StampClock
from mirage_ros.core.diagnostics import DiagnosticsMonitor, NodeSnapshot
from mirage_ros.core.memory_holder import BUSY_TIMEOUT, MemoryBusy
from mirage_ros.params import PARAM_SPECS, update_params

__all__ = ["NodeOperations"]

_OUR_PARAMETERS = frozenset(spec.name for spec in PARAM_SPECS)
DECAY_PERIOD = 0.5  # seconds between decay samples: points are forgotten at most this late


class NodeOperations:
    """Mixin of :class:`~mirage_ros.node.MirageNode` (an rclpy Node with ``params``, ``holder``, ``ingestor``,
    ``input``, ``health``, ``queue``, ``encode_queue``, ``runner``, ``action``, the timers and
    ``_apply_torch_threads``). Call :meth:`_setup_operations` at the end of ``__init__``."""

    # ==================================================================================== setup
    def _setup_operations(self) -> None:
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from std_srvs.srv import SetBool

        from mirage_ros.srv import ClearRegion

        p = self.params
        # own groups: a pause or a clear is answered while save / load / coverage run, decay never waits for a cloud
        operations = MutuallyExclusiveCallbackGroup()
        self.create_service(SetBool, "~/set_ingest_paused", self._on_set_ingest_paused, callback_group=operations)
        self.create_service(ClearRegion, "~/clear_region", self._on_clear_region, callback_group=operations)
        upkeep = MutuallyExclusiveCallbackGroup()
        self._stamp_clock = StampClock()
        self.decay_timer = self.create_timer(DECAY_PERIOD, self._decay_tick, callback_group=upkeep)
        self.diagnostics = DiagnosticsMonitor(self.get_fully_qualified_name(), p.expected_input_rate, p.input_timeout,
                                              hardware_id=f"{self.model_name} on {p.device}")
        self.diagnostics_pub = self.diagnostics_timer = None
        try:
            from diagnostic_msgs.msg import DiagnosticArray
        except ImportError:
            self.get_logger().warning("diagnostic_msgs is not installed: /diagnostics is off (apt install "
                                      "ros-$ROS_DISTRO-diagnostic-msgs, or pip install ros-diagnostic-msgs)")
        else:
            self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
            self.diagnostics_timer = self.create_timer(1.0 / p.diagnostics_rate, self._publish_diagnostics,
                                                       callback_group=upkeep)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ==================================================================================== live parameters
    def _on_set_parameters(self, parameters):
        """rclpy's on-set callback: validate the whole new set (ranges, choices, cross-checks), then apply it."""
        from rcl_interfaces.msg import SetParametersResult

        changes = {p.name: p.value for p in parameters if p.name in _OUR_PARAMETERS}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            new = update_params(self.params, changes)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        old, self.params = self.params, new
        self._apply_params(old, new, set(changes))
        self.get_logger().info("parameters changed: " + ", ".join(f"{k}={v!r}" for k, v in changes.items()))
        return SetParametersResult(successful=True)

    def _apply_params(self, old, new, changed: set[str]) -> None:
        """Push changed live parameters into the parts that hold a copy (the rest read ``self.params`` each time)."""
        self.ingestor.set_keyframe_thresholds(new.keyframe_translation, new.keyframe_rotation_deg)
        self.input.set_slop(new.sync_slop)
        self.encode_queue.maxsize = int(new.ingest_queue_size)
        self.runner.policy, self.runner.fps = new.goal_policy, float(new.fps)
        self.runner.max_frames, self.runner.steps = int(new.max_goal_frames), int(new.steps) or None
        for timer, rate in ((self.cloud_timer, new.cloud_rate), (self.stats_timer, new.stats_rate),
                            (self.diagnostics_timer, new.diagnostics_rate)):
            if timer is not None:
                timer.timer_period_ns = stamp_to_ns(1.0 / rate)
        if (old.cloud_colors, old.cloud_max_points) != (new.cloud_colors, new.cloud_max_points):
            self._cloud_version = None  # republish in the new colours / budget
        if "torch_threads" in changed:  # whenever it is set: torch's count may have moved since (another node)
            self._apply_torch_threads(new.torch_threads)
        self.diagnostics.expected_rate, self.diagnostics.input_timeout = new.expected_input_rate, new.input_timeout

    # ==================================================================================== pause, clear, decay
    def _on_set_ingest_paused(self, request, response):
        was = self.ingestor.paused
        self.ingestor.paused = bool(request.data)
        state = "paused" if request.data else "running"
        response.success, response.message = True, f"ingest {state} (was {'paused' if was else 'running'})"
        if request.data:
            try:  # an insert that took the memory before the pause finishes before this answer
                with self.holder.exclusive("pause", timeout=BUSY_TIMEOUT):
                    pass
            except MemoryBusy as exc:  # a goal, clear or load holds it: inserts waiting behind it will skip
                response.message += f"; {exc}"
        self.get_logger().info(response.message)
        return response

    def _on_clear_region(self, request, response):
        world = self.params.world_frame
        frame = request.frame_id.strip()
        response.points_removed, response.points_left = 0, len(self.holder.memory)
        if frame and frame.lstrip("/") != world:
            response.success = False
            response.message = f"the box must be given in the world frame '{world}', not '{frame}'"
            return response
        low = (request.min.x, request.min.y, request.min.z)
        high = (request.max.x, request.max.y, request.max.z)
        try:
            removed = self.holder.clear_region(low, high)
        except (ValueError, MemoryBusy) as exc:
            response.success, response.message = False, f"clear_region refused: {exc}"
            self.get_logger().error(response.message)
            return response
        response.success, response.points_removed = True, int(removed)
        response.points_left = len(self.holder.memory)
        response.message = (f"removed {removed} points inside {list(low)} .. {list(high)} ({world}); "
                            f"{response.points_left} left")
        self.get_logger().info(response.message)
        return response

    def _decay_tick(self) -> None:
        now = time.monotonic()
        memory = self.holder.memory
        self._stamp_clock.sample(self.holder.generation, int(getattr(memory, "frames_inserted", 0)), now)
        seconds = self.params.decay_seconds
        stamp = self._stamp_clock.forget_stamp(seconds, now) if seconds > 0 else None
        if stamp is None:
            return
        try:
            removed = self.holder.forget_older_than(stamp, timeout=0.0)
        except MemoryBusy:
            return  # a writer is busy; the next tick tries again
        if removed:
            self.get_logger().info(f"decay: forgot {removed} points not re-observed for {seconds:g} s",
                                   throttle_duration_sec=10.0)

    # ==================================================================================== /diagnostics
    def _lost_samples(self) -> dict[str, int]:
        """DDS lost samples per stream (rgb, depth, info), summed over the cameras; only streams that lost any."""
        stream_of = {topic: key for camera in self.input.cameras for key, topic in camera.topics.items()}
        lost: dict[str, int] = {}
        for topic, count in dict(self.health.lost_total).items():
            key = stream_of.get(topic, topic)
            lost[key] = lost.get(key, 0) + int(count)
        return lost

    def _diagnostics_snapshot(self) -> NodeSnapshot:
        p, st = self.params, self.ingestor.stats
        memory = self.holder.stats()
        outcome = getattr(self.action, "last_outcome", None)
        cameras = self.input.cameras
        topics = {key: ", ".join(dict.fromkeys(c.topics[key] for c in cameras)) for key in cameras[0].topics}
        extra = {"inputs": self.input.describe()} if len(cameras) > 1 else {}
        if str(p.device).startswith("cuda") and torch.cuda.is_available():
            extra["CUDA memory allocated (MiB)"] = f"{torch.cuda.memory_allocated() / 2 ** 20:.0f}"
        return NodeSnapshot(
            time=time.monotonic(), topics=topics, received=self.input.received(), lost=self._lost_samples(),
            paired=self.input.paired, frames_in=st.frames_in,
            dropped_tf=st.frames_dropped_tf, rejected=st.frames_rejected, corrupt=st.frames_corrupt,
            skipped=st.frames_skipped, keyframes=st.keyframes,
            queue_dropped=self.queue.dropped + self.encode_queue.dropped,
            paused=bool(self.ingestor.paused), last_error=st.last_error, last_tf_error=st.last_tf_error,
            last_insert_latency=st.last_insert_latency, points=int(memory.get("points", 0)),
            bytes=int(memory.get("bytes", 0)), max_points=p.max_points, model=self.model_name, device=p.device,
            dtype=p.dtype, torch_threads=self.torch_threads, goal_running=self.runner.busy,
            goals_done=int(getattr(self.action, "goals_done", 0)),
            last_goal_status=outcome.status if outcome else "", last_goal_message=outcome.message if outcome else "",
            seconds_per_frame=float(outcome.seconds_per_frame) if outcome else 0.0, world_frame=p.world_frame,
            sync_slop=p.sync_slop, extra=extra)

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        for s in self.diagnostics.update(self._diagnostics_snapshot()):
            msg.status.append(DiagnosticStatus(level=bytes([s.level]), name=s.name, message=s.message,
                                               hardware_id=s.hardware_id,
                                               values=[KeyValue(key=k, value=v) for k, v in s.values]))
        self.diagnostics_pub.publish(msg)
