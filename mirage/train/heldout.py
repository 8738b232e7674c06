"""Held-out flow-matching loss with memory controls: the check run between training stages.

On held-out rooms of an encoded memory-task pool (:mod:`mirage.train.memory_pool`, split "heldout"), the same
windows and the same noise are scored with four memories:

* ``true``: the room's earlier pass, inserted exactly as in training and inference;
* ``shuffled``: the same earlier-pass latents permuted among all their cells (same features, wrong places);
* ``empty``: an empty memory (the side branch sees an all-zero readout and mask);
* ``off``: no memory inputs at all (side branch off: the stage-0 / "no memory" model).

A model that reads its memory's content has ``true`` clearly below ``shuffled`` and ``empty``. The closed-loop
evaluation (``mirage eval --protocol memory``) is the real test; this one costs seconds.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Sequence

import torch

from mirage.train.conditioning import training_batch
from mirage.train.flow_matching import batch_flow_loss

__all__ = ["heldout_losses", "MEMORY_CONTROLS"]

MEMORY_CONTROLS = ("true", "shuffled", "empty", "off")


def _control(sample, control: str, generator: torch.Generator):
    if control == "shuffled":
        S, C, h, w = sample.source_latents.shape
        cells = sample.source_latents.permute(0, 2, 3, 1).reshape(-1, C)
        cells = cells[torch.randperm(cells.shape[0], generator=generator)]
        return replace(sample, source_latents=cells.reshape(S, h, w, C).permute(0, 3, 1, 2).contiguous())
    if control == "empty":
        return replace(sample, source_exclude=torch.ones_like(sample.source_exclude))
    return sample


@torch.no_grad()
def heldout_losses(world_model, samples: Sequence, sigmas: Sequence[float] = (0.3, 0.5, 0.7, 0.9),
                   controls: Sequence[str] = MEMORY_CONTROLS, seed: int = 0) -> dict[str, float]:
    """Mean flow loss per memory control over ``samples`` (EncodedClips) x ``sigmas`` (fixed noise per pair)."""
    bad = [c for c in controls if c not in MEMORY_CONTROLS]
    if bad or not samples:
        raise ValueError(f"controls must be in {MEMORY_CONTROLS} and samples non-empty, got {bad}, {len(samples)}")
    transformer = world_model.transformer
    was_training = transformer.training
    transformer.eval()
    text = world_model.backbone.encode_prompt("").to(world_model.device)
    out = {}
    for control in controls:
        if control != "off" and transformer.side_branch is None:
            continue
        total, n = 0.0, 0
        for i, sample in enumerate(samples):
            sample = _control(sample, control, torch.Generator().manual_seed(seed * 7919 + i))
            for j, sigma in enumerate(sigmas):
                g = torch.Generator().manual_seed((seed * 1_000_003 + i) * 101 + j)
                # logit_std ~ 0 pins every sample's noise level at ``sigma`` (flow_shift 1: no remapping).
                logit = float(torch.logit(torch.tensor(sigma)))
                batch = training_batch(world_model, [sample], g, 1, logit_mean=logit, logit_std=1e-6, flow_shift=1.0,
                                       use_memory=control != "off")
                prediction = transformer(batch.noisy, batch.timestep, text, **batch.model_kwargs())
                total += float(batch_flow_loss(prediction, batch, world_model.config.prediction_type))
                n += 1
        out[control] = total / n
    transformer.train(was_training)
    return out


def main(argv=None) -> int:
    """``python -m mirage.train.heldout --model DIR --pool POOL [--rooms 24] [--output file.json]``."""
    import argparse

    from mirage.pipeline import MirageWorldModel
    from mirage.train.memory_pool import MemoryWindowDataset, latent_dir, pool_files

    parser = argparse.ArgumentParser(prog="python -m mirage.train.heldout")
    parser.add_argument("--model", required=True)
    parser.add_argument("--pool", required=True)
    parser.add_argument("--rooms", type=int, default=24)
    parser.add_argument("--side-branch", choices=("on", "off"), default=None)
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    overrides = {} if args.side_branch is None else {"side_branch": args.side_branch == "on"}
    world_model = MirageWorldModel.from_pretrained(args.model, **overrides)
    files = pool_files(latent_dir(args.pool, world_model), split="heldout")[: args.rooms]
    if not files:
        raise SystemExit(f"no encoded held-out rooms in {args.pool}")
    F = world_model.chunk_latent_frames
    T = MemoryWindowDataset(files, F).num_target_frames
    # The last chunk of a rollout (the return), with the whole earlier pass in memory: deterministic windows.
    dataset = MemoryWindowDataset(files, F, starts=[T - F], min_sources=10**6, repeats=1)
    losses = heldout_losses(world_model, [dataset[i] for i in range(len(dataset))])
    line = json.dumps({"model": str(args.model), "rooms": len(files), **{k: round(v, 5) for k, v in losses.items()}})
    print(line)
    if args.output:
        with open(args.output, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
