"""The shipped mirage-tiny: it loads by name, runs on the CPU and its memory's CONTENT drives the prediction.

A regression test of the trained weights (not a benchmark): on a held-out memory task (a room the project never
trained on; the earlier pass seeds the memory, the 33-frame clip leaves the view and comes back), the true memory
must beat the same memory with its features shuffled among its points, and an empty memory, on the frames that
need memory (PSNR_C without the conditioning frame). Margins: a third of the gaps measured at release (README.md).
"""

import pytest
import torch

from mirage.data.memory_task import make_memory_task
from mirage.eval.closed_loop import memory_frame_metrics
from mirage.eval.methods import run_method
from mirage.pipeline import MirageWorldModel
from mirage.pipeline.loading import CONFIG_NAME, SHIPPED

# Held-out room of the eval range (EVAL_SEED_OFFSET + 3, seeds >= 1_000_000; training rooms are 0..1199).
ROOM, VARIANT = 1_000_003, "turn_out_back"
# Measured at release (its default 4 steps) on this room (PSNR_C): v2.2 (the real-data fine-tune) true 16.53, shuffled
# 13.20, empty 12.98 dB (v2.1: 16.46, 13.44, 12.87); the test asks for about a third of each gap (3.3 and 3.5 dB).
MARGIN_SHUFFLED_DB = 1.0
MARGIN_EMPTY_DB = 1.2


def test_mirage_tiny_is_shipped_small_and_safetensors_only():
    root = SHIPPED["mirage-tiny"]
    assert (root / CONFIG_NAME).is_file() and (root / "README.md").is_file() and (root / "train.sh").is_file()
    files = [p for p in root.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    assert sum(p.stat().st_size for p in files) < 40 * 2**20
    model = MirageWorldModel.from_pretrained("mirage-tiny")
    assert model.temporal_stride == 1 and model.config.memory_latent_type == "target"
    assert model.config.prediction_type == "sample" and model.config.num_inference_steps == 4


@pytest.fixture(scope="module")
def scores():
    torch.set_num_threads(1)
    model = MirageWorldModel.from_pretrained("mirage-tiny")
    task = make_memory_task(ROOM, model.image_size, VARIANT)
    assert task.accepted and task.scored_frames
    out = {}
    for method in ("latent", "shuffled", "empty"):
        frames = run_method(method, model, task.target, seed=0, memory_frames=task.earlier)
        out[method] = memory_frame_metrics(frames, task).values["PSNR_C"]
    print(f"\nmirage-tiny on held-out room {ROOM}: PSNR_C " + ", ".join(f"{k} {v:.2f}" for k, v in out.items()))
    return out


def test_the_true_memory_beats_the_shuffled_memory(scores):
    assert scores["latent"] > scores["shuffled"] + MARGIN_SHUFFLED_DB


def test_the_true_memory_beats_an_empty_memory(scores):
    assert scores["latent"] > scores["empty"] + MARGIN_EMPTY_DB
