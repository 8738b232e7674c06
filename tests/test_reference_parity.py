"""Parity with the paper's reference implementation: weights saved in its layout load completely and give its output.

The reference side is ``tests/reference_wan.py``, a tiny-shape reimplementation of its forward and chunk sampling
written from reading microsoft/LatentSpatialMemory. Random weights are drawn there in the reference's names and
shapes (DiT, VACE branch with the 96-channel hint, LoRA on self- and cross-attention and the FFN), saved as its
training script saves them (one file per stage; one of them as a ``.pt`` with nested dicts), and loaded here with
:func:`mirage.models.reference.load_reference_checkpoint`.

Tolerances: the reference computes the timestep sinusoid (and RoPE) in float64 and merges LoRA into the weights;
diffusers computes the sinusoid in float32 whatever the model's dtype, and we keep LoRA as a separate low-rank path
and modulate once per latent frame. Measured: 2.6e-5 on outputs of magnitude ~6 (tiny), 2.1e-4 on magnitude ~41
(head_dim 128, 4 layers), the same in float64 (so not float32 arithmetic), and 4.7e-6 once both sides use a float32
sinusoid: the sinusoid is the difference. ``atol=5e-4, rtol=1e-4`` covers it and stays far below what a mis-mapped
tensor, a dropped score term, wrong RoPE positions or another chunk seed change (0.18 or more; the negative tests
below check that they fail it).
"""

import logging

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mirage.camera import look_at, make_intrinsics
from mirage.models import MirageTransformer, load_backbone, per_token_timesteps
from mirage.models import reference_keys
from mirage.models.lora import REFERENCE_LORA_TARGETS, lora_adapters
from mirage.models.reference import load_reference_checkpoint, read_state_dict
from mirage.models.reference_hint import fold_score_channels, reference_score_latent
from mirage.pipeline import MirageWorldModel
from mirage.pipeline.sampling import make_scheduler
from reference_wan import (
    merge_lora,
    random_reference_weights,
    reference_chunk,
    reference_forward,
    select_reference,
    visible_points,
)

LAYERS = [0, 1]  # hint blocks after both tiny DiT blocks (the reference: every other of 30)
TOL = dict(atol=5e-4, rtol=1e-4)  # the float32 vs float64 timestep sinusoid (module docstring)
FRAMES, GRID = 3, (4, 6)  # one tiny window: 9 pixel frames at 64x96 -> 3 latent frames of 4x6


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("tiny")


@pytest.fixture(scope="module")
def weights(backbone):
    cfg = backbone.transformer.config
    dim = cfg.num_attention_heads * cfg.attention_head_dim
    return random_reference_weights(dim, cfg.ffn_dim, cfg.num_layers, cfg.text_dim, LAYERS, lora_rank=4)


@pytest.fixture(scope="module")
def files(weights, tmp_path_factory):
    """The reference's stage files: dit and lora as safetensors, the VACE branch as a .pt of nested dicts."""
    dit, vace, lora = weights
    root = tmp_path_factory.mktemp("reference")
    save_file(dit, str(root / "dit.safetensors"))
    torch.save({"vace": vace, "step": 1000}, str(root / "vace.pt"))
    save_file(lora, str(root / "lora.safetensors"))
    return [root / "dit.safetensors", root / "vace.pt", root / "lora.safetensors"]


@pytest.fixture(scope="module")
def score(backbone):
    return reference_score_latent(backbone, FRAMES, GRID)


def _model(score, files, **kw):
    model = MirageTransformer.from_backbone(load_backbone("tiny").transformer, injection_layers=LAYERS)
    report = load_reference_checkpoint(model, files, score_latent=score, **kw)
    return model, report


def _inputs(seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 48, FRAMES, *GRID, generator=g)
    readout = torch.randn(1, 48, FRAMES, *GRID, generator=g)
    mask = torch.rand(1, 1, FRAMES, *GRID, generator=g) > 0.5
    rays = torch.randn(1, 6, FRAMES, *GRID, generator=g)
    context = torch.randn(1, 16, 32, generator=g)
    return x, readout, mask, rays, context


def _both(model, weights, score, heads=2):
    """(ours, reference) flow for one denoising step of a window with a clean first latent."""
    dit, vace, lora = weights
    x, readout, mask, rays, context = _inputs()
    ts = torch.tensor([0.0, 700.0, 700.0])
    with torch.no_grad():
        ours = model(x, per_token_timesteps(ts, GRID), context, memory_latents=readout, memory_mask=mask, rays=rays)
        ref = reference_forward(merge_lora(dit, lora), vace, x, ts, context, torch.cat([readout[0], score]), LAYERS,
                                heads)
    return ours, ref


def test_score_latent_is_not_constant_but_causal(backbone, score):
    # why the fold keeps an offset: borders and the first latents differ; why one offset serves shorter windows
    assert score.shape == (48, FRAMES, *GRID)
    assert float((score - score.mean(dim=(1, 2, 3), keepdim=True)).abs().max()) > 0.1
    torch.testing.assert_close(reference_score_latent(backbone, 2, GRID), score[:, :2], atol=1e-6, rtol=0)


def test_fold_is_exact_and_bias_only_for_a_constant_score():
    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(24, 96, 1, 2, 2, generator=g), torch.randn(24, generator=g)
    constant = torch.randn(48, 1, 1, 1, generator=g).expand(48, 2, 4, 6)
    folded = fold_score_channels(weight, bias, constant)
    assert folded.offset is None and folded.weight.shape == (24, 49, 1, 2, 2)
    assert torch.count_nonzero(folded.weight[:, 48]) == 0  # the mask channel: the reference has none
    readout = torch.randn(1, 48, 2, 4, 6, generator=g)
    full = torch.nn.functional.conv3d(torch.cat([readout, constant[None]], 1), weight, bias, stride=(1, 2, 2))
    ours = torch.nn.functional.conv3d(torch.cat([readout, torch.ones(1, 1, 2, 4, 6)], 1), folded.weight,
                                      folded.bias, stride=(1, 2, 2))
    torch.testing.assert_close(ours, full, atol=1e-5, rtol=1e-5)  # float32 conv of 96 vs 49 channels


def test_reference_files_load_completely(score, files):
    model, report = _model(score, files)
    assert report.complete and not report.unmapped_source and not report.missing_target
    assert set(report.folded) == {"vace.vace_patch_embedding.weight", "vace.vace_patch_embedding.bias"}  # .pt nesting
    assert report.lora_attached == {"rank": 4, "alpha": 4.0, "targets": sorted(REFERENCE_LORA_TARGETS)}
    assert report.hint_offset == (24, FRAMES, GRID[0] // 2, GRID[1] // 2)
    assert report.zeroed == ["camera_embedding"] and not any(p.any() for p in model.camera_embedding.parameters())
    # every tensor of the three files has a place: 2 folded, the rest mapped as they are
    assert len(report.mapped) + len(report.folded) == len(read_state_dict(files))


def test_one_step_matches_the_reference(score, files, weights):
    model, _ = _model(score, files)
    ours, ref = _both(model, weights, score)
    torch.testing.assert_close(ours, ref, **TOL)


def test_one_step_with_reference_frames_matches_the_reference(score, files, weights, monkeypatch):
    # two retrieved frames prepended: their own RoPE positions, no hint; the memory covers the window's 3 frames
    model, _ = _model(score, files)
    dit, vace, lora = weights
    x, readout, mask, rays, context = _inputs()
    refs = torch.randn(1, 48, 2, *GRID, generator=torch.Generator().manual_seed(9))
    ts = torch.tensor([0.0, 0.0, 0.0, 700.0, 700.0])

    def ours():
        with torch.no_grad():
            return model(torch.cat([refs, x], 2), per_token_timesteps(ts, GRID), context, memory_latents=readout,
                         memory_mask=mask, reference_frames=2)

    ref = reference_forward(merge_lora(dit, lora), vace, torch.cat([refs, x], 2), ts, context,
                            torch.cat([readout[0], score]), LAYERS, 2, num_ref=2)
    torch.testing.assert_close(ours(), ref, **TOL)
    # it can fail: at ordinary RoPE positions (frames 0 .. 4) the same weights give another output
    import mirage.models.transformer as transformer_module

    monkeypatch.setattr(transformer_module, "rope_with_reference_frames", lambda rope, states, frames: rope(states))
    assert not torch.allclose(ours(), ref, **TOL)


def test_one_step_matches_at_the_wan_head_dim_and_layer_pattern(backbone, score):
    # Wan2.2-5B's head_dim 128 (RoPE split 44 / 42 / 42 in both codes) and hint blocks after every other block
    from diffusers import WanTransformer3DModel

    from mirage.models.configs import transformer_config

    cfg = {**transformer_config("tiny"), "attention_head_dim": 128, "ffn_dim": 64, "num_layers": 4}
    torch.manual_seed(0)
    layers = [0, 2]
    model = MirageTransformer.from_backbone(WanTransformer3DModel(**cfg), injection_layers=layers)
    dim = cfg["num_attention_heads"] * 128
    weights = random_reference_weights(dim, 64, 4, cfg["text_dim"], layers, lora_rank=8, seed=5)
    assert load_reference_checkpoint(model, list(weights), score_latent=score).complete
    dit, vace, lora = weights
    x, readout, mask, _, context = _inputs()
    ts = torch.tensor([0.0, 400.0, 400.0])
    with torch.no_grad():
        ours = model(x, per_token_timesteps(ts, GRID), context, memory_latents=readout, memory_mask=mask)
    ref = reference_forward(merge_lora(dit, lora), vace, x, ts, context, torch.cat([readout[0], score]), layers,
                            cfg["num_attention_heads"])
    torch.testing.assert_close(ours, ref, **TOL)


def test_parity_catches_a_mis_mapped_key(score, files, weights, monkeypatch):
    swapped = dict(reference_keys._BLOCK_MODULES, **{"self_attn.q": "attn1.to_k", "self_attn.k": "attn1.to_q"})
    monkeypatch.setattr(reference_keys, "_BLOCK_MODULES", swapped)
    model, report = _model(score, files)
    assert report.complete  # the names still fit: only the numbers can tell
    ours, ref = _both(model, weights, score)
    assert not torch.allclose(ours, ref, **TOL)


@pytest.mark.parametrize("drop", ["offset", "score"])
def test_parity_catches_an_unfolded_score_term(score, files, weights, drop):
    if drop == "score":  # the score channels dropped instead of folded: the bias keeps no constant term
        model, _ = _model(torch.zeros_like(score), files)
    else:  # folded into the bias only: what a per-channel-constant assumption would give
        model, _ = _model(score, files)
        model.side_branch.set_hint_offset(None)
    ours, ref = _both(model, weights, score)
    assert not torch.allclose(ours, ref, **TOL)


def test_strict_by_default_and_lists_the_keys(score, files, weights):
    dit, vace, lora = weights
    extra = {**vace, "control_adapter.conv.weight": torch.zeros(3)}
    partial = {k: v for k, v in vace.items() if not k.startswith("vace_blocks.1.ffn")}
    model = MirageTransformer.from_backbone(load_backbone("tiny").transformer, injection_layers=LAYERS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for source, needle in ((extra, "unmapped control_adapter.conv.weight"),
                           (partial, "missing  side_branch.hint_blocks.1.ffn.net.0.proj.weight"),
                           ([vace, lora], "needs score_latent")):
        with pytest.raises(ValueError, match="nothing was loaded") as error:
            load_reference_checkpoint(model, source, score_latent=None if isinstance(source, list) else score)
        assert needle in str(error.value)
    assert lora_adapters(model) == [] and model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_non_strict_warns_with_the_keys(score, weights, caplog):
    many = {**weights[1], **{f"extra.{i}.weight": torch.zeros(1) for i in range(30)}}
    model = MirageTransformer.from_backbone(load_backbone("tiny").transformer, injection_layers=LAYERS)
    with caplog.at_level(logging.WARNING, logger="mirage.models.reference"):
        report = load_reference_checkpoint(model, many, score_latent=score, strict=False)
    assert not report.complete and len(report.unmapped_source) == 30
    text = caplog.records[-1].getMessage()
    assert caplog.records[-1].levelno == logging.WARNING and "INCOMPLETELY" in text
    assert "unmapped source 30" in text and "... and 20 more" in text  # counts, and long lists cut at 10
    torch.testing.assert_close(model.side_branch.hint_blocks[1].attn1.to_q.weight,
                               weights[1]["vace_blocks.1.self_attn.q.weight"], atol=0, rtol=0)


class _Custom:  # an object a weights-only unpickler must refuse
    pass


def test_pickles_are_read_safely(tmp_path):
    torch.save({"x": _Custom()}, str(tmp_path / "code.pt"))
    with pytest.raises(ValueError, match="weights_only=True"):
        read_state_dict(tmp_path / "code.pt")
    torch.save([torch.zeros(1)], str(tmp_path / "list.pt"))
    with pytest.raises(ValueError, match="not a state dict"):
        read_state_dict(tmp_path / "list.pt")
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="neither"):
        read_state_dict(tmp_path / "w.npz")
    with pytest.raises(ValueError, match="twice"):
        read_state_dict([{"a": torch.zeros(1)}, {"a": torch.ones(1)}])


def test_folded_branch_saves_and_reloads_its_offset(score, files, tmp_path):
    from mirage.models import load_adapters, save_adapters

    model, _ = _model(score, files)
    save_adapters(model, tmp_path / "a")
    assert (tmp_path / "a" / "side_branch" / "hint_offset.safetensors").is_file()
    base = load_backbone("tiny").transformer
    assert load_reference_checkpoint(MirageTransformer(base), files[0]).complete  # the DiT file alone: the backbone
    again = load_adapters(base, tmp_path / "a")
    torch.testing.assert_close(again.side_branch.hint_offset, model.side_branch.hint_offset, atol=0, rtol=0)
    x, readout, mask, rays, context = _inputs()
    t = per_token_timesteps(torch.tensor([0.0, 500.0, 500.0]), GRID)
    with torch.no_grad():
        torch.testing.assert_close(again(x, t, context, memory_latents=readout, memory_mask=mask),
                                   model(x, t, context, memory_latents=readout, memory_mask=mask), atol=0, rtol=0)


# ------------------------------------------------------------------------------------------------ 2-chunk rollout
def _trajectory(n=17):
    K = make_intrinsics(60.0, 60.0, 48.0, 32.0)
    poses = torch.stack([look_at((0.02 * i, 0.0, 0.0), (0.02 * i + 0.3 * np.sin(i / 8), 0.0, 2.0), up=(0, -1, 0))
                         for i in range(n)])
    return K, poses


def _reference_rollout(model, weights, memory, K, poses, first_frame, steps, preceding=0, references=0, seed=0):
    """The reference's ``MiragePipeline.generate`` over our memory: per chunk read the memory at the target poses,
    retrieve up to ``references`` earlier latents by voxel IoU (``select_reference``), denoise
    (``reference_chunk``) with up to ``preceding`` earlier latents (and the readouts they were generated with)
    appended, store the new denoised latents, record what each new frame sees, seed the next chunk with the last
    latent. Returns (each chunk's latents, each chunk's retrieved indices). (The reference also writes chunk 0's
    latent 0, the first frame already in the memory, again; we do not: docs/DESIGN.md.)"""
    dit, vace, lora = weights
    merged = merge_lora(dit, lora)
    generator = torch.Generator("cpu").manual_seed(seed)
    text = model.backbone.encode_prompt("")
    first = model.encode_context_frames(first_frame[None])[:, :, None]  # (1, 48, 1, h, w): the VAE's latent 0
    generated, scenes, seen, out, picked = [], [], {}, [], []
    for start in (0, 2):  # latent frames 0-2, then 2-4 (9 pixel frames each, one latent of context)
        pose_idx = torch.arange(start, start + FRAMES) * 4
        readout = memory.read_batch(K.expand(FRAMES, 3, 3), poses[pose_idx], model.image_size, model.latent_size)
        scene = readout.features.transpose(0, 1).float()
        stop = len(generated) - 1  # select_preceding_context: the latents before the seed
        lo = max(0, stop - preceding)
        pre = pre_scene = refs = None
        if preceding and stop > lo:
            pre, pre_scene = torch.stack(generated[lo:stop], 1)[None], torch.stack(scenes[lo:stop], 1)
        chosen = []
        if references and seen:
            targets = [visible_points(memory.points, K, poses[p], model.image_size, model.latent_size)
                       for p in pose_idx]
            chosen = select_reference(targets, seen, max_frames=references)
            refs = torch.stack([generated[i] for i in chosen], 1)[None] if chosen else None
        picked.append(chosen)
        noise = torch.randn((1, 48, FRAMES, *model.latent_size), generator=generator)
        score = reference_score_latent(model.backbone, FRAMES + (0 if pre is None else pre.shape[2]),
                                       model.latent_size)
        latents = reference_chunk(merged, vace, noise, first, scene, score, text, make_scheduler(5.0), steps,
                                  LAYERS, heads=2, preceding=pre, preceding_scene=pre_scene, reference=refs)
        out.append(latents)
        keep = slice(0, None) if start == 0 else slice(1, None)
        generated += list(latents[0, :, keep].unbind(1))
        scenes += list(scene[:, keep].unbind(1))
        frames = model.decode_latents(latents)[0].transpose(0, 1)
        new = pose_idx[1:]
        rgb = frames[(new - start * 4)]
        depth = model.depth_provider(rgb, intrinsics=K.expand(len(new), 3, 3), cam_to_world=poses[new],
                                     grid_size=model.latent_size, memory=memory)
        memory.observe_batch(rgb, depth, K.expand(len(new), 3, 3), poses[new], ~(depth > 0),
                             latents=latents[0, :, 1:].transpose(0, 1))
        for i, p in enumerate(pose_idx[keep], start=len(generated) - len(pose_idx[keep])):  # update_frame_visibility
            seen[i] = visible_points(memory.points, K, poses[p], model.image_size, model.latent_size)
        first = latents[:, :, -1:]
    return out, picked


@pytest.mark.parametrize("preceding, references", [(0, 0), (2, 0), (2, 4)])
def test_two_chunk_rollout_matches_the_reference(files, weights, preceding, references):
    model = MirageWorldModel.from_pretrained("tiny", injection_layers=LAYERS, chunk_seed="denoised",
                                             align_depth=False, preceding_latent_frames=preceding,
                                             reference_frames=references,
                                             reference_checkpoint_path=[str(f) for f in files])
    assert model.transformer.reference_report.complete
    K, poses = _trajectory()
    g = torch.Generator().manual_seed(1)
    first_frame = torch.rand(3, *model.image_size, generator=g)
    depth = 1.5 + torch.rand(*model.image_size, generator=g)
    memory = model.new_memory(voxel_size=None)  # the reference appends every point: no voxel dedup
    model.observe(memory, first_frame, depth, K, poses[0])
    ours = []
    model.rollout(memory.copy(), K, poses, first_frame=first_frame, num_inference_steps=3,
                  step_callback=lambda chunk, i, latents: ours.append(latents.clone()) if i == 2 else None)
    ref, picked = _reference_rollout(model, weights, memory.copy(), K, poses, first_frame, steps=3,
                                     preceding=preceding, references=references)
    assert bool(picked[1]) == bool(references)  # the second chunk retrieves frames when asked to
    assert len(ours) == len(ref) == 2
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, **TOL)
    assert not torch.allclose(ref[0][:, :, 1:], ref[1][:, :, 1:])  # the chunks differ: the test sees both
    # it can fail: seeded from re-encoded frames (our default) instead, the second chunk is 5.7 off (measured)
    model.config.chunk_seed = "reencoded"
    reencoded = []
    model.rollout(memory.copy(), K, poses, first_frame=first_frame, num_inference_steps=3,
                  step_callback=lambda chunk, i, latents: reencoded.append(latents.clone()) if i == 2 else None)
    assert not torch.allclose(reencoded[1], ref[1], **TOL)
