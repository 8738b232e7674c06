"""The methods compared by ``mirage eval``, all driven through the same :meth:`MirageWorldModel.rollout`.

The memory of every memory method is seeded with the *memory frames*: the clip's first frame (the ``"loop"``
protocol), or the earlier pass of a :class:`~mirage.data.memory_task.MemoryTask` (the ``"memory"`` protocol).

* ``latent`` (ours): latent spatial memory, seeded with the memory frames, updated after every chunk.
* ``rgb_cache``: the RGB point-cloud baseline (paper Eq. 1-2, :class:`mirage.memory.RGBPointCloudMemory`): the
  same rollout, but every readout rasterises an RGB point cloud at pixel resolution and re-encodes it with
  the VAE; generated frames are stored as coloured points.
* ``none``: no memory: the side branch is off (``mode="no_memory"``), nothing is read or stored; the plain
  camera-conditioned video model.
* ``reprojection``: memory only, no diffusion: the latent readout of the seeded memory is decoded.

Controls (:data:`CONTROLS`), which tell whether the memory's *content* is what helps:

* ``shuffled``: the ``latent`` memory with its features permuted among its points
  (:func:`mirage.eval.controls.shuffled_memory`, fixed seed); updated after every chunk like ``latent``;
* ``empty``: an empty memory with the side branch on, never written: every readout is zeros with an all-false
  mask, the honest "no content" input (what ``none`` was before the memory protocol);
* ``oracle``: an upper bound: the memory frames and the ground truth of every target frame, never overwritten
  by generated frames;
* ``repeat_first``: no model at all: every frame is the first (conditioning) frame, as the rollout returns it
  (8-bit). What a predictor that does not know the camera moved scores; a method that does not beat it has learnt
  nothing about the camera path.

Every method starts from the same first frame, cameras, seed and depth source, so differences come from the
memory alone.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch

from mirage.data.clip import Clip
from mirage.perception.depth import GivenDepth
from mirage.eval.controls import SHUFFLE_SEED, shuffled_memory
from mirage.memory import RGBPointCloudMemory

__all__ = ["METHODS", "CONTROLS", "ALL_METHODS", "MEMORY_METHODS", "method_memory", "run_method"]

METHODS = ("latent", "rgb_cache", "none", "reprojection")
CONTROLS = ("shuffled", "empty", "oracle", "repeat_first")
ALL_METHODS = METHODS + CONTROLS
MEMORY_METHODS = ("latent", "shuffled", "empty", "none", "rgb_cache", "reprojection", "oracle",
                  "repeat_first")  # memory protocol


@contextmanager
def _depth_provider(world_model, provider):
    previous = world_model.depth_provider
    if provider is not None:
        world_model.depth_provider = provider
    try:
        yield
    finally:
        world_model.depth_provider = previous


def _observe(world_model, memory, frames: Clip) -> None:
    if frames.depth is None:
        raise ValueError(f"clip {frames.name!r} has no depth: the memory cannot be seeded")
    world_model.observe(memory, frames.rgb, frames.depth, frames.intrinsics, frames.cam_to_world,
                        exclude=frames.dynamic)


def method_memory(method: str, world_model, clip: Clip, memory_frames: Clip | None = None,
                  shuffle_seed: int = SHUFFLE_SEED) -> tuple[object | None, dict]:
    """The memory ``method`` rolls out with (None for ``none``) and its extra rollout keywords.

    memory_frames: the frames that seed the memory (default: the clip's first frame).
    """
    if method not in ALL_METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {ALL_METHODS}")
    sources = clip.select([0]) if memory_frames is None else memory_frames
    if tuple(sources.image_size) != tuple(world_model.image_size):
        raise ValueError(f"memory frames {sources.name!r} are {sources.image_size}, the model works at "
                         f"{world_model.image_size}")
    if method in ("none", "repeat_first"):
        return None, {"mode": "no_memory"}
    if method == "rgb_cache":
        memory = RGBPointCloudMemory(world_model.encode_images, channels=world_model.latent_channels,
                                     device=world_model.device)
        if sources.depth is None:
            raise ValueError(f"clip {sources.name!r} has no depth: the memory cannot be seeded")
        memory.insert_batch(sources.rgb, sources.depth, sources.intrinsics, sources.cam_to_world,
                            exclude=sources.dynamic)
        return memory, {}
    memory = world_model.new_memory()
    if method == "empty":
        return memory, {"update_memory": False}
    _observe(world_model, memory, sources)
    if method == "shuffled":
        return shuffled_memory(memory, shuffle_seed), {}
    if method == "oracle":
        _observe(world_model, memory, clip)  # after the memory frames: the ground truth wins shared voxels
        return memory, {"update_memory": False}
    return memory, ({"mode": "memory_only"} if method == "reprojection" else {})


def run_method(method: str, world_model, clip: Clip, *, seed: int = 0, num_inference_steps: int | None = None,
               gt_depth: bool = True, progress: Callable | None = None, memory_frames: Clip | None = None,
               shuffle_seed: int = SHUFFLE_SEED) -> torch.Tensor:
    """Roll ``method`` out along the clip's cameras from its first frame; returns frames (T, 3, H, W) in [0, 1].

    gt_depth: the clip's depth serves as the depth of generated frames (``GivenDepth``; exact on synthetic
    scenes, so every method gets the same geometry); otherwise the world model's own depth provider.
    memory_frames: the frames that seed the memory methods (default: the clip's first frame), e.g. a memory
    task's earlier pass.
    """
    if method not in ALL_METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {ALL_METHODS}")
    if tuple(clip.image_size) != tuple(world_model.image_size):
        raise ValueError(f"clip {clip.name!r} is {clip.image_size}, the model works at {world_model.image_size}")
    if clip.depth is None:
        raise ValueError(f"clip {clip.name!r} has no depth: the memory cannot be seeded")
    if method == "repeat_first":  # the first frame as the rollout returns it (8-bit), at every pose
        first = (clip.rgb[0].clamp(0, 1) * 255).round() / 255
        return first.expand(clip.num_frames, *first.shape).clone()
    provider = GivenDepth(clip.depth) if gt_depth else None
    kw = dict(first_frame=clip.rgb[0], seed=seed, num_inference_steps=num_inference_steps, progress=progress)
    with _depth_provider(world_model, provider):
        memory, extra = method_memory(method, world_model, clip, memory_frames, shuffle_seed)
        result = world_model.rollout(memory, clip.intrinsics, clip.cam_to_world, **kw, **extra)
    return torch.from_numpy(result.frames).permute(0, 3, 1, 2).float() / 255.0
