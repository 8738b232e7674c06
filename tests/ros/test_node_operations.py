"""The node's run-time operations over real rclpy: compressed input, /diagnostics, live parameters, pause / resume,
clear by region, decay, and the cloud in observed colours.

One module-wide graph: a node on compressed input (``input_transport:=compressed``) fed by the synthetic camera
publishing image_transport's compressed + compressedDepth messages, and a client node that calls services, sets
parameters and listens to /diagnostics. Every wait has a deadline.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

DOMAIN = int(os.environ.get("ROS_DOMAIN_ID") or 0) or 1 + os.getpid() % 100
WAIT = 20.0


def _clear_region_built() -> bool:
    try:
        from mirage_ros.srv import ClearRegion  # noqa: F401
    except ImportError:
        return False
    return True


if not _clear_region_built():  # an install built before srv/ClearRegion.srv existed
    pytest.skip("mirage_ros/ClearRegion is not built: rerun scripts/bootstrap.sh", allow_module_level=True)


@pytest.fixture(scope="module")
def world_model():
    from mirage.pipeline import MirageWorldModel

    return MirageWorldModel.from_pretrained("tiny", num_inference_steps=2)


@pytest.fixture(scope="module")
def rig():
    from mirage_ros.sim.rig import RigConfig, SyntheticRig

    return SyntheticRig(RigConfig(height=48, width=64, num_frames=16, trajectory="orbit"))


class Env:
    def __init__(self, world_model, rig):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.parameter import Parameter
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2

        from mirage_ros.node import MirageNode
        from mirage_ros.run import LocalGraph
        from mirage_ros.sim.camera import SyntheticCamera

        self.rig = rig
        self.graph = g = LocalGraph(domain_id=DOMAIN)
        params = [Parameter("input_qos", value="reliable"), Parameter("input_transport", value="compressed"),
                  Parameter("keyframe_translation", value=0.05), Parameter("tf_timeout", value=0.2),
                  Parameter("cloud_rate", value=10.0), Parameter("cloud_max_points", value=100000),
                  Parameter("diagnostics_rate", value=5.0), Parameter("ingest_queue_size", value=20),
                  Parameter("voxel_size", value=0.02)]
        self.node = g.add(MirageNode(world_model=world_model, node_name="mirage_ops", context=g.context,
                                     parameter_overrides=params))
        self.camera = SyntheticCamera(rig=rig, autostart=False, context=g.context, node_name="ops_camera",
                                      parameter_overrides=[Parameter("reliable", value=True),
                                                           Parameter("transport", value="compressed"),
                                                           Parameter("compressed_format", value="png")])
        g.add(self.camera.node)
        self.client = g.node("ops_client")
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.clouds, self.diagnostics = [], []  # diagnostics: (arrival monotonic s, DiagnosticArray)
        self.client.create_subscription(PointCloud2, "/mirage_ops/cache/points", self.clouds.append, latched)
        self.client.create_subscription(DiagnosticArray, "/diagnostics",
                                        lambda m: self.diagnostics.append((time.monotonic(), m)), 50)
        g.start()
        g.wait_until(lambda: self.camera.rgb_compressed_pub.get_subscription_count() >= 1
                     and self.camera.depth_compressed_pub.get_subscription_count() >= 1, WAIT,
                     "compressed subscriptions")
        self.stamp_ns = 1_000_000_000

    def next_stamp(self) -> int:
        self.stamp_ns += 100_000_000
        return self.stamp_ns

    def feed(self, index: int) -> None:
        before = self.node.ingestor.stats.frames_in
        self.camera.publish_frame(index, self.next_stamp())
        self.graph.wait_until(lambda: self.node.ingestor.stats.frames_in > before and self.node.worker.wait_idle(0.05),
                              WAIT, f"frame {index} to be processed")

    def call(self, srv_type, name, request):
        from mirage_ros.run import wait_future

        client = self.client.create_client(srv_type, name)
        try:
            assert client.wait_for_service(timeout_sec=WAIT), f"service {name} not available"
            return wait_future(client.call_async(request), WAIT, name)
        finally:
            self.client.destroy_client(client)

    def set_params(self, **values):
        """Set parameters through the node's parameter service, as `ros2 param set` does; returns the results."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        request = SetParameters.Request(parameters=parameters)
        return list(self.call(SetParameters, "/mirage_ops/set_parameters", request).results)

    def latest_status(self, part: str, newer_than: float):
        """The newest /diagnostics status '<node>: part' received after ``newer_than`` (monotonic s)."""
        def find():
            for received_at, array in reversed(self.diagnostics):
                if received_at < newer_than:
                    break
                for status in array.status:
                    if status.name == f"mirage_ops: {part}":
                        return status
            return None
        return self.graph.wait_until(find, WAIT, f"a /diagnostics status for {part}")

    def close(self):
        self.graph.close()


@pytest.fixture(scope="module")
def env(world_model, rig):
    e = Env(world_model, rig)
    try:
        yield e
    finally:
        e.close()


# ============================================================================================== tests
def test_compressed_input_seeds_the_memory(env):
    for i in range(6):
        env.feed(i)
    stats = env.node.ingestor.stats
    assert stats.frames_rejected == 0 and stats.frames_dropped_tf == 0, stats.last_error
    assert stats.keyframes >= 2 and len(env.node.holder.memory) > 0
    (camera,) = env.node.input.cameras
    assert camera.topics["rgb"] == "/rgb/image/compressed" and camera.topics["depth"] == "/depth/image/compressedDepth"
    assert [sub.topic_name for sub in camera.subscriptions[:2]] == ["/rgb/image/compressed",
                                                                    "/depth/image/compressedDepth"]


def test_a_corrupt_payload_is_counted_and_the_node_carries_on(env):
    from mirage_ros import conversions as conv
    from mirage_ros.conversions.compressed import compressed_message, encode_compressed, encode_compressed_depth

    holder, stats = env.node.holder, env.node.ingestor.stats
    version, corrupt, rejected = holder.version(), stats.frames_corrupt, stats.frames_rejected
    f, c = env.rig.frame(7), env.rig.config
    stamp = env.next_stamp()
    fmt, good = encode_compressed_depth(f.depth, c.depth_encoding)
    rgb_fmt, rgb = encode_compressed(f.rgb, "rgb8", "png")
    env.node.ingestor.reset()  # a keyframe candidate, so the pixels are decoded
    before = stats.frames_in
    env.camera.tf_pub.publish(env.camera._tf([(c.world_frame, c.body_frame, f.world_to_body)], stamp))
    env.camera.rgb_compressed_pub.publish(compressed_message(rgb_fmt, rgb, stamp=stamp, frame_id=c.camera_frame))
    env.camera.depth_compressed_pub.publish(compressed_message(fmt, good[: len(good) // 2], stamp=stamp,
                                                               frame_id=c.camera_frame))
    env.camera.info_pub.publish(conv.intrinsics_to_camera_info(f.intrinsics, c.height, c.width, stamp=stamp,
                                                               frame_id=c.camera_frame))
    env.graph.wait_until(lambda: stats.frames_in > before and env.node.worker.wait_idle(0.05), WAIT, "the bad frame")
    assert stats.frames_corrupt == corrupt + 1 and stats.frames_rejected == rejected + 1
    assert holder.version() == version
    t = time.monotonic()
    status = env.latest_status("ingest", t)
    assert status.level == b"\x01" and "corrupt" in status.message
    env.feed(8)  # and the next good frame goes in
    assert stats.frames_rejected == rejected + 1 and holder.version() != version


def test_diagnostics_report_every_part(env):
    t = time.monotonic()
    env.feed(9)
    names = {}
    for part in ("input", "ingest", "memory", "model", "goals"):
        names[part] = env.latest_status(part, t)
    assert names["model"].level == b"\x00" and "on cpu (float32)" in names["model"].message
    values = {kv.key: kv.value for kv in names["input"].values}
    assert values["rgb topic"] == "/rgb/image/compressed" and int(values["rgb messages"]) >= 7
    memory = {kv.key: kv.value for kv in names["memory"].values}
    assert int(memory["points"]) == len(env.node.holder.memory)
    assert names["goals"].message == "idle"


def test_live_parameters_apply_or_are_refused_with_the_reason(env):
    import torch

    node = env.node
    # torch_threads: a value other than the current one first, so the second set has something to change; torch
    # counts threads per thread, so the node's workers adopt it (torch_threads_here), as this thread does here
    first = 2 if node.torch_threads == 1 else 1
    assert all(r.successful for r in env.set_params(torch_threads=first)) and node.torch_threads == first
    node.torch_threads_here()
    assert torch.get_num_threads() == first
    ok = env.set_params(keyframe_translation=0.5, cloud_rate=5.0, goal_policy="preempt", steps=3,
                        torch_threads=3 - first)
    assert all(r.successful for r in ok), [r.reason for r in ok]
    assert node.params.keyframe_translation == 0.5
    assert node.ingestor.selectors and all(s.translation == 0.5 for s in node.ingestor.selectors.values())
    assert node.ingestor.selector("a camera not seen yet").translation == 0.5
    assert node.cloud_timer.timer_period_ns == 200_000_000
    assert node.runner.policy == "preempt" and node.runner.steps == 3
    node.torch_threads_here()
    assert node.torch_threads == torch.get_num_threads() == 3 - first
    for bad, word in ((dict(steps=-1), "steps"), (dict(goal_policy="queue"), "goal_policy"),
                      (dict(model="tiny"), "read-only"), (dict(dtype="bfloat16"), "read-only"),
                      (dict(cloud_colors="rainbow"), "cloud_colors")):
        (result,) = env.set_params(**bad)
        assert not result.successful and word in result.reason, (bad, result.reason)
    assert node.params.steps == 3 and node.params.goal_policy == "preempt"
    restored = env.set_params(keyframe_translation=0.05, cloud_rate=10.0, goal_policy="reject", steps=2,
                              torch_threads=0)
    assert all(r.successful for r in restored)


def test_pause_freezes_the_memory_and_resume_thaws_it(env):
    from std_srvs.srv import SetBool

    holder, stats = env.node.holder, env.node.ingestor.stats
    r = env.call(SetBool, "/mirage_ops/set_ingest_paused", SetBool.Request(data=True))
    assert r.success and "paused" in r.message
    version, paused = holder.version(), stats.frames_paused
    env.node.ingestor.reset()  # would insert the next frame if not paused
    for i in (10, 12):
        env.feed(i)
    assert holder.version() == version and stats.frames_paused == paused + 2
    t = time.monotonic()
    assert "paused" in env.latest_status("ingest", t).message
    r = env.call(SetBool, "/mirage_ops/set_ingest_paused", SetBool.Request(data=False))
    assert r.success and "was paused" in r.message
    env.feed(14)
    assert holder.version() != version


def test_clear_region_removes_the_box(env):
    from geometry_msgs.msg import Point

    from mirage_ros.srv import ClearRegion

    memory = env.node.holder.memory
    points = memory.points.numpy()
    n = len(points)
    low, high = np.percentile(points, 25, axis=0), np.percentile(points, 75, axis=0)
    inside = int(((points >= low.astype(np.float32)) & (points <= high.astype(np.float32))).all(axis=1).sum())
    assert 0 < inside < n
    request = ClearRegion.Request(min=Point(x=float(low[0]), y=float(low[1]), z=float(low[2])),
                                  max=Point(x=float(high[0]), y=float(high[1]), z=float(high[2])), frame_id="odom")
    r = env.call(ClearRegion, "/mirage_ops/clear_region", request)
    assert r.success, r.message
    assert r.points_removed == inside and r.points_left == n - inside == len(env.node.holder.memory)
    flipped = ClearRegion.Request(min=request.max, max=request.min)
    r = env.call(ClearRegion, "/mirage_ops/clear_region", flipped)
    assert not r.success and "<=" in r.message and len(env.node.holder.memory) == n - inside
    other = ClearRegion.Request(min=request.min, max=request.max, frame_id="base_link")
    r = env.call(ClearRegion, "/mirage_ops/clear_region", other)
    assert not r.success and "world frame 'odom'" in r.message


def test_cloud_in_observed_colours_then_pca(env):
    from mirage_ros import conversions as conv

    holder = env.node.holder

    def cloud_now():
        n = len(holder.memory)
        return env.graph.wait_until(lambda: env.clouds and env.clouds[-1].width == n and env.clouds[-1], WAIT,
                                    "a cloud of the current memory")

    env.feed(1)
    xyz, rgb = conv.pointcloud2_to_numpy(cloud_now())
    exp_xyz, exp_rgb = holder.memory.export_points(colorize="observed")
    np.testing.assert_array_equal(xyz, exp_xyz)
    np.testing.assert_array_equal(rgb, exp_rgb)
    env.clouds.clear()
    assert env.set_params(cloud_colors="pca")[0].successful
    _, pca = conv.pointcloud2_to_numpy(cloud_now())  # republished in PCA colours without a memory change
    np.testing.assert_array_equal(pca, holder.memory.export_points(colorize="pca")[1])
    assert not np.array_equal(pca, rgb)
    assert env.set_params(cloud_colors="observed")[0].successful


def test_decay_forgets_what_is_not_seen_again(env):
    holder = env.node.holder
    env.feed(2)
    assert len(holder.memory) > 0
    assert env.set_params(decay_seconds=1.0)[0].successful
    env.graph.wait_until(lambda: len(holder.memory) == 0, WAIT, "the memory to decay")
    assert env.set_params(decay_seconds=0.0)[0].successful
    env.node.ingestor.reset()
    env.feed(3)
    time.sleep(1.5)
    assert len(holder.memory) > 0  # decay off: what is written stays
