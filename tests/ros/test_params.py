"""mirage_ros.params: the parameter table, config/*.yaml, bad values; the launch file and RViz config agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from mirage_ros.params import CAMERA_SPECS, PARAM_SPECS, CameraConfig, NodeParams, validate_cameras, validate_params

ROOT = Path(__file__).resolve().parents[2]


def test_yaml_matches_parameter_table():
    data = yaml.safe_load((ROOT / "config" / "mirage.yaml").read_text())
    values = data["/**"]["ros__parameters"]
    cameras = {name: values.pop(name) for name in NodeParams.defaults().cameras}  # <camera>.<name> nest in YAML
    assert set(values) == {s.name for s in PARAM_SPECS}
    for index, (name, entries) in enumerate(cameras.items()):
        assert set(entries) == {s.name for s in CAMERA_SPECS}
        assert validate_cameras((name,), {f"{name}.{k}": v for k, v in entries.items()}) == \
            [CameraConfig.default(name, index)]
    for spec in PARAM_SPECS:
        assert values[spec.name] == spec.default, spec.name
        assert type(values[spec.name]) is type(spec.default), f"{spec.name}: YAML type differs from the declared one"
        assert spec.description
    assert validate_params(values) == NodeParams.defaults()


def test_5b_parameters_map_to_the_world_model():
    from mirage_ros.core.model_loading import world_model_kwargs

    base = yaml.safe_load((ROOT / "config" / "mirage.yaml").read_text())["/**"]["ros__parameters"]
    big = yaml.safe_load((ROOT / "config" / "mirage_5b.yaml").read_text())["/**"]["ros__parameters"]
    params = validate_params({**base, **big, "checkpoints": "side_branch=/sb,lora=/lora"})
    kw = world_model_kwargs(params)
    assert kw["device"] == "cuda" and kw["torch_dtype"] == torch.bfloat16 and kw["num_inference_steps"] == 20
    assert (kw["height"], kw["width"], kw["chunk_frames"]) == (704, 1280, 33)
    assert kw["side_branch_path"] == "/sb" and kw["lora_path"] == "/lora"
    tiny = world_model_kwargs(validate_params(base))
    assert tiny["device"] == "cpu" and "num_inference_steps" not in tiny  # steps 0: the model's own default
    assert not {"height", "width", "chunk_frames"} & set(tiny)  # the model's own size and chunking


@pytest.mark.parametrize("bad, word", [
    ({"steps": -1}, "steps"), ({"goal_policy": "queue"}, "goal_policy"), ({"image_height": 70}, "image_height"),
    ({"chunk_frames": 8}, "chunk_frames"), ({"dtype": "int8"}, "dtype"), ({"world_frame": ""}, "world_frame"),
    ({"keyframe_translation": -1.0}, "keyframe_translation"), ({"steps": "four"}, "steps"),
    ({"tf_hold": -0.1}, "tf_hold"), ({"torch_threads": -1}, "torch_threads"), ({"cameras": []}, "cameras"),
    ({"cameras": ["front", "front"]}, "twice"), ({"cameras": ["front.left"]}, "camera name"),
    ({"cameras": "front"}, "cameras"), ({"imagined_frame": "odom"}, "imagined_frame"),
])
def test_bad_parameters_raise_naming_them(bad, word):
    with pytest.raises(ValueError, match=word):
        validate_params(bad)


def test_cameras_default_to_todays_topics_then_to_their_names():
    front, wrist = validate_cameras(("front", "wrist"), {"wrist.optical_frame": "wrist_color_optical_frame"})
    assert (front.rgb_topic, front.depth_topic, front.camera_info_topic, front.optical_frame) == \
        ("rgb/image", "depth/image", "rgb/camera_info", "")
    assert (wrist.rgb_topic, wrist.depth_topic, wrist.camera_info_topic, wrist.optical_frame) == \
        ("wrist/rgb/image", "wrist/depth/image", "wrist/rgb/camera_info", "wrist_color_optical_frame")
    with pytest.raises(ValueError, match="share an input topic"):
        validate_cameras(("a", "b"), {"b.rgb_topic": "rgb/image"})
    with pytest.raises(ValueError, match="a.depth_topic"):
        validate_cameras(("a",), {"a.depth_topic": " "})


# ------------------------------------------------------------------------------------------ launch and RViz
def test_launch_file_declares_the_arguments_and_rviz_matches_the_node():
    import ast

    source = (ROOT / "launch" / "mirage.launch.py").read_text()
    tree = ast.parse(source)
    declared = {node.args[0].value for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument"}
    assert {"use_sim_time", "namespace", "params_file", "rgb_topic", "depth_topic", "camera_info_topic", "rviz",
            "log_level", "bag", "bag_wait"} <= declared
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
