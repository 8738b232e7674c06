"""mirage_ros.run: the one rclpy main() and the entry points people and scripts use, each in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[2]


def _python(*args: str, code: str | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *(["-c", textwrap.dedent(code)] if code else []), *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def test_run_builds_spins_in_the_background_while_work_runs_and_cleans_up():
    out = _python(code="""
        import sys, threading
        import rclpy
        from mirage_ros.run import run

        ticked = threading.Event()

        def build(graph):
            node = graph.node("probe")
            node.create_timer(0.01, ticked.set)
            return node

        def work(node):
            assert ticked.wait(10.0), "the executor is not spinning in the background"
            assert node.get_name() == "renamed"  # the process arguments reached rclpy
            return 3

        status = run(build, [sys.argv[0], "--ros-args", "-r", "__node:=renamed"], prog="probe", work=work)
        assert status == 3, status
        assert not rclpy.ok(), "the context is shut down"
    """)
    assert out.returncode == 0, out.stderr


def test_run_reports_user_errors_in_one_line_with_status_2_and_interrupts_with_0():
    out = _python(code="""
        import sys
        from mirage_ros.run import run

        def bad(graph):
            raise ValueError("parameter steps=0 is outside [1, 200]")

        sys.exit(run(bad, [sys.argv[0]], prog="probe"))
    """)
    assert out.returncode == 2 and out.stderr.strip() == "probe: parameter steps=0 is outside [1, 200]", out.stderr
    out = _python(code="""
        import sys
        from mirage_ros.run import run

        def interrupted(node):
            raise KeyboardInterrupt

        sys.exit(run(lambda graph: graph.node("n"), [sys.argv[0]], prog="probe", work=interrupted))
    """)
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("module, args, word", [
    ("mirage_ros.node", ["--ros-args", "-p", "steps:=-1"], "steps"),
    ("mirage_ros.synthetic_camera", ["--ros-args", "-p", "rate:=0.0"], "rate"),
    ("mirage_ros.bag_replay", ["/no/such/bag"], "no bag"),
    ("mirage_ros.bags.replay", ["/no/such/bag"], "no bag"),
])
def test_entry_points_exit_2_naming_the_problem(module, args, word):
    out = _python("-m", module, *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert word in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert "DeprecationWarning" not in out.stderr  # the kept commands are not deprecated


@pytest.mark.slow
@pytest.mark.parametrize("module", ["mirage_ros.bag_tools", "mirage_ros.demo_client"])
def test_tool_entry_points_answer_help(module):
    out = _python("-m", module, "--help")
    assert out.returncode == 0 and "usage" in out.stdout, out.stderr


@pytest.mark.slow
def test_installed_executables_call_the_new_modules():
    import re

    targets = {}
    for script in sorted((ROOT / "scripts" / "ros").iterdir()):
        module, function = re.search(r'run_entry\("([\w.]+)", "(\w+)"', script.read_text()).groups()
        assert not module.startswith(("mirage_ros.synthetic_camera", "mirage_ros.node_")), (script.name, module)
        targets[script.name] = (module, function)
    assert targets == {"bag_replay": ("mirage_ros.bags.replay", "main"), "bag_tools": ("mirage_ros.bags.cli", "main"),
                       "demo_client": ("mirage_ros.demo_client", "cli"), "mirage_node": ("mirage_ros.node", "main"),
                       "synthetic_camera": ("mirage_ros.sim.camera", "main")}
    out = _python(code=f"""
        import importlib, warnings
        warnings.simplefilter("error", DeprecationWarning)
        for module, function in {sorted(targets.values())!r}:
            assert callable(getattr(importlib.import_module(module), function))
    """)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("distro, localhost_only", [("", False), ("kilted", False), ("jazzy", False),
                                                    ("humble", True)])
def test_discovery_stays_local_without_the_variable_jazzy_warns_about(distro, localhost_only):
    """ROS_AUTOMATIC_DISCOVERY_RANGE everywhere; ROS_LOCALHOST_ONLY only before Iron (Jazzy's rcl warns on every
    init that it is deprecated, and lets it override the range). A value the user set is kept."""
    from mirage_ros.run import keep_discovery_local

    env = {"ROS_DISTRO": distro} if distro else {}
    keep_discovery_local(env)
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert ("ROS_LOCALHOST_ONLY" in env) == localhost_only
    env = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}
    keep_discovery_local(env)
    assert env == {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}
