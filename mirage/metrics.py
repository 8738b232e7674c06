"""Image metrics: PSNR, SSIM (Gaussian window, Wang et al. 2004) and LPIPS when its weights are on disk.

Below training and evaluation alike (the autoencoder trainer reports held-out PSNR; :mod:`mirage.eval` builds on it).

All metrics take images as float tensors in [0, 1], shaped (N, 3, H, W) (or (3, H, W)), and return one
value per image (N,) as float64 so that means over many frames do not drift.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = ["psnr", "ssim", "ssim_map", "LPIPSUnavailable", "LPIPSMetric", "load_lpips", "lpips_status"]

LPIPS_ENV = "MIRAGE_LPIPS_DIR"


def _as_batch(a: torch.Tensor, b: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise ValueError(f"{name}: images must be torch tensors")
    if a.shape != b.shape:
        raise ValueError(f"{name}: image shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.ndim != 4 or a.shape[1] not in (1, 3):
        raise ValueError(f"{name}: images must be (N, 3, H, W) or (3, H, W), got {tuple(a.shape)}")
    return a.double(), b.double()


def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, max_db: float = 100.0
         ) -> torch.Tensor:
    """Peak signal-to-noise ratio per image (N,), in dB; identical images give ``max_db``."""
    x, y = _as_batch(prediction, target, "psnr")
    mse = (x - y).pow(2).flatten(1).mean(1)
    value = 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-30))
    return value.clamp(max=max_db)


@lru_cache(maxsize=8)
def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, window_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity per image (N,): Gaussian window 11 / sigma 1.5, valid filtering (no padding),
    mean over channels and positions, as in Wang et al. 2004 and ``skimage`` with ``gaussian_weights=True``."""
    return ssim_map(prediction, target, data_range, window_size, sigma, k1, k2).flatten(1).mean(1)


def ssim_map(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, window_size: int = 11,
             sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """The local SSIM values behind :func:`ssim`: (N, C, H - window_size + 1, W - window_size + 1) float64; entry
    (i, j) is the window centred on pixel (i + window_size // 2, j + window_size // 2) (valid filtering)."""
    x, y = _as_batch(prediction, target, "ssim")
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"ssim: images of {tuple(x.shape[-2:])} are smaller than the {window_size}-pixel window")
    channels = x.shape[1]
    g = _gaussian_window(window_size, sigma).to(x.device)
    kernel_h = g.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    kernel_w = g.view(1, 1, 1, -1).expand(channels, 1, 1, -1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kernel_h, groups=channels), kernel_w, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return num / den


class LPIPSUnavailable(RuntimeError):
    """LPIPS cannot run: the ``lpips`` package or its weights are not on this machine."""


class LPIPSMetric:
    """LPIPS (Zhang et al. 2018) from the ``lpips`` package, with every weight read from local files.

    ``weights_dir`` must hold the backbone weights (``alexnet-owt-7be5be79.pth`` for net="alex", or
    ``vgg16-397923af.pth`` for net="vgg") and the linear layers (``<net>.pth`` from the lpips package's
    ``weights/v0.1``; the pip package ships them). Nothing is downloaded.
    """

    _BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}

    def __init__(self, weights_dir: str | os.PathLike, net: str = "alex", device="cpu"):
        if net not in self._BACKBONE_FILES:
            raise ValueError(f"LPIPS net must be one of {list(self._BACKBONE_FILES)}, got {net!r}")
        try:
            import lpips  # noqa: F401
            import torchvision  # noqa: F401
        except ImportError as exc:
            raise LPIPSUnavailable(f"the 'lpips' package (and torchvision) is not installed: {exc}") from exc
        backbone = os.path.join(weights_dir, self._BACKBONE_FILES[net])
        linear = os.path.join(weights_dir, f"{net}.pth")
        if not os.path.isfile(linear):
            linear = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", f"{net}.pth")
        missing = [p for p in (backbone, linear) if not os.path.isfile(p)]
        if missing:
            raise LPIPSUnavailable(f"LPIPS weights not found: {missing}")
        model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
        # torch.load with weights_only: these are plain state dicts, never pickled objects.
        state = torch.load(backbone, map_location="cpu", weights_only=True)
        features = {k.split("features.", 1)[1]: v for k, v in state.items() if k.startswith("features.")}
        slices = [model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4, model.net.slice5]
        for sl in slices:
            own = {name: features[name] for name, _ in sl.named_parameters() if name in features}
            sl.load_state_dict(own, strict=True)
        model.load_state_dict(torch.load(linear, map_location="cpu", weights_only=True), strict=False)
        self.model = model.eval().to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y = _as_batch(prediction, target, "lpips")
        x = (x.float() * 2 - 1).to(self.device)
        y = (y.float() * 2 - 1).to(self.device)
        return self.model(x, y).flatten().double().cpu()


def load_lpips(weights_dir: str | os.PathLike | None = None, net: str = "alex", device="cpu") -> LPIPSMetric:
    """LPIPS from ``weights_dir`` (default: ``$MIRAGE_LPIPS_DIR``); raises LPIPSUnavailable with the reason."""
    weights_dir = weights_dir or os.environ.get(LPIPS_ENV)
    if not weights_dir:
        raise LPIPSUnavailable(f"no LPIPS weights directory given (pass --lpips-dir or set ${LPIPS_ENV})")
    if not os.path.isdir(weights_dir):
        raise LPIPSUnavailable(f"LPIPS weights directory {weights_dir} does not exist")
    return LPIPSMetric(weights_dir, net=net, device=device)


def lpips_status(weights_dir: str | os.PathLike | None = None, net: str = "alex", device="cpu"
                 ) -> tuple[LPIPSMetric | None, str]:
    """(metric or None, message): the message says why LPIPS is skipped, or where it was loaded from."""
    try:
        metric = load_lpips(weights_dir, net=net, device=device)
    except LPIPSUnavailable as exc:
        return None, f"LPIPS skipped: {exc}"
    return metric, f"LPIPS ({net}) loaded from {weights_dir or os.environ.get(LPIPS_ENV)}"
