"""Memory files: safetensors save / load with checked metadata (atomic writes), and binary PLY point clouds.

A memory file holds the tensors ``points`` (N, 3) float32, ``values`` (N, C), ``stamps`` (N,) int32 and
optional extras (``colors`` (N, 3) uint8, a PCA display basis); metadata ``format`` (the class),
``format_version``, ``dtype`` and a JSON ``config``. Extras are optional on load, so files written before
they existed still load (format_version stays 1: older readers ignore tensors they do not know).
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from mirage.durable import durable_replace, save_safetensors

__all__ = ["save_store", "load_store", "write_ply", "read_ply", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_REQUIRED = ("points", "values", "stamps")


def save_store(path: str | os.PathLike, tensors: dict[str, torch.Tensor], kind: str, config: dict) -> None:
    """Write ``tensors`` (at least points, values, stamps) and ``config`` to a .safetensors file.

    Written to a temporary name and renamed over ``path`` durably (:func:`mirage.durable.save_safetensors`), so a
    reader never sees half a file, and a power cut leaves the old file or the new one.
    """
    missing = set(_REQUIRED) - set(tensors)
    if missing:
        raise ValueError(f"save_store: missing tensors {sorted(missing)}")
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {"format": kind, "format_version": str(FORMAT_VERSION), "config": json.dumps(config),
                "dtype": str(tensors["values"].dtype).replace("torch.", "")}
    save_safetensors(tensors, path, metadata)


def load_store(path: str | os.PathLike, kinds: str | tuple[str, ...]) -> tuple[dict[str, torch.Tensor], dict]:
    """Read tensors and config written by :func:`save_store`; ValueError unless the format is one of ``kinds``.

    Checks shapes, dtypes, finite points, write-order stamps and, when present, (N, 3) uint8 colours.
    Returns (tensors, config).
    """
    from safetensors import safe_open

    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    path = os.fspath(path)
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise
    except Exception as exc:  # safetensors raises its own error types for truncated / garbled files
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc
    if metadata.get("format") not in kinds:
        raise ValueError(f"{path}: expected a {' or '.join(kinds)} file, found format {metadata.get('format')!r}")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise ValueError(f"{path}: unsupported format_version {metadata.get('format_version')!r} "
                         f"(this mirage reads version {FORMAT_VERSION})")
    try:
        config = json.loads(metadata["config"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: missing or malformed config metadata") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{path}: config metadata must be a JSON object, got {type(config).__name__}")
    missing = set(_REQUIRED) - set(tensors)
    if missing:
        raise ValueError(f"{path}: missing tensors {sorted(missing)}")
    points, values, stamps = (tensors[k] for k in _REQUIRED)
    n = points.shape[0] if points.ndim else -1
    if (points.ndim != 2 or points.shape[1] != 3 or points.dtype != torch.float32
            or values.ndim != 2 or values.shape[0] != n or stamps.shape != (n,)):
        raise ValueError(f"{path}: inconsistent tensor shapes (points {tuple(points.shape)}, "
                         f"values {tuple(values.shape)}, stamps {tuple(stamps.shape)})")
    if str(values.dtype).replace("torch.", "") != metadata.get("dtype"):
        raise ValueError(f"{path}: values dtype {values.dtype} does not match metadata {metadata.get('dtype')!r}")
    if not torch.isfinite(points).all():
        raise ValueError(f"{path}: non-finite points")
    if n > 1 and (stamps[1:] < stamps[:-1]).any():
        raise ValueError(f"{path}: stamps are not in write order")
    colors = tensors.get("colors")
    if colors is not None and (colors.shape != (n, 3) or colors.dtype != torch.uint8):
        raise ValueError(f"{path}: colors must be ({n}, 3) uint8, got {tuple(colors.shape)} {colors.dtype}")
    return tensors, config


_PLY_VERTEX = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]


def write_ply(path: str | os.PathLike, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Write a binary little-endian PLY with float32 x, y, z and uint8 red, green, blue per vertex.

    (Written directly with numpy: open3d, the obvious library, fails to import where libusb is missing.)
    """
    xyz = np.ascontiguousarray(xyz, dtype=np.float32).reshape(-1, 3)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1, 3)
    if xyz.shape[0] != rgb.shape[0]:
        raise ValueError(f"xyz and rgb must have the same number of rows, got {xyz.shape[0]} and {rgb.shape[0]}")
    vertex = np.empty(xyz.shape[0], dtype=_PLY_VERTEX)
    vertex["x"], vertex["y"], vertex["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    vertex["red"], vertex["green"], vertex["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    header = ("ply\nformat binary_little_endian 1.0\ncomment written by mirage\n"
              f"element vertex {xyz.shape[0]}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(vertex.tobytes())
    durable_replace(tmp, path)


def read_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read back a PLY written by :func:`write_ply` -> (xyz (N, 3) float32, rgb (N, 3) uint8)."""
    with open(path, "rb") as f:
        data = f.read()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    header = data[:end].decode("ascii").splitlines()
    n = next(int(line.split()[-1]) for line in header if line.startswith("element vertex"))
    vertex = np.frombuffer(data[end + len(b"end_header\n"):], count=n, dtype=_PLY_VERTEX)
    return (np.stack([vertex["x"], vertex["y"], vertex["z"]], 1),
            np.stack([vertex["red"], vertex["green"], vertex["blue"]], 1))
