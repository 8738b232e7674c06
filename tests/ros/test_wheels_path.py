"""mirage_ros.wheels_path: the ROS wheels' LD_LIBRARY_PATH in a fixed order, whatever the hash seed (issue 19)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from mirage_ros import wheels_path
from mirage_ros.wheels_path import GUARD, library_path


def fake_venv(tmp_path: Path) -> tuple[Path, Path]:
    prefix, site = tmp_path / "venv", tmp_path / "venv" / "site-packages"
    (prefix / "lib").mkdir(parents=True)
    for name in ("ros_rcl.libs", "ros_action_msgs.libs", "ros_zz.libs", "ros_fastcdr.libs", "other.libs"):
        (site / name).mkdir(parents=True)  # created out of order
    (site / "ros_file.libs").write_text("not a directory")
    return prefix, site


def test_order_is_existing_entries_then_the_venv_lib_then_the_wheel_libs_sorted(tmp_path):
    prefix, site = fake_venv(tmp_path)
    got = library_path(f"/opt/a::/opt/b:/opt/a:{prefix}/lib", str(prefix), str(site)).split(os.pathsep)
    wheels = [str((site / n).resolve()) for n in ("ros_action_msgs.libs", "ros_fastcdr.libs", "ros_rcl.libs",
                                                  "ros_zz.libs")]
    assert got == ["/opt/a", "/opt/b", f"{prefix}/lib", *wheels]  # no empty entry (= the current directory)
    assert library_path("", str(tmp_path / "none"), str(tmp_path / "none")) == ""


def test_a_fresh_interpreter_gets_the_same_path_under_any_hash_seed(tmp_path):
    """The installed copy (as scripts/bootstrap.sh places it) re-executes the interpreter once with the path set;
    ros-wheels-bootstrapper's set gave a different order per seed. ``-S``: no site, so no other .pth runs."""
    _, site = fake_venv(tmp_path)
    shutil.copy(wheels_path.__file__, site / "_mirage_ros_wheels_path.py")
    code = (f"import sys; sys.path.insert(0, {str(site)!r}); import _mirage_ros_wheels_path, os; "
            "print(os.environ['LD_LIBRARY_PATH']); print(os.environ['" + GUARD + "'])")
    seen = set()
    for seed in ("0", "1", "2", "3", "random"):
        env = {k: v for k, v in os.environ.items() if k != GUARD}
        env.update(PYTHONHASHSEED=seed if seed != "random" else "", LD_LIBRARY_PATH="/opt/z:/opt/y")
        out = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True,
                             check=True, timeout=60).stdout.splitlines()
        assert out[1] == "1"
        seen.add(out[0])
    assert len(seen) == 1
    parts = seen.pop().split(os.pathsep)
    assert parts[:2] == ["/opt/z", "/opt/y"] and parts[-4:] == sorted(parts[-4:])
    assert all(Path(p).name.startswith("ros_") for p in parts[-4:])


def test_bootstrap_installs_it_before_the_wheels_bootstrapper():
    """.pth files run in name order: ours must sort before ros_wheels_bootstrapper.pth."""
    script = (Path(__file__).resolve().parents[2] / "scripts" / "bootstrap.sh").read_text()
    assert 'mirage_ros/wheels_path.py "$site/_mirage_ros_wheels_path.py"' in script
    assert "import _mirage_ros_wheels_path" in script
    assert sorted(["_mirage_ros_wheels_path.pth", "ros_wheels_bootstrapper.pth"])[0] == "_mirage_ros_wheels_path.pth"
