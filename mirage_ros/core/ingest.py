"""Live input -> memory, without ROS: header check -> pose at the stamp -> keyframe? -> fit -> ``model.observe``.

The node's worker and the offline ``mirage build-cache`` both run :class:`FrameIngestor`, so they take the same
decisions on the same frames: the keyframe selection and frame fitting are the library's
(:mod:`mirage.frames`), and every keyframe goes in through ``world_model.observe`` (one encode-and-insert path)
under the memory holder's lock.

The ingestor also records, per camera (its name and its optical frame), the intrinsics of its latest valid
camera_info in :class:`CameraTable`: goals and coverage queries imagine with a camera's own calibration, fitted to
the model's size exactly as its keyframes are, not with whatever keyframe happened to be inserted last. Several
cameras insert into the one memory, each with its own keyframe selection (a wrist camera's motion does not decide
the front camera's keyframes).

(Over the ~400-line guide on purpose: the two ingest stages — pose every set, encode keyframe candidates — share
the per-camera state and the counters, and splitting them would split one state machine across two files.)

Two entry points: :meth:`FrameIngestor.process` (a blocking lookup, ``mirage build-cache``) and
:meth:`FrameIngestor.offer` + :meth:`FrameIngestor.retry_held` (the node): a set whose pose is not there yet waits
in a bounded :class:`~mirage_ros.core.tf_hold.PoseHold` instead of being dropped. In the node, posing and encoding
are two stages: every set is checked, posed and judged (cheap: headers and TF only) as it arrives, and only keyframe
candidates go on to ``encoder`` (a keep-latest queue in front of the thread that calls :meth:`FrameIngestor.encode`),
so a slow model drops stale keyframe candidates, never the poses of the frames in between.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from mirage.frames import KeyframeSelector, fit_intrinsics, fit_to_size
from mirage_ros.conversions.compressed import CorruptPayload, is_compressed
from mirage_ros.conversions.time import NS_PER_SECOND
from mirage_ros.core.stage_times import StageTimes
from mirage_ros.core.tf_hold import PoseHold

__all__ = ["FramePair", "TransformUnavailable", "IngestStats", "CameraModel", "CameraTable", "FrameIngestor"]

Lookup = Callable[[str, str, int], np.ndarray]


class TransformUnavailable(LookupError):
    """No camera pose at the frame's stamp (the frame is dropped, not an error of the input).

    ``retry``: whether waiting could help (the transform may still arrive); False when the stamp is older than
    everything the TF buffer keeps.
    """

    def __init__(self, message: str, retry: bool = True):
        super().__init__(message)
        self.retry = retry


@dataclass
class FramePair:
    """What the subscription callbacks queue: raw messages plus the wall-clock arrival time (seconds).

    ``camera``: name of the camera in the node's ``cameras`` parameter ("" for one unnamed camera);
    ``optical_frame``: its optical frame when the parameter overrides the images' header.frame_id ("" keeps it).
    ``timing``: seconds per stage so far (:mod:`~mirage_ros.core.stage_times`), filled by the ingestor;
    ``mark``: when the last stage ended (the ingestor's clock; starts at ``arrival``).
    """

    rgb: Any
    depth: Any
    info: Any
    arrival: float
    camera: str = ""
    optical_frame: str = ""
    timing: dict[str, float] = field(default_factory=dict)
    mark: float | None = None

    def lap(self, stage: str, now: float) -> None:
        """``stage`` ended at ``now``: its duration is the time since the previous stage ended."""
        start = self.arrival if self.mark is None else self.mark
        self.timing[stage] = now - start
        self.mark = now


@dataclass
class IngestStats:
    frames_in: int = 0          # items taken from the queue
    frames_dropped_tf: int = 0  # no pose at the stamp (after waiting in the hold, if there is one)
    frames_held: int = 0        # had to wait in the hold for their pose (posed later or expired)
    frames_expired_tf: int = 0  # waited the whole hold and found no pose (counted in frames_dropped_tf too)
    frames_rejected: int = 0    # bad input (encoding, sizes, intrinsics, ...)
    frames_posed: int = 0       # found their pose (at once or after waiting)
    frames_skipped: int = 0     # posed, not a keyframe (also a candidate that stopped being one while it queued)
    frames_corrupt: int = 0     # compressed payloads that did not decode (also counted in frames_rejected)
    frames_paused: int = 0      # taken while ingest was paused (~/set_ingest_paused), not inserted
    keyframes: int = 0          # inserted into the memory
    last_insert_latency: float = 0.0       # seconds from arrival to the end of the insert
    latencies: list[float] = field(default_factory=list)  # recent latencies (bounded)
    last_error: str = ""
    last_tf_error: str = ""     # why the last frame found no pose
    set_stages: StageTimes = field(default_factory=StageTimes)       # every posed set: queue .. select
    keyframe_stages: StageTimes = field(default_factory=StageTimes)  # every inserted keyframe: every stage

    def record_latency(self, seconds: float, keep: int = 10000) -> None:
        self.last_insert_latency = float(seconds)
        self.latencies.append(float(seconds))
        if len(self.latencies) > keep:
            del self.latencies[: len(self.latencies) - keep]


@dataclass(frozen=True)
class CameraModel:
    """One camera as its camera_info describes it: K (3, 3) float32 at ``size = (H, W)`` of its images.

    ``name``: its name in the node's ``cameras`` parameter ("" for an unnamed camera)."""

    frame_id: str
    intrinsics: torch.Tensor
    size: tuple[int, int]
    stamp_ns: int
    name: str = ""

    def intrinsics_at(self, size: tuple[int, int]) -> torch.Tensor:
        """K (3, 3) at the model's ``size = (h, w)``: the crop and resize :func:`mirage.frames.fit_to_size` applies."""
        return fit_intrinsics(self.intrinsics, self.size, size)


class CameraTable:
    """Thread-safe ``frame_id -> CameraModel`` of every camera seen (also found by camera name), and which one
    was posed last.

    Written by the ingest worker, read by goal and service threads.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._cameras: dict[str, CameraModel] = {}
        self._names: dict[str, str] = {}  # camera name -> its optical frame
        self._latest = ""

    def record(self, camera: CameraModel) -> None:
        with self._lock:
            self._cameras[camera.frame_id] = camera
            if camera.name:
                self._names[camera.name] = camera.frame_id
            self._latest = camera.frame_id

    def get(self, key: str = "") -> CameraModel | None:
        """The camera named ``key`` or with optical frame ``key`` (empty: the last one posed), or None when it
        was never seen."""
        with self._lock:
            key = key or self._latest
            return self._cameras.get(self._names.get(key, key))

    def names(self) -> list[str]:
        """Names of the named cameras seen so far."""
        with self._lock:
            return sorted(self._names)

    @property
    def latest_frame(self) -> str:
        """Optical frame of the last camera whose frame was posed ("" before any)."""
        with self._lock:
            return self._latest

    def frames(self) -> list[str]:
        with self._lock:
            return sorted(self._cameras)


class FrameIngestor:
    """Validates, poses, selects and inserts frames into a :class:`~mirage_ros.core.memory_holder.MemoryHolder`.

    ``lookup(target, source, stamp_ns) -> (4, 4)`` gives transforms and raises when it has none (stamps stay
    integer nanoseconds); ``retryable(exc) -> bool`` says whether such a failure may go away by waiting (default:
    always). ``image_size`` (h, w) defaults to the model's. ``hold``: where :meth:`offer` parks sets whose pose
    is not there yet (None: they are dropped at once). ``encoder(candidate, camera)``: where :meth:`offer` and
    :meth:`retry_held` hand keyframe candidates (e.g. a keep-latest queue's ``put``; another thread then calls
    :meth:`encode`); None encodes them at once.

    :meth:`process` raises ValueError for bad input (nothing is inserted), :class:`TransformUnavailable` when the
    pose is missing, and returns True for an inserted keyframe, False for a skipped frame. :meth:`offer` does the
    same but returns None for a set it put in the hold; :meth:`retry_held` finishes those. One thread calls these
    (the worker).
    """

    def __init__(self, world_model, holder, lookup: Lookup, world_frame: str, image_size: tuple[int, int] | None = None,
                 keyframe_translation: float = 0.1, keyframe_rotation_deg: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, hold: PoseHold | None = None,
                 retryable: Callable[[BaseException], bool] | None = None,
                 encoder: Callable[[tuple, str], Any] | None = None):
        self.world_model = world_model
        self.holder = holder
        self.lookup = lookup
        self.retryable = retryable or (lambda exc: True)
        self.world_frame = world_frame
        size = image_size if image_size is not None else (world_model.height, world_model.width)
        self.image_size = (int(size[0]), int(size[1]))
        self.keyframe_translation, self.keyframe_rotation_deg = keyframe_translation, keyframe_rotation_deg
        self.selectors: dict[str, KeyframeSelector] = {}  # per camera (name, else optical frame)
        self.stats = IngestStats()
        self.clock = clock
        self.cameras = CameraTable()
        self.paused = False  # set by the node's ~/set_ingest_paused: frames are counted and dropped
        self.hold = hold
        self.encoder = encoder
        self.fit_backend = "auto"  # mirage.frames.fit_to_size's colour resize (the ingest bench compares them)

    @property
    def camera_frame(self) -> str:
        """Frame of the last posed frame (goals default to it)."""
        return self.cameras.latest_frame

    def selector(self, camera: str) -> KeyframeSelector:
        """The keyframe selector of ``camera`` (created on first use)."""
        if camera not in self.selectors:
            self.selectors[camera] = KeyframeSelector(self.keyframe_translation, self.keyframe_rotation_deg)
        return self.selectors[camera]

    def check(self, pair: FramePair):
        """Header-level validation, no pixel decoding (cheap enough for every frame).

        Returns (frame_id, stamp ns, K (3, 3), (H, W)); raises ValueError naming the problem.
        """
        from mirage_ros import conversions as conv

        rgb, depth = pair.rgb, pair.depth
        if is_compressed(rgb) or is_compressed(depth):
            return check_compressed_pair(pair)
        if rgb.encoding not in conv.COLOUR_ENCODINGS:
            raise ValueError(f"unsupported rgb encoding {rgb.encoding!r}; supported: {list(conv.COLOUR_ENCODINGS)}")
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
        frame_id = pair.optical_frame or rgb.header.frame_id or depth.header.frame_id
        if not frame_id:
            raise ValueError("the rgb and depth images have no header.frame_id (set the camera's optical_frame "
                             "parameter)")
        return frame_id, conv.stamp_to_ns(rgb.header.stamp), K, size

    def convert(self, pair: FramePair) -> tuple[np.ndarray, np.ndarray]:
        """Pixels: rgb (H, W, 3) uint8 and depth (H, W) float32 metres; ValueError if unusable."""
        from mirage_ros import conversions as conv

        if is_compressed(pair.rgb) or is_compressed(pair.depth):
            rgb, depth = convert_compressed_pair(pair)
        else:
            rgb, depth = conv.image_to_rgb(pair.rgb), conv.image_to_depth(pair.depth)
        if not depth.max(initial=0.0) > 0:  # the converters write 0 where there is no depth (never NaN or inf)
            raise ValueError("depth has no valid pixel (all zero, negative, NaN or inf)")
        return rgb, depth

    def _reject(self, exc: ValueError) -> None:
        self.stats.frames_rejected += 1
        if isinstance(exc, CorruptPayload):
            self.stats.frames_corrupt += 1
        self.stats.last_error = str(exc)

    # ------------------------------------------------------------------------------------------ the steps
    def _checked(self, pair: FramePair):
        """Step 1: header check (no pixels); counts the frame. None while ingest is paused (counted, not posed)."""
        self.stats.frames_in += 1
        pair.lap("queue", self.clock())
        if self.paused:
            self.stats.frames_paused += 1
            return None
        try:
            checked = self.check(pair)
        except ValueError as exc:
            self._reject(exc)
            raise
        pair.lap("check", self.clock())
        return checked

    def _pose(self, pair: FramePair, checked) -> np.ndarray:
        """Step 2: camera pose (4, 4) at the stamp; TransformUnavailable (with ``retry``) when there is none."""
        frame_id, stamp = checked[0], checked[1]
        start = self.clock()
        try:
            c2w = np.asarray(self.lookup(self.world_frame, frame_id, stamp), dtype=np.float64)
        except Exception as exc:  # noqa: BLE001 - the buffer's error type is not ours to know
            self.stats.last_tf_error = (f"no transform {self.world_frame} <- {frame_id} at "
                                        f"t={stamp / NS_PER_SECOND:.3f} s: {exc}")
            raise TransformUnavailable(self.stats.last_tf_error, retry=bool(self.retryable(exc))) from None
        pair.lap("hold", start)  # since the check: 0 unless the set waited in the hold
        pair.lap("pose", self.clock())
        return c2w

    def _select(self, pair: FramePair, checked, c2w: np.ndarray) -> bool:
        """Step 3: record the camera, keyframe? (per camera). True for a keyframe candidate."""
        frame_id, stamp, K, size = checked
        self.stats.frames_posed += 1
        self.cameras.record(CameraModel(frame_id, K, size, stamp, pair.camera))
        keyframe = self.selector(pair.camera or frame_id).is_keyframe(c2w)
        pair.lap("select", self.clock())
        self.stats.set_stages.add_all(pair.timing)
        if not keyframe:
            self.stats.frames_skipped += 1
            return False
        return True

    def encode(self, candidate: tuple) -> bool:
        """Steps 4-5 for a keyframe candidate ``(pair, checked, c2w)``: still a keyframe? -> decode -> fit -> observe.

        Returns True when inserted, False when an earlier candidate of its camera went in meanwhile and this one is no
        longer a keyframe. ValueError for unusable pixels or a frame the model refuses (the memory is unchanged).
        """
        pair, checked, c2w = candidate
        frame_id, _, K, _ = checked
        pair.lap("encoder_queue", self.clock())
        if self.paused:  # paused while this candidate queued (or waited in the hold)
            self.stats.frames_paused += 1
            return False
        selector = self.selector(pair.camera or frame_id)
        if not selector.is_keyframe(c2w):
            self.stats.frames_skipped += 1
            return False
        # 4. pixels, fitted to the model's size (decoded only for keyframes)
        try:
            rgb, depth = self.convert(pair)
        except ValueError as exc:
            self._reject(exc)
            raise
        pair.lap("convert", self.clock())
        rgb_t, depth_t, K_t = fit_to_size(rgb, depth, K, self.image_size, self.fit_backend)
        pair.lap("fit", self.clock())
        # 5. encode + insert, the library's one observe path, under the memory's writer lock (which also serialises
        # the world model's per-call state against a goal's rollout)
        try:
            written = self.holder.observe(self.world_model, rgb_t, depth_t, K_t, torch.from_numpy(c2w).float(),
                                          skip_if=lambda: self.paused,
                                          on_encoded=lambda: pair.lap("encode", self.clock()))
        except ValueError as exc:  # the model or the memory refused the frame; the memory is unchanged
            self._reject(exc)
            raise
        if written is None:  # paused while this frame was decoded or waited for the memory
            self.stats.frames_paused += 1
            return False
        now = self.clock()
        pair.lap("insert", now)
        selector.accept(c2w)
        self.stats.keyframes += 1
        self.stats.keyframe_stages.add_all(pair.timing)
        self.stats.record_latency(now - pair.arrival)
        return True

    def _insert(self, pair: FramePair, checked, c2w: np.ndarray) -> bool | None:
        """Steps 3-5 (None: the candidate went to the encoder)."""
        if not self._select(pair, checked, c2w):
            return False
        if self.encoder is not None:
            self.encoder((pair, checked, c2w), pair.camera or checked[0])
            return None
        return self.encode((pair, checked, c2w))

    # ------------------------------------------------------------------------------------------ entry points
    def process(self, pair: FramePair) -> bool:
        """Check -> pose at the stamp -> keyframe? -> decode -> fit -> observe, all at once (class docstring)."""
        checked = self._checked(pair)
        if checked is None:
            return False
        try:
            c2w = self._pose(pair, checked)
        except TransformUnavailable:
            self.stats.frames_dropped_tf += 1
            raise
        return self._select(pair, checked, c2w) and self.encode((pair, checked, c2w))

    def offer(self, pair: FramePair) -> bool | None:
        """Like :meth:`process`, but a set whose pose is not available yet waits in the hold, and a keyframe
        candidate goes to ``encoder`` when there is one (both return None).

        Raises TransformUnavailable for a set that cannot wait (no hold, a stamp too old for the TF buffer, or the
        oldest held set pushed out of a full hold: then that set is named).
        """
        checked = self._checked(pair)
        if checked is None:
            return False
        try:
            c2w = self._pose(pair, checked)
        except TransformUnavailable as exc:
            if self.hold is None or not self.hold.enabled or not exc.retry:
                self.stats.frames_dropped_tf += 1
                raise
            self.stats.frames_held += 1
            pushed_out = self.hold.add((pair, checked))
            if pushed_out is not None:
                self.stats.frames_dropped_tf += 1
                raise TransformUnavailable(f"the pose hold is full ({self.hold.capacity} sets); dropped the oldest "
                                           f"set at t={pushed_out[1][1] / NS_PER_SECOND:.3f} s", retry=False) from None
            return None
        return self._insert(pair, checked, c2w)

    def retry_held(self) -> list[tuple[FramePair, BaseException]]:
        """Pose and insert the held sets whose transform has arrived; expire those that waited too long.

        Returns ``(pair, exception)`` for every held set that ended badly: TransformUnavailable (expired) or
        ValueError (rejected once its pixels were read). Call it from the thread that calls :meth:`offer`.
        """
        if self.hold is None or len(self.hold) == 0:
            return []
        failures: list[tuple[FramePair, BaseException]] = []

        def ready(entry) -> bool:
            pair, checked = entry
            try:
                c2w = self._pose(pair, checked)
            except TransformUnavailable:
                return False
            try:
                self._insert(pair, checked, c2w)
            except ValueError as exc:
                failures.append((pair, exc))
            return True

        for pair, (frame_id, stamp, _, _) in self.hold.retry(ready):
            self.stats.frames_dropped_tf += 1
            self.stats.frames_expired_tf += 1
            failures.append((pair, TransformUnavailable(
                f"no transform {self.world_frame} <- {frame_id} at t={stamp / NS_PER_SECOND:.3f} s arrived within "
                f"tf_hold={self.hold.wait:.2f} s", retry=False)))
        return failures

    def reset(self) -> None:
        """Forget the last keyframe of every camera (after clear / load the next good frame seeds the memory)."""
        for selector in self.selectors.values():
            selector.reset()

    def set_keyframe_thresholds(self, translation: float, rotation_deg: float) -> None:
        """New keyframe thresholds (live parameters) for every camera, present and future."""
        self.keyframe_translation, self.keyframe_rotation_deg = float(translation), float(rotation_deg)
        for selector in self.selectors.values():
            selector.translation, selector.rotation_deg = self.keyframe_translation, self.keyframe_rotation_deg

# ------------------------------------------------------------------------------------------ compressed input
# sensor_msgs/CompressedImage (image_transport's ``compressed`` / ``compressedDepth``) carries no size: the header
# check takes the size from camera_info, and the decoded pixels (keyframes only) must match it.
def _check_stream(msg, key: str) -> None:
    from mirage_ros import conversions as conv
    from mirage_ros.conversions import compressed as cc

    if is_compressed(msg):
        if key == "rgb":
            cc.check_colour_format(str(msg.format))
        else:
            cc.check_depth_format(str(msg.format))
        return
    supported = conv.COLOUR_ENCODINGS if key == "rgb" else conv.DEPTH_ENCODINGS
    if msg.encoding not in supported:
        raise ValueError(f"unsupported {key} encoding {msg.encoding!r}; supported: {list(supported)}")


def check_compressed_pair(pair: FramePair):
    """:meth:`FrameIngestor.check` for a pair with a compressed rgb and/or depth: formats, raw sizes, frame."""
    from mirage_ros import conversions as conv

    K, size = conv.camera_info_to_intrinsics(pair.info)
    size = (int(size[0]), int(size[1]))
    for key, msg in (("rgb", pair.rgb), ("depth", pair.depth)):
        _check_stream(msg, key)
        if not is_compressed(msg) and (int(msg.height), int(msg.width)) != size:
            raise ValueError(f"{key} is {msg.width}x{msg.height} but camera_info is for {size[1]}x{size[0]}")
    frame_id = pair.optical_frame or pair.rgb.header.frame_id or pair.depth.header.frame_id
    if not frame_id:
        raise ValueError("the rgb and depth images have no header.frame_id (set the camera's optical_frame "
                         "parameter)")
    return frame_id, conv.stamp_to_ns(pair.rgb.header.stamp), K, size


def convert_compressed_pair(pair: FramePair) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of a pair with compressed parts: rgb (H, W, 3) uint8, depth (H, W) float32 m; sizes must match
    camera_info. :class:`~mirage_ros.conversions.compressed.CorruptPayload` when a payload does not decode."""
    from mirage_ros import conversions as conv
    from mirage_ros.conversions import compressed as cc

    _, size = conv.camera_info_to_intrinsics(pair.info)
    rgb = cc.compressed_to_rgb(pair.rgb) if is_compressed(pair.rgb) else conv.image_to_rgb(pair.rgb)
    depth = cc.compressed_to_depth(pair.depth) if is_compressed(pair.depth) else conv.image_to_depth(pair.depth)
    for key, pixels in (("rgb", rgb), ("depth", depth)):
        if tuple(pixels.shape[:2]) != tuple(size):
            raise ValueError(f"{key} decoded to {pixels.shape[1]}x{pixels.shape[0]} but camera_info is for "
                             f"{size[1]}x{size[0]}")
    return rgb, depth
