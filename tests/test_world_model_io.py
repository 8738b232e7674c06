"""Loading and saving MirageWorldModel: tiny, saved directories, Wan2.2-layout directories, shipped weights."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import mirage.pipeline.loading as wm_io
from mirage.camera import intrinsics_from_fov, look_at
from mirage.pipeline import CONFIG_NAME, MirageWorldModel, WorldModelConfig

H, W = 64, 96


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rollout(model, seed=0):
    K = intrinsics_from_fov(70.0, H, W)
    c2w = torch.stack([look_at([0.05 * i, 0, 0], [0.05 * i, 0, 1], up=[0, -1, 0]) for i in range(9)])
    memory = model.new_memory(voxel_size=None)
    first = torch.rand(3, H, W, generator=torch.Generator().manual_seed(2))
    model.observe(memory, first, torch.full((H, W), 4.0), K, c2w[0])
    return model.rollout(memory, K, c2w, first_frame=first, num_inference_steps=2, seed=seed).frames


def _perturb_adapters(model):
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for module in model.transformer.adapter_modules().values():
            for p in module.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))


def test_tiny_defaults():
    model = MirageWorldModel.from_pretrained("tiny")
    assert (model.height, model.width, model.chunk_frames) == (64, 96, 9)
    assert model.latent_size == (4, 6)
    assert model.transformer.side_branch is not None and model.transformer.camera_embedding is not None
    # a fresh side branch is zero-initialised: it must not change the prediction
    x = torch.randn(1, 48, 3, 4, 6)
    text = model.backbone.encode_prompt("")
    memory = torch.randn(1, 48, 3, 4, 6)
    mask = torch.ones(1, 1, 3, 4, 6, dtype=torch.bool)
    with torch.no_grad():
        a = model.transformer(x, torch.tensor([500.0]), text)
        b = model.transformer(x, torch.tensor([500.0]), text, memory_latents=memory, memory_mask=mask)
    assert torch.equal(a, b)


def test_save_and_reload_round_trip(tmp_path):
    model = MirageWorldModel.from_pretrained("tiny", num_inference_steps=7)
    _perturb_adapters(model)  # stands for training: the saved weights must be the ones that come back
    model.save_pretrained(tmp_path / "wm")
    config = json.loads((tmp_path / "wm" / CONFIG_NAME).read_text())
    assert config["backbone"] == "backbone" and config["num_inference_steps"] == 7
    for sub in ("backbone", "side_branch", "camera_embedding"):
        assert (tmp_path / "wm" / sub).is_dir()
    loaded = MirageWorldModel.from_pretrained(str(tmp_path / "wm"))
    assert loaded.config.backbone == str((tmp_path / "wm" / "backbone").resolve())
    assert dataclasses.replace(loaded.config, backbone="tiny") == model.config
    for name, module in model.transformer.adapter_modules().items():
        other = loaded.transformer.adapter_modules()[name].state_dict()
        for key, value in module.state_dict().items():
            assert torch.equal(value, other[key]), f"{name}.{key}"
    assert np.array_equal(_rollout(model), _rollout(loaded))
    fresh = MirageWorldModel.from_pretrained("tiny")
    assert not np.array_equal(_rollout(fresh), _rollout(loaded))  # the adapters matter


def test_overrides_apply_to_saved_directories(tmp_path):
    MirageWorldModel.from_pretrained("tiny").save_pretrained(tmp_path / "wm")
    model = MirageWorldModel.from_pretrained(str(tmp_path / "wm"), num_inference_steps=3, max_depth=10.0)
    assert model.config.num_inference_steps == 3 and model.config.max_depth == 10.0
    with pytest.raises(ValueError, match="unknown"):
        MirageWorldModel.from_pretrained(str(tmp_path / "wm"), no_such_option=1)


def test_wan_layout_directory_with_adapter_checkpoint(tmp_path):
    from mirage.models import load_backbone
    from mirage.models.checkpoints import save_adapters

    load_backbone("tiny").save_pretrained(tmp_path / "wan")  # diffusers layout: transformer/ vae/ scheduler/
    trained = MirageWorldModel.from_pretrained("tiny")
    _perturb_adapters(trained)
    save_adapters(trained.transformer, tmp_path / "adapters")
    model = MirageWorldModel.from_pretrained(str(tmp_path / "wan"), height=H, width=W, chunk_frames=9,
                                             adapters_path=str(tmp_path / "adapters"))
    assert model.config.backbone == str(tmp_path / "wan")
    assert np.array_equal(_rollout(model), _rollout(trained))
    with pytest.raises(FileNotFoundError, match="adapter"):
        MirageWorldModel.from_pretrained(str(tmp_path / "wan"), height=H, width=W, chunk_frames=9,
                                         adapters_path=str(tmp_path / "none"))


def test_real_size_defaults_for_wan_directories():
    config = WorldModelConfig.preset("wan22_5b")
    assert (config.height, config.width, config.chunk_frames, config.num_inference_steps) == (704, 1280, 33, 20)
    assert config.flow_shift == 5.0 and config.chunk_latent_frames(temporal_stride=4) == 9


def test_mirage_tiny_resolves_to_the_shipped_directory(tmp_path, monkeypatch):
    monkeypatch.setitem(wm_io.SHIPPED, "mirage-tiny", tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="not installed"):
        MirageWorldModel.from_pretrained("mirage-tiny")
    MirageWorldModel.from_pretrained("tiny", num_inference_steps=4).save_pretrained(tmp_path / "shipped")
    monkeypatch.setitem(wm_io.SHIPPED, "mirage-tiny", tmp_path / "shipped")
    assert MirageWorldModel.from_pretrained("mirage-tiny").config.num_inference_steps == 4


def test_unknown_names_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError):
        MirageWorldModel.from_pretrained(str(tmp_path / "nothing-here"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither"):
        MirageWorldModel.from_pretrained(str(tmp_path / "empty"))


def test_lora_survives_save_and_load(tmp_path):
    from mirage.models import add_lora
    from mirage.models.lora import lora_adapters

    model = MirageWorldModel.from_pretrained("tiny")
    add_lora(model.transformer, rank=4)
    with torch.no_grad():
        for name, p in model.transformer.backbone.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(7))
    model.save_pretrained(tmp_path / "wm")
    assert (tmp_path / "wm" / "lora").is_dir()
    loaded = MirageWorldModel.from_pretrained(str(tmp_path / "wm"))
    assert lora_adapters(loaded.transformer) == ["default"]
    assert np.array_equal(_rollout(model), _rollout(loaded))


def test_single_part_checkpoints(tmp_path):
    from mirage.models import add_lora
    from mirage.models.checkpoints import save_adapters

    trained = MirageWorldModel.from_pretrained("tiny")
    _perturb_adapters(trained)
    add_lora(trained.transformer, rank=2)
    with torch.no_grad():
        for name, p in trained.transformer.backbone.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
    save_adapters(trained.transformer, tmp_path / "ckpt")
    parts = {f"{k}_path": str(tmp_path / "ckpt" / k) for k in ("side_branch", "camera_embedding", "lora")}
    model = MirageWorldModel.from_pretrained("tiny", **parts)
    assert np.array_equal(_rollout(model), _rollout(trained))
    with pytest.raises(FileNotFoundError, match="side_branch_path"):
        MirageWorldModel.from_pretrained("tiny", side_branch_path=str(tmp_path / "none"))


def test_reference_checkpoint_loads_through_from_pretrained(tmp_path):
    from safetensors.torch import save_file

    from reference_wan import random_reference_weights

    # the tiny default: one hint block after block 0 (every other block, as the reference)
    _, ref, _ = random_reference_weights(24, 32, 2, 32, vace_layers=[0], lora_rank=4)
    save_file(ref, str(tmp_path / "ref.safetensors"))
    model = MirageWorldModel.from_pretrained("tiny", reference_checkpoint_path=str(tmp_path / "ref.safetensors"))
    t = model.transformer
    assert t.reference_report.complete and t.reference_report.folded
    assert torch.equal(t.side_branch.hint_blocks[0].attn1.to_q.weight, ref["vace_blocks.0.self_attn.q.weight"])
    hint = t.side_branch.hint_patch_embedding.weight
    assert torch.equal(hint[:, :48], ref["vace_patch_embedding.weight"][:, :48]) and not hint[:, 48:].any()
    assert t.side_branch.hint_offset is not None  # the tiny VAE's score latent is not constant
    save_file({**ref, "unknown.weight": torch.zeros(1)}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(ValueError, match="unknown.weight"):  # strict by default
        MirageWorldModel.from_pretrained("tiny", reference_checkpoint_path=str(tmp_path / "extra.safetensors"))
    loose = MirageWorldModel.from_pretrained("tiny", reference_checkpoint_path=str(tmp_path / "extra.safetensors"),
                                             reference_strict=False)
    assert not loose.transformer.reference_report.complete
    with pytest.raises(FileNotFoundError, match="reference_checkpoint_path"):
        MirageWorldModel.from_pretrained("tiny", reference_checkpoint_path=str(tmp_path / "missing.safetensors"))


def test_depth_anything_directory_as_depth_provider(tmp_path):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    from mirage.perception.depth import DepthAnythingProvider

    torch.manual_seed(0)
    backbone = Dinov2Config(image_size=28, patch_size=14, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                            intermediate_size=32, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 8, 8],
                                 fusion_hidden_size=8, head_hidden_size=4, depth_estimation_type="metric", max_depth=20)
    DepthAnythingForDepthEstimation(config).save_pretrained(tmp_path / "da")
    DPTImageProcessor(size={"height": 28, "width": 28}, ensure_multiple_of=14).save_pretrained(tmp_path / "da")
    model = MirageWorldModel.from_pretrained("tiny", depth_provider=str(tmp_path / "da"))
    assert isinstance(model.depth_provider, DepthAnythingProvider) and model.depth_provider.metric
    K = intrinsics_from_fov(70.0, H, W)
    c2w = torch.stack([look_at([0.02 * i, 0, 0], [0.02 * i, 0, 1], up=[0, -1, 0]) for i in range(9)])
    memory = model.new_memory(voxel_size=None)
    first = torch.rand(3, H, W, generator=torch.Generator().manual_seed(2))
    model.observe(memory, first, torch.full((H, W), 4.0), K, c2w[0])
    before = len(memory)
    res = model.rollout(memory, K, c2w, first_frame=first, num_inference_steps=1, update_memory=True)
    assert len(res.depth_scales) == 2 and all(s is not None and s > 0 for s in res.depth_scales)
    assert len(memory) > before  # estimated, then scaled to the stored wall, then written


def test_resaving_a_loaded_model_stays_self_contained(tmp_path):
    MirageWorldModel.from_pretrained("tiny").save_pretrained(tmp_path / "a")
    MirageWorldModel.from_pretrained(str(tmp_path / "a")).save_pretrained(tmp_path / "b")
    assert json.loads((tmp_path / "b" / CONFIG_NAME).read_text())["backbone"] == "backbone"
    assert (tmp_path / "b" / "backbone" / "transformer").is_dir()
    # a Wan2.2-layout backbone is referenced, not copied (unless asked)
    from mirage.models import load_backbone

    load_backbone("tiny").save_pretrained(tmp_path / "wan")
    wan = MirageWorldModel.from_pretrained(str(tmp_path / "wan"), height=H, width=W, chunk_frames=9)
    wan.save_pretrained(tmp_path / "c")
    assert json.loads((tmp_path / "c" / CONFIG_NAME).read_text())["backbone"] == str(tmp_path / "wan")
    wan.save_pretrained(tmp_path / "d", copy_backbone=True)
    assert json.loads((tmp_path / "d" / CONFIG_NAME).read_text())["backbone"] == "backbone"
    assert np.array_equal(_rollout(MirageWorldModel.from_pretrained(str(tmp_path / "d"))), _rollout(wan))


def test_configs_saved_before_same_type_latents_keep_their_memory_type(tmp_path):
    MirageWorldModel.from_pretrained("tiny").save_pretrained(tmp_path / "wm")
    saved = json.loads((tmp_path / "wm" / CONFIG_NAME).read_text())
    assert (saved["memory_latent_type"], saved["memory_latents"]) == ("target", "denoised")
    for key in ("memory_latent_type", "memory_latents"):  # what a directory written before them looks like
        del saved[key]
    (tmp_path / "wm" / CONFIG_NAME).write_text(json.dumps(saved))
    old = MirageWorldModel.from_pretrained(str(tmp_path / "wm"))
    assert (old.config.memory_latent_type, old.config.memory_latents) == ("single_frame", "reencoded")
    assert old.memory_holds_context_type
    x = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(3))
    assert torch.equal(old.encode_images(x), old.encode_context_frames(x))
    with pytest.raises(ValueError, match="reencoded"):
        MirageWorldModel.from_pretrained(str(tmp_path / "wm"), memory_latents="denoised")
    config, _, _ = wm_io.resolve_pretrained("mirage-tiny", {})  # the shipped v2 saves its latent type: target
    assert config.memory_latent_type == "target"
    with pytest.raises(ValueError, match="memory_latent_type"):
        WorldModelConfig(memory_latent_type="group")


def test_inference_options_reach_the_transformer():
    from mirage.pipeline import MirageWorldModel

    model = MirageWorldModel.from_pretrained("tiny", modulation="per_token", side_branch_target_only=True,
                                             side_branch_blocks=1)
    assert model.transformer.modulation == "per_token"
    assert model.transformer.side_branch.target_only and len(model.transformer.side_branch.active_injection_layers) == 1
    with pytest.raises(ValueError, match="modulation"):
        MirageWorldModel.from_pretrained("tiny", modulation="per_pixel")
    with pytest.raises(ValueError, match="num_blocks"):
        MirageWorldModel.from_pretrained("tiny", side_branch_blocks=99)
    with pytest.raises(ValueError, match="fp8"):
        MirageWorldModel.from_pretrained("tiny", fp8=True)  # CPU: no FP8 tensor cores
