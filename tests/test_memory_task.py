"""The memory task: earlier pass + out-of-view excursions, the needs-memory measure, the training dataset."""

import math

import pytest
import torch

from mirage.camera import intrinsics_from_fov, look_at
from mirage.data.excursions import VARIANTS, plan_excursion
from mirage.data.memory_task import (MemoryTaskDataset, collate_memory_tasks, make_memory_task, returning_frames,
                                     room_seed)
from mirage.data.synthetic import EVAL_SEED_OFFSET
from mirage.data.visibility import memory_need
from mirage.scenes import Scene

SIZE = (16, 24)


@pytest.fixture(scope="module")
def tasks():
    return {v: make_memory_task(EVAL_SEED_OFFSET + 3, SIZE, v, 33, 12) for v in VARIANTS}


def test_same_seed_same_task_and_other_seed_other_room(tasks):
    again = make_memory_task(EVAL_SEED_OFFSET + 3, SIZE, "turn_out_back", 33, 12)
    first = tasks["turn_out_back"]
    for name in ("rgb", "depth", "cam_to_world", "intrinsics", "dynamic"):
        assert torch.equal(getattr(first.target, name), getattr(again.target, name))
        assert torch.equal(getattr(first.earlier, name), getattr(again.earlier, name))
    assert torch.equal(first.needs_memory_mask, again.needs_memory_mask) and first.name == again.name
    other = make_memory_task(EVAL_SEED_OFFSET + 4, SIZE, "turn_out_back", 33, 12)
    assert not torch.equal(first.target.rgb, other.target.rgb)


@pytest.mark.parametrize("variant", VARIANTS)
def test_target_is_1_plus_4k_frames_and_returns_to_the_earlier_pass_end(tasks, variant):
    task = tasks[variant]
    T = task.target.num_frames
    assert T == 33 and (T - 1) % 4 == 0 and task.earlier.num_frames == 12
    c2w = task.target.cam_to_world
    assert torch.allclose(c2w, c2w.flip(0), atol=1e-6)  # out and back: frame T-1-i has the pose of frame i
    assert torch.allclose(c2w[-1], c2w[0]) and torch.allclose(c2w[0], task.earlier.cam_to_world[-1])
    assert torch.equal(task.target.rgb[0], task.earlier.rgb[-1])  # the context is the earlier pass's last frame
    assert task.context_frames == (0,) and task.returning_frames == tuple(range(17, 33))
    assert set(task.scored_frames) <= set(task.returning_frames) and task.scored_frames
    assert tuple(task.target.intrinsics.shape) == (33, 3, 3) and task.target.image_size == SIZE
    assert torch.allclose(task.target.intrinsics[0], Scene.random(0).default_intrinsics(*SIZE))
    assert task.target.depth.shape == (33, *SIZE) and task.target.dynamic.dtype == torch.bool
    # the reported share is the mean of the returning frames' shares, weighted by their valid pixels
    assert task.accepted and task.needs_memory >= 0.3 and 0.0 <= task.unseen < 0.5


def test_turn_excursion_leaves_the_view_by_90_degrees_or_more():
    scene = Scene.random(7)
    path = plan_excursion(scene, "turn_out_back", 33, 12, seed=1)
    forward = path.target[:, :3, 2]
    angle = torch.rad2deg(torch.acos((forward[0] * forward[16]).sum().clamp(-1, 1)))
    assert angle >= 90.0 - 1e-3 and abs(path.info["turn_deg"]) >= 100.0
    path = plan_excursion(scene, "walk_and_turn", 33, 12, seed=1)
    assert abs(path.info["turn_deg"]) >= 90.0 and path.info["walk_m"] > 0.5
    with pytest.raises(ValueError, match="variant"):
        plan_excursion(scene, "teleport", 33, 12, seed=1)


def _plane_view(eye, target, K, depth=3.0, size=(12, 16)):
    return look_at(eye, target), torch.full(size, depth)


def test_needs_memory_known_answers_on_constructed_cameras():
    H, W = 12, 16
    K = intrinsics_from_fov(75.0, H, W)
    ahead, ahead_depth = _plane_view((0, 0, 1.5), (1, 0, 1.5), K)
    behind, behind_depth = _plane_view((0, 0, 1.5), (-1, 0, 1.5), K)
    one = lambda x: x[None]  # noqa: E731
    # Turned by 180 degrees: nothing of the context is in view; the earlier pass saw it all.
    need = memory_need(one(behind_depth), one(K), one(behind), one(ahead_depth), one(K), one(ahead),
                       one(behind_depth), one(K), one(behind))
    assert need.fraction(need.needs_memory) == 1.0 and need.fraction(need.unseen) == 0.0
    # ... and an earlier pass that only looked ahead saw none of it.
    need = memory_need(one(behind_depth), one(K), one(behind), one(ahead_depth), one(K), one(ahead),
                       one(ahead_depth), one(K), one(ahead))
    assert need.fraction(need.needs_memory) == 0.0 and need.fraction(need.unseen) == 1.0
    # Facing a wall 3 m away and stepping sideways by half the view's width: exactly half the columns are new.
    shift = 3.0 * W / (2 * float(K[0, 0]))
    moved = look_at((shift, 0, 1.5), (shift, 1, 1.5))
    front = look_at((0, 0, 1.5), (0, 1, 1.5))
    depth = torch.full((H, W), 3.0)
    need = memory_need(one(depth), one(K), one(moved), one(depth), one(K), one(front), one(depth), one(K), one(moved))
    assert need.fraction(need.needs_memory) == pytest.approx(0.5)
    x_world_right = moved[:3, 0]  # the camera's x axis: the new columns are on the side it moved to
    assert x_world_right[0] > 0 and need.needs_memory[0, :, W // 2:].all()
    assert not need.needs_memory[0, :, : W // 2].any()
    # Invalid depth (sky) counts in neither class and not in the denominator.
    depth_sky = depth.clone()
    depth_sky[:, W // 2:] = float("inf")
    need = memory_need(one(depth_sky), one(K), one(moved), one(depth), one(K), one(front), one(depth), one(K),
                       one(moved))
    assert need.fraction(need.needs_memory) == 0.0 and int(need.valid.sum()) == H * W // 2


def test_needs_memory_is_zero_at_the_context_pose_on_a_rendered_room():
    scene = Scene.random(11)
    K = scene.default_intrinsics(*SIZE)
    c2w = scene.trajectory("turn", 3)
    frames = scene.render_batch(K, c2w, *SIZE)
    Ks = K.expand(3, 3, 3)
    need = memory_need(frames.depth[:1], Ks[:1], c2w[:1], frames.depth[:1], Ks[:1], c2w[:1], frames.depth, Ks, c2w)
    assert need.fraction(need.needs_memory) == 0.0 and need.fraction(need.unseen) == 0.0


def test_rejection_resamples_until_the_threshold_and_keeps_the_best():
    easy = make_memory_task(5, SIZE, "walk_past_occluder", 17, 8, min_needs_memory=0.0)
    assert easy.attempts == 1 and easy.accepted
    hard = make_memory_task(5, SIZE, "walk_past_occluder", 17, 8, min_needs_memory=1.0, max_attempts=3)
    assert hard.attempts <= 3 and not hard.accepted and hard.needs_memory >= easy.needs_memory
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        make_memory_task(5, SIZE, "turn_out_back", 31, 8)
    with pytest.raises(ValueError, match="min_needs_memory"):
        make_memory_task(5, SIZE, "turn_out_back", 17, 8, min_needs_memory=2.0)


def test_exact_check_agrees_with_the_coarse_one():
    fine = make_memory_task(21, (32, 48), "walk_and_turn", 17, 8, check_stride=1, min_needs_memory=0.0)
    coarse = make_memory_task(21, (32, 48), "walk_and_turn", 17, 8, check_stride=4, min_needs_memory=0.0)
    assert abs(fine.needs_memory - coarse.needs_memory) < 0.08


def test_dataset_items_rooms_and_splits():
    train = MemoryTaskDataset(4, SIZE, split="train", num_frames=9, earlier_frames=4)
    held = MemoryTaskDataset(4, SIZE, split="heldout", num_frames=9, earlier_frames=4)
    train_rooms = {room_seed("train", i) for i in range(len(train))}
    assert train_rooms.isdisjoint({room_seed("heldout", i) for i in range(len(held))})
    assert max(train_rooms) < EVAL_SEED_OFFSET <= room_seed("heldout", 0)
    item = train[2]
    assert item.room_seed == 2 and item.variant == VARIANTS[2] and item.name == train.item_name(2)
    assert torch.equal(train[2].target.rgb, item.target.rgb)  # resumable: same index, same item
    with pytest.raises(ValueError, match="held-out"):
        MemoryTaskDataset(10, SIZE, split="train", first_room=EVAL_SEED_OFFSET - 5)
    with pytest.raises(IndexError):
        train[4]
    with pytest.raises(ValueError, match="unknown keyword"):
        MemoryTaskDataset(2, SIZE, speed=3)
    batch = collate_memory_tasks([train[0], train[1]])
    assert batch["target"]["rgb"].shape == (2, 9, 3, *SIZE) and batch["earlier"]["rgb"].shape == (2, 4, 3, *SIZE)
    assert batch["context_frames"] == (0,) and batch["needs_memory_mask"].shape == (2, 9, *SIZE)
    sources = item.memory_sources()
    assert sources["rgb"].shape == (4, 3, *SIZE) and sources["exclude"].dtype == torch.bool
    assert torch.equal(sources["exclude"], ~torch.isfinite(item.earlier.depth) | item.earlier.dynamic)


def test_moving_objects_never_need_memory():
    task = make_memory_task(10, SIZE, "turn_out_back", 9, 6, num_objects=4, num_dynamic=2, min_needs_memory=0.0,
                            check_stride=1)
    assert task.target.dynamic.sum() > 100 and task.needs_memory_mask.any()
    assert not (task.needs_memory_mask & task.target.dynamic).any()
    assert not math.isnan(task.needs_memory)
    assert returning_frames(9) == (5, 6, 7, 8)
