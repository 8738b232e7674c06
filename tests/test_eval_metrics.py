import math

import pytest
import torch

from mirage.metrics import LPIPSUnavailable, load_lpips, lpips_status, psnr, ssim


def _image(seed=0, size=(3, 32, 40)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(size, generator=g)


def test_psnr_identical_is_capped():
    x = _image()
    assert psnr(x, x).item() == pytest.approx(100.0)


def test_psnr_known_noise():
    x = torch.full((2, 3, 16, 16), 0.5)
    y = x + 0.1  # mse = 0.01 -> 20 dB
    assert torch.allclose(psnr(y, x), torch.tensor([20.0, 20.0], dtype=torch.float64))
    z = x.clone()
    z[0] += 0.01  # mse = 1e-4 -> 40 dB
    assert psnr(z, x).tolist() == pytest.approx([40.0, 100.0])


def test_psnr_gaussian_noise_matches_formula():
    x = _image(1, (1, 3, 64, 64))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2)) * 0.05
    y = x + noise
    # the formula on the perturbation y actually carries (x + noise rounds to float32; psnr sums in float64, so the
    # only difference left is the order of a float64 mean: ~1e-16 relative)
    actual = y.double() - x.double()
    expected = 10 * math.log10(1.0 / actual.pow(2).mean().item())
    assert psnr(y, x).item() == pytest.approx(expected, rel=1e-12)


def test_ssim_identical_is_one_and_noise_lowers_it():
    x = _image(3, (2, 3, 48, 48))
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    light = ssim(x + 0.02 * torch.randn_like(x), x)
    heavy = ssim(x + 0.2 * torch.randn_like(x), x)
    assert (light < 1).all() and (heavy < light).all()


def test_ssim_constant_images_known_value():
    # For constant images sigma terms vanish: SSIM = (2 a b + C1) / (a^2 + b^2 + C1).
    a, b = 0.3, 0.5
    x, y = torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b)
    c1 = 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(x, y).item() == pytest.approx(expected, rel=1e-6)


def test_ssim_matches_independent_reference():
    # Direct per-window computation (no separable filtering) at a few positions.
    x = _image(5, (1, 1, 11, 11)).double()
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    coords = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-coords**2 / (2 * 1.5**2))
    w = torch.outer(g, g)
    w = w / w.sum()
    mx, my = (w * x[0, 0]).sum(), (w * y[0, 0]).sum()
    vx = (w * (x[0, 0] - mx) ** 2).sum()
    vy = (w * (y[0, 0] - my) ** 2).sum()
    cxy = (w * (x[0, 0] - mx) * (y[0, 0] - my)).sum()
    c1, c2 = 0.01**2, 0.03**2
    ref = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert ssim(x, y).item() == pytest.approx(ref.item(), rel=1e-9)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9))
    with pytest.raises(ValueError, match="window"):
        ssim(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))


def test_lpips_skips_clearly_without_weights(tmp_path, monkeypatch):
    monkeypatch.delenv("MIRAGE_LPIPS_DIR", raising=False)
    metric, message = lpips_status(None)
    assert metric is None and message.startswith("LPIPS skipped:")
    with pytest.raises(LPIPSUnavailable):
        load_lpips(tmp_path / "missing")
    metric, message = lpips_status(tmp_path)
    assert metric is None and "LPIPS skipped" in message
