"""LoRA (self-attention by default, removable, mergeable), adapter checkpoints and reference-checkpoint mapping."""

import json

import pytest
import torch
from safetensors.torch import save_file

from mirage.models import (
    MirageTransformer,
    add_lora,
    load_adapters,
    load_backbone,
    load_reference_checkpoint,
    lora_state_dict,
    merge_lora,
    reference_to_mirage_key,
    remove_lora,
    save_adapters,
)
from mirage.models.lora import load_lora_state_dict, lora_adapters, lora_config, lora_target_names


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("tiny")


@pytest.fixture()
def model(backbone):
    # A private copy of the tiny backbone transformer: LoRA and reference loading modify it in place.
    fresh = load_backbone("tiny")
    return MirageTransformer.from_backbone(fresh.transformer, injection_layers=[0, 1])


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 48, 2, 4, 4, generator=g)
    memory = torch.randn(1, 48, 2, 4, 4, generator=g)
    mask = torch.ones(1, 1, 2, 4, 4)
    rays = torch.randn(1, 6, 2, 4, 4, generator=g)
    e = torch.randn(1, 16, 32, generator=g)
    return x, torch.tensor([600.0]), e, dict(memory_latents=memory, memory_mask=mask, rays=rays)


def _randomize(params, seed=3, scale=0.1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def _lora_params(model, adapter="default"):
    return [p for n, p in model.backbone.named_parameters() if f".{adapter}." in n and "lora_" in n]


# ----------------------------------------------------------------------------------------- LoRA
def test_lora_hits_only_self_attention(model):
    names = add_lora(model, rank=4)
    assert len(names) == 4 * 2
    assert all(".attn1." in n for n in names)
    assert not any(".attn2." in n for n in names)
    for n, _ in model.named_modules():
        if "lora_A" in n:
            assert n.startswith("backbone.blocks.") and ".attn1." in n, n
    assert not any("lora" in n for n, _ in model.side_branch.named_parameters())
    assert type(model.backbone.blocks[0].attn2.to_q) is torch.nn.Linear
    cfg = lora_config(model)
    assert cfg["rank"] == 4 and cfg["alpha"] == 4.0
    assert cfg["targets"] == sorted(["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0"])


def test_lora_default_rank_and_count_on_5b_shapes():
    from mirage.models import build_backbone

    bb = build_backbone("wan22_5b", device="meta", torch_dtype=torch.bfloat16)
    add_lora(bb.transformer)
    n = sum(p.numel() for name, p in bb.transformer.named_parameters() if "lora_" in name)
    assert n == 30 * 4 * 64 * (3072 + 3072)  # 47.2M, as in DESIGN.md


def test_lora_zero_init_then_removal_restores_exactly(model):
    x, t, e, mem = _inputs()
    _randomize(model.side_branch.parameters(), seed=5, scale=0.05)
    before = model(x, t, e, **mem)
    add_lora(model, rank=4)
    assert torch.equal(model(x, t, e, **mem), before)  # B starts at zero
    _randomize(_lora_params(model))
    changed = model(x, t, e, **mem)
    assert not torch.allclose(changed, before)
    remove_lora(model)
    assert lora_adapters(model) == []
    assert type(model.backbone.blocks[0].attn1.to_q) is torch.nn.Linear
    assert torch.equal(model(x, t, e, **mem), before)


def test_lora_merge_matches_unmerged_output(model):
    x, t, e, mem = _inputs()
    add_lora(model, rank=4)
    _randomize(_lora_params(model))
    with torch.no_grad():
        unmerged = model(x, t, e, **mem)
    merge_lora(model)
    assert lora_adapters(model) == []
    assert type(model.backbone.blocks[1].attn1.to_out[0]) is torch.nn.Linear
    torch.testing.assert_close(model(x, t, e, **mem), unmerged, atol=1e-5, rtol=1e-5)


def test_lora_bad_calls(model):
    with pytest.raises(ValueError, match="rank"):
        add_lora(model, rank=0)
    with pytest.raises(ValueError, match="no LoRA adapter"):
        remove_lora(model, "default")
    add_lora(model, rank=2)
    with pytest.raises(ValueError, match="already attached"):
        add_lora(model, rank=2)
    with pytest.raises(ValueError, match="MirageTransformer or WanTransformer3DModel"):
        add_lora(torch.nn.Linear(2, 2))
    sd = lora_state_dict(model)
    before = {k: v.clone() for k, v in sd.items()}
    bad = dict(sd)
    bad["blocks.0.attn1.to_q.lora_A.weight"] = torch.ones(3, 24)
    bad["blocks.0.attn2.to_q.lora_A.weight"] = torch.ones(2, 24)
    with pytest.raises(ValueError, match="does not fit"):
        load_lora_state_dict(model, {k: v + 1 for k, v in bad.items()})
    for k, v in lora_state_dict(model).items():  # nothing was copied
        assert torch.equal(v, before[k])


def test_set_trainable_stages(model):
    stage1 = model.set_trainable("side_branch")
    assert stage1 and all(not p.requires_grad for p in model.backbone.parameters())
    with pytest.raises(ValueError, match="add_lora"):
        model.set_trainable("lora")
    add_lora(model, rank=2)
    stage2 = model.set_trainable("lora")
    lora = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert lora and all("lora_" in n for n in lora)
    assert len(stage2) == len(stage1) + len(lora)


# ----------------------------------------------------------------------------------------- checkpoints
def test_adapter_round_trip_into_bare_backbone(model, tmp_path):
    add_lora(model, rank=4)
    _randomize(model.side_branch.parameters(), seed=1, scale=0.05)
    _randomize(model.camera_embedding.parameters(), seed=2, scale=0.05)
    _randomize(_lora_params(model), seed=3)
    x, t, e, mem = _inputs()
    expected = model(x, t, e, **mem)
    written = save_adapters(model, tmp_path / "ckpt")
    assert written == ["side_branch", "camera_embedding", "lora"]
    assert (tmp_path / "ckpt" / "side_branch" / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((tmp_path / "ckpt" / "lora" / "adapter_config.json").read_text())["rank"] == 4

    fresh = load_backbone("tiny").transformer
    loaded = load_adapters(fresh, tmp_path / "ckpt")
    assert loaded.side_branch.injection_layers == [0, 1]
    assert torch.equal(loaded(x, t, e, **mem), expected)


def test_adapter_load_into_existing_model_all_or_nothing(model, tmp_path):
    _randomize(model.side_branch.parameters(), seed=1, scale=0.05)
    save_adapters(model, tmp_path / "a")
    other = MirageTransformer.from_backbone(load_backbone("tiny").transformer, injection_layers=[0, 1])
    load_adapters(other, tmp_path / "a")
    for (n, a), (_, b) in zip(model.side_branch.state_dict().items(), other.side_branch.state_dict().items()):
        assert torch.equal(a, b), n
    # a model with different injection layers is refused and left untouched
    mismatched = MirageTransformer.from_backbone(load_backbone("tiny").transformer, injection_layers=[1])
    snapshot = {k: v.clone() for k, v in mismatched.state_dict().items()}
    with pytest.raises(ValueError, match="config differs"):
        load_adapters(mismatched, tmp_path / "a")
    for k, v in mismatched.state_dict().items():
        assert torch.equal(v, snapshot[k]), k
    with pytest.raises(ValueError, match="does not exist"):
        load_adapters(other, tmp_path / "nothing")


# ----------------------------------------------------------------------------------------- reference checkpoints
def _reference_state_dict(model, rank=4):
    """A synthetic checkpoint with the reference implementation's names (DiffSynth Wan + VACE + peft LoRA)."""
    g = torch.Generator().manual_seed(7)
    branch = model.side_branch
    dim = 24
    sd = {}
    for i, block in enumerate(branch.hint_blocks):
        p = f"vace_blocks.{i}."
        sd[p + "self_attn.q.weight"] = torch.randn(dim, dim, generator=g)
        sd[p + "self_attn.q.bias"] = torch.randn(dim, generator=g)
        sd[p + "self_attn.o.weight"] = torch.randn(dim, dim, generator=g)
        sd[p + "self_attn.norm_q.weight"] = torch.randn(dim, generator=g)
        sd[p + "cross_attn.k.weight"] = torch.randn(dim, dim, generator=g)
        sd[p + "norm3.weight"] = torch.randn(dim, generator=g)
        sd[p + "ffn.0.weight"] = torch.randn(32, dim, generator=g)
        sd[p + "ffn.2.bias"] = torch.randn(dim, generator=g)
        sd[p + "modulation"] = torch.randn(1, 6, dim, generator=g)
        sd[p + "after_proj.weight"] = torch.randn(dim, dim, generator=g)
    sd["vace_blocks.0.before_proj.weight"] = torch.randn(dim, dim, generator=g)
    sd["vace_patch_embedding.weight"] = torch.randn(dim, 96, 1, 2, 2, generator=g)  # 48 + 48 score channels
    sd["vace_patch_embedding.bias"] = torch.randn(dim, generator=g)
    for i in range(2):
        for m in ("q", "k", "v", "o"):
            sd[f"pipe.dit.blocks.{i}.self_attn.{m}.lora_A.weight"] = torch.randn(rank, dim, generator=g)
            sd[f"pipe.dit.blocks.{i}.self_attn.{m}.lora_B.weight"] = torch.randn(dim, rank, generator=g)
        sd[f"pipe.dit.blocks.{i}.cross_attn.q.lora_A.weight"] = torch.randn(rank, dim, generator=g)
    sd["control_adapter.conv.weight"] = torch.randn(3, 3, generator=g)
    return sd


def test_reference_key_names():
    assert reference_to_mirage_key("vace_blocks.3.self_attn.q.weight") == "side_branch.hint_blocks.3.attn1.to_q.weight"
    assert reference_to_mirage_key("vace.vace_blocks.0.before_proj.bias") == "side_branch.hint_blocks.0.proj_in.bias"
    assert reference_to_mirage_key("vace_blocks.1.norm3.weight") == "side_branch.hint_blocks.1.norm2.weight"
    assert reference_to_mirage_key("vace_blocks.1.modulation") == "side_branch.hint_blocks.1.scale_shift_table"
    assert reference_to_mirage_key("pipe.dit.blocks.2.self_attn.o.lora_B.weight") == \
        "backbone.blocks.2.attn1.to_out.0.lora_B.default.weight"
    assert reference_to_mirage_key("blocks.2.self_attn.q.lora_A.default.weight", "x") == \
        "backbone.blocks.2.attn1.to_q.lora_A.x.weight"
    assert reference_to_mirage_key("blocks.0.ffn.0.weight") == "backbone.blocks.0.ffn.net.0.proj.weight"
    assert reference_to_mirage_key("head.modulation") == "backbone.scale_shift_table"
    assert reference_to_mirage_key("time_projection.1.bias") == "backbone.condition_embedder.time_proj.bias"
    assert reference_to_mirage_key("control_adapter.conv.weight") is None


def test_load_reference_checkpoint_report(model, tmp_path):
    sd = _reference_state_dict(model)
    save_file(sd, str(tmp_path / "ref.safetensors"))
    report = load_reference_checkpoint(model, tmp_path / "ref.safetensors", strict=False)
    assert report.lora_attached == {"rank": 4, "alpha": 4.0,
                                    "targets": ["attn1.to_k", "attn1.to_out.0", "attn1.to_q", "attn1.to_v",
                                                "attn2.to_q"]}
    assert report.mapped["vace_blocks.1.self_attn.q.weight"] == "side_branch.hint_blocks.1.attn1.to_q.weight"
    assert torch.equal(model.side_branch.hint_blocks[1].attn1.to_q.weight, sd["vace_blocks.1.self_attn.q.weight"])
    assert torch.equal(model.side_branch.hint_blocks[0].proj_in.weight, sd["vace_blocks.0.before_proj.weight"])
    assert torch.equal(model.side_branch.hint_blocks[0].norm2.weight, sd["vace_blocks.0.norm3.weight"])
    a = model.backbone.blocks[1].attn1.to_v.lora_A["default"].weight
    assert torch.equal(a, sd["pipe.dit.blocks.1.self_attn.v.lora_A.weight"])
    # the 96-channel hint embedding needs the score latent (and its bias) to fold; unknown keys are unmapped
    assert "score_latent" in report.unmapped_source["vace_patch_embedding.weight"]
    assert "control_adapter.conv.weight" in report.unmapped_source
    # LoRA on cross-attention now has a place (the adapter takes the checkpoint's targets); its B is missing
    assert report.mapped["pipe.dit.blocks.0.cross_attn.q.lora_A.weight"] == \
        "backbone.blocks.0.attn2.to_q.lora_A.default.weight"
    assert "backbone.blocks.0.attn2.to_q.lora_B.default.weight" in report.missing_target
    # our parameters of the touched parts the checkpoint did not provide (most of hint block 0's attn2)
    assert "side_branch.hint_blocks.0.attn2.to_q.weight" in report.missing_target
    assert report.zeroed == ["camera_embedding"]
    assert not report.complete
    text = report.summary()
    assert "vace_patch_embedding.weight" in text and "control_adapter.conv.weight" in text


def test_load_reference_checkpoint_strict_changes_nothing(model):
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match="does not fit"):
        load_reference_checkpoint(model, _reference_state_dict(model))  # strict is the default
    assert lora_adapters(model) == [] and model.state_dict().keys() == snapshot.keys()
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshot[k]), k
    assert grads == {n: p.requires_grad for n, p in model.named_parameters()}


def test_load_reference_checkpoint_refuses_unsafe_pickles(model, tmp_path):
    (tmp_path / "ref.pt").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="weights_only=True"):
        load_reference_checkpoint(model, tmp_path / "ref.pt")


def test_reference_backbone_weights_map_under_lora(model):
    add_lora(model, rank=2)
    w = torch.randn(24, 24)
    report = load_reference_checkpoint(model, {"blocks.0.self_attn.q.weight": w}, strict=False)
    assert report.mapped == {"blocks.0.self_attn.q.weight": "backbone.blocks.0.attn1.to_q.base_layer.weight"}
    assert torch.equal(model.backbone.blocks[0].attn1.to_q.base_layer.weight, w)
    assert lora_target_names(model)  # the adapter is still attached
