"""LD_LIBRARY_PATH for ROS 2 from PyPI wheels, in a deterministic order (stdlib only; runs at interpreter start).

The ROS wheels' ``ros-wheels-bootstrapper`` (a ``.pth`` file) re-executes every Python of the venv with
``<venv>/lib`` and the wheels' ``ros_*.libs`` directories added to LD_LIBRARY_PATH, but it builds the list through a
``set``: the order of every entry, the user's own included, changes with the interpreter's string hash seed, i.e.
from one run to the next, so which of two copies of a library wins is a coin toss (issue 19).

``scripts/bootstrap.sh`` copies this file into the venv's site-packages as ``_mirage_ros_wheels_path.py`` with a
``_mirage_ros_wheels_path.pth`` next to it; ``.pth`` files run in name order, so it runs before
``ros_wheels_bootstrapper.pth``, sets the same variables (and the bootstrapper's guard, so that one then does
nothing) and re-executes once, with this order:

1. the entries already on LD_LIBRARY_PATH, in their order (what the user or a sourced workspace's setup script put
   first stays first, as with ament's own setup scripts), empty entries (= the current directory) dropped;
2. ``<sys.prefix>/lib`` (the ROS libraries of the wheels);
3. the ``ros_*.libs`` directories of site-packages (the wheels' vendored libraries), sorted by name.

Each directory appears once (its first place wins).
"""

from __future__ import annotations

import os
import sys

__all__ = ["GUARD", "library_path", "bootstrap"]

GUARD = "_ROS_WHEELS_BOOTSTRAP_COMPLETE"  # ros-wheels-bootstrapper's own guard variable


def library_path(existing: str, prefix: str, site_packages: str) -> str:
    """The LD_LIBRARY_PATH value for ``existing`` (the current value), a venv ``prefix`` and its site-packages."""
    parts = [p for p in existing.split(os.pathsep) if p]
    lib = os.path.join(prefix, "lib")
    if os.path.isdir(lib):
        parts.append(lib)
    try:
        names = sorted(os.listdir(site_packages))
    except OSError:
        names = []
    parts += [os.path.realpath(os.path.join(site_packages, n)) for n in names
              if n.startswith("ros_") and n.endswith(".libs") and os.path.isdir(os.path.join(site_packages, n))]
    seen: set[str] = set()
    ordered = []
    for p in parts:
        if p not in seen:
            seen.add(p)
            ordered.append(p)
    return os.pathsep.join(ordered)


def bootstrap() -> None:
    """Set LD_LIBRARY_PATH and the guard, and re-execute this interpreter once (the dynamic loader reads the
    variable only at process start). Does nothing once the guard is set."""
    if os.environ.get(GUARD):
        return
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = library_path(env.get("LD_LIBRARY_PATH", ""), sys.prefix,
                                          os.path.dirname(os.path.abspath(__file__)))
    env[GUARD] = "1"
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError as exc:
        sys.stderr.write(f"mirage: could not re-execute with the ROS wheels' LD_LIBRARY_PATH: {exc}\n")


if __name__ == "_mirage_ros_wheels_path":  # imported by its .pth in a venv's site-packages
    bootstrap()
