"""The ROS executables' entry point (``ros2 run mirage_ros <tool>``): run a module's ``main``; when a Python library
is missing, say what to install instead of a raw ``ModuleNotFoundError``.

Imports nothing beyond the standard library, so it works in exactly the environment that lacks the rest.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["MISSING_HINTS", "missing_module_message", "run_entry"]

_LIBRARY = ("the mirage library (torch, diffusers, ...) is not installed for {python}. In a ROS 2 workspace on "
            "Ubuntu 24.04 / Jazzy (system pip refuses installs, PEP 668), use a virtual environment that sees ROS's "
            "Python packages:\n"
            "    python3 -m venv --system-site-packages ~/mirage-venv && source ~/mirage-venv/bin/activate\n"
            "    pip install torch --index-url https://download.pytorch.org/whl/cpu  # or CUDA: .../whl/cu128\n"
            "    pip install -e <path to the mirage sources>\n"
            "then `source install/setup.bash` again and rerun with that environment active (README: 'A ROS 2 "
            "workspace').")
# top-level module -> what to do about it
MISSING_HINTS = {
    **{name: _LIBRARY for name in ("mirage", "torch", "diffusers", "transformers", "peft", "accelerate",
                                   "safetensors", "imageio", "imageio_ffmpeg")},
    "numpy": "numpy is missing: sudo apt install python3-numpy (or pip install numpy in the mirage environment).",
    "scipy": "scipy is missing: sudo apt install python3-scipy (or rosdep install --from-paths src -y).",
    "yaml": "PyYAML is missing: sudo apt install python3-yaml (or rosdep install --from-paths src -y).",
    "tqdm": "tqdm is missing: sudo apt install python3-tqdm (or rosdep install --from-paths src -y).",
    "cv2": "OpenCV is missing: sudo apt install python3-opencv (or pip install opencv-python-headless).",
    "rosbags": "the bag tools need rosbags: pip install rosbags (in the mirage environment), or "
               "pip install -e '<mirage sources>[bags]'.",
    "rclpy": "rclpy is missing: source your ROS 2 installation first (source /opt/ros/$ROS_DISTRO/setup.bash).",
    "mirage_ros": "mirage_ros's interfaces are not on the path: build the workspace (colcon build --packages-select "
                  "mirage_ros) and `source install/setup.bash`.",
    "diagnostic_msgs": "diagnostic_msgs is missing: sudo apt install ros-$ROS_DISTRO-diagnostic-msgs.",
    "launch": "the ROS 2 launch system is missing: sudo apt install ros-$ROS_DISTRO-ros2launch.",
    "launch_ros": "launch_ros is missing: sudo apt install ros-$ROS_DISTRO-launch-ros.",
}


def missing_module_message(exc: ModuleNotFoundError, prog: str) -> str | None:
    """What to tell the user about ``exc``, or None when it is not a library we know how to install."""
    name = (exc.name or "").split(".")[0]
    hint = MISSING_HINTS.get(name)
    if hint is None:
        return None
    return f"{prog}: cannot start, Python module '{exc.name}' not found.\n" + hint.format(python=sys.executable)


def run_entry(module: str, function: str = "main", prog: str | None = None, **kwargs) -> int:
    """Import ``module`` and return ``module.function(**kwargs)`` as an exit status (missing libraries: 1)."""
    prog = prog or module.rsplit(".", 1)[-1]
    try:
        target = getattr(importlib.import_module(module), function)
        return int(target(**kwargs) or 0)
    except ModuleNotFoundError as exc:
        message = missing_module_message(exc, prog)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 1
