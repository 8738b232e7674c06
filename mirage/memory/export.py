"""Display colours for a memory's points: what RViz, PLY files and the demo show.

* "observed": the mean RGB of the pixels each point was lifted from (stored with the point).
* "pca": the features' top-3 principal components, stretched to [0, 1]. The basis (mean, components,
  stretch range) is fitted once per memory (:class:`PCABasis`, at the first PCA export) and saved with it,
  so a point keeps its colour from one export to the next while the memory grows.
* a callable mapping (N, C) features to (N, 3) colours in [0, 1] (e.g. a latent decoder).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["subsample_indices", "PCABasis", "pca_colors"]

_STRETCH_SAMPLE = 100_000  # points used for the 1st / 99th percentile stretch


def subsample_indices(n: int, max_points: int | None) -> torch.Tensor:
    """Evenly spaced, deterministic subset of range(n) of at most max_points indices."""
    if max_points is None or n <= max_points:
        return torch.arange(n)
    return torch.linspace(0, n - 1, max_points).round().long().unique()


@dataclass(frozen=True)
class PCABasis:
    """A fixed map from (N, C) features to (N, 3) colours: ``((f - mean) @ components - low) / (high - low)``.

    mean (C,), components (C, 3), low (3,), high (3,), all float32 on the CPU.
    """

    mean: torch.Tensor
    components: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor

    TENSOR_NAMES = ("pca_mean", "pca_components", "pca_range")

    @classmethod
    def fit(cls, features: torch.Tensor) -> "PCABasis":
        """Fit to (N, C) features, N >= 1. Deterministic: components from the C x C covariance, each sign
        fixed so its largest loading is positive; each channel stretched between its 1st and 99th percentile."""
        x = features.detach().float().cpu()
        n, c = x.shape
        if n == 0:
            raise ValueError("PCABasis.fit needs at least one feature row")
        mean = x.mean(0)
        x = x - mean
        cov = x.T @ x / max(n - 1, 1)
        _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
        comps = vecs[:, -3:].flip(-1)
        sign = torch.sign(comps.gather(0, comps.abs().argmax(0, keepdim=True)))
        comps = comps * torch.where(sign == 0, torch.ones_like(sign), sign)
        if c < 3:
            comps = torch.cat([comps, torch.zeros(c, 3 - comps.shape[1])], dim=1)
        y = x @ comps
        sample = y[subsample_indices(n, _STRETCH_SAMPLE)]
        low, high = torch.quantile(sample, 0.01, dim=0), torch.quantile(sample, 0.99, dim=0)
        return cls(mean, comps.contiguous(), low, high)

    @property
    def channels(self) -> int:
        return self.mean.shape[0]

    def apply(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C) features -> (N, 3) float32 colours in [0, 1] (on the CPU)."""
        if features.ndim != 2 or features.shape[1] != self.channels:
            raise ValueError(f"features must be (N, {self.channels}), got {tuple(features.shape)}")
        y = (features.detach().float().cpu() - self.mean) @ self.components
        return ((y - self.low) / (self.high - self.low).clamp_min(1e-8)).clamp(0, 1)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.TENSOR_NAMES, (self.mean, self.components, torch.stack([self.low, self.high]))))

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], channels: int) -> "PCABasis | None":
        """The basis saved by :meth:`to_tensors`, None when absent; ValueError when malformed."""
        present = [k in tensors for k in cls.TENSOR_NAMES]
        if not any(present):
            return None
        if not all(present):
            raise ValueError(f"incomplete PCA basis: need all of {cls.TENSOR_NAMES}")
        mean, comps, rng = (tensors[k].float() for k in cls.TENSOR_NAMES)
        if mean.shape != (channels,) or comps.shape != (channels, 3) or rng.shape != (2, 3):
            raise ValueError(f"PCA basis shapes {tuple(mean.shape)}, {tuple(comps.shape)}, {tuple(rng.shape)} do "
                             f"not fit {channels} channels")
        return cls(mean, comps, rng[0], rng[1])


def pca_colors(features: torch.Tensor) -> torch.Tensor:
    """(N, C) features -> (N, 3) colours in [0, 1], with a basis fitted to these same features."""
    if features.shape[0] == 0:
        return torch.zeros(0, 3)
    return PCABasis.fit(features).apply(features)
