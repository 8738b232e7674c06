"""Training the per-frame :class:`~mirage.models.patch_autoencoder.PatchAutoencoder` on fresh procedural frames.

Every batch comes from rooms never seen before (``Scene.random`` with a seed that only this batch uses, random
camera poses inside the room's free region), so the autoencoder cannot memorise rooms; held-out PSNR is measured on
rooms of a disjoint seed range. A batch is a pure function of (``seed``, step), which makes a resumed run identical
to an uninterrupted one without replaying any data.

Loss: L1 + MSE on [-1, 1] pixels (+ optional L1 on image gradients for sharper edges, + a tiny L2 on the raw
latents to keep their scale bounded; the encoder is deterministic, see patch_autoencoder.py). AdamW, linear warm-up
then cosine (or constant) learning rate.

Run directory::

    config.json                     the AutoencoderTrainConfig of the run
    log.jsonl                       one line per log interval: step, loss, l1, mse, lr, seconds [, psnr_heldout]
    checkpoints/step-000500/        model/ (save_pretrained: config.json + safetensors), optimizer.safetensors
                                    (AdamW moments + the torch RNG state), state.json (step, seconds, param groups)
    final/                          the trained autoencoder with measured latents_mean / latents_std

No pickle anywhere: optimizer tensors go to safetensors, the rest to json.

(About 470 lines: one stage, from its frames to its command line; the frame source and the loss are small and used
nowhere else.)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from mirage.camera import look_at
from mirage.metrics import psnr
from mirage.models.patch_autoencoder import PatchAutoencoder
from mirage.scenes import Scene
from mirage.durable import durable_replace

__all__ = ["AutoencoderTrainConfig", "ProceduralFrames", "AutoencoderTrainer", "reconstruction_loss",
           "measure_latent_statistics", "TRAIN_SEED_OFFSET", "HELDOUT_SEED_OFFSET", "STATS_SEED_OFFSET"]

# Room seed ranges. mirage's transformer trains on seeds from 0 and evaluates from 1_000_000 (data.synthetic);
# the autoencoder trains, evaluates and measures statistics on three further disjoint ranges.
TRAIN_SEED_OFFSET = 2_000_000
HELDOUT_SEED_OFFSET = 3_000_000
STATS_SEED_OFFSET = 4_000_000
_SEEDS_PER_RUN = 100_000_000  # runs with different ``seed`` draw from disjoint room ranges

CHECKPOINTS_DIR = "checkpoints"
FINAL_DIR = "final"
LOG_FILE = "log.jsonl"


@dataclass
class AutoencoderTrainConfig:
    """Everything a run needs; stored in ``config.json`` of the run directory."""

    height: int = 64
    width: int = 96
    spatial_stride: int = 8
    block_out_channels: tuple[int, ...] = (128, 192)
    layers_per_block: int = 2
    latent_channels: int = 48
    steps: int = 20_000
    batch_size: int = 8
    views_per_room: int = 4
    learning_rate: float = 1e-3
    min_lr_ratio: float = 0.05
    lr_schedule: str = "cosine"
    warmup_steps: int = 200
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    l1_weight: float = 1.0
    mse_weight: float = 1.0
    gradient_weight: float = 0.0
    latent_l2_weight: float = 1e-4
    eval_every: int = 500
    eval_rooms: int = 16
    eval_views: int = 4
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    stats_frames: int = 256
    seed: int = 0

    def __post_init__(self):
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        positive = ("height", "width", "spatial_stride", "latent_channels", "steps", "batch_size", "views_per_room",
                    "eval_every", "eval_rooms", "eval_views", "log_every", "checkpoint_every", "keep_checkpoints",
                    "stats_frames")
        bad = [name for name in positive if int(getattr(self, name)) < 1]
        if bad:
            raise ValueError(f"autoencoder training settings must be positive: {bad}")
        if self.height % self.spatial_stride or self.width % self.spatial_stride:
            raise ValueError(f"image size {self.height}x{self.width} must be a multiple of the spatial stride "
                             f"{self.spatial_stride}")
        if self.batch_size % self.views_per_room:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of views_per_room {self.views_per_room}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if not self.learning_rate > 0 or not 0 <= self.min_lr_ratio <= 1 or self.warmup_steps < 0:
            raise ValueError(f"bad learning rate settings: lr={self.learning_rate}, min_lr_ratio={self.min_lr_ratio}, "
                             f"warmup_steps={self.warmup_steps}")
        weights = ("weight_decay", "l1_weight", "mse_weight", "gradient_weight", "latent_l2_weight", "max_grad_norm")
        if any(getattr(self, name) < 0 for name in weights):
            raise ValueError(f"loss weights, weight decay and max_grad_norm must be >= 0: "
                             f"{ {name: getattr(self, name) for name in weights} }")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["block_out_channels"] = list(self.block_out_channels)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "AutoencoderTrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown autoencoder training settings {unknown}")
        return cls(**values)

    def build_model(self) -> PatchAutoencoder:
        """A freshly initialised autoencoder, reproducible by ``seed`` (the caller's random streams untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return PatchAutoencoder(z_dim=self.latent_channels, scale_factor_spatial=self.spatial_stride,
                                    block_out_channels=self.block_out_channels,
                                    layers_per_block=self.layers_per_block)

    def learning_rate_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine or constant."""
        if step < self.warmup_steps:
            return self.learning_rate * (step + 1) / self.warmup_steps
        if self.lr_schedule == "constant":
            return self.learning_rate
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps))
        floor = self.min_lr_ratio
        return self.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------
class ProceduralFrames:
    """Random views of random rooms, each room identified by its seed.

    ``views(seed, count)`` renders ``count`` views of ``Scene.random(seed)`` from camera poses drawn from the same
    seed: positions anywhere in the free region at 0.6-2.2 m, any yaw, pitch within +-35 degrees, horizontal field of
    view 60-90 degrees, 0-2 moving objects at random times. Returns (count, 3, H, W) in [0, 1].
    """

    def __init__(self, height: int, width: int):
        self.height, self.width = int(height), int(width)

    def views(self, seed: int, count: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(int(seed))

        def uniform(low: float, high: float) -> float:
            return low + (high - low) * float(torch.rand((), generator=generator))

        num_objects = int(torch.randint(3, 10, (), generator=generator))
        scene = Scene.random(int(seed), num_objects=num_objects,
                             num_dynamic=int(torch.randint(0, 3, (), generator=generator)),
                             window=bool(torch.rand((), generator=generator) < 0.7),
                             num_paintings=int(torch.randint(0, 5, (), generator=generator)))
        x0, y0, x1, y1 = scene.free_region
        top = min(2.2, scene.room_size[2] - 0.3)
        poses, intrinsics = [], []
        for _ in range(count):
            eye = (uniform(x0, x1), uniform(y0, y1), uniform(0.6, top))
            yaw, pitch = uniform(-math.pi, math.pi), math.radians(uniform(-35.0, 35.0))
            forward = (math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch))
            poses.append(look_at(eye, tuple(e + f for e, f in zip(eye, forward))))
            intrinsics.append(scene.default_intrinsics(self.height, self.width, fov_x_deg=uniform(60.0, 90.0)))
        times = [uniform(0.0, 10.0) for _ in range(count)]
        frame = scene.render_batch(torch.stack(intrinsics), torch.stack(poses), self.height, self.width, times=times)
        return frame.rgb

    def batch(self, seeds, views_per_room: int) -> torch.Tensor:
        """(len(seeds) * views_per_room, 3, H, W) in [0, 1], rooms in seed order."""
        return torch.cat([self.views(s, views_per_room) for s in seeds])


# ---------------------------------------------------------------------------------------------------
# Loss and statistics
# ---------------------------------------------------------------------------------------------------
def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, latents: torch.Tensor,
                        config: AutoencoderTrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted L1 + MSE (+ image-gradient L1, + latent L2). recon, target (N, 3, H, W) in [-1, 1]; latents raw."""
    diff = recon - target
    l1, mse = diff.abs().mean(), diff.pow(2).mean()
    loss = config.l1_weight * l1 + config.mse_weight * mse
    parts = {"l1": float(l1.detach()), "mse": float(mse.detach())}
    if config.gradient_weight > 0:
        grad = (diff[..., 1:, :] - diff[..., :-1, :]).abs().mean() + (diff[..., 1:] - diff[..., :-1]).abs().mean()
        loss = loss + config.gradient_weight * grad
        parts["gradient"] = float(grad.detach())
    if config.latent_l2_weight > 0:
        loss = loss + config.latent_l2_weight * latents.pow(2).mean()
    return loss, parts


@torch.no_grad()
def measure_latent_statistics(model: PatchAutoencoder, frames: torch.Tensor, batch: int = 32
                              ) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the raw latents of ``frames`` (N, 3, H, W) in [0, 1]."""
    was_training = model.training
    model.eval()
    latents = torch.cat([model.encode_images(frames[i:i + batch] * 2 - 1) for i in range(0, len(frames), batch)])
    model.train(was_training)
    flat = latents.transpose(0, 1).flatten(1).double()  # (C, N h w)
    return flat.mean(1).tolist(), flat.std(1).clamp_min(1e-4).tolist()


# ---------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------
@dataclass
class TrainState:
    step: int = 0
    seconds: float = 0.0
    history: list = field(default_factory=list)  # [(step, psnr_heldout)]


class AutoencoderTrainer:
    """Trains a :class:`PatchAutoencoder` into ``output`` (see the module docstring for the layout)."""

    def __init__(self, config: AutoencoderTrainConfig, output: str | os.PathLike, progress: bool = True):
        self.config = config
        self.output = Path(output)
        self.progress = progress
        self.frames = ProceduralFrames(config.height, config.width)
        # channels_last: oneDNN's convolutions run about 1.6x faster per training step on CPU in this layout.
        self.model = config.build_model().to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate,
                                           weight_decay=config.weight_decay)
        self.state = TrainState()
        self._heldout: torch.Tensor | None = None

    # ------------------------------------------------------------------ data
    def train_seeds(self, step: int) -> list[int]:
        """Room seeds of the batch of optimizer step ``step``: used by this step only."""
        rooms = self.config.batch_size // self.config.views_per_room
        first = TRAIN_SEED_OFFSET + self.config.seed * _SEEDS_PER_RUN + step * rooms
        return list(range(first, first + rooms))

    def heldout_frames(self) -> torch.Tensor:
        if self._heldout is None:
            seeds = range(HELDOUT_SEED_OFFSET, HELDOUT_SEED_OFFSET + self.config.eval_rooms)
            self._heldout = self.frames.batch(seeds, self.config.eval_views)
        return self._heldout

    # ------------------------------------------------------------------ steps
    def train_step(self, step: int) -> dict[str, float]:
        cfg = self.config
        self.model.train()
        target = self.frames.batch(self.train_seeds(step), cfg.views_per_room) * 2 - 1   # (B, 3, H, W)
        target = target.contiguous(memory_format=torch.channels_last)
        latents = self.model.encode_images(target)
        recon = self.model.decode_images(latents)
        loss, parts = reconstruction_loss(recon, target, latents, cfg)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"autoencoder loss became {value} at step {step + 1}")
        lr = cfg.learning_rate_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": value, "lr": lr, **parts}

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean PSNR (dB, [0, 1] pixels) of held-out frames through the autoencoder."""
        frames = self.heldout_frames()
        self.model.eval()
        recon = self.model(frames[:, :, None] * 2 - 1).sample[:, :, 0]
        self.model.train()
        return float(psnr(((recon + 1) / 2).clamp(0, 1), frames).mean())

    def train(self, resume: str | os.PathLike | None = None, max_seconds: float | None = None) -> TrainState:
        """Run until ``config.steps`` (then write ``final/``) or until ``max_seconds`` of wall time in this sitting
        (then checkpoint and return; resume later with ``resume="latest"``)."""
        cfg = self.config
        self.output.mkdir(parents=True, exist_ok=True)
        if resume is not None:
            self.load_checkpoint(self.latest_checkpoint() if str(resume) == "latest" else Path(resume))
        elif any((self.output / CHECKPOINTS_DIR).glob("step-*")):
            raise ValueError(f"{self.output} already holds checkpoints: resume (--resume) or choose a new output")
        with open(self.output / "config.json", "w") as f:
            json.dump(cfg.to_dict(), f, indent=2)
        start, seconds0 = time.perf_counter(), self.state.seconds
        window: list[dict] = []
        bar = tqdm(total=cfg.steps, initial=self.state.step, desc="autoencoder", disable=not self.progress)
        while self.state.step < cfg.steps:
            window.append(self.train_step(self.state.step))
            self.state.step += 1
            self.state.seconds = seconds0 + time.perf_counter() - start
            bar.update(1)
            step = self.state.step
            record = None
            if step % cfg.log_every == 0 or step == cfg.steps:
                record = {"step": step, **{k: sum(w[k] for w in window) / len(window) for k in window[0]},
                          "seconds": round(self.state.seconds, 1)}
                window = []
            if step % cfg.eval_every == 0 or step == cfg.steps:
                value = self.evaluate()
                self.state.history.append((step, value))
                record = {**(record or {"step": step, "seconds": round(self.state.seconds, 1)}),
                          "psnr_heldout": round(value, 3)}
                bar.set_postfix(psnr=f"{value:.2f}")
            if record is not None:
                with open(self.output / LOG_FILE, "a") as f:
                    f.write(json.dumps(record) + "\n")
            out_of_time = max_seconds is not None and time.perf_counter() - start >= max_seconds
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time:
                self.save_checkpoint()
            if out_of_time:
                break
        bar.close()
        if self.state.step >= cfg.steps:
            self.save_final()
        return self.state

    # ------------------------------------------------------------------ persistence
    def checkpoint_dir(self, step: int) -> Path:
        return self.output / CHECKPOINTS_DIR / f"step-{step:07d}"

    def latest_checkpoint(self) -> Path:
        found = sorted((self.output / CHECKPOINTS_DIR).glob("step-*")) if (self.output / CHECKPOINTS_DIR).is_dir() else []
        found = [p for p in found if (p / "state.json").is_file()]
        if not found:
            raise FileNotFoundError(f"no checkpoint to resume under {self.output / CHECKPOINTS_DIR}")
        return found[-1]

    def save_checkpoint(self) -> Path:
        """Write model, optimizer, RNG and step atomically (a temporary directory renamed into place)."""
        target = self.checkpoint_dir(self.state.step)
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.model.save_pretrained(tmp / "model")
        tensors, groups = _optimizer_to_tensors(self.optimizer)
        tensors["rng.torch"] = torch.get_rng_state()
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        with open(tmp / "state.json", "w") as f:
            json.dump({"step": self.state.step, "seconds": self.state.seconds, "history": self.state.history,
                       "param_groups": groups, "config": self.config.to_dict()}, f, indent=2)
        shutil.rmtree(target, ignore_errors=True)
        durable_replace(tmp, target)
        old = sorted((self.output / CHECKPOINTS_DIR).glob("step-???????"))[:-self.config.keep_checkpoints]
        for path in old:
            shutil.rmtree(path, ignore_errors=True)
        return target

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        path = Path(path)
        if not (path / "state.json").is_file():
            raise FileNotFoundError(f"{path} is not an autoencoder checkpoint (no state.json)")
        with open(path / "state.json") as f:
            saved = json.load(f)
        if saved["config"] != self.config.to_dict():
            changed = sorted(k for k in saved["config"] if saved["config"][k] != self.config.to_dict().get(k))
            if any(k not in ("steps", "eval_every", "log_every", "checkpoint_every", "keep_checkpoints") for k in changed):
                raise ValueError(f"checkpoint {path} was trained with different settings: {changed}")
        loaded = PatchAutoencoder.from_pretrained(path / "model")
        self.model.load_state_dict(loaded.state_dict())
        tensors = load_file(str(path / "optimizer.safetensors"))
        torch.set_rng_state(tensors.pop("rng.torch"))
        self.optimizer.load_state_dict(_optimizer_from_tensors(tensors, saved["param_groups"]))
        self.state = TrainState(step=int(saved["step"]), seconds=float(saved["seconds"]),
                                history=[tuple(h) for h in saved["history"]])

    def save_final(self) -> Path:
        """The trained autoencoder with latent statistics measured on fresh rooms, in ``final/``."""
        cfg = self.config
        rooms = -(-cfg.stats_frames // cfg.views_per_room)
        frames = self.frames.batch(range(STATS_SEED_OFFSET, STATS_SEED_OFFSET + rooms), cfg.views_per_room)
        mean, std = measure_latent_statistics(self.model, frames[: cfg.stats_frames])
        self.model.register_to_config(latents_mean=[float(x) for x in mean], latents_std=[float(x) for x in std])
        final = self.output / FINAL_DIR
        self.model.save_pretrained(final)
        return final


def _optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Optimizer state as flat safetensors entries ``state.<param index>.<name>`` plus json-able param groups."""
    state_dict = optimizer.state_dict()
    tensors = {}
    for index, entry in state_dict["state"].items():
        for name, value in entry.items():
            value = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
    return tensors, state_dict["param_groups"]


def _optimizer_from_tensors(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        prefix, index, name = key.split(".", 2)
        if prefix != "state":
            raise ValueError(f"unexpected entry {key!r} in an optimizer checkpoint")
        state.setdefault(int(index), {})[name] = value
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------------------------------------------
# Command line: ``mirage train --stage autoencoder``
# ---------------------------------------------------------------------------------------------------
_CLI_SETTINGS = {  # argparse dest -> AutoencoderTrainConfig field
    "height": "height", "width": "width", "spatial_stride": "spatial_stride", "ae_channels": "block_out_channels",
    "ae_layers_per_block": "layers_per_block", "steps": "steps", "batch_size": "batch_size",
    "views_per_room": "views_per_room", "learning_rate": "learning_rate", "warmup_steps": "warmup_steps",
    "lr_schedule": "lr_schedule", "gradient_weight": "gradient_weight", "eval_every": "eval_every",
    "checkpoint_every": "checkpoint_every", "seed": "seed",
}


def add_arguments(parser) -> None:
    """Options of ``--stage autoencoder`` that the other stages do not have (shared ones: --output, --steps,
    --batch-size, --lr, --warmup-steps, --lr-schedule, --seed, --checkpoint-every, --resume, --height, --width,
    --no-progress)."""
    g = parser.add_argument_group("autoencoder (--stage autoencoder: the per-frame PatchAutoencoder)")
    g.add_argument("--spatial-stride", type=int, help="pixels per latent cell (default 8)")
    g.add_argument("--ae-channels", type=int, nargs="+", help="channels per level (default 128 192)")
    g.add_argument("--ae-layers-per-block", type=int, help="residual blocks per level (default 2)")
    g.add_argument("--views-per-room", type=int, help="views rendered per fresh room (default 4)")
    g.add_argument("--gradient-weight", type=float, help="weight of the image-gradient L1 term (default 0)")
    g.add_argument("--eval-every", type=int, help="steps between held-out PSNR evaluations (default 500)")
    g.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this much wall time")
    g.add_argument("--threads", type=int, help="torch CPU threads (torch.set_num_threads)")


def config_from_args(args) -> AutoencoderTrainConfig:
    """Settings of the run: the run's own config.json when resuming (else the defaults), then the given options."""
    values = {}
    saved = Path(args.output) / "config.json"
    if getattr(args, "resume", None) and saved.is_file():
        with open(saved) as f:
            values = json.load(f)
    for dest, name in _CLI_SETTINGS.items():
        if getattr(args, dest, None) is not None:
            values[name] = getattr(args, dest)
    return AutoencoderTrainConfig.from_dict(values)


def main(args) -> int:
    import sys

    try:
        if getattr(args, "threads", None):
            torch.set_num_threads(int(args.threads))
        config = config_from_args(args)
        trainer = AutoencoderTrainer(config, args.output, progress=not args.no_progress)
        max_minutes = getattr(args, "max_minutes", None)
        state = trainer.train(resume=args.resume, max_seconds=None if max_minutes is None else 60.0 * max_minutes)
    except (ValueError, FileNotFoundError) as exc:
        print(f"mirage train: {exc}", file=sys.stderr)
        return 2
    last = f", held-out PSNR {state.history[-1][1]:.2f} dB" if state.history else ""
    where = (f"model in {Path(args.output) / FINAL_DIR}" if state.step >= config.steps
             else f"resume with --resume to continue to step {config.steps}")
    print(f"autoencoder at step {state.step}/{config.steps} after {state.seconds / 60:.1f} min{last}; {where}")
    return 0
