"""What ``/diagnostics`` says about the node, without ROS: counters in, OK / WARN / ERROR statuses out.

The node fills a :class:`NodeSnapshot` from its counters at every diagnostics tick; :class:`DiagnosticsMonitor`
keeps a few seconds of snapshots and turns the differences into five statuses, each with a message a person can act
on and the numbers behind it (``diagnostic_msgs/DiagnosticStatus`` fields; the node's publisher only copies them):

=========  ==============================================================================================
input      message rates per stream against ``expected_input_rate``, silent streams, stamps that never pair,
           DDS lost samples
ingest     paused, frames without a pose (TF), rejected and corrupt frames, keep-latest queue drops
memory     points, bytes, growth, capacity
model      model, device, dtype, torch threads
goals      idle / running, the last goal's outcome and seconds per frame
=========  ==============================================================================================

DDS lost samples are read from the node if it counts them (the snapshot's ``lost`` is empty otherwise, and the
input status then says nothing about them).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

__all__ = ["OK", "WARN", "ERROR", "STALE", "LEVEL_NAMES", "Status", "NodeSnapshot", "DiagnosticsMonitor"]

OK, WARN, ERROR, STALE = 0, 1, 2, 3  # diagnostic_msgs/DiagnosticStatus levels
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR", STALE: "STALE"}
STREAMS = ("rgb", "depth", "info")


@dataclass(frozen=True)
class Status:
    """One DiagnosticStatus: ``name`` ("<node>: <part>"), ``level``, ``message``, ``hardware_id``, ``values``."""

    name: str
    level: int
    message: str
    hardware_id: str
    values: tuple[tuple[str, str], ...] = ()


@dataclass
class NodeSnapshot:
    """The node's counters at ``time`` (monotonic seconds). Counters only grow, except after a restart of a part
    (clear / load reset nothing here; the monitor clamps negative differences to 0)."""

    time: float
    topics: dict[str, str] = field(default_factory=dict)      # stream -> topic name (rgb, depth, info)
    received: dict[str, int] = field(default_factory=dict)    # messages per stream
    lost: dict[str, int] = field(default_factory=dict)        # DDS lost samples per stream (if counted)
    paired: int = 0            # synced rgb + depth + camera_info sets handed to the queue
    frames_in: int = 0
    dropped_tf: int = 0
    rejected: int = 0
    corrupt: int = 0
    skipped: int = 0
    keyframes: int = 0
    queue_dropped: int = 0
    paused: bool = False
    last_error: str = ""
    last_tf_error: str = ""
    last_insert_latency: float = 0.0
    points: int = 0
    bytes: int = 0
    max_points: int = 0        # 0 = unbounded
    model: str = ""
    device: str = ""
    dtype: str = ""
    torch_threads: int = 0
    goal_running: bool = False
    goals_done: int = 0
    last_goal_status: str = ""       # succeeded | canceled | aborted | "" (none yet)
    last_goal_message: str = ""
    seconds_per_frame: float = 0.0
    world_frame: str = ""
    sync_slop: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)       # more model values (e.g. CUDA memory)


def _delta(new: int, old: int) -> int:
    return max(int(new) - int(old), 0)


class DiagnosticsMonitor:
    """Turns a stream of :class:`NodeSnapshot` into statuses (see the module docstring).

    Args:
        node_name: prefix of every status name.
        expected_rate: messages per second each input stream should deliver; 0 judges silence only.
        input_timeout: seconds of silence (or of messages that never pair) before an ERROR.
        window: seconds over which rates and changes are measured.
    ``expected_rate`` and ``input_timeout`` are attributes and may change between updates.
    """

    def __init__(self, node_name: str = "mirage", expected_rate: float = 0.0, input_timeout: float = 5.0,
                 window: float = 5.0, hardware_id: str = ""):
        self.node_name = node_name.lstrip("/") or "mirage"
        self.expected_rate = float(expected_rate)
        self.input_timeout = float(input_timeout)
        self.window = float(window)
        self.hardware_id = hardware_id
        self._history: collections.deque[NodeSnapshot] = collections.deque()
        self._start: float | None = None
        self._last_change: dict[str, float] = {}   # stream (or "paired") -> when its counter last grew
        self._last_counts: dict[str, int] = {}

    # ------------------------------------------------------------------------------------------ bookkeeping
    def _track(self, snap: NodeSnapshot) -> NodeSnapshot:
        """Record ``snap``; returns the snapshot ``window`` seconds back (or the oldest one kept)."""
        if self._start is None:
            self._start = snap.time
        counts = {**{k: int(snap.received.get(k, 0)) for k in STREAMS}, "paired": int(snap.paired)}
        for key, value in counts.items():
            if key not in self._last_counts or value > self._last_counts[key]:  # silence: since start or growth
                self._last_change[key] = snap.time
            self._last_counts[key] = value
        self._history.append(snap)
        while len(self._history) > 2 and self._history[1].time <= snap.time - self.window:
            self._history.popleft()
        return self._history[0]

    def _silent_for(self, key: str, now: float) -> float:
        return now - self._last_change.get(key, self._start if self._start is not None else now)

    def _status(self, part: str, level: int, message: str, values: dict) -> Status:
        return Status(f"{self.node_name}: {part}", level, message, self.hardware_id,
                      tuple((str(k), str(v)) for k, v in values.items()))

    # ------------------------------------------------------------------------------------------ statuses
    def update(self, snap: NodeSnapshot) -> list[Status]:
        """The five statuses for ``snap`` (input, ingest, memory, model, goals)."""
        old = self._track(snap)
        dt = max(snap.time - old.time, 1e-6)  # seconds; 0 before a second snapshot
        return [self._input(snap, old, dt), self._ingest(snap, old), self._memory(snap, old, dt), self._model(snap),
                self._goals(snap)]

    def _input(self, snap: NodeSnapshot, old: NodeSnapshot, dt: float) -> Status:
        now, timeout = snap.time, self.input_timeout
        measured = snap is not old
        rates = {k: _delta(snap.received.get(k, 0), old.received.get(k, 0)) / dt if measured else 0.0
                 for k in STREAMS}
        values: dict = {}
        for k in STREAMS:
            values[f"{k} topic"] = snap.topics.get(k, "")
            values[f"{k} rate (Hz)"] = f"{rates[k]:.2f}"
            values[f"{k} messages"] = snap.received.get(k, 0)
            if k in snap.lost:
                values[f"{k} lost samples"] = snap.lost[k]
        values["paired rate (Hz)"] = f"{_delta(snap.paired, old.paired) / dt if measured else 0.0:.2f}"
        values["expected rate (Hz)"] = f"{self.expected_rate:g}"
        silent = [k for k in STREAMS if self._silent_for(k, now) >= timeout]
        if silent:
            names = ", ".join(f"{k} on {snap.topics.get(k, '?')}" for k in silent)
            never = all(snap.received.get(k, 0) == 0 for k in silent)
            return self._status("input", ERROR, (
                f"{'no' if never else 'nothing new from'} {names} for {self._silent_for(silent[0], now):.0f} s: "
                "check that the camera runs, the topic remaps, input_transport (raw | compressed) and that input_qos "
                "fits the publisher (reliable takes only reliable publishers)"), values)
        if self._silent_for("paired", now) >= timeout:
            return self._status("input", ERROR, (
                f"rgb, depth and camera_info arrive but never pair for {self._silent_for('paired', now):.0f} s: "
                f"their stamps differ by more than sync_slop={snap.sync_slop:g} s (is depth registered to and "
                "stamped like the colour image?)"), values)
        problems = []
        lost = {k: _delta(snap.lost.get(k, 0), old.lost.get(k, 0)) for k in snap.lost}
        if any(lost.values()):
            total = sum(lost.values())
            problems.append(f"DDS lost {total} samples in {dt:.0f} s ("
                            + ", ".join(f"{k} {n}" for k, n in lost.items() if n)
                            + "): the link or this reader is too slow; try input_transport:=compressed, a lower "
                              "camera rate or the large-data DDS profile")
        if self.expected_rate > 0 and measured and dt >= min(self.window, 1.0):
            slow = [k for k in STREAMS if rates[k] < 0.5 * self.expected_rate]
            if slow:
                problems.append(", ".join(f"{k} at {rates[k]:.1f} Hz" for k in slow)
                                + f", expected {self.expected_rate:g} Hz (a slow link or camera? "
                                  "input_transport:=compressed saves bandwidth)")
        if problems:
            return self._status("input", WARN, "; ".join(problems), values)
        summary = ", ".join(f"{k} {rates[k]:.1f} Hz" for k in STREAMS)
        return self._status("input", OK, f"receiving: {summary}" if measured else "receiving", values)

    def _ingest(self, snap: NodeSnapshot, old: NodeSnapshot) -> Status:
        frames = _delta(snap.frames_in, old.frames_in)
        tf = _delta(snap.dropped_tf, old.dropped_tf)
        rejected = _delta(snap.rejected, old.rejected)
        corrupt = _delta(snap.corrupt, old.corrupt)
        queued = _delta(snap.paired, old.paired)
        dropped = _delta(snap.queue_dropped, old.queue_dropped)
        values = {"frames in": snap.frames_in, "keyframes": snap.keyframes, "not keyframes": snap.skipped,
                  "without pose (TF)": snap.dropped_tf, "rejected": snap.rejected, "corrupt payloads": snap.corrupt,
                  "queue drops": snap.queue_dropped, "last insert latency (s)": f"{snap.last_insert_latency:.3f}",
                  "paused": snap.paused, "last error": snap.last_error, "last TF error": snap.last_tf_error}
        if snap.paused:
            return self._status("ingest", OK, "paused (~/set_ingest_paused): frames are dropped, the memory is "
                                "frozen; resume with data: false", values)
        problems, level = [], OK
        if tf:
            level = ERROR if tf >= frames > 0 else WARN
            problems.append(f"{tf} of {frames} frames had no camera pose in '{snap.world_frame}' at their stamp: "
                            "is TF to the camera's optical frame published, world_frame right, use_sim_time set for "
                            f"bags? Raising tf_timeout helps when TF is late ({snap.last_tf_error or 'no detail'})")
        if rejected:
            level = max(level, ERROR if rejected >= frames > 0 else WARN)
            detail = f"{corrupt} corrupt compressed payloads; " if corrupt else ""
            problems.append(f"{rejected} frames rejected ({detail}last: {snap.last_error})")
        if queued >= 10 and dropped * 2 > queued:
            level = max(level, WARN)
            problems.append(f"the keep-latest queue dropped {dropped} of {queued} frames: the encoder is slower than "
                            "the camera, keyframes may be missed when moving fast (a GPU device, larger keyframe "
                            "thresholds or a lower camera rate help)")
        if problems:
            return self._status("ingest", level, "; ".join(problems), values)
        if snap.frames_in == 0:
            return self._status("ingest", OK, "waiting for the first frame", values)
        return self._status("ingest", OK, f"{snap.keyframes} keyframes from {snap.frames_in} frames", values)

    def _memory(self, snap: NodeSnapshot, old: NodeSnapshot, dt: float) -> Status:
        growth = (snap.points - old.points) / dt if snap is not old else 0.0
        mib = snap.bytes / 2 ** 20
        values = {"points": snap.points, "bytes": snap.bytes, "MiB": f"{mib:.2f}",
                  "growth (points/s)": f"{growth:.1f}", "max points": snap.max_points or "unbounded"}
        if snap.max_points and snap.points >= 0.95 * snap.max_points:
            return self._status("memory", WARN, (
                f"at capacity: {snap.points} of {snap.max_points} points ({mib:.1f} MiB), the oldest are evicted; "
                "raise max_points or voxel_size, or clear regions you no longer need"), values)
        if snap.points == 0:
            return self._status("memory", OK, "empty", values)
        return self._status("memory", OK, f"{snap.points} points, {mib:.1f} MiB, {growth:+.0f} points/s", values)

    def _model(self, snap: NodeSnapshot) -> Status:
        values = {"model": snap.model, "device": snap.device, "dtype": snap.dtype,
                  "torch threads": snap.torch_threads, **snap.extra}
        return self._status("model", OK, f"{snap.model} on {snap.device} ({snap.dtype})", values)

    def _goals(self, snap: NodeSnapshot) -> Status:
        values = {"running": snap.goal_running, "goals done": snap.goals_done,
                  "last status": snap.last_goal_status or "none", "last message": snap.last_goal_message,
                  "seconds per frame": f"{snap.seconds_per_frame:.3f}"}
        if snap.goal_running:
            return self._status("goals", OK, "imagining a trajectory", values)
        if snap.last_goal_status == "aborted" and "preempted" not in snap.last_goal_message:
            return self._status("goals", WARN, f"the last goal failed: {snap.last_goal_message}", values)
        if snap.last_goal_status == "succeeded":
            return self._status("goals", OK, f"idle; last goal {snap.seconds_per_frame:.3f} s/frame", values)
        return self._status("goals", OK, "idle", values)
