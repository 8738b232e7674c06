"""Live input -> memory, without ROS: keyframe selection, a keep-latest queue and the ingest worker.

Everything here is free of rclpy so the node and the offline ``mirage build-cache`` take the same
decisions on the same frames. The node's subscription callbacks only push into :class:`KeepLatestQueue`;
:class:`IngestWorker` pops, resolves the pose, selects keyframes and encodes + inserts them, so a slow
model drops stale frames instead of building latency.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

import numpy as np
import torch

T = TypeVar("T")

__all__ = ["KeepLatestQueue", "KeyframeSelector", "IngestStats", "IngestWorker"]


class KeepLatestQueue(Generic[T]):
    """Bounded FIFO that drops its oldest item when full (never blocks the producer).

    ``put`` is safe to call from executor callbacks; ``get`` blocks the consumer up to a timeout.
    ``high_water`` records the largest length ever seen (the benchmark checks it stays <= maxsize).
    """

    def __init__(self, maxsize: int = 1):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = int(maxsize)
        self._items: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()
        self.dropped = 0
        self.pushed = 0
        self.high_water = 0
        self._in_flight = 0  # items handed out by get() and not yet marked done
        self._closed = False

    def put(self, item: T) -> bool:
        """Enqueue; returns True when an older item was dropped to make room."""
        with self._cond:
            dropped = False
            while len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
                dropped = True
            self._items.append(item)
            self.pushed += 1
            self.high_water = max(self.high_water, len(self._items))
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None) -> T | None:
        """Oldest item, or None after ``timeout`` seconds / once closed and empty."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if not self._items:
                return None
            self._in_flight += 1
            return self._items.popleft()

    def task_done(self) -> None:
        """Mark an item returned by :meth:`get` as processed."""
        with self._cond:
            self._in_flight = max(0, self._in_flight - 1)
            self._cond.notify_all()

    def join(self, timeout: float) -> bool:
        """Wait until the queue is empty and every item taken was marked done; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._items or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class KeyframeSelector:
    """Accept a frame when the camera moved or turned enough since the last accepted one.

    The first frame is always accepted. Poses are camera-to-world (4, 4); thresholds in metres and degrees
    (a threshold of 0 accepts every frame).
    """

    def __init__(self, translation: float = 0.1, rotation_deg: float = 10.0):
        if translation < 0 or rotation_deg < 0:
            raise ValueError(f"keyframe thresholds must be >= 0, got {translation} m, {rotation_deg} deg")
        self.translation = float(translation)
        self.rotation_deg = float(rotation_deg)
        self.last: np.ndarray | None = None

    def distance(self, c2w: np.ndarray) -> tuple[float, float]:
        """(metres, degrees) from the last keyframe; (inf, inf) before the first."""
        if self.last is None:
            return float("inf"), float("inf")
        c2w = np.asarray(c2w, dtype=np.float64)
        dt = float(np.linalg.norm(c2w[:3, 3] - self.last[:3, 3]))
        R = self.last[:3, :3].T @ c2w[:3, :3]
        cos = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
        return dt, float(np.degrees(np.arccos(cos)))

    def is_keyframe(self, c2w: np.ndarray) -> bool:
        dt, dr = self.distance(c2w)
        if self.last is None:
            return True
        if self.translation == 0 or self.rotation_deg == 0:
            return True
        return dt >= self.translation or dr >= self.rotation_deg

    def accept(self, c2w: np.ndarray) -> None:
        self.last = np.asarray(c2w, dtype=np.float64).copy()

    def reset(self) -> None:
        self.last = None


@dataclass
class IngestStats:
    frames_in: int = 0          # items taken from the queue
    frames_dropped_tf: int = 0  # no pose at the stamp
    frames_rejected: int = 0    # bad input (encoding, sizes, intrinsics, ...)
    frames_skipped: int = 0     # not a keyframe
    keyframes: int = 0          # inserted into the memory
    last_insert_latency: float = 0.0       # seconds from arrival to the end of the insert
    latencies: list[float] = field(default_factory=list)  # recent latencies (bounded)
    last_error: str = ""

    def record_latency(self, seconds: float, keep: int = 10000) -> None:
        self.last_insert_latency = float(seconds)
        self.latencies.append(float(seconds))
        if len(self.latencies) > keep:
            del self.latencies[: len(self.latencies) - keep]


class IngestWorker:
    """A thread that turns queued frames into memory inserts.

    ``process(item) -> bool | None`` does the work for one item and returns whether it inserted a keyframe
    (None when the frame was dropped). Exceptions are caught and passed to ``on_error`` so one bad frame never
    stops the worker.
    """

    def __init__(self, queue: KeepLatestQueue, process: Callable[[Any], Any],
                 on_error: Callable[[Any, BaseException], None] | None = None, name: str = "mirage-ingest"):
        self.queue = queue
        self.process = process
        self.on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "IngestWorker":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self.queue.get(timeout=0.1)
            if item is None:
                continue
            try:
                self.process(item)
            except Exception as exc:  # noqa: BLE001 - a bad frame must not kill the worker
                if self.on_error is not None:
                    self.on_error(item, exc)
            finally:
                self.queue.task_done()

    def wait_idle(self, timeout: float) -> bool:
        """Block until the queue is empty and no item is being processed; False on timeout."""
        return self.queue.join(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.queue.close()
        if self._thread.is_alive():
            self._thread.join(timeout)


# --------------------------------------------------------------------------------------------------
# One frame -> memory (shared by the node's worker and the offline bag builder)
# --------------------------------------------------------------------------------------------------
class TransformUnavailable(LookupError):
    """No camera pose at the frame's stamp (the frame is dropped, not an error of the input)."""


@dataclass
class FramePair:
    """What the subscription callbacks queue: raw messages plus the wall-clock arrival time."""

    rgb: Any
    depth: Any
    info: Any
    arrival: float


def fit_to_size(rgb: np.ndarray, depth: np.ndarray, K: torch.Tensor, size: tuple[int, int]):
    """Centre-crop a frame to the aspect ratio of ``size = (h, w)`` and resize it there.

    rgb (H, W, 3) uint8, depth (H, W) float32 metres, K (3, 3) at (H, W). Returns rgb (3, h, w) float32 in
    [0, 1] (area resampling), depth (h, w) float32 (nearest: never blends a foreground and a background
    depth into a surface that does not exist), K (3, 3) at (h, w).
    """
    from mirage.camera import scale_intrinsics

    H, W = depth.shape
    h, w = size
    crop_h, crop_w = (H, round(H * w / h)) if W * h > H * w else (round(W * h / w), W)
    y0, x0 = (H - crop_h) // 2, (W - crop_w) // 2
    K = K.clone().float()
    K[0, 2] -= x0
    K[1, 2] -= y0
    K = scale_intrinsics(K, (crop_h, crop_w), (h, w))
    rgb_t = torch.from_numpy(np.ascontiguousarray(rgb[y0:y0 + crop_h, x0:x0 + crop_w])).permute(2, 0, 1).float()
    depth_t = torch.from_numpy(np.ascontiguousarray(depth[y0:y0 + crop_h, x0:x0 + crop_w], dtype=np.float32))
    if (crop_h, crop_w) != (h, w):
        rgb_t = torch.nn.functional.interpolate(rgb_t[None], size=(h, w), mode="area")[0]
        depth_t = torch.nn.functional.interpolate(depth_t[None, None], size=(h, w), mode="nearest-exact")[0, 0]
    return (rgb_t / 255.0).clamp_(0.0, 1.0), depth_t, K


class FrameIngestor:
    """Validates, poses, selects and inserts frames into a :class:`~mirage_ros.node_memory.MemoryHolder`.

    ``lookup(target, source, stamp_ns) -> (4, 4)`` gives transforms and raises when it has none (stamps stay
    integer nanoseconds: a float of epoch seconds cannot hold them exactly).
    ``process`` raises ValueError for bad input (nothing is inserted), :class:`TransformUnavailable` when the
    pose is missing, and returns True for an inserted keyframe, False for a skipped frame.
    """

    def __init__(self, world_model, holder, lookup: Callable[[str, str, int], np.ndarray], world_frame: str,
                 image_size: tuple[int, int], keyframe_translation: float = 0.1, keyframe_rotation_deg: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, model_lock: threading.Lock | None = None):
        self.world_model = world_model
        self.model_lock = model_lock or threading.Lock()  # the VAE keeps per-call state: one user at a time
        self.holder = holder
        self.lookup = lookup
        self.world_frame = world_frame
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.selector = KeyframeSelector(keyframe_translation, keyframe_rotation_deg)
        self.stats = IngestStats()
        self.clock = clock
        self.camera_frame = ""  # frame of the last good frame (goals default to it)
        self.intrinsics: torch.Tensor | None = None  # (3, 3) at image_size, of the last keyframe

    def check(self, pair: FramePair):
        """Header-level validation, no pixel decoding (cheap enough for every frame).

        Returns (frame_id, stamp ns, K (3, 3), (H, W)); raises ValueError naming the problem.
        """
        from mirage_ros import conversions as conv

        rgb, depth = pair.rgb, pair.depth
        if rgb.encoding not in conv.IMAGE_ENCODINGS or rgb.encoding in conv.DEPTH_ENCODINGS:
            colour = sorted(set(conv.IMAGE_ENCODINGS) - set(conv.DEPTH_ENCODINGS))
            raise ValueError(f"unsupported rgb encoding {rgb.encoding!r}; supported: {colour}")
        if depth.encoding not in conv.DEPTH_ENCODINGS:
            raise ValueError(f"unsupported depth encoding {depth.encoding!r}; expected one of {conv.DEPTH_ENCODINGS}")
        size = (int(depth.height), int(depth.width))
        if (int(rgb.height), int(rgb.width)) != size:
            raise ValueError(f"rgb is {rgb.width}x{rgb.height} but depth is {depth.width}x{depth.height} "
                             "(register depth to the colour camera)")
        K, info_size = conv.camera_info_to_intrinsics(pair.info)
        if tuple(info_size) != size:
            raise ValueError(f"camera_info is for {info_size[1]}x{info_size[0]} but the images are "
                             f"{size[1]}x{size[0]}")
        frame_id = rgb.header.frame_id or depth.header.frame_id
        if not frame_id:
            raise ValueError("the rgb and depth images have no header.frame_id")
        return frame_id, conv.stamp_to_ns(rgb.header.stamp), K, size

    def convert(self, pair: FramePair) -> tuple[np.ndarray, np.ndarray]:
        """Pixels: rgb (H, W, 3) uint8 and depth (H, W) float32 metres; ValueError if unusable."""
        from mirage_ros import conversions as conv

        rgb, depth = conv.image_to_rgb(pair.rgb), conv.image_to_depth(pair.depth)
        if not (np.isfinite(depth) & (depth > 0)).any():
            raise ValueError("depth has no valid pixel (all zero, negative, NaN or inf)")
        return rgb, depth

    def _reject(self, exc: ValueError) -> None:
        self.stats.frames_rejected += 1
        self.stats.last_error = str(exc)

    def process(self, pair: FramePair) -> bool:
        """Check -> pose at the stamp -> keyframe? -> decode -> encode -> insert (see the class docstring).

        Pixels are decoded only for keyframes, so skipped frames cost a header check and a TF lookup.
        """
        self.stats.frames_in += 1
        try:
            frame_id, stamp, K, _ = self.check(pair)
        except ValueError as exc:
            self._reject(exc)
            raise
        try:
            c2w = np.asarray(self.lookup(self.world_frame, frame_id, stamp), dtype=np.float64)
        except Exception as exc:  # noqa: BLE001 - the buffer's error type is not ours to know
            self.stats.frames_dropped_tf += 1
            raise TransformUnavailable(
                f"no transform {self.world_frame} <- {frame_id} at t={stamp * 1e-9:.3f} s: {exc}") from None
        self.camera_frame = frame_id
        if not self.selector.is_keyframe(c2w):
            self.stats.frames_skipped += 1
            return False
        try:
            rgb, depth = self.convert(pair)
        except ValueError as exc:
            self._reject(exc)
            raise
        rgb_t, depth_t, K_t = fit_to_size(rgb, depth, K, self.image_size)
        c2w_t = torch.from_numpy(c2w).float()
        with self.model_lock:
            latents = self.world_model.encode_images(rgb_t[None])
        with self.holder.lock:
            memory = self.holder.memory
            memory.insert(latents[0].to(memory.dtype), depth_t, K_t, c2w_t)
            self.holder.keyframes += 1
        self.selector.accept(c2w)
        self.intrinsics = K_t
        self.stats.keyframes += 1
        self.stats.record_latency(self.clock() - pair.arrival)
        return True

    def reset(self) -> None:
        """Forget the last keyframe (after clear / load the next good frame seeds the memory again)."""
        self.selector.reset()
