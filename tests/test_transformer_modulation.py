"""Modulation once per latent frame: bit-identical to diffusers' per-token path, and the diffusers version guard."""

import contextlib
import inspect

import diffusers
import pytest
import torch

from mirage.models import MirageTransformer, load_backbone, per_token_timesteps
from mirage.models import modulation as modulation_module
from mirage.models.modulation import (
    ADAPTED_DIFFUSERS_VERSION,
    check_diffusers_compat,
    frame_modulated_block,
    frame_timesteps,
    source_fingerprint,
)


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("tiny")


def _randomize(module, seed=1, scale=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def _model(backbone, dtype=torch.float32):
    mt = MirageTransformer.from_backbone(backbone.transformer, injection_layers=[0, 1])
    _randomize(mt.side_branch, seed=1)
    _randomize(mt.camera_embedding, seed=2)
    return mt.to(dtype)


def _inputs(batch=2, frames=3, h=4, w=6, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 48, frames, h, w, generator=g)
    memory = torch.randn(batch, 48, frames, h, w, generator=g)
    mask = (torch.rand(batch, 1, frames, h, w, generator=g) > 0.3).float()
    rays = torch.randn(batch, 6, frames, h, w, generator=g)
    return [t.to(dtype) for t in (x, memory, mask, rays)]


class _Counting:
    """Wraps the per-frame block function and counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


# Context frames 0, generated frames t; the two samples have different contexts.
FRAME_T = torch.tensor([[0.0, 700.0, 700.0], [0.0, 0.0, 300.0]])


@contextlib.contextmanager
def _consistent_embedding(backbone):
    """Per-token embeddings computed once per frame and repeated over its tokens, so both paths see the same
    modulation rows (BLAS alone does not promise that identical rows of one GEMM round identically)."""
    embedder = backbone.transformer.condition_embedder
    original = embedder.forward

    def forward(timestep, encoder_hidden_states, image=None, timestep_seq_len=None):
        if timestep_seq_len is None:
            return original(timestep, encoder_hidden_states, image, timestep_seq_len)
        per_token = timestep.view(-1, timestep_seq_len)
        frames = frame_timesteps(per_token, 3)
        if frames is None or timestep_seq_len == 3:
            return original(timestep, encoder_hidden_states, image, timestep_seq_len)
        temb, proj, text, img = original(frames.flatten(), encoder_hidden_states, image, 3)
        repeat = timestep_seq_len // 3
        return temb.repeat_interleave(repeat, 1), proj.repeat_interleave(repeat, 1), text, img

    embedder.forward = forward
    try:
        yield
    finally:
        del embedder.forward


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_per_frame_is_bit_identical_given_the_same_embedding(backbone, dtype):
    mt = _model(backbone, dtype)
    x, memory, mask, rays = _inputs(dtype=dtype)
    e = torch.randn(1, 16, 32).to(dtype)
    t = per_token_timesteps(FRAME_T, (4, 6))
    with _consistent_embedding(backbone):
        mt.modulation = "per_token"
        reference = mt(x, t, e, memory_latents=memory, memory_mask=mask, rays=rays)
        plain_reference = mt(x, t, e)
        mt.modulation = "per_frame"
        counting = mt.frame_block_forward = _Counting(mt.frame_block_forward)
        out = mt(x, t, e, memory_latents=memory, memory_mask=mask, rays=rays)
        assert counting.calls == len(backbone.transformer.blocks)  # the per-frame path really ran
        # blocks, hint blocks and output norm: the broadcast modulation is exact
        assert out.dtype == dtype and torch.equal(out, reference)
        assert torch.equal(mt(x, t, e), plain_reference)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_per_frame_matches_per_token(backbone, dtype, tolerance):
    mt = _model(backbone, dtype)
    for batch, (h, w) in ((2, (4, 6)), (1, (4, 6)), (1, (2, 14))):  # 36, 18 and 21 embedder rows
        x, memory, mask, rays = _inputs(batch=batch, h=h, w=w, dtype=dtype)
        e = torch.randn(1, 16, 32).to(dtype)
        t = per_token_timesteps(FRAME_T[:batch] + 299.0 * (FRAME_T[:batch] > 0), (h, w))
        mt.modulation = "per_token"
        reference = mt(x, t, e, memory_latents=memory, memory_mask=mask, rays=rays)
        mt.modulation = "per_frame"
        out = mt(x, t, e, memory_latents=memory, memory_mask=mask, rays=rays)
        # Only the timestep embedding differs, by the rounding of its GEMMs over B*F instead of B*S rows. Measured
        # here, outputs of magnitude ~2: float32 |diff| <= 4.8e-7 in all three cases; bfloat16 bit-equal in all
        # three (the tolerance allows one bf16 ulp, 0.0156 at 2).
        torch.testing.assert_close(out, reference, atol=tolerance, rtol=tolerance)


def test_per_frame_gradients_match_per_token(backbone):
    mt = _model(backbone)
    x, memory, mask, rays = _inputs(batch=1)
    e = torch.randn(1, 16, 32)
    t = per_token_timesteps(FRAME_T[1], (4, 6))

    def grads(mode):
        mt.modulation = mode
        mt.zero_grad()
        mt(x, t, e, memory_latents=memory, memory_mask=mask, rays=rays).square().mean().backward()
        return {n: p.grad.clone() for n, p in mt.named_parameters() if p.grad is not None}

    per_token, per_frame = grads("per_token"), grads("per_frame")
    assert per_token.keys() == per_frame.keys() and len(per_token) > 10
    for n in per_token:
        # autograd also sums the broadcast modulation's gradient over a frame's tokens in another order
        torch.testing.assert_close(per_frame[n], per_token[n], atol=1e-6, rtol=1e-5, msg=n)


def test_timesteps_varying_within_a_frame_fall_back_to_per_token(backbone):
    mt = _model(backbone)
    x, *_ = _inputs()
    e = torch.randn(2, 16, 32)
    t = per_token_timesteps(FRAME_T, (4, 6)).clone()
    t[0, 7] = 123.0  # one token of frame 1 differs from its frame
    assert frame_timesteps(t, 3) is None
    counting = mt.frame_block_forward = _Counting(mt.frame_block_forward)
    out = mt(x, t, e)
    assert counting.calls == 0
    assert torch.equal(out, backbone.transformer(x, t, e).sample)


def test_per_sample_timesteps_keep_diffusers_path(backbone):
    mt = _model(backbone)
    x, *_ = _inputs()
    e = torch.randn(2, 16, 32)
    counting = mt.frame_block_forward = _Counting(mt.frame_block_forward)
    out = mt(x, torch.tensor([700.0, 300.0]), e)
    assert counting.calls == 0
    assert torch.equal(out, backbone.transformer(x, torch.tensor([700.0, 300.0]), e).sample)


def test_bad_modulation_mode(backbone):
    mt = _model(backbone)
    x, *_ = _inputs()
    mt.modulation = "per_pixel"
    with pytest.raises(ValueError, match="modulation"):
        mt(x, per_token_timesteps(FRAME_T, (4, 6)), torch.randn(2, 16, 32))


def test_frame_timesteps():
    t = per_token_timesteps(FRAME_T, (4, 6))
    assert torch.equal(frame_timesteps(t, 3), FRAME_T)
    with pytest.raises(ValueError, match="latent frames"):
        frame_timesteps(t, 5)


def test_frame_modulated_block_equals_diffusers_block(backbone):
    block = backbone.transformer.blocks[0]
    g = torch.Generator().manual_seed(3)
    frames, per_frame, dim = 3, 5, 24
    x = torch.randn(2, frames * per_frame, dim, generator=g)
    e = torch.randn(2, 7, dim, generator=g)
    rope = backbone.transformer.rope(torch.zeros(2, 48, frames, 2 * 1, 2 * 5))
    temb = torch.randn(2, frames, 6, dim, generator=g)
    per_token = temb[:, :, None].expand(2, frames, per_frame, 6, dim).reshape(2, frames * per_frame, 6, dim)
    with torch.no_grad():
        assert torch.equal(frame_modulated_block(block, x, e, temb, rope), block(x, e, per_token, rope))
        with pytest.raises(ValueError, match="per latent frame"):
            frame_modulated_block(block, x, e, temb[:, :2], rope)


# ------------------------------------------------------------------------------- the diffusers guard
def test_installed_diffusers_is_the_adapted_one_or_unchanged():
    check_diffusers_compat.cache_clear()
    check_diffusers_compat()  # does not raise here
    for name, (fn, expected) in modulation_module._ADAPTED_FUNCTIONS.items():
        assert source_fingerprint(inspect.getsource(fn)) == expected, name


def test_changed_diffusers_code_fails_clearly(monkeypatch):
    monkeypatch.setattr(diffusers, "__version__", "9.9.9")
    check_diffusers_compat.cache_clear()
    try:
        check_diffusers_compat()  # another version with the same code passes
        fn, _ = modulation_module._ADAPTED_FUNCTIONS["WanTransformerBlock.forward"]
        monkeypatch.setitem(modulation_module._ADAPTED_FUNCTIONS, "WanTransformerBlock.forward", (fn, "0" * 16))
        check_diffusers_compat.cache_clear()
        with pytest.raises(RuntimeError, match=rf"{ADAPTED_DIFFUSERS_VERSION}.*9\.9\.9.*WanTransformerBlock\.forward"):
            check_diffusers_compat()
        with pytest.raises(RuntimeError, match="adapted from diffusers"):
            MirageTransformer(load_backbone("tiny").transformer)
    finally:
        check_diffusers_compat.cache_clear()


def test_fingerprint_ignores_comments_docstrings_hints_but_not_code():
    base = "def f(x: int) -> int:\n    '''doc'''\n    return x + 1\n"
    same = "@decorated\ndef f(x):  # comment\n    return (x +\n            1)\n"
    other = "def f(x):\n    return x + 2\n"
    assert source_fingerprint(base) == source_fingerprint(same)
    assert source_fingerprint(base) != source_fingerprint(other)
    with pytest.raises(ValueError, match="one function"):
        source_fingerprint("x = 1\n")
