"""The reference code's inference choices as options of the pipeline (tiny random model, CPU, 2 steps).

chunk_seed, preceding_latent_frames, reference_frames: their parity with the reference is
``tests/test_reference_parity.py``; here what each option does to our own rollout, and that the defaults are
unchanged.
"""

import pytest
import torch

from mirage.camera import intrinsics_from_fov, look_at
from mirage.pipeline import MirageWorldModel, WorldModelConfig

H, W, STEPS = 64, 96, 2


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model is latency-bound (see test_world_model.py)
    model = MirageWorldModel.from_pretrained("tiny")
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():  # a non-zero side branch, so that what it sees changes the output
        for p in model.transformer.side_branch.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    yield model
    torch.set_num_threads(threads)


def _rollout(model, T=17, step=0.05, **kw):
    g = torch.Generator().manual_seed(1)
    rgb = torch.rand(3, H, W, generator=g)
    poses = torch.stack([look_at([step * i, 0.0, 0.0], [step * i, 0.0, 1.0], up=[0.0, -1.0, 0.0]) for i in range(T)])
    memory = model.new_memory()
    model.observe(memory, rgb, torch.full((H, W), 4.0), intrinsics_from_fov(70.0, H, W), poses[0])
    latents = []
    model.rollout(memory, intrinsics_from_fov(70.0, H, W), poses, first_frame=rgb, num_inference_steps=STEPS,
                  step_callback=lambda chunk, i, x: latents.append(x.clone()) if i == STEPS - 1 else None, **kw)
    return latents, memory


def _with(model, **fields):
    old = model.config
    model.config = WorldModelConfig(**{**old.__dict__, **fields})
    return old


def test_chunk_seed_denoised_starts_the_next_chunk_from_the_last_latent(model):
    base, _ = _rollout(model)
    old = _with(model, chunk_seed="denoised")
    try:
        seeded, _ = _rollout(model)
    finally:
        model.config = old
    torch.testing.assert_close(seeded[0], base[0], atol=0, rtol=0)  # chunk 0 is seeded by the first frame either way
    torch.testing.assert_close(seeded[1][:, :, 0], seeded[0][:, :, -1], atol=0, rtol=0)  # the latent itself
    assert not torch.allclose(seeded[1], base[1])


def test_memory_update_append_keeps_every_point(model):
    old = _with(model, memory_update="append")
    try:
        assert model.new_memory().voxel_size is None
        _, appended = _rollout(model, step=0.0)  # a camera at rest sees the same cells again and again
    finally:
        model.config = old
    assert model.new_memory().voxel_size == model.config.voxel_size
    _, deduped = _rollout(model, step=0.0)
    h, w = model.latent_size
    assert len(appended) == 5 * h * w and len(deduped) == h * w  # seed + 4 new latent frames, or one per voxel


def test_guidance_with_the_empty_prompt_is_the_identity_at_twice_the_passes(model, monkeypatch):
    calls = []
    forward = model.transformer.forward
    monkeypatch.setattr(model.transformer, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    plain, _ = _rollout(model, T=9)
    n = len(calls)
    guided, _ = _rollout(model, T=9, guidance_scale=3.0)
    assert len(calls) - n == 2 * n  # two passes a step
    torch.testing.assert_close(guided[0], plain[0], atol=0, rtol=0)  # cond == uncond: uncond + s * 0
    # a negative prompt that differs (an embedding put in the prompt cache: the tiny model has no text encoder)
    model.backbone._prompt_cache["blurry"] = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(0))
    other, _ = _rollout(model, T=9, guidance_scale=3.0, negative_prompt="blurry")
    assert not torch.allclose(other[0], plain[0])
    with pytest.raises(ValueError, match="guidance_scale"):
        _rollout(model, T=9, guidance_scale=0.0)


def test_preceding_context_changes_only_later_chunks(model):
    base, _ = _rollout(model, T=25)  # 3 chunks: chunk 2 has 2 latents before its seed
    old = _with(model, preceding_latent_frames=2)
    try:
        pre, _ = _rollout(model, T=25)
    finally:
        model.config = old
    assert [x.shape for x in pre] == [x.shape for x in base]  # the window's own frames come back
    torch.testing.assert_close(pre[0], base[0], atol=0, rtol=0)  # chunk 0: nothing generated before it
    assert not torch.allclose(pre[2], base[2])


def test_reference_frames_are_retrieved_for_later_chunks(model, monkeypatch):
    import importlib

    rollout_module = importlib.import_module("mirage.pipeline.rollout")  # the package exports a function "rollout"
    picked = []
    select = rollout_module.select_reference_frames
    monkeypatch.setattr(rollout_module, "select_reference_frames",
                        lambda *a: picked.append(select(*a)) or picked[-1])
    base, _ = _rollout(model, T=25)
    old = _with(model, reference_frames=2)
    try:
        refs, _ = _rollout(model, T=25)
    finally:
        model.config = old
    assert picked[0] == [] and all(1 <= len(p) <= 2 for p in picked[1:])  # nothing before chunk 0; at most 2
    assert all(i < 2 * (k + 1) + 1 for k, p in enumerate(picked[1:]) for i in p)  # only frames generated before
    assert [x.shape for x in refs] == [x.shape for x in base]
    torch.testing.assert_close(refs[0], base[0], atol=0, rtol=0)
    assert not torch.allclose(refs[1], base[1])


def test_inference_options_swap_the_config_for_a_block(model):
    from mirage.pipeline.config import REFERENCE_INFERENCE

    before = model.config
    with model.inference_options(**REFERENCE_INFERENCE) as m:
        assert m is model and all(getattr(model.config, k) == v for k, v in REFERENCE_INFERENCE.items())
    assert model.config is before
    with pytest.raises(ValueError, match="chunk_seed"):
        with model.inference_options(chunk_seed="latest"):
            pass
    assert model.config is before


@pytest.mark.parametrize("field, value", [("chunk_seed", "latest"), ("memory_update", "forget"),
                                          ("guidance_scale", 0.0), ("preceding_latent_frames", -1),
                                          ("reference_frames", -1), ("reference_voxel_size", 0.0)])
def test_bad_options_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        WorldModelConfig(**{field: value})
