"""The old module paths still import (one release), warn, and hand out the very objects of the new ones."""

from __future__ import annotations

import subprocess
import sys
import textwrap

MOVED = {  # old module -> {name: new module}
    "mirage_ros.node_params": {"PARAM_SPECS": "mirage_ros.params", "validate_params": "mirage_ros.params"},
    "mirage_ros.node_ingest": {"FrameIngestor": "mirage_ros.core.ingest", "KeepLatestQueue": "mirage_ros.core.queue",
                               "IngestWorker": "mirage_ros.core.queue", "KeyframeSelector": "mirage.frames",
                               "fit_to_size": "mirage.frames", "FramePair": "mirage_ros.core.ingest"},
    "mirage_ros.node_imagine": {"resolve_goal": "mirage_ros.core.goal_poses", "GoalError": "mirage_ros.core.goal_poses"},
    "mirage_ros.node_memory": {"MemoryHolder": "mirage_ros.core.memory_holder"},
    "mirage_ros.node_model": {"parse_checkpoints": "mirage_ros.core.model_loading",
                              "world_model_kwargs": "mirage_ros.core.model_loading"},
    "mirage_ros.node_graph": {"LocalGraph": "mirage_ros.run", "wait_future": "mirage_ros.run"},
    "mirage_ros.synthetic_rig": {"SyntheticRig": "mirage_ros.sim.rig", "RigConfig": "mirage_ros.sim.rig"},
    "mirage_ros.synthetic_camera": {"SyntheticCamera": "mirage_ros.sim.camera", "main": "mirage_ros.sim.camera"},
    "mirage_ros.bag_writer": {"write_rig_bag": "mirage_ros.bags.write", "BAG_TOPICS": "mirage_ros.bags.read"},
    "mirage_ros.bag_tools": {"build_cache": "mirage_ros.bags.build_memory", "iter_bag_frames": "mirage_ros.bags.read"},
    "mirage_ros.bag_replay": {"BagReplayer": "mirage_ros.bags.replay", "main": "mirage_ros.bags.replay"},
}


def test_old_paths_warn_and_reexport():
    code = textwrap.dedent(f"""
        import importlib, warnings
        moved = {MOVED!r}
        for old, names in moved.items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                module = importlib.import_module(old)
            deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning) and old in str(w.message)]
            assert deprecations, f"{{old}} did not warn"
            for name, new in names.items():
                assert getattr(module, name) is getattr(importlib.import_module(new), name), (old, name)
            assert set(module.__all__) >= set(names), (old, sorted(set(names) - set(module.__all__)))
        # the node's package keeps its public path: conversions became a package that re-exports every family
        from mirage_ros import conversions
        from mirage_ros.conversions import camera_info, image, pointcloud, time, transform
        for family in (camera_info, image, pointcloud, time, transform):
            for name in family.__all__:
                assert getattr(conversions, name) is getattr(family, name), name
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
