"""Saves that are atomic *and* durable: write to a temporary name, flush it to the disk, rename, flush the directory.

``os.replace`` alone is atomic (a reader sees the old file or the new one, never half of one) but not durable: after
a power cut the rename may be on disk while the file's data is not, leaving an empty or truncated file under the
final name. POSIX makes the data durable with ``fsync`` on the file before the rename, and the rename itself with
``fsync`` on the directory that holds it (ext4, xfs and btrfs document both).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_path", "durable_replace", "save_safetensors"]


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file, or a directory and everything below it (files first, then each directory)."""
    path = Path(path)
    if path.is_dir():
        for root, dirs, files in os.walk(path, topdown=False):
            for name in files:
                _fsync(Path(root) / name, os.O_RDONLY)
            _fsync_dir(Path(root))
    else:
        _fsync(path, os.O_RDONLY)


def durable_replace(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename the finished ``tmp`` (a file or a directory tree) over ``target``, durably.

    1. fsync ``tmp`` (for a directory: every file and directory in it), so its data is on the disk;
    2. ``os.replace`` it over ``target`` (atomic on one file system);
    3. fsync ``target``'s parent directory, so the rename is on the disk too.
    """
    fsync_path(tmp)
    os.replace(tmp, target)
    _fsync_dir(Path(target).resolve().parent)


def save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write a safetensors file at ``path`` atomically and durably: to a hidden temporary name beside it (one per
    process, so writers of different shards never share one), then :func:`durable_replace`. Nothing is left
    behind when writing fails."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        durable_replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # file systems (or platforms) that cannot fsync a directory: the file itself is durable
        pass
