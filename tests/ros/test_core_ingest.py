"""mirage_ros.core.ingest without ROS: checks, pose at the stamp, the pose hold, keyframes per camera, the one observe
path, cameras."""

from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch

from mirage.camera import look_at, make_intrinsics
from mirage.frames import fit_intrinsics, fit_to_size
from mirage_ros import conversions as conv
from mirage_ros.core.ingest import FrameIngestor, FramePair, TransformUnavailable
from mirage_ros.core.memory_holder import MemoryHolder
from mirage_ros.core.tf_hold import PoseHold

SRC = (48, 80)  # camera images (H, W); the tiny model's frames are 64x96: a crop and an upscale


def _message(**fields):
    return lambda: NS(header=NS(stamp=NS(sec=0, nanosec=0), frame_id=""), data=b"", **fields)


IMAGE = _message(height=0, width=0, encoding="", is_bigendian=0, step=0)
INFO = _message(height=0, width=0, distortion_model="", d=[], k=[], r=[], p=[], binning_x=0, binning_y=0,
                roi=NS(x_offset=0, y_offset=0, width=0, height=0))


def pair(stamp_ns=1_000_000_000, frame="cam", K=None, rgb=None, depth=None, info_size=SRC, rgb_encoding="rgb8"):
    rng = np.random.default_rng(stamp_ns % 1000)
    rgb = rgb if rgb is not None else rng.integers(0, 256, (*SRC, 3), dtype=np.uint8)
    depth = depth if depth is not None else (1.5 + rng.random(SRC)).astype(np.float32)
    K = K if K is not None else make_intrinsics(60.0, 60.0, SRC[1] / 2, SRC[0] / 2)
    rgb_msg = conv.numpy_to_image(rgb, "rgb8", stamp=stamp_ns, frame_id=frame, msg_type=IMAGE)
    rgb_msg.encoding = rgb_encoding
    return FramePair(rgb_msg, conv.numpy_to_image(depth, "32FC1", stamp=stamp_ns, frame_id=frame, msg_type=IMAGE),
                     conv.intrinsics_to_camera_info(K, *info_size, stamp=stamp_ns, frame_id=frame, msg_type=INFO), 0.0)


@pytest.fixture(scope="module")
def world_model():
    from mirage.pipeline import MirageWorldModel

    return MirageWorldModel.from_pretrained("tiny", num_inference_steps=1)


def make(world_model, poses=None):
    poses = poses if poses is not None else {}
    holder = MemoryHolder(world_model.new_memory(voxel_size=None))

    def lookup(target, source, stamp_ns):
        if (source, stamp_ns) not in poses:
            raise LookupError(f"no {source} at {stamp_ns}")
        return poses[(source, stamp_ns)]

    return FrameIngestor(world_model, holder, lookup, "odom", keyframe_translation=0.1), holder, poses


def test_a_keyframe_goes_in_through_the_one_observe_path(world_model):
    ingest, holder, poses = make(world_model)
    c2w = look_at([0, 0, 1], [1, 0, 1]).double().numpy()
    poses[("cam", 1_000_000_000)] = c2w
    item = pair()
    assert ingest.process(item) is True
    # the same frame through the library by hand: fit_to_size, then world_model.observe
    reference = world_model.new_memory(voxel_size=None)
    rgb, depth = conv.image_to_rgb(item.rgb), conv.image_to_depth(item.depth)
    K, _ = conv.camera_info_to_intrinsics(item.info)
    world_model.observe(reference, *fit_to_size(rgb, depth, K, world_model.image_size), torch.from_numpy(c2w).float())
    assert len(holder.memory) == len(reference) > 0
    torch.testing.assert_close(holder.memory.points, reference.points)
    torch.testing.assert_close(holder.memory.features, reference.features)
    assert holder.keyframes == 1 and ingest.stats.keyframes == 1 and ingest.stats.latencies


def test_skipped_dropped_and_rejected_frames_leave_the_memory_alone(world_model):
    ingest, holder, poses = make(world_model)
    c2w = look_at([0, 0, 1], [1, 0, 1]).double().numpy()
    for stamp in (1, 2, 3):
        poses[("cam", stamp)] = c2w
    assert ingest.process(pair(stamp_ns=1))
    version = holder.version()
    assert ingest.process(pair(stamp_ns=2)) is False  # did not move: not a keyframe
    assert ingest.stats.frames_skipped == 1
    with pytest.raises(TransformUnavailable, match="no transform odom <- cam"):
        ingest.process(pair(stamp_ns=99))
    assert ingest.stats.frames_dropped_tf == 1
    for bad, word in ((dict(rgb_encoding="yuv422"), "rgb encoding"), (dict(info_size=(24, 40)), "camera_info"),
                      (dict(frame=""), "frame_id")):
        with pytest.raises(ValueError, match=word):
            ingest.process(pair(stamp_ns=3, **bad))
    ingest.reset()  # a keyframe candidate: its pixels are decoded and checked too
    with pytest.raises(ValueError, match="no valid pixel"):
        ingest.process(pair(stamp_ns=3, depth=np.zeros(SRC, np.float32)))
    assert ingest.stats.frames_rejected == 4 and ingest.stats.frames_in == 7
    assert holder.version() == version and holder.keyframes == 1


def test_each_camera_is_recorded_with_its_own_intrinsics(world_model):
    ingest, _, poses = make(world_model)
    front = make_intrinsics(60.0, 60.0, 40.0, 24.0)
    wrist = make_intrinsics(30.0, 31.0, 41.0, 23.0)
    poses[("front", 1)] = poses[("wrist", 2)] = look_at([0, 0, 1], [1, 0, 1]).double().numpy()
    assert ingest.camera_frame == "" and ingest.cameras.get() is None
    ingest.process(pair(stamp_ns=1, frame="front", K=front))
    ingest.process(pair(stamp_ns=2, frame="wrist", K=wrist))  # same pose: not a keyframe, still recorded
    with pytest.raises(TransformUnavailable):
        ingest.process(pair(stamp_ns=3, frame="unposed"))
    assert ingest.cameras.frames() == ["front", "wrist"] and ingest.camera_frame == "wrist"
    cam = ingest.cameras.get("front")
    assert cam.size == SRC and cam.stamp_ns == 1
    torch.testing.assert_close(cam.intrinsics, front)
    torch.testing.assert_close(ingest.cameras.get().intrinsics_at(world_model.image_size),
                               fit_intrinsics(wrist, SRC, world_model.image_size))


# ------------------------------------------------------------------------------------------ the pose hold

class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_hold_retries_oldest_first_expires_and_overflows():
    clock = Clock()
    hold = PoseHold(0.2, capacity=3, clock=clock)
    assert hold.enabled and not PoseHold(0.0).enabled
    for i in range(3):
        assert hold.add(i) is None
    assert hold.add(3) == 0 and hold.overflowed == 1 and len(hold) == 3  # the oldest makes room
    seen = []
    assert hold.retry(lambda item: seen.append(item) or item == 2) == [] and seen == [1, 2, 3]
    assert len(hold) == 2
    clock.t += 0.25
    assert hold.retry(lambda item: item == 3) == [1] and hold.expired == 1 and len(hold) == 0
    assert hold.held == 4 and len(hold.waits) == 2 and hold.waits[-1] == pytest.approx(0.25)
    with pytest.raises(ValueError):
        PoseHold(-1.0)


def test_a_set_waits_for_its_pose_and_goes_in_when_it_arrives(world_model):
    clock = Clock()
    ingest, holder, poses = make(world_model)
    ingest.hold, ingest.clock = PoseHold(0.2, clock=clock), clock
    item = pair(stamp_ns=5)
    item.arrival = clock.t
    assert ingest.offer(item) is None  # no pose yet: held, not dropped
    assert len(ingest.hold) == 1 and ingest.stats.frames_held == 1 and ingest.stats.frames_dropped_tf == 0
    assert ingest.retry_held() == [] and len(ingest.hold) == 1  # still nothing
    clock.t += 0.05
    poses[("cam", 5)] = look_at([0, 0, 1], [1, 0, 1]).double().numpy()  # the transform arrives
    assert ingest.retry_held() == [] and len(ingest.hold) == 0
    assert ingest.stats.keyframes == 1 and len(holder.memory) > 0
    assert ingest.stats.latencies[-1] == pytest.approx(0.05)  # arrival -> memory includes the wait


def test_a_set_whose_pose_never_comes_expires_and_is_counted(world_model):
    clock = Clock()
    ingest, holder, _ = make(world_model)
    ingest.hold = PoseHold(0.2, clock=clock)
    assert ingest.offer(pair(stamp_ns=7)) is None
    clock.t += 0.3
    (failed, exc), = ingest.retry_held()
    assert isinstance(exc, TransformUnavailable) and "within tf_hold=0.20 s" in str(exc)
    assert ingest.stats.frames_expired_tf == 1 and ingest.stats.frames_dropped_tf == 1 and len(holder.memory) == 0


def test_hopeless_stamps_and_no_hold_drop_at_once(world_model):
    ingest, _, _ = make(world_model)
    ingest.hold = PoseHold(0.2)
    ingest.retryable = lambda exc: False  # e.g. older than the TF cache
    with pytest.raises(TransformUnavailable):
        ingest.offer(pair(stamp_ns=8))
    ingest.hold, ingest.retryable = None, (lambda exc: True)
    with pytest.raises(TransformUnavailable):
        ingest.offer(pair(stamp_ns=9))
    assert ingest.stats.frames_dropped_tf == 2 and ingest.stats.frames_held == 0


def test_a_full_hold_names_the_set_it_pushed_out(world_model):
    ingest, _, _ = make(world_model)
    ingest.hold = PoseHold(5.0, capacity=1)
    assert ingest.offer(pair(stamp_ns=1_000_000_000)) is None
    with pytest.raises(TransformUnavailable, match="hold is full.*t=1.000 s"):
        ingest.offer(pair(stamp_ns=2_000_000_000))
    assert len(ingest.hold) == 1 and ingest.stats.frames_dropped_tf == 1


def test_each_camera_selects_its_own_keyframes(world_model):
    ingest, holder, poses = make(world_model)
    c2w = look_at([0, 0, 1], [1, 0, 1]).double().numpy()
    poses[("front", 1)] = poses[("wrist", 2)] = poses[("front", 3)] = c2w
    front, wrist, again = pair(stamp_ns=1, frame="front"), pair(stamp_ns=2, frame="wrist"), pair(stamp_ns=3,
                                                                                                  frame="front")
    front.camera, wrist.camera, again.camera = "front", "wrist", "front"
    assert ingest.offer(front) is True
    assert ingest.offer(wrist) is True  # its first frame: a keyframe of its own, though at the same pose
    assert ingest.offer(again) is False
    assert ingest.cameras.get("wrist").frame_id == "wrist" and ingest.cameras.names() == ["front", "wrist"]
    assert holder.keyframes == 2


def test_the_optical_frame_parameter_overrides_the_header(world_model):
    ingest, _, poses = make(world_model)
    poses[("wrist_optical", 4)] = np.eye(4)
    item = pair(stamp_ns=4, frame="")
    item.camera, item.optical_frame = "wrist", "wrist_optical"
    assert ingest.offer(item) is True
    assert ingest.cameras.get("wrist").frame_id == "wrist_optical"


def test_pause_holds_in_both_stages(world_model):
    """~/set_ingest_paused: a set offered while paused is counted and not posed; a keyframe candidate that queued
    for the encoder before the pause is not inserted either; after resume the next candidate goes in."""
    ingest, holder, poses = make(world_model)
    queued = []
    ingest.encoder = lambda candidate, camera: queued.append(candidate)
    c2w = look_at([0, 0, 1], [1, 0, 1]).double().numpy()
    poses[("cam", 1)] = poses[("cam", 2)] = c2w
    assert ingest.offer(pair(stamp_ns=1)) is None and len(queued) == 1  # a candidate, waiting for the encoder
    ingest.paused = True
    assert ingest.offer(pair(stamp_ns=2)) is False and len(queued) == 1
    assert ingest.encode(queued.pop()) is False
    assert ingest.stats.frames_paused == 2 and ingest.stats.frames_posed == 1 and len(holder.memory) == 0
    ingest.paused = False
    assert ingest.offer(pair(stamp_ns=2)) is None and ingest.encode(queued.pop()) is True
    assert ingest.stats.keyframes == 1 and len(holder.memory) > 0


def test_every_stage_of_a_keyframe_is_timed_and_they_sum_to_its_latency(world_model):
    """A clock that advances 1 ms a read: each stage gets its own duration and they add up to the latency (the
    bench's table explains the latency it prints)."""
    from mirage_ros.core.stage_times import SET_STAGES, STAGES

    ingest, holder, poses = make(world_model)
    ticks = iter(range(1, 10_000))
    ingest.clock = lambda: next(ticks) * 1e-3
    c2w = look_at([0, 0, 1], [1, 0, 1]).double().numpy()
    poses[("cam", 1_000_000_000)] = c2w
    poses[("cam", 2_000_000_000)] = c2w  # the same pose again: posed, not a keyframe
    assert ingest.process(pair()) is True
    assert ingest.process(pair(stamp_ns=2_000_000_000)) is False
    keyframe = ingest.stats.keyframe_stages.summary()
    assert list(keyframe) == list(STAGES)
    assert all(n == 1 and 0 <= p50 for n, p50, _ in keyframe.values())
    assert sum(p50 for _, p50, _ in keyframe.values()) == pytest.approx(ingest.stats.latencies[0], abs=1e-9)
    every_set = ingest.stats.set_stages.summary()
    assert list(every_set) == list(SET_STAGES) and all(n == 2 for n, _, _ in every_set.values())


def test_fit_backends_insert_the_same_points(world_model):
    """The node's default (cv2 for a shrinking crop) and the torch path insert the same points: depth is the same
    nearest gather either way; only the colour differs, as far as tests/test_frames.py bounds it."""
    c2w = look_at([0, 0, 1], [1, 0, 1]).double().numpy()
    memories = {}
    for backend in ("cv2", "torch"):
        ingest, holder, poses = make(world_model)
        ingest.fit_backend = backend
        poses[("cam", 1_000_000_000)] = c2w
        rng = np.random.default_rng(5)
        big = pair(K=make_intrinsics(200.0, 200.0, 160.0, 120.0), info_size=(240, 320),
                   rgb=rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
                   depth=(1.5 + rng.random((240, 320))).astype(np.float32))
        assert ingest.process(big) is True
        memories[backend] = holder.memory
    torch.testing.assert_close(memories["cv2"].points, memories["torch"].points)  # depth is identical (nearest)
    assert memories["cv2"].features.shape == memories["torch"].features.shape
