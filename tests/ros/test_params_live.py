"""Live parameters without ROS: which may change, validation of a change, the descriptors that say so."""

from __future__ import annotations

import pytest

from mirage_ros.params import (LIVE_PARAMETERS, PARAM_SPECS, NodeParams, live_parameter_names, update_params,
                               validate_params)

READ_ONLY_AT_LEAST = {"model", "model_path", "device", "dtype", "checkpoints", "world_frame", "image_height",
                      "image_width", "chunk_frames", "voxel_size", "max_points", "input_qos", "input_transport"}


def test_every_parameter_says_whether_it_can_change():
    live = set(live_parameter_names())
    assert LIVE_PARAMETERS <= live
    assert {"keyframe_translation", "keyframe_rotation_deg", "cloud_rate", "cloud_max_points", "goal_policy", "steps",
            "fps", "torch_threads", "cloud_colors", "decay_seconds"} <= live
    assert not READ_ONLY_AT_LEAST & live
    assert all(isinstance(spec.live, bool) for spec in PARAM_SPECS)


def test_a_change_is_validated_and_returns_new_params():
    current = NodeParams.defaults()
    new = update_params(current, {"keyframe_translation": 0.5, "steps": 4, "goal_policy": "preempt",
                                  "cloud_colors": "pca"})
    assert (new.keyframe_translation, new.steps, new.goal_policy, new.cloud_colors) == (0.5, 4, "preempt", "pca")
    assert current == NodeParams.defaults()  # never modified
    assert update_params(current, {"fps": 12}).fps == 12.0  # an integer for a float parameter is fine


@pytest.mark.parametrize("changes, words", [
    ({"model": "tiny"}, ("model", "read-only", "restart")),
    ({"dtype": "bfloat16"}, ("dtype", "read-only")),
    ({"device": "cuda"}, ("device", "read-only")),
    ({"steps": -1}, ("steps", "outside")),
    ({"cloud_rate": 100.0}, ("cloud_rate", "outside")),
    ({"goal_policy": "queue"}, ("goal_policy", "one of")),
    ({"cloud_colors": "rainbow"}, ("cloud_colors", "one of")),
    ({"decay_seconds": -1.0}, ("decay_seconds", "outside")),
    ({"no_such_thing": 1}, ("unknown",)),
])
def test_bad_changes_are_refused_with_the_reason(changes, words):
    with pytest.raises(ValueError) as info:
        update_params(NodeParams.defaults(), changes)
    for word in words:
        assert word in str(info.value)


def test_descriptors_mark_read_only_and_live():
    pytest.importorskip("rcl_interfaces")
    from mirage_ros.params import _descriptor

    by_name = {spec.name: spec for spec in PARAM_SPECS}
    model, rate = _descriptor(by_name["model"]), _descriptor(by_name["cloud_rate"])
    assert model.read_only and "restart" in model.description
    assert not rate.read_only and "run time" in rate.description
    assert rate.floating_point_range[0].to_value == 30.0


def test_transports_follow_input_transport():
    d = NodeParams.defaults()
    assert (d.rgb_transport, d.depth_input_transport) == ("raw", "raw")
    c = validate_params({"input_transport": "compressed"})
    assert (c.rgb_transport, c.depth_input_transport) == ("compressed", "compressedDepth")
    mixed = validate_params({"input_transport": "compressed", "depth_transport": "raw"})
    assert mixed.depth_input_transport == "raw"
