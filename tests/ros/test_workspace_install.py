"""A normal ROS workspace install: package.xml, the installed executables, missing-library messages, the launch
file's RViz handling. Runs without ROS (the launch file itself is loaded only where launch is installed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _package():
    return ET.parse(ROOT / "package.xml").getroot()


def test_package_xml_declares_what_the_code_imports():
    root = _package()
    depends = {e.text for e in root if e.tag in ("depend", "exec_depend")}
    assert {"rclpy", "rcl_interfaces", "std_srvs", "sensor_msgs", "geometry_msgs", "tf2_msgs", "diagnostic_msgs",
            "rosgraph_msgs", "ament_index_python", "ros2launch", "launch", "launch_ros", "rviz2"} <= depends
    assert {"python3-yaml", "python3-tqdm", "python3-opencv", "python3-numpy", "python3-scipy"} <= depends
    rviz = next(e for e in root if e.text == "rviz2")
    assert rviz.get("condition"), "rviz2 must be optional (a condition a headless robot can switch off)"
    # every ROS message package the Python code imports is declared
    imported = set()
    for path in (ROOT / "mirage_ros").rglob("*.py"):
        imported |= set(re.findall(r"^\s*from (\w+_msgs|std_srvs|rcl_interfaces)\.", path.read_text(), re.M))
    assert imported <= depends, imported - depends


def test_every_tool_is_installed_as_an_executable():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    programs = re.search(r"install\(PROGRAMS(.*?)DESTINATION lib/\$\{PROJECT_NAME\}\)", cmake, re.S).group(1).split()
    scripts = sorted(p.name for p in (ROOT / "scripts" / "ros").iterdir())
    assert sorted(Path(p).name for p in programs) == scripts
    assert {"mirage_node", "synthetic_camera", "bag_tools", "bag_replay", "demo_client"} <= set(scripts)
    for name in scripts:
        path = ROOT / "scripts" / "ros" / name
        assert os.access(path, os.X_OK) and path.read_text().startswith("#!/usr/bin/env python3"), name
    assert '"srv/ClearRegion.srv"' in cmake


BLOCK = """
import builtins, sys
_real = builtins.__import__
def _blocked(name, *args, **kwargs):
    if name.split(".")[0] == {blocked!r}:
        raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
    return _real(name, *args, **kwargs)
builtins.__import__ = _blocked
sys.argv = [{script!r}, "--help"]
exec(compile(open({script!r}).read(), {script!r}, "exec"), {{"__name__": "__main__"}})
"""


@pytest.mark.parametrize("script, blocked, words", [
    ("mirage_node", "torch", ("'torch' not found", "--system-site-packages", "download.pytorch.org")),
    ("bag_tools", "rosbags", ("pip install rosbags",)),
    ("mirage_node", "rclpy", ("source /opt/ros",)),
])
def test_a_missing_library_says_what_to_install(script, blocked, words):
    path = ROOT / "scripts" / "ros" / script
    code = BLOCK.format(blocked=blocked, script=str(path))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if script == "bag_tools":  # --help parses before importing rosbags: ask for real work
        code = code.replace('"--help"', '"record", "--out", "/nonexistent/never"')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, env=env)
    assert out.returncode == 1, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    for word in words:
        assert word in out.stderr, out.stderr


def test_an_unknown_missing_module_still_raises():
    from mirage_ros.entry import missing_module_message

    assert missing_module_message(ModuleNotFoundError("x", name="some_private_thing"), "tool") is None
    msg = missing_module_message(ModuleNotFoundError("x", name="diffusers.models"), "mirage_node")
    assert msg.startswith("mirage_node: cannot start") and sys.executable in msg


def _launch_module():
    pytest.importorskip("launch")
    pytest.importorskip("launch_ros")
    import importlib.util

    spec = importlib.util.spec_from_file_location("mirage_launch", ROOT / "launch" / "mirage.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rviz_config_follows_namespace_remaps_and_world_frame(tmp_path):
    import yaml

    module = _launch_module()
    text = module.rviz_config_for(str(ROOT / "config" / "mirage.rviz"), "robot1", "/camera/color/image_raw", "map")
    rviz = yaml.safe_load(text)["Visualization Manager"]
    topics = {d.get("Topic", {}).get("Value") for d in rviz["Displays"]}
    assert {"/robot1/mirage/cache/points", "/robot1/mirage/imagined/image", "/camera/color/image_raw"} <= topics
    assert rviz["Global Options"]["Fixed Frame"] == "map"
    relative = yaml.safe_load(module.rviz_config_for(str(ROOT / "config" / "mirage.rviz"), "", "rgb/image", "odom"))
    topics = {d.get("Topic", {}).get("Value") for d in relative["Visualization Manager"]["Displays"]}
    assert {"/mirage/cache/points", "/rgb/image"} <= topics
    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n    world_frame: map\n")
    assert module._world_frame(str(params)) == "map" and module._world_frame(str(tmp_path / "none")) == "odom"


def test_setup_py_is_thin_and_reads_pyproject():
    import ast

    body = ast.parse((ROOT / "setup.py").read_text()).body
    code = [ast.unparse(node) for node in body if not (isinstance(node, ast.Expr) and isinstance(node.value,
                                                                                                   ast.Constant))]
    assert code == ["from setuptools import setup", "setup()"], code  # one source of truth: pyproject.toml
    out = subprocess.run([sys.executable, "setup.py", "--name", "--version"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    import mirage

    assert out.returncode == 0 and out.stdout.split()[-2:] == ["mirage", mirage.__version__], out.stderr[-2000:]


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], capture_output=True, cwd=ROOT, timeout=60)
    if out.returncode != 0:
        pytest.skip("not a git checkout: the clean-workspace build copies the tracked files")
    return [name for name in out.stdout.decode().split("\0") if name and (ROOT / name).is_file()]


@pytest.mark.slow
@pytest.mark.build
@pytest.mark.ros
def test_colcon_build_in_a_clean_workspace_installs_executables_and_launch_files(tmp_path):
    """A user's workspace: the repository (as git tracks it) under src/, `colcon build`, nothing else."""
    import shutil

    if shutil.which("colcon") is None or not os.environ.get("AMENT_PREFIX_PATH"):
        pytest.skip("colcon and a ROS 2 underlay (AMENT_PREFIX_PATH) are needed: source scripts/env.sh")
    src = tmp_path / "ws" / "src" / "mirage"
    for name in _tracked_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    ws = tmp_path / "ws"
    listed = subprocess.run(["colcon", "list", "--base-paths", "src"], capture_output=True, text=True, cwd=ws,
                            timeout=120)
    # setup.py beside package.xml must not turn the package into a plain Python one: colcon reads package.xml
    assert listed.returncode == 0 and "(ros.ament_cmake)" in listed.stdout, listed.stdout + listed.stderr
    # tf2_msgs: the real one if the underlay has it, else the project's definition (as scripts/bootstrap.sh does)
    paths = ["src/mirage"] + ([] if _underlay_has("tf2_msgs") else ["src/mirage/third_party/tf2_msgs"])
    built = subprocess.run(["colcon", "build", "--paths", *paths, "--cmake-args", "-DBUILD_TESTING=OFF",
                            f"-DPython3_EXECUTABLE={sys.executable}"], capture_output=True, text=True, cwd=ws,
                           timeout=900)
    assert built.returncode == 0, (built.stdout + built.stderr)[-4000:]
    prefix = ws / "install" / "mirage_ros"
    for name in ("mirage_node", "synthetic_camera", "bag_tools", "bag_replay", "demo_client"):
        assert os.access(prefix / "lib" / "mirage_ros" / name, os.X_OK), name
    share = prefix / "share" / "mirage_ros"
    assert (share / "launch" / "mirage.launch.py").is_file() and (share / "config" / "mirage.yaml").is_file()
    assert list(prefix.glob("lib/python3*/site-packages/mirage_ros/action/_imagine_trajectory.py"))
    assert list(prefix.glob("lib/python3*/site-packages/mirage_ros/node.py"))


def _underlay_has(package: str) -> bool:
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix and not Path(prefix).is_relative_to(ROOT / "install") \
                and (Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / package).exists():
            return True
    return False
