"""Imagination against later observation (mirage.eval.recording) and ``mirage eval-bag`` on a synthetic bag."""

import json
import math
import sys

import pytest
import torch

from mirage.data.clip import Clip
from mirage.eval.recording import coverage_masks, evaluate_recording, frame_scores, masked_ssim, split_recording
from mirage.pipeline import MirageWorldModel

SIZE = (32, 64)


@pytest.fixture(scope="module")
def model():
    return MirageWorldModel.from_pretrained("tiny", height=SIZE[0], width=SIZE[1])


def _recording(num_frames=20, passes=2) -> Clip:
    """A camera that orbits a room ``passes`` times: the later passes revisit what the first one saw."""
    from mirage.scenes import Scene

    scene = Scene.random(5, num_objects=4)
    K = scene.default_intrinsics(*SIZE)
    one = scene.trajectory("orbit", num_frames // passes)
    c2w = one.repeat(passes, 1, 1)
    frames = scene.render_batch(K, c2w, *SIZE)
    return Clip(rgb=frames.rgb.float().clamp(0, 1), intrinsics=K.expand(num_frames, 3, 3).clone(),
                cam_to_world=c2w.float(), depth=frames.depth.float(), name="orbit-twice")


def test_split_recording_indices():
    rec = _recording(20)
    memory, target, keys, target_index = split_recording(rec, 0.5, temporal_stride=4)
    assert target_index == [9, 10, 11, 12, 13, 14, 15, 16, 17]  # the last past frame, then 8 = 2 x 4 later ones
    assert keys[0] == 0 and all(k < 10 for k in keys) and memory.num_frames == len(keys)
    assert torch.equal(target.cam_to_world, rec.cam_to_world[target_index])
    _, target, _, index = split_recording(rec, 0.5, frame_stride=2, temporal_stride=4)
    assert index == [9, 10, 12, 14, 16] and target.num_frames == 5
    _, _, all_keys, _ = split_recording(rec, 0.5, keyframe_translation=0.0)
    assert all_keys == list(range(10))  # threshold 0: every frame is a keyframe
    with pytest.raises(ValueError, match="later frames"):
        split_recording(rec, 0.9, temporal_stride=4)
    with pytest.raises(ValueError, match="memory_fraction"):
        split_recording(rec, 1.0)


def test_scores_split_by_the_mask_known_answers():
    truth = torch.rand(3, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    covered = torch.zeros(3, 32, 48, dtype=torch.bool)
    covered[:, :, :24] = True
    off = truth.clone()
    off[:, :, :, 24:] = (off[:, :, :, 24:] + 0.1)  # error 0.1 only where the memory does not cover
    scores = frame_scores(off, truth, covered)
    assert all(s["PSNR_covered"] == 100.0 and s["PSNR_uncovered"] == pytest.approx(20.0) for s in scores)
    assert all(s["coverage"] == 0.5 and s["SSIM_covered"] == pytest.approx(1.0) for s in scores)
    assert all(s["SSIM_uncovered"] < 1.0 and math.isnan(s["LPIPS"]) for s in scores)
    assert masked_ssim(truth, truth, covered) == pytest.approx(1.0)
    assert math.isnan(masked_ssim(truth, off, torch.zeros_like(covered)))
    with pytest.raises(ValueError, match="do not fit"):
        frame_scores(off, truth, covered[:2])


def test_coverage_follows_what_the_past_saw(model):
    rec = _recording(20)
    memory, target, _, _ = split_recording(rec, 0.5, temporal_stride=model.temporal_stride)
    revisit = coverage_masks(model, memory, target)
    assert revisit.shape == (target.num_frames, *SIZE) and float(revisit.float().mean()) > 0.8
    _, _, _, _ = split_recording(rec, 0.5)
    glimpse = coverage_masks(model, rec.select([0]), target)  # one frame remembered: much less is covered
    assert float(glimpse.float().mean()) < float(revisit.float().mean())


def test_evaluate_recording_writes_its_outputs(model, tmp_path):
    rec = _recording(20)
    out = evaluate_recording(model, rec, tmp_path, stamps=[0.1 * i for i in range(20)], num_inference_steps=1)
    assert set(out["table"]) == {"latent", "none"} and len(out["per_frame"]["latent"]) == 8
    assert out["per_frame"]["latent"][0]["frame"] == 10 and out["per_frame"]["latent"][0]["stamp"] == pytest.approx(1.0)
    assert 0.8 < out["table"]["latent"]["coverage"] <= 1.0 and "recorded" in out["consistency"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["target_frames"] == list(range(9, 18)) and saved["table"]["latent"]["LPIPS"] is None
    text = (tmp_path / "results.md").read_text()
    assert "## Per frame" in text and "PSNR_uncovered" in text
    assert (tmp_path / "side_by_side.mp4").is_file() and (tmp_path / "side_by_side.png").is_file()
    with pytest.raises(ValueError, match="stamps"):
        evaluate_recording(model, rec, tmp_path, stamps=[0.0], num_inference_steps=1)


def test_mirage_ros_is_imported_only_inside_the_bag_reader():
    """Module level of the eval-bag modules imports no mirage_ros; the one function that does is the reader."""
    import ast

    import mirage_ros.bags.eval_recording as bag_module
    import mirage.eval.recording as recording_module

    for module in (bag_module, recording_module):
        tree = ast.parse(open(module.__file__).read())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top for a in n.names] + [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
        assert not any(name.startswith("mirage_ros") for name in names), module.__name__
        users = {f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
                 for n in ast.walk(f) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("mirage_ros")}
        assert users == ({"_bag_reader"} if module is bag_module else set())


def test_missing_bags_extra_is_named(monkeypatch, capsys):
    import importlib.util

    from mirage.cli import main, missing_extra

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "rosbags" else real(name, *a))
    assert "mirage[bags]" in missing_extra("eval-bag")
    assert main(["eval-bag", "--bag", "x", "--output", "y"]) == 2
    assert 'pip install "mirage[bags]"' in capsys.readouterr().err
    monkeypatch.setattr(importlib.util, "find_spec", real)
    monkeypatch.setitem(sys.modules, "mirage_ros.bags.read", None)  # importing it now raises ImportError
    from mirage_ros.bags.eval_recording import read_bag_recording

    with pytest.raises(ImportError, match='"bags" extra'):
        read_bag_recording("x", SIZE)


def test_eval_bag_on_a_synthetic_bag(tmp_path, capsys):
    pytest.importorskip("rosbags")
    from mirage.cli import main
    from mirage_ros.bags.write import write_rig_bag
    from mirage_ros.sim.rig import RigConfig, SyntheticRig

    bag = write_rig_bag(tmp_path / "bag", SyntheticRig(RigConfig(height=48, width=64, num_frames=12)), 12,
                        progress=False)
    out = tmp_path / "eval"
    argv = ["eval-bag", "--bag", str(bag), "--output", str(out), "--model", "tiny", "--height", "32", "--width", "64",
            "--steps", "1", "--no-consistency"]
    assert main(argv) == 0
    assert "PSNR_covered" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["target_frames"] == [5, 6, 7, 8, 9] and results["settings"]["frames skipped"] == 0
    assert (out / "side_by_side.mp4").is_file()
    assert main(["eval-bag", "--bag", str(tmp_path / "nothing"), "--output", str(out), "--model", "tiny"]) == 2
    assert "no bag" in capsys.readouterr().err
