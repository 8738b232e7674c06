"""Speed options (mirage.models.acceleration) on the tiny config, CPU: compile, SDPA backend, FP8."""

import pytest
import torch

from mirage.models import MirageTransformer, load_backbone, per_token_timesteps
from mirage.models.acceleration import Fp8Linear, accelerate_transformer


def _model():
    mt = MirageTransformer.from_backbone(load_backbone("tiny").transformer, injection_layers=[0, 1])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in mt.side_branch.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return mt.eval()


def _inputs(batch=1, frames=3, h=4, w=6):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 48, frames, h, w, generator=g)
    memory = torch.randn(batch, 48, frames, h, w, generator=g)
    mask = (torch.rand(batch, 1, frames, h, w, generator=g) > 0.3).float()
    t = per_token_timesteps(torch.tensor([[0.0, 600.0, 600.0]] * batch), (h, w))
    return x, t, torch.randn(batch, 16, 32, generator=g), memory, mask


def _run(mt, modulation="per_frame"):
    x, t, e, memory, mask = _inputs()
    mt.modulation = modulation
    with torch.no_grad():
        return mt(x, t, e, memory_latents=memory, memory_mask=mask)


def test_regional_compile_traces_every_block_without_graph_breaks():
    model = _model()
    eager = {mode: _run(model, mode) for mode in ("per_frame", "per_token")}
    mt = accelerate_transformer(_model(), compile="regional", compile_options={"backend": "eager"})
    assert mt.acceleration == {"compile": "regional"}
    # backend "eager": dynamo captures each block as one graph (fullgraph=True raises on a break) and runs it
    # unchanged, so the result is the eager one bit for bit: per frame (the compiled block function, hint
    # blocks) and per token (the compiled backbone blocks).
    for mode, expected in eager.items():
        assert torch.equal(_run(mt, mode), expected), mode
    with pytest.raises(ValueError, match="already compiled"):
        accelerate_transformer(mt, compile="regional")


@pytest.mark.slow
def test_regional_compile_inductor_matches_eager():
    eager = _run(_model())
    mt = accelerate_transformer(_model(), compile="regional")
    try:
        compiled = _run(mt)
    except Exception as exc:  # noqa: BLE001 - e.g. no C++ compiler for inductor's CPU backend
        pytest.skip(f"torch.compile (inductor) cannot run here: {type(exc).__name__}: {exc}"[:300])
    # Inductor fuses the elementwise chains (and may contract a*b+c into FMAs): float32 rounding differs,
    # measured max |diff| ~5e-7 on outputs of magnitude ~2.
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)


def _attention_ops(mt):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        _run(mt)
    return {e.key for e in prof.key_averages() if "attention" in e.key}


def test_sdpa_backend_is_applied_per_processor():
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    active = _AttentionBackendRegistry.get_active_backend()
    default = _run(_model())
    mt = accelerate_transformer(_model(), sdpa_backend="math")
    processors = [m.processor for m in mt.modules() if hasattr(m, "processor")]
    assert len(processors) == (2 + 2) * 2  # (2 backbone + 2 hint blocks) x (self + cross attention)
    assert all(p._attention_backend == AttentionBackendName._NATIVE_MATH for p in processors)
    assert "aten::_scaled_dot_product_attention_math" in _attention_ops(mt)
    torch.testing.assert_close(_run(mt), default, atol=1e-5, rtol=1e-5)
    accelerate_transformer(mt, sdpa_backend="flash")  # torch has a CPU flash kernel too
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in _attention_ops(mt)
    assert _AttentionBackendRegistry.get_active_backend() == active  # nothing process-wide changed
    with pytest.raises(ValueError, match="sdpa_backend"):
        accelerate_transformer(mt, sdpa_backend="sage")


def test_fp8_refuses_cpu_and_bad_options():
    mt = _model()
    with pytest.raises(ValueError, match="CUDA"):
        accelerate_transformer(mt, fp8=True)
    with pytest.raises(ValueError, match="compile"):
        accelerate_transformer(mt, compile="full")
    assert not any(isinstance(m, Fp8Linear) for m in mt.modules())  # nothing was changed


def test_fp8_linear_numerics():
    # torch._scaled_mm also runs on CPU in recent torch: the layer's arithmetic is checked here, the speed on a GPU.
    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(48, 64, generator=g) * 0.05)
    x = torch.randn(5, 7, 64, generator=g)
    try:
        fp8 = Fp8Linear.from_linear(linear)
        out = fp8(x)
    except RuntimeError as exc:
        pytest.skip(f"torch._scaled_mm does not run on this CPU build: {exc}"[:200])
    ref = linear(x)
    assert out.shape == ref.shape and out.dtype == x.dtype
    # e4m3 keeps 3 mantissa bits: each operand is within 2^-4 relative; the 64-term sums stay within ~4%.
    rel = (out - ref).norm() / ref.norm()
    assert 1e-4 < rel < 0.05
    assert fp8(x[:0]).shape == (0, 7, 48)
    assert not Fp8Linear.eligible(torch.nn.Linear(24, 48))  # not a multiple of 16
    zero = torch.nn.Linear(64, 64)
    torch.nn.init.zeros_(zero.weight)
    assert not Fp8Linear.eligible(zero)  # zero-initialised adapters stay exact
