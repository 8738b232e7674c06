"""RealEstate10K-format clips: one camera file per clip, frames as images or a video, optional depth and masks.

Camera file (``<clip>.txt``, the RealEstate10K release format): an optional first line holding the source
URL, then one line per frame with 19 numbers::

    timestamp_us fx fy cx cy 0 0 r00 r01 r02 t0 r10 r11 r12 t1 r20 r21 r22 t2

``fx fy cx cy`` are normalised by the image width / height (``cx = 0.5`` is the image centre, which is the
continuous-coordinate convention of :mod:`mirage.camera`, so pixels are simply ``fx * W`` etc.), and the
3x4 matrix is world-to-camera, row-major, OpenCV axes. Folder layout (``root`` may also hold the camera
files directly)::

    root/cameras/<clip>.txt
    root/frames/<clip>/<timestamp>.png|jpg   (or any names: sorted order = line order)
    root/videos/<clip>.mp4                   (alternative to frames/: frame i = camera line i)
    root/depth/<clip>/<timestamp>.npy|png    optional: .npy float metres, .png uint16 millimetres (0 = none)
    root/masks/<clip>/<timestamp>.png        optional dynamic masks, nonzero = moving

Depth is in the units of the camera translations (RealEstate10K poses have an arbitrary scale per clip;
the depth that goes with them must share it). Where no depth files exist a ``depth_provider`` may supply
depth from the frames (``provider(frames (T,3,H,W)) -> (T,H,W)``, the :mod:`mirage.perception.depth` interface).

A clip whose camera file is malformed or truncated is left out of the index with a warning; a clip whose
frames cannot be read when it is loaded is skipped with a warning and the next one is used.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from mirage.camera import invert_pose, make_intrinsics, num_latent_frames
from mirage.data.clip import Clip

__all__ = ["CameraTrack", "parse_camera_file", "write_camera_file", "RealEstate10KDataset", "ClipSkippedWarning"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm")
_VALUES_PER_LINE = 19


class ClipSkippedWarning(UserWarning):
    """A clip could not be used (malformed camera file, unreadable frames) and was skipped."""


@dataclass
class CameraTrack:
    """Parsed camera file. timestamps: (N,) int64 microseconds; intrinsics_normalized: (N, 4) fx fy cx cy
    divided by width / height; world_to_camera: (N, 4, 4) float64; url: the first line, or ''."""

    timestamps: np.ndarray
    intrinsics_normalized: np.ndarray
    world_to_camera: np.ndarray
    url: str = ""

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    def intrinsics(self, height: int, width: int) -> torch.Tensor:
        """(N, 3, 3) pixel intrinsics for frames of (height, width)."""
        fx, fy, cx, cy = (self.intrinsics_normalized[:, i] for i in range(4))
        return torch.stack([make_intrinsics(a * width, b * height, c * width, d * height)
                            for a, b, c, d in zip(fx, fy, cx, cy)])

    def cam_to_world(self) -> torch.Tensor:
        """(N, 4, 4) float32 camera-to-world poses."""
        return invert_pose(torch.from_numpy(self.world_to_camera)).float()


def parse_camera_file(path: str | os.PathLike) -> CameraTrack:
    """Read a RealEstate10K camera file; raise ValueError naming the file and line when it is malformed."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read camera file ({exc})") from exc
    url, rows = "", []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if number == 1 and len(fields) == 1 and not _is_number(fields[0]):
            url = fields[0]
            continue
        if len(fields) != _VALUES_PER_LINE:
            raise ValueError(f"{path}:{number}: expected {_VALUES_PER_LINE} numbers (timestamp, fx fy cx cy, 0 0, "
                             f"3x4 world-to-camera), got {len(fields)} (truncated or corrupt file?)")
        try:
            values = [float(v) for v in fields]
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: not a number ({exc})") from exc
        if not np.isfinite(values).all():
            raise ValueError(f"{path}:{number}: non-finite value")
        rows.append(values)
    if not rows:
        raise ValueError(f"{path}: no camera lines")
    data = np.asarray(rows, dtype=np.float64)
    timestamps = data[:, 0].astype(np.int64)
    if np.any(np.diff(timestamps) <= 0):
        raise ValueError(f"{path}: timestamps are not strictly increasing")
    intr = data[:, 1:5]
    if np.any(intr[:, :2] <= 0):
        raise ValueError(f"{path}: non-positive focal length")
    w2c = np.tile(np.eye(4), (len(rows), 1, 1))
    w2c[:, :3, :4] = data[:, 7:19].reshape(-1, 3, 4)
    R = w2c[:, :3, :3]
    err = np.abs(np.einsum("nij,nik->njk", R, R) - np.eye(3)).max()
    if err > 1e-3 or np.any(np.linalg.det(R) <= 0):
        raise ValueError(f"{path}: rotation part is not a proper rotation (max |R^T R - I| = {err:.3g})")
    return CameraTrack(timestamps, intr, w2c, url)


def write_camera_file(path: str | os.PathLike, timestamps: Sequence[int], intrinsics: torch.Tensor,
                      cam_to_world: torch.Tensor, image_size: Sequence[int], url: str = "") -> None:
    """Write a camera file (the inverse of :func:`parse_camera_file`); intrinsics (N,3,3) at image_size (H, W)."""
    H, W = int(image_size[0]), int(image_size[1])
    w2c = invert_pose(cam_to_world.double())
    with open(path, "w") as f:
        if url:
            f.write(url + "\n")
        for ts, K, T in zip(timestamps, intrinsics.double(), w2c):
            vals = [K[0, 0] / W, K[1, 1] / H, K[0, 2] / W, K[1, 2] / H, 0.0, 0.0, *T[:3, :4].reshape(-1).tolist()]
            f.write(f"{int(ts)} " + " ".join(f"{float(v):.9g}" for v in vals) + "\n")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------------
# Image helpers
# --------------------------------------------------------------------------------------------------
def _center_crop_box(height: int, width: int, out_size: Sequence[int]) -> tuple[float, float, float, float]:
    """Normalised (x0, y0, w, h) of the largest centred crop with the aspect ratio of out_size."""
    target = out_size[1] / out_size[0]
    if width / height > target:
        w = target * height / width
        return (1.0 - w) / 2.0, 0.0, w, 1.0
    h = width / target / height
    return 0.0, (1.0 - h) / 2.0, 1.0, h


def _crop_resize(array: np.ndarray, out_size: Sequence[int], interpolation: int) -> np.ndarray:
    H, W = array.shape[:2]
    x0, y0, w, h = _center_crop_box(H, W, out_size)
    c0, r0 = int(round(x0 * W)), int(round(y0 * H))
    c1, r1 = c0 + max(1, int(round(w * W))), r0 + max(1, int(round(h * H)))
    crop = np.ascontiguousarray(array[r0:r1, c0:c1])
    return cv2.resize(crop, (int(out_size[1]), int(out_size[0])), interpolation=interpolation)


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _read_depth(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        depth = np.load(path, allow_pickle=False)
        if depth.ndim != 2:
            raise ValueError(f"depth file {path} must hold an (H, W) array, got {depth.shape}")
        return depth.astype(np.float32)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 2 or raw.dtype != np.uint16:
        raise ValueError(f"depth image {path} must be single-channel uint16 millimetres")
    return raw.astype(np.float32) / 1000.0


def _read_mask(path: Path) -> np.ndarray:
    raw = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if raw is None:
        raise ValueError(f"cannot decode mask {path}")
    return raw > 0


def _read_video_frames(path: Path, indices: Sequence[int]) -> list[np.ndarray]:
    wanted = sorted(set(int(i) for i in indices))
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"cannot open video {path}")
    frames: dict[int, np.ndarray] = {}
    try:
        index = 0
        while index <= wanted[-1]:
            ok, frame = capture.read()
            if not ok:
                raise ValueError(f"video {path} ends after {index} frames, frame {wanted[-1]} is needed "
                                 "(truncated file?)")
            if index in wanted:
                frames[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()
    return [frames[int(i)] for i in indices]


def _files_by_timestamp(folder: Path, extensions: Sequence[str], timestamps: np.ndarray) -> list[Path] | None:
    """Files in ``folder`` matched to camera lines: by timestamp stem, else by sorted order when counts agree."""
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in extensions)
    by_stem = {p.stem: p for p in files}
    matched = [by_stem.get(str(int(ts))) for ts in timestamps]
    if all(m is not None for m in matched):
        return matched
    if len(files) == len(timestamps):
        return files
    raise ValueError(f"{folder}: {len(files)} files for {len(timestamps)} camera lines, and their names are not "
                     "the timestamps")


# --------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------
class RealEstate10KDataset(Dataset):
    """Fixed-length windows of RealEstate10K-format clips, resized (centre crop + resize) to ``image_size``.

    Args:
        root: dataset folder (see the module docstring).
        num_frames: frames per window, ``1 + 4k`` (a whole number of latent frames).
        image_size: (H, W) of the returned frames (multiples of 16 for the models).
        frame_stride: take every ``frame_stride``-th camera line.
        windows_per_clip: windows per clip, start offsets spread evenly over the clip (deterministic).
        depth_provider: callable(frames (T,3,H,W) in [0,1]) -> (T,H,W) used where no depth files exist.
        require_depth: leave out clips without depth files when there is no provider.
        clips: optional list of clip names to use (default: every camera file).
    Item ``i`` is a :class:`Clip` named ``"<clip>@<start>"``.
    """

    def __init__(self, root: str | os.PathLike, num_frames: int = 9, image_size: Sequence[int] = (256, 256),
                 frame_stride: int = 1, windows_per_clip: int = 1,
                 depth_provider: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 require_depth: bool = True, clips: Sequence[str] | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"dataset root {self.root} is not a directory")
        num_latent_frames(num_frames)
        if frame_stride < 1 or windows_per_clip < 1:
            raise ValueError(f"frame_stride and windows_per_clip must be >= 1, got {frame_stride}, {windows_per_clip}")
        self.num_frames = int(num_frames)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.frame_stride = int(frame_stride)
        self.windows_per_clip = int(windows_per_clip)
        self.depth_provider = depth_provider
        self.require_depth = bool(require_depth)
        camera_dir = self.root / "cameras" if (self.root / "cameras").is_dir() else self.root
        names = sorted(p.stem for p in camera_dir.glob("*.txt")) if clips is None else list(clips)
        self._camera_dir = camera_dir
        self.tracks: dict[str, CameraTrack] = {}
        span = (self.num_frames - 1) * self.frame_stride + 1
        for name in names:
            try:
                track = parse_camera_file(camera_dir / f"{name}.txt")
                if len(track) < span:
                    raise ValueError(f"clip {name} has {len(track)} camera lines, a window needs {span}")
                if self._frame_source(name, track) is None:
                    raise ValueError(f"clip {name} has neither frames/{name}/ nor videos/{name}.*")
                if self.require_depth and depth_provider is None and not (self.root / "depth" / name).is_dir():
                    raise ValueError(f"clip {name} has no depth/{name}/ and no depth provider was given")
            except ValueError as exc:
                warnings.warn(f"skipping clip {name}: {exc}", ClipSkippedWarning, stacklevel=2)
                continue
            self.tracks[name] = track
        self.clip_names = list(self.tracks)

    def __len__(self) -> int:
        return len(self.clip_names) * self.windows_per_clip

    def _frame_source(self, name: str, track: CameraTrack) -> tuple[str, object] | None:
        folder = self.root / "frames" / name
        if folder.is_dir():
            return "images", _files_by_timestamp(folder, IMAGE_EXTENSIONS, track.timestamps)
        for ext in VIDEO_EXTENSIONS:
            video = self.root / "videos" / f"{name}{ext}"
            if video.is_file():
                return "video", video
        return None

    def window(self, index: int) -> tuple[str, np.ndarray]:
        """(clip name, camera line indices) of item ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} windows")
        name = self.clip_names[index // self.windows_per_clip]
        k = index % self.windows_per_clip
        span = (self.num_frames - 1) * self.frame_stride + 1
        slack = len(self.tracks[name]) - span
        start = 0 if self.windows_per_clip == 1 else int(round(k * slack / (self.windows_per_clip - 1)))
        return name, start + np.arange(self.num_frames) * self.frame_stride

    def item_name(self, index: int) -> str:
        """Name of item ``index`` (``"<clip>@<first line>"``) without loading it."""
        name, lines = self.window(index)
        return f"{name}@{int(lines[0])}"

    def __getitem__(self, index: int) -> Clip:
        failures = []
        n = len(self)
        if n == 0:
            raise IndexError("the dataset holds no usable clip")
        for attempt in range(n):
            i = (index + attempt * self.windows_per_clip) % n
            try:
                return self.load_window(i)
            except (ValueError, OSError, cv2.error) as exc:
                failures.append(str(exc))
                warnings.warn(f"skipping {self.window(i)[0]}: {exc}", ClipSkippedWarning, stacklevel=2)
        raise ValueError("no clip could be loaded: " + "; ".join(failures[:3]))

    def load_window(self, index: int) -> Clip:
        """Load item ``index``; raises ValueError when its files are missing or corrupt (no fallback)."""
        name, lines = self.window(index)
        track = self.tracks[name]
        H, W = self.image_size
        kind, source = self._frame_source(name, track)
        if kind == "images":
            raw = [_read_image(source[i]) for i in lines]
        else:
            raw = _read_video_frames(source, lines)
        src_h, src_w = raw[0].shape[:2]
        if any(im.shape[:2] != (src_h, src_w) for im in raw):
            raise ValueError(f"clip {name}: frames have different sizes")
        rgb = np.stack([_crop_resize(im, (H, W), cv2.INTER_AREA) for im in raw])
        rgb = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255.0

        x0, y0, cw, ch = _center_crop_box(src_h, src_w, (H, W))
        norm = track.intrinsics_normalized[lines].copy()
        norm[:, 0] /= cw
        norm[:, 1] /= ch
        norm[:, 2] = (norm[:, 2] - x0) / cw
        norm[:, 3] = (norm[:, 3] - y0) / ch
        crop_track = CameraTrack(track.timestamps[lines], norm, track.world_to_camera[lines])
        intrinsics = crop_track.intrinsics(H, W)
        cam_to_world = crop_track.cam_to_world()

        depth = self._load_depth(name, track, lines, rgb)
        dynamic = None
        mask_dir = self.root / "masks" / name
        if mask_dir.is_dir():
            files = _files_by_timestamp(mask_dir, (".png",), track.timestamps)
            masks = [_crop_resize(_read_mask(files[i]).astype(np.uint8), (H, W), cv2.INTER_NEAREST) for i in lines]
            dynamic = torch.from_numpy(np.stack(masks) > 0)
        return Clip(rgb=rgb, intrinsics=intrinsics, cam_to_world=cam_to_world, depth=depth, dynamic=dynamic,
                    name=self.item_name(index))

    def _load_depth(self, name: str, track: CameraTrack, lines: np.ndarray, rgb: torch.Tensor) -> torch.Tensor | None:
        H, W = self.image_size
        depth_dir = self.root / "depth" / name
        if depth_dir.is_dir():
            files = _files_by_timestamp(depth_dir, (".npy", ".png"), track.timestamps)
            maps = []
            for i in lines:
                d = _read_depth(files[i])
                d = np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)
                maps.append(_crop_resize(d, (H, W), cv2.INTER_NEAREST))
            return torch.from_numpy(np.stack(maps))
        if self.depth_provider is not None:
            with torch.no_grad():
                depth = self.depth_provider(rgb)
            if tuple(depth.shape) != (len(lines), H, W):
                raise ValueError(f"depth provider returned {tuple(depth.shape)}, expected {(len(lines), H, W)}")
            return depth.float().cpu()
        return None
