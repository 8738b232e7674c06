"""Backbone loading, VAE normalisation, prompt embeddings and the MirageTransformer forward (tiny configs, CPU)."""

import pytest
import torch

from mirage.camera import look_at, make_intrinsics
from mirage.models import (
    Backbone,
    MirageTransformer,
    build_backbone,
    count_parameters,
    latent_rays,
    load_backbone,
    per_token_timesteps,
    summarize,
)
from mirage.models.configs import TINY_LATENTS_MEAN, TINY_LATENTS_STD


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return load_backbone("tiny")


def _inputs(batch=2, frames=3, h=4, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 48, frames, h, w, generator=g)
    memory = torch.randn(batch, 48, frames, h, w, generator=g)
    mask = (torch.rand(batch, 1, frames, h, w, generator=g) > 0.3).float()
    rays = torch.randn(batch, 6, frames, h, w, generator=g)
    return x, memory, mask, rays


def _randomize(module: torch.nn.Module, seed: int = 1, scale: float = 0.2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


# ----------------------------------------------------------------------------------------- backbone
def test_tiny_backbone_is_reproducible_and_shaped(backbone):
    again = load_backbone("tiny")
    for (n, a), (_, b) in zip(backbone.transformer.state_dict().items(), again.transformer.state_dict().items()):
        assert torch.equal(a, b), n
    assert backbone.transformer.config.in_channels == 48
    assert backbone.vae.config.z_dim == 48 and len(backbone.vae.config.latents_mean) == 48
    assert backbone.spatial_compression == 16 and backbone.temporal_compression == 4
    assert backbone.scheduler.config.prediction_type == "flow_prediction"
    assert backbone.scheduler.config.use_flow_sigmas and backbone.scheduler.config.flow_shift == 5.0
    other = load_backbone("tiny", seed=1)
    assert not torch.equal(other.transformer.proj_out.weight, backbone.transformer.proj_out.weight)
    # building seeds locally and leaves the caller's random stream alone
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    load_backbone("tiny", seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_encode_decode_shapes_and_normalisation(backbone):
    video = torch.rand(2, 3, 5, 32, 48) * 2 - 1
    z = backbone.encode(video)
    assert z.shape == (2, 48, 2, 2, 3)
    mu = backbone.vae.encode(video).latent_dist.mode()
    mean = torch.tensor(TINY_LATENTS_MEAN).view(1, -1, 1, 1, 1)
    std = torch.tensor(TINY_LATENTS_STD).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(z, (mu - mean) / std)
    out = backbone.decode(z)
    assert out.shape == (2, 3, 5, 32, 48)
    assert out.min() >= -1 and out.max() <= 1
    # decode undoes the normalisation: decoding z equals decoding mu with the raw VAE
    torch.testing.assert_close(out, backbone.vae.decode(mu).sample)


def test_encode_is_deterministic_and_causal(backbone):
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    z = backbone.encode(video)
    assert torch.equal(z, backbone.encode(video))
    first = backbone.encode(video[:, :, :1])
    assert first.shape == (1, 48, 1, 2, 2)
    torch.testing.assert_close(first[:, :, 0], z[:, :, 0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape, problem", [
    ((1, 3, 4, 32, 32), "1 + 4k"),
    ((1, 3, 5, 24, 32), "multiples of 16"),
    ((1, 4, 5, 32, 32), "(B, 3, T, H, W)"),
    ((3, 5, 32, 32), "(B, 3, T, H, W)"),
])
def test_encode_rejects_bad_video(backbone, shape, problem):
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        backbone.encode(torch.zeros(shape))


def test_decode_rejects_wrong_channels(backbone):
    with pytest.raises(ValueError, match="48"):
        backbone.decode(torch.zeros(1, 16, 2, 2, 2))


def test_prompt_embeddings_cached_and_empty_needs_no_encoder(backbone):
    assert backbone.text_encoder is None
    e = backbone.encode_prompt("")
    assert e.shape == (1, 16, 32)
    assert torch.count_nonzero(e) == 0
    assert backbone.encode_prompt("  ") is not None  # whitespace-only collapses to ""
    assert "" in backbone._prompt_cache and len(backbone._prompt_cache) == 1
    with pytest.raises(ValueError, match="text encoder"):
        backbone.encode_prompt("a robot in a kitchen")
    with pytest.raises(ValueError, match="string"):
        backbone.encode_prompt(None)


def test_prompt_cache_uses_text_encoder_once(backbone):
    class FakeTokens:
        def __init__(self, n, L):
            self.input_ids = torch.zeros(1, L, dtype=torch.long)
            self.attention_mask = torch.zeros(1, L, dtype=torch.long)
            self.attention_mask[:, :n] = 1

    class FakeTokenizer:
        def __call__(self, prompts, max_length, **kw):
            return FakeTokens(len(prompts[0].split()) + 1, max_length)

    class FakeEncoder(torch.nn.Module):
        calls = 0

        def forward(self, ids, mask):
            FakeEncoder.calls += 1
            out = torch.ones(ids.shape[0], ids.shape[1], 32)
            return type("O", (), {"last_hidden_state": out})()

    bb = Backbone(backbone.transformer, backbone.vae, backbone.scheduler, tokenizer=FakeTokenizer(),
                  text_encoder=FakeEncoder(), max_sequence_length=16)
    e1 = bb.encode_prompt("pick up the cup")
    e2 = bb.encode_prompt("pick  up the cup ")
    assert FakeEncoder.calls == 1 and torch.equal(e1, e2)
    assert e1.shape == (1, 16, 32)
    # padding past the prompt's tokens is zeroed, as in the Wan pipelines
    assert torch.all(e1[0, :5] == 1) and torch.all(e1[0, 5:] == 0)


def test_tiny_backbone_save_load_round_trip(backbone, tmp_path):
    backbone.save_pretrained(tmp_path / "tiny")
    for sub in ("transformer", "vae", "scheduler"):
        assert (tmp_path / "tiny" / sub).is_dir()
    assert (tmp_path / "tiny" / "empty_prompt_embeds.safetensors").is_file()
    loaded = load_backbone(str(tmp_path / "tiny"))
    for (n, a), (_, b) in zip(backbone.transformer.state_dict().items(), loaded.transformer.state_dict().items()):
        assert torch.equal(a, b), n
    for (n, a), (_, b) in zip(backbone.vae.state_dict().items(), loaded.vae.state_dict().items()):
        assert torch.equal(a, b), n
    assert loaded.vae.config.latents_std == backbone.vae.config.latents_std
    assert loaded.max_sequence_length == 16 and loaded.text_encoder_path is None
    assert torch.equal(loaded.encode_prompt(""), backbone.encode_prompt(""))
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    assert torch.equal(loaded.encode(video), backbone.encode(video))


def test_load_backbone_rejects_bad_names(tmp_path):
    with pytest.raises(ValueError, match="neither a model directory"):
        load_backbone(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="text_encoder"):
        load_backbone("tiny", text_encoder="sometimes")


def test_wan22_5b_config_on_meta_device():
    bb = build_backbone("wan22_5b", device="meta", torch_dtype=torch.bfloat16)
    s = summarize(bb)
    assert 4.9e9 < s["transformer"] < 5.1e9
    assert s["num_layers"] == 30 and s["inner_dim"] == 3072 and s["max_sequence_length"] == 512
    mt = MirageTransformer.from_backbone(bb.transformer)
    assert mt.side_branch.injection_layers == list(range(0, 30, 2))
    # fp32-kept modules follow diffusers' rule under bf16
    assert bb.transformer.blocks[0].scale_shift_table.dtype == torch.float32
    assert bb.transformer.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------- transformer
@pytest.fixture()
def mirage_transformer(backbone) -> MirageTransformer:
    return MirageTransformer.from_backbone(backbone.transformer)


def test_forward_shape(backbone, mirage_transformer):
    x, memory, mask, rays = _inputs()
    e = backbone.encode_prompt("")
    out = mirage_transformer(x, torch.tensor([900.0, 10.0]), e, memory_latents=memory, memory_mask=mask, rays=rays)
    assert out.shape == x.shape and out.dtype == torch.float32
    _randomize(mirage_transformer.side_branch)
    as_float = mirage_transformer(x, 500.0, e, memory_latents=memory, memory_mask=mask)  # scalar timestep too
    as_bool = mirage_transformer(x, 500.0, e, memory_latents=memory, memory_mask=mask.bool())
    assert torch.equal(as_float, as_bool)


@pytest.mark.parametrize("per_token", [False, True])
def test_zero_init_equals_backbone(backbone, mirage_transformer, per_token):
    x, memory, mask, rays = _inputs()
    e = backbone.encode_prompt("").expand(2, -1, -1)
    if per_token:
        t = per_token_timesteps(torch.tensor([[0.0, 700.0, 700.0], [0.0, 0.0, 300.0]]), (4, 6))
        assert t.shape == (2, 3 * 2 * 3)
    else:
        t = torch.tensor([700.0, 300.0])
    reference = backbone.transformer(x, t, e).sample
    mirage_transformer.modulation = "per_token"  # diffusers' own path: bit for bit
    assert torch.equal(mirage_transformer(x, t, e), reference)
    full = mirage_transformer(x, t, e, memory_latents=memory, memory_mask=mask, rays=rays)
    assert torch.equal(full, reference)
    mirage_transformer.modulation = "per_frame"  # the default: to the rounding of the timestep embedding
    full = mirage_transformer(x, t, e, memory_latents=memory, memory_mask=mask, rays=rays)
    torch.testing.assert_close(full, reference, atol=1e-5, rtol=1e-5)


def test_per_token_timesteps_match_scalar_timestep(backbone, mirage_transformer):
    x, *_ = _inputs(batch=1)
    e = backbone.encode_prompt("")
    t_tokens = per_token_timesteps(torch.full((3,), 400.0), (4, 6))
    torch.testing.assert_close(mirage_transformer(x, t_tokens, e), mirage_transformer(x, torch.tensor([400.0]), e),
                               atol=1e-5, rtol=1e-5)


def test_nonzero_side_branch_makes_readout_matter(backbone, mirage_transformer):
    _randomize(mirage_transformer.side_branch)
    x, memory, mask, rays = _inputs()
    e = backbone.encode_prompt("")
    t = per_token_timesteps(torch.tensor([[0.0, 500.0, 500.0]] * 2), (4, 6))
    plain = mirage_transformer(x, t, e)
    a = mirage_transformer(x, t, e, memory_latents=memory, memory_mask=mask)
    b = mirage_transformer(x, t, e, memory_latents=memory + 1.0, memory_mask=mask)
    c = mirage_transformer(x, t, e, memory_latents=memory, memory_mask=1 - mask)
    assert not torch.allclose(a, plain) and not torch.allclose(a, b) and not torch.allclose(a, c)
    assert torch.equal(mirage_transformer(x, t, e, memory_latents=memory, memory_mask=mask, memory_scale=0.0), plain)
    # memory of one sample does not leak into the other
    memory2 = memory.clone()
    memory2[1] += 1.0
    d = mirage_transformer(x, t, e, memory_latents=memory2, memory_mask=mask)
    torch.testing.assert_close(d[0], a[0], atol=1e-6, rtol=0)


def test_camera_embedding_zero_init_and_nonzero(backbone, mirage_transformer):
    x, _, _, rays = _inputs()
    e = backbone.encode_prompt("")
    t = torch.tensor([500.0, 500.0])
    plain = mirage_transformer(x, t, e)
    assert torch.equal(mirage_transformer(x, t, e, rays=rays), plain)
    _randomize(mirage_transformer.camera_embedding)
    assert not torch.allclose(mirage_transformer(x, t, e, rays=rays), plain)
    assert not torch.allclose(mirage_transformer(x, t, e, rays=rays), mirage_transformer(x, t, e, rays=rays * 2))


def test_hint_blocks_start_as_copies(backbone, mirage_transformer):
    branch = mirage_transformer.side_branch
    assert branch.injection_layers == [0]
    src = backbone.transformer.blocks[0].state_dict()
    for k, v in branch.hint_blocks[0].state_dict().items():
        if k.startswith(("proj_in", "proj_out")):
            assert torch.count_nonzero(v) == 0, k
        else:
            assert torch.equal(v, src[k]), k


def test_concat_rays_branch(backbone):
    mt = MirageTransformer.from_backbone(backbone.transformer, injection_layers=[0, 1], concat_rays=True)
    assert mt.side_branch.hint_channels == 55
    x, memory, mask, rays = _inputs()
    e = backbone.encode_prompt("")
    t = torch.tensor([500.0, 500.0])
    with pytest.raises(ValueError, match="rays"):
        mt(x, t, e, memory_latents=memory, memory_mask=mask)
    _randomize(mt.side_branch)
    a = mt(x, t, e, memory_latents=memory, memory_mask=mask, rays=rays)
    b = mt(x, t, e, memory_latents=memory, memory_mask=mask, rays=rays + 1)
    assert not torch.allclose(a, b)


def test_gradient_checkpointing_same_gradients(backbone):
    mt = MirageTransformer.from_backbone(backbone.transformer)
    _randomize(mt.side_branch)
    x, memory, mask, rays = _inputs(batch=1)
    e = backbone.encode_prompt("")
    t = per_token_timesteps(torch.tensor([0.0, 500.0, 500.0]), (4, 6))

    def grads():
        mt.zero_grad()
        mt(x, t, e, memory_latents=memory, memory_mask=mask, rays=rays).square().mean().backward()
        return {n: p.grad.clone() for n, p in mt.named_parameters() if p.grad is not None}

    plain = grads()
    mt.enable_gradient_checkpointing()
    checkpointed = grads()
    mt.disable_gradient_checkpointing()
    assert plain.keys() == checkpointed.keys() and len(plain) > 0
    assert any(n.startswith("side_branch.hint_blocks.0.proj_in") for n in plain)
    for n in plain:
        torch.testing.assert_close(plain[n], checkpointed[n], atol=1e-6, rtol=1e-5)


def test_zero_init_projections_still_receive_gradients(backbone):
    mt = MirageTransformer.from_backbone(backbone.transformer)
    x, memory, mask, rays = _inputs(batch=1)
    out = mt(x, torch.tensor([500.0]), backbone.encode_prompt(""), memory_latents=memory, memory_mask=mask, rays=rays)
    out.square().mean().backward()
    assert mt.side_branch.hint_blocks[0].proj_out.weight.grad.abs().sum() > 0
    assert mt.camera_embedding.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("change, problem", [
    (dict(x=torch.zeros(2, 47, 3, 4, 6)), "48 channels"),
    (dict(x=torch.zeros(2, 48, 3, 5, 6)), "multiples of the patch size"),
    (dict(x=torch.zeros(2, 48, 3, 4, 7)), "multiples of the patch size"),
    (dict(memory=torch.zeros(2, 48, 3, 4, 4)), "memory_latents"),
    (dict(memory=torch.zeros(2, 47, 3, 4, 6)), "memory_latents"),
    (dict(mask=torch.zeros(2, 2, 3, 4, 6)), "memory_mask"),
    (dict(mask=None), "together"),
    (dict(rays=torch.zeros(2, 3, 3, 4, 6)), "rays"),
    (dict(t=torch.zeros(3)), "timestep"),
    (dict(t=torch.zeros(2, 17)), "timestep"),
    (dict(e=torch.zeros(2, 16, 31)), "encoder_hidden_states"),
])
def test_forward_rejects_bad_input(backbone, mirage_transformer, change, problem):
    x, memory, mask, rays = _inputs()
    args = dict(x=x, memory=memory, mask=mask, rays=rays, t=torch.tensor([1.0, 2.0]),
                e=backbone.encode_prompt(""))
    args.update(change)
    with pytest.raises(ValueError, match=problem):
        mirage_transformer(args["x"], args["t"], args["e"], memory_latents=args["memory"],
                           memory_mask=args["mask"], rays=args["rays"])


def test_without_branch_memory_is_rejected(backbone):
    mt = MirageTransformer.from_backbone(backbone.transformer, side_branch=False, camera=False)
    x, memory, mask, rays = _inputs()
    e = backbone.encode_prompt("")
    with pytest.raises(ValueError, match="no side branch"):
        mt(x, torch.tensor([1.0, 1.0]), e, memory_latents=memory, memory_mask=mask)
    with pytest.raises(ValueError, match="no camera"):
        mt(x, torch.tensor([1.0, 1.0]), e, rays=rays)


def test_latent_rays_shape_and_content():
    K = make_intrinsics(40.0, 40.0, 32.0, 24.0)
    poses = torch.stack([look_at((0, 0, 0), (0, 0, 1), up=(0, -1, 0)), look_at((1, 0, 0), (1, 0, 1), up=(0, -1, 0))])
    rays = latent_rays(K, poses, (48, 64), (3, 4))
    assert rays.shape == (6, 2, 3, 4)
    d = rays[3:]
    torch.testing.assert_close(d.norm(dim=0), torch.ones(2, 3, 4))
    assert torch.allclose(rays[:3, 0], torch.zeros(3, 3, 4), atol=1e-6)  # camera at the origin: zero moment
    assert not torch.allclose(rays[:3, 1], torch.zeros(3, 3, 4))
    with pytest.raises(ValueError):
        latent_rays(K, poses[0], (48, 64), (3, 4))


def test_count_parameters(backbone, mirage_transformer):
    assert count_parameters(backbone.transformer) == sum(p.numel() for p in backbone.transformer.parameters())
    s = summarize(mirage_transformer)
    assert s["side_branch"] == count_parameters(mirage_transformer.side_branch) and s["lora"] == 0


@pytest.mark.parametrize("mode", ["model", "group"])
def test_cpu_offload_hooks_keep_results(backbone, mode):
    # Offload hooks with the CPU as "execution device": the code path of GPU offloading, checkable here.
    offloaded = load_backbone("tiny")
    offloaded.enable_cpu_offload("cpu", mode=mode)
    assert offloaded.device == torch.device("cpu")
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    z = offloaded.encode(video)
    torch.testing.assert_close(z, backbone.encode(video))
    mt = MirageTransformer.from_backbone(offloaded.transformer)
    e = offloaded.encode_prompt("")
    t = torch.tensor([500.0])
    torch.testing.assert_close(mt(z, t, e), backbone.transformer(z, t, e).sample)
    with pytest.raises(ValueError, match="offload mode"):
        offloaded.enable_cpu_offload("cpu", mode="disk")


def test_bfloat16_backbone_zero_init_equality_and_fp32_modules():
    bb = load_backbone("tiny", torch_dtype=torch.bfloat16)
    assert bb.dtype == torch.bfloat16
    mt = MirageTransformer.from_backbone(bb.transformer)
    block = mt.side_branch.hint_blocks[0]
    assert block.scale_shift_table.dtype == torch.float32 and block.attn1.to_q.weight.dtype == torch.bfloat16
    x, memory, mask, rays = _inputs(batch=1)
    e = bb.encode_prompt("")
    assert e.dtype == torch.bfloat16
    t = torch.tensor([500.0])
    out = mt(x, t, e, memory_latents=memory, memory_mask=mask, rays=rays)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, bb.transformer(x.bfloat16(), t, e).sample)
    z = bb.encode(torch.rand(1, 3, 1, 32, 32) * 2 - 1)
    assert z.dtype == torch.bfloat16 and z.shape == (1, 48, 1, 2, 2)


def _write_tiny_text_encoder(path, text_dim=32):
    """A word-level tokenizer and a 1-layer random UMT5 in the diffusers layout (tokenizer/, text_encoder/)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    vocab.update({w: i + 3 for i, w in enumerate("a robot in the kitchen picks up red cup".split())})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>") \
        .save_pretrained(path / "tokenizer")
    torch.manual_seed(0)
    config = UMT5Config(vocab_size=16, d_model=text_dim, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
                        relative_attention_num_buckets=8)
    UMT5EncoderModel(config).save_pretrained(path / "text_encoder")


def test_text_encoder_loads_lazily_from_model_directory(backbone, tmp_path):
    backbone.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "empty_prompt_embeds.safetensors").unlink()
    _write_tiny_text_encoder(tmp_path / "m")
    loaded = load_backbone(str(tmp_path / "m"))
    assert loaded.text_encoder is None and loaded.text_encoder_path == str(tmp_path / "m")
    e = loaded.encode_prompt("a  robot picks up the red cup")
    assert loaded.text_encoder is not None  # loaded on first use
    assert e.shape == (1, 16, 32)
    assert torch.count_nonzero(e[0, :8].abs().sum(-1)) == 8  # 7 words + end of sequence
    assert torch.count_nonzero(e[0, 8:]) == 0  # padding zeroed as in the Wan pipelines
    empty = loaded.encode_prompt("")
    assert torch.count_nonzero(empty[0, :1]) > 0 and torch.count_nonzero(empty[0, 1:]) == 0
    loaded.release_text_encoder()
    assert torch.equal(loaded.encode_prompt("a robot picks up the red cup"), e)  # served from the cache
    loaded.export_empty_prompt_embeds(tmp_path / "m")
    no_text = load_backbone(str(tmp_path / "m"), text_encoder="none")
    assert torch.equal(no_text.encode_prompt(""), empty)  # from empty_prompt_embeds.safetensors
    with pytest.raises(ValueError, match="text encoder"):
        no_text.encode_prompt("a robot")
    offloaded = load_backbone(str(tmp_path / "m"), cpu_offload=True)  # lazily loaded encoder gets a hook too
    torch.testing.assert_close(offloaded.encode_prompt("a robot picks up the red cup"), e)
    assert hasattr(offloaded.text_encoder, "_hf_hook")
