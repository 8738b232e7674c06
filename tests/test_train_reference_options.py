"""The reference implementation's training choices as options: per-frame shifted-uniform sigma, a frozen side
branch in stage 2, the "reference" preset, and that the CLI, checkpoints and exports carry them."""

import json
import math

import pytest
import torch

from mirage.data.encoded_clips import encode_clip
from mirage.eval.closed_loop import evaluation_clips
from mirage.pipeline import MirageWorldModel
from mirage.train import TrainConfig, Trainer
from mirage.train.conditioning import training_batch
from mirage.train.flow_matching import add_noise, sample_frame_sigmas

SIZE = dict(height=32, width=64)


@pytest.fixture(scope="module")
def encoded():
    model = MirageWorldModel.from_pretrained("tiny", **SIZE)
    clips = evaluation_clips(2, 9, (32, 64), paths=("orbit", "forward"), num_dynamic=1)
    return [encode_clip(model, c) for c in clips]


def _shifted_uniform_cdf(x: torch.Tensor, shift: float) -> torch.Tensor:
    # s' = k u / (1 + (k - 1) u)  <=>  u = s' / (k - (k - 1) s'), so P(s' <= x) = x / (k - (k - 1) x).
    return x / (shift - (shift - 1.0) * x)


@pytest.mark.parametrize("shift", [5.0, 1.0])
def test_per_frame_sigmas_follow_the_shifted_uniform(shift):
    rows, frames = 4000, 5
    s = sample_frame_sigmas(rows, frames, torch.Generator().manual_seed(0), shift=shift)
    assert s.shape == (rows, frames) and s.dtype == torch.float32
    assert float(s.min()) >= 1e-3 - 1e-7 and float(s.max()) <= 1.0 - 1e-3 + 1e-7  # the clamp, float32
    # Kolmogorov-Smirnov distance to the exact CDF over all 20000 draws, on a grid inside the clamp (where the
    # clamped and the exact CDF agree): below the 1% critical value 1.63 / sqrt(n).
    x = s.flatten().double()
    n = x.numel()
    grid = torch.linspace(0.002, 0.998, 499, dtype=torch.float64)
    empirical = (x[None, :] <= grid[:, None]).double().mean(1)
    ks = float((empirical - _shifted_uniform_cdf(grid, shift)).abs().max())
    assert ks < 1.63 / math.sqrt(n), ks
    # The mean, known in closed form: E[k u / (1 + (k-1) u)] = k/(k-1) (1 - ln k / (k-1)) (1/2 at k = 1); 4 s.e.
    mean = 0.5 if shift == 1.0 else shift / (shift - 1) * (1 - math.log(shift) / (shift - 1))
    assert abs(float(x.mean()) - mean) < 4 * float(x.std()) / math.sqrt(n)
    # Frames are drawn independently: no row is constant, nearly all hold five different values (two frames can
    # both sit at the clamp: 0.5% of draws at shift 5), neighbours are uncorrelated (4 / sqrt(rows)).
    distinct = [len(set(row)) for row in s.tolist()]
    assert min(distinct) > 1 and sum(d == frames for d in distinct) >= 0.99 * rows
    r = torch.corrcoef(s[:, :2].T.double())[0, 1]
    assert abs(float(r)) < 4 / math.sqrt(rows)


def test_add_noise_takes_per_frame_sigmas_and_keeps_context_clean():
    x0, eps = torch.randn(2, 3, 4, 2, 2), torch.randn(2, 3, 4, 2, 2)
    sigmas = torch.tensor([[0.9, 0.2, 0.5, 0.7], [0.3, 0.4, 0.6, 0.8]])
    ctx = torch.tensor([True, False, False, False])
    xs, fs = add_noise(x0, eps, sigmas, ctx)
    assert torch.equal(fs[:, 0], torch.zeros(2)) and torch.equal(fs[:, 1:], sigmas[:, 1:])
    assert torch.equal(xs[:, :, 0], x0[:, :, 0])
    expected = (1 - sigmas[1, 2]) * x0[1, :, 2] + sigmas[1, 2] * eps[1, :, 2]
    assert torch.allclose(xs[1, :, 2], expected, atol=1e-6)
    with pytest.raises(ValueError, match="sigmas"):
        add_noise(x0, eps, torch.rand(2, 3), ctx)


def test_training_batch_draws_one_sigma_per_frame(encoded):
    model = MirageWorldModel.from_pretrained("tiny", **SIZE)
    batch = training_batch(model, encoded, torch.Generator().manual_seed(3), sigma_sampling="per_frame_uniform_shift")
    fs = batch.frame_sigmas
    F = encoded[0].num_latent_frames
    assert fs.shape == (2, F) and batch.sigmas.shape == (2, F)
    assert torch.equal(fs[:, 0], torch.zeros(2))  # the clean context frame
    assert all(len(set(row[1:])) == F - 1 for row in fs.tolist())  # the generated frames all differ
    assert fs[0, 1:].tolist() != fs[1, 1:].tolist()  # and so do the samples
    tokens = batch.timestep.shape[1] // F
    per_frame = batch.timestep.view(2, F, tokens)
    assert torch.allclose(per_frame, (fs * 1000.0)[:, :, None].expand_as(per_frame), atol=1e-3)
    clip = training_batch(model, encoded, torch.Generator().manual_seed(3))  # the default: one per clip
    assert clip.sigmas.shape == (2,) and len(set(clip.frame_sigmas[0, 1:].tolist())) == 1
    with pytest.raises(ValueError, match="sigma_sampling"):
        training_batch(model, encoded, torch.Generator().manual_seed(3), sigma_sampling="uniform")


def _stage2(encoded, tmp_path, **kw):
    cfg = TrainConfig(**{"stage": 2, "steps": 2, "batch_size": 2, "learning_rate": 1e-2, "lora_rank": 4, **kw})
    return Trainer(cfg, encoded, tmp_path, world_model=MirageWorldModel.from_pretrained("tiny", **SIZE),
                   progress=False)


def test_frozen_side_branch_gets_no_gradient_and_lora_trains(encoded, tmp_path):
    trainer = _stage2(encoded, tmp_path, freeze_side_branch=True, sigma_sampling="per_frame_uniform_shift",
                      checkpoint_every=1)
    side = trainer.transformer.side_branch
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in optimised for p in side.parameters())
    assert not any(p.requires_grad for p in side.parameters())
    loss = trainer.loss(trainer.make_batch(encoded, 0))
    loss.backward()
    assert all(p.grad is None for p in side.parameters())
    lora_b = [p for n, p in trainer.transformer.named_parameters() if ".lora_B." in n]
    assert lora_b and any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)
    trainer.optimizer.zero_grad(set_to_none=True)

    before = {n: p.detach().clone() for n, p in trainer.transformer.named_parameters()}
    trainer.train(export=True)
    changed = {n for n, p in trainer.transformer.named_parameters() if not torch.equal(p, before[n])}
    assert not any(n.startswith("side_branch.") for n in changed)
    assert any(".lora_B." in n for n in changed)
    assert all(".lora_" in n or n.startswith("camera_embedding.") for n in changed), sorted(changed)[:5]
    # the choice travels with the run: trainer config, checkpoint state, exported training.json
    state = torch.load(trainer.latest_checkpoint() / "training_state.pt", weights_only=True)
    exported = json.loads((tmp_path / "final" / "training.json").read_text())["config"]
    for saved in (json.loads((tmp_path / "trainer_config.json").read_text()), exported, json.loads(state["config"])):
        assert saved["freeze_side_branch"] is True and saved["sigma_sampling"] == "per_frame_uniform_shift"


def test_default_stage2_trains_the_side_branch_too(encoded, tmp_path):
    trainer = _stage2(encoded, tmp_path)
    side = {k: v.clone() for k, v in trainer.transformer.side_branch.state_dict().items()}
    trainer.train(export=False)
    after = trainer.transformer.side_branch.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in side.items())


def test_stage1_ignores_freeze_side_branch(encoded, tmp_path):
    # The reference preset's stage 1 (its "vace" stage) trains the side branch.
    trainer = _stage2(encoded, tmp_path, stage=1, freeze_side_branch=True)
    assert all(p.requires_grad for p in trainer.transformer.side_branch.parameters())


def test_reference_preset_and_validation():
    ref = TrainConfig.preset("reference")
    assert ref.sigma_sampling == "per_frame_uniform_shift" and ref.freeze_side_branch is True
    assert ref.flow_shift == 5.0 and ref.lora_rank == 32 and ref.lora_alpha == 32.0 and ref.learning_rate == 1e-5
    default = TrainConfig()
    assert default.sigma_sampling == "per_clip_logit_normal" and default.freeze_side_branch is False
    assert TrainConfig.from_dict(ref.to_dict()) == ref
    for bad, match in [({"sigma_sampling": "per_frame"}, "sigma_sampling"),
                       ({"freeze_side_branch": "yes"}, "freeze_side_branch"),
                       ({"flow_shift": 0.0}, "flow_shift"), ({"logit_std": 0.0}, "logit_std")]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)


def test_cli_flags_set_the_options():
    import argparse

    from mirage.train.cli import _train_config, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--output", "x", "--stage", "2", "--freeze-side-branch", "--sigma-sampling",
                              "per_frame_uniform_shift", "--flow-shift", "3"])
    config = _train_config(args)
    assert (config.freeze_side_branch, config.sigma_sampling, config.flow_shift) == (True, "per_frame_uniform_shift",
                                                                                    3.0)
    plain = _train_config(parser.parse_args(["--output", "x"]))
    assert (plain.freeze_side_branch, plain.sigma_sampling) == (False, "per_clip_logit_normal")
    reference = _train_config(parser.parse_args(["--output", "x", "--config", "reference"]))
    assert reference.freeze_side_branch and reference.sigma_sampling == "per_frame_uniform_shift"
    with pytest.raises(SystemExit):
        parser.parse_args(["--output", "x", "--sigma-sampling", "uniform"])
