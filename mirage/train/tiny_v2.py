"""mirage-tiny v2 (issue 10): the backbone directory and world-model config the training stages start from.

The backbone pairs a randomly initialised tiny Wan transformer (:data:`mirage.models.configs.TINY_V2_TRANSFORMER`)
with the trained per-frame :class:`~mirage.models.patch_autoencoder.PatchAutoencoder` (temporal stride 1, so a frame
encoded alone is exactly its latent inside a clip and the memory holds target-type latents by construction).
Stage 0 trains that transformer and the camera embedding from scratch, stages 1 and 2 the side branch (and LoRA).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from mirage.pipeline.config import WorldModelConfig
from mirage.pipeline.prediction import PREDICTION_TYPES

__all__ = ["prepare_autoencoder", "build_backbone", "world_model_config", "init_world_model", "ship", "IMAGE_SIZE",
           "CHUNK_FRAMES"]

IMAGE_SIZE = (64, 96)
# 9 frames = 9 latent frames at stride 1: 1 context + 8 generated, so a 33-frame rollout is 4 chunks.
CHUNK_FRAMES = 9


def prepare_autoencoder(source: str | os.PathLike, output: str | os.PathLike, stats_frames: int = 256) -> Path:
    """Copy a trained PatchAutoencoder to ``output``; when its config has no measured latent statistics (a
    checkpoint taken before the end of the autoencoder run, whose ``final/`` would have them), measure them on
    ``stats_frames`` views of fresh rooms as the autoencoder trainer does at the end. Returns ``output``."""
    from mirage.models.patch_autoencoder import PatchAutoencoder
    from mirage.train.autoencoder import STATS_SEED_OFFSET, ProceduralFrames, measure_latent_statistics

    model = PatchAutoencoder.from_pretrained(str(source)).eval()
    mean, std = list(model.config.latents_mean), list(model.config.latents_std)
    if all(m == 0.0 for m in mean) and all(s == 1.0 for s in std):
        views = 4
        rooms = range(STATS_SEED_OFFSET, STATS_SEED_OFFSET + -(-stats_frames // views))
        frames = ProceduralFrames(*IMAGE_SIZE).batch(rooms, views)[:stats_frames]
        mean, std = measure_latent_statistics(model, frames)
        model.register_to_config(latents_mean=[float(x) for x in mean], latents_std=[float(x) for x in std])
    model.save_pretrained(str(output))
    return Path(output)


def build_backbone(autoencoder: str | os.PathLike, output: str | os.PathLike, seed: int = 0,
                   **transformer_overrides) -> Path:
    """Write a backbone directory (diffusers layout) = random v2 transformer (``seed``; ``transformer_overrides``
    change its :data:`~mirage.models.configs.TINY_V2_TRANSFORMER` shape, e.g. ``num_attention_heads=8,
    ffn_dim=768``) + the given autoencoder."""
    from diffusers import UniPCMultistepScheduler, WanTransformer3DModel

    from mirage.models.backbone import Backbone
    from mirage.models.configs import TINY_V2_TRANSFORMER, max_sequence_length, scheduler_config
    from mirage.models.patch_autoencoder import PatchAutoencoder

    vae = PatchAutoencoder.from_pretrained(str(autoencoder)).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = WanTransformer3DModel(**{**copy.deepcopy(TINY_V2_TRANSFORMER), **transformer_overrides}).eval()
    backbone = Backbone(transformer, vae, UniPCMultistepScheduler(**scheduler_config()),
                        max_sequence_length=max_sequence_length("tiny"), name_or_path="mirage-tiny-v2",
                        random_weights=True)
    backbone.save_pretrained(output)
    return Path(output)


# Denoising steps the shipped model samples with by default. Measured on held-out rooms (model card): 4 steps
# reproduce the memory better than 20 (PSNR_C 17.35 vs 16.57 dB on 8 rooms) and take a fifth of the time; more
# steps add texture this small model invents, not detail it remembers. Any count can be asked for per call.
SAMPLING_STEPS = 4


def world_model_config(backbone: str | os.PathLike, side_branch: bool, prediction_type: str = "sample"
                       ) -> WorldModelConfig:
    """The v2 world-model config on ``backbone``: 64x96, 9-frame chunks (stride 1), memory of target-type latents
    written back as the chunks' denoised latents (at stride 1 the same type as a sensor keyframe's encoding); the
    transformer predicts clean latents ("sample", v2.1; v2.0 predicted the flow: :mod:`mirage.pipeline.prediction`)."""
    return WorldModelConfig(backbone=str(backbone), height=IMAGE_SIZE[0], width=IMAGE_SIZE[1],
                            chunk_frames=CHUNK_FRAMES,
                            context_latent_frames=1, side_branch=side_branch, camera=True, memory_latents="denoised",
                            memory_latent_type="target", prediction_type=prediction_type,
                            num_inference_steps=SAMPLING_STEPS)


def init_world_model(autoencoder: str | os.PathLike, output: str | os.PathLike, seed: int = 0,
                     prediction_type: str = "sample", **transformer_overrides) -> Path:
    """``output/`` = a world-model directory for stage 0: ``autoencoder/`` (with latent statistics),
    ``backbone/`` (random v2 transformer + that autoencoder) and the v2 config without side branch."""
    import json
    from dataclasses import asdict

    from mirage.pipeline.config import CONFIG_NAME

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    prepare_autoencoder(autoencoder, output / "autoencoder")
    build_backbone(output / "autoencoder", output / "backbone", seed=seed, **transformer_overrides)
    with open(output / CONFIG_NAME, "w") as f:
        json.dump(asdict(world_model_config("backbone", side_branch=False, prediction_type=prediction_type)), f,
                  indent=2)
    return output


def ship(model: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Fold stage 2's LoRA into the backbone and write the self-contained model to ``output`` (safetensors only)."""
    import shutil

    from mirage.pipeline import MirageWorldModel
    from mirage.train.export import export_world_model

    world_model = MirageWorldModel.from_pretrained(str(model))
    output = Path(output)
    for sub in ("backbone", "side_branch", "camera_embedding", "lora"):
        shutil.rmtree(output / sub, ignore_errors=True)
    export_world_model(world_model, output, merge=True)
    return output


def main(argv=None) -> int:
    """``python -m mirage.train.tiny_v2 init|ship ...`` (steps of mirage/assets/mirage-tiny/train.sh)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mirage.train.tiny_v2")
    sub = parser.add_subparsers(dest="command", required=True)
    i = sub.add_parser("init", help="stage 0's starting model from a trained PatchAutoencoder directory")
    i.add_argument("--autoencoder", required=True)
    i.add_argument("--output", required=True)
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--prediction-type", choices=PREDICTION_TYPES, default="sample",
                   help="what the transformer outputs: the clean latents (default, v2.1) or the flow (v2.0)")
    i.add_argument("--num-heads", type=int, help="attention heads of 32 channels (default 4; 8 = 256 hidden)")
    i.add_argument("--ffn-dim", type=int, help="feed-forward width (default 384)")
    s = sub.add_parser("ship", help="merge LoRA and write the shipped model")
    s.add_argument("--model", required=True)
    s.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    if args.command == "init":
        path = init_world_model(args.autoencoder, args.output, args.seed, args.prediction_type,
                                **{k: v for k, v in (("num_attention_heads", args.num_heads),
                                                     ("ffn_dim", args.ffn_dim)) if v})
    else:
        path = ship(args.model, args.output)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
