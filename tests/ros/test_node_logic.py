"""The node's ROS-free parts: parameters, keep-latest queue, keyframes, frame fitting, goal resolution."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from mirage.camera import look_at, make_intrinsics
from mirage_ros.node_imagine import GoalError, frame_stamps, interpolate_poses, resolve_goal, resolve_poses
from mirage_ros.node_ingest import IngestWorker, KeepLatestQueue, KeyframeSelector, fit_to_size
from mirage_ros.node_model import parse_checkpoints, rollout_length
from mirage_ros.node_params import PARAM_SPECS, NodeParams, validate_params

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------ parameters
def test_yaml_matches_parameter_table():
    data = yaml.safe_load((ROOT / "config" / "mirage.yaml").read_text())
    values = data["/**"]["ros__parameters"]
    assert set(values) == {s.name for s in PARAM_SPECS}
    for spec in PARAM_SPECS:
        assert values[spec.name] == spec.default, spec.name
        assert type(values[spec.name]) is type(spec.default), f"{spec.name}: YAML type differs from the declared one"
        assert spec.description
    assert validate_params(values) == NodeParams.defaults()


def test_5b_parameters_map_to_the_world_model():
    from mirage_ros.node_model import world_model_kwargs

    base = yaml.safe_load((ROOT / "config" / "mirage.yaml").read_text())["/**"]["ros__parameters"]
    big = yaml.safe_load((ROOT / "config" / "mirage_5b.yaml").read_text())["/**"]["ros__parameters"]
    params = validate_params({**base, **big, "checkpoints": "side_branch=/sb,lora=/lora"})
    kw = world_model_kwargs(params)
    assert kw["device"] == "cuda" and kw["torch_dtype"] == torch.bfloat16 and kw["num_inference_steps"] == 20
    assert (kw["height"], kw["width"], kw["chunk_frames"]) == (704, 1280, 33)
    assert kw["side_branch_path"] == "/sb" and kw["lora_path"] == "/lora"
    tiny = world_model_kwargs(validate_params(base))
    assert tiny["device"] == "cpu" and tiny["num_inference_steps"] == 20
    assert not {"height", "width", "chunk_frames"} & set(tiny)  # the model's own size and chunking


@pytest.mark.parametrize("bad, word", [
    ({"steps": 0}, "steps"), ({"goal_policy": "queue"}, "goal_policy"), ({"image_height": 70}, "image_height"),
    ({"chunk_frames": 8}, "chunk_frames"), ({"dtype": "int8"}, "dtype"), ({"world_frame": ""}, "world_frame"),
    ({"keyframe_translation": -1.0}, "keyframe_translation"), ({"steps": "four"}, "steps"),
])
def test_bad_parameters_raise_naming_them(bad, word):
    with pytest.raises(ValueError, match=word):
        validate_params(bad)


def test_checkpoints_and_rollout_length():
    assert parse_checkpoints("") == {}
    assert parse_checkpoints("side_branch=/a, lora=/b") == {"side_branch_path": "/a", "lora_path": "/b"}
    assert parse_checkpoints("reference=/r/ckpt.safetensors") == {"reference_checkpoint_path": "/r/ckpt.safetensors"}
    with pytest.raises(ValueError, match="NAME=PATH"):
        parse_checkpoints("/just/a/path")
    assert [rollout_length(n) for n in (1, 2, 5, 6, 9, 33, 34)] == [1, 5, 5, 9, 9, 33, 37]


# ------------------------------------------------------------------------------------------ queue and worker
def test_keep_latest_queue_drops_oldest_and_never_grows():
    q = KeepLatestQueue(2)
    for i in range(10):
        q.put(i)
    assert len(q) == 2 and q.dropped == 8 and q.high_water == 2
    assert [q.get(0), q.get(0), q.get(0)] == [8, 9, None]


def test_worker_survives_errors_and_drains():
    q, seen, errors = KeepLatestQueue(100), [], []

    def process(item):
        if item == 3:
            raise ValueError("bad frame")
        time.sleep(0.001)
        seen.append(item)

    worker = IngestWorker(q, process, on_error=lambda item, exc: errors.append((item, str(exc)))).start()
    try:
        for i in range(6):
            q.put(i)
        assert worker.wait_idle(5.0)
        assert seen == [0, 1, 2, 4, 5] and errors == [(3, "bad frame")]
    finally:
        worker.stop()


def test_slow_consumer_does_not_build_latency():
    q = KeepLatestQueue(1)
    gate, done = threading.Event(), []
    worker = IngestWorker(q, lambda item: (gate.wait(10.0), done.append(item))).start()
    try:
        for i in range(50):  # the consumer is stuck: everything but the newest is dropped
            q.put(i)
        gate.set()
        assert worker.wait_idle(5.0)
    finally:
        worker.stop()
    assert q.high_water == 1 and done[-1] == 49 and len(done) <= 2 and q.dropped >= 48


def test_keyframe_selector_thresholds():
    sel = KeyframeSelector(translation=0.1, rotation_deg=10.0)
    T0 = look_at([0, 0, 0], [1, 0, 0]).double().numpy()
    assert sel.is_keyframe(T0)
    sel.accept(T0)
    near = T0.copy()
    near[0, 3] += 0.05
    assert not sel.is_keyframe(near)
    far = T0.copy()
    far[0, 3] += 0.15
    assert sel.is_keyframe(far)
    turned = look_at([0, 0, 0], [1, np.tan(np.radians(12)), 0]).double().numpy()
    assert sel.distance(turned)[1] == pytest.approx(12.0, abs=1e-3) and sel.is_keyframe(turned)
    sel.reset()
    assert sel.is_keyframe(near)


# ------------------------------------------------------------------------------------------ frame fitting
def test_fit_to_size_crops_to_aspect_and_scales_intrinsics():
    H, W = 48, 64  # 3:4 into 2:3 -> crop rows
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, :, 0] = np.arange(W, dtype=np.uint8)[None]
    depth = np.full((H, W), 2.0, np.float32)
    K = make_intrinsics(50.0, 50.0, W / 2, H / 2)
    rgb_t, depth_t, K_t = fit_to_size(rgb, depth, K, (32, 48))
    assert rgb_t.shape == (3, 32, 48) and depth_t.shape == (32, 48) and rgb_t.max() <= 1.0
    # the crop keeps all columns (43 x 64 rows centred), so the principal point stays centred
    assert K_t[0, 2].item() == pytest.approx(24.0) and K_t[1, 2].item() == pytest.approx(16.0, abs=0.5)
    assert K_t[0, 0].item() == pytest.approx(50.0 * 48 / 64)
    # a point on the optical axis stays at the principal point
    assert torch.allclose(depth_t, torch.full((32, 48), 2.0))


# ------------------------------------------------------------------------------------------ goals
def _pose_stamped(T, frame="odom", sec=0):
    t = T[:3, 3]
    from mirage.camera import matrix_to_quat

    q = matrix_to_quat(T[:3, :3])
    return SimpleNamespace(
        header=SimpleNamespace(frame_id=frame, stamp=SimpleNamespace(sec=sec, nanosec=0)),
        pose=SimpleNamespace(position=SimpleNamespace(x=t[0], y=t[1], z=t[2]),
                             orientation=SimpleNamespace(x=q[0], y=q[1], z=q[2], w=q[3])))


def test_interpolate_poses_slerps_between_keys():
    A = look_at([0, 0, 0], [1, 0, 0]).double().numpy()
    B = look_at([1, 0, 0], [1, 1, 0]).double().numpy()  # moved 1 m and turned 90 degrees
    out = interpolate_poses(np.stack([A, B]), 3)
    assert out.shape == (3, 4, 4)
    np.testing.assert_allclose(out[0], A, atol=1e-9)
    np.testing.assert_allclose(out[2], B, atol=1e-9)
    np.testing.assert_allclose(out[1][:3, 3], [0.5, 0, 0], atol=1e-9)
    mid = KeyframeSelector()
    mid.accept(A)
    assert mid.distance(out[1])[1] == pytest.approx(45.0, abs=1e-6)
    assert interpolate_poses(A[None], 4).shape == (4, 4, 4)


def test_resolve_goal_composes_frames_and_body():
    world_T_map = np.eye(4)
    world_T_map[:3, 3] = [10, 0, 0]
    body_T_cam = np.eye(4)
    body_T_cam[:3, 3] = [0, 0, 1]
    table = {("odom", "map"): world_T_map, ("base_link", "cam"): body_T_cam}

    def lookup(target, source, stamp):
        if (target, source) not in table:
            raise LookupError(f"{target} <- {source} unknown")
        return table[(target, source)]

    goal = SimpleNamespace(poses=[_pose_stamped(np.eye(4), "map")], body_frame="base_link", fps=0.0, num_frames=0)
    r = resolve_goal(goal, camera_frame="cam", world_frame="odom", lookup=lookup, default_fps=5.0, max_frames=10,
                     now_ns=100_000_000_000)
    np.testing.assert_allclose(r.cam_to_world[0, :3, 3].numpy(), [10, 0, 1])
    assert r.frame_id == "map" and r.fps == 5.0 and r.stamps[0] == 100_000_000_000
    assert frame_stamps(1_795_000_000_000_000_001, 3, 4.0).tolist() == [
        1_795_000_000_000_000_001, 1_795_000_000_250_000_001, 1_795_000_000_500_000_001]

    with pytest.raises(GoalError, match="no poses"):
        resolve_poses([], "", "cam", "odom", lookup)
    with pytest.raises(GoalError, match="nowhere"):
        resolve_poses([_pose_stamped(np.eye(4), "nowhere")], "", "cam", "odom", lookup)
    bad = _pose_stamped(np.eye(4))
    bad.pose.orientation.w = 2.0
    with pytest.raises(GoalError, match="unit"):
        resolve_poses([bad], "", "cam", "odom", lookup)
    goal.num_frames = 11
    with pytest.raises(GoalError, match="max_goal_frames"):
        resolve_goal(goal, camera_frame="cam", world_frame="odom", lookup=lookup, default_fps=5.0, max_frames=10,
                     now_ns=0)


def test_queue_put_is_thread_safe():
    q = KeepLatestQueue(3)
    threads = [threading.Thread(target=lambda: [q.put(i) for i in range(200)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert q.pushed == 800 and len(q) == 3 and q.dropped == 797


# ------------------------------------------------------------------------------------------ launch and RViz
def test_launch_file_declares_the_arguments_and_rviz_matches_the_node():
    import ast

    source = (ROOT / "launch" / "mirage.launch.py").read_text()
    tree = ast.parse(source)
    declared = {node.args[0].value for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument"}
    assert {"use_sim_time", "namespace", "params_file", "rgb_topic", "depth_topic", "camera_info_topic", "rviz",
            "log_level", "bag"} <= declared
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    rviz = yaml.safe_load((ROOT / "config" / "mirage.rviz").read_text())["Visualization Manager"]
    assert rviz["Global Options"]["Fixed Frame"] == NodeParams.defaults().world_frame
    topics = {d.get("Topic", {}).get("Value") for d in rviz["Displays"]}
    assert {"/mirage/cache/points", "/mirage/imagined/image"} <= topics
    classes = {d["Class"] for d in rviz["Displays"]}
    assert {"rviz_default_plugins/TF", "rviz_default_plugins/PointCloud2", "rviz_default_plugins/Image"} <= classes
    try:
        import launch  # noqa: F401
        import launch_ros  # noqa: F401
    except ImportError:
        return  # launch is not installable here; where it is, the description must build
    import importlib.util

    spec = importlib.util.spec_from_file_location("mirage_launch", ROOT / "launch" / "mirage.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.generate_launch_description().entities
