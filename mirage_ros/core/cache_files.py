"""Where ``~/save_cache`` and ``~/load_cache`` may read and write: one directory, relative names only (no ROS).

A service request names a file *inside* the node's ``cache_directory`` parameter: a relative path without ``..``,
ending in ``.safetensors``, that stays inside the directory once symbolic links are resolved. Anything else is
refused with a ValueError that says why, before a file or directory is touched. Saving creates the cache
directory and subdirectories below it, never anything elsewhere; the memory's own ``save`` writes a temporary
file next to the target and renames it over the target (:func:`mirage.memory.io.save_store`), so a crash or a
full disk mid-save leaves the previous file intact.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

__all__ = ["CacheDirectory", "default_cache_directory", "SUFFIX"]

SUFFIX = ".safetensors"


def default_cache_directory(environ: dict | None = None) -> Path:
    """``$ROS_HOME/mirage`` (ROS_HOME defaults to ``~/.ros``, where ROS 2 keeps its logs)."""
    env = os.environ if environ is None else environ
    ros_home = env.get("ROS_HOME") or os.path.join(os.path.expanduser("~"), ".ros")
    return Path(ros_home) / "mirage"


class CacheDirectory:
    """The directory the cache services are confined to (``root``; empty: :func:`default_cache_directory`)."""

    def __init__(self, root: str | os.PathLike = ""):
        root = Path(os.path.expanduser(str(root))) if str(root) else default_cache_directory()
        if not root.is_absolute():
            root = Path.cwd() / root
        self.root = root

    def resolve(self, name: str) -> Path:
        """The file ``name`` names inside the directory; ValueError when it is empty, absolute, has ``..``, does not
        end in ``.safetensors`` or leads outside (through a symbolic link). Touches nothing."""
        if not name or not name.strip():
            raise ValueError(f"give a file name relative to the cache directory {self.root}")
        parts = PurePosixPath(name.replace("\\", "/"))
        if parts.is_absolute() or Path(name).is_absolute() or name.startswith("~"):
            raise ValueError(f"{name!r} is absolute: give a name relative to the cache directory {self.root}")
        if ".." in parts.parts:
            raise ValueError(f"{name!r} contains '..': names must stay inside the cache directory {self.root}")
        if not parts.name.endswith(SUFFIX) or parts.name == SUFFIX:
            raise ValueError(f"{name!r} must name a {SUFFIX} file")
        target = self.root.joinpath(*parts.parts)
        if not self._inside(target):
            raise ValueError(f"{name!r} leads outside the cache directory {self.root} (a symbolic link to "
                             f"{os.path.realpath(target)})")
        return target

    def _inside(self, path: Path) -> bool:
        """Whether ``path``, symbolic links resolved, lies below the (resolved) cache directory."""
        return Path(os.path.realpath(self.root)) in Path(os.path.realpath(path)).parents

    def for_save(self, name: str) -> Path:
        """:meth:`resolve`, then create the cache directory and the subdirectories up to the file (nothing else)."""
        target = self.resolve(name)
        if target.is_dir():
            raise ValueError(f"{name!r} is a directory in {self.root}; give a file name")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not self._inside(target):  # a link swapped in meanwhile
            raise ValueError(f"{name!r} leads outside the cache directory {self.root}")
        return target

    def for_load(self, name: str) -> Path:
        """:meth:`resolve`, and the file must exist."""
        target = self.resolve(name)
        if not target.is_file():
            raise ValueError(f"no file {name!r} in the cache directory {self.root}")
        return target
