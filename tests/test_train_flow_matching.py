import pytest
import torch

from mirage.train.flow_matching import add_noise, flow_target, masked_flow_loss, sample_sigmas, shift_sigmas


def test_shift_identity_and_monotone():
    s = torch.linspace(0, 1, 11)
    assert torch.allclose(shift_sigmas(s, 1.0), s)
    shifted = shift_sigmas(s, 5.0)
    assert (shifted >= s - 1e-7).all() and shifted[0] == 0 and shifted[-1] == 1
    assert shift_sigmas(torch.tensor([0.5]), 5.0).item() == pytest.approx(5 / 6)


def test_sample_sigmas_range_and_reproducible():
    a = sample_sigmas(1000, torch.Generator().manual_seed(0), shift=5.0)
    b = sample_sigmas(1000, torch.Generator().manual_seed(0), shift=5.0)
    assert torch.equal(a, b) and a.min() > 0 and a.max() < 1
    assert a.median() > 0.7  # shift 5 moves the median of sigmoid(N(0,1)) from 0.5 to 5/6


def test_add_noise_keeps_context_clean():
    x0 = torch.randn(2, 4, 3, 2, 2)
    eps = torch.randn_like(x0)
    ctx = torch.tensor([True, False, False])
    xs, fs = add_noise(x0, eps, torch.tensor([0.25, 1.0]), ctx)
    assert torch.equal(xs[:, :, 0], x0[:, :, 0])
    assert torch.allclose(xs[0, :, 1:], 0.75 * x0[0, :, 1:] + 0.25 * eps[0, :, 1:])
    assert torch.allclose(xs[1, :, 1:], eps[1, :, 1:])
    assert fs.tolist() == [[0.0, 0.25, 0.25], [0.0, 1.0, 1.0]]
    assert torch.equal(flow_target(x0, eps), eps - x0)


def test_masked_loss_ignores_context():
    pred = torch.zeros(1, 2, 3, 2, 2)
    target = torch.zeros_like(pred)
    target[:, :, 0] = 100.0  # error only on the context frame
    ctx = torch.tensor([True, False, False])
    assert masked_flow_loss(pred, target, ctx).item() == 0.0
    target[:, :, 2] = 2.0
    assert masked_flow_loss(pred, target, ctx).item() == pytest.approx(2.0)  # mean of 4 over half the cells
    with pytest.raises(ValueError, match="every frame is context"):
        masked_flow_loss(pred, target, torch.ones(3, dtype=torch.bool))
