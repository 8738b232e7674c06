"""Point-cloud pieces shared by the latent memory and the RGB baseline.

* :func:`pool_depth` - the rule that turns a pixel depth map into one depth per grid cell.
* :class:`PointStore` - points with one value row each, bounded by voxel dedup and a capacity.
* :func:`save_store` / :func:`load_store` - safetensors persistence with checked metadata.
* :func:`pca_colors`, :func:`write_ply` - turning stored features into something you can look at.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from mirage.camera import valid_depth_mask

__all__ = ["pool_depth", "voxel_keys", "PointStore", "save_store", "load_store", "pca_colors",
           "subsample_indices", "write_ply", "read_ply"]

_VOXEL_BITS = 21  # per axis; three axes fill 63 bits of an int64
_VOXEL_RANGE = 2 ** (_VOXEL_BITS - 1)


def pool_depth(
    depth: torch.Tensor, grid_size: tuple[int, int], exclude: torch.Tensor | None = None,
    min_valid_fraction: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Downsample depth (..., H, W) to a grid (..., h, w); H, W must be multiples of h, w.

    Rule: a cell is valid when at least ``min_valid_fraction`` of its pixels have valid depth (finite,
    > 0) and none of its pixels is in ``exclude`` (..., H, W) bool; its depth is the median of its valid
    pixels (the lower of the two middle values for an even count, so it is always an observed depth).
    Returns (cell_depth (..., h, w) float32, 0 where invalid; cell_valid (..., h, w) bool).
    """
    H, W = depth.shape[-2:]
    h, w = int(grid_size[0]), int(grid_size[1])
    if h <= 0 or w <= 0 or H % h or W % w:
        raise ValueError(f"image size {H}x{W} is not a whole multiple of the latent grid {h}x{w}")
    sh, sw = H // h, W // w
    lead = depth.shape[:-2]

    def cells(x: torch.Tensor) -> torch.Tensor:  # (..., H, W) -> (..., h, w, sh*sw)
        x = x.reshape(*lead, h, sh, w, sw).transpose(-3, -2)
        return x.reshape(*lead, h, w, sh * sw)

    d = depth.float()
    valid = valid_depth_mask(d)
    patches = cells(torch.where(valid, d, torch.full_like(d, float("nan"))))
    fraction = cells(valid).float().mean(-1)
    cell_valid = (fraction >= min_valid_fraction) & (fraction > 0)
    if exclude is not None:
        cell_valid &= ~cells(exclude.bool()).any(-1)
    median = patches.nanmedian(dim=-1).values
    cell_depth = torch.where(cell_valid, median, torch.zeros_like(median))
    return cell_depth, cell_valid


def voxel_keys(points: torch.Tensor, voxel_size: float) -> torch.Tensor:
    """Integer voxel coordinates of (N, 3) points packed into (N,) int64 keys (21 bits per axis).

    Raises ValueError for points beyond +-2^20 voxels of the origin (about 52 km at 5 cm voxels).
    """
    coords = torch.floor(points.double() / voxel_size)
    if coords.numel() and coords.abs().max() >= _VOXEL_RANGE:
        raise ValueError(f"points lie more than {_VOXEL_RANGE} voxels ({_VOXEL_RANGE * voxel_size:.4g} m) from "
                         "the world origin; use a larger voxel_size or recentre the world frame")
    c = (coords.to(torch.int64) + _VOXEL_RANGE)
    return (c[:, 0] << (2 * _VOXEL_BITS)) | (c[:, 1] << _VOXEL_BITS) | c[:, 2]


def _contains(keys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """(Q,) bool: whether each query is in ``keys`` (M,). O(Q log M), cheap for the few new keys of
    one insert against many stored points (torch.isin sorts both sides)."""
    if keys.numel() == 0:
        return torch.zeros_like(queries, dtype=torch.bool)
    sorted_keys = torch.sort(keys).values
    pos = torch.searchsorted(sorted_keys, queries).clamp_(max=keys.numel() - 1)
    return sorted_keys[pos] == queries


def _stable_argsort(x: torch.Tensor) -> torch.Tensor:
    return torch.sort(x, stable=True).indices


@dataclass
class PointStore:
    """N points, one value row each, kept in write order (oldest first).

    points (N, 3) float32; values (N, C) any dtype; stamps (N,) int32 frame counter of the write;
    keys (N,) int64 voxel keys (empty when voxel_size is None).

    Growth rules (:meth:`merged`):
      * voxel dedup: a new point replaces every stored point in its voxel (newer observation wins);
        among new points sharing a voxel, the newest frame wins, then the smallest ``priority``
        (camera depth: the nearest observation), then the lowest position in the input.
      * capacity: beyond ``max_points`` the least recently written points are evicted first; within
        one frame, the earliest stored (lowest index) go first. Storage order is write order, so
        eviction drops a prefix.
    """

    points: torch.Tensor
    values: torch.Tensor
    stamps: torch.Tensor
    keys: torch.Tensor

    @classmethod
    def empty(cls, channels: int, device=None, dtype=torch.float32) -> "PointStore":
        return cls(
            points=torch.zeros(0, 3, dtype=torch.float32, device=device),
            values=torch.zeros(0, channels, dtype=dtype, device=device),
            stamps=torch.zeros(0, dtype=torch.int32, device=device),
            keys=torch.zeros(0, dtype=torch.int64, device=device),
        )

    def __len__(self) -> int:
        return self.points.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.points, self.values, self.stamps, self.keys))

    def to(self, device=None, dtype=None) -> "PointStore":
        return PointStore(self.points.to(device), self.values.to(device=device, dtype=dtype),
                          self.stamps.to(device), self.keys.to(device))

    def merged(
        self, points: torch.Tensor, values: torch.Tensor, stamps: torch.Tensor, priority: torch.Tensor,
        voxel_size: float | None, max_points: int | None,
    ) -> tuple["PointStore", int]:
        """New store with (M, 3) points / (M, C) values / (M,) stamps added; self is not modified.

        Stamps must be >= every stored stamp and non-decreasing along M (frames in time order).
        Returns (store, number of new points kept after dedup within the new batch).
        """
        if voxel_size is not None:
            keys = voxel_keys(points, voxel_size)
            # Lexicographic (key, -stamp, priority, index) via stable sorts, least significant first.
            order = _stable_argsort(priority)
            order = order[_stable_argsort(-stamps[order].to(torch.int64))]
            order = order[_stable_argsort(keys[order])]
            sorted_keys = keys[order]
            first = torch.ones_like(sorted_keys, dtype=torch.bool)
            first[1:] = sorted_keys[1:] != sorted_keys[:-1]
            chosen = torch.sort(order[first]).values  # back to input (write) order
            keys = keys[chosen]
            points, values, stamps = points[chosen], values[chosen], stamps[chosen]
            keep_old = ~_contains(keys, self.keys)
            if bool(keep_old.all()):
                keep_old = None  # nothing replaced: skip the masked copy
        else:
            keys = self.keys[:0]
            keep_old = None

        def grow(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            if keep_old is not None:
                old = old[keep_old]
            return torch.cat([old, new.to(device=old.device, dtype=old.dtype)])

        out = PointStore(grow(self.points, points), grow(self.values, values), grow(self.stamps, stamps),
                         grow(self.keys, keys) if voxel_size is not None else self.keys)
        if max_points is not None and len(out) > max_points:
            out = out.tail(max_points)
        return out, points.shape[0]

    def tail(self, n: int) -> "PointStore":
        """The n most recently written points."""
        start = max(len(self) - n, 0)
        return PointStore(self.points[start:], self.values[start:], self.stamps[start:], self.keys[start:])


_FORMAT_VERSION = 1


def save_store(path: str | os.PathLike, store: PointStore, kind: str, config: dict) -> None:
    """Write a store and its config to a .safetensors file (written to a temp file, then renamed)."""
    from safetensors.torch import save_file

    tensors = {"points": store.points, "values": store.values, "stamps": store.stamps}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {"format": kind, "format_version": str(_FORMAT_VERSION), "config": json.dumps(config),
                "dtype": str(store.values.dtype).replace("torch.", "")}
    tmp = f"{os.fspath(path)}.tmp"
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)


def load_store(path: str | os.PathLike, kind: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Read tensors and config written by :func:`save_store`; ValueError if it is not a valid ``kind`` file."""
    from safetensors import safe_open

    path = os.fspath(path)
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise
    except Exception as exc:  # safetensors raises its own error types for truncated / garbled files
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc
    if metadata.get("format") != kind:
        raise ValueError(f"{path}: expected a {kind} file, found format {metadata.get('format')!r}")
    if metadata.get("format_version") != str(_FORMAT_VERSION):
        raise ValueError(f"{path}: unsupported format_version {metadata.get('format_version')!r} "
                         f"(this mirage reads version {_FORMAT_VERSION})")
    try:
        config = json.loads(metadata["config"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: missing or malformed config metadata") from exc
    missing = {"points", "values", "stamps"} - set(tensors)
    if missing:
        raise ValueError(f"{path}: missing tensors {sorted(missing)}")
    n = tensors["points"].shape[0]
    if (tensors["points"].ndim != 2 or tensors["points"].shape[1] != 3 or tensors["points"].dtype != torch.float32
            or tensors["values"].ndim != 2 or tensors["values"].shape[0] != n or tensors["stamps"].shape != (n,)):
        raise ValueError(f"{path}: inconsistent tensor shapes (points {tuple(tensors['points'].shape)}, "
                         f"values {tuple(tensors['values'].shape)}, stamps {tuple(tensors['stamps'].shape)})")
    if str(tensors["values"].dtype).replace("torch.", "") != metadata.get("dtype"):
        raise ValueError(f"{path}: values dtype {tensors['values'].dtype} does not match metadata "
                         f"{metadata.get('dtype')!r}")
    if not torch.isfinite(tensors["points"]).all():
        raise ValueError(f"{path}: non-finite points")
    if n > 1 and (tensors["stamps"][1:] < tensors["stamps"][:-1]).any():
        raise ValueError(f"{path}: stamps are not in write order")
    return tensors, config


# --------------------------------------------------------------------------------------------------
# Looking at it
# --------------------------------------------------------------------------------------------------
def subsample_indices(n: int, max_points: int | None) -> torch.Tensor:
    """Evenly spaced, deterministic subset of range(n) of at most max_points indices."""
    if max_points is None or n <= max_points:
        return torch.arange(n)
    return torch.linspace(0, n - 1, max_points).round().long().unique()


def pca_colors(features: torch.Tensor) -> torch.Tensor:
    """Map (N, C) features to (N, 3) colours in [0, 1] along their top-3 principal components.

    Deterministic: components from the C x C covariance, each sign fixed so its largest loading is
    positive; each channel is stretched between its 1st and 99th percentile.
    """
    x = features.detach().float().cpu()
    n, c = x.shape
    if n == 0:
        return torch.zeros(0, 3)
    x = x - x.mean(0)
    cov = x.T @ x / max(n - 1, 1)
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    comps = vecs[:, -3:].flip(-1)
    sign = torch.sign(comps.gather(0, comps.abs().argmax(0, keepdim=True)))
    comps = comps * torch.where(sign == 0, torch.ones_like(sign), sign)
    if c < 3:
        comps = torch.cat([comps, torch.zeros(c, 3 - comps.shape[1])], dim=1)
    y = x @ comps
    sample = y[subsample_indices(n, 100_000)]
    lo, hi = torch.quantile(sample, 0.01, dim=0), torch.quantile(sample, 0.99, dim=0)
    return ((y - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)


def write_ply(path: str | os.PathLike, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Write a binary little-endian PLY with float32 x, y, z and uint8 red, green, blue per vertex.

    (Written directly with numpy: open3d, the obvious library, fails to import where libusb is missing.)
    """
    xyz = np.ascontiguousarray(xyz, dtype=np.float32).reshape(-1, 3)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1, 3)
    if xyz.shape[0] != rgb.shape[0]:
        raise ValueError(f"xyz and rgb must have the same number of rows, got {xyz.shape[0]} and {rgb.shape[0]}")
    vertex = np.empty(xyz.shape[0], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                            ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    vertex["x"], vertex["y"], vertex["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    vertex["red"], vertex["green"], vertex["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    header = ("ply\nformat binary_little_endian 1.0\ncomment written by mirage\n"
              f"element vertex {xyz.shape[0]}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(vertex.tobytes())


def read_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read back a PLY written by :func:`write_ply` -> (xyz (N, 3) float32, rgb (N, 3) uint8)."""
    with open(path, "rb") as f:
        data = f.read()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    header = data[:end].decode("ascii").splitlines()
    n = next(int(line.split()[-1]) for line in header if line.startswith("element vertex"))
    vertex = np.frombuffer(data[end + len(b"end_header\n"):], count=n,
                           dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    return (np.stack([vertex["x"], vertex["y"], vertex["z"]], 1),
            np.stack([vertex["r"], vertex["g"], vertex["b"]], 1))


# --------------------------------------------------------------------------------------------------
# Frames -> points
# --------------------------------------------------------------------------------------------------
def check_frames(
    depth: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, exclude: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validate a T-leading batch of frames and broadcast it; ValueError naming the problem.

    depth (T, H, W) float; intrinsics (3, 3) or (T, 3, 3) at (H, W); cam_to_world (T, 4, 4);
    exclude None or (T, H, W) bool. Returns (depth, K (T, 3, 3), c2w (T, 4, 4), exclude) as float32/bool.
    """
    from mirage.camera import validate_depth, validate_intrinsics, validate_pose

    validate_depth(depth, "depth")
    if depth.ndim != 3:
        raise ValueError(f"depth must have shape (T, H, W), got {tuple(depth.shape)}")
    T, H, W = depth.shape
    validate_intrinsics(intrinsics, "intrinsics")
    if intrinsics.ndim == 2:
        intrinsics = intrinsics.expand(T, 3, 3)
    if intrinsics.shape != (T, 3, 3):
        raise ValueError(f"intrinsics must be (3, 3) or ({T}, 3, 3), got {tuple(intrinsics.shape)}")
    validate_pose(cam_to_world, "cam_to_world")
    if cam_to_world.shape != (T, 4, 4):
        raise ValueError(f"cam_to_world must be ({T}, 4, 4), got {tuple(cam_to_world.shape)}")
    if exclude is not None:
        if not isinstance(exclude, torch.Tensor) or exclude.shape != (T, H, W):
            raise ValueError(f"exclude must be a bool tensor of shape {(T, H, W)}, got "
                             f"{tuple(exclude.shape) if isinstance(exclude, torch.Tensor) else type(exclude).__name__}")
        if exclude.dtype != torch.bool:
            raise ValueError(f"exclude must be bool, got {exclude.dtype}")
    return depth.float(), intrinsics.float(), cam_to_world.float(), exclude


def lift_frames(
    depth: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, grid_size: tuple[int, int],
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Back-project every valid cell centre of T frames to world space.

    depth (T, H, W); intrinsics (T, 3, 3) at (H, W); cam_to_world (T, 4, 4); exclude (T, H, W) | None.
    Depth is pooled to ``grid_size`` with :func:`pool_depth` and each valid cell's centre is lifted with
    the intrinsics scaled to the grid (a grid equal to (H, W) keeps one point per valid pixel).
    Returns, for the M valid cells in (frame, row, col) order: frame_index (M,) int64,
    cell_index (M,) int64 (row-major in the grid), points (M, 3) float32, camera depth (M,) float32.
    """
    from mirage.camera import backproject_depth, scale_intrinsics

    H, W = depth.shape[-2:]
    h, w = grid_size
    if (h, w) == (H, W):
        cell_depth = depth.float()
        cell_valid = valid_depth_mask(cell_depth)
        if exclude is not None:
            cell_valid &= ~exclude
    else:
        cell_depth, cell_valid = pool_depth(depth, grid_size, exclude)
    K = scale_intrinsics(intrinsics, (H, W), (h, w))
    frame_index, row, col = cell_valid.nonzero(as_tuple=True)
    z = cell_depth[frame_index, row, col]
    safe = torch.where(cell_valid, cell_depth, torch.ones_like(cell_depth))
    points = backproject_depth(safe, K, cam_to_world)[frame_index, row, col]
    return frame_index, row * w + col, points.float(), z.float()


def check_grid_sizes(image_size, latent_size) -> tuple[int, int, int, int]:
    """Parse (H, W) and (h, w) size pairs -> H, W, h, w; ValueError unless positive integers."""
    try:
        H, W = (int(s) for s in image_size)
        h, w = (int(s) for s in latent_size)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"image_size and latent_size must be (height, width) pairs, got {image_size}, "
                         f"{latent_size}") from exc
    if min(H, W, h, w) <= 0:
        raise ValueError(f"image_size {image_size} and latent_size {latent_size} must be positive")
    return H, W, h, w
