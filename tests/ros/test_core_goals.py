"""mirage_ros.core.goals without a ROS graph: padding, coverage, and GoalRunner's policy, cancel, feedback, errors.

The world model is a stand-in whose rollout streams frames chunk by chunk and waits on a gate between chunks
(checking the cancel token like the real one does between denoising steps), so every interleaving is forced,
not timed. ``test_node.py`` runs the same paths over real rclpy with the real tiny model.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mirage.camera import intrinsics_from_fov, look_at, make_intrinsics, matrix_to_quat
from mirage.frames import fit_intrinsics
from mirage.memory import LatentSpatialMemory
from mirage.pipeline import RolloutCancelled, RolloutProgress, RolloutResult
from mirage_ros.core.goals import (ABORTED, CANCELED, SUCCEEDED, GoalRunner, coverage_at_poses, pad_trajectory,
                                   padded_length)
from mirage_ros.core.ingest import CameraModel, CameraTable
from mirage_ros.core.memory_holder import MemoryBusy, MemoryHolder

WAIT = 10.0
H, W = 32, 48


class GatedModel:
    """rollout(): frame 0 at once, then chunks of 4 frames, each after ``gate`` opens (or cancel fires)."""

    height, width = H, W
    temporal_stride = 4
    latent_size = (H // 16, W // 16)

    def __init__(self, fail: Exception | None = None, slow_cancel: bool = False):
        self.slow_cancel = slow_cancel  # True: a cancel is seen only once the gate opens (a long denoising step)
        self.gate = threading.Event()
        self.started = threading.Event()
        self.calls: list[dict] = []
        self.fail = fail

    def rollout(self, memory, K, c2w, *, prompt, seed, progress, cancel, num_inference_steps, on_frames):
        self.calls.append(dict(memory=memory, K=K, c2w=c2w, prompt=prompt, seed=seed, steps=num_inference_steps))
        if self.fail is not None:
            raise self.fail
        # the real rollout writes each chunk it generates into the memory it is given: so does this one
        memory.insert(torch.full((4, H // 16, W // 16), 9.0), torch.full((H, W), 5.0), K[0], c2w[-1])
        L = c2w.shape[0]
        frames = (np.arange(L, dtype=np.uint8)[:, None, None, None] * np.ones((1, H, W, 3), np.uint8)).copy()
        on_frames(0, frames[:1])
        self.started.set()
        chunks = (L - 1) // 4
        for k, start in enumerate(range(1, L, 4)):
            while not self.gate.wait(0.005):
                if cancel.cancelled and not self.slow_cancel:
                    raise RolloutCancelled("cancelled")
            if cancel.cancelled:
                raise RolloutCancelled("cancelled")
            progress(RolloutProgress(start + 4, L, k + 1, chunks, 1, 1, 0.0))
            on_frames(start, frames[start:start + 4])
        return RolloutResult(frames=frames, seconds_per_frame=0.25)


def pose_stamped(T, frame="odom", sec=0):
    t, q = T[:3, 3], matrix_to_quat(T[:3, :3])
    return SimpleNamespace(
        header=SimpleNamespace(frame_id=frame, stamp=SimpleNamespace(sec=sec, nanosec=0)),
        pose=SimpleNamespace(position=SimpleNamespace(x=t[0], y=t[1], z=t[2]),
                             orientation=SimpleNamespace(x=q[0], y=q[1], z=q[2], w=q[3])))


def goal(num_frames=6, poses=2, fps=5.0, sec=3):
    keys = [look_at([0.2 * i, 0, 0], [0.2 * i + 1, 0, 0]).double().numpy() for i in range(poses)]
    return SimpleNamespace(poses=[pose_stamped(T, sec=sec) for T in keys], body_frame="", fps=fps,
                           num_frames=num_frames, prompt="a room", seed=7)


SEEN = look_at([0, 0, 0], [1, 0, 0])  # the pose the seeded memory was observed from


def make_runner(model=None, policy="reject", cameras=None, seed=True, **kw):
    model = model or GatedModel()
    holder = MemoryHolder(LatentSpatialMemory(channels=4, voxel_size=None))
    if seed:  # one observed view (the fallback camera), so goals have something to imagine from
        holder.memory.insert(torch.ones(4, H // 16, W // 16), torch.full((H, W), 2.0), intrinsics_from_fov(75.0, H, W),
                             SEEN)
    runner = GoalRunner(model, holder, cameras or CameraTable(), lambda target, source, t: np.eye(4),
                        world_frame="odom", policy=policy, fps=10.0, max_frames=50, steps=3, now_ns=lambda: 42, **kw)
    return runner, model, holder


class Run(threading.Thread):
    """runner.run(...) in a thread (as the action server's execute callback is), collecting what it reports."""

    def __init__(self, runner, g, key=None, cancel_requested=None):
        super().__init__(daemon=True)
        self.runner, self.goal, self.key = runner, g, key if key is not None else object()
        self.cancel_requested = cancel_requested
        self.feedback, self.batches, self.plans, self.outcome = [], [], [], None

    def run(self):
        self.outcome = self.runner.run(self.key, self.goal, cancel_requested=self.cancel_requested,
                                       feedback=self.feedback.append, on_frames=self.batches.append,
                                       on_plan=self.plans.append)

    def result(self):
        self.join(WAIT)
        assert not self.is_alive(), "the goal did not end"
        return self.outcome


# ------------------------------------------------------------------------------------------ padding, coverage
def test_padding_to_one_plus_four_k_holds_the_last_pose():
    assert [padded_length(n, 4) for n in (1, 2, 5, 6, 9, 33, 34)] == [1, 5, 5, 9, 9, 33, 37]
    with pytest.raises(ValueError):
        padded_length(0, 4)
    c2w = torch.stack([look_at([i, 0, 0], [i + 1, 0, 0]) for i in range(6)])
    padded = pad_trajectory(c2w, 4)
    assert padded.shape == (9, 4, 4) and torch.equal(padded[:6], c2w) and (padded[6:] == c2w[-1]).all()
    assert pad_trajectory(c2w[:5], 4) is not None and pad_trajectory(c2w[:5], 4).shape == (5, 4, 4)


def test_coverage_matches_per_view_reads_and_depth():
    memory = LatentSpatialMemory(channels=4, voxel_size=None)
    K = make_intrinsics(40.0, 40.0, W / 2, H / 2)
    seen = look_at([0, 0, 0], [1, 0, 0])
    memory.insert(torch.ones(4, H // 16, W // 16), torch.full((H, W), 2.0), K, seen)
    away = look_at([0, 0, 0], [-1, 0, 0])
    fraction, depth = coverage_at_poses(memory, K, torch.stack([seen, away]), (H, W), (H // 16, W // 16))
    for i, T in enumerate((seen, away)):  # the old per-pose computation
        readout = memory.read(K, T, (H, W), (H // 16, W // 16))
        assert fraction[i].item() == pytest.approx(readout.mask.float().mean().item())
    assert fraction[0] == 1.0 and fraction[1] == 0.0
    assert depth[0].item() == pytest.approx(2.0, rel=1e-4) and depth[1] == 0.0


# ------------------------------------------------------------------------------------------ run
def test_goal_is_padded_streamed_trimmed_and_stamped():
    runner, model, holder = make_runner()
    model.gate.set()
    assert runner.admit()
    job = Run(runner, goal(num_frames=6))
    job.start()
    out = job.result()
    assert out.status == SUCCEEDED and "imagined 6 frames" in out.message, out.message
    call = model.calls[0]
    assert call["c2w"].shape == (9, 4, 4) and torch.equal(call["c2w"][6:], call["c2w"][5:6].expand(3, 4, 4))
    assert call["memory"] is not holder.memory  # a scratch copy
    assert call["steps"] == 3 and call["seed"] == 7 and call["prompt"] == "a room"
    assert out.frames.shape == (6, H, W, 3) and [int(f[0, 0, 0]) for f in out.frames] == list(range(6))
    assert sum(len(b.frames) for b in job.batches) == 6  # padding frames are never published
    np.testing.assert_array_equal(np.concatenate([b.stamps for b in job.batches]), out.stamps)
    assert out.stamps[0] == 3_000_000_000 and np.all(np.diff(out.stamps) == 200_000_000)  # fps 5 from the goal
    assert job.feedback and all(f.frames_total == 6 and f.frames_done <= 6 for f in job.feedback)
    assert job.feedback[-1].frames_done == 6 and job.feedback[-1].chunks_done == 2
    assert not runner.busy


def test_goal_intrinsics_come_from_the_recorded_camera():
    cameras = CameraTable()
    runner, model, _ = make_runner(cameras=cameras)
    model.gate.set()
    _, K_default = runner.camera()
    torch.testing.assert_close(K_default, intrinsics_from_fov(75.0, H, W))
    K_wrist = make_intrinsics(300.0, 300.0, 160.0, 120.0)
    K_front = make_intrinsics(500.0, 500.0, 320.0, 240.0)
    cameras.record(CameraModel("wrist", K_wrist, (240, 320), 1))
    cameras.record(CameraModel("front", K_front, (480, 640), 2))
    assert runner.camera("wrist")[0] == "wrist"
    torch.testing.assert_close(runner.camera("wrist")[1], fit_intrinsics(K_wrist, (240, 320), (H, W)))
    assert runner.admit()
    job = Run(runner, goal(num_frames=1, poses=1))
    job.start()
    out = job.result()
    expected = fit_intrinsics(K_front, (480, 640), (H, W))  # the camera posed last
    torch.testing.assert_close(out.intrinsics, expected)
    torch.testing.assert_close(model.calls[0]["K"], expected.expand(1, 3, 3))


def test_reject_policy_refuses_while_running_and_serves_afterwards():
    runner, model, holder = make_runner(policy="reject")
    assert runner.admit()
    first = Run(runner, goal())
    first.start()
    assert model.started.wait(WAIT)
    assert runner.busy and not runner.admit()
    with pytest.raises(MemoryBusy, match="a goal"):  # the goal holds the memory's writer lock
        holder.clear(timeout=0.05)
    model.gate.set()
    assert first.result().status == SUCCEEDED
    assert runner.admit()


def test_preempt_policy_stops_the_running_and_the_waiting_goal():
    runner, model, _ = make_runner(model=GatedModel(slow_cancel=True), policy="preempt")
    assert runner.admit()
    first = Run(runner, goal(num_frames=9))
    first.start()
    assert model.started.wait(WAIT)
    assert runner.admit()
    second = Run(runner, goal(num_frames=5))
    second.start()
    LocalWait.until(lambda: len(runner._goals) == 2)
    assert runner.admit()  # a third goal preempts the second while it still waits for the memory
    third = Run(runner, goal(num_frames=5))
    third.start()
    LocalWait.until(lambda: len(runner._goals) == 3)
    model.gate.set()  # the first goal reaches its next step and sees the preemption
    out1, out2, out3 = first.result(), second.result(), third.result()
    assert out1.status == ABORTED and out1.message == "preempted by a newer goal"
    assert out2.status == ABORTED and "before it started" in out2.message
    assert out3.status == SUCCEEDED and len(out3.frames) == 5
    assert len(model.calls) == 2 and not runner.busy


def test_cancel_running_waiting_and_before_start():
    runner, model, _ = make_runner(policy="preempt")
    assert runner.admit()
    key = object()
    job = Run(runner, goal(), key=key)
    job.start()
    assert model.started.wait(WAIT)
    assert not runner.cancel(object())  # an unknown goal
    assert runner.cancel(key)
    out = job.result()
    assert out.status == CANCELED and out.message == "canceled" and len(out.frames) == 0
    assert runner.admit()
    early = Run(runner, goal(), cancel_requested=lambda: True)  # the client canceled before it started
    early.start()
    assert early.result().status == CANCELED and early.result().message == "canceled before it started"
    assert len(model.calls) == 1


def test_bad_goals_and_failed_rollouts_abort_with_the_reason_and_the_runner_keeps_serving():
    runner, model, holder = make_runner()
    model.gate.set()
    not_unit = goal()
    not_unit.poses[1].pose.orientation.w = 3.0
    for bad, word in ((goal(poses=0), "no poses"), (goal(num_frames=51), "max_goal_frames"), (not_unit, "unit")):
        assert runner.admit()
        job = Run(runner, bad)
        job.start()
        out = job.result()
        assert out.status == ABORTED and out.message.startswith("bad goal") and word in out.message, out.message
    failing, _, _ = make_runner(model=GatedModel(fail=torch.OutOfMemoryError("CUDA out of memory")))
    assert failing.admit()
    job = Run(failing, goal())
    job.start()
    out = job.result()
    assert out.status == ABORTED and "rollout failed (OutOfMemoryError)" in out.message
    assert not failing.busy and failing.admit()
    assert not model.calls and len(holder.memory) == (H // 16) * (W // 16)  # the seeded view, untouched


def test_policy_is_validated():
    runner, _, _ = make_runner()
    runner.policy = "preempt"
    with pytest.raises(ValueError, match="goal_policy"):
        runner.policy = "queue"
    assert runner.policy == "preempt"


def test_query_coverage_resolves_poses_and_reads_without_the_lock():
    runner, model, holder = make_runner(seed=False)
    K = runner.camera()[1]
    seen = look_at([0, 0, 0], [1, 0, 0])
    holder.memory.insert(torch.ones(4, H // 16, W // 16), torch.full((H, W), 3.0), K, seen)
    with holder.exclusive("a test writer"):  # a reader does not wait for a writer
        done = []
        reader = threading.Thread(target=lambda: done.append(runner.query_coverage(
            [pose_stamped(seen.double().numpy()), pose_stamped(look_at([0, 0, 0], [-1, 0, 0]).double().numpy())])))
        reader.start()
        reader.join(WAIT)
    (fraction, depth), = done
    assert fraction[0] > 0.5 and fraction[1] == 0.0 and depth[0] == pytest.approx(3.0, rel=1e-3)


# ------------------------------------------------------------------------------------------ imagination apart
def _run_goal(runner, g):
    assert runner.admit()
    job = Run(runner, g)
    job.start()
    return job, job.result()


def test_imagination_never_writes_the_observed_memory(tmp_path):
    runner, model, holder = make_runner()
    model.gate.set()
    K = runner.camera()[1]
    views = torch.stack([SEEN, look_at([0, 0, 0], [-1, 0, 0])])
    before = holder.memory
    points, version = before.points.clone(), holder.version()
    coverage = before.coverage(K, views, (H, W), model.latent_size)
    before.save(tmp_path / "before.safetensors")
    _, out = _run_goal(runner, goal(num_frames=6))
    assert out.status == SUCCEEDED and not out.kept_imagined, out.message
    assert len(model.calls[0]["memory"]) > len(points)  # the rollout did write: into its scratch copy
    after = holder.memory
    assert after is before and holder.version() == version and torch.equal(after.points, points)
    assert torch.equal(after.coverage(K, views, (H, W), model.latent_size), coverage)
    after.save(tmp_path / "after.safetensors")
    assert saved_content(tmp_path / "after.safetensors") == saved_content(tmp_path / "before.safetensors")


def saved_content(path):
    """(header as parsed JSON, tensor bytes) of a .safetensors file: the bytes that carry content. (safetensors writes
    its metadata map in hash order, so two saves of one memory may order the header's keys differently.)"""
    import json
    import struct

    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + size]), raw[8 + size:]


def test_keep_imagined_by_goal_field_or_runner_setting():
    runner, model, holder = make_runner()
    model.gate.set()
    n = len(holder.memory)
    kept = goal(num_frames=5)
    kept.keep_imagined = True
    _, out = _run_goal(runner, kept)
    assert out.status == SUCCEEDED and out.kept_imagined and "kept in the memory" in out.message
    assert holder.memory is model.calls[0]["memory"] and len(holder.memory) > n
    runner2, model2, holder2 = make_runner(keep_imagined=True)
    model2.gate.set()
    n2, version2 = len(holder2.memory), holder2.version()
    _, out = _run_goal(runner2, goal(num_frames=5))
    assert out.kept_imagined and len(holder2.memory) > n2 and holder2.version() != version2
    runner2.keep_imagined = False  # a setting between goals
    n3 = len(holder2.memory)
    _run_goal(runner2, goal(num_frames=5))
    assert len(holder2.memory) == n3


def test_a_goal_on_an_empty_memory_says_what_it_waits_on():
    runner, model, _ = make_runner(seed=False, waiting_on=lambda: "/rgb/image (0 msgs), /depth/image (0 msgs)")
    model.gate.set()
    _, out = _run_goal(runner, goal())
    assert out.status == ABORTED and not model.calls
    assert out.message == "no RGB-D keyframe inserted yet; waiting on /rgb/image (0 msgs), /depth/image (0 msgs)"


def test_frames_carry_their_pose_plan_and_observed_mask():
    runner, model, holder = make_runner(imagined_frame="imagined_cam")
    model.gate.set()
    seen, away = SEEN.double().numpy(), look_at([0, 0, 0], [-1, 0, 0]).double().numpy()
    g = SimpleNamespace(poses=[pose_stamped(seen), pose_stamped(away)], body_frame="", fps=4.0, num_frames=0,
                        prompt="", seed=0)
    job, out = _run_goal(runner, g)
    assert out.status == SUCCEEDED, out.message
    (plan,) = job.plans
    np.testing.assert_allclose(plan.cam_to_world, np.stack([seen, away]), atol=1e-6)
    np.testing.assert_array_equal(plan.stamps, out.stamps)
    assert out.frame_id == "imagined_cam" and {b.frame_id for b in job.batches} == {"imagined_cam"}
    poses = np.concatenate([b.cam_to_world for b in job.batches])
    masks = np.concatenate([b.masks for b in job.batches])
    np.testing.assert_allclose(poses, out.cam_to_world)
    np.testing.assert_allclose(out.cam_to_world, np.stack([seen, away]), atol=1e-6)
    assert masks.shape == (2, H, W) and masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 255}
    assert (masks[0] == 255).all() and (masks[1] == 0).all()  # seen from pose 0, nothing behind
    np.testing.assert_array_equal(masks, out.masks)
    # the mask is the memory's own visibility, upsampled from the latent grid
    vis, _ = holder.memory.visibility(runner.camera()[1], torch.from_numpy(np.stack([seen, away])).float(), (H, W),
                                      model.latent_size)
    np.testing.assert_array_equal(masks[:, ::16, ::16] == 255, vis.numpy())


def test_stamps_follow_increasing_pose_stamps_else_fps():
    runner, model, _ = make_runner()
    model.gate.set()
    stamped = goal(num_frames=5, poses=3)
    for i, ps in enumerate(stamped.poses):
        ps.header.stamp = SimpleNamespace(sec=10 + i, nanosec=0)
    _, out = _run_goal(runner, stamped)
    np.testing.assert_array_equal(out.stamps, [10_000_000_000, 10_500_000_000, 11_000_000_000, 11_500_000_000,
                                               12_000_000_000])
    _, out = _run_goal(runner, goal(num_frames=3, fps=2.0, sec=0))  # no stamps: now + i / fps
    np.testing.assert_array_equal(out.stamps, [42, 42 + 500_000_000, 42 + 1_000_000_000])


def test_a_goal_may_name_the_camera_to_imagine_with():
    cameras = CameraTable()
    runner, model, _ = make_runner(cameras=cameras)
    model.gate.set()
    wrist_goal = goal(num_frames=1, poses=1)
    wrist_goal.camera = "wrist"
    _, out = _run_goal(runner, wrist_goal)
    assert out.status == ABORTED and "camera 'wrist'" in out.message
    K_wrist = make_intrinsics(300.0, 300.0, 160.0, 120.0)
    cameras.record(CameraModel("wrist_color_optical_frame", K_wrist, (240, 320), 1, name="wrist"))
    cameras.record(CameraModel("front_color_optical_frame", make_intrinsics(500.0, 500.0, 320.0, 240.0),
                               (480, 640), 2, name="front"))
    _, out = _run_goal(runner, wrist_goal)
    assert out.status == SUCCEEDED, out.message
    torch.testing.assert_close(out.intrinsics, fit_intrinsics(K_wrist, (240, 320), (H, W)))
    assert runner.camera("wrist_color_optical_frame")[0] == "wrist_color_optical_frame"  # by frame too


class LocalWait:
    @staticmethod
    def until(predicate, timeout=WAIT):
        import time

        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "condition not reached"
            time.sleep(0.005)
