"""mirage_ros.core.diagnostics without ROS: counters over time -> OK / WARN / ERROR statuses with actionable text."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mirage_ros.core.diagnostics import ERROR, OK, WARN, DiagnosticsMonitor, NodeSnapshot

TOPICS = {"rgb": "/cam/rgb/image", "depth": "/cam/depth/image", "info": "/cam/rgb/camera_info"}


def healthy(t: float, rate: float = 10.0, **kw) -> NodeSnapshot:
    """A node that received ``rate`` sets per second since t=0 and inserts a keyframe every 10 frames."""
    n = int(round(t * rate))
    base = dict(time=t, topics=TOPICS, received={"rgb": n, "depth": n, "info": n}, paired=n, frames_in=n,
                keyframes=n // 10, skipped=n - n // 10, points=100 * (n // 10), bytes=1000 * n, max_points=100_000,
                model="mirage-tiny", device="cpu", dtype="float32", torch_threads=2, world_frame="odom",
                sync_slop=0.02)
    base.update(kw)
    return NodeSnapshot(**base)


def run(monitor: DiagnosticsMonitor, snapshots) -> dict[str, object]:
    out = None
    for snap in snapshots:
        out = monitor.update(snap)
    return {s.name.split(": ")[1]: s for s in out}


def test_a_healthy_node_is_ok_everywhere_with_numbers():
    monitor = DiagnosticsMonitor("mirage", expected_rate=10.0, input_timeout=5.0, hardware_id="cpu")
    status = run(monitor, [healthy(t) for t in range(0, 11)])
    assert set(status) == {"input", "ingest", "memory", "model", "goals"}
    assert all(s.level == OK for s in status.values()), {k: s.message for k, s in status.items()}
    assert status["input"].name == "mirage: input" and status["input"].hardware_id == "cpu"
    values = dict(status["input"].values)
    assert values["rgb topic"] == "/cam/rgb/image" and float(values["rgb rate (Hz)"]) == pytest.approx(10.0)
    assert "mirage-tiny on cpu" in status["model"].message
    assert float(dict(status["memory"].values)["growth (points/s)"]) == pytest.approx(100.0)


def test_a_silent_stream_is_an_error_naming_its_topic():
    monitor = DiagnosticsMonitor(expected_rate=10.0, input_timeout=5.0)
    snaps = [healthy(t) for t in range(0, 4)]
    frozen = snaps[-1]
    snaps += [replace(healthy(t), received={**healthy(t).received, "depth": frozen.received["depth"]},
                      paired=frozen.paired) for t in range(4, 11)]
    status = run(monitor, snaps)["input"]
    assert status.level == ERROR and "depth on /cam/depth/image" in status.message and "remap" in status.message
    never = run(DiagnosticsMonitor(input_timeout=2.0), [NodeSnapshot(time=t, topics=TOPICS) for t in range(4)])
    assert never["input"].level == ERROR and never["input"].message.startswith("no rgb on /cam/rgb/image")


def test_messages_that_never_pair_blame_the_stamps():
    monitor = DiagnosticsMonitor(input_timeout=3.0)
    status = run(monitor, [replace(healthy(t), paired=0) for t in range(0, 6)])["input"]
    assert status.level == ERROR and "never pair" in status.message and "sync_slop=0.02" in status.message


def test_slow_input_and_lost_samples_warn():
    slow = run(DiagnosticsMonitor(expected_rate=30.0), [healthy(t, rate=10.0) for t in range(0, 8)])["input"]
    assert slow.level == WARN and "expected 30 Hz" in slow.message and "rgb at 10.0 Hz" in slow.message
    unknown = run(DiagnosticsMonitor(expected_rate=0.0), [healthy(t, rate=1.0) for t in range(0, 8)])["input"]
    assert unknown.level == OK  # no expected rate: only silence is judged
    lost = run(DiagnosticsMonitor(), [healthy(t, lost={"rgb": 3 * t, "depth": 0}) for t in range(0, 8)])["input"]
    assert lost.level == WARN and "DDS lost" in lost.message and "compressed" in lost.message
    assert dict(lost.values)["rgb lost samples"] == "21"


def test_tf_failures_rejections_and_corrupt_payloads():
    all_tf = run(DiagnosticsMonitor(), [healthy(t, dropped_tf=10 * t, keyframes=0, last_tf_error="no odom")
                                        for t in range(0, 4)])["ingest"]
    assert all_tf.level == ERROR and "no camera pose" in all_tf.message and "'odom'" in all_tf.message
    some_tf = run(DiagnosticsMonitor(), [healthy(t, dropped_tf=t) for t in range(0, 4)])["ingest"]
    assert some_tf.level == WARN and "tf_timeout" in some_tf.message
    bad = run(DiagnosticsMonitor(), [healthy(t, rejected=2 * t, corrupt=2 * t, last_error="PNG truncated")
                                     for t in range(0, 4)])["ingest"]
    assert bad.level == WARN and "corrupt" in bad.message and "PNG truncated" in bad.message


def test_queue_drops_warn_only_when_most_frames_are_dropped():
    few = run(DiagnosticsMonitor(), [healthy(t, queue_dropped=2 * t) for t in range(0, 6)])["ingest"]
    assert few.level == OK
    most = run(DiagnosticsMonitor(), [healthy(t, queue_dropped=8 * t) for t in range(0, 6)])["ingest"]
    assert most.level == WARN and "slower than the camera" in most.message


def test_paused_ingest_is_ok_and_says_how_to_resume():
    status = run(DiagnosticsMonitor(), [healthy(t, paused=True, dropped_tf=10 * t) for t in range(0, 4)])["ingest"]
    assert status.level == OK and "paused" in status.message and "resume" in status.message


def test_memory_at_capacity_warns():
    status = run(DiagnosticsMonitor(), [healthy(t, points=99_000) for t in range(0, 3)])["memory"]
    assert status.level == WARN and "max_points" in status.message
    unbounded = run(DiagnosticsMonitor(), [healthy(t, points=10 ** 9, max_points=0) for t in range(0, 3)])["memory"]
    assert unbounded.level == OK and dict(unbounded.values)["max points"] == "unbounded"


def test_goal_states():
    assert run(DiagnosticsMonitor(), [healthy(0, goal_running=True)])["goals"].message == "imagining a trajectory"
    failed = run(DiagnosticsMonitor(), [healthy(0, last_goal_status="aborted", last_goal_message="rollout failed (OOM)",
                                                goals_done=1)])["goals"]
    assert failed.level == WARN and "OOM" in failed.message
    preempted = run(DiagnosticsMonitor(), [healthy(0, last_goal_status="aborted",
                                                   last_goal_message="preempted by a newer goal")])["goals"]
    assert preempted.level == OK
    done = run(DiagnosticsMonitor(), [healthy(0, last_goal_status="succeeded", seconds_per_frame=0.25)])["goals"]
    assert done.level == OK and "0.250 s/frame" in done.message


def test_the_window_bounds_the_history():
    monitor = DiagnosticsMonitor(window=2.0)
    for t in range(100):
        monitor.update(healthy(float(t)))
    assert len(monitor._history) <= 4
