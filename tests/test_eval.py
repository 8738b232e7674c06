"""Closed-loop protocol, methods (incl. the RGB-cache adapter), report and the `mirage eval` CLI."""

import json
import math

import numpy as np
import pytest
import torch

from mirage.eval.closed_loop import evaluation_clips, frame_metrics, loop_pairs
from mirage.eval.methods import METHODS, run_method
from mirage.eval.report import markdown_table, side_by_side, still_frames, summarize
from mirage.pipeline import MirageWorldModel

SIZE = dict(height=32, width=64)


@pytest.fixture(scope="module")
def model():
    return MirageWorldModel.from_pretrained("tiny", **SIZE)


@pytest.fixture(scope="module")
def clip():
    return evaluation_clips(1, 9, (32, 64), paths=("orbit",))[0]


def test_loop_pairs_and_clip_poses(clip):
    back, out = loop_pairs(9)
    assert back == [8, 7, 6, 5] and out == [0, 1, 2, 3]
    assert torch.allclose(clip.cam_to_world[back], clip.cam_to_world[out])
    assert torch.allclose(clip.rgb[back], clip.rgb[out], atol=1e-5)  # static scene: same pose, same image
    with pytest.raises(ValueError, match="odd"):
        loop_pairs(8)


def test_frame_metrics_known_values(clip):
    perfect = frame_metrics(clip.rgb, clip.rgb).values
    assert perfect["PSNR"] == pytest.approx(100.0) and perfect["SSIM_C"] == pytest.approx(1.0)
    assert math.isnan(perfect["LPIPS"]) and math.isnan(perfect["LPIPS_C"])
    shifted = (clip.rgb + 0.1).clamp(max=10)  # uniform error 0.1 -> 20 dB everywhere
    scores = frame_metrics(shifted, clip.rgb).values
    assert scores["PSNR"] == pytest.approx(20.0) and scores["PSNR_C"] == pytest.approx(20.0)
    assert scores["PSNR_self"] == pytest.approx(100.0, abs=1e-3)  # its own return equals its own outgoing


def test_methods_run_and_memory_matters(model, clip):
    frames = {m: run_method(m, model, clip, num_inference_steps=2) for m in METHODS}
    assert all(f.shape == clip.rgb.shape for f in frames.values())
    assert all(torch.equal(f[0], (clip.rgb[0] * 255).round() / 255) for f in frames.values())
    # A fresh side branch is zero-initialised: memory cannot change the output yet ...
    assert torch.equal(frames["latent"], frames["none"])
    assert not torch.equal(frames["reprojection"], frames["latent"])
    # ... once it has weights, the latent memory and the RGB cache steer the rollout differently.
    trained = MirageWorldModel.from_pretrained("tiny", **SIZE)
    with torch.no_grad():
        for block in trained.transformer.side_branch.hint_blocks:
            block.proj_out.weight.normal_(0, 0.2)
        trained.transformer.side_branch.hint_blocks[0].proj_in.weight.normal_(0, 0.2)
    latent = run_method("latent", trained, clip, num_inference_steps=2)
    none = run_method("none", trained, clip, num_inference_steps=2)
    rgb = run_method("rgb_cache", trained, clip, num_inference_steps=2)
    assert not torch.equal(latent, none) and not torch.equal(latent, rgb)
    with pytest.raises(ValueError, match="unknown method"):
        run_method("magic", model, clip)


def test_report_helpers():
    per_clip = {"a": {"c1": {"PSNR": 10.0, "LPIPS": float("nan")}, "c2": {"PSNR": 20.0, "LPIPS": float("nan")}}}
    table = summarize(per_clip)
    assert table["a"]["PSNR"] == 15.0 and math.isnan(table["a"]["LPIPS"])
    md = markdown_table(table, ["note"])
    assert "| a | 15.00 |" in md and "n/a" in md and "- note" in md
    video = side_by_side({"x": torch.zeros(2, 3, 16, 16), "y": torch.ones(2, 3, 16, 16)})
    assert video.shape == (2, 16, 32, 3) and video.dtype.name == "uint8"
    numbered = np.arange(6, dtype=np.uint8)[:, None, None, None] * np.ones((6, 2, 3, 3), np.uint8)
    still = still_frames(numbered, [1, 3, 4, 5], count=2, scale=3)  # picks the 2nd and 3rd of four: frames 3, 4
    assert still.shape == (2 * 2 * 3, 3 * 3, 3) and still[0, 0, 0] == 3 and still[-1, 0, 0] == 4
    with pytest.raises(ValueError):
        still_frames(numbered, [6])


def test_cli_evaluates_end_to_end(tmp_path, capsys):
    from mirage.cli import main

    out = tmp_path / "eval"
    argv = ["eval", "--model", "tiny", "--methods", "latent", "rgb_cache", "none", "reprojection", "--scenes", "1",
            "--frames", "small", "--steps", "1", "--height", "32", "--width", "64", "--output", str(out),
            "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "PSNR_C" in printed and "LPIPS skipped" in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results["table"]) == set(METHODS) and results["table"]["latent"]["LPIPS"] is None
    assert (out / "results.md").is_file() and len(list((out / "videos").glob("*.mp4"))) == 1
    assert main(["eval", "--frames", "8", "--output", str(out)]) == 2


def test_model_card_reads_the_run_logs(tmp_path):
    from mirage.train.config import TrainConfig
    from mirage.eval.model_card import write_model_card

    run = tmp_path / "stage1"
    run.mkdir()
    TrainConfig(steps=2).save(run / "trainer_config.json")
    (run / "loss_log.jsonl").write_text('{"step": 1, "loss": 2.0, "seconds": 1}\n'
                                        '{"step": 2, "loss": 1.5, "seconds": 2}\n')
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "results.json").write_text(json.dumps({"settings": {"clips": 1}, "notes": ["n"], "table": {
        "latent": {"PSNR": 20.0, "LPIPS": None}}}))
    model = tmp_path / "model"
    model.mkdir()
    card = write_model_card(model, [run], [ev], notes=["first version"]).read_text()
    assert "stage 1" in card and "2 steps" in card and "1.5000" in card
    assert "| latent | 20.00 |" in card and "first version" in card
