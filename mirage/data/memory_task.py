"""The memory task: an earlier pass through a fresh room seeds the memory, then a closed loop leaves the view.

Each item (:class:`MemoryTask`) is one procedural room (:class:`mirage.scenes.Scene`, seeded by the item) with

* ``earlier``: N RGB-D frames with cameras, a look-around walk (:func:`mirage.data.excursions.earlier_pass`):
  what a robot saw on an earlier visit. These frames seed the memory, nothing else does;
* ``target``: a T = 1 + 4k frame out-and-back clip (frame ``T-1-i`` has the pose of frame ``i``) that starts at
  the earlier pass's last pose and goes on an excursion out of view (:data:`VARIANTS`: a 100-180 degree turn, a
  walk with a 90-150 degree turn, a walk past an occluder) and back. Its only context is frame 0
  (``context_frames = (0,)``), the earlier pass's last frame;
* ground-truth depth, dynamic masks and cameras for every frame, intrinsics at the requested image size.

**Needs memory, measured** (:mod:`mirage.data.visibility`): a target pixel needs memory when its static surface
point is not seen by the context frame but is seen by some earlier-pass frame. ``frame_needs_memory[t]`` is the
share of frame t's valid static pixels that do; ``needs_memory`` the share over the *returning frames*, the
frames after the turning point ``(T-1)/2`` (:func:`returning_frames`). A drawn path whose ``needs_memory``
is below ``min_needs_memory`` is rejected and another path is drawn in the same room (up to ``max_attempts``;
after that the best attempt is kept with ``accepted = False``). The check runs at ``1 / check_stride`` of the
image size (the needs-memory mask is upsampled, nearest, to the image size); ``check_stride=1`` is exact.

**Scored frames** (what :func:`mirage.eval.closed_loop.memory_frame_metrics` averages): the returning frames
whose ``frame_needs_memory`` is at least ``min_frame_fraction``, never a context frame.

Rooms: item ``i`` of a :class:`MemoryTaskDataset` is room ``base + first_room + i`` with ``base`` 0 for the
training split and :data:`mirage.data.synthetic.EVAL_SEED_OFFSET` for held-out rooms; the training range must
end below the offset, so the splits never share a room. Everything is deterministic in the item index, so a
resumed training run sees the same item at the same step. Static rooms render each distinct pose once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from mirage.camera import valid_depth_mask
from mirage.data.clip import Clip, collate_clips
from mirage.data.excursions import VARIANTS, ExcursionPath, plan_excursion
from mirage.data.synthetic import EVAL_SEED_OFFSET
from mirage.data.visibility import MemoryNeed, memory_need

__all__ = ["VARIANTS", "MIN_NEEDS_MEMORY", "MIN_FRAME_NEEDS_MEMORY", "MemoryTask", "returning_frames",
           "make_memory_task", "recorded_memory_task", "MemoryTaskDataset", "collate_memory_tasks", "room_seed"]

MIN_NEEDS_MEMORY = 0.3         # default rejection threshold on ``needs_memory`` (returning frames)
MIN_FRAME_NEEDS_MEMORY = 0.1   # default: a returning frame is scored when at least this share needs memory
SPLITS = ("train", "heldout")


def returning_frames(num_frames: int) -> tuple[int, ...]:
    """Frames after the turning point ``(T-1)/2`` of an out-and-back clip of T (odd) frames."""
    if num_frames < 3 or num_frames % 2 == 0:
        raise ValueError(f"an out-and-back clip needs an odd number of frames >= 3, got {num_frames}")
    return tuple(range((num_frames - 1) // 2 + 1, num_frames))


@dataclass
class MemoryTask:
    """One item of the memory task (see the module docstring).

    earlier: N-frame :class:`Clip` (memory sources). target: T-frame out-and-back :class:`Clip` whose frame 0
    has the pose of ``earlier``'s last frame. context_frames: target frames given to the model ((0,)).
    scored_frames: target frames the memory metrics average. frame_needs_memory, frame_unseen: (T,) float32
    shares of each target frame's valid static pixels. needs_memory_mask: (T, H, W) bool. needs_memory, unseen:
    shares over the returning frames. accepted: needs_memory reached the threshold within the attempts.
    """

    earlier: Clip
    target: Clip
    context_frames: tuple[int, ...]
    scored_frames: tuple[int, ...]
    frame_needs_memory: torch.Tensor
    frame_unseen: torch.Tensor
    needs_memory_mask: torch.Tensor
    needs_memory: float
    unseen: float
    variant: str
    room_seed: int
    attempts: int
    accepted: bool
    info: dict = field(default_factory=dict)
    name: str = ""

    @property
    def returning_frames(self) -> tuple[int, ...]:
        return returning_frames(self.target.num_frames)

    def memory_sources(self) -> dict[str, torch.Tensor]:
        """The earlier pass as memory sources, the fields of an ``EncodedClip``'s ``source_*`` before encoding:
        rgb (N, 3, H, W), depth (N, H, W), exclude (N, H, W) bool (moving objects or invalid depth),
        intrinsics (N, 3, 3), cam_to_world (N, 4, 4)."""
        e = self.earlier
        exclude = ~valid_depth_mask(e.depth)
        if e.dynamic is not None:
            exclude |= e.dynamic
        return {"rgb": e.rgb, "depth": e.depth, "exclude": exclude, "intrinsics": e.intrinsics,
                "cam_to_world": e.cam_to_world}


def _render(scene, path: ExcursionPath, height: int, width: int, fps: float):
    """(earlier Frame, target Frame) at (height, width); a static room renders each distinct pose once."""
    N, T = path.earlier.shape[0], path.target.shape[0]
    K = scene.default_intrinsics(height, width)
    if scene.dynamic_objects:
        poses = torch.cat([path.earlier, path.target[1:]])
        frames = scene.render_batch(K, poses, height, width, times=torch.arange(N + T - 1, dtype=torch.float32) / fps)
        target_index = torch.arange(T) + N - 1
    else:
        m = (T + 1) // 2
        frames = scene.render_batch(K, torch.cat([path.earlier, path.target[1:m]]), height, width)
        target_index = N - 1 + torch.tensor([min(t, T - 1 - t) for t in range(T)])
    return frames[:N], frames[target_index], K


def _need(scene, path: ExcursionPath, height: int, width: int, fps: float, context: Sequence[int]) -> MemoryNeed:
    earlier, target, K = _render(scene, path, height, width, fps)
    ctx = torch.as_tensor(list(context), dtype=torch.long)
    T, N = target.depth.shape[0], earlier.depth.shape[0]
    # In a static room frame T-1-t is frame t (same pose, same image): classify the distinct poses only.
    mirror = None if scene.dynamic_objects else torch.tensor([min(t, T - 1 - t) for t in range(T)])
    own = target if mirror is None else target[: (T + 1) // 2]
    need = memory_need(own.depth, K.expand(own.depth.shape[0], 3, 3), own.cam_to_world,
                       target.depth[ctx], K.expand(len(ctx), 3, 3), target.cam_to_world[ctx],
                       earlier.depth, K.expand(N, 3, 3), earlier.cam_to_world,
                       own.dynamic, target.dynamic[ctx], earlier.dynamic)
    if mirror is None:
        return need
    return MemoryNeed(valid=need.valid[mirror], needs_memory=need.needs_memory[mirror], unseen=need.unseen[mirror])


def _as_clip(frames, K, name: str) -> Clip:
    n = frames.rgb.shape[0]
    return Clip(rgb=frames.rgb.float().clamp(0, 1), intrinsics=K.expand(n, 3, 3).clone(),
                cam_to_world=frames.cam_to_world.float(), depth=frames.depth.float(), dynamic=frames.dynamic.bool(),
                name=name)


def make_memory_task(room: int, image_size: Sequence[int], variant: str = "turn_out_back", num_frames: int = 33,
                     earlier_frames: int = 16, *, num_objects: int = 6, num_dynamic: int = 0, fps: float = 8.0,
                     min_needs_memory: float = MIN_NEEDS_MEMORY, min_frame_fraction: float = MIN_FRAME_NEEDS_MEMORY,
                     max_attempts: int = 8, check_stride: int = 4, trajectory_seed: int = 0,
                     name: str | None = None) -> MemoryTask:
    """Build the task of room seed ``room`` (deterministic in every argument); see the module docstring.

    image_size: (H, W). num_frames: target frames, 1 + 4k with k >= 2. earlier_frames: N >= 2.
    """
    from mirage.scenes import Scene

    H, W = int(image_size[0]), int(image_size[1])
    if num_frames < 9 or (num_frames - 1) % 4:
        raise ValueError(f"num_frames must be 1 + 4k with k >= 2 (9, 17, 33, ...), got {num_frames}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if max_attempts < 1 or check_stride < 1:
        raise ValueError(f"max_attempts and check_stride must be >= 1, got {max_attempts}, {check_stride}")
    if not (0.0 <= min_needs_memory <= 1.0 and 0.0 <= min_frame_fraction <= 1.0):
        raise ValueError(f"min_needs_memory and min_frame_fraction must be in [0, 1], got {min_needs_memory}, "
                         f"{min_frame_fraction}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    scene = Scene.random(int(room), num_objects=num_objects, num_dynamic=num_dynamic)
    context = (0,)
    back = returning_frames(num_frames)
    check = (max(1, math.ceil(H / check_stride)), max(1, math.ceil(W / check_stride)))
    best = None
    for attempt in range(max_attempts):
        seed = ((int(room) * 1_000_003 + VARIANTS.index(variant)) * 1009 + int(trajectory_seed)) * 97 + attempt
        path = plan_excursion(scene, variant, num_frames, earlier_frames, seed, num_objects=num_objects)
        need = _need(scene, path, *check, fps, context)
        score = need.fraction(need.needs_memory, back)
        if best is None or score > best[0]:
            best = (score, path, need, attempt + 1)
        if score >= min_needs_memory:
            break
    score, path, need, used = best
    earlier, target, K = _render(scene, path, H, W, fps)
    name = name or f"room{room}-{variant}-{num_frames}f-{earlier_frames}e-{H}x{W}"
    return _task(_as_clip(earlier, K, f"{name}-earlier"), _as_clip(target, K, name), need, context, back,
                 min_frame_fraction, min_needs_memory, variant=variant, room_seed=int(room), attempts=used,
                 info=path.info, name=name)


def _task(earlier: Clip, target: Clip, need: MemoryNeed, context: tuple[int, ...], considered: Sequence[int],
          min_frame_fraction: float, min_needs_memory: float, **fields) -> MemoryTask:
    """The task of ``need`` (classified at any size; upsampled, nearest, to the target's): the ``considered`` frames
    that are not context and reach ``min_frame_fraction`` are scored, ``needs_memory`` is their share."""
    mask = need.needs_memory
    if tuple(mask.shape[-2:]) != target.image_size:
        mask = F.interpolate(mask[None].float(), size=target.image_size, mode="nearest")[0].bool()
    per_frame = need.per_frame(need.needs_memory)
    score = need.fraction(need.needs_memory, considered)
    scored = tuple(t for t in considered if t not in context and float(per_frame[t]) >= min_frame_fraction)
    return MemoryTask(earlier=earlier, target=target, context_frames=context, scored_frames=scored,
                      frame_needs_memory=per_frame, frame_unseen=need.per_frame(need.unseen), needs_memory_mask=mask,
                      needs_memory=score, unseen=need.fraction(need.unseen, considered),
                      accepted=score >= min_needs_memory, **fields)


def _subsample(clip: Clip, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(depth (T, h, w), intrinsics (T, 3, 3)) of ``clip`` at 1 / ``stride`` of its size: the depth of the pixel
    nearest each coarse pixel's centre (never blended), K scaled by the pixel-centre rule."""
    from mirage.camera import scale_intrinsics

    H, W = clip.image_size
    h, w = max(1, math.ceil(H / stride)), max(1, math.ceil(W / stride))
    depth = F.interpolate(clip.depth[:, None], size=(h, w), mode="nearest-exact")[:, 0]
    return depth, scale_intrinsics(clip.intrinsics, (H, W), (h, w))


def recorded_memory_task(earlier: Clip, target: Clip, *, name: str, variant: str = "recorded", room_seed: int = -1,
                         min_needs_memory: float = MIN_NEEDS_MEMORY,
                         min_frame_fraction: float = MIN_FRAME_NEEDS_MEMORY, check_stride: int = 4,
                         info: dict | None = None) -> MemoryTask:
    """A memory task from recorded frames (a real RGB-D sequence): ``earlier`` seeds the memory, ``target`` is the
    later path, frame 0 its context. Every target frame but the context counts (a recorded path is not out and back,
    so there are no "returning" frames): a frame is scored when at least ``min_frame_fraction`` of its valid pixels
    are not seen by frame 0 but by an earlier frame (:func:`mirage.data.visibility.memory_need` on the recorded
    depth at ``1 / check_stride`` of the size; frame 0's depth holes count as seeing what lies behind them, so only
    what is outside its view or hidden in it needs memory). ``room_seed`` holds e.g. the target's first frame in
    its sequence.
    """
    if earlier.depth is None or target.depth is None:
        raise ValueError("a memory task needs depth on the earlier and the target frames")
    if earlier.dynamic is not None or target.dynamic is not None:
        raise ValueError("recorded frames with dynamic masks are not supported here (every pixel is taken as static)")
    if earlier.image_size != target.image_size:
        raise ValueError(f"earlier frames {earlier.image_size} and target frames {target.image_size} differ in size")
    if target.num_frames < 2 or check_stride < 1:
        raise ValueError(f"need a target of >= 2 frames and check_stride >= 1, got {target.num_frames}, "
                         f"{check_stride}")
    context = (0,)
    target_depth, target_K = _subsample(target, check_stride)
    earlier_depth, earlier_K = _subsample(earlier, check_stride)
    need = memory_need(target_depth, target_K, target.cam_to_world, target_depth[:1], target_K[:1],
                       target.cam_to_world[:1], earlier_depth, earlier_K, earlier.cam_to_world,
                       context_holes_seen=True)
    return _task(earlier, target, need, context, range(1, target.num_frames), min_frame_fraction, min_needs_memory,
                 variant=variant, room_seed=int(room_seed), attempts=1, info=dict(info or {}), name=name)


def room_seed(split: str, index: int, first_room: int = 0) -> int:
    """Room seed of item ``index``: ``first_room + index`` for "train", plus EVAL_SEED_OFFSET for "heldout"."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return (0 if split == "train" else EVAL_SEED_OFFSET) + int(first_room) + int(index)


class MemoryTaskDataset(Dataset):
    """Memory-task items, one fresh room each (item i -> room :func:`room_seed` (split, i, first_room)).

    Args:
        num_items: items (= rooms); thousands for training, so no room is seen twice in an epoch.
        image_size: (H, W). split: "train" (rooms first_room.. below EVAL_SEED_OFFSET) or "heldout".
        variants: cycled over items (item i gets ``variants[i % len]``).
        num_frames, earlier_frames and the keywords of :func:`make_memory_task` (``num_objects``,
        ``num_dynamic``, ``fps``, ``min_needs_memory``, ``min_frame_fraction``, ``max_attempts``,
        ``check_stride``) apply to every item.
    Item ``i`` is a :class:`MemoryTask`.
    """

    def __init__(self, num_items: int, image_size: Sequence[int] = (64, 96), split: str = "train",
                 first_room: int = 0, variants: Sequence[str] = VARIANTS, num_frames: int = 33,
                 earlier_frames: int = 16, **task_kwargs):
        if num_items < 1 or first_room < 0:
            raise ValueError(f"need num_items >= 1 and first_room >= 0, got {num_items}, {first_room}")
        bad = [v for v in variants if v not in VARIANTS]
        if not variants or bad:
            raise ValueError(f"variants must be a non-empty subset of {VARIANTS}, got {list(variants)}")
        if split == "train" and first_room + num_items > EVAL_SEED_OFFSET:
            raise ValueError(f"training rooms {first_room}..{first_room + num_items - 1} reach the held-out rooms "
                             f"(seeds >= {EVAL_SEED_OFFSET})")
        room_seed(split, 0)
        unknown = sorted(set(task_kwargs) - {"num_objects", "num_dynamic", "fps", "min_needs_memory",
                                             "min_frame_fraction", "max_attempts", "check_stride"})
        if unknown:
            raise ValueError(f"unknown keyword(s) {unknown} for MemoryTaskDataset")
        self.num_items, self.split, self.first_room = int(num_items), split, int(first_room)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.variants = tuple(variants)
        self.num_frames, self.earlier_frames = int(num_frames), int(earlier_frames)
        self.task_kwargs = dict(task_kwargs)

    def __len__(self) -> int:
        return self.num_items

    def _parts(self, index: int) -> tuple[int, str]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        return room_seed(self.split, index, self.first_room), self.variants[index % len(self.variants)]

    def item_name(self, index: int) -> str:
        room, variant = self._parts(index)
        H, W = self.image_size
        return f"room{room}-{variant}-{self.num_frames}f-{self.earlier_frames}e-{H}x{W}"

    def __getitem__(self, index: int) -> MemoryTask:
        room, variant = self._parts(index)
        return make_memory_task(room, self.image_size, variant, self.num_frames, self.earlier_frames,
                                name=self.item_name(index), **self.task_kwargs)


def collate_memory_tasks(tasks: Sequence[MemoryTask]) -> dict:
    """Batch tasks of equal sizes: {"earlier": collate_clips(...), "target": collate_clips(...),
    "context_frames": tuple, "scored_frames": list of tuples, "needs_memory": (B,), "needs_memory_mask":
    (B, T, H, W), "name": list}."""
    if not tasks:
        raise ValueError("cannot collate an empty list of memory tasks")
    contexts = {t.context_frames for t in tasks}
    if len(contexts) != 1:
        raise ValueError(f"tasks in a batch must share context_frames, got {sorted(contexts)}")
    return {"earlier": collate_clips([t.earlier for t in tasks]), "target": collate_clips([t.target for t in tasks]),
            "context_frames": tasks[0].context_frames, "scored_frames": [t.scored_frames for t in tasks],
            "needs_memory": torch.tensor([t.needs_memory for t in tasks]),
            "needs_memory_mask": torch.stack([t.needs_memory_mask for t in tasks]), "name": [t.name for t in tasks]}
