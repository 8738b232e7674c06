"""Side-branch inference options: target tokens only, fewer blocks (tiny configs, CPU)."""

import pytest
import torch

from mirage.models import MirageTransformer, load_backbone, per_token_timesteps
from mirage.models.transformer import target_tokens


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("tiny")


def _model(backbone, layers=(0, 1)):
    mt = MirageTransformer.from_backbone(backbone.transformer, injection_layers=list(layers))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in mt.side_branch.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return mt


def _inputs(batch=2, frames=3, h=4, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 48, frames, h, w, generator=g)
    memory = torch.randn(batch, 48, frames, h, w, generator=g)
    mask = (torch.rand(batch, 1, frames, h, w, generator=g) > 0.3).float()
    return x, memory, mask


CONTEXT_FIRST = per_token_timesteps(torch.tensor([[0.0, 600.0, 600.0]] * 2), (4, 6))  # frame 0 is context


def test_defaults_are_the_trained_setting(backbone):
    branch = _model(backbone).side_branch
    assert branch.target_only is False and branch.num_blocks is None
    assert branch.active_injection_layers == [0, 1]
    with pytest.raises(ValueError, match="num_blocks"):
        branch.set_inference_options(num_blocks=3)
    with pytest.raises(ValueError, match="num_blocks"):
        branch.set_inference_options(num_blocks=0)


def test_fewer_blocks_keeps_the_first_skips_bit_for_bit(backbone):
    mt = _model(backbone)
    x, memory, mask = _inputs()
    e = torch.randn(2, 16, 32)
    with torch.no_grad():
        mt.side_branch.set_inference_options(num_blocks=1)
        truncated = mt(x, CONTEXT_FIRST, e, memory_latents=memory, memory_mask=mask)
        mt.side_branch.set_inference_options()
        full = mt(x, CONTEXT_FIRST, e, memory_latents=memory, memory_mask=mask)
        assert not torch.allclose(truncated, full)  # the option changes the result ...
        # ... exactly by dropping the later layers' skips: the stream is causal in depth, so the first skip is
        # the full branch's; a zero output projection on hint block 1 drops its skip the same way.
        mt.side_branch.hint_blocks[1].proj_out.weight.zero_()
        mt.side_branch.hint_blocks[1].proj_out.bias.zero_()
        assert torch.equal(mt(x, CONTEXT_FIRST, e, memory_latents=memory, memory_mask=mask), truncated)


def test_target_only_ignores_the_context_frames_exactly(backbone):
    mt = _model(backbone)
    x, memory, mask = _inputs()
    e = torch.randn(2, 16, 32)
    other = memory.clone()
    other[:, :, 0] += 3.0  # a different readout in the context frame only
    other_mask = mask.clone()
    other_mask[:, :, 0] = 1 - other_mask[:, :, 0]
    with torch.no_grad():
        full_a = mt(x, CONTEXT_FIRST, e, memory_latents=memory, memory_mask=mask)
        full_b = mt(x, CONTEXT_FIRST, e, memory_latents=other, memory_mask=other_mask)
        mt.side_branch.set_inference_options(target_only=True)
        target_a = mt(x, CONTEXT_FIRST, e, memory_latents=memory, memory_mask=mask)
        target_b = mt(x, CONTEXT_FIRST, e, memory_latents=other, memory_mask=other_mask)
    assert not torch.allclose(full_a, full_b)  # the full branch reads the context frame's readout ...
    assert torch.equal(target_a, target_b)  # ... the target-only branch cannot see it at all
    assert not torch.allclose(target_a, full_a)


def test_target_only_is_the_branch_over_the_target_tokens_alone(backbone):
    mt = _model(backbone)
    branch = mt.side_branch
    x, memory, mask = _inputs(batch=1)
    bb = backbone.transformer
    hint = torch.cat([memory, mask], dim=1)
    with torch.no_grad():
        tokens = bb.patch_embedding(x).flatten(2).transpose(1, 2).contiguous()
        _, proj, text, _ = bb.condition_embedder(CONTEXT_FIRST[:1].flatten(), torch.randn(1, 16, 32), None,
                                                 timestep_seq_len=CONTEXT_FIRST.shape[1])
        temb = proj.unflatten(2, (6, -1))  # per token (1, S, 6, D)
        rope = bb.rope(x)
        index = target_tokens(CONTEXT_FIRST[:1], tokens.shape[1])
        assert torch.equal(index, torch.arange(6, 18))  # frames 1 and 2 of 3, 6 tokens each
        selected = branch(hint, tokens, text, temb, rope, token_index=index)
        # The same stream over a clip holding only the target tokens (hint tokens, backbone tokens, modulation
        # and RoPE positions of those tokens): the context tokens do not exist for it.
        hint_tokens = branch.hint_patch_embedding(hint).flatten(2).transpose(1, 2)[:, index]
        c = branch.hint_blocks[0].proj_in(hint_tokens) + tokens[:, index]
        sub_rope = tuple(t[:, index] for t in rope)
        for k, block in enumerate(branch.hint_blocks):
            c = super(type(block), block).forward(c, text, temb[:, index], sub_rope)
            torch.testing.assert_close(selected[k], block.proj_out(c), rtol=0, atol=0)
        full = branch(hint, tokens, text, temb, rope)
    assert selected[0].shape == (1, 12, 24) and full[0].shape == (1, 18, 24)
    assert not torch.allclose(selected[-1], full[-1][:, index])  # attention to the context tokens matters


def test_target_only_per_frame_and_per_token_modulation_agree(backbone):
    mt = _model(backbone)
    mt.side_branch.set_inference_options(target_only=True)
    x, memory, mask = _inputs()
    e = torch.randn(2, 16, 32)
    t = per_token_timesteps(torch.tensor([[0.0, 600.0, 600.0], [0.0, 0.0, 200.0]]), (4, 6))  # union: frames 1, 2
    with torch.no_grad():
        mt.modulation = "per_frame"
        per_frame = mt(x, t, e, memory_latents=memory, memory_mask=mask)
        mt.modulation = "per_token"
        per_token = mt(x, t, e, memory_latents=memory, memory_mask=mask)
    torch.testing.assert_close(per_frame, per_token, atol=1e-5, rtol=1e-5)  # to the embedding's rounding


def test_target_tokens_edge_cases(backbone):
    assert target_tokens(torch.tensor([500.0, 10.0]), 18) is None  # every token denoised: the full branch
    assert target_tokens(per_token_timesteps(torch.full((2, 3), 400.0), (4, 6)), 18) is None
    assert target_tokens(torch.zeros(2, 18), 18).numel() == 0
    mt = _model(backbone)
    mt.side_branch.set_inference_options(target_only=True)
    x, memory, mask = _inputs()
    e = torch.randn(2, 16, 32)
    clean = torch.zeros(2, 18)
    with torch.no_grad():  # nothing to denoise: no branch at all, exactly the plain model
        assert torch.equal(mt(x, clean, e, memory_latents=memory, memory_mask=mask), mt(x, clean, e))
        full_t = torch.tensor([500.0, 500.0])
        target = mt(x, full_t, e, memory_latents=memory, memory_mask=mask)
        mt.side_branch.set_inference_options()
        assert torch.equal(target, mt(x, full_t, e, memory_latents=memory, memory_mask=mask))


def test_partial_frame_selection_rejected_with_per_frame_modulation(backbone):
    branch = _model(backbone).side_branch
    hint = torch.zeros(1, 49, 3, 4, 6)
    tokens = torch.zeros(1, 18, 24)
    temb = torch.zeros(1, 3, 6, 24)  # per frame
    rope = backbone.transformer.rope(torch.zeros(1, 48, 3, 4, 6))
    with torch.no_grad(), pytest.raises(ValueError, match="whole latent frames"):
        branch(hint, tokens, torch.zeros(1, 16, 24), temb, rope, token_index=torch.arange(3, 12))
    with torch.no_grad(), pytest.raises(ValueError, match="token_index"):
        branch(hint, tokens, torch.zeros(1, 16, 24), temb, rope, token_index=torch.tensor([17, 18]))
