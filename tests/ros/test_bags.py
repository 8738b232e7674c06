"""Bags: write the synthetic camera (sqlite3, MCAP), build the memory offline, replay into the node with /clock.

Record -> replay must give the same memory as the live camera and as the offline ``mirage build-cache``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

DOMAIN = int(os.environ.get("ROS_DOMAIN_ID") or 0) or 1 + os.getpid() % 100  # one domain per test session
WAIT = 20.0
FRAMES = 6
RATE = 10.0
START_NS = 1_000_000_000


@pytest.fixture(scope="module")
def rig():
    from mirage_ros.sim.rig import RigConfig, SyntheticRig

    return SyntheticRig(RigConfig(height=48, width=64, num_frames=12, trajectory="orbit"))


@pytest.fixture(scope="module")
def world_model():
    from mirage.pipeline import MirageWorldModel

    return MirageWorldModel.from_pretrained("tiny", num_inference_steps=2)


@pytest.fixture(scope="module")
def bag(rig, tmp_path_factory):
    from mirage_ros.bags.write import write_rig_bag

    return write_rig_bag(tmp_path_factory.mktemp("bags") / "synthetic", rig, FRAMES, rate=RATE, start_ns=START_NS,
                         progress=False)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_written_bag_holds_the_camera(rig, tmp_path, storage):
    from rosbags.interfaces import QosDurability
    from rosbags.rosbag2 import Reader

    from mirage_ros import conversions as conv
    from mirage_ros.bags.write import typestore, write_rig_bag

    path = write_rig_bag(tmp_path / "bag", rig, 3, rate=RATE, storage=storage, progress=False)
    with pytest.raises(FileExistsError):
        write_rig_bag(path, rig, 1, progress=False)
    with pytest.raises(ValueError, match="storage"):
        write_rig_bag(tmp_path / "other", rig, 1, storage="zip", progress=False)
    ts = typestore()
    with Reader(path) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert counts == {"/rgb/image": 3, "/depth/image": 3, "/rgb/camera_info": 3, "/tf": 3, "/tf_static": 1}
        static = next(c for c in reader.connections if c.topic == "/tf_static")
        assert static.ext.offered_qos_profiles[0].durability == QosDurability.TRANSIENT_LOCAL
        rgb_conn = [c for c in reader.connections if c.topic == "/rgb/image"]
        stamps = []
        for i, (conn, t, raw) in enumerate(reader.messages(connections=rgb_conn)):
            msg = ts.deserialize_cdr(raw, conn.msgtype)
            np.testing.assert_array_equal(conv.image_to_rgb(msg), rig.frame(i).rgb)
            stamps.append(t)
    np.testing.assert_allclose(np.diff(stamps), 1e9 / RATE)


def test_build_cache_cli_and_function_agree(bag, world_model, tmp_path):
    from mirage.cli import main as cli
    from mirage.memory import LatentSpatialMemory
    from mirage_ros.bags.build_memory import build_cache

    out = tmp_path / "memory.safetensors"
    assert cli(["build-cache", "--bag", str(bag), "--out", str(out), "--model", "tiny"]) == 0
    memory, stats = build_cache(bag, None, world_model, progress=False)
    assert stats.frames_in == FRAMES and stats.keyframes >= 2 and stats.frames_dropped_tf == 0
    loaded = LatentSpatialMemory.load(out)
    assert len(loaded) == len(memory) > 0
    np.testing.assert_allclose(loaded.points.numpy(), memory.points.numpy(), atol=1e-6)
    assert cli(["build-cache", "--bag", str(tmp_path / "missing"), "--out", str(out), "--model", "tiny"]) == 2


def _node(graph, world_model, name, sim_time=False, **extra):
    from rclpy.parameter import Parameter

    from mirage_ros.node import MirageNode

    params = [Parameter("input_qos", value="reliable"), Parameter("ingest_queue_size", value=50),
              Parameter("input_queue_depth", value=50), Parameter("tf_timeout", value=0.5),
              Parameter("use_sim_time", value=sim_time), *(Parameter(k, value=v) for k, v in extra.items())]
    return graph.add(MirageNode(world_model=world_model, node_name=name, context=graph.context,
                                parameter_overrides=params))


@pytest.mark.ros
def test_replay_gives_the_live_and_offline_memory(bag, rig, world_model):
    from rclpy.parameter import Parameter

    from mirage_ros.bags.replay import BagReplayer
    from mirage_ros.bags.build_memory import build_cache
    from mirage_ros.run import LocalGraph
    from mirage_ros.sim.camera import SyntheticCamera

    offline, _ = build_cache(bag, None, world_model, progress=False)

    # live: the synthetic camera publishes the same frames at the same stamps
    with LocalGraph(domain_id=DOMAIN) as graph:
        live = _node(graph, world_model, "mirage_live")
        camera = SyntheticCamera(rig=rig, autostart=False, context=graph.context,
                                 parameter_overrides=[Parameter("reliable", value=True)])
        graph.add(camera.node)
        graph.wait_until(lambda: camera.rgb_pub.get_subscription_count() >= 1, WAIT, "live subscriptions")
        for i in range(FRAMES):
            camera.publish_frame(i, START_NS + int(i * 1e9 / RATE))
        graph.wait_until(lambda: live.ingestor.stats.frames_in == FRAMES and live.worker.wait_idle(0.05), WAIT,
                         "live frames")
        live_memory = live.holder.memory

    # replay: the bag with /clock into a node on sim time
    with LocalGraph(domain_id=DOMAIN) as graph:
        replayed = _node(graph, world_model, "mirage_replay", sim_time=True)
        player = graph.node("player")
        replayer = BagReplayer(player, bag, rate=1.0)
        assert replayer.wait_for(1, timeout=WAIT)
        assert replayer.play() == 4 * FRAMES + 1
        graph.wait_until(lambda: replayed.ingestor.stats.frames_in == FRAMES and replayed.worker.wait_idle(0.05),
                         WAIT, "replayed frames")
        now = replayed.get_clock().now().nanoseconds
        assert START_NS <= now <= START_NS + int(FRAMES * 1e9 / RATE)  # the node runs on the bag's clock
        replay_memory = replayed.holder.memory

    assert len(offline) > 0
    for memory in (live_memory, replay_memory):
        assert len(memory) == len(offline)
        np.testing.assert_allclose(memory.points.numpy(), offline.points.numpy(), atol=1e-6)
        np.testing.assert_allclose(memory.features.float().numpy(), offline.features.float().numpy(), atol=1e-5)


@pytest.mark.ros
def test_replay_waits_for_a_slow_node_then_the_node_says_what_it_ingested(bag, world_model):
    """The replay process holds the bag until the node's input subscriptions match (a node loading a model takes
    seconds), says when it starts; the node logs what the bag brought once it has stopped (its sim clock stops too)."""
    import subprocess
    import sys
    import time

    from mirage_ros.run import LocalGraph

    proc = subprocess.Popen([sys.executable, "-m", "mirage_ros.bags.replay", str(bag), "--rate", "0", "--wait", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "ROS_DOMAIN_ID": str(DOMAIN)})
    try:
        lines = []
        while not lines or "waiting up to" not in lines[-1]:
            lines.append(proc.stdout.readline())
            assert lines[-1], "".join(lines)  # the replay ended before waiting
        time.sleep(1.5)  # the node starts well after the replay began to wait
        assert proc.poll() is None, proc.stdout.read()
        with LocalGraph(domain_id=DOMAIN) as graph:
            node = _node(graph, world_model, "mirage_late", sim_time=True, input_timeout=0.5)
            infos = []
            original = node.get_logger

            class Spy:
                def __init__(self, logger):
                    self._logger = logger

                def info(self, msg, **kw):
                    infos.append(msg)

                def __getattr__(self, name):
                    return getattr(self._logger, name)

            node.get_logger = lambda: Spy(original())
            out = "".join(lines) + proc.communicate(timeout=60)[0]
            graph.wait_until(lambda: node.ingestor.stats.frames_in == FRAMES and node.worker.wait_idle(0.05), WAIT,
                             "every frame of the bag")
            summary = graph.wait_until(lambda: [m for m in infos if m.startswith("input stopped")], WAIT,
                                       "the end-of-bag summary")
            node.get_logger = original
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "bag_replay: waiting up to 60 s for subscribers on /depth/image, /rgb/camera_info, /rgb/image, /tf, " \
           "/tf_static" in out, out
    assert "every input topic matched after" in out and f"replayed {4 * FRAMES + 1} messages" in out, out
    waited = float(out.split("matched after ")[1].split(" s")[0])
    assert waited >= 1.5  # it did wait for the late node (and every frame arrived: nothing was lost)
    assert f"it brought {FRAMES} rgb/depth/camera_info sets" in summary[0], summary[0]


@pytest.mark.ros
def test_replay_says_which_topics_nobody_hears(bag):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mirage_ros.bags.replay", str(bag), "--rate", "0", "--wait", "0.5",
                          "--wait-for", "/rgb/image"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "ROS_DOMAIN_ID": str(DOMAIN)}).stdout
    assert "although nobody subscribes to /rgb/image: their messages are lost" in out, out
