"""The ablation variants of ``mirage eval --variants`` and the pixel-lift memory: each switch changes its code path."""

import json

import pytest
import torch

from mirage.camera import make_intrinsics
from mirage.perception.depth import GivenDepth, ReadoutDepth
from mirage.eval.closed_loop import evaluation_clips
from mirage.eval.variants import (
    ABLATIONS,
    FULL,
    NO_INCONSISTENCY_TEST,
    REFERENCE_VARIANTS,
    load_variant_resources,
    noisy_depth,
    run_variant,
    variant_specs,
)
from mirage.memory.pixel_lift import PixelLiftMemory, pool_features, upsample_latents
from mirage.pipeline import MirageWorldModel

SIZE = (32, 64)


@pytest.fixture(scope="module")
def model():
    return MirageWorldModel.from_pretrained("tiny", height=SIZE[0], width=SIZE[1])


@pytest.fixture(scope="module")
def clip():
    """Out-and-back orbit with two moving objects."""
    return evaluation_clips(1, 9, SIZE, paths=("orbit",), num_dynamic=2)[0]


def test_every_ablation_changes_one_switch_of_the_full_method():
    specs = variant_specs(["all"], depth_noise=(0.1, 0.3))
    assert specs[0] == FULL and FULL.changes() == {}
    names = [s.name for s in specs]
    assert names == ["full", "rgb_point_cloud", "pixel_lift", "no_dynamic_filter", "single_stage", "depth_readout",
                     "depth_mono", "depth_noise_0.1", "depth_noise_0.3"]
    for spec in specs[1:]:
        assert set(spec.changes()) in ({"memory"}, {"dynamic_filter"}, {"model"}, {"depth"}, {"depth", "depth_noise"})
    assert variant_specs(["pixel_lift,full", "pixel_lift"]) == [FULL, specs[2]]  # full first, each once
    assert set(ABLATIONS) <= {*names, "depth_noise"}
    with pytest.raises(ValueError, match="unknown variants"):
        variant_specs(["magic"])
    with pytest.raises(ValueError, match="positive"):
        variant_specs(["depth_noise"], depth_noise=(0.0,))


def test_missing_resources_skip_with_a_reason(model, tmp_path):
    specs = variant_specs(["single_stage", "depth_mono"])
    runnable, resources, skipped = load_variant_resources(specs, model)
    assert [s.name for s in runnable] == ["full"] and resources.single_stage is None
    assert "--single-stage-model" in skipped["single_stage"] and "--depth-model" in skipped["depth_mono"]
    _, _, skipped = load_variant_resources(specs, model, str(tmp_path / "nope"), str(tmp_path / "nope"))
    assert "does not exist" in skipped["single_stage"] and "does not exist" in skipped["depth_mono"]
    with pytest.raises(ValueError, match="single-stage model"):
        run_variant(specs[1], model, evaluation_clips(1, 5, SIZE)[0], num_inference_steps=1)


def test_single_stage_loads_the_given_model(model, clip, tmp_path, monkeypatch):
    other = MirageWorldModel.from_pretrained("tiny", height=SIZE[0], width=SIZE[1], backbone_seed=1,
                                             num_inference_steps=17)
    other.save_pretrained(tmp_path / "single")
    specs = variant_specs(["single_stage"])
    runnable, resources, skipped = load_variant_resources(specs, model, str(tmp_path / "single"))
    assert not skipped and [s.name for s in runnable] == ["full", "single_stage"]
    # the row differs from "full" in training only: it samples with the main model's steps, not its saved 17
    assert resources.single_stage.config.num_inference_steps == model.config.num_inference_steps != 17
    used = []
    monkeypatch.setattr(type(model), "rollout", lambda self, *a, **k: used.append(self) or _fake_result(self, a[1]))
    run_variant(runnable[1], model, clip, resources=resources, num_inference_steps=1)
    run_variant(runnable[0], model, clip, resources=resources, num_inference_steps=1)
    assert used == [resources.single_stage, model]


def _fake_result(model, cam_to_world):
    import numpy as np

    from mirage.pipeline.outputs import RolloutResult

    return RolloutResult(frames=np.zeros((cam_to_world.shape[0], *model.image_size, 3), dtype=np.uint8))


def _spy(model, monkeypatch):
    """Record what each rollout gets: its memory kind and size, exclude hook, inconsistency threshold, provider."""
    calls = []
    original = type(model).rollout

    def rollout(self, memory, intrinsics, cam_to_world, **kw):
        calls.append({"kind": memory.stats()["kind"], "points": len(memory), "exclude": kw.get("exclude"),
                      "threshold": self.config.inconsistency_threshold, "provider": self.depth_provider})
        return original(self, memory, intrinsics, cam_to_world, **kw)

    monkeypatch.setattr(type(model), "rollout", rollout)
    return calls


def test_switches_reach_the_rollout(model, clip, monkeypatch):
    calls = _spy(model, monkeypatch)
    specs = {s.name: s for s in variant_specs(["all"], depth_noise=(0.2,))}
    for name in ("full", "rgb_point_cloud", "pixel_lift", "no_dynamic_filter", "depth_readout", "depth_noise_0.2"):
        frames, memory = run_variant(specs[name], model, clip, num_inference_steps=1, return_memory=True)
        assert frames.shape == clip.rgb.shape
    full, rgb, pixel, nofilter, readout, noise = calls
    assert (full["kind"], rgb["kind"], pixel["kind"]) == ("latent", "rgb", "pixel_lift")
    assert pixel["points"] > 20 * full["points"]  # one point per pixel, not per latent cell
    # dynamic filter: the ground-truth masks at the written frames, and the inconsistency test
    idx = torch.tensor([4, 8])
    assert torch.equal(full["exclude"](idx, None), clip.dynamic[idx]) and full["threshold"] == 0.1
    assert nofilter["exclude"] is None and nofilter["threshold"] == NO_INCONSISTENCY_TEST
    assert clip.dynamic[0].any() and nofilter["points"] > full["points"]  # the moving objects went in
    assert model.config.inconsistency_threshold == 0.1  # restored
    # depth sources
    assert isinstance(full["provider"], GivenDepth) and torch.equal(full["provider"].source, clip.depth)
    assert isinstance(readout["provider"], ReadoutDepth)
    noisy = noise["provider"].source
    ratio = (noisy / clip.depth)[torch.isfinite(clip.depth) & (clip.depth > 0)].log()
    assert 0.1 < float(ratio.std()) < 0.3
    assert not isinstance(model.depth_provider, GivenDepth)  # restored


def test_reference_inference_variants_reach_the_rollout(model, clip, monkeypatch):
    specs = variant_specs(["reference"])
    assert [s.name for s in specs] == ["full", *REFERENCE_VARIANTS]
    for spec in specs[1:]:
        assert set(spec.changes()) == {"inference"}  # one switch: a set of config overrides
    configs = []
    original = type(model).rollout
    monkeypatch.setattr(type(model), "rollout", lambda self, memory, *a, **kw: configs.append(
        (self.config, memory.voxel_size)) or original(self, memory, *a, **kw))
    for spec in specs:
        frames = run_variant(spec, model, clip, num_inference_steps=1)
        assert frames.shape == clip.rgb.shape
    by_name = dict(zip([s.name for s in specs], configs))
    full_config, full_voxel = by_name["full"]
    assert (full_config.chunk_seed, full_config.reference_frames, full_voxel) == ("reencoded", 0, 0.05)
    ref_config, ref_voxel = by_name["reference_inference"]
    assert (ref_config.chunk_seed, ref_config.memory_update, ref_config.preceding_latent_frames,
            ref_config.reference_frames, ref_config.guidance_scale, ref_voxel) == \
        ("denoised", "append", 2, 4, 1.0, None)
    assert by_name["ref_guidance"][0].guidance_scale == 5.0
    assert model.config.chunk_seed == "reencoded"  # restored


def test_a_trained_side_branch_tells_the_memories_apart(clip):
    trained = MirageWorldModel.from_pretrained("tiny", height=SIZE[0], width=SIZE[1])
    with torch.no_grad():
        for block in trained.transformer.side_branch.hint_blocks:
            block.proj_out.weight.normal_(0, 0.2)
        trained.transformer.side_branch.hint_blocks[0].proj_in.weight.normal_(0, 0.2)
    specs = {s.name: s for s in variant_specs(["pixel_lift", "no_dynamic_filter"])}
    out = {n: run_variant(s, trained, clip, num_inference_steps=2) for n, s in specs.items()}
    assert not torch.equal(out["full"], out["pixel_lift"])
    assert not torch.equal(out["full"], out["no_dynamic_filter"])


def test_noisy_depth_is_per_cell_and_deterministic():
    depth = torch.full((2, 32, 64), 2.0)
    depth[0, 0, 0] = float("nan")
    a, b = noisy_depth(depth, 0.1, 16, seed=3), noisy_depth(depth, 0.1, 16, seed=3)
    assert torch.equal(a[~a.isnan()], b[~b.isnan()]) and torch.isnan(a[0, 0, 0])
    cells = a[1].reshape(2, 16, 4, 16).permute(0, 2, 1, 3).reshape(8, -1)
    assert (cells.amax(1) == cells.amin(1)).all() and cells[:, 0].unique().numel() == 8
    assert not torch.equal(noisy_depth(depth, 0.1, 16, seed=4)[1], a[1])


# ------------------------------------------------------------------------------------------------ pixel lift
def _flat_view(h=4, w=6, stride=4):
    H, W = h * stride, w * stride
    K = make_intrinsics(20.0, 20.0, W / 2, H / 2)
    return K, torch.eye(4), torch.full((1, H, W), 2.0), (H, W), (h, w)


def test_pixel_lift_reads_back_what_it_stored():
    K, P, depth, image, grid = _flat_view()
    latents = torch.randn(1, 5, *grid, generator=torch.Generator().manual_seed(0))
    memory = PixelLiftMemory(channels=5)
    written = memory.observe_batch(torch.rand(1, 3, *image), depth, K, P[None], latents=latents)
    assert written == image[0] * image[1] == len(memory) and memory.stats()["kind"] == "pixel_lift"
    out = memory.read_batch(K, P[None], image, grid)
    assert out.mask.all() and torch.allclose(out.depth, torch.full((1, *grid), 2.0))
    # the same view pools the upsampled features back: the cell mean of the bilinear upsampling
    expected = pool_features(upsample_latents(latents, image), torch.ones(1, *image, dtype=torch.bool), grid)
    assert torch.allclose(out.features, expected, atol=1e-6)
    assert not torch.allclose(out.features, latents, atol=1e-2)  # upsampling blurs: not the latent memory
    constant = torch.ones(1, 5, *grid) * torch.arange(5.0).view(1, 5, 1, 1)
    flat = PixelLiftMemory(channels=5)
    flat.observe_batch(torch.rand(1, 3, *image), depth, K, P[None], latents=constant)
    assert torch.allclose(flat.read_batch(K, P[None], image, grid).features, constant, atol=1e-6)
    mask, cell_depth = memory.visibility(K, P[None], image, grid)
    assert torch.equal(mask, out.mask) and torch.equal(cell_depth, out.depth)


def test_pixel_lift_is_a_spatial_memory(tmp_path):
    from mirage.memory import SpatialMemory

    K, P, depth, image, grid = _flat_view()
    memory = PixelLiftMemory(channels=3)
    assert isinstance(memory, SpatialMemory)
    exclude = torch.zeros(1, *image, dtype=torch.bool)
    exclude[:, :, : image[1] // 2] = True
    memory.observe_batch(torch.rand(1, 3, *image), depth, K, P[None], exclude,
                         encode=lambda rgb: torch.ones(1, 3, *grid))
    assert len(memory) == image[0] * image[1] // 2
    out = memory.read_batch(K, P[None], image, grid)
    assert not out.mask[0, :, : grid[1] // 2].any() and out.mask[0, :, grid[1] // 2:].all()
    assert (out.features[0][:, ~out.mask[0]] == 0).all()
    snapshot = memory.copy()
    with pytest.raises(ValueError, match="latents"):
        memory.observe_batch(torch.rand(1, 3, *image), depth, K, P[None], latents=torch.ones(1, 4, *grid))
    assert len(memory) == len(snapshot)  # bad input changed nothing
    memory.save(tmp_path / "m.safetensors")
    loaded = PixelLiftMemory.load(tmp_path / "m.safetensors")
    assert torch.equal(loaded.features, memory.features) and loaded.channels == 3
    with pytest.raises(ValueError, match="latents .* or an encode"):
        memory.observe_batch(torch.rand(1, 3, *image), depth, K, P[None])


def test_cli_variants_end_to_end(tmp_path, capsys):
    from mirage.cli import main

    out = tmp_path / "ablation"
    argv = ["eval", "--model", "tiny", "--variants", "pixel_lift", "no_dynamic_filter", "single_stage",
            "--scenes", "1", "--frames", "small", "--steps", "1", "--height", "32", "--width", "64",
            "--output", str(out), "--no-progress", "--no-videos"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "variant single_stage skipped" in captured.err and "reproj_px" in captured.out
    results = json.loads((out / "results.json").read_text())
    assert list(results["table"]) == ["full", "pixel_lift", "no_dynamic_filter"]
    assert set(results["consistency"]) == {"ground truth", "full", "pixel_lift", "no_dynamic_filter"}
    assert results["settings"]["moving objects per scene"] == 1  # no_dynamic_filter needs moving objects
    assert "## Consistency" in (out / "results.md").read_text()
