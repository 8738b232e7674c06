"""The memory protocol's metrics and the controls of ``mirage eval`` (shuffled, empty, none, oracle)."""

import json
import math

import pytest
import torch

from mirage.data.memory_task import make_memory_task
from mirage.eval.closed_loop import masked_psnr, memory_evaluation_tasks, memory_frame_metrics
from mirage.eval.controls import memory_with_features, shuffle_permutation, shuffled_memory
from mirage.eval.methods import ALL_METHODS, METHODS, method_memory, run_method
from mirage.memory import LatentSpatialMemory
from mirage.pipeline import MirageWorldModel

SIZE = (32, 64)


@pytest.fixture(scope="module")
def model():
    return MirageWorldModel.from_pretrained("tiny", height=SIZE[0], width=SIZE[1])


@pytest.fixture(scope="module")
def task():
    return make_memory_task(1_000_002, SIZE, "turn_out_back", 9, 6)


def _metrics(generated, task):
    return memory_frame_metrics(generated, task).values


def test_metrics_leave_the_conditioning_frame_out(task):
    truth = task.target.rgb
    off = truth + 0.1  # uniform error 0.1 -> 20 dB wherever it is measured
    perfect_first = off.clone()
    perfect_first[0] = truth[0]
    a, b = _metrics(off, task), _metrics(perfect_first, task)
    assert a == pytest.approx(b, nan_ok=True)  # frame 0 being perfect changes nothing
    assert a["PSNR"] == pytest.approx(20.0) and a["PSNR_C"] == pytest.approx(20.0)
    assert a["PSNR_M"] == pytest.approx(20.0) and a["needs_memory"] == pytest.approx(task.needs_memory)
    # only the scored frames count for *_C: perfect frames elsewhere leave it alone, a perfect scored frame does not
    unscored = [t for t in range(truth.shape[0]) if t not in task.scored_frames and t != 0]
    elsewhere = off.clone()
    elsewhere[unscored] = truth[unscored]
    assert _metrics(elsewhere, task)["PSNR_C"] == pytest.approx(20.0)
    assert _metrics(elsewhere, task)["PSNR"] > 20.0
    one_scored = off.clone()
    one_scored[task.scored_frames[0]] = truth[task.scored_frames[0]]
    assert _metrics(one_scored, task)["PSNR_C"] > 20.0
    with pytest.raises(ValueError, match="differ"):
        memory_frame_metrics(off[1:], task)


def test_masked_psnr_counts_only_the_mask():
    a, b = torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)
    b[:, :, :2] = 0.1
    b[:, :, 2:] = 0.5
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, :2] = True
    assert masked_psnr(a, b, mask) == pytest.approx(20.0)
    assert math.isnan(masked_psnr(a, b, torch.zeros_like(mask)))


def _random_memory(n=50, channels=8):
    memory = LatentSpatialMemory(channels=channels, voxel_size=None)
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(channels, 5, 10, generator=g)  # distinct features per cell
    K = torch.tensor([[20.0, 0, 20.0], [0, 20.0, 10.0], [0, 0, 1]])
    memory.insert(latent, torch.full((10, 20), 2.0) + torch.rand(10, 20, generator=g), K, torch.eye(4))
    assert len(memory) == n
    return memory


def test_shuffled_memory_permutes_features_among_the_same_points():
    memory = _random_memory()
    before = memory.features.clone()
    shuffled = shuffled_memory(memory, seed=3)
    assert torch.equal(shuffled.points, memory.points) and torch.equal(memory.features, before)
    assert (shuffled.features != memory.features).any(dim=1).all()  # every point got another point's feature
    assert torch.equal(shuffled.features.sort(0).values, memory.features.sort(0).values)  # same multiset, per channel
    rows = lambda f: sorted(map(tuple, f.tolist()))  # noqa: E731
    assert rows(shuffled.features) == rows(memory.features)
    assert torch.equal(shuffled_memory(memory, seed=3).features, shuffled.features)
    assert not torch.equal(shuffled_memory(memory, seed=4).features, shuffled.features)
    source = shuffle_permutation(7, seed=1)
    assert sorted(source.tolist()) == list(range(7)) and (source != torch.arange(7)).all()
    with pytest.raises(ValueError, match="one row per point"):
        memory_with_features(memory, before[:3])
    readout = shuffled.read(torch.tensor([[20.0, 0, 20.0], [0, 20.0, 10.0], [0, 0, 1]]), torch.eye(4), (10, 20),
                            (5, 10))
    assert readout.mask.sum() == 50  # the same cells are visible, holding other features


def test_control_memories(model, task):
    empty, kw = method_memory("empty", model, task.target, task.earlier)
    assert len(empty) == 0 and kw == {"update_memory": False}
    none, kw = method_memory("none", model, task.target, task.earlier)
    assert none is None and kw == {"mode": "no_memory"}
    latent, kw = method_memory("latent", model, task.target, task.earlier)
    first_only, _ = method_memory("latent", model, task.target)
    assert kw == {} and len(latent) > len(first_only) > 0  # the earlier pass, not just the first frame
    shuffled, _ = method_memory("shuffled", model, task.target, task.earlier)
    assert torch.equal(shuffled.points, latent.points) and not torch.equal(shuffled.features, latent.features)
    oracle, kw = method_memory("oracle", model, task.target, task.earlier)
    assert kw == {"update_memory": False} and oracle.frames_inserted == task.earlier.num_frames + task.target.num_frames
    rgb, _ = method_memory("rgb_cache", model, task.target, task.earlier)
    assert len(rgb) > 0
    with pytest.raises(ValueError, match="unknown method"):
        method_memory("magic", model, task.target)


def test_every_method_runs_and_content_matters_once_the_branch_has_weights(model, task):
    frames = {m: run_method(m, model, task.target, num_inference_steps=1, memory_frames=task.earlier)
              for m in ALL_METHODS}
    context = (task.target.rgb[0] * 255).round() / 255
    assert all(f.shape == task.target.rgb.shape and torch.equal(f[0], context) for f in frames.values())
    trained = MirageWorldModel.from_pretrained("tiny", height=SIZE[0], width=SIZE[1])
    with torch.no_grad():
        for block in trained.transformer.side_branch.hint_blocks:
            block.proj_out.weight.normal_(0, 0.2)
        trained.transformer.side_branch.hint_blocks[0].proj_in.weight.normal_(0, 0.2)
    run = {m: run_method(m, trained, task.target, num_inference_steps=1, memory_frames=task.earlier)
           for m in ("latent", "shuffled", "empty", "none")}
    assert not torch.equal(run["latent"], run["shuffled"]) and not torch.equal(run["latent"], run["empty"])
    assert not torch.equal(run["empty"], run["none"])  # branch on with nothing in it is not branch off


def test_cli_runs_the_memory_protocol(tmp_path, capsys):
    from mirage.cli import main

    out = tmp_path / "eval"
    argv = ["eval", "--model", "tiny", "--protocol", "memory", "--methods", "latent,shuffled,empty", "none",
            "--scenes", "1", "--frames", "9", "--earlier-frames", "4", "--steps", "1", "--height", "32", "--width",
            "64", "--output", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "PSNR_C" in printed and "needs memory" in printed and "PSNR_M" in printed
    # the stills: two returning frames x (ground truth + 4 methods), twice the size
    import cv2

    (still,) = (out / "stills").glob("*.png")
    assert cv2.imread(str(still)).shape == (2 * 2 * 32, 2 * 64 * 5, 3)
    results = json.loads((out / "results.json").read_text())
    assert set(results["table"]) == {"latent", "shuffled", "empty", "none"}
    assert results["settings"]["protocol"] == "memory" and results["settings"]["frames"] == 9
    clip = next(iter(results["per_clip"]["latent"].values()))
    assert clip["needs_memory"] > 0 and clip["PSNR_C"] is not None
    assert main(["eval", "--protocol", "memory", "--methods", "latent,magic", "--output", str(out)]) == 2
    assert main(["eval", "--protocol", "memory", "--frames", "5", "--output", str(out)]) == 2
    assert set(METHODS) < set(ALL_METHODS)


def test_memory_evaluation_tasks_are_held_out_and_cycle_variants():
    tasks = memory_evaluation_tasks(2, (16, 24), 9, earlier_frames=4, variants=("walk_and_turn", "turn_out_back"))
    assert [t.variant for t in tasks] == ["walk_and_turn", "turn_out_back"]
    assert [t.room_seed for t in tasks] == [1_000_000, 1_000_001]
    with pytest.raises(ValueError, match="num_tasks"):
        memory_evaluation_tasks(0, (16, 24))
