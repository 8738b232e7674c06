"""mirage_ros.core.model_loading: node parameters -> the library's one load_world_model."""

from __future__ import annotations

import pytest
import torch

from mirage_ros.core import model_loading
from mirage_ros.core.model_loading import parse_checkpoints, world_model_from_params, world_model_kwargs
from mirage_ros.params import validate_params


def test_checkpoints():
    assert parse_checkpoints("") == {}
    assert parse_checkpoints("side_branch=/a, lora=/b") == {"side_branch_path": "/a", "lora_path": "/b"}
    assert parse_checkpoints("reference=/r/ckpt.safetensors") == {"reference_checkpoint_path": "/r/ckpt.safetensors"}
    with pytest.raises(ValueError, match="NAME=PATH"):
        parse_checkpoints("/just/a/path")


@pytest.fixture
def library_calls(monkeypatch):
    """Record the calls into mirage.train.export.load_world_model; mirage-tiny 'is not installed'."""
    import mirage.train.export as export

    calls = []

    def fake(name_or_path, device="cpu", torch_dtype=None, **overrides):
        calls.append((name_or_path, device, torch_dtype, overrides))
        if name_or_path in ("mirage-tiny", "/nowhere", "/wan"):
            raise FileNotFoundError(f"{name_or_path} is not installed")
        return f"model:{name_or_path}"

    monkeypatch.setattr(export, "load_world_model", fake)
    return calls


def test_the_node_loads_through_the_library(library_calls):
    params = validate_params({"model": "tiny", "dtype": "bfloat16", "steps": 4, "image_height": 64,
                              "checkpoints": "lora=/l"})
    model, name = world_model_from_params(params, log=lambda m: None)
    assert (model, name) == ("model:tiny", "tiny")
    [(called, device, dtype, overrides)] = library_calls
    assert called == "tiny" and device == "cpu" and dtype == torch.bfloat16
    assert overrides == {k: v for k, v in world_model_kwargs(params).items() if k not in ("device", "torch_dtype")}
    assert overrides["lora_path"] == "/l" and overrides["height"] == 64 and overrides["num_inference_steps"] == 4


def test_missing_mirage_tiny_falls_back_with_a_message_and_nothing_else_does(library_calls):
    messages = []
    model, name = world_model_from_params(validate_params({}), log=messages.append)
    assert name == model_loading.FALLBACK and model == "model:tiny" and "untrained" in messages[0]
    for missing in ({"model_path": "/nowhere"}, {"model": "/wan"}):  # asked for by name: an error, no fallback
        with pytest.raises(FileNotFoundError, match="not installed"):
            world_model_from_params(validate_params(missing), log=messages.append)
    assert [c[0] for c in library_calls] == ["mirage-tiny", "tiny", "/nowhere", "/wan"]
    assert len(messages) == 1
