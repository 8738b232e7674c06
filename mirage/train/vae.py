"""Training a small causal VAE from scratch (the tiny model's VAE starts random; the real Wan2.2 VAE never trains).

mirage-tiny v2 uses the per-frame :class:`~mirage.models.patch_autoencoder.PatchAutoencoder` instead, trained on fresh
procedural rooms by :mod:`mirage.train.autoencoder` (``mirage train --stage autoencoder``). :func:`latent_statistics`
and :func:`set_latent_statistics` here work for both autoencoders.

Reconstruction loss (L1 + MSE on [-1, 1] pixels) plus a small KL term on the posterior, on whole clips so the
causal temporal path learns too. Afterwards the per-channel statistics of the latents are measured on the
data and written into the VAE config (``latents_mean`` / ``latents_std``), which is how the backbone
normalises latents: ``z = (mu - mean) / std``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mirage.data.clip import Clip

__all__ = ["VAETrainConfig", "train_vae", "latent_statistics", "set_latent_statistics"]


@dataclass
class VAETrainConfig:
    steps: int = 300
    batch_size: int = 2
    learning_rate: float = 1e-3
    kl_weight: float = 1e-6
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or not self.learning_rate > 0 or self.kl_weight < 0:
            raise ValueError(f"bad VAE training config: {asdict(self)}")


def _video(clips: Sequence[Clip], device) -> torch.Tensor:
    return torch.stack([c.rgb for c in clips]).to(device).transpose(1, 2) * 2 - 1  # (B, 3, T, H, W)


def train_vae(vae, dataset: Dataset, config: VAETrainConfig, log_path: str | Path | None = None,
              progress: bool = True, callback: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``vae`` (``AutoencoderKLWan``) in place on the clips of ``dataset``; returns the loss per step."""
    if len(dataset) == 0:
        raise ValueError("the VAE training dataset is empty")
    device = next(vae.parameters()).device
    generator = torch.Generator().manual_seed(config.seed)
    clips = [dataset[i] for i in range(len(dataset))]  # small synthetic sets: render once, reuse every epoch
    vae.requires_grad_(True).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.learning_rate)
    losses = []
    start = time.perf_counter()
    bar = tqdm(range(config.steps), desc="vae", disable=not progress)
    for step in bar:
        pick = torch.randint(len(clips), (config.batch_size,), generator=generator).tolist()
        video = _video([clips[i] for i in pick], device)
        posterior = vae.encode(video).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator).to(device)
        recon = vae.decode(latents).sample
        loss = (recon - video).abs().mean() + (recon - video).pow(2).mean() + config.kl_weight * posterior.kl().mean()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"VAE loss became {value} at step {step + 1}")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(value)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if log_path is not None:
            with open(log_path, "a") as f:
                f.write(json.dumps({"step": step + 1, "loss": losses[-1],
                                    "seconds": round(time.perf_counter() - start, 3)}) + "\n")
        if callback is not None:
            callback(step + 1, losses[-1])
    vae.requires_grad_(False).eval()
    return losses


@torch.no_grad()
def latent_statistics(vae, dataset: Dataset, max_clips: int = 64) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the posterior means over up to ``max_clips`` clips."""
    device = next(vae.parameters()).device
    mus = []
    for i in range(min(len(dataset), max_clips)):
        mu = vae.encode(_video([dataset[i]], device)).latent_dist.mode()
        mus.append(mu.float().transpose(0, 1).flatten(1))  # (C, N)
    mu = torch.cat(mus, dim=1)
    return mu.mean(1).tolist(), mu.std(1).clamp_min(1e-4).tolist()


def set_latent_statistics(vae, mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != len(vae.config.latents_mean) or len(std) != len(vae.config.latents_std):
        raise ValueError(f"need {len(vae.config.latents_mean)} means and stds, got {len(mean)} and {len(std)}")
    vae.register_to_config(latents_mean=[float(x) for x in mean], latents_std=[float(x) for x in std])
