"""The methods compared by ``mirage eval``, all driven through the same :meth:`MirageWorldModel.rollout`.

* ``latent`` (ours): latent spatial memory, seeded with the first frame, updated after every chunk.
* ``rgb_cache``: the RGB point-cloud baseline (paper Eq. 1-2, :class:`mirage.rgb_memory.RGBCacheMemory`): the
  same rollout, but every readout rasterises an RGB point cloud at pixel resolution and re-encodes it with
  the VAE; generated frames are stored as coloured points.
* ``none``: no memory: the model sees an empty readout (mask all False) and nothing is ever stored.
* ``reprojection``: memory only, no diffusion: the latent readout of the seeded memory is decoded.

Every method starts from the same first frame, cameras, seed and depth source, so differences come from the
memory alone.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch

from mirage.data.clip import Clip
from mirage.depth import GivenDepth
from mirage.rgb_cache import RGBPointCache
from mirage.rgb_memory import RGBCacheMemory

__all__ = ["METHODS", "run_method"]

METHODS = ("latent", "rgb_cache", "none", "reprojection")


@contextmanager
def _depth_provider(world_model, provider):
    previous = world_model.depth_provider
    if provider is not None:
        world_model.depth_provider = provider
    try:
        yield
    finally:
        world_model.depth_provider = previous


def run_method(method: str, world_model, clip: Clip, *, seed: int = 0, num_inference_steps: int | None = None,
               gt_depth: bool = True, progress: Callable | None = None) -> torch.Tensor:
    """Roll ``method`` out along the clip's cameras from its first frame; returns frames (T, 3, H, W) in [0, 1].

    gt_depth: the clip's depth serves as the depth of generated frames (``GivenDepth``; exact on synthetic
    scenes, so every method gets the same geometry); otherwise the world model's own depth provider.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    if tuple(clip.image_size) != tuple(world_model.image_size):
        raise ValueError(f"clip {clip.name!r} is {clip.image_size}, the model works at {world_model.image_size}")
    if clip.depth is None:
        raise ValueError(f"clip {clip.name!r} has no depth: the memory cannot be seeded")
    rgb0, depth0 = clip.rgb[0], clip.depth[0]
    K0, P0 = clip.intrinsics[0], clip.cam_to_world[0]
    exclude0 = clip.dynamic[0] if clip.dynamic is not None else None
    provider = GivenDepth(clip.depth) if gt_depth else None
    kw = dict(first_frame=rgb0, seed=seed, num_inference_steps=num_inference_steps, progress=progress)
    with _depth_provider(world_model, provider):
        if method == "latent":
            memory = world_model.new_memory()
            world_model.observe(memory, rgb0, depth0, K0, P0, exclude=exclude0)
            result = world_model.rollout(memory, clip.intrinsics, clip.cam_to_world, **kw)
        elif method == "rgb_cache":
            memory = RGBCacheMemory(RGBPointCache(device=world_model.device), world_model.encode_images,
                                    channels=world_model.backbone.latent_channels)
            memory.insert(rgb0, depth0, K0, P0, exclude=exclude0)
            result = world_model.rollout(memory, clip.intrinsics, clip.cam_to_world, **kw)
        elif method == "none":
            memory = world_model.new_memory()
            result = world_model.rollout(memory, clip.intrinsics, clip.cam_to_world, update_memory=False, **kw)
        else:
            memory = world_model.new_memory()
            world_model.observe(memory, rgb0, depth0, K0, P0, exclude=exclude0)
            result = world_model.rollout(memory, clip.intrinsics, clip.cam_to_world, mode="memory_only", **kw)
    return torch.from_numpy(result.frames).permute(0, 3, 1, 2).float() / 255.0
