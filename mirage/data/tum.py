"""TUM RGB-D benchmark sequences (Sturm et al., IROS 2012, CC BY 4.0) in their standard layout.

A sequence directory holds::

    rgb.txt          "timestamp filename" per colour image (8-bit RGB PNG), "#" comment lines
    depth.txt        "timestamp filename" per depth image (16-bit PNG, 5000 units per metre, 0 = no reading)
    groundtruth.txt  "timestamp tx ty tz qx qy qz qw" at the motion-capture rate (~100 Hz)
    rgb/ depth/      the images named in the lists

**Association** (:func:`associate`), as the benchmark's ``associate.py`` specifies it (our own code): every pair
of an rgb and a depth stamp closer than ``max_difference`` (default 0.02 s, strictly less) is a candidate; the
candidates are taken greedily by smallest difference, each stamp at most once; the pairs come out in rgb order.
An rgb image without a depth image within the limit is left out (counted in :attr:`TUMSequence.skipped`).

**Poses** (:func:`interpolate_poses`): the ground truth is sampled at its own clock. A frame's pose (at its rgb
stamp) is interpolated between the ground-truth samples just before and just after the stamp (translation
linearly, rotation by slerp) when both are within ``max_pose_difference`` (default 0.02 s) of it; otherwise the
nearer of the two is used when it is within the limit; otherwise the frame has no pose and is left out (counted).
So a frame in a gap of the motion capture is dropped, never extrapolated. The benchmark defines the pose as that
of the colour camera's optical centre in the motion-capture world, quaternion ``(qx, qy, qz, qw)`` (Hamilton,
scalar last): that is mirage's ``cam_to_world`` in the OpenCV optical frame (x right, y down, z forward,
:mod:`mirage.camera`) as it stands, no axis change.

**Depth**: ``png / 5000`` metres; 0 (no reading) becomes NaN (mirage: 0 / NaN / inf are "no depth"). The depth
images are registered to the colour images by the Kinect driver, pixel for pixel, so one camera describes both.

**Intrinsics** (:data:`CAMERAS`): the benchmark's calibration of each Kinect's colour camera at 640x480, OpenCV
convention (pixel centres at integers), with its plumb-bob distortion ``k1 k2 p1 p2 k3``. The default for a
``freiburg1`` sequence is ``fr1``: fx 517.3, fy 516.5, cx 318.6, cy 255.3, distortion 0.2624 -0.9531 -0.0054
0.0026 1.1633, and the frames are **undistorted** to that pinhole camera (colour bilinear, depth nearest, so a
depth value is never blended across an edge; pixels that map outside the image become black / no depth). The
ROS default camera (``ros_default``: 525, 525, 319.5, 239.5, no distortion) is what the benchmark's own
point-cloud example uses; it ignores the lens distortion (up to ~6% of the radius in the corners at fr1), so it
is offered, not used by default. ``fr3`` images are already undistorted by the benchmark (zero distortion).
Images smaller than 640x480 (e.g. the test slice, 160x120) are taken as resized 640x480 images: K is scaled with
mirage's pixel-centre rule (:func:`mirage.camera.scale_intrinsics`); the distortion coefficients, being in
normalised coordinates, stay. Frames are fitted to a model's size by :func:`mirage.frames.fit_to_size` (centre
crop to the aspect ratio, area resize; depth nearest), as the node fits its camera.

Bad input raises ``ValueError`` naming the file: a missing list or image, a malformed line, a listed path that
leads outside the sequence directory, an image that does not decode, a depth image that is not single-channel
16-bit, colour and depth of different sizes, an image whose aspect ratio is not the calibration's.

**A part of a sequence** (``frames=(start, end)``, :func:`parse_tum_source`'s ``DIR@START:END``): only the
associated, posed frames ``start .. end - 1`` (Python slice rules on the frame index, ``end`` exclusive; either
may be left out) are the sequence; :attr:`TUMSequence.first_frame` keeps ``start``, so task names and frame
numbers stay those of the whole sequence. This is how a held-out part is kept apart from a training part of the
same recording (mirage-tiny's real-data fine-tune: frames ``0:415`` train, ``415:`` evaluate).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mirage.camera import intrinsics_from_opencv, intrinsics_to_opencv, scale_intrinsics
from mirage.data.clip import Clip

__all__ = ["TUMCamera", "CAMERAS", "DEPTH_SCALE", "MAX_DIFFERENCE", "read_tum_list", "read_groundtruth",
           "associate", "interpolate_poses", "camera_for", "parse_frame_range", "parse_tum_source", "TUMSequence",
           "tum_memory_tasks", "tum_training_tasks"]

DEPTH_SCALE = 5000.0   # depth PNG units per metre
MAX_DIFFERENCE = 0.02  # seconds: associate.py's default


@dataclass(frozen=True)
class TUMCamera:
    """A calibrated camera of the benchmark: OpenCV K (pixel centres at integers) at ``size`` (H, W), plumb-bob
    distortion (k1, k2, p1, p2, k3)."""

    name: str
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)
    size: tuple[int, int] = (480, 640)

    def opencv_matrix(self, size: Sequence[int] | None = None) -> np.ndarray:
        """(3, 3) float64 OpenCV K at ``size`` (default the calibration's)."""
        return intrinsics_to_opencv(self.intrinsics(size)).double().numpy()

    def intrinsics(self, size: Sequence[int] | None = None) -> torch.Tensor:
        """(3, 3) float32 mirage K (pixel centres at +0.5) at ``size`` (H, W), default the calibration's."""
        K = intrinsics_from_opencv(np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]]))
        return K if size is None else scale_intrinsics(K, self.size, size)

    @property
    def distorted(self) -> bool:
        return any(d != 0.0 for d in self.distortion)


CAMERAS = {
    "fr1": TUMCamera("fr1", 517.3, 516.5, 318.6, 255.3, (0.2624, -0.9531, -0.0054, 0.0026, 1.1633)),
    "fr2": TUMCamera("fr2", 520.9, 521.0, 325.1, 249.7, (0.2312, -0.7849, -0.0033, -0.0001, 0.9172)),
    "fr3": TUMCamera("fr3", 535.4, 539.2, 320.1, 247.6),
    "ros_default": TUMCamera("ros_default", 525.0, 525.0, 319.5, 239.5),
}


def camera_for(root: str | os.PathLike) -> TUMCamera:
    """The calibration a sequence directory's name implies (``freiburg1`` / ``fr1`` ... in the name)."""
    name = Path(root).resolve().name.lower()
    for key, tokens in (("fr1", ("freiburg1", "fr1")), ("fr2", ("freiburg2", "fr2")), ("fr3", ("freiburg3", "fr3"))):
        if any(t in name for t in tokens):
            return CAMERAS[key]
    raise ValueError(f"cannot tell the camera of {root} from its name (no freiburg1/2/3 or fr1/2/3 in it): pass "
                     f"camera= one of {sorted(CAMERAS)}")


def parse_frame_range(text: str) -> tuple[int, int | None]:
    """``"START:END"`` (either side may be empty: ``":300"``, ``"415:"``) -> (start, end or None); ValueError
    unless both are non-negative integers with start < end."""
    parts = text.split(":")
    if len(parts) != 2 or not all(p == "" or p.isdigit() for p in parts):
        raise ValueError(f"a frame range is START:END with non-negative integers (either may be empty), got {text!r}")
    start, end = int(parts[0] or 0), (int(parts[1]) if parts[1] else None)
    if end is not None and end <= start:
        raise ValueError(f"frame range {text!r} is empty (END must be > START)")
    return start, end


def parse_tum_source(text: str) -> tuple[str, tuple[int, int | None] | None]:
    """``"DIR"`` or ``"DIR@START:END"`` -> (directory, frame range or None). The ``@`` suffix is read as a range only
    when it has the range's form, so a directory with an ``@`` in its name still works."""
    head, sep, tail = text.rpartition("@")
    if sep and head and ":" in tail and all(p == "" or p.isdigit() for p in tail.split(":")):
        return head, parse_frame_range(tail)
    return text, None


# ------------------------------------------------------------------------------------------------ lists
def read_tum_list(path: str | os.PathLike, columns: int) -> tuple[np.ndarray, list[list[str]]]:
    """A TUM list file: (stamps (N,) float64 seconds, the other ``columns - 1`` fields of each line).

    ``#`` lines and blank lines are skipped (commas count as spaces, as in associate.py). ValueError naming the
    file and line when a line has another number of fields or a stamp that is not a finite number, or when the
    stamps are not strictly increasing.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: missing (a TUM sequence has rgb.txt, depth.txt and groundtruth.txt)")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from exc
    stamps, rows = [], []
    for number, line in enumerate(lines, start=1):
        fields = line.replace(",", " ").split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != columns:
            raise ValueError(f"{path}:{number}: expected {columns} fields, got {len(fields)}: {line.strip()!r}")
        try:
            stamp = float(fields[0])
        except ValueError:
            raise ValueError(f"{path}:{number}: timestamp {fields[0]!r} is not a number") from None
        if not np.isfinite(stamp):
            raise ValueError(f"{path}:{number}: non-finite timestamp")
        stamps.append(stamp)
        rows.append(fields[1:])
    if not stamps:
        raise ValueError(f"{path}: no entries")
    stamps = np.asarray(stamps, dtype=np.float64)
    if np.any(np.diff(stamps) <= 0):
        bad = int(np.argmax(np.diff(stamps) <= 0))
        raise ValueError(f"{path}: timestamps are not strictly increasing (entry {bad + 1}: {stamps[bad]!r}, then "
                         f"{stamps[bad + 1]!r})")
    return stamps, rows


def read_groundtruth(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """groundtruth.txt -> (stamps (N,), translations (N, 3), quaternions (N, 4) x y z w), all float64.
    ValueError on a non-number or a quaternion far from unit length (more than 1%)."""
    stamps, rows = read_tum_list(path, 8)
    try:
        values = np.asarray(rows, dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: a pose is not 7 numbers ({exc})") from None
    if not np.isfinite(values).all():
        raise ValueError(f"{path}: non-finite pose values")
    norm = np.linalg.norm(values[:, 3:], axis=1)
    if np.any(np.abs(norm - 1.0) > 0.01):
        bad = int(np.argmax(np.abs(norm - 1.0) > 0.01))
        raise ValueError(f"{path}: quaternion {bad + 1} has norm {norm[bad]:.4f}, not 1 (qx qy qz qw expected)")
    return stamps, values[:, :3], values[:, 3:] / norm[:, None]


def associate(first: Sequence[float], second: Sequence[float], max_difference: float = MAX_DIFFERENCE,
              offset: float = 0.0) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` of ``first[i]`` and ``second[j] + offset`` closer than ``max_difference`` seconds, taken
    greedily by smallest difference (ties: earlier ``first``, then earlier ``second``), each index at most once,
    sorted by ``i``: the benchmark's association rule."""
    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64) + float(offset)
    if not max_difference > 0:
        raise ValueError(f"max_difference must be > 0, got {max_difference}")
    order = np.argsort(b, kind="stable")
    sorted_b = b[order]
    candidates = []
    for i, t in enumerate(a):
        lo, hi = np.searchsorted(sorted_b, [t - max_difference, t + max_difference])
        for k in range(max(lo - 1, 0), min(hi + 1, len(sorted_b))):
            diff = abs(t - sorted_b[k])
            if diff < max_difference:
                candidates.append((diff, i, int(order[k])))
    candidates.sort()
    used_a, used_b, pairs = set(), set(), []
    for _, i, j in candidates:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def interpolate_poses(gt_stamps: np.ndarray, translations: np.ndarray, quaternions: np.ndarray,
                      stamps: Sequence[float], max_difference: float = MAX_DIFFERENCE
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Poses at ``stamps`` from ground-truth samples (see the module docstring): (cam_to_world (N, 4, 4) float64,
    found (N,) bool); rows without a pose are identity."""
    from scipy.spatial.transform import Rotation, Slerp

    gt_stamps = np.asarray(gt_stamps, dtype=np.float64)
    stamps = np.asarray(stamps, dtype=np.float64)
    out = np.tile(np.eye(4), (len(stamps), 1, 1))
    found = np.zeros(len(stamps), dtype=bool)
    rotations = Rotation.from_quat(quaternions)
    after = np.searchsorted(gt_stamps, stamps, side="left")  # first sample >= stamp
    for n, (t, k) in enumerate(zip(stamps, after)):
        if k < len(gt_stamps) and gt_stamps[k] == t:
            lo = hi = k
        else:
            lo, hi = k - 1, k
        near_lo = lo >= 0 and t - gt_stamps[lo] <= max_difference
        near_hi = hi < len(gt_stamps) and gt_stamps[hi] - t <= max_difference
        if near_lo and near_hi and lo != hi:
            w = (t - gt_stamps[lo]) / (gt_stamps[hi] - gt_stamps[lo])
            R = Slerp([0.0, 1.0], rotations[[lo, hi]])([w]).as_matrix()[0]
            p = (1.0 - w) * translations[lo] + w * translations[hi]
        elif near_lo or near_hi:
            pick = lo if near_lo and (not near_hi or t - gt_stamps[lo] <= gt_stamps[hi] - t) else hi
            R, p = rotations[pick].as_matrix(), translations[pick]
        else:
            continue
        out[n, :3, :3], out[n, :3, 3] = R, p
        found[n] = True
    return out, found


# ------------------------------------------------------------------------------------------------ images
def _inside(root: Path, relative: str, list_file: Path, number: int) -> Path:
    path = (root / relative).resolve()
    if os.path.isabs(relative) or not path.is_relative_to(root):
        raise ValueError(f"{list_file}: entry {number} names {relative!r}, which is outside the sequence {root}")
    if not path.is_file():
        raise ValueError(f"{list_file}: entry {number}: {relative} is missing")
    return path


def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot decode colour image {path} (corrupt or not an image)")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"colour image {path} must be 8-bit RGB, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2RGB))


def _read_depth(path: Path, scale: float) -> np.ndarray:
    import cv2

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"cannot decode depth image {path} (corrupt or not an image)")
    if raw.ndim != 2 or raw.dtype != np.uint16:
        raise ValueError(f"depth image {path} must be single-channel 16-bit ({scale:g} per metre), got {raw.dtype} "
                         f"with shape {raw.shape}")
    depth = raw.astype(np.float32) / np.float32(scale)
    depth[raw == 0] = np.nan
    return depth


class TUMSequence:
    """One TUM RGB-D sequence, associated and posed (see the module docstring).

    Args:
        root: the sequence directory.
        camera: a key of :data:`CAMERAS` or a :class:`TUMCamera` (default: from the directory name).
        max_difference: rgb <-> depth association limit, seconds.
        max_pose_difference: frame <-> ground-truth limit, seconds.
        undistort: undistort the frames to the camera's pinhole K (default: when the camera has distortion).
        frames: ``(start, end)``: keep only the associated, posed frames ``start .. end - 1`` (``end`` None: to the
            last); ValueError when that leaves none.

    Attributes: ``stamps`` (N,) rgb stamps, ``depth_stamps`` (N,), ``rgb_files``, ``depth_files``, ``cam_to_world``
    (N, 4, 4) float64, ``image_size`` (H, W) of the files, ``skipped`` {reason: count}, ``first_frame`` (the
    index of frame 0 in the whole sequence: ``start``, else 0).
    """

    def __init__(self, root: str | os.PathLike, camera: str | TUMCamera | None = None,
                 max_difference: float = MAX_DIFFERENCE, max_pose_difference: float = MAX_DIFFERENCE,
                 undistort: bool | None = None, frames: tuple[int, int | None] | None = None):
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"TUM sequence {root} is not a directory")
        self.root = root.resolve()
        self.name = self.root.name
        if isinstance(camera, str):
            if camera not in CAMERAS:
                raise ValueError(f"camera must be one of {sorted(CAMERAS)}, got {camera!r}")
            camera = CAMERAS[camera]
        self.camera = camera or camera_for(self.root)
        self.undistort = self.camera.distorted if undistort is None else bool(undistort)
        rgb_list, depth_list = self.root / "rgb.txt", self.root / "depth.txt"
        rgb_stamps, rgb_rows = read_tum_list(rgb_list, 2)
        depth_stamps, depth_rows = read_tum_list(depth_list, 2)
        gt_stamps, t, q = read_groundtruth(self.root / "groundtruth.txt")
        pairs = associate(rgb_stamps, depth_stamps, max_difference)
        self.skipped: dict[str, int] = {}
        if len(pairs) < len(rgb_stamps):
            self.skipped[f"no depth image within {max_difference:g} s"] = len(rgb_stamps) - len(pairs)
        if not pairs:
            raise ValueError(f"{self.root}: no rgb image has a depth image within {max_difference:g} s")
        rgb_i = np.array([i for i, _ in pairs])
        depth_i = np.array([j for _, j in pairs])
        poses, found = interpolate_poses(gt_stamps, t, q, rgb_stamps[rgb_i], max_pose_difference)
        if not found.all():
            self.skipped[f"no ground truth within {max_pose_difference:g} s"] = int((~found).sum())
        if not found.any():
            raise ValueError(f"{self.root}: no frame has a ground-truth pose within {max_pose_difference:g} s "
                             f"(frames {rgb_stamps[0]:.3f}..{rgb_stamps[-1]:.3f} s, ground truth "
                             f"{gt_stamps[0]:.3f}..{gt_stamps[-1]:.3f} s)")
        rgb_i, depth_i, poses = rgb_i[found], depth_i[found], poses[found]
        self.first_frame = 0
        if frames is not None:
            start, end = int(frames[0]), (len(rgb_i) if frames[1] is None else int(frames[1]))
            if not 0 <= start < min(end, len(rgb_i)):
                raise ValueError(f"{self.root}: frames {start}:{end} leave no frame of the {len(rgb_i)} associated, "
                                 f"posed ones")
            rgb_i, depth_i, poses = rgb_i[start:end], depth_i[start:end], poses[start:end]
            self.first_frame = start
        self.stamps = rgb_stamps[rgb_i]
        self.depth_stamps = depth_stamps[depth_i]
        self.cam_to_world = poses
        self.rgb_files = [_inside(self.root, rgb_rows[i][0], rgb_list, int(i) + 1) for i in rgb_i]
        self.depth_files = [_inside(self.root, depth_rows[j][0], depth_list, int(j) + 1) for j in depth_i]
        first = _read_rgb(self.rgb_files[0])
        self.image_size = (int(first.shape[0]), int(first.shape[1]))
        H, W = self.camera.size
        if abs(self.image_size[1] * H - self.image_size[0] * W) > 0.01 * H * W:
            raise ValueError(f"{self.rgb_files[0]}: {self.image_size[0]}x{self.image_size[1]} is not the "
                             f"calibration's {H}x{W} or a resized copy of it (aspect ratio differs)")
        self._maps = None

    def __len__(self) -> int:
        return len(self.stamps)

    @property
    def intrinsics(self) -> torch.Tensor:
        """(3, 3) float32 mirage K of the (undistorted) frames at :attr:`image_size`."""
        return self.camera.intrinsics(self.image_size)

    def _undistort_maps(self):
        import cv2

        if self._maps is None:
            K = self.camera.opencv_matrix(self.image_size)
            self._maps = cv2.initUndistortRectifyMap(K, np.asarray(self.camera.distortion, dtype=np.float64), None,
                                                     K, (self.image_size[1], self.image_size[0]), cv2.CV_32FC1)
        return self._maps

    def frame(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(rgb (H, W, 3) uint8, depth (H, W) float32 metres, NaN = no depth) of frame ``index``, undistorted when
        the sequence undistorts. ValueError on a corrupt file or colour and depth of different sizes."""
        import cv2

        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} out of range for {len(self)} frames")
        rgb = _read_rgb(self.rgb_files[index])
        depth = _read_depth(self.depth_files[index], DEPTH_SCALE)
        if rgb.shape[:2] != depth.shape:
            raise ValueError(f"{self.rgb_files[index].name} is {rgb.shape[0]}x{rgb.shape[1]} but its depth image "
                             f"{self.depth_files[index].name} is {depth.shape[0]}x{depth.shape[1]}")
        if rgb.shape[:2] != self.image_size:
            raise ValueError(f"{self.rgb_files[index]} is {rgb.shape[0]}x{rgb.shape[1]}, the sequence's first frame "
                             f"{self.image_size[0]}x{self.image_size[1]}")
        if self.undistort:
            mx, my = self._undistort_maps()
            rgb = cv2.remap(rgb, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            depth = cv2.remap(depth, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=float("nan"))
        return rgb, depth

    def clip(self, indices: Sequence[int] | None = None, image_size: Sequence[int] | None = None,
             name: str | None = None) -> Clip:
        """Frames ``indices`` (default all) as a :class:`Clip`, fitted to ``image_size`` (default: the files')
        with :func:`mirage.frames.fit_to_size`; depth NaN where there is none."""
        from mirage.frames import fit_to_size

        indices = list(range(len(self))) if indices is None else [int(i) for i in indices]
        if not indices:
            raise ValueError("no frame indices given")
        size = tuple(image_size or self.image_size)
        rgbs, depths = [], []
        K = self.intrinsics
        for i in indices:
            rgb, depth = self.frame(i)
            rgb_t, depth_t, K_t = fit_to_size(rgb, depth, K, size)
            rgbs.append(rgb_t)
            depths.append(depth_t)
        n = len(indices)
        return Clip(rgb=torch.stack(rgbs), intrinsics=K_t.expand(n, 3, 3).clone(),
                    cam_to_world=torch.from_numpy(self.cam_to_world[indices]).float(), depth=torch.stack(depths),
                    name=name or f"{self.name}@{indices[0]}")


# ------------------------------------------------------------------------------------------------ memory tasks
def _window_task(sequence: TUMSequence, earlier: Clip, memory_index: Sequence[int], picks: Sequence[int],
                 size: tuple[int, int], frames: Clip | None = None, offset: int = 0, suffix: str = "",
                 **task_kwargs):
    """The recorded memory task of target frames ``picks`` (indices into ``sequence``; taken from ``frames``, a clip
    of frames ``offset ..`` of it, when given) with ``earlier`` (frames ``memory_index``) as memory; named and
    numbered by the frames' indices in the whole sequence (:attr:`TUMSequence.first_frame`), ``suffix`` appended
    to the name."""
    from mirage.data.memory_task import recorded_memory_task

    base = sequence.first_frame
    name = f"{sequence.name}@{base + picks[0]}{suffix}"
    if frames is None:
        target = sequence.clip(picks, size, name=name)
    else:  # the clip's name keys the evaluation's rows and videos
        target = replace(frames.select([p - offset for p in picks]), name=name)
    return recorded_memory_task(earlier, target, name=name, variant="tum", room_seed=base + picks[0],
                                info={"frames": [base + p for p in picks],
                                      "memory_frames": [base + m for m in memory_index]}, **task_kwargs)


def tum_memory_tasks(sequence: TUMSequence, image_size: Sequence[int], num_tasks: int = 4, num_frames: int = 33,
                     frame_stride: int = 1, memory_fraction: float = 0.5, memory_frames: int = 16,
                     candidate_step: int | None = None, **task_kwargs) -> list:
    """Memory tasks (:class:`~mirage.data.memory_task.MemoryTask`) on a real sequence: the memory comes from the
    first part, the targets are later windows that look back at places the memory saw.

    * **memory**: ``memory_frames`` frames spread evenly over the first ``memory_fraction`` of the sequence;
    * **candidate windows**: ``num_frames`` frames (every ``frame_stride``-th) starting after the memory part, one
      every ``candidate_step`` frames (default a quarter of a window's span);
    * each candidate is classified by :func:`~mirage.data.memory_task.recorded_memory_task` (which of its pixels
      frame 0 does not show but the memory frames did); the ``num_tasks`` candidates with the largest
      needs-memory share that do not overlap are kept, in time order. ``task_kwargs`` (``min_frame_fraction``,
      ``min_needs_memory``, ``check_stride``) go to ``recorded_memory_task``.

    On a part of a sequence (``TUMSequence(frames=...)``) memory and windows come from that part only; names and
    frame numbers are those of the whole sequence. ValueError when the sequence is too short for a memory part and
    one window.
    """
    from mirage.camera import num_latent_frames

    num_latent_frames(num_frames)
    if num_tasks < 1 or frame_stride < 1 or memory_frames < 1 or not 0.0 < memory_fraction < 1.0:
        raise ValueError(f"need num_tasks, frame_stride, memory_frames >= 1 and memory_fraction in (0, 1), got "
                         f"{num_tasks}, {frame_stride}, {memory_frames}, {memory_fraction}")
    N = len(sequence)
    n_past = int(round(memory_fraction * N))
    span = (num_frames - 1) * frame_stride + 1
    step = candidate_step or max(1, span // 4)
    starts = list(range(n_past, N - span + 1, step))
    if n_past < 1 or not starts:
        raise ValueError(f"{sequence.name}: {N} frames split at {memory_fraction} leave {N - n_past} later frames; a "
                         f"window of {num_frames} frames with stride {frame_stride} needs {span}")
    memory_index = sorted({int(round(x)) for x in np.linspace(0, n_past - 1, min(memory_frames, n_past))})
    size = (int(image_size[0]), int(image_size[1]))
    earlier = sequence.clip(memory_index, size, name=f"{sequence.name}-memory")
    later = sequence.clip(range(n_past, N), size, name=f"{sequence.name}-later")
    scored = []
    for start in starts:
        picks = [start + k * frame_stride for k in range(num_frames)]
        task = _window_task(sequence, earlier, memory_index, picks, size, later, n_past, **task_kwargs)
        scored.append((task.needs_memory, start, task))
    chosen = []
    for _, start, task in sorted(scored, key=lambda x: (-x[0], x[1])):
        if all(abs(task.room_seed - other.room_seed) >= span for other in chosen):
            chosen.append(task)
        if len(chosen) == num_tasks:
            break
    return sorted(chosen, key=lambda t: t.room_seed)


def tum_training_tasks(sequence: TUMSequence, image_size: Sequence[int], num_frames: int = 33,
                       frame_strides: Sequence[int] = (1, 2), memory_frames: int = 16, min_history: int = 64,
                       step: int = 8, **task_kwargs) -> list:
    """Memory-task training samples from a (part of a) real sequence, the structure of the procedural pool: for
    every window start ``s`` (from ``min_history``, every ``step`` frames) and stride in ``frame_strides`` that
    fits, the target is ``num_frames`` frames from ``s`` (every stride-th), the memory ``memory_frames`` frames
    spread evenly over the frames before ``s`` (the earlier pass). Every window is kept (``task.accepted`` says
    whether it passes ``min_needs_memory``; the pool trains on all of them, as a recording does not choose where it
    looks back). Named ``<sequence>@<first frame>x<stride>``; in time order, then by stride. ValueError when no
    window fits."""
    from mirage.camera import num_latent_frames

    num_latent_frames(num_frames)
    if memory_frames < 1 or min_history < 1 or step < 1 or not frame_strides or min(frame_strides) < 1:
        raise ValueError(f"need memory_frames, min_history, step and every frame stride >= 1, got {memory_frames}, "
                         f"{min_history}, {step}, {list(frame_strides)}")
    N, size = len(sequence), (int(image_size[0]), int(image_size[1]))
    tasks = []
    for start in range(min_history, N, step):
        memory_index = sorted({int(round(x)) for x in np.linspace(0, start - 1, min(memory_frames, start))})
        earlier = None
        for stride in frame_strides:
            picks = [start + k * int(stride) for k in range(num_frames)]
            if picks[-1] >= N:
                continue
            if earlier is None:
                earlier = sequence.clip(memory_index, size, name=f"{sequence.name}-memory@{start}")
            tasks.append(_window_task(sequence, earlier, memory_index, picks, size, suffix=f"x{stride}",
                                      **task_kwargs))
    if not tasks:
        raise ValueError(f"{sequence.name}: {N} frames hold no {num_frames}-frame window after {min_history} frames "
                         f"of history at strides {list(frame_strides)}")
    return tasks
