"""The rclpy-free half of mirage_ros imports, and works, in a process where rclpy cannot be imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Every module that must not need rclpy (or any ROS message package) at import.
RCLPY_FREE = [
    "mirage_ros.core", "mirage_ros.core.ingest", "mirage_ros.core.queue", "mirage_ros.core.goals",
    "mirage_ros.core.goal_poses", "mirage_ros.core.memory_holder", "mirage_ros.core.model_loading",
    "mirage_ros.core.tf_hold", "mirage_ros.core.input_health", "mirage_ros.core.cache_files", "mirage_ros.dds",
    "mirage_ros.conversions", "mirage_ros.params", "mirage_ros.sync", "mirage_ros.tf_buffer",
    "mirage_ros.bags", "mirage_ros.bags.read", "mirage_ros.bags.write", "mirage_ros.bags.build_memory",
    "mirage_ros.bags.cli", "mirage_ros.sim", "mirage_ros.sim.rig", "mirage.frames",
]

BLOCKER = textwrap.dedent('''
    import importlib.abc, sys

    BLOCKED = ("rclpy", "rcl_interfaces", "builtin_interfaces", "sensor_msgs", "geometry_msgs", "std_msgs",
               "tf2_msgs", "action_msgs")

    class NoROS(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, NoROS())
''')


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=240)


def test_blocker_blocks_rclpy():
    out = _run("import rclpy")
    assert out.returncode != 0 and "blocked in this test" in out.stderr


def test_core_conversions_bags_and_params_import_without_rclpy():
    out = _run(f"""
        import importlib
        for name in {RCLPY_FREE!r}:
            importlib.import_module(name)
        assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
    """)
    assert out.returncode == 0, out.stderr


def test_the_ingest_and_goal_cores_run_without_rclpy():
    """Not only import: a frame goes through FrameIngestor into the memory, and a GoalRunner admits and answers."""
    out = _run("""
        from types import SimpleNamespace as NS
        import numpy as np, torch
        from mirage.camera import make_intrinsics
        from mirage_ros.conversions import intrinsics_to_camera_info, numpy_to_image
        from mirage_ros.core.goals import GoalRunner
        from mirage_ros.core.ingest import FrameIngestor, FramePair
        from mirage_ros.core.memory_holder import MemoryHolder

        class Model:  # observe() is the one path: count it instead of encoding
            height, width = 32, 32
            def __init__(self):
                self.observed = 0
            def observe(self, memory, rgb, depth, K, c2w):
                assert rgb.shape == (3, 32, 32) and depth.shape == (32, 32) and K.shape == (3, 3)
                self.observed += 1
                return 1

        def msg_type(**fields):
            return lambda: NS(header=NS(stamp=NS(sec=0, nanosec=0), frame_id=""), data=b"", **fields)

        Time = lambda sec, nanosec: NS(sec=sec, nanosec=nanosec)
        image = msg_type(height=0, width=0, encoding="", is_bigendian=0, step=0)
        info = msg_type(height=0, width=0, distortion_model="", d=[], k=[], r=[], p=[], binning_x=0, binning_y=0,
                        roi=NS(x_offset=0, y_offset=0, width=0, height=0))
        K = make_intrinsics(40.0, 40.0, 32.0, 24.0)
        stamp = Time(1, 0)
        rgb = numpy_to_image(np.zeros((48, 64, 3), np.uint8), "rgb8", stamp=stamp, frame_id="cam", msg_type=image)
        depth = numpy_to_image(np.ones((48, 64), np.float32), "32FC1", stamp=stamp, frame_id="cam", msg_type=image)
        cam_info = intrinsics_to_camera_info(K, 48, 64, stamp=stamp, frame_id="cam", msg_type=info)
        model, holder = Model(), MemoryHolder(NS(version=0, stats=lambda: {}, __len__=lambda: 0))
        ingest = FrameIngestor(model, holder, lambda target, source, t: np.eye(4), "odom")
        assert ingest.process(FramePair(rgb, depth, cam_info, 0.0)) is True
        assert model.observed == 1 and holder.keyframes == 1 and ingest.camera_frame == "cam"
        runner = GoalRunner(model, holder, ingest.cameras, lambda *a: np.eye(4), world_frame="odom")
        assert runner.admit() and runner.camera()[0] == "cam"
    """)
    assert out.returncode == 0, out.stderr
