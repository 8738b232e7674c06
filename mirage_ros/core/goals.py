"""Goals of ``~/imagine_trajectory`` (and the ``~/query_coverage`` question) without ROS: :class:`GoalRunner`.

A goal goes: admit (policy reject | preempt) -> wait for the memory's writer lock (the previous goal ends; the
world model serves one caller at a time) -> resolve its poses to camera-to-world in the world frame
(:mod:`~mirage_ros.core.goal_poses`) -> pad to the 1 + 4k frames the model generates -> ``world_model.rollout``
over a **scratch copy** of the memory (frames streamed as each chunk is decoded, each with its pose and the mask of
where the observed memory holds what it shows; feedback per denoising step; cancel within one step) -> a
:class:`GoalOutcome` with the requested frames only. What a goal imagines never reaches the observed memory, its
cloud, coverage answers or saves, unless the goal or the runner's ``keep_imagined`` asks for it (then the scratch
copy replaces the memory when the goal succeeds). The action server glue (:mod:`mirage_ros.action_server`) maps
outcomes and feedback to messages; tests drive the runner directly, without a ROS graph.

Goals imagine with the intrinsics of a real camera (:class:`~mirage_ros.core.ingest.CameraTable`, from its
camera_info, fitted to the model's size like its keyframes); before any camera was seen, a 75 degree pinhole.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from mirage.camera import intrinsics_from_fov
from mirage.pipeline.chunks import pad_trajectory, padded_length
from mirage_ros.core.goal_poses import GoalError, resolve_goal, resolve_poses

__all__ = ["GOAL_POLICIES", "SUCCEEDED", "CANCELED", "ABORTED", "padded_length", "pad_trajectory",
           "coverage_at_poses", "observed_masks", "GoalFeedback", "FrameBatch", "GoalPlan", "GoalOutcome",
           "GoalRunner", "NO_KEYFRAME", "INFERENCE_CHOICES", "goal_inference"]

GOAL_POLICIES = ("reject", "preempt")
SUCCEEDED, CANCELED, ABORTED = "succeeded", "canceled", "aborted"
INFERENCE_CHOICES = ("", "mirage", "reference")  # the goal's ``inference`` field
FALLBACK_FOV_DEG = 75.0
NO_KEYFRAME = "no RGB-D keyframe inserted yet; waiting on"


# ------------------------------------------------------------------------------------------ library logic
def coverage_at_poses(memory, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: tuple[int, int],
                      grid_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """How much of each view the memory fills: (fraction (T,) of latent cells with a point — the memory's own
    :meth:`~mirage.memory.SpatialMemory.coverage` — and the mean depth (T,) in metres of those cells, 0 where
    none). intrinsics (3, 3) at ``image_size``; cam_to_world (T, 4, 4)."""
    fraction = memory.coverage(intrinsics, cam_to_world, image_size, grid_size)
    mask, depth = memory.visibility(intrinsics, cam_to_world, image_size, grid_size)
    mask = mask.reshape(mask.shape[0], -1)
    depth = torch.where(mask, depth.reshape(mask.shape).float(), 0.0)  # unseen cells hold no depth
    mean_depth = depth.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return fraction, mean_depth


# ------------------------------------------------------------------------------------------ goal records
def observed_masks(memory, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, image_size: tuple[int, int],
                   grid_size: tuple[int, int]) -> np.ndarray:
    """(T, H, W) uint8: 255 where ``memory`` holds a point seen from each camera (its readout's visibility,
    :meth:`~mirage.memory.SpatialMemory.visibility`, nearest-upsampled from the latent grid to ``image_size``),
    0 where a frame there is imagined. intrinsics (3, 3) at ``image_size``; cam_to_world (T, 4, 4)."""
    H, W = image_size
    if len(memory) == 0:
        return np.zeros((cam_to_world.shape[0], H, W), np.uint8)
    mask, _ = memory.visibility(intrinsics, cam_to_world, image_size, grid_size)  # (T, h, w) bool
    rows = (np.arange(H) * mask.shape[1]) // H
    cols = (np.arange(W) * mask.shape[2]) // W
    return np.where(mask.cpu().numpy()[:, rows][:, :, cols], 255, 0).astype(np.uint8)


@dataclass(frozen=True)
class GoalFeedback:
    frames_done: int        # of the requested frames (padding excluded); advances once per chunk
    frames_total: int
    chunks_done: int
    seconds_elapsed: float
    chunks_total: int = 0
    step: int = 0           # denoising steps done in the chunk being generated
    steps_per_chunk: int = 0
    frames_per_chunk: int = 0  # frames each chunk decodes (the first one also brings frame 0)


@dataclass(frozen=True)
class FrameBatch:
    """Frames ``start..`` of a goal as soon as they are decoded: frames (n, H, W, 3) uint8, stamps (n,) int64 ns,
    cam_to_world (n, 4, 4) float64 (the imagined camera in the world frame), masks (n, H, W) uint8 (255: observed,
    0: imagined), all in the imagined camera's frame ``frame_id``."""

    start: int
    frames: np.ndarray
    stamps: np.ndarray
    frame_id: str
    intrinsics: torch.Tensor  # (3, 3) at (H, W)
    cam_to_world: np.ndarray | None = None
    masks: np.ndarray | None = None


@dataclass(frozen=True)
class GoalPlan:
    """What a goal will imagine, known before the rollout starts (for the Path): stamps (T,) int64 ns and
    cam_to_world (T, 4, 4) float64 of the requested frames, in the world frame; ``camera``: whose intrinsics."""

    stamps: np.ndarray
    cam_to_world: np.ndarray
    frame_id: str
    camera: str


@dataclass
class GoalOutcome:
    status: str                 # SUCCEEDED | CANCELED | ABORTED
    message: str
    frames: np.ndarray          # (T, H, W, 3) uint8, the requested frames (empty unless SUCCEEDED)
    stamps: np.ndarray          # (T,) int64 nanoseconds
    frame_id: str = ""
    intrinsics: torch.Tensor | None = None
    seconds_per_frame: float = 0.0
    cam_to_world: np.ndarray | None = None  # (T, 4, 4) float64
    masks: np.ndarray | None = None         # (T, H, W) uint8
    kept_imagined: bool = False


class _Goal:
    """A goal between run() entry and its end: the cancel token and why it was stopped."""

    def __init__(self, key: Any):
        from mirage.pipeline import CancelToken

        self.key, self.token, self.reason = key, CancelToken(), ""

    def stop(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.token.cancel()


# ------------------------------------------------------------------------------------------ runner
class GoalRunner:
    """One goal at a time over a :class:`~mirage_ros.core.memory_holder.MemoryHolder`'s memory.

    Args:
        world_model: ``height``, ``width`` and ``rollout(memory, K (L,3,3), c2w (L,4,4), prompt=, seed=, progress=,
            cancel=, num_inference_steps=, on_frames=)`` (:class:`mirage.pipeline.MirageWorldModel`).
        holder: the node's memory; a goal holds its writer lock for the whole rollout.
        cameras: where the intrinsics come from (the ingest's :class:`~mirage_ros.core.ingest.CameraTable`).
        lookup: ``lookup(target, source, stamp_ns) -> (4, 4)`` (0 = latest), raising when there is none.
        world_frame, policy, fps (default when a goal gives none), max_frames, steps (None: the model's).
        now_ns: clock of goal stamps when the first pose has none. log: ``info`` / ``warning`` / ``error``.
        keep_imagined: keep what every goal imagines in the memory (default False: goals work on a scratch copy).
        imagined_frame: frame id of the imagined camera in batches and outcomes.
        waiting_on: ``() -> str`` naming the input topics, for the answer to a goal on an empty memory.
    Settings (``policy``, ``fps``, ``max_frames``, ``steps``, ``keep_imagined``) are attributes and may change
    between goals.
    """

    def __init__(self, world_model, holder, cameras, lookup: Callable[[str, str, int], np.ndarray], *,
                 world_frame: str, policy: str = "reject", fps: float = 10.0, max_frames: int = 121,
                 steps: int | None = None, now_ns: Callable[[], int] = time.time_ns, log: Any = None,
                 keep_imagined: bool = False, imagined_frame: str = "mirage_imagined_optical_frame",
                 waiting_on: Callable[[], str] = lambda: "the rgb, depth and camera_info topics"):
        self.world_model, self.holder, self.cameras, self.lookup = world_model, holder, cameras, lookup
        self.world_frame = world_frame
        self.policy = policy
        self.fps, self.max_frames, self.steps = float(fps), int(max_frames), steps
        self.keep_imagined, self.imagined_frame, self.waiting_on = bool(keep_imagined), imagined_frame, waiting_on
        self.now_ns = now_ns
        self.log = log or logging.getLogger("mirage_ros.goals")
        self._state = threading.Lock()   # guards _goals / _pending (bookkeeping only; the memory has its own)
        self._goals: list[_Goal] = []    # entered run(): waiting for the memory, or running
        self._pending = 0                # admitted, not started yet
        self._warned_fov_at = float("-inf")

    @property
    def policy(self) -> str:
        return self._policy

    @policy.setter
    def policy(self, value: str) -> None:
        if value not in GOAL_POLICIES:
            raise ValueError(f"goal_policy must be one of {list(GOAL_POLICIES)}, got {value!r}")
        self._policy = value

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.world_model.height), int(self.world_model.width)

    @property
    def busy(self) -> bool:
        with self._state:
            return bool(self._goals) or self._pending > 0

    def camera(self, key: str = "") -> tuple[str, torch.Tensor]:
        """(optical frame, K (3, 3) at the model's size) of camera ``key`` — a camera name or an optical frame
        (empty: the last one posed). GoalError when a named camera was never seen.

        Before any camera was seen and without a name: ("", a 75 degree pinhole), with a warning at most every 30 s.
        """
        camera = self.cameras.get(key)
        if camera is not None:
            return camera.frame_id, camera.intrinsics_at(self.image_size)
        if key:
            seen = self.cameras.names() + self.cameras.frames()
            raise GoalError(f"camera {key!r} has not sent a posed frame yet (seen: {', '.join(seen) or 'none'})")
        if time.monotonic() - self._warned_fov_at > 30.0:
            self._warned_fov_at = time.monotonic()
            self.log.warning(f"no camera frame seen yet: imagining with a {FALLBACK_FOV_DEG:g} degree field of view")
        return "", intrinsics_from_fov(FALLBACK_FOV_DEG, *self.image_size)

    # -------------------------------------------------------------------------------- admission and cancel
    def admit(self) -> bool:
        """Decide on a new goal (the action server's goal callback). ``reject``: False while a goal runs or
        waits. ``preempt``: stop every goal that entered :meth:`run` (running or waiting) and accept.
        Every admitted goal must then be :meth:`run` exactly once."""
        with self._state:
            busy = bool(self._goals) or self._pending > 0
            if busy and self._policy == "reject":
                self.log.warning("imagine_trajectory: rejected a goal, one is running (goal_policy=reject)")
                return False
            if self._goals:
                self.log.info("imagine_trajectory: preempting the running goal (goal_policy=preempt)")
                for goal in self._goals:
                    goal.stop("preempted")
            self._pending += 1
            return True

    def cancel(self, key: Any) -> bool:
        """Stop the goal run under ``key`` (at its next denoising step, or before it starts); False if unknown."""
        with self._state:
            for goal in self._goals:
                if goal.key is key:
                    goal.stop("canceled")
                    return True
        return False

    # -------------------------------------------------------------------------------- run
    def run(self, key: Any, goal, *, cancel_requested: Callable[[], bool] | None = None,
            feedback: Callable[[GoalFeedback], None] | None = None,
            on_frames: Callable[[FrameBatch], None] | None = None,
            on_plan: Callable[[GoalPlan], None] | None = None) -> GoalOutcome:
        """Run an admitted ImagineTrajectory goal (``poses, body_frame, fps, num_frames, prompt, seed`` and, when
        present, ``camera`` and ``keep_imagined``) to its end.

        ``key`` identifies it for :meth:`cancel`; ``cancel_requested`` reports a cancel that reached the caller
        before :meth:`cancel` could (e.g. ``goal_handle.is_cancel_requested``); ``on_plan`` receives the resolved
        poses and stamps before the rollout starts. Never raises for a bad goal or a failed rollout: the outcome
        says what happened.
        """
        record = _Goal(key)
        with self._state:
            self._goals.append(record)
        try:
            # 1. wait for the memory (and the model): the previous goal ends (preempted, canceled or done)
            with self.holder.exclusive("a goal") as memory:
                with self._state:
                    self._pending = max(0, self._pending - 1)
                return self._run(record, goal, memory, cancel_requested or (lambda: False), feedback, on_frames,
                                 on_plan)
        finally:
            with self._state:
                self._goals.remove(record)

    def _run(self, record: _Goal, goal, memory, cancel_requested, feedback, on_frames, on_plan) -> GoalOutcome:
        from mirage.pipeline import RolloutCancelled

        empty = np.zeros((0,), np.int64)
        if record.token.cancelled or cancel_requested():
            if (record.reason or "canceled") == "canceled":
                return GoalOutcome(CANCELED, "canceled before it started", np.zeros((0,)), empty)
            return GoalOutcome(ABORTED, "preempted by a newer goal before it started", np.zeros((0,)), empty)
        try:
            if len(memory) == 0:
                raise GoalError(f"{NO_KEYFRAME} {self.waiting_on()}")
            # 2. poses in the world frame, the camera to imagine with
            camera_frame, K = self.camera(str(getattr(goal, "camera", "") or ""))
            resolved = resolve_goal(goal, camera_frame=camera_frame, world_frame=self.world_frame, lookup=self.lookup,
                                    default_fps=self.fps, max_frames=self.max_frames, now_ns=int(self.now_ns()))
            # 3. pad to 1 + 4k frames (the last pose held); frames past `requested` are dropped below
            requested = int(resolved.cam_to_world.shape[0])
            poses = resolved.cam_to_world.double().numpy()
            c2w = pad_trajectory(resolved.cam_to_world, self.world_model.temporal_stride)
            # 4. what the observed memory holds at each requested frame (before anything is imagined)
            masks = observed_masks(memory, K, resolved.cam_to_world, self.image_size, self.world_model.latent_size)
            if on_plan is not None:
                on_plan(GoalPlan(resolved.stamps, poses, self.imagined_frame, camera_frame))
            t0 = time.monotonic()
            per_chunk = _frames_per_chunk(self.world_model)

            def progress(p) -> None:
                if feedback is not None:
                    feedback(GoalFeedback(int(min(p.frames_done, requested)), requested, int(p.chunks_done),
                                          float(time.monotonic() - t0), int(getattr(p, "chunks_total", 0)),
                                          int(getattr(p, "step", 0)), int(getattr(p, "steps_total", 0)), per_chunk))

            def frames_ready(start: int, frames: np.ndarray) -> None:
                frames = frames[: max(requested - start, 0)]
                if on_frames is not None and len(frames):
                    stop = start + len(frames)
                    on_frames(FrameBatch(start, frames, resolved.stamps[start:stop], self.imagined_frame, K,
                                         poses[start:stop], masks[start:stop]))

            # 5. roll out over a scratch copy: reads the observed memory, writes only the copy; with the goal's
            #    inference choice (the reference code's, issue 20) and guidance when it asks for them
            options, extra = goal_inference(goal)
            scratch = memory.copy()
            with self.world_model.inference_options(**options) if options else contextlib.nullcontext():
                out = self.world_model.rollout(scratch, K.expand(c2w.shape[0], 3, 3).clone(), c2w,
                                               prompt=goal.prompt, seed=int(goal.seed), progress=progress,
                                               cancel=record.token, num_inference_steps=self.steps,
                                               on_frames=frames_ready, **extra)
            # 6. keep what was imagined only when asked
            keep = self.keep_imagined or bool(getattr(goal, "keep_imagined", False))
            if keep:
                self.holder.adopt(scratch)
            frames = np.asarray(out.frames)[:requested]
            spf = float(out.seconds_per_frame)
            kept = "; kept in the memory" if keep else ""
            return GoalOutcome(SUCCEEDED, f"imagined {len(frames)} frames ({spf:.3f} s/frame){kept}", frames,
                               resolved.stamps[: len(frames)], self.imagined_frame, K, spf, poses[: len(frames)],
                               masks[: len(frames)], keep)
        except RolloutCancelled:
            if (record.reason or ("canceled" if cancel_requested() else "preempted")) == "canceled":
                return GoalOutcome(CANCELED, "canceled", np.zeros((0,)), empty)
            return GoalOutcome(ABORTED, "preempted by a newer goal", np.zeros((0,)), empty)
        except GoalError as exc:
            message = str(exc) if str(exc).startswith(NO_KEYFRAME) else f"bad goal: {exc}"
        except Exception as exc:  # noqa: BLE001 - e.g. CUDA out of memory: report and keep serving
            message = f"rollout failed ({type(exc).__name__}): {exc}"
            _release_accelerator_memory()
        self.log.error(f"imagine_trajectory: {message}")
        return GoalOutcome(ABORTED, message, np.zeros((0,)), empty)

    # -------------------------------------------------------------------------------- coverage
    def query_coverage(self, poses: Sequence, body_frame: str = "",
                       camera: str = "") -> tuple[list[float], list[float]]:
        """"Have we seen this?": (fraction of latent cells filled, mean depth there) per PoseStamped, from the
        observed memory as it is now (no lock: a read), imagined with camera ``camera`` (a name or an optical
        frame; empty: the last posed). Raises GoalError / ValueError for poses that cannot be resolved."""
        camera_frame, K = self.camera(camera)
        c2w = resolve_poses(poses, body_frame, camera_frame, self.world_frame, self.lookup)
        size = self.image_size
        fraction, depth = coverage_at_poses(self.holder.memory, K, torch.from_numpy(c2w).float(), size,
                                            self.world_model.latent_size)
        return [float(v) for v in fraction], [float(v) for v in depth]


def goal_inference(goal) -> tuple[dict, dict]:
    """(config overrides, rollout keywords) a goal asks for: ``inference`` "" / "mirage" (the model's settings) or
    "reference" (:data:`mirage.pipeline.config.REFERENCE_INFERENCE`), ``guidance_scale`` > 0 (0: the model's).
    A goal without these fields (an older interface) asks for nothing; an unknown ``inference`` raises GoalError."""
    from mirage.pipeline.config import REFERENCE_INFERENCE

    inference = str(getattr(goal, "inference", "") or "")
    if inference not in INFERENCE_CHOICES:
        raise GoalError(f"inference must be one of {', '.join(repr(c) for c in INFERENCE_CHOICES)}, got {inference!r}")
    scale = float(getattr(goal, "guidance_scale", 0.0) or 0.0)
    if scale < 0:
        raise GoalError(f"guidance_scale must be >= 0 (0: the model's), got {scale}")
    return (dict(REFERENCE_INFERENCE) if inference == "reference" else {}), (
        {"guidance_scale": scale} if scale > 0 else {})


def _frames_per_chunk(world_model) -> int:
    """Pixel frames each chunk decodes: (chunk latents - context latents) x temporal stride (0 when unknown)."""
    try:
        context = int(world_model.config.context_latent_frames)
        return (int(world_model.chunk_latent_frames) - context) * int(world_model.temporal_stride)
    except (AttributeError, TypeError, ValueError):
        return 0


def _release_accelerator_memory() -> None:
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass
