"""The mirage node over real rclpy on loopback DDS: seeding, cloud, goals, cancel, policy, services, TF, bad input,
imagination kept apart from observations, imagined poses and masks, the cache directory, the input watchdog, cameras.

One module-wide graph (own context and DDS domain) holds the node (tiny model, 2 steps), a synthetic camera that
publishes only when told (``publish_frame``), and a client node. Every wait has a deadline.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

DOMAIN = int(os.environ.get("ROS_DOMAIN_ID") or 0) or 1 + os.getpid() % 100  # one domain per test session
WAIT = 20.0


@pytest.fixture(scope="module")
def world_model():
    from mirage.pipeline import MirageWorldModel

    return MirageWorldModel.from_pretrained("tiny", num_inference_steps=2)


@pytest.fixture(scope="module")
def rig():
    from mirage_ros.sim.rig import RigConfig, SyntheticRig

    return SyntheticRig(RigConfig(height=48, width=64, num_frames=16, trajectory="orbit"))


class Env:
    """The graph plus helpers that feed frames and talk to the node."""

    def __init__(self, world_model, rig, cache_dir):
        from nav_msgs.msg import Path
        from rclpy.action import ActionClient
        from tf2_msgs.msg import TFMessage
        from rclpy.parameter import Parameter
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, PointCloud2

        from mirage_ros.action import ImagineTrajectory
        from mirage_ros.msg import CacheStats
        from mirage_ros.node import MirageNode
        from mirage_ros.run import LocalGraph
        from mirage_ros.sim.camera import SyntheticCamera

        self.rig, self.world_model = rig, world_model
        self.graph = g = LocalGraph(domain_id=DOMAIN)
        self.params = [Parameter("input_qos", value="reliable"), Parameter("steps", value=2),
                       Parameter("cloud_rate", value=10.0), Parameter("stats_rate", value=10.0),
                       Parameter("keyframe_translation", value=0.05), Parameter("tf_timeout", value=0.2),
                       Parameter("cloud_max_points", value=50), Parameter("ingest_queue_size", value=20),
                       Parameter("cache_directory", value=str(cache_dir))]
        self.cache_dir = cache_dir
        self.node = g.add(MirageNode(world_model=world_model, context=g.context, parameter_overrides=self.params))
        self.camera = SyntheticCamera(rig=rig, autostart=False, context=g.context,
                                      parameter_overrides=[Parameter("reliable", value=True)])
        g.add(self.camera.node)
        self.client = g.node("test_client")
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.clouds, self.images, self.stats, self.masks, self.paths, self.tf = [], [], [], [], [], []
        self.client.create_subscription(PointCloud2, "/mirage/cache/points", self.clouds.append, latched)
        self.client.create_subscription(Image, "/mirage/imagined/image", self.images.append, 50)
        self.client.create_subscription(Image, "/mirage/imagined/observed_mask", self.masks.append, 50)
        self.client.create_subscription(Path, "/mirage/imagined/path", self.paths.append, latched)
        self.client.create_subscription(TFMessage, "/tf", self.tf.append, 200)
        self.client.create_subscription(CacheStats, "/mirage/cache/stats", self.stats.append, 10)
        self.action = ActionClient(self.client, ImagineTrajectory, "/mirage/imagine_trajectory")
        g.start()
        assert self.action.wait_for_server(timeout_sec=WAIT)
        g.wait_until(lambda: self.camera.rgb_pub.get_subscription_count() >= 1, WAIT, "the node's subscriptions")
        self.stamp_ns = 1_000_000_000

    # ----------------------------------------------------------------------------------------- feeding
    def next_stamp(self) -> int:
        self.stamp_ns += 100_000_000
        return self.stamp_ns

    def feed(self, index: int, stamp_ns: int | None = None) -> int:
        """Publish one rig frame and wait until the node has processed it."""
        before = self.node.ingestor.stats.frames_in
        stamp = self.camera.publish_frame(index, stamp_ns or self.next_stamp())
        self.graph.wait_until(lambda: self.node.ingestor.stats.frames_in > before and self.node.worker.wait_idle(0.05),
                              WAIT, f"frame {index} to be processed")
        return stamp

    def publish_raw(self, rgb=None, depth=None, info=None, frame="camera_color_optical_frame", stamp=None,
                    with_tf=True):
        """Publish hand-made messages (defaults: frame 0 of the rig) and wait for the node to take them."""
        from mirage_ros import conversions as conv

        f = self.rig.frame(0)
        c = self.rig.config
        stamp = stamp or self.next_stamp()
        if with_tf:
            self.camera.tf_pub.publish(self.camera._tf([(c.world_frame, c.body_frame, f.world_to_body)], stamp))
        rgb = rgb if rgb is not None else conv.numpy_to_image(f.rgb, "rgb8", stamp=stamp, frame_id=frame)
        depth = depth if depth is not None else conv.numpy_to_image(f.depth, c.depth_encoding, stamp=stamp,
                                                                    frame_id=frame)
        info = info if info is not None else conv.intrinsics_to_camera_info(f.intrinsics, c.height, c.width,
                                                                            stamp=stamp, frame_id=frame)
        for msg in (rgb, depth, info):
            msg.header.stamp, msg.header.frame_id = conv.ns_to_stamp(stamp), frame
        before = self.node.ingestor.stats.frames_in
        self.camera.rgb_pub.publish(rgb)
        self.camera.depth_pub.publish(depth)
        self.camera.info_pub.publish(info)
        self.graph.wait_until(lambda: self.node.ingestor.stats.frames_in > before and self.node.worker.wait_idle(0.05),
                              WAIT, "the hand-made frame to be processed")

    # ----------------------------------------------------------------------------------------- calls
    def call(self, srv_type, name, request, timeout=WAIT):
        from mirage_ros.run import wait_future

        client = self.client.create_client(srv_type, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
            return wait_future(client.call_async(request), timeout, name)
        finally:
            self.client.destroy_client(client)

    def goal(self, indices=(0, 1, 2), num_frames=0, frame="odom", body_frame="", return_frames=False, fps=0.0):
        from geometry_msgs.msg import PoseStamped

        from mirage_ros import conversions as conv
        from mirage_ros.action import ImagineTrajectory

        goal = ImagineTrajectory.Goal()
        for i in indices:
            f = self.rig.frame(i)
            ps = PoseStamped()
            ps.header.frame_id = frame
            ps.pose = conv.matrix_to_pose(f.world_to_body if body_frame else f.cam_to_world)
            goal.poses.append(ps)
        goal.body_frame, goal.num_frames, goal.return_frames, goal.fps = body_frame, num_frames, return_frames, fps
        return goal

    def send(self, goal, feedback=None):
        from mirage_ros.run import wait_future

        return wait_future(self.action.send_goal_async(goal, feedback_callback=feedback), WAIT, "goal response")

    def result(self, handle, timeout=60.0):
        from mirage_ros.run import wait_future

        return wait_future(handle.get_result_async(), timeout, "goal result")

    def close(self):
        self.graph.close()


@pytest.fixture(scope="module")
def env(world_model, rig, tmp_path_factory):
    e = Env(world_model, rig, tmp_path_factory.mktemp("cache"))
    try:
        yield e
    finally:
        e.close()


def _seed(env, frames=range(0, 8)):
    for i in frames:
        env.feed(i)


# ============================================================================================== tests
def test_seeds_memory_and_publishes_cloud_and_stats(env):
    from mirage_ros import conversions as conv

    _seed(env)
    stats = env.node.ingestor.stats
    assert stats.keyframes >= 2 and stats.frames_dropped_tf == 0 and stats.frames_rejected == 0
    n = len(env.node.holder.memory)
    assert n > 0
    cloud = env.graph.wait_until(lambda: env.clouds and env.clouds[-1].width == min(n, 50) and env.clouds[-1],
                                 WAIT, "a cloud of the current memory")
    assert cloud.header.frame_id == "odom"
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "rgb"]
    xyz, rgb = conv.pointcloud2_to_numpy(cloud)
    assert np.isfinite(xyz).all() and rgb is not None and xyz.shape == (min(n, 50), 3)
    st = env.graph.wait_until(lambda: env.stats and env.stats[-1].points == n and env.stats[-1], WAIT, "stats")
    assert st.keyframes == stats.keyframes and st.world_frame == "odom" and st.bytes > 0


def test_goal_publishes_frames_and_matching_result(env):
    env.images.clear()
    feedback = []
    handle = env.send(env.goal((0, 2, 4), num_frames=6, return_frames=True, fps=5.0), feedback.append)
    assert handle.accepted
    res = env.result(handle)
    from action_msgs.msg import GoalStatus

    assert res.status == GoalStatus.STATUS_SUCCEEDED, res.result.message
    assert res.result.frames_generated == 6 and len(res.result.frames) == 6
    assert res.result.frames[0].height == 64 and res.result.frames[0].width == 96
    assert feedback and feedback[-1].feedback.frames_total == 6
    env.graph.wait_until(lambda: len(env.images) >= 6, WAIT, "6 imagined images")
    assert len(env.images) == 6
    stamps = [im.header.stamp.sec + im.header.stamp.nanosec * 1e-9 for im in env.images]
    np.testing.assert_allclose(np.diff(stamps), 0.2, atol=1e-6)
    assert {im.header.frame_id for im in env.images} == {"mirage_imagined_optical_frame"}
    fb = feedback[-1].feedback  # per denoising step, saying which
    assert fb.steps_per_chunk == 2 and 1 <= fb.step <= 2 and fb.chunks_total >= 1 and fb.frames_per_chunk > 0


def _ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def test_imagined_frames_carry_pose_tf_path_and_observed_mask(env):
    from action_msgs.msg import GoalStatus

    from mirage_ros import conversions as conv

    env.images.clear(), env.masks.clear(), env.tf.clear()
    handle = env.send(env.goal((2, 2, 9, 15), return_frames=True, fps=4.0))
    res = env.result(handle)
    assert res.status == GoalStatus.STATUS_SUCCEEDED, res.result.message
    r = res.result
    assert r.camera_frame == "mirage_imagined_optical_frame" and len(r.poses) == len(r.observed_masks) == 4
    stamps = [_ns(p.header.stamp) for p in r.poses]
    assert [_ns(f.header.stamp) for f in r.frames] == stamps == [_ns(m.header.stamp) for m in r.observed_masks]
    for i, pose in zip((2, 2, 9, 15), r.poses):  # the poses the frames were imagined at, in the world frame
        assert pose.header.frame_id == "odom"
        np.testing.assert_allclose(conv.pose_to_matrix(pose.pose).numpy(), env.rig.frame(i).cam_to_world, atol=1e-5)
    masks = [conv.image_to_numpy(m) for m in r.observed_masks]
    assert all(m.dtype == np.uint8 and m.shape == (64, 96) and set(np.unique(m)) <= {0, 255} for m in masks)
    assert (masks[0] == 255).mean() > 0.2  # a seeded view: mostly observed
    env.graph.wait_until(lambda: len(env.masks) >= 4, WAIT, "4 observed masks on the topic")
    assert [_ns(m.header.stamp) for m in env.masks] == stamps
    np.testing.assert_array_equal(conv.image_to_numpy(env.masks[0]), masks[0])
    # the imagined camera on /tf at each frame's stamp, published before its image
    imagined = env.graph.wait_until(lambda: (lambda t: len(t) >= 4 and t)(
        [t for m in env.tf for t in m.transforms if t.child_frame_id == "mirage_imagined_optical_frame"]),
        WAIT, "the imagined camera on /tf")
    assert [_ns(t.header.stamp) for t in imagined] == stamps and {t.header.frame_id for t in imagined} == {"odom"}
    np.testing.assert_allclose(conv.transform_to_matrix(imagined[2].transform).numpy(),
                               env.rig.frame(9).cam_to_world, atol=1e-5)
    # and the goal's Path, latched
    path = env.graph.wait_until(lambda: env.paths and len(env.paths[-1].poses) == 4 and env.paths[-1], WAIT, "path")
    assert path.header.frame_id == "odom" and [_ns(p.header.stamp) for p in path.poses] == stamps


def _coverage(env, indices):
    from geometry_msgs.msg import PoseStamped

    from mirage_ros import conversions as conv
    from mirage_ros.srv import QueryCoverage

    request = QueryCoverage.Request()
    for i in indices:
        ps = PoseStamped()
        ps.header.frame_id = "odom"
        ps.pose = conv.matrix_to_pose(env.rig.frame(i).cam_to_world)
        request.poses.append(ps)
    return env.call(QueryCoverage, "/mirage/query_coverage", request)


def _saved(env, name):
    """Header (parsed) and tensor bytes of a save through ~/save_cache (safetensors orders its header by hash)."""
    import json
    import struct

    from mirage_ros.srv import SaveCache

    r = env.call(SaveCache, "/mirage/save_cache", SaveCache.Request(path=name))
    assert r.success, r.message
    raw = (env.cache_dir / name).read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + size]), raw[8 + size:]


def test_a_goal_leaves_points_coverage_and_saves_as_observed(env):
    from action_msgs.msg import GoalStatus

    holder = env.node.holder
    points, version = holder.memory.points.clone(), holder.version()
    coverage = list(_coverage(env, (2, 9, 15)).coverage)
    saved = _saved(env, "before_goal.safetensors")
    res = env.result(env.send(env.goal((2, 9, 15), num_frames=9)))
    assert res.status == GoalStatus.STATUS_SUCCEEDED and "kept" not in res.result.message
    assert holder.version() == version and torch_equal(holder.memory.points, points)
    assert list(_coverage(env, (2, 9, 15)).coverage) == coverage
    assert _saved(env, "after_goal.safetensors") == saved
    # opting in keeps what was imagined (then the observed memory comes back from the file)
    kept = env.goal((2, 9, 15), num_frames=9)
    kept.keep_imagined = True
    res = env.result(env.send(kept))
    assert res.status == GoalStatus.STATUS_SUCCEEDED and "kept in the memory" in res.result.message
    assert holder.version() != version
    holder.load(str(env.cache_dir / "before_goal.safetensors"))
    assert torch_equal(holder.memory.points, points)


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def test_goal_through_body_frame_interpolates(env):
    handle = env.send(env.goal((0, 3), num_frames=5, body_frame="base_link"))
    res = env.result(handle)
    assert res.result.frames_generated == 5, res.result.message


def test_cancel_stops_a_running_goal(env):
    from action_msgs.msg import GoalStatus

    started = threading.Event()
    handle = env.send(env.goal(tuple(range(16)), num_frames=81), lambda fb: started.set())
    assert handle.accepted
    assert started.wait(WAIT), "no feedback from the running goal"
    from mirage_ros.run import wait_future

    wait_future(handle.cancel_goal_async(), WAIT, "cancel response")
    res = env.result(handle)
    assert res.status == GoalStatus.STATUS_CANCELED and res.result.frames_generated == 0
    assert "cancel" in res.result.message


def test_second_goal_is_rejected_while_one_runs(env):
    from mirage_ros.run import wait_future

    started = threading.Event()
    first = env.send(env.goal(tuple(range(16)), num_frames=81), lambda fb: started.set())
    assert started.wait(WAIT)
    second = env.send(env.goal())
    assert not second.accepted
    wait_future(first.cancel_goal_async(), WAIT, "cancel")
    env.result(first)
    third = env.send(env.goal(num_frames=1))  # the node serves again afterwards
    assert third.accepted and env.result(third).result.frames_generated == 1


def test_preempt_policy_aborts_the_running_goal(env, tmp_path):
    from action_msgs.msg import GoalStatus
    from rclpy.action import ActionClient
    from rclpy.parameter import Parameter

    from mirage_ros.action import ImagineTrajectory
    from mirage_ros.node import MirageNode
    from mirage_ros.run import wait_future

    env.node.holder.save(str(tmp_path / "seed.safetensors"))
    other = env.graph.add(MirageNode(
        world_model=env.world_model, node_name="mirage_preempt", context=env.graph.context,
        parameter_overrides=[*env.params, Parameter("goal_policy", value="preempt")]))
    other.holder.load(str(tmp_path / "seed.safetensors"))
    client = ActionClient(env.client, ImagineTrajectory, "/mirage_preempt/imagine_trajectory")
    assert client.wait_for_server(timeout_sec=WAIT)
    started = threading.Event()
    first = wait_future(client.send_goal_async(env.goal(tuple(range(16)), num_frames=81),
                                               feedback_callback=lambda fb: started.set()), WAIT, "first goal")
    assert started.wait(WAIT)
    second = wait_future(client.send_goal_async(env.goal(num_frames=5)), WAIT, "second goal")
    assert second.accepted
    r1 = wait_future(first.get_result_async(), 60, "first result")
    r2 = wait_future(second.get_result_async(), 60, "second result")
    assert r1.status == GoalStatus.STATUS_ABORTED and "preempted" in r1.result.message
    assert r2.status == GoalStatus.STATUS_SUCCEEDED and r2.result.frames_generated == 5
    client.destroy()
    env.graph.remove(other)  # it shares the model: no second consumer of the camera afterwards


def test_coverage_seen_beats_unseen(env):
    from geometry_msgs.msg import PoseStamped

    from mirage.camera import look_at
    from mirage_ros import conversions as conv
    from mirage_ros.srv import QueryCoverage

    seen = env.rig.frame(2).cam_to_world
    away = seen.copy()
    away[:3, :3] = away[:3, :3] @ np.diag([-1.0, 1.0, -1.0])  # turned 180 degrees about the camera's y axis
    far = look_at([500.0, 500.0, 500.0], [600.0, 500.0, 500.0]).double().numpy()
    request = QueryCoverage.Request()
    for T in (seen, away, far):
        ps = PoseStamped()
        ps.header.frame_id = "odom"
        ps.pose = conv.matrix_to_pose(T)
        request.poses.append(ps)
    response = env.call(QueryCoverage, "/mirage/query_coverage", request)
    cov = list(response.coverage)
    assert response.success and "3 poses" in response.message
    assert len(cov) == 3 and cov[0] > 0.2 and cov[0] > cov[1] and cov[2] == 0.0
    assert response.mean_depth[0] > 0 and response.mean_depth[2] == 0.0
    # refusals come back with the reason
    request.poses[1].pose.orientation.w = 3.0
    bad = env.call(QueryCoverage, "/mirage/query_coverage", request)
    assert not bad.success and "unit" in bad.message and list(bad.coverage) == []
    request.poses[1].pose.orientation.w = 1.0
    request.camera = "no_such_camera"
    bad = env.call(QueryCoverage, "/mirage/query_coverage", request)
    assert not bad.success and "no_such_camera" in bad.message


def test_save_clear_load_round_trip(env, tmp_path):
    from std_srvs.srv import Trigger

    from mirage_ros.srv import LoadCache, SaveCache

    memory = env.node.holder.memory
    points, features = memory.points.clone(), memory.features.clone()
    cache = env.cache_dir
    r = env.call(SaveCache, "/mirage/save_cache", SaveCache.Request(path="rooms/memory.safetensors"))
    assert r.success, r.message
    path = str(cache / "rooms" / "memory.safetensors")
    assert path in r.message
    # names outside the cache directory are refused, and nothing is created anywhere
    outside = tmp_path / "outside"
    before = sorted(p.name for p in cache.rglob("*"))
    for name, word in ((str(outside / "memory.safetensors"), "absolute"), ("/mirage_root_dir/memory.safetensors",
                                                                           "absolute"),
                       ("../memory.safetensors", "'..'"), ("", "file name"), ("memory.bin", ".safetensors")):
        for srv, service in ((SaveCache, "/mirage/save_cache"), (LoadCache, "/mirage/load_cache")):
            refused = env.call(srv, service, srv.Request(path=name))
            assert not refused.success and word in refused.message, (name, refused.message)
    assert not outside.exists() and not os.path.exists("/mirage_root_dir")
    assert sorted(p.name for p in cache.rglob("*")) == before and not (cache.parent / "memory.safetensors").exists()
    assert env.call(Trigger, "/mirage/clear_cache", Trigger.Request()).success
    assert len(env.node.holder.memory) == 0
    env.graph.wait_until(lambda: env.clouds and env.clouds[-1].width == 0, WAIT, "an empty cloud after clear")
    bad = env.call(LoadCache, "/mirage/load_cache", LoadCache.Request(path="missing.safetensors"))
    assert not bad.success and "no file" in bad.message and len(env.node.holder.memory) == 0
    (cache / "junk.safetensors").write_bytes(b"not a memory")
    assert not env.call(LoadCache, "/mirage/load_cache", LoadCache.Request(path="junk.safetensors")).success
    from mirage.memory import LatentSpatialMemory

    LatentSpatialMemory(channels=8).save(cache / "narrow.safetensors")
    narrow = env.call(LoadCache, "/mirage/load_cache", LoadCache.Request(path="narrow.safetensors"))
    assert not narrow.success and "channel" in narrow.message and len(env.node.holder.memory) == 0
    r = env.call(LoadCache, "/mirage/load_cache", LoadCache.Request(path="rooms/memory.safetensors"))
    assert r.success, r.message
    loaded = env.node.holder.memory
    assert loaded.points.shape == points.shape
    assert np.allclose(loaded.points.numpy(), points.numpy()) and np.allclose(loaded.features.numpy(), features.numpy())
    assert env.node.holder.path == path
    env.graph.wait_until(lambda: env.stats and env.stats[-1].points == len(points), WAIT, "stats after load")


def test_tf_chain_interpolation_and_extrapolation(env):
    """Frames between two TF samples are posed by interpolation; frames past the last sample are dropped."""
    c = env.rig.config
    f0, f1 = env.rig.frame(9), env.rig.frame(11)
    t0, t1 = env.next_stamp(), env.next_stamp() + 400_000_000
    env.stamp_ns = t1
    env.camera.tf_pub.publish(env.camera._tf([(c.world_frame, c.body_frame, f0.world_to_body)], t0))
    env.camera.tf_pub.publish(env.camera._tf([(c.world_frame, c.body_frame, f1.world_to_body)], t1))
    env.graph.wait_until(lambda: env.node.tf.can_transform("odom", c.camera_frame, t1), WAIT, "TF samples")
    mid = (t0 + t1) // 2
    T_mid = env.node.tf.lookup_transform("odom", c.camera_frame, mid).matrix
    from scipy.spatial.transform import Rotation, Slerp

    body = np.eye(4)  # odom -> base_link interpolated (linear translation, slerp rotation), then the static mount
    body[:3, 3] = 0.5 * (f0.world_to_body[:3, 3] + f1.world_to_body[:3, 3])
    body[:3, :3] = Slerp([0, 1], Rotation.from_matrix([f0.world_to_body[:3, :3], f1.world_to_body[:3, :3]]))(
        [0.5]).as_matrix()[0]
    np.testing.assert_allclose(T_mid, body @ env.rig.body_to_camera(), atol=1e-5)
    dropped = env.node.ingestor.stats.frames_dropped_tf
    env.publish_raw(stamp=mid, with_tf=False)
    assert env.node.ingestor.stats.frames_dropped_tf == dropped
    env.stamp_ns = t1 + 5_000_000_000
    env.publish_raw(stamp=env.stamp_ns, with_tf=False)  # 5 s past the newest transform
    assert env.node.ingestor.stats.frames_dropped_tf == dropped + 1


def test_bad_input_is_rejected_and_memory_kept(env):
    from action_msgs.msg import GoalStatus

    from mirage_ros import conversions as conv

    holder = env.node.holder
    version, n = holder.version(), len(holder.memory)
    stats = env.node.ingestor.stats
    f = env.rig.frame(0)
    H, W = env.rig.config.height, env.rig.config.width
    rejected = stats.frames_rejected

    def expect_rejected(what, **kw):
        nonlocal rejected
        env.node.ingestor.reset()  # a keyframe candidate: pixels are decoded and checked too
        env.publish_raw(**kw)
        assert stats.frames_rejected == rejected + 1, f"{what} was not rejected"
        assert what_in(stats.last_error), (what, stats.last_error)
        rejected += 1

    what_in = lambda msg: True  # noqa: E731 - replaced per case below
    cases = [
        ("encoding", dict(rgb=conv.numpy_to_image(f.rgb, "rgb8")), "yuv422"),
        ("size", dict(depth=conv.numpy_to_image(np.ones((H // 2, W // 2), np.float32), "32FC1")), "depth"),
        ("info size", dict(info=conv.intrinsics_to_camera_info(f.intrinsics, H * 2, W * 2)), "camera_info"),
        ("all NaN depth", dict(depth=conv.numpy_to_image(np.full((H, W), np.nan, np.float32), "32FC1")),
         "no valid"),
        ("depth encoding", dict(depth=conv.numpy_to_image(f.rgb[..., 0], "mono8")), "depth encoding"),
    ]
    for what, kw, word in cases:
        if what == "encoding":
            kw["rgb"].encoding = "yuv422"
        what_in = lambda msg, word=word: word in msg  # noqa: E731
        expect_rejected(what, **kw)
    zero = conv.intrinsics_to_camera_info(f.intrinsics, H, W)
    zero.k = [0.0] * 9
    what_in = lambda msg: "focal" in msg  # noqa: E731
    expect_rejected("zero intrinsics", info=zero)

    dropped = stats.frames_dropped_tf
    env.publish_raw(frame="nowhere_frame")
    assert stats.frames_dropped_tf == dropped + 1
    # a TF with a non-unit quaternion is refused by the buffer, so its frame finds no pose
    c = env.rig.config
    stamp = env.next_stamp()
    tf = env.camera._tf([(c.world_frame, c.body_frame, f.world_to_body)], stamp)
    tf.transforms[0].transform.rotation.w += 0.5
    env.camera.tf_pub.publish(tf)
    env.publish_raw(stamp=stamp, with_tf=False)
    assert stats.frames_dropped_tf == dropped + 2
    assert holder.version() == version and len(holder.memory) == n

    # partly invalid depth is fine: NaN / inf / 0 pixels are skipped, the rest goes in
    depth = f.depth.astype(np.float32) * 1e-3
    depth[: H // 2] = np.nan
    depth[H // 2:, : W // 4] = np.inf
    env.node.ingestor.reset()  # make the next frame a keyframe
    env.publish_raw(depth=conv.numpy_to_image(depth, "32FC1"))
    assert stats.frames_rejected == rejected and len(holder.memory) >= n
    assert np.isfinite(holder.memory.points.numpy()).all()

    # bad goals abort with a message; the node keeps serving
    bad_quat = env.goal((0,))
    bad_quat.poses[0].pose.orientation.w = 3.0
    empty = env.goal(())
    unknown = env.goal((0,), frame="nowhere_frame")
    too_many = env.goal((0,), num_frames=100000)
    for goal, word in ((bad_quat, "unit"), (empty, "no poses"), (unknown, "nowhere_frame"),
                       (too_many, "max_goal_frames")):
        res = env.result(env.send(goal))
        assert res.status == GoalStatus.STATUS_ABORTED and word in res.result.message, res.result.message
    res = env.result(env.send(env.goal(num_frames=1)))
    assert res.status == GoalStatus.STATUS_SUCCEEDED


class LogSpy:
    """Collects what a node logs (warning / info) while it is installed; the logger still logs."""

    def __init__(self, node):
        self.node, self.original, self.warnings, self.infos = node, node.get_logger, [], []
        spy = self

        class Logger:
            def __init__(self, logger):
                self._logger = logger

            def warning(self, msg, **kw):
                spy.warnings.append(msg)

            def info(self, msg, **kw):
                spy.infos.append(msg)

            def __getattr__(self, name):
                return getattr(self._logger, name)

        node.get_logger = lambda: Logger(spy.original())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.node.get_logger = self.original


def test_input_watchdog_names_topics_and_backs_off(env):
    node = env.node
    for camera in node.input.cameras:
        camera.last_pair_time -= 100.0
    node._warned_at, node._warn_interval, node._loaded_at = float("-inf"), node.params.input_timeout, None
    with LogSpy(node) as spy:
        env.graph.wait_until(lambda: [m for m in spy.warnings if "no synced" in m], WAIT, "the input warning")
    message = [m for m in spy.warnings if "no synced" in m][0]
    assert "/rgb/image" in message and "/depth/image" in message and "/rgb/camera_info" in message
    assert f"next reminder in {2 * node.params.input_timeout:.0f} s" in message
    assert node._warn_interval == 2 * node.params.input_timeout  # then 4x, 8x, ... up to 300 s
    env.feed(1)  # input again: the interval starts over
    env.graph.wait_until(lambda: node._warn_interval == node.params.input_timeout, WAIT, "the reset")


def _aux_node(env, name, topics_prefix, **params):
    """A second node on the shared model with input topics of its own (nothing else publishes there)."""
    from rclpy.parameter import Parameter

    from mirage_ros.node import MirageNode

    overrides = [*env.params, Parameter("camera.rgb_topic", value=f"/{topics_prefix}/rgb/image"),
                 Parameter("camera.depth_topic", value=f"/{topics_prefix}/depth/image"),
                 Parameter("camera.camera_info_topic", value=f"/{topics_prefix}/rgb/camera_info")]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    return env.graph.add(MirageNode(world_model=env.world_model, node_name=name, context=env.graph.context,
                                    parameter_overrides=overrides))


def test_a_goal_on_an_empty_memory_says_what_it_waits_on(env):
    from action_msgs.msg import GoalStatus
    from rclpy.action import ActionClient

    from mirage_ros.action import ImagineTrajectory
    from mirage_ros.run import wait_future

    node = _aux_node(env, "mirage_empty", "empty_cam")
    client = ActionClient(env.client, ImagineTrajectory, "/mirage_empty/imagine_trajectory")
    try:
        assert client.wait_for_server(timeout_sec=WAIT)
        handle = wait_future(client.send_goal_async(env.goal()), WAIT, "goal")
        res = wait_future(handle.get_result_async(), WAIT, "result")
        assert res.status == GoalStatus.STATUS_ABORTED
        assert res.result.message.startswith("no RGB-D keyframe inserted yet; waiting on /empty_cam/rgb/image (0 msgs)")
        assert "/empty_cam/depth/image" in res.result.message and "/empty_cam/rgb/camera_info" in res.result.message
    finally:
        client.destroy()
        env.graph.remove(node)


def test_serving_a_loaded_cache_warns_once(env):
    from mirage_ros.srv import LoadCache

    env.node.holder.save(str(env.cache_dir / "served.safetensors"))
    node = _aux_node(env, "mirage_served", "served_cam", input_timeout=0.5)
    try:
        with LogSpy(node) as spy:
            r = env.call(LoadCache, "/mirage_served/load_cache", LoadCache.Request(path="served.safetensors"))
            assert r.success, r.message
            env.graph.wait_until(lambda: [m for m in spy.warnings if "serving the loaded cache" in m], WAIT,
                                 "the loaded-cache warning")
            time.sleep(3.0)  # six watchdog periods of 0.5 s input_timeout
        quiet = [m for m in spy.warnings if "no synced" in m]
        first = next(i for i, m in enumerate(quiet) if "serving the loaded cache" in m)
        assert len(quiet) == first + 1 and "not repeated until input arrives" in quiet[first], quiet
    finally:
        env.graph.remove(node)


def test_the_node_says_what_it_ingested_when_input_stops(env):
    from mirage_ros.sim.camera import SyntheticCamera
    from mirage_ros.sim.rig import RigConfig, SyntheticRig
    from rclpy.parameter import Parameter

    node = _aux_node(env, "mirage_burst", "burst/cam", input_timeout=0.5)
    rig = SyntheticRig(RigConfig(height=48, width=64, num_frames=16, body_frame="burst_base",
                                 camera_frame="burst_optical"))
    camera = SyntheticCamera(node_name="burst_camera", rig=rig, autostart=False, context=env.graph.context,
                             namespace="burst/cam", parameter_overrides=[Parameter("reliable", value=True)])
    env.graph.add(camera.node)
    try:
        env.graph.wait_until(lambda: camera.rgb_pub.get_subscription_count() >= 1, WAIT, "subscriptions")
        with LogSpy(node) as spy:
            for i in range(4):
                camera.publish_frame(i, env.next_stamp())
                time.sleep(0.05)
            summary = env.graph.wait_until(lambda: [m for m in spy.infos if m.startswith("input stopped")], WAIT,
                                           "the end-of-input summary")
        assert "it brought 4 rgb/depth/camera_info sets" in summary[0], summary[0]
        assert f"memory {len(node.holder.memory)} points" in summary[0] and len(summary) == 1
    finally:
        env.graph.remove(camera.node)
        env.graph.remove(node)


def test_several_cameras_feed_one_memory_and_goals_pick_one(env):
    from action_msgs.msg import GoalStatus
    from rclpy.action import ActionClient
    from rclpy.parameter import Parameter

    from mirage.frames import fit_intrinsics
    from mirage_ros.action import ImagineTrajectory
    from mirage_ros.node import MirageNode
    from mirage_ros.run import wait_future
    from mirage_ros.sim.camera import SyntheticCamera
    from mirage_ros.sim.rig import RigConfig, SyntheticRig

    node = env.graph.add(MirageNode(world_model=env.world_model, node_name="mirage_multi", context=env.graph.context,
                                    parameter_overrides=[*env.params, Parameter("cameras", value=["front", "wrist"]),
                                                         Parameter("front.rgb_topic", value="/front/rgb/image"),
                                                         Parameter("front.depth_topic", value="/front/depth/image"),
                                                         Parameter("front.camera_info_topic",
                                                                   value="/front/rgb/camera_info")]))
    rigs = {"front": SyntheticRig(RigConfig(height=48, width=64, num_frames=16, body_frame="front_base",
                                            camera_frame="front_optical")),
            "wrist": SyntheticRig(RigConfig(height=60, width=60, num_frames=16, trajectory="turn", scene_seed=0,
                                            body_frame="wrist_base", camera_frame="wrist_optical"))}
    cameras = {name: SyntheticCamera(node_name=f"{name}_camera", rig=rig, autostart=False, namespace=name,
                                     context=env.graph.context, parameter_overrides=[Parameter("reliable", value=True)])
               for name, rig in rigs.items()}
    for camera in cameras.values():
        env.graph.add(camera.node)
    client = ActionClient(env.client, ImagineTrajectory, "/mirage_multi/imagine_trajectory")
    try:
        assert [c.topics["rgb"] for c in node.input.cameras] == ["/front/rgb/image", "/wrist/rgb/image"]
        env.graph.wait_until(lambda: all(c.rgb_pub.get_subscription_count() >= 1 for c in cameras.values()), WAIT,
                             "both cameras' subscriptions")
        for i in (0, 5, 10):
            for name, camera in cameras.items():
                camera.publish_frame(i, env.next_stamp())
        env.graph.wait_until(lambda: node.ingestor.stats.frames_in >= 6 and node.worker.wait_idle(0.05), WAIT,
                             "six sets")
        assert node.ingestor.cameras.names() == ["front", "wrist"] and set(node.ingestor.selectors) == {"front",
                                                                                                         "wrist"}
        assert node.ingestor.stats.frames_dropped_tf == 0 and node.holder.keyframes >= 4 and len(node.holder.memory)
        K_wrist = fit_intrinsics(rigs["wrist"].intrinsics, (60, 60), env.node.image_size)
        assert np.allclose(node.runner.camera("wrist")[1].numpy(), K_wrist.numpy())
        assert client.wait_for_server(timeout_sec=WAIT)
        g = env.goal((0,), num_frames=1)
        g.camera = "wrist"
        # 60 s, not WAIT: under a loaded machine the acceptance of a second node's goal once took over 20 s
        res = wait_future(wait_future(client.send_goal_async(g), 60, "goal").get_result_async(), 60, "result")
        assert res.status == GoalStatus.STATUS_SUCCEEDED, res.result.message
    finally:
        client.destroy()
        for camera in cameras.values():
            env.graph.remove(camera.node)
        env.graph.remove(node)


def test_rollout_failure_aborts_and_the_node_keeps_serving(env, monkeypatch):
    import torch
    from action_msgs.msg import GoalStatus

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    n = len(env.node.holder.memory)
    monkeypatch.setattr(env.node.world_model, "rollout", out_of_memory)
    res = env.result(env.send(env.goal(num_frames=5)))
    assert res.status == GoalStatus.STATUS_ABORTED and "out of memory" in res.result.message
    monkeypatch.undo()
    assert len(env.node.holder.memory) == n
    res = env.result(env.send(env.goal(num_frames=5)))
    assert res.status == GoalStatus.STATUS_SUCCEEDED and res.result.frames_generated == 5


def test_bad_parameters_stop_the_node_with_their_name(env):
    from rclpy.exceptions import ParameterException
    from rclpy.parameter import Parameter

    from mirage_ros.node import MirageNode

    for param, word in ((Parameter("goal_policy", value="queue"), "goal_policy"),
                        (Parameter("steps", value=-1), "steps")):
        with pytest.raises((ValueError, ParameterException), match=word):
            MirageNode(world_model=env.world_model, node_name="mirage_bad", context=env.graph.context,
                       parameter_overrides=[param])
