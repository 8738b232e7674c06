"""``mirage train``: two-stage fine-tuning from the command line.

Examples::

    mirage train --stage autoencoder --output runs/ae --threads 1    # mirage-tiny v2's per-frame autoencoder
    mirage train --config tiny --stage 1 --steps 200 --output runs/tiny-s1
    mirage train --config tiny --stage 2 --model runs/tiny-s1/final --steps 200 --output runs/tiny-s2
    mirage train --config wan22_5b --data re10k --data-root /data/re10k --cache-dir /data/latents \\
        --output runs/wan-s1                       # several GPUs: accelerate launch -m mirage.cli train ...
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from mirage.train.config import LR_SCHEDULES, PRESETS, SIGMA_SAMPLINGS

__all__ = ["add_arguments", "main", "build_dataset"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("run")
    g.add_argument("--config", default="tiny", choices=tuple(PRESETS),
                   help="training preset: tiny (CPU), wan22_5b, or reference (wan22_5b with the reference code's "
                        "training choices: per-frame sigma, side branch frozen in stage 2; docs/DESIGN.md) "
                        "(default: tiny)")
    g.add_argument("--config-file", help="JSON TrainConfig; its values override the preset")
    g.add_argument("--output", required=True, help="run directory (checkpoints, loss log, final model)")
    g.add_argument("--model", help="world model to fine-tune: built-in name or directory (stage 2: stage 1's final/)")
    g.add_argument("--stage", type=_stage, choices=(0, 1, 2, "autoencoder"),
                   help="1: side branch only; 2: side branch + LoRA; 0: the whole transformer (pretraining a small "
                        "backbone from scratch, e.g. mirage-tiny; never for Wan2.2); autoencoder: the per-frame "
                        "PatchAutoencoder on fresh procedural rooms")
    g.add_argument("--steps", type=int, help="optimizer steps")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    g.add_argument("--lr", type=float, dest="learning_rate")
    g.add_argument("--warmup-steps", type=int)
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help="after warm-up: constant, or cosine down to 10%% at --steps (stages 0-2: default constant; "
                        "autoencoder: default cosine to 5%%)")
    g.add_argument("--lora-rank", type=int)
    g.add_argument("--sigma-sampling", choices=SIGMA_SAMPLINGS,
                   help="noise levels: one per clip, shifted logit-normal (default), or one per latent frame, shifted "
                        "uniform (the reference's)")
    g.add_argument("--flow-shift", type=float, help="shift of the sampled noise levels (default 5)")
    g.add_argument("--freeze-side-branch", action="store_true", default=None,
                   help="stage 2: train LoRA only, the side branch stays frozen (the reference's stage 2)")
    g.add_argument("--mixed-precision", choices=("no", "bf16"))
    g.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="weights of the frozen model (bfloat16 needs --mixed-precision bf16; trained weights stay float32)")
    g.add_argument("--gradient-checkpointing", action="store_true", default=None)
    g.add_argument("--seed", type=int)
    g.add_argument("--checkpoint-every", type=int)
    g.add_argument("--memory-frames", type=int, nargs="+", help="clip frames that seed the memory (default 0)")
    g.add_argument("--memory-dropout", type=float)
    g.add_argument("--no-train-camera-embedding", dest="train_camera_embedding", action="store_false", default=None,
                   help="stages 1 / 2: keep the camera embedding frozen (it was trained with the backbone in stage 0)")
    g.add_argument("--side-branch", choices=("on", "off"),
                   help="load the model with / without a side branch (stage 1 on a stage-0 model: on)")
    g.add_argument("--num-workers", type=int)
    g.add_argument("--vae-steps", type=int, default=0,
                   help="first train the (random, built-in) VAE for this many steps on the same clips")
    g.add_argument("--vae-lr", type=float, default=1e-3)
    g.add_argument("--resume", nargs="?", const="latest", help="continue from a checkpoint (default: the latest)")
    g.add_argument("--height", type=int, help="override the model's image height (multiple of 32)")
    g.add_argument("--width", type=int, help="override the model's image width (multiple of 32)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    from mirage.train.autoencoder import add_arguments as add_autoencoder_arguments

    add_autoencoder_arguments(parser)
    d = parser.add_argument_group("data")
    d.add_argument("--data", choices=("synthetic", "re10k", "memory-pool"), default="synthetic",
                   help="memory-pool: windows of an encoded memory-task pool (--pool; mirage.train.memory_pool)")
    d.add_argument("--pool", help="memory-task pool folder (--data memory-pool), encoded with this model's autoencoder")
    d.add_argument("--window-starts", type=int, nargs="+",
                   help="memory-pool: window starts in the target clip (default: windows that reach the return)")
    d.add_argument("--min-sources", type=int, default=8, help="memory-pool: fewest earlier-pass frames in a memory")
    d.add_argument("--real-pool", help="memory-pool: a second pool of real windows (python -m mirage.train.memory_pool "
                                       "render-tum), mixed in at --real-fraction")
    d.add_argument("--real-fraction", type=float, default=0.3,
                   help="memory-pool with --real-pool: share of the samples drawn from it (default 0.3)")
    d.add_argument("--real-window-starts", type=int, nargs="+",
                   help="memory-pool with --real-pool: window starts in its target windows (default: every start; a "
                        "recorded window has no turning point)")
    d.add_argument("--data-root", help="RealEstate10K-format folder (--data re10k)")
    d.add_argument("--frames", type=int, help="frames per clip, 1 + 4k (default: the model's chunk)")
    d.add_argument("--scenes", type=int, default=16, help="synthetic scenes (default 16)")
    d.add_argument("--clips-per-scene", type=int, default=3)
    d.add_argument("--scene-seed", type=int, default=0, help="first synthetic scene seed")
    d.add_argument("--num-dynamic", type=int, default=1, help="moving objects per synthetic scene")
    d.add_argument("--trajectories", nargs="+", default=["forward", "turn", "orbit"])
    d.add_argument("--frame-stride", type=int, default=1, help="re10k: take every n-th frame")
    d.add_argument("--windows-per-clip", type=int, default=1, help="re10k: windows per clip")
    d.add_argument("--depth-model", help="re10k: Depth Anything directory for clips without depth files")
    d.add_argument("--cache-dir", help="encode every clip once into this latent cache and train from it")


def _stage(value: str):
    return value if value == "autoencoder" else int(value)


def _train_config(args):
    from mirage.train.config import TrainConfig

    config = TrainConfig.preset(args.config)
    if args.config_file:
        with open(args.config_file) as f:
            config = TrainConfig.from_dict({**config.to_dict(), **json.load(f)})
    overrides = {k: getattr(args, k) for k in ("model", "stage", "steps", "batch_size", "grad_accum", "learning_rate",
                                               "warmup_steps", "lora_rank", "mixed_precision", "gradient_checkpointing",
                                               "seed", "checkpoint_every", "memory_dropout", "num_workers",
                                               "train_camera_embedding", "lr_schedule", "sigma_sampling",
                                               "flow_shift", "freeze_side_branch")
                 if getattr(args, k) is not None}
    if args.memory_frames is not None:
        overrides["memory_frames"] = tuple(args.memory_frames)
    return TrainConfig.from_dict({**config.to_dict(), **overrides})


def _pool_windows(pool, world_model, starts, min_sources: int, seed: int, every_start: bool = False):
    """The training windows of an encoded pool (``every_start``: default starts anywhere in the target clips)."""
    from mirage.train.memory_pool import MemoryWindowDataset, latent_dir, pool_files

    files = pool_files(latent_dir(pool, world_model), split="train")
    if not files:
        raise ValueError(f"no encoded training rooms for this model's autoencoder in {pool} "
                         "(python -m mirage.train.memory_pool encode)")
    if starts is None and every_start:
        F = world_model.chunk_latent_frames
        starts = list(range(MemoryWindowDataset(files[:1], F).num_target_frames - F + 1))
    return MemoryWindowDataset(files, world_model.chunk_latent_frames, starts=starts, min_sources=min_sources,
                               seed=seed)


def build_dataset(args, world_model):
    """The clip dataset the arguments describe, at the model's image size."""
    frames = args.frames or world_model.chunk_frames
    if args.data == "memory-pool":
        from mirage.train.memory_pool import MixedWindowDataset

        if not args.pool:
            raise ValueError("--data memory-pool needs --pool")
        dataset = _pool_windows(args.pool, world_model, args.window_starts, args.min_sources, args.seed or 0)
        if not args.real_pool:
            return dataset
        real = _pool_windows(args.real_pool, world_model, args.real_window_starts, args.min_sources, args.seed or 0,
                             every_start=True)
        return MixedWindowDataset(dataset, real, args.real_fraction, seed=args.seed or 0)
    if args.data == "synthetic":
        from mirage.data.synthetic import SyntheticClipDataset

        return SyntheticClipDataset(num_scenes=args.scenes, num_frames=frames, image_size=world_model.image_size,
                                    seed=args.scene_seed, trajectories=args.trajectories,
                                    clips_per_scene=args.clips_per_scene, num_dynamic=args.num_dynamic)
    from mirage.data.re10k import RealEstate10KDataset

    if not args.data_root:
        raise ValueError("--data re10k needs --data-root")
    provider = None
    if args.depth_model:
        from mirage.perception.depth import DepthAnythingProvider

        # Must predict depth in the poses' units: a metric model, or depth aligned offline and given as files.
        provider = DepthAnythingProvider.from_pretrained(args.depth_model, device=world_model.device)
    return RealEstate10KDataset(args.data_root, num_frames=frames, image_size=world_model.image_size,
                                frame_stride=args.frame_stride, windows_per_clip=args.windows_per_clip,
                                depth_provider=provider)


def _train_vae(args, config, world_model, dataset) -> None:
    from pathlib import Path

    from mirage.train.vae import VAETrainConfig, latent_statistics, set_latent_statistics, train_vae

    owned = Path(world_model.config.backbone).name == "backbone"  # a backbone/ we saved: continue training it
    if not (getattr(world_model.backbone, "random_weights", False) or owned):
        raise ValueError("--vae-steps trains a built-in VAE (e.g. the tiny one, or one trained before and saved in "
                         "the model's backbone/); this backbone is a pretrained one")
    Path(args.output).mkdir(parents=True, exist_ok=True)
    vae = world_model.backbone.vae
    losses = train_vae(vae, dataset, VAETrainConfig(steps=args.vae_steps, learning_rate=args.vae_lr,
                                                    seed=config.seed), log_path=Path(args.output) / "vae_loss_log.jsonl",
                       progress=not args.no_progress)
    set_latent_statistics(vae, *latent_statistics(vae, dataset))
    print(f"VAE trained {args.vae_steps} steps: loss {losses[0]:.4f} -> {losses[-1]:.4f}")


def main(args) -> int:
    import torch

    from mirage.train.export import load_world_model
    from mirage.train.trainer import Trainer

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.stage == "autoencoder":
        from mirage.train.autoencoder import main as train_autoencoder

        return train_autoencoder(args)
    try:
        config = _train_config(args)
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=not torch.cuda.is_available())
        sizes = {k: getattr(args, k) for k in ("height", "width") if getattr(args, k) is not None}
        if args.side_branch is not None:
            sizes["side_branch"] = args.side_branch == "on"
        world_model = load_world_model(config.model, device=accelerator.device,
                                       torch_dtype=getattr(torch, args.dtype), **sizes)
        dataset = build_dataset(args, world_model)
        if len(dataset) == 0:
            raise ValueError("the dataset holds no usable clip")
        if args.vae_steps:
            _train_vae(args, config, world_model, dataset)
        if args.cache_dir:
            from mirage.data.encoded_clips import CachedLatentDataset, LatentCache

            cache = LatentCache(args.cache_dir)
            keys = cache.build(dataset, world_model, config.memory_frames, progress=not args.no_progress)
            dataset = CachedLatentDataset(cache, keys)
        trainer = Trainer(config, dataset, args.output, world_model=world_model, accelerator=accelerator,
                          progress=not args.no_progress)
        result = trainer.train(resume_from=args.resume)
    except (ValueError, FileNotFoundError) as exc:
        print(f"mirage train: {exc}", file=sys.stderr)
        return 2
    if result.losses:
        first, last = result.losses[0][1], result.losses[-1][1]
        print(f"trained steps {result.losses[0][0]}..{result.losses[-1][0]}: loss {first:.4f} -> {last:.4f} "
              f"in {result.seconds:.1f} s; model in {result.final_dir}")
    else:
        print(f"nothing to do: already at step {trainer.step}; model in {result.final_dir}")
    return 0
