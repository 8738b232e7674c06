"""Training the per-frame autoencoder: fresh rooms, exact resume, final statistics, CLI, bad settings."""

import json

import pytest
import torch

from mirage.models import PatchAutoencoder
from mirage.train.autoencoder import (
    HELDOUT_SEED_OFFSET,
    AutoencoderTrainConfig,
    AutoencoderTrainer,
    ProceduralFrames,
)

TINY = dict(height=32, width=48, spatial_stride=8, block_out_channels=(8, 16), layers_per_block=1, steps=3,
            batch_size=4, views_per_room=2, warmup_steps=1, eval_every=2, eval_rooms=2, eval_views=2, log_every=1,
            checkpoint_every=2, stats_frames=8)


def test_procedural_frames_are_a_function_of_the_room_seed():
    frames = ProceduralFrames(32, 48)
    a, b = frames.views(7, 3), frames.views(7, 3)
    assert a.shape == (3, 3, 32, 48) and a.dtype == torch.float32
    assert torch.equal(a, b) and 0 <= float(a.min()) and float(a.max()) <= 1
    assert not torch.equal(a, frames.views(8, 3))
    assert not torch.equal(a[0], a[1])  # different poses within a room


def test_every_step_sees_new_rooms_disjoint_from_the_heldout_ones(tmp_path):
    trainer = AutoencoderTrainer(AutoencoderTrainConfig(**{**TINY, "steps": 1000}), tmp_path, progress=False)
    seeds = [s for step in range(1000) for s in trainer.train_seeds(step)]
    assert len(seeds) == len(set(seeds)) == 2000
    heldout = set(range(HELDOUT_SEED_OFFSET, HELDOUT_SEED_OFFSET + trainer.config.eval_rooms))
    assert not heldout & set(seeds)
    other_run = AutoencoderTrainer(AutoencoderTrainConfig(**{**TINY, "seed": 1}), tmp_path / "b", progress=False)
    assert not set(other_run.train_seeds(0)) & set(seeds)


def test_training_logs_checkpoints_and_writes_final_statistics(tmp_path):
    trainer = AutoencoderTrainer(AutoencoderTrainConfig(**TINY), tmp_path, progress=False)
    state = trainer.train()
    assert state.step == 3 and [s for s, _ in state.history] == [2, 3]
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert "psnr_heldout" in records[1] and all(r["loss"] > 0 and r["mse"] > 0 for r in records)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-0000002", "step-0000003"]
    final = PatchAutoencoder.from_pretrained(tmp_path / "final")
    assert final.config.latents_mean != [0.0] * 48 and all(s > 0 for s in final.config.latents_std)
    for (name, a), (_, b) in zip(trainer.model.state_dict().items(), final.state_dict().items()):
        assert torch.equal(a, b), name
    # The statistics normalise latents of fresh frames to about zero mean, unit std per channel.
    frames = ProceduralFrames(32, 48).batch(range(5_000_000, 5_000_004), 2) * 2 - 1
    with torch.no_grad():
        z = final.eval().encode(frames[:, :, None]).latent_dist.mode()
    mean = torch.tensor(final.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(final.config.latents_std).view(1, -1, 1, 1, 1)
    normalised = ((z - mean) / std).transpose(0, 1).flatten(1)
    assert normalised.mean(1).abs().median() < 0.5 and (normalised.std(1).median() - 1).abs() < 0.5


def test_resumed_run_reaches_the_identical_state(tmp_path):
    config = AutoencoderTrainConfig(**TINY)
    straight = AutoencoderTrainer(config, tmp_path / "straight", progress=False)
    straight.train()
    interrupted = AutoencoderTrainer(config, tmp_path / "resumed", progress=False)
    assert interrupted.train(max_seconds=0.0).step == 1  # stops after one step with a checkpoint
    assert not (tmp_path / "resumed" / "final").exists()
    resumed = AutoencoderTrainer(config, tmp_path / "resumed", progress=False)
    resumed.train(resume="latest")
    assert resumed.state.step == 3 and resumed.state.history == straight.state.history
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    opt_a, opt_b = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert opt_a["param_groups"] == opt_b["param_groups"]
    for index, entry in opt_a["state"].items():
        for key, value in entry.items():
            assert torch.equal(value, opt_b["state"][index][key]), (index, key)


def test_resume_refuses_other_settings_and_missing_checkpoints(tmp_path):
    AutoencoderTrainer(AutoencoderTrainConfig(**TINY), tmp_path, progress=False).train(max_seconds=0.0)
    other = AutoencoderTrainer(AutoencoderTrainConfig(**{**TINY, "block_out_channels": (8, 8)}), tmp_path,
                               progress=False)
    with pytest.raises(ValueError, match="different settings"):
        other.train(resume="latest")
    with pytest.raises(ValueError, match="already holds checkpoints"):
        AutoencoderTrainer(AutoencoderTrainConfig(**TINY), tmp_path, progress=False).train()
    with pytest.raises(FileNotFoundError):
        AutoencoderTrainer(AutoencoderTrainConfig(**TINY), tmp_path / "empty", progress=False).train(resume="latest")


@pytest.mark.parametrize("change", [
    dict(height=30), dict(batch_size=3), dict(steps=0), dict(lr_schedule="step"), dict(learning_rate=0.0),
    dict(gradient_weight=-1.0), dict(min_lr_ratio=2.0),
])
def test_bad_settings_raise(change):
    with pytest.raises(ValueError):
        AutoencoderTrainConfig(**{**TINY, **change})
    with pytest.raises(ValueError, match="unknown"):
        AutoencoderTrainConfig.from_dict({"hieght": 64})


def test_learning_rate_schedule():
    config = AutoencoderTrainConfig(steps=100, warmup_steps=10, learning_rate=1e-3, min_lr_ratio=0.1)
    assert config.learning_rate_at(0) == pytest.approx(1e-4)
    assert config.learning_rate_at(10) == pytest.approx(1e-3)
    assert config.learning_rate_at(99) == pytest.approx(1e-4, rel=0.01)
    constant = AutoencoderTrainConfig(steps=100, warmup_steps=0, lr_schedule="constant")
    assert constant.learning_rate_at(99) == constant.learning_rate


def test_cli_trains_and_resumes(tmp_path, capsys):
    from mirage.cli import main

    args = ["train", "--stage", "autoencoder", "--output", str(tmp_path), "--height", "32", "--width", "48",
            "--ae-channels", "8", "16", "--ae-layers-per-block", "1", "--batch-size", "2", "--views-per-room", "2",
            "--eval-every", "1", "--steps", "2", "--no-progress", "--threads", "1"]
    assert main(args) == 0
    assert (tmp_path / "final" / "diffusion_pytorch_model.safetensors").is_file()
    assert "step 2/2" in capsys.readouterr().out
    # Resume with more steps: the saved settings come back from config.json.
    assert main(["train", "--stage", "autoencoder", "--output", str(tmp_path), "--steps", "3", "--resume",
                 "--no-progress"]) == 0
    assert "step 3/3" in capsys.readouterr().out
    assert main(["train", "--stage", "autoencoder", "--output", str(tmp_path / "x"), "--height", "30"]) == 2


def test_reconstruction_loss_terms():
    from mirage.train.autoencoder import reconstruction_loss

    target = torch.rand(2, 3, 8, 8) * 2 - 1
    latents = torch.ones(2, 48, 1, 1)
    plain = AutoencoderTrainConfig(**{**TINY, "latent_l2_weight": 0.0})
    loss, parts = reconstruction_loss(target.clone(), target, latents, plain)
    assert float(loss) == 0 and parts == {"l1": 0.0, "mse": 0.0}
    offset = target + 0.1  # a constant offset has no image gradient
    edges = AutoencoderTrainConfig(**{**TINY, "gradient_weight": 1.0, "latent_l2_weight": 0.5})
    loss, parts = reconstruction_loss(offset, target, latents, edges)
    assert parts["gradient"] == pytest.approx(0.0, abs=1e-6)
    assert float(loss) == pytest.approx(0.1 + 0.01 + 0.5, rel=1e-4)
    noisy = target + 0.1 * torch.randn_like(target)
    assert reconstruction_loss(noisy, target, latents, edges)[1]["gradient"] > 0.05
