"""Memory-task pool: rendered once, encoded once, windows built as training and inference need them; the stage
rules on a stride-1 (per-frame autoencoder) model; the held-out check with memory controls."""

import json

import pytest
import torch

from mirage.models.patch_autoencoder import PatchAutoencoder
from mirage.pipeline import MirageWorldModel
from mirage.train import TrainConfig, Trainer
from mirage.train.heldout import heldout_losses
from mirage.train.memory_pool import (MemoryWindowDataset, encode_pool, latent_dir, load_room, pool_files,
                                      render_pool)
from mirage.train.tiny_v2 import build_backbone, world_model_config

SIZE = (32, 48)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    render_pool(root, "train", 2, SIZE, progress=False)
    render_pool(root, "heldout", 1, SIZE, progress=False)
    torch.manual_seed(0)
    ae = PatchAutoencoder(block_out_channels=(8, 16), layers_per_block=0, scale_factor_spatial=8)
    ae.save_pretrained(root / "ae")
    build_backbone(root / "ae", root / "backbone")
    cfg = world_model_config(root / "backbone", side_branch=True)
    cfg.height, cfg.width = SIZE
    (root / "wm").mkdir()
    (root / "wm" / "mirage_world_model.json").write_text(json.dumps(cfg.__dict__))
    model = MirageWorldModel.from_pretrained(str(root / "wm"))
    encode_pool(root, model, progress=False)
    return root, model


def test_pool_rooms_hold_the_task_and_the_models_latents(pool):
    root, model = pool
    raw = pool_files(root / "raw")
    assert len(raw) == 3 and len(pool_files(root / "raw", split="heldout")) == 1
    tensors, meta = load_room(raw[0])
    assert tensors["earlier_rgb"].dtype == torch.uint8 and tensors["target_rgb"].shape == (33, 3, *SIZE)
    encoded = pool_files(latent_dir(root, model))
    assert [p.name for p in encoded] == [p.name for p in raw]
    room, _ = load_room(encoded[0])
    # per-frame latents (stride 1) = encode_images of the stored frames, also for frames encoded once as duplicates
    expect = model.encode_images(tensors["target_rgb"].float() / 255)
    assert torch.allclose(room["target_latents"], expect, atol=1e-5)
    assert torch.equal(room["target_latents"][5], room["target_latents"][27])  # static room: frame T-1-t is frame t
    before = encoded[0].stat().st_mtime_ns
    encode_pool(root, model, progress=False)  # resumable: nothing re-encoded
    assert encoded[0].stat().st_mtime_ns == before


def test_windows_reach_the_return_and_are_deterministic(pool):
    root, model = pool
    files = pool_files(latent_dir(root, model), split="train")
    ds = MemoryWindowDataset(files, model.chunk_latent_frames, seed=3)
    assert ds.starts == list(range(9, 25))  # 9-frame windows that end after the turning point (frame 16)
    a, b = ds[5], MemoryWindowDataset(files, model.chunk_latent_frames, seed=3)[5]
    assert torch.equal(a.latents, b.latents) and torch.equal(a.source_latents, b.source_latents)
    assert a.latents.shape == (48, 9, 4, 6) and 8 <= a.source_latents.shape[0] <= 16
    s = int(a.name.rsplit("@", 1)[1])
    room, _ = load_room(files[5 % len(files)])
    assert torch.equal(a.cam_to_world, room["target_cam_to_world"][s:s + 9])
    with pytest.raises(ValueError, match="do not fit"):
        MemoryWindowDataset(files, 9, starts=[30])


def test_stages_on_the_pool_touch_only_what_they_should(pool, tmp_path):
    root, model = pool
    files = pool_files(latent_dir(root, model), split="train")
    ds = MemoryWindowDataset(files, model.chunk_latent_frames, starts=[0, 12, 24])
    wm = MirageWorldModel.from_pretrained(str(root / "wm"))
    # stage 0: backbone + camera embedding train; the side branch is neither fed nor optimised
    t0 = Trainer(TrainConfig(stage=0, steps=2, batch_size=2, learning_rate=1e-3), ds, tmp_path / "s0",
                 world_model=wm, progress=False)
    in_optimizer = {id(p) for g in t0.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in in_optimizer for p in wm.transformer.side_branch.parameters())
    assert t0.make_batch([ds[0]], 0).memory_latents is None
    side = {k: v.clone() for k, v in wm.transformer.side_branch.state_dict().items()}
    backbone = {k: v.clone() for k, v in wm.transformer.backbone.state_dict().items()}
    t0.train(export=False)
    assert all(torch.equal(v, wm.transformer.side_branch.state_dict()[k]) for k, v in side.items())
    assert any(not torch.equal(v, wm.transformer.backbone.state_dict()[k]) for k, v in backbone.items())
    # stage 1 with a frozen camera embedding: only the side branch changes, readouts come from the earlier pass
    t1 = Trainer(TrainConfig(stage=1, steps=2, batch_size=2, learning_rate=1e-3, train_camera_embedding=False), ds,
                 tmp_path / "s1", world_model=wm, progress=False)
    assert bool(t1.make_batch([ds[1]], 0).memory_mask.any())
    before = {n: p.detach().clone() for n, p in wm.transformer.named_parameters()}
    t1.train(export=False)
    changed = {n for n, p in wm.transformer.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("side_branch.") for n in changed), sorted(changed)[:5]


def test_heldout_controls(pool):
    root, model = pool
    files = pool_files(latent_dir(root, model), split="heldout")
    sample = MemoryWindowDataset(files, model.chunk_latent_frames, starts=[24], min_sources=99, repeats=1)[0]
    assert sample.source_latents.shape[0] == 16  # the whole earlier pass
    losses = heldout_losses(model, [sample], sigmas=(0.5,))
    assert set(losses) == {"true", "shuffled", "empty", "off"} and all(v > 0 for v in losses.values())
    # a zero-initialised side branch adds nothing yet: every memory gives the branch-off loss
    assert losses["true"] == pytest.approx(losses["off"], rel=1e-5)
    with pytest.raises(ValueError, match="controls"):
        heldout_losses(model, [sample], controls=("oracle",))


# ------------------------------------------------------------------------------------------------ real windows, mixed
TUM_SLICE = __import__("pathlib").Path(__file__).parent / "data" / "tum_fr1_rpy_slice"


@pytest.fixture(scope="module")
def real_pool(pool, tmp_path_factory):
    from mirage.train.memory_pool import render_tum_pool

    root = tmp_path_factory.mktemp("real_pool")
    # the slice's frames 0..33 only (the training part): 9-frame windows after 16 frames of history, every 8th start
    paths = render_tum_pool(root, f"{TUM_SLICE}@0:34", SIZE, progress=False, num_frames=9, min_history=16, step=8,
                            memory_frames=8)
    encode_pool(root, pool[1], progress=False)
    return root, paths


def test_real_windows_are_pool_rooms_of_the_training_part(pool, real_pool):
    root, paths = real_pool
    # starts 16 and 24 at stride 1, 16 at stride 2 (24 + 2 * 8 = 40 is past frame 33)
    assert [p.stem for p in paths] == ["tum_fr1_rpy_slice@16x1", "tum_fr1_rpy_slice@16x2", "tum_fr1_rpy_slice@24x1"]
    tensors, meta = load_room(paths[1])
    assert meta["split"] == "train" and meta["variant"] == "tum"
    assert tensors["target_rgb"].shape == (9, 3, *SIZE) and tensors["earlier_rgb"].shape == (8, 3, *SIZE)
    assert tensors["earlier_exclude"].dtype == torch.bool and tensors["earlier_exclude"].any()  # Kinect depth holes
    from mirage.data.tum import TUMSequence

    full = TUMSequence(TUM_SLICE)
    # target = frames 16, 18, .., 32; memory = 8 frames spread over frames 0..15, the last one frame 15
    assert torch.allclose(tensors["target_cam_to_world"], torch.from_numpy(full.cam_to_world[16:33:2]).float())
    assert torch.allclose(tensors["earlier_cam_to_world"][-1], torch.from_numpy(full.cam_to_world[15]).float())
    encoded = pool_files(latent_dir(root, pool[1]), split="train")
    assert [p.name for p in encoded] == [p.name for p in paths]
    mtime = paths[0].stat().st_mtime_ns
    from mirage.train.memory_pool import render_tum_pool

    render_tum_pool(root, f"{TUM_SLICE}@0:34", SIZE, progress=False, num_frames=9, min_history=16, step=8,
                    memory_frames=8)
    assert paths[0].stat().st_mtime_ns == mtime  # resumable: nothing rewritten


def test_mixed_windows_draw_the_stated_share_deterministically(pool, real_pool):
    from mirage.train.memory_pool import MixedWindowDataset

    root, model = pool
    procedural = MemoryWindowDataset(pool_files(latent_dir(root, model), split="train"), model.chunk_latent_frames,
                                     repeats=1000)
    real = MemoryWindowDataset(pool_files(latent_dir(real_pool[0], model)), model.chunk_latent_frames, starts=[0])
    for fraction, low, high in ((0.0, 0, 0), (1.0, 1, 1), (0.3, 0.26, 0.34)):
        mix = MixedWindowDataset(procedural, real, fraction, seed=4)
        assert len(mix) == len(procedural)
        sources = [mix.source(i) for i in range(len(mix))]
        share = sum(w == "secondary" for w, _ in sources) / len(mix)
        assert low <= share <= high, (fraction, share)  # 2000 items: 0.3 +- 4 standard deviations
        assert all(i == n for n, (w, i) in enumerate(sources) if w == "primary")
        assert all(0 <= i < len(real) for w, i in sources if w == "secondary")
    mix = MixedWindowDataset(procedural, real, 0.3, seed=4)
    n = next(i for i in range(len(mix)) if mix.source(i)[0] == "secondary")
    a, b = mix[n], MixedWindowDataset(procedural, real, 0.3, seed=4)[n]
    assert a.name.startswith("tum_fr1_rpy_slice@") and torch.equal(a.latents, b.latents)
    assert torch.equal(a.source_latents, b.source_latents)
    with pytest.raises(ValueError, match="fraction"):
        MixedWindowDataset(procedural, real, 1.5)


def test_train_cli_mixes_a_real_pool(pool, real_pool, tmp_path):
    import argparse

    from mirage.train.cli import add_arguments, build_dataset
    from mirage.train.memory_pool import MixedWindowDataset

    root, model = pool
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--output", str(tmp_path), "--data", "memory-pool", "--pool", str(root),
                              "--real-pool", str(real_pool[0]), "--real-fraction", "0.4"])
    mix = build_dataset(args, model)
    assert isinstance(mix, MixedWindowDataset) and mix.fraction == 0.4
    assert mix.primary.starts == list(range(9, 25)) and mix.secondary.starts == [0]  # real: every start (T = 9)
    assert len(mix.secondary.files) == 3
    alone = build_dataset(parser.parse_args(["--output", str(tmp_path), "--data", "memory-pool", "--pool",
                                             str(root)]), model)
    assert isinstance(alone, MemoryWindowDataset)
