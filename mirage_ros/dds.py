"""Large images over DDS: load the shipped Fast DDS profile before rclpy initialises (no rclpy import here).

Fast DDS's default shared-memory segment is 512 KB; one 640x480 rgb8 + 16UC1 set is 1.5 MB. Between two processes
on one host the images are then lost below rclpy and /tf, reliable over the same transport, stalls until the
writer's next heartbeat (measured, issue 11). ``config/fastdds_large_data.xml`` gives every participant a 64 MiB
segment. Fast DDS reads the profile when a process creates its first participant, so
:func:`use_large_data_profile` runs before ``rclpy.init`` in every mirage_ros process (:mod:`mirage_ros.run` calls
it), and the camera driver's process needs it too (the segment belongs to the writer).

It sets ``FASTDDS_DEFAULT_PROFILES_FILE`` (read by Fast DDS 3: ROS 2 Kilted and later, and the PyPI wheels) and,
where Fast DDS 2 is installed (``ROS_DISTRO`` names a distribution that ships it: Humble, Iron, Jazzy; or, with
the PyPI wheels and no ``ROS_DISTRO``, the ament index on ``AMENT_PREFIX_PATH`` has Fast DDS 2's package
``fastrtps`` and not Fast DDS 3's ``fastdds``: the Jazzy wheels), ``FASTRTPS_DEFAULT_PROFILES_FILE`` (the only
name Fast DDS 2 reads; Fast DDS 3 warns that it is deprecated),
unless the user already set either, and only when the RMW is Fast DDS (``RMW_IMPLEMENTATION`` unset or
``rmw_fastrtps_*``). What it decided is kept in :data:`decision` for the nodes to log.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PROFILE_NAME", "PROFILE_VARIABLES", "find_profile", "is_fast_dds_2", "use_large_data_profile", "decision"]

PROFILE_NAME = "fastdds_large_data.xml"
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
FASTDDS_RMWS = ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")
FASTDDS2_DISTROS = ("humble", "iron", "jazzy")  # Fast DDS 2.x: reads FASTRTPS_DEFAULT_PROFILES_FILE only

decision = ""  # the last line use_large_data_profile() returned ("" before it ran)
_applied = ""  # the profile path this process set (a second call keeps the first decision)


def find_profile() -> Path | None:
    """The shipped profile: ``share/mirage_ros/config`` of an install on ``AMENT_PREFIX_PATH``, else the source
    tree's ``config/`` (running from a checkout). None when neither exists."""
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        candidate = Path(prefix) / "share" / "mirage_ros" / "config" / PROFILE_NAME
        if candidate.is_file():
            return candidate
    candidate = Path(__file__).resolve().parents[1] / "config" / PROFILE_NAME
    return candidate if candidate.is_file() else None


def _indexed(env, package: str) -> bool:
    """Whether an ament prefix on ``env``'s AMENT_PREFIX_PATH registers ``package``."""
    return any((Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / package).exists()
               for prefix in filter(None, env.get("AMENT_PREFIX_PATH", "").split(os.pathsep)))


def is_fast_dds_2(env) -> bool:
    """Whether the Fast DDS of this environment is 2.x (reads FASTRTPS_DEFAULT_PROFILES_FILE only)."""
    distro = env.get("ROS_DISTRO", "").lower()
    if distro:
        return distro in FASTDDS2_DISTROS
    return _indexed(env, "fastrtps") and not _indexed(env, "fastdds")


def use_large_data_profile(environ: dict | None = None) -> str:
    """Point Fast DDS at the shipped profile unless the user chose otherwise; returns (and keeps in
    :data:`decision`) one line saying what was done. ``environ`` defaults to ``os.environ`` (tests pass a dict)."""
    global decision, _applied
    env = os.environ if environ is None else environ
    rmw = env.get("RMW_IMPLEMENTATION", "")
    given = next((name for name in PROFILE_VARIABLES if env.get(name)), None)
    if rmw and rmw not in FASTDDS_RMWS:
        line = (f"DDS: RMW_IMPLEMENTATION={rmw}, so the Fast DDS profile {PROFILE_NAME} does not apply; for images "
                "above ~0.5 MB between processes give that middleware a large shared-memory or socket buffer "
                "(README: 'Large images over DDS')")
    elif given and _applied and env[given] == _applied:
        return decision  # set by an earlier call in this process
    elif given and env[given] == str(find_profile()):
        line = f"DDS: using {env[given]} ({given}, set before this process started): 64 MiB shared-memory segment"
    elif given:
        line = f"DDS: {given}={env[given]} was set by the user; keeping it (mirage's {PROFILE_NAME} is not loaded)"
    else:
        profile = find_profile()
        if profile is None:
            line = (f"DDS: {PROFILE_NAME} not found (install the package or run from the repository); Fast DDS keeps "
                    "its 512 KB shared-memory segment and loses large images between processes")
        else:
            fast_dds_2 = is_fast_dds_2(env)
            for name in PROFILE_VARIABLES if fast_dds_2 else PROFILE_VARIABLES[:1]:
                env[name] = str(profile)
            _applied = str(profile)
            line = f"DDS: loading {profile} (FASTDDS_DEFAULT_PROFILES_FILE): 64 MiB shared-memory segment for images"
    decision = line
    return line
