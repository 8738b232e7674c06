"""Ablations of the full method (paper Tables 3 and 4) as evaluation variants: ``mirage eval --variants ...``.

Every variant is the **full method** with exactly one thing changed (:class:`VariantSpec` holds the five
switches; a test checks that each ablation differs from :data:`FULL` in one field). The full method is the
latent memory (:class:`~mirage.memory.LatentSpatialMemory`) of the evaluated model, seeded with the memory frames
(the clip's first frame, or a memory task's earlier pass), updated after every chunk, with

* **the dynamic-object filter on**: the memory frames are stored without their moving-object pixels (the
  clip's ground-truth masks); every generated frame written to the memory is excluded where the ground truth
  has moving objects at that time (the rollout's ``exclude`` hook: the answer a perfect segmenter gives for the
  true scene), and the rollout's geometric inconsistency test (:func:`mirage.perception.exclusion.inconsistency_mask`) runs;
* **ground-truth depth** for the memory frames and for every generated frame (``GivenDepth``);
* the **two-stage** model being evaluated.

The ablations (:data:`ABLATIONS`):

* ``rgb_point_cloud``: the memory is the RGB point-cloud cache (:class:`~mirage.memory.RGBPointCloudMemory`,
  rasterise + re-encode every readout; the ``rgb_cache`` method under the full method's settings);
* ``pixel_lift``: "Feature Upsample, Pixel Lift" (:class:`~mirage.memory.pixel_lift.PixelLiftMemory`): latents
  upsampled to pixels, one point per pixel, read at pixel resolution and pooled to the latent grid;
* ``no_dynamic_filter``: nothing is excluded for motion: the memory frames are stored whole, generated frames
  get no mask and the inconsistency test is off (threshold ``1 - 1e-9``: it flags only depth below a billionth
  of the stored surface's, i.e. nothing). Only invalid depth stays out. Needs scenes with moving objects
  (``--num-dynamic``);
* ``single_stage``: the full method with another model, trained with side branch and LoRA together from the
  start (``--single-stage-model DIR``; skipped with a message when not given or not found);
* ``depth_readout``: generated frames take the memory's own depth at their view (:class:`~mirage.perception.depth.ReadoutDepth`,
  the default of a model without a depth network);
* ``depth_mono``: generated frames take a monocular estimator's depth (:class:`~mirage.perception.depth.DepthAnythingProvider`
  from a local directory, ``--depth-model DIR`` or ``$MIRAGE_DEPTH_MODEL``; skipped with a message otherwise),
  scale-aligned to the memory by the rollout when it is relative;
* ``depth_noise_<sigma>``: every depth map the memory gets (memory frames and generated frames) multiplied by
  ``exp(sigma * n)``, ``n ~ N(0, 1)`` drawn once per latent cell (16 x 16 pixels for the Wan VAE), so the cell's
  median pooling cannot average it away: a relative depth error of about ``sigma`` per stored point. One row
  per sigma of ``--depth-noise`` (default 0.05 and 0.2); the draw is fixed by the clip name and the seed.

The depth-source variants change the depth of *generated* frames (the memory update, Eq. 6); the memory frames
keep the sensor's (here: ground-truth) depth, as on a robot, except under ``depth_noise``.

The reference implementation's inference choices (``--variants reference``, :data:`REFERENCE_VARIANTS`; issue 20),
each the full method with one switch, ``inference``, a set of :class:`~mirage.pipeline.WorldModelConfig` overrides:
``ref_chunk_seed`` (chunks seeded by the previous chunk's last denoised latent), ``ref_memory_append`` (no voxel
dedup), ``ref_preceding`` (2 earlier latents appended after the window), ``ref_frames`` (up to 4 latents retrieved
by voxel IoU, prepended), ``ref_guidance`` (classifier-free guidance 5.0 with the empty negative prompt: with the
empty prompt, the identity at twice the passes) and ``reference_inference`` (all of them but guidance, which the
reference leaves off: its ``no_cfg``).
"""

from __future__ import annotations

import os
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Sequence

import torch
import torch.nn.functional as F

from mirage.data.clip import Clip
from mirage.perception.depth import GivenDepth, ReadoutDepth
from mirage.pipeline.config import REFERENCE_INFERENCE

__all__ = ["VariantSpec", "FULL", "ABLATIONS", "ALL_VARIANTS", "REFERENCE_VARIANTS", "DEFAULT_DEPTH_NOISE",
           "NO_INCONSISTENCY_TEST",
           "DEPTH_MODEL_ENV", "VariantResources", "variant_specs", "load_variant_resources", "noisy_depth",
           "variant_memory", "run_variant"]

DEPTH_MODEL_ENV = "MIRAGE_DEPTH_MODEL"
DEFAULT_DEPTH_NOISE = (0.05, 0.2)
NO_INCONSISTENCY_TEST = 1.0 - 1e-9  # inconsistency_mask flags depth < (1 - t) * stored: nothing at this t
MEMORIES = ("latent", "rgb", "pixel_lift")
DEPTHS = ("gt", "readout", "mono", "noise")
MODELS = ("main", "single_stage")


@dataclass(frozen=True)
class VariantSpec:
    """One row of the ablation table: the full method's five switches, one of them changed."""

    name: str
    memory: str = "latent"       # latent | rgb | pixel_lift
    dynamic_filter: bool = True  # moving-object masks on memory frames and generated frames + inconsistency test
    depth: str = "gt"            # gt | readout | mono | noise: depth of generated frames (noise: of every frame)
    depth_noise: float = 0.0     # sigma of the log-normal per-cell noise (depth == "noise")
    model: str = "main"          # main | single_stage
    inference: tuple = ()        # ((WorldModelConfig field, value), ...) for the rollout: reference inference
    description: str = field(default="", compare=False)

    def __post_init__(self):
        if self.memory not in MEMORIES or self.depth not in DEPTHS or self.model not in MODELS:
            raise ValueError(f"bad variant {self}: memory in {MEMORIES}, depth in {DEPTHS}, model in {MODELS}")
        if (self.depth == "noise") != (self.depth_noise > 0):
            raise ValueError(f"variant {self.name!r}: depth='noise' needs depth_noise > 0 and only then")

    def changes(self) -> dict[str, tuple]:
        """{switch: (full's value, this variant's)} for every switch that differs from :data:`FULL`."""
        keys = [f.name for f in fields(self) if f.name not in ("name", "description")]
        return {k: (getattr(FULL, k), getattr(self, k)) for k in keys if getattr(self, k) != getattr(FULL, k)}


FULL = VariantSpec("full", description="latent memory, dynamic filter on, ground-truth depth, two-stage model")
_ABLATIONS = {
    "rgb_point_cloud": dict(memory="rgb", description="explicit RGB point-cloud cache (rasterise + re-encode)"),
    "pixel_lift": dict(memory="pixel_lift", description="feature upsample, pixel lift, pooled readout"),
    "no_dynamic_filter": dict(dynamic_filter=False, description="no dynamic-object filter"),
    "single_stage": dict(model="single_stage", description="single-stage training (side branch + LoRA at once)"),
    "depth_readout": dict(depth="readout", description="depth of generated frames read from the memory"),
    "depth_mono": dict(depth="mono", description="depth of generated frames from a monocular estimator"),
}
ABLATIONS = (*_ABLATIONS, "depth_noise")
ALL_VARIANTS = ("full", *ABLATIONS)
_REFERENCE_SWITCHES = {
    "ref_chunk_seed": (("chunk_seed", "denoised"),),
    "ref_memory_append": (("memory_update", "append"),),
    "ref_preceding": (("preceding_latent_frames", 2),),
    "ref_frames": (("reference_frames", 4),),
    "ref_guidance": (("guidance_scale", 5.0),),
}
_REFERENCE = {
    **{name: dict(inference=switch, description="reference inference: " + ", ".join(f"{k}={v}" for k, v in switch))
       for name, switch in _REFERENCE_SWITCHES.items()},
    "reference_inference": dict(inference=tuple(REFERENCE_INFERENCE.items()),
                                description="reference inference: all of the above but guidance"),
}
REFERENCE_VARIANTS = tuple(_REFERENCE)


def variant_specs(names: Sequence[str], depth_noise: Sequence[float] = DEFAULT_DEPTH_NOISE) -> list[VariantSpec]:
    """Specs for ``names`` (any of :data:`ALL_VARIANTS`, or "all"), the full method first, each once.

    "depth_noise" gives one spec per sigma in ``depth_noise`` (named ``depth_noise_<sigma>``).
    """
    names = [n for text in names for n in str(text).split(",") if n]
    unknown = [n for n in names if n not in ("all", "reference", *ALL_VARIANTS, *REFERENCE_VARIANTS)]
    if unknown or not names:
        raise ValueError(f"unknown variants {unknown}; choose from all, reference, "
                         f"{', '.join(ALL_VARIANTS + REFERENCE_VARIANTS)}")
    names = [m for n in names for m in {"all": ALL_VARIANTS, "reference": REFERENCE_VARIANTS}.get(n, (n,))]
    specs = [FULL]
    for name in dict.fromkeys(names):
        if name == "full":
            continue
        if name == "depth_noise":
            if not depth_noise or any(not (s > 0) for s in depth_noise):
                raise ValueError(f"--depth-noise needs positive sigmas, got {list(depth_noise)}")
            specs += [VariantSpec(f"depth_noise_{s:g}", depth="noise", depth_noise=float(s),
                                  description=f"log-normal depth noise, sigma {s:g} per latent cell")
                      for s in depth_noise]
        else:
            specs.append(VariantSpec(name, **{**_ABLATIONS, **_REFERENCE}[name]))
    return specs


@dataclass
class VariantResources:
    """What some variants need beyond the evaluated model: the single-stage model, a monocular depth provider."""

    single_stage: object | None = None
    mono_depth: object | None = None


def load_variant_resources(specs: Sequence[VariantSpec], world_model, single_stage_model: str | None = None,
                           depth_model: str | None = None) -> tuple[list[VariantSpec], VariantResources, dict]:
    """Load what ``specs`` need; returns (runnable specs, resources, {skipped name: reason})."""
    resources, skipped = VariantResources(), {}
    if any(s.model == "single_stage" for s in specs):
        if not single_stage_model:
            skipped["single_stage"] = ("no single-stage model given (--single-stage-model DIR: a model trained "
                                       "with side branch and LoRA together from the start, see the README)")
        elif not os.path.isdir(single_stage_model):
            skipped["single_stage"] = f"single-stage model directory {single_stage_model} does not exist"
        else:
            from mirage.train.export import load_world_model

            # The main model's image size and sampling steps: the row differs from "full" in training only.
            resources.single_stage = load_world_model(
                single_stage_model, device=world_model.device, height=world_model.height, width=world_model.width,
                num_inference_steps=world_model.config.num_inference_steps)
    if any(s.depth == "mono" for s in specs):
        path = depth_model or os.environ.get(DEPTH_MODEL_ENV)
        if not path:
            skipped["depth_mono"] = (f"no monocular depth weights on this machine (pass --depth-model DIR or set "
                                     f"${DEPTH_MODEL_ENV} to a local Depth Anything directory)")
        elif not os.path.isdir(path):
            skipped["depth_mono"] = f"monocular depth directory {path} does not exist"
        else:
            from mirage.perception.depth import DepthAnythingProvider

            resources.mono_depth = DepthAnythingProvider.from_pretrained(path, device=world_model.device)
    runnable = [s for s in specs if s.name not in skipped]
    return runnable, resources, skipped


# ------------------------------------------------------------------------------------------------------ pieces
def noisy_depth(depth: torch.Tensor, sigma: float, cell: int, seed: int) -> torch.Tensor:
    """depth (T, H, W) times ``exp(sigma * n)``, one ``n ~ N(0, 1)`` per ``cell`` x ``cell`` block (H, W multiples
    of ``cell``), deterministic in ``seed``; invalid depth stays invalid."""
    T, H, W = depth.shape
    if H % cell or W % cell:
        raise ValueError(f"depth {H}x{W} is not a whole number of {cell}-pixel cells")
    g = torch.Generator().manual_seed(int(seed))
    n = torch.randn(T, 1, H // cell, W // cell, generator=g, dtype=torch.float64)
    factor = (sigma * F.interpolate(n, size=(H, W), mode="nearest")[:, 0]).exp()
    return (depth.double() * factor).to(depth.dtype)


def _noise_seed(name: str, seed: int, salt: int) -> int:
    return (zlib.crc32(name.encode()) * 1009 + int(seed) * 7 + salt) % (2**63)


@contextmanager
def _variant_settings(model, spec: VariantSpec, provider):
    """The model with the variant's depth provider, its inference overrides and, without the dynamic filter, no
    inconsistency test."""
    previous_provider, previous_config = model.depth_provider, model.config
    model.depth_provider = provider
    model.config = replace(model.config, **dict(spec.inference))
    if not spec.dynamic_filter:
        model.config = replace(model.config, inconsistency_threshold=NO_INCONSISTENCY_TEST)
    try:
        yield model
    finally:
        model.depth_provider, model.config = previous_provider, previous_config


def variant_memory(spec: VariantSpec, model):
    """An empty memory of the variant's kind for ``model``."""
    if spec.memory == "rgb":
        from mirage.memory import RGBPointCloudMemory

        return RGBPointCloudMemory(model.encode_images, channels=model.latent_channels, device=model.device)
    if spec.memory == "pixel_lift":
        from mirage.memory.pixel_lift import PixelLiftMemory

        return PixelLiftMemory(channels=model.latent_channels, device=model.device)
    if dict(spec.inference).get("memory_update") == "append":
        return model.new_memory(voxel_size=None)
    return model.new_memory()


def run_variant(spec: VariantSpec, world_model, clip: Clip, *, memory_frames: Clip | None = None, seed: int = 0,
                num_inference_steps: int | None = None, resources: VariantResources | None = None,
                return_memory: bool = False):
    """Roll the variant out along the clip's cameras from its first frame; returns frames (T, 3, H, W) in [0, 1]
    (and the memory after the rollout with ``return_memory``).

    memory_frames: the frames that seed the memory (default: the clip's first frame), e.g. a task's earlier pass.
    """
    resources = resources or VariantResources()
    # 1. The model and the frames
    model = world_model
    if spec.model == "single_stage":
        if resources.single_stage is None:
            raise ValueError("variant single_stage needs the single-stage model (load_variant_resources)")
        model = resources.single_stage
    if tuple(clip.image_size) != tuple(model.image_size):
        raise ValueError(f"clip {clip.name!r} is {clip.image_size}, the model works at {model.image_size}")
    sources = clip.select([0]) if memory_frames is None else memory_frames
    if clip.depth is None or sources.depth is None:
        raise ValueError(f"clip {clip.name!r} (or its memory frames) has no depth: the memory cannot be seeded")
    # 2. Depth: of the memory frames, and the provider of generated frames
    source_depth, clip_depth = sources.depth, clip.depth
    if spec.depth == "noise":
        cell = model.spatial_stride
        source_depth = noisy_depth(sources.depth, spec.depth_noise, cell, _noise_seed(sources.name, seed, 1))
        clip_depth = noisy_depth(clip.depth, spec.depth_noise, cell, _noise_seed(clip.name, seed, 2))
    if spec.depth in ("gt", "noise"):
        provider = GivenDepth(clip_depth)
    elif spec.depth == "readout":
        provider = ReadoutDepth()
    else:
        if resources.mono_depth is None:
            raise ValueError("variant depth_mono needs a monocular depth provider (load_variant_resources)")
        provider = resources.mono_depth
    # 3. Seed the memory (moving objects out when the filter is on)
    memory = variant_memory(spec, model)
    seed_exclude = sources.dynamic if spec.dynamic_filter else None
    model.observe(memory, sources.rgb, source_depth, sources.intrinsics, sources.cam_to_world, exclude=seed_exclude)
    exclude = None
    if spec.dynamic_filter and clip.dynamic is not None:
        truth = clip.dynamic

        def exclude(frame_indices, frames):  # the ground truth's moving objects at the written frames
            return truth[torch.as_tensor(frame_indices, dtype=torch.long)]

    # 4. Roll out
    with _variant_settings(model, spec, provider):
        result = model.rollout(memory, clip.intrinsics, clip.cam_to_world, first_frame=clip.rgb[0], seed=seed,
                               num_inference_steps=num_inference_steps, exclude=exclude)
    frames = torch.from_numpy(result.frames).permute(0, 3, 1, 2).float() / 255.0
    return (frames, memory) if return_memory else frames
