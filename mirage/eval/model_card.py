"""A model card (``README.md``) for a trained world model, written from the run's own logs.

Everything in it is read from files the trainer and evaluator wrote (``trainer_config.json``,
``loss_log.jsonl``, ``vae_loss_log.jsonl``, ``results.json``), so the card cannot drift from the run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from mirage.eval.report import markdown_table

__all__ = ["write_model_card"]


def _losses(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _loss_summary(entries: list[dict]) -> str:
    if not entries:
        return "no log"
    k = max(1, len(entries) // 10)
    head = sum(e["loss"] for e in entries[:k]) / k
    tail = sum(e["loss"] for e in entries[-k:]) / k
    return (f"{len(entries)} steps, {entries[-1].get('seconds', float('nan')):.0f} s; mean loss of the first {k} "
            f"steps {head:.4f}, of the last {k} steps {tail:.4f}")


def _weights_size(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in model_dir.rglob("*.safetensors"))


def write_model_card(model_dir: str | os.PathLike, run_dirs: Sequence[str | os.PathLike],
                     eval_dirs: Sequence[str | os.PathLike] = (), title: str = "mirage-tiny",
                     notes: Sequence[str] = ()) -> Path:
    """Write ``model_dir/README.md`` from training runs (in order, e.g. stage 1 then stage 2) and evaluations."""
    model_dir = Path(model_dir)
    lines = [f"# {title}", "",
             "A world model with latent spatial memory (mirage), trained with mirage's own training code.", "",
             f"Weights: {_weights_size(model_dir) / 2**20:.1f} MiB of safetensors.", "", "## Training", ""]
    for run in map(Path, run_dirs):
        cfg_file = run / "trainer_config.json"
        cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        lines.append(f"### {run.name}: stage {cfg.get('stage', '?')}")
        lines.append("")
        vae = _losses(run / "vae_loss_log.jsonl")
        if vae:
            lines.append(f"- VAE trained from scratch first: {_loss_summary(vae)} (L1 + MSE + KL)")
        lines.append(f"- transformer: {_loss_summary(_losses(run / 'loss_log.jsonl'))} (flow matching)")
        keys = ("model", "steps", "batch_size", "grad_accum", "learning_rate", "lora_rank", "memory_frames",
                "memory_dropout", "mixed_precision", "seed")
        lines.append("- config: " + ", ".join(f"{k}={cfg[k]}" for k in keys if k in cfg))
        lines.append("")
    for ev in map(Path, eval_dirs):
        results_file = ev / "results.json"
        if not results_file.is_file():
            continue
        results = json.loads(results_file.read_text())
        table = {m: {k: (float("nan") if v is None else v) for k, v in row.items()}
                 for m, row in results["table"].items()}
        lines += [f"## Evaluation ({ev.name})", "",
                  "- " + "; ".join(f"{k}: {v}" for k, v in results["settings"].items()), "",
                  markdown_table(table, results.get("notes", ())), ""]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    path = model_dir / "README.md"
    path.write_text("\n".join(lines))
    return path
