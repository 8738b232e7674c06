"""Trainer: loss goes down, stage 1 / 2 touch only what they should, resume continues the same curve, CLI."""

import json
import math

import pytest
import torch

from mirage.data.encoded_clips import encode_clip
from mirage.data.synthetic import SyntheticClipDataset
from mirage.train import TrainConfig, Trainer, export_world_model, load_world_model
from mirage.pipeline import MirageWorldModel

SIZE = dict(height=32, width=64)


@pytest.fixture(scope="module")
def clips():
    ds = SyntheticClipDataset(num_scenes=2, num_frames=5, image_size=(32, 64), trajectories=("forward", "orbit"),
                              num_objects=3, num_dynamic=1)
    return [ds[i] for i in range(len(ds))]


@pytest.fixture(scope="module")
def encoded(clips):
    # The VAE is slow on CPU even when tiny: encode once, train many times (items may be EncodedClips).
    wm = MirageWorldModel.from_pretrained("tiny", **SIZE)
    return [encode_clip(wm, c) for c in clips]


def _model():
    return MirageWorldModel.from_pretrained("tiny", **SIZE)


def _trainer(clips, tmp_path, **kw):
    cfg = TrainConfig(**{"steps": 3, "batch_size": 2, "learning_rate": 1e-3, "lora_rank": 4, **kw})
    return Trainer(cfg, clips, tmp_path, world_model=_model(), progress=False)


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_steps_reduce_loss_on_fixed_batch(encoded, tmp_path):
    trainer = _trainer(encoded, tmp_path, learning_rate=3e-3)
    batch = trainer.make_batch(encoded, 0)
    losses = [trainer.optimizer_step([batch]) for _ in range(8)]
    assert losses[-1] < 0.9 * losses[0], losses


def test_stage1_freezes_backbone_and_vae(clips, tmp_path):
    trainer = _trainer(clips[:1], tmp_path, steps=2, batch_size=1)  # raw clips: encoded on the fly
    wm = trainer.world_model
    backbone, vae = _snapshot(wm.transformer.backbone), _snapshot(wm.backbone.vae)
    side = _snapshot(wm.transformer.side_branch)
    trainer.train(export=False)
    assert all(torch.equal(v, wm.transformer.backbone.state_dict()[k]) for k, v in backbone.items())
    assert all(torch.equal(v, wm.backbone.vae.state_dict()[k]) for k, v in vae.items())
    assert any(not torch.equal(v, wm.transformer.side_branch.state_dict()[k]) for k, v in side.items())


def test_stage2_changes_only_lora_and_adapters(encoded, tmp_path):
    trainer = _trainer(encoded, tmp_path, stage=2, steps=2, mixed_precision="bf16", gradient_checkpointing=True,
                       grad_accum=2, batch_size=1)
    before = {n: p.detach().clone() for n, p in trainer.transformer.named_parameters()}
    trainer.train(export=False)
    changed = {n for n, p in trainer.transformer.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "nothing trained"
    allowed = lambda n: ".lora_" in n or n.startswith(("side_branch.", "camera_embedding."))  # noqa: E731
    assert all(allowed(n) for n in changed), sorted(n for n in changed if not allowed(n))[:5]
    assert any(".lora_B." in n for n in changed)


def test_stage0_trains_the_backbone_and_exports_it(encoded, tmp_path):
    trainer = _trainer(encoded, tmp_path / "a", stage=0, steps=2, checkpoint_every=1)
    wm = trainer.world_model
    backbone, vae = _snapshot(wm.transformer.backbone), _snapshot(wm.backbone.vae)
    side, camera = _snapshot(wm.transformer.side_branch), _snapshot(wm.transformer.camera_embedding)
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in optimised for p in wm.transformer.side_branch.parameters())
    result = trainer.train()
    assert any(not torch.equal(v, wm.transformer.backbone.state_dict()[k]) for k, v in backbone.items())
    # the camera-conditioned backbone trains; the side branch is neither fed nor changed (it comes in stage 1)
    assert any(not torch.equal(v, wm.transformer.camera_embedding.state_dict()[k]) for k, v in camera.items())
    assert all(torch.equal(v, wm.transformer.side_branch.state_dict()[k]) for k, v in side.items())
    assert all(torch.equal(v, wm.backbone.vae.state_dict()[k]) for k, v in vae.items())
    reloaded = load_world_model(result.final_dir)
    trained = wm.transformer.backbone.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in reloaded.transformer.backbone.state_dict().items())
    # resume restores the backbone from the checkpoint: the same curve as an uninterrupted run
    straight = _trainer(encoded, tmp_path / "b", stage=0, steps=3).train(export=False)
    _trainer(encoded, tmp_path / "c", stage=0, steps=2, checkpoint_every=2).train(export=False)
    resumed = _trainer(encoded, tmp_path / "c", stage=0, steps=3).train(resume_from="latest", export=False)
    assert resumed.losses[-1][1] == pytest.approx(straight.losses[-1][1], rel=1e-5, abs=1e-6)


def test_bf16_model_trains_float32_master_weights(encoded, tmp_path):
    wm = MirageWorldModel.from_pretrained("tiny", torch_dtype=torch.bfloat16, **SIZE)
    with pytest.raises(ValueError, match="mixed_precision"):
        Trainer(TrainConfig(steps=1), encoded, tmp_path, world_model=wm, progress=False)
    trainer = Trainer(TrainConfig(steps=2, batch_size=2, mixed_precision="bf16", stage=2, lora_rank=4), encoded,
                      tmp_path, world_model=wm, progress=False)
    trainable = [p for p in trainer.transformer.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert trainer.transformer.backbone.blocks[0].ffn.net[0].proj.weight.dtype == torch.bfloat16
    result = trainer.train(export=False)
    assert all(math.isfinite(loss) for _, loss in result.losses)


def test_resume_continues_the_same_loss_curve(encoded, tmp_path):
    clips = encoded
    straight = _trainer(clips, tmp_path / "a", steps=4, checkpoint_every=2).train(export=False)
    first = _trainer(clips, tmp_path / "b", steps=2, checkpoint_every=2).train(export=False)
    assert first.last_checkpoint.endswith("step-000002")
    resumed = _trainer(clips, tmp_path / "b", steps=4, checkpoint_every=2).train(resume_from="latest", export=False)
    assert [s for s, _ in resumed.losses] == [3, 4]
    expected = [loss for _, loss in straight.losses]
    got = [loss for _, loss in first.losses + resumed.losses]
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
    log = [json.loads(line) for line in (tmp_path / "b" / "loss_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4]


def test_resume_rejects_a_stage_mismatch(encoded, tmp_path):
    clips = encoded
    _trainer(clips, tmp_path, steps=1, checkpoint_every=1).train(export=False)
    trainer = _trainer(clips, tmp_path, stage=2, steps=2)
    with pytest.raises(ValueError, match="stage 1"):
        trainer.train(resume_from="latest", export=False)


def test_export_reloads_the_trained_model(encoded, tmp_path):
    clips = encoded
    trainer = _trainer(clips, tmp_path, stage=2, steps=2)
    result = trainer.train()
    reloaded = load_world_model(result.final_dir)
    batch = trainer.make_batch(clips[:1], 7)
    text = trainer.text_embedding()
    with torch.no_grad():
        trainer.transformer.eval()
        ours = trainer.transformer(batch.noisy, batch.timestep, text, **batch.model_kwargs())
        theirs = reloaded.transformer(batch.noisy, batch.timestep, text, **batch.model_kwargs())
        fresh = _model().transformer(batch.noisy, batch.timestep, text, **batch.model_kwargs())
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert not torch.allclose(ours, fresh, atol=1e-4)
    # Merged: no lora/ directory, and the stock loader reads it with the same outputs.
    export_world_model(trainer.world_model, tmp_path / "merged", merge=True)
    assert not (tmp_path / "merged" / "lora").exists()
    merged = MirageWorldModel.from_pretrained(str(tmp_path / "merged"))
    with torch.no_grad():
        out = merged.transformer(batch.noisy, batch.timestep, text, **batch.model_kwargs())
    assert torch.allclose(ours, out, atol=1e-4)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="stage"):
        TrainConfig(stage=3)
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8")
    with pytest.raises(ValueError, match="unknown training config keys"):
        TrainConfig.from_dict({"stpes": 3})


def test_cli_trains_end_to_end(tmp_path, capsys):
    from mirage.cli import main

    out = tmp_path / "run"
    argv = ["train", "--config", "tiny", "--steps", "3", "--batch-size", "1", "--output", str(out), "--scenes", "2",
            "--clips-per-scene", "1", "--frames", "5", "--height", "32", "--width", "64", "--no-progress",
            "--cache-dir", str(tmp_path / "cache"), "--checkpoint-every", "2"]
    assert main(argv + ["--vae-steps", "1"]) == 0
    printed = capsys.readouterr().out
    assert "VAE trained 1 steps" in printed and "loss" in printed
    assert (out / "final" / "backbone" / "vae").is_dir()
    assert (out / "final" / "mirage_world_model.json").is_file()
    assert len((out / "loss_log.jsonl").read_text().splitlines()) == 3
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2
    # stage 2 from stage 1's output, resuming nothing
    argv2 = argv[:]
    argv2[argv2.index(str(out))] = str(tmp_path / "run2")
    assert main(argv2 + ["--stage", "2", "--model", str(out / "final"), "--lora-rank", "4"]) == 0
    assert (tmp_path / "run2" / "final" / "lora" / "adapter_model.safetensors").is_file()
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2  # same VAE: stage 2 reused the cache
    stage1, stage2 = load_world_model(out / "final"), load_world_model(tmp_path / "run2" / "final")
    vae1, vae2 = stage1.backbone.vae.state_dict(), stage2.backbone.vae.state_dict()
    assert all(torch.equal(v, vae2[k]) for k, v in vae1.items())  # the trained VAE travels with the model
    assert main(["train", "--output", str(tmp_path / "x"), "--data", "re10k"]) == 2


def test_vae_training_reduces_reconstruction_loss(clips):
    from diffusers import AutoencoderKLWan

    from mirage.models.configs import vae_config
    from mirage.train.vae import VAETrainConfig, latent_statistics, set_latent_statistics, train_vae

    torch.manual_seed(0)
    vae = AutoencoderKLWan(**vae_config("tiny"))
    losses = train_vae(vae, clips[:1], VAETrainConfig(steps=6, batch_size=1, learning_rate=3e-3), progress=False)
    assert losses[-1] < losses[0]
    mean, std = latent_statistics(vae, clips[:1])
    set_latent_statistics(vae, mean, std)
    assert vae.config.latents_mean == pytest.approx(mean) and min(vae.config.latents_std) > 0
    assert all(not p.requires_grad for p in vae.parameters())


def test_lr_factor_warms_up_then_holds_or_follows_a_cosine():
    from mirage.train.config import MIN_LR_FRACTION, lr_factor

    assert [lr_factor(s, 4, 20) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_factor(19, 4, 20) == 1.0
    cosine = [lr_factor(s, 4, 20, "cosine") for s in range(25)]
    assert cosine[:4] == [0.25, 0.5, 0.75, 1.0]
    assert cosine[12] == pytest.approx(MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) / 2)  # half way down at the middle
    assert all(a >= b for a, b in zip(cosine[4:], cosine[5:])) and cosine[20] == pytest.approx(MIN_LR_FRACTION)
    assert cosine[24] == pytest.approx(MIN_LR_FRACTION)  # stays at the floor past the end
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")


def test_trainer_uses_the_cosine_schedule_and_a_sample_prediction(encoded, tmp_path):
    trainer = _trainer(encoded, tmp_path, stage=0, steps=4, warmup_steps=1, lr_schedule="cosine")
    trainer.world_model.config.prediction_type = "sample"
    batch = trainer.make_batch(encoded, 0)
    with torch.no_grad():
        prediction = trainer.model(batch.noisy, batch.timestep, trainer.text_embedding(), **batch.model_kwargs())
    from mirage.train.flow_matching import batch_flow_loss

    assert float(trainer.loss(batch)) == pytest.approx(float(batch_flow_loss(prediction, batch, "sample")), rel=1e-5)
    assert float(trainer.loss(batch)) != pytest.approx(float(batch_flow_loss(prediction, batch, "flow")), rel=1e-3)
    result = trainer.train(export=False)
    lrs = [json.loads(line)["lr"] for line in open(tmp_path / "loss_log.jsonl")]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] < lrs[1] < lrs[0] and len(result.losses) == 4
