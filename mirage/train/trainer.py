"""Two-stage fine-tuning of a :class:`~mirage.pipeline.MirageWorldModel` with flow matching.

Stage 0 (a small backbone with no pretrained video model behind it, mirage-tiny) trains the camera-conditioned
backbone: transformer + camera embedding, no memory. Stage 1 trains the memory side branch (and the camera
embedding when ``TrainConfig.train_camera_embedding``, for a backbone that never had one); the backbone and VAE
are frozen (their weights stay bit-identical). Stage 2 attaches LoRA to the backbone's self-attention
(:func:`mirage.models.lora.add_lora`) and trains LoRA + side branch (+ camera embedding, as in stage 1); with
``TrainConfig.freeze_side_branch`` it trains LoRA only and the side branch stays bit-identical (the reference's
"lora" stage).

Runs on CPU and GPUs through ``accelerate`` (device placement, bf16 autocast, several GPUs with
``accelerate launch``). Every source of randomness of a step (which clips, noise, noise levels, memory
dropout) is derived from the seed and the step number, so a run resumed from a checkpoint continues the
same loss curve as an uninterrupted one.

Output directory::

    trainer_config.json       the TrainConfig of the run
    loss_log.jsonl            one line per logged step: step, loss, lr, seconds
    checkpoints/step-000050/  adapters/ (safetensors: side_branch/, camera_embedding/, lora/) + training_state.pt
    final/                    a world-model directory (MirageWorldModel.from_pretrained reads it)

``training_state.pt`` (optimizer, LR schedule, RNG states, step) is written by this trainer for its own resume
and read with ``torch.load(weights_only=True)``; treat checkpoint directories as trusted local files all
the same. Weights themselves are only ever stored as safetensors.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from mirage.data.clip import Clip
from mirage.data.encoded_clips import EncodedClip, encode_clip
from mirage.models.checkpoints import load_adapters, save_adapters
from mirage.models.lora import add_lora, lora_adapters
from mirage.train.conditioning import TrainingBatch, training_batch
from mirage.train.config import TrainConfig, lr_factor
from mirage.train.export import export_world_model
from mirage.train.flow_matching import batch_flow_loss
from mirage.durable import durable_replace

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "TrainResult", "StepSampler", "trainable_parameter_names", "LORA_ADAPTER"]

LORA_ADAPTER = "default"
STATE_FILE = "training_state.pt"
BACKBONE_FILE = "backbone_transformer.safetensors"  # stage 0 checkpoints: the trained backbone too


class StepSampler(Sampler[int]):
    """Endless, deterministic index stream: epoch ``e`` is a permutation seeded by ``seed + e``.

    Process ``rank`` of ``world_size`` takes micro-batches ``m * world_size + rank`` of ``batch_size``
    consecutive stream positions, starting at micro-step ``start_micro_step``; so the data a step sees
    depends only on (seed, step), never on whether the run was resumed.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, start_micro_step: int = 0, rank: int = 0,
                 world_size: int = 1):
        if num_items < 1:
            raise ValueError("the training dataset is empty")
        self.n, self.batch_size, self.seed = int(num_items), int(batch_size), int(seed)
        self.start, self.rank, self.world_size = int(start_micro_step), int(rank), int(world_size)
        self._perms: dict[int, torch.Tensor] = {}

    def _item(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))}
        return int(self._perms[epoch][offset])

    def __iter__(self) -> Iterator[int]:
        m = self.start
        while True:
            first = (m * self.world_size + self.rank) * self.batch_size
            for j in range(self.batch_size):
                yield self._item(first + j)
            m += 1

    def __len__(self) -> int:  # endless; DataLoader only needs a number
        return 2**62


@dataclass
class TrainResult:
    """losses: (step, loss) of every optimizer step run in this call; final_dir: the exported model or None."""

    losses: list[tuple[int, float]] = field(default_factory=list)
    final_dir: str | None = None
    seconds: float = 0.0
    last_checkpoint: str | None = None


def trainable_parameter_names(transformer) -> list[str]:
    return [n for n, p in transformer.named_parameters() if p.requires_grad]


def _collate(items):
    return list(items)


class Trainer:
    """Fine-tunes ``world_model`` (or the model named by ``config.model``) on ``dataset``.

    dataset: items are :class:`~mirage.data.Clip` (encoded on the fly) or
    :class:`~mirage.data.encoded_clips.EncodedClip` (from a latent cache). Clips must have the model's image
    size and ``world_model.chunk_frames`` frames or fewer (1 + s k for the model's ``temporal_stride`` s).
    """

    def __init__(self, config: TrainConfig, dataset: Dataset, output_dir: str | os.PathLike, world_model=None,
                 accelerator=None, progress: bool = True):
        from accelerate import Accelerator

        self.config = config
        self.dataset = dataset
        self.output_dir = Path(output_dir)
        self.progress = progress
        # Mixed precision is our own autocast (not Accelerator(mixed_precision=...)): accelerate keeps one
        # process-wide state, and runs in one process (tests, notebooks) may differ in precision.
        self.accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
        torch.manual_seed(config.seed)
        if world_model is None:
            from mirage.pipeline import MirageWorldModel

            world_model = MirageWorldModel.from_pretrained(config.model, device=self.accelerator.device)
        self.world_model = world_model
        self.transformer = world_model.transformer
        if world_model.dtype != torch.float32 and config.mixed_precision != "bf16":
            raise ValueError(f"a {world_model.dtype} model trains with mixed_precision='bf16' (float32 master "
                             "weights for what trains, autocast for the rest)")
        self.context_latent_frames = (config.context_latent_frames if config.context_latent_frames is not None
                                      else world_model.config.context_latent_frames)
        self._setup_trainable()
        params = [p for p in self.transformer.parameters() if p.requires_grad]
        if not params:
            raise ValueError("nothing to train: the model has no side branch, camera embedding or LoRA")
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, betas=config.adam_betas,
                                           weight_decay=config.weight_decay)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, config.warmup_steps, config.steps, config.lr_schedule))
        self.model, self.optimizer = self.accelerator.prepare(self.transformer, self.optimizer)
        self.step = 0
        self._text = None

    # ------------------------------------------------------------------ setup
    def _setup_trainable(self) -> None:
        """Paper-style stages: 0 = the camera-conditioned backbone (transformer + camera embedding; a side branch, if
        the model has one, stays frozen and unfed); 1 = the side branch on the frozen backbone (+ the camera
        embedding when ``train_camera_embedding``); 2 = 1 + LoRA on the backbone's self-attention (without the
        side branch when ``freeze_side_branch``)."""
        transformer, cfg = self.transformer, self.config
        transformer.requires_grad_(False)
        if cfg.stage == 0:
            transformer.backbone.requires_grad_(True)
            if transformer.camera_embedding is not None:
                transformer.camera_embedding.requires_grad_(True)
        else:
            if transformer.side_branch is None:
                raise ValueError(f"stage {cfg.stage} trains the side branch, and this model has none "
                                 "(load it with side_branch=True)")
            if cfg.stage == 2 and LORA_ADAPTER not in lora_adapters(transformer):
                add_lora(transformer, rank=cfg.lora_rank, alpha=cfg.lora_alpha, adapter_name=LORA_ADAPTER)
            transformer.side_branch.requires_grad_(not (cfg.stage == 2 and cfg.freeze_side_branch))
            if cfg.train_camera_embedding and transformer.camera_embedding is not None:
                transformer.camera_embedding.requires_grad_(True)
            if cfg.stage == 2:
                for name, p in transformer.backbone.named_parameters():
                    if ".lora_A." in name or ".lora_B." in name:
                        p.requires_grad_(True)
        # Master weights in float32 even when the frozen model runs in bf16 (--dtype bfloat16): AdamW updates
        # of bf16 weights lose most of their bits. Autocast (mixed_precision="bf16") casts them per op.
        for p in transformer.parameters():
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
        # The VAE never trains; keep it out of autograd entirely.
        self.world_model.backbone.vae.requires_grad_(False)
        if cfg.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        transformer.train()

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def text_embedding(self) -> torch.Tensor:
        if self._text is None:
            self._text = self.world_model.backbone.encode_prompt("").to(self.device)
        return self._text

    # ------------------------------------------------------------------ one step
    def _encoded(self, items) -> list[EncodedClip]:
        out = []
        for item in items:
            if isinstance(item, Clip):
                item = encode_clip(self.world_model, item, self.config.memory_frames)
            elif not isinstance(item, EncodedClip):
                raise ValueError(f"dataset items must be Clip or EncodedClip, got {type(item).__name__}")
            out.append(item)
        return out

    def micro_generator(self, micro_step: int) -> torch.Generator:
        rank = self.accelerator.process_index
        return torch.Generator().manual_seed((self.config.seed * 1_000_003 + micro_step) * 64 + rank)

    def make_batch(self, items, micro_step: int) -> TrainingBatch:
        cfg = self.config
        with torch.no_grad():
            return training_batch(self.world_model, self._encoded(items), self.micro_generator(micro_step),
                                  context_latent_frames=self.context_latent_frames, logit_mean=cfg.logit_mean,
                                  logit_std=cfg.logit_std, flow_shift=cfg.flow_shift,
                                  memory_dropout=cfg.memory_dropout, use_memory=cfg.stage > 0,
                                  sigma_sampling=cfg.sigma_sampling)

    def loss(self, batch: TrainingBatch) -> torch.Tensor:
        """Flow-matching loss of one batch (float32 scalar, with grad)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.mixed_precision == "bf16"):
            prediction = self.model(batch.noisy, batch.timestep, self.text_embedding(), **batch.model_kwargs())
        return batch_flow_loss(prediction, batch, self.world_model.config.prediction_type)

    def optimizer_step(self, batches: list[TrainingBatch]) -> float:
        """Accumulate gradients over ``batches`` (one per micro-step), clip, step; returns the mean loss."""
        total = 0.0
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            ctx = nullcontext() if last or self.accelerator.num_processes == 1 else self.accelerator.no_sync(self.model)
            with ctx:
                loss = self.loss(batch)
                self.accelerator.backward(loss / len(batches))
            total += float(loss.detach())
        if self.config.max_grad_norm is not None:
            self.accelerator.clip_grad_norm_([p for p in self.transformer.parameters() if p.requires_grad],
                                             self.config.max_grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        mean = torch.tensor(total / len(batches), device=self.device)
        return float(self.accelerator.reduce(mean, reduction="mean"))

    # ------------------------------------------------------------------ loop
    def train(self, resume_from: str | os.PathLike | None = None, export: bool = True,
              callback: Callable[[int, float], None] | None = None) -> TrainResult:
        """Run until ``config.steps`` optimizer steps are done (continuing a checkpoint if given, or "latest")."""
        cfg, acc = self.config, self.accelerator
        if resume_from is not None:
            path = self.latest_checkpoint() if str(resume_from) == "latest" else Path(resume_from)
            if path is None:
                logger.info("no checkpoint to resume from in %s; starting fresh", self.output_dir)
            else:
                self.load_checkpoint(path)
                self._truncate_log()
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(self.output_dir / "trainer_config.json")
        sampler = StepSampler(len(self.dataset), cfg.batch_size, cfg.seed, self.step * cfg.grad_accum,
                              acc.process_index, acc.num_processes)
        loader = DataLoader(self.dataset, batch_size=cfg.batch_size, sampler=sampler, collate_fn=_collate,
                            num_workers=cfg.num_workers)
        batches = iter(loader)
        result = TrainResult()
        start = time.perf_counter()
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"stage {cfg.stage}",
                   disable=not (self.progress and acc.is_local_main_process))
        log_path = self.output_dir / "loss_log.jsonl"
        try:
            while self.step < cfg.steps:
                micro0 = self.step * cfg.grad_accum
                micro = [self.make_batch(next(batches), micro0 + a) for a in range(cfg.grad_accum)]
                loss = self.optimizer_step(micro)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss} at step {self.step + 1}")
                self.step += 1
                result.losses.append((self.step, loss))
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if acc.is_main_process and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                    with open(log_path, "a") as f:
                        f.write(json.dumps({"step": self.step, "loss": loss, "lr": self.lr_scheduler.get_last_lr()[0],
                                            "seconds": round(time.perf_counter() - start, 3)}) + "\n")
                if callback is not None:
                    callback(self.step, loss)
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    result.last_checkpoint = str(self.save_checkpoint())
        finally:
            bar.close()
        result.last_checkpoint = str(self.save_checkpoint()) if cfg.checkpoint_every else result.last_checkpoint
        if export:
            result.final_dir = str(self.export(self.output_dir / "final"))
        result.seconds = time.perf_counter() - start
        return result

    def _truncate_log(self) -> None:
        """Drop loss-log lines past the resumed step (a run killed between checkpoints logged steps it redoes)."""
        log_path = self.output_dir / "loss_log.jsonl"
        if self.accelerator.is_main_process and log_path.is_file():
            lines = [line for line in log_path.read_text().splitlines() if line.strip()]
            kept = [line for line in lines if json.loads(line)["step"] <= self.step]
            if len(kept) != len(lines):
                log_path.write_text("".join(line + "\n" for line in kept))

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_dir(self, step: int | None = None) -> Path:
        return self.output_dir / "checkpoints" / f"step-{self.step if step is None else step:06d}"

    def latest_checkpoint(self) -> Path | None:
        root = self.output_dir / "checkpoints"
        done = sorted(p for p in root.glob("step-*") if (p / STATE_FILE).is_file()) if root.is_dir() else []
        return done[-1] if done else None

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path:
        """Adapters (safetensors) + optimizer / schedule / RNG state; keeps the newest ``keep_checkpoints``."""
        acc = self.accelerator
        path = Path(path) if path is not None else self.checkpoint_dir()
        acc.wait_for_everyone()
        if acc.is_main_process:
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            save_adapters(self.transformer, tmp / "adapters", lora_adapter=LORA_ADAPTER)
            if self.config.stage == 0:
                save_file({k: v.detach().contiguous() for k, v in self.transformer.backbone.state_dict().items()},
                          str(tmp / BACKBONE_FILE))
            torch.save({"step": self.step, "optimizer": self.optimizer.state_dict(),
                        "lr_scheduler": self.lr_scheduler.state_dict(), "rng": _rng_state(),
                        "config": json.dumps(self.config.to_dict())}, tmp / STATE_FILE)
            shutil.rmtree(path, ignore_errors=True)
            durable_replace(tmp, path)
            self._prune_checkpoints()
        acc.wait_for_everyone()
        return path

    def _prune_checkpoints(self) -> None:
        root = self.output_dir / "checkpoints"
        done = sorted(p for p in root.glob("step-*") if (p / STATE_FILE).is_file() and not p.name.endswith(".tmp"))
        for old in done[: max(0, len(done) - self.config.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore adapters, optimizer, schedule, RNG and step from a checkpoint written by this trainer."""
        path = Path(path)
        state_file = path / STATE_FILE
        if not state_file.is_file() or not (path / "adapters").is_dir():
            raise ValueError(f"{path} is not a training checkpoint (needs adapters/ and {STATE_FILE})")
        # Our own file: tensors, numbers and strings only, so the safe loader reads it.
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        saved = json.loads(state["config"])
        if int(saved.get("stage", self.config.stage)) != self.config.stage:
            raise ValueError(f"checkpoint {path} is from stage {saved.get('stage')}, this run is stage "
                             f"{self.config.stage}")
        load_adapters(self.transformer, path / "adapters", lora_adapter=LORA_ADAPTER)
        if self.config.stage == 0:
            self.transformer.backbone.load_state_dict(load_file(str(path / BACKBONE_FILE)))
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        _set_rng_state(state["rng"])
        self.step = int(state["step"])
        logger.info("resumed from %s at step %d", path, self.step)

    def export(self, path: str | os.PathLike) -> Path:
        """Write the trained world model to ``path`` (a directory ``MirageWorldModel.from_pretrained`` loads)."""
        self.accelerator.wait_for_everyone()
        path = Path(path)
        if self.accelerator.is_main_process:
            self.transformer.eval()
            export_world_model(self.world_model, path, copy_backbone=self.config.stage == 0 or None)
            with open(path / "training.json", "w") as f:
                json.dump({"config": self.config.to_dict(), "steps": self.step}, f, indent=2)
            self.transformer.train()
        self.accelerator.wait_for_everyone()
        return path


def _rng_state() -> dict:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python_version": py[0], "python_state": torch.tensor(py[1]),
             "python_gauss": -1.0 if py[2] is None else float(py[2]),
             "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
             "numpy_has_gauss": int(np_state[3]), "numpy_gauss": float(np_state[4])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    gauss = state["python_gauss"]
    random.setstate((state["python_version"], tuple(int(x) for x in state["python_state"].tolist()),
                     None if gauss == -1.0 else gauss))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
