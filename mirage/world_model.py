"""MirageWorldModel: chunk-wise autoregressive video generation along a camera trajectory, with latent memory.

One rollout (paper Sec. 3, Eq. 5-6), chunk by chunk (:mod:`mirage.rollout` says how frames are chunked):

1. **read** the memory at the camera of every latent frame of the window (z-buffered latent readout,
   visibility mask) and build the Plücker rays of those cameras;
2. **denoise** the window with flow matching (UniPC, shift 5): the context latent frames are clean
   (timestep 0, re-imposed after every step, :mod:`mirage.sampling`); the readout, mask and rays condition
   :class:`~mirage.models.MirageTransformer`;
3. **decode** the window to pixels;
4. **depth**: the depth provider gives metric depth of each new latent frame's representative pixel frame
   (aligned to the memory's depth where both exist);
5. **update** the memory: each representative frame is re-encoded alone (a clean single-frame latent),
   dynamic / sky / invalid / inconsistent cells are excluded (:mod:`mirage.dynamic`), the rest is
   back-projected into the memory. The last re-encoded frame is the next chunk's context.

Frame 0 is the conditioning frame: ``first_frame`` when given, otherwise the memory readout at pose 0 (its
latent is the context, its decoding is frame 0); rolling out from an empty memory without a first frame is
an error. A ``first_depth`` with the first frame seeds the memory before chunk 0.

Rays are expressed relative to the camera of the window's first latent frame (:func:`window_relative_poses`):
the model sees the motion within a chunk; where the chunk sits in the world comes from the memory readout.

Modes: "full" (the above), "memory_only" (decode the readout without denoising: a fast preview and a
diagnostic of what the memory holds; writes nothing) and "no_memory" (the camera-conditioned video model
alone: no read, no side branch, no update). Any object with the memory's ``read_batch`` / ``insert_batch``
works as the memory; one with ``stores_pixels = True`` (:class:`mirage.rgb_memory.RGBCacheMemory`, the RGB
point-cloud baseline) is given RGB frames instead of re-encoded latents.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .camera import (
    TEMPORAL_STRIDE,
    invert_pose,
    latent_size,
    validate_depth,
    validate_intrinsics,
    validate_pose,
)
from .depth import ReadoutDepth, align_depth_scale
from .dynamic import exclusion_mask, inconsistency_mask
from .pointcloud import pool_depth
from .rollout import (
    CancelToken,
    Chunk,
    PhaseTimer,
    RolloutCancelled,
    RolloutProgress,
    RolloutResult,
    plan_chunks,
)
from .sampling import make_scheduler, sample_chunk
from .world_model_io import (
    CONFIG_NAME,
    PART_PATHS,
    WorldModelConfig,
    build_transformer,
    depth_provider_from_name,
    load_parts,
    resolve_pretrained,
)

__all__ = [
    "MirageWorldModel",
    "WorldModelConfig",
    "CancelToken",
    "RolloutCancelled",
    "RolloutProgress",
    "RolloutResult",
    "window_relative_poses",
    "CONFIG_NAME",
]


def window_relative_poses(cam_to_world: torch.Tensor) -> torch.Tensor:
    """(F, 4, 4) poses -> the same poses in the frame of the first one (the first becomes identity)."""
    return invert_pose(cam_to_world[:1].double()) @ cam_to_world.double()


class MirageWorldModel:
    """Backbone (VAE, scheduler, text) + MirageTransformer + depth provider (+ optional segmenter).

    Attributes: ``config`` (:class:`WorldModelConfig`), ``backbone`` (:class:`mirage.models.Backbone`),
    ``transformer`` (:class:`mirage.models.MirageTransformer`), ``depth_provider`` (default
    :class:`~mirage.depth.ReadoutDepth`), ``segmenter`` (an :class:`~mirage.dynamic.OpenVocabularySegmenter`
    or None).
    """

    def __init__(self, config: WorldModelConfig, backbone, transformer, depth_provider=None, segmenter=None):
        self.config = config
        self.backbone = backbone
        self.transformer = transformer.eval()
        self.depth_provider = depth_provider if depth_provider is not None else ReadoutDepth()
        self.segmenter = segmenter

    # ------------------------------------------------------------------ properties
    @property
    def height(self) -> int:
        return self.config.height

    @property
    def width(self) -> int:
        return self.config.width

    @property
    def image_size(self) -> tuple[int, int]:
        return self.config.height, self.config.width

    @property
    def latent_size(self) -> tuple[int, int]:
        return latent_size(self.config.height, self.config.width)

    @property
    def chunk_frames(self) -> int:
        return self.config.chunk_frames

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.dtype

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "tiny", device="cpu", torch_dtype=torch.float32,
                        **overrides) -> "MirageWorldModel":
        """Build or load a world model.

        name_or_path:
            * "tiny": random tiny backbone (D's ``load_backbone("tiny")``) + zero-initialised side branch and
              camera embedding; "wan22_5b-random": the real 5B shapes with random weights (benchmarks).
            * "mirage-tiny": the trained tiny weights shipped under ``mirage/assets/mirage-tiny/``.
            * a directory written by :meth:`save_pretrained` (``mirage_world_model.json``).
            * a Wan2.2 diffusers directory or hub id (``transformer/ vae/ scheduler/``): 704x1280 defaults,
              fresh side branch unless checkpoints are given.
        overrides: any :class:`WorldModelConfig` field, plus ``adapters_path`` (a directory with side_branch/,
            camera_embedding/, lora/ to load instead of the saved / fresh ones, e.g. a training checkpoint),
            ``side_branch_path`` / ``camera_embedding_path`` / ``lora_path`` (one part's directory each,
            applied after ``adapters_path``),
            ``depth_provider`` (an object, "readout", or a Depth Anything directory / hub id), ``segmenter``,
            ``backbone_kwargs`` (passed to :func:`mirage.models.load_backbone`).
        """
        from .models import load_backbone

        adapters_path = overrides.pop("adapters_path", None)
        part_paths = {k: overrides.pop(k) for k in PART_PATHS if overrides.get(k) is not None}
        for k in PART_PATHS:
            overrides.pop(k, None)
        depth_provider = overrides.pop("depth_provider", None)
        segmenter = overrides.pop("segmenter", None)
        backbone_kwargs = overrides.pop("backbone_kwargs", {}) or {}
        config, _, saved_adapters = resolve_pretrained(name_or_path, overrides)
        backbone = load_backbone(config.backbone, torch_dtype=torch_dtype, device=device, seed=config.backbone_seed,
                                 **backbone_kwargs)
        transformer = build_transformer(backbone.transformer, config, adapters_path or saved_adapters)
        load_parts(transformer, part_paths)
        if isinstance(depth_provider, str):
            depth_provider = depth_provider_from_name(depth_provider, device)
        return cls(config, backbone, transformer, depth_provider=depth_provider, segmenter=segmenter)

    def save_pretrained(self, path: str | os.PathLike, copy_backbone: bool | None = None) -> None:
        """Write the config json, the trained modules (side_branch/, camera_embedding/, lora/, D's
        ``save_adapters`` layout) and, when ``copy_backbone``, the backbone weights (backbone/), so the
        directory reloads bit for bit. By default the backbone is copied when it has random weights (a
        built-in config) or was itself the backbone/ of a world-model directory (so re-saving a trained tiny
        model stays self-contained); otherwise (a Wan2.2 directory or hub id) it is referenced, not copied."""
        from .models.checkpoints import save_adapters
        from .models.lora import lora_adapters, remove_lora

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = replace(self.config)
        adapters = lora_adapters(self.transformer)
        if copy_backbone is None:
            source = Path(self.config.backbone)
            copy_backbone = getattr(self.backbone, "random_weights", False) or (
                source.name == "backbone" and (source.parent / CONFIG_NAME).is_file())
        if copy_backbone:
            backbone = self.backbone
            if adapters:  # the backbone is saved bare; its LoRA goes to lora/ with the other adapters
                backbone = copy.copy(self.backbone)
                backbone.transformer = copy.deepcopy(self.backbone.transformer)
                remove_lora(backbone.transformer)
            backbone.save_pretrained(path / "backbone")
            config.backbone = "backbone"
        save_adapters(self.transformer, path, lora_adapter=adapters[0] if adapters else "default")
        with open(path / CONFIG_NAME, "w") as f:
            json.dump(asdict(config), f, indent=2)

    # ------------------------------------------------------------------ memory helpers
    def new_memory(self, **kw):
        """An empty :class:`~mirage.memory.LatentSpatialMemory` with this model's channels and voxel size."""
        from .memory import LatentSpatialMemory

        kw.setdefault("channels", self.backbone.latent_channels)
        kw.setdefault("voxel_size", self.config.voxel_size)
        kw.setdefault("device", self.device)
        return LatentSpatialMemory(**kw)

    @torch.no_grad()
    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 48, H/16, W/16) normalised latents, each frame encoded alone
        (a single-frame clip, i.e. the causal VAE's latent 0)."""
        if not isinstance(rgb, torch.Tensor) or rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ValueError(f"rgb must have shape (N, 3, H, W), got {tuple(getattr(rgb, 'shape', ()))}")
        latent_size(*rgb.shape[-2:])  # raises unless multiples of 16
        video = (rgb.to(self.device, torch.float32) * 2 - 1)[:, :, None]
        return self.backbone.encode(video)[:, :, 0]

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, 48, F, h, w) -> (B, 3, 1 + 4(F-1), 16h, 16w) in [0, 1]."""
        return ((self.backbone.decode(latents).float() + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def observe(self, memory, rgb, depth, intrinsics, cam_to_world, exclude=None) -> int:
        """Encode frame(s) and insert them: rgb (3,H,W) or (N,3,H,W) in [0,1], depth (H,W) / (N,H,W) metres,
        intrinsics at (H, W), cam_to_world (4,4) / (N,4,4). Returns the number of cells written."""
        single = rgb.ndim == 3
        if getattr(memory, "stores_pixels", False):  # an RGB cache (mirage.rgb_memory): no encoding
            latents = (rgb[None] if single else rgb).float()
        else:
            latents = self.encode_images(rgb[None] if single else rgb).to(memory.dtype)
        if single:
            return memory.insert(latents[0], depth, intrinsics, cam_to_world, exclude=exclude)
        return memory.insert_batch(latents, depth, intrinsics, cam_to_world, exclude=exclude)

    # ------------------------------------------------------------------ rollout
    @torch.no_grad()
    def rollout(
        self,
        memory,
        intrinsics: torch.Tensor,
        cam_to_world: torch.Tensor,
        *,
        first_frame: torch.Tensor | None = None,
        first_depth: torch.Tensor | None = None,
        prompt: str = "",
        seed: int = 0,
        progress: Callable[[RolloutProgress], None] | None = None,
        cancel: CancelToken | None = None,
        mode: str = "full",
        update_memory: bool = True,
        num_inference_steps: int | None = None,
        exclude: Callable[[int, torch.Tensor], torch.Tensor | None] | None = None,
        step_callback: Callable[[Chunk, int, torch.Tensor], None] | None = None,
        on_frames: Callable[[int, np.ndarray], None] | None = None,
    ) -> RolloutResult:
        """Generate T frames along ``cam_to_world``.

        memory: a LatentSpatialMemory (may be None when ``first_frame`` and ``first_depth`` seed a new one).
        intrinsics: (3, 3) or (T, 3, 3) at the model's (height, width). cam_to_world: (T, 4, 4); T = 1 + 4m.
        first_frame: (3, H, W) in [0, 1]; first_depth: (H, W) metres (seeds the memory with frame 0).
        mode: "full" (denoise with the memory), "memory_only" (decode the readout without denoising, never
            writes the memory: a fast preview / diagnostic) or "no_memory" (denoise without reading or
            writing any memory: the plain camera-conditioned video model; ``memory`` may be None).
        exclude: optional ``exclude(frame_indices (n,), frames (n,3,H,W)) -> (n,H,W) bool | None``: extra
            exclusion masks for the frames written to the memory (e.g. a tracker's dynamic masks).
        step_callback: diagnostic hook ``(chunk, step, latents (1,48,F,h,w))`` after every denoising step.
        on_frames: ``on_frames(first_index, frames (n, H, W, 3) uint8)`` as soon as frames exist (frame 0, then
            each chunk's new frames), so callers can stream them instead of waiting for the whole rollout.
        Raises ValueError on bad input (nothing written), RolloutCancelled when ``cancel`` fires (the memory
        keeps the chunks finished before; the chunk being generated writes nothing).
        """
        if mode not in ("full", "memory_only", "no_memory"):
            raise ValueError(f"mode must be 'full', 'memory_only' or 'no_memory', got {mode!r}")
        K, c2w = self._check_trajectory(intrinsics, cam_to_world)
        T = c2w.shape[0]
        chunks = plan_chunks(T, self.config.chunk_latent_frames, self.config.context_latent_frames)
        first_frame, first_depth = self._check_first(first_frame, first_depth)
        steps = self.config.num_inference_steps if num_inference_steps is None else int(num_inference_steps)
        if steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {steps}")
        if mode == "no_memory":
            if first_frame is None:
                raise ValueError("mode='no_memory' needs a first_frame")
            memory, first_depth, update_memory = None, None, False
        elif memory is None:
            if first_depth is None:
                raise ValueError("no memory given: pass one, or first_frame with first_depth to seed a new one")
            memory = self.new_memory()
        if memory is not None:
            channels = int(memory.stats()["channels"])
            if channels != self.backbone.latent_channels:
                raise ValueError(f"memory has {channels} channels, the model needs {self.backbone.latent_channels}")
            if first_frame is None and len(memory) == 0:
                raise ValueError("the memory is empty and no first_frame was given: nothing to start from")
        text = self.backbone.encode_prompt(prompt)

        sync = torch.cuda.synchronize if self.device.type == "cuda" else None
        timer = PhaseTimer(sync)
        H, W = self.image_size
        frames = torch.zeros(T, 3, H, W)
        generator = torch.Generator("cpu").manual_seed(int(seed))
        result = RolloutResult(frames=np.zeros((0,)))

        with timer.phase("memory_update"):
            if first_depth is not None:
                result.memory_points_added += self.observe(memory, first_frame, first_depth, K[0], c2w[0])
        frames[0], context = self._first_context(memory, first_frame, K[0], c2w[0], timer)
        frames_done = 1
        if on_frames is not None:
            on_frames(0, _to_uint8(frames[:1]))

        def report(chunk_index: int, step: int) -> None:
            if progress is not None:
                progress(RolloutProgress(frames_done, T, chunk_index, len(chunks), step, steps, timer.elapsed))

        for chunk in chunks:
            idx = torch.arange(chunk.start, chunk.start + chunk.length) * TEMPORAL_STRIDE
            K_w, P_w = K[idx], c2w[idx]
            readout = memory_latents = memory_mask = None
            with timer.phase("memory_read"):
                if memory is not None:
                    readout = memory.read_batch(K_w, P_w, (H, W), self.latent_size)
                    memory_latents = readout.features.to(self.device, self.dtype).transpose(0, 1)[None]
                    memory_mask = readout.mask.to(self.device)[None, None]
                rays = self._rays(K_w, P_w) if self.transformer.camera_embedding is not None else None
            # latents stay float32 between steps (as in the diffusers Wan pipelines); the transformer casts
            window = torch.zeros(1, self.backbone.latent_channels, chunk.length, *self.latent_size,
                                 device=self.device, dtype=torch.float32)
            window[0, :, : chunk.context] = context.to(self.device, torch.float32).transpose(0, 1)
            is_context = torch.arange(chunk.length) < chunk.context

            if mode == "memory_only":
                latents = torch.where(is_context.to(self.device).view(1, 1, -1, 1, 1), window, memory_latents.float())
            else:
                latents = self._denoise(chunk, window, is_context, memory_latents, memory_mask, rays, text,
                                        generator, steps, cancel, step_callback, report, timer)
            with timer.phase("decode"):
                video = self.decode_latents(latents)[0].transpose(0, 1).cpu()  # (1+4(F-1), 3, H, W)
            offset = TEMPORAL_STRIDE * chunk.start
            new = chunk.new_pixel_frames
            frames[new.start : new.stop] = video[new.start - offset : new.stop - offset]
            frames_done = new.stop
            if on_frames is not None:
                on_frames(new.start, _to_uint8(frames[new.start : new.stop]))

            if mode == "memory_only":
                context = latents[0, :, -self.config.context_latent_frames :].transpose(0, 1)
            else:
                context = self._update(memory, chunk, frames, readout, K, c2w, update_memory, exclude, result, timer)
            report(chunk.index + 1, steps)

        result.frames = _to_uint8(frames)
        result.timings = dict(timer.seconds)
        result.timings["total"] = timer.elapsed
        result.seconds_per_frame = result.timings["total"] / max(T - 1, 1)
        return result

    # ------------------------------------------------------------------ rollout pieces
    def _denoise(self, chunk, window, is_context, memory_latents, memory_mask, rays, text, generator, steps,
                 cancel, step_callback, report, timer):
        noise = torch.randn(window.shape, generator=generator, dtype=torch.float32).to(self.device)
        memory_kw = {}
        if self.transformer.side_branch is not None and memory_latents is not None:
            memory_kw = dict(memory_latents=memory_latents, memory_mask=memory_mask,
                             memory_scale=self.config.memory_scale)

        def model(latents, timestep):
            return self.transformer(latents, timestep, text, rays=rays, **memory_kw)

        def on_step(i, latents):
            if step_callback is not None:
                step_callback(chunk, i, latents)
            report(chunk.index, i + 1)

        with timer.phase("denoise"):
            latents = sample_chunk(model, noise, window, is_context, make_scheduler(self.config.flow_shift), steps,
                                   patch_size=self.transformer.patch_size, on_step=on_step,
                                   should_stop=(lambda: cancel.cancelled) if cancel is not None else None)
        if latents is None:
            raise RolloutCancelled(f"rollout cancelled during chunk {chunk.index}")
        return latents

    def _first_context(self, memory, first_frame, K0, P0, timer):
        """Frame 0 (3, H, W) and the context latent (1, 48, h, w) of chunk 0."""
        if first_frame is not None:
            with timer.phase("memory_update"):
                return first_frame.cpu(), self.encode_images(first_frame[None])
        with timer.phase("memory_read"):
            readout = memory.read(K0, P0, self.image_size, self.latent_size)
        if not bool(readout.mask.any()):
            raise ValueError("the memory holds nothing visible from pose 0 and no first_frame was given")
        latent = readout.features.to(self.device, self.dtype)[None]
        with timer.phase("decode"):
            frame0 = self.decode_latents(latent[:, :, None])[0, :, 0].cpu()
        return frame0, latent

    def _update(self, memory, chunk, frames, readout, K, c2w, update_memory, exclude, result, timer):
        """Re-encode the chunk's new representative frames, write them to the memory; return the next context."""
        new_latents = torch.tensor(list(chunk.new_latent_indices))
        pixel = new_latents * TEMPORAL_STRIDE
        rgb = frames[pixel]
        stores_pixels = getattr(memory, "stores_pixels", False)
        with timer.phase("memory_update"):
            if update_memory and not stores_pixels:
                clean = self.encode_images(rgb)  # (n, 48, h, w), each frame alone
                last = clean[-1:]
            else:  # only the next chunk's context needs a latent
                last = self.encode_images(rgb[-1:])
        n_ctx = self.config.context_latent_frames
        if n_ctx == 1:
            context = last
        else:  # a clip ending at the last frame encodes into n_ctx latents, the first a single-frame one
            last = int(pixel[-1])
            clip = frames[last - TEMPORAL_STRIDE * (n_ctx - 1) : last + 1].to(self.device) * 2 - 1
            with timer.phase("memory_update"):
                context = self.backbone.encode(clip.transpose(0, 1)[None])[0].transpose(0, 1)
        if not update_memory:
            return context

        K_n, P_n = K[pixel], c2w[pixel]
        positions = new_latents - chunk.start
        ref_depth = readout.depth[positions].float().cpu()
        ref_mask = readout.mask[positions].cpu()
        with timer.phase("depth"):
            depth = self.depth_provider(rgb, intrinsics=K_n, cam_to_world=P_n, frame_indices=pixel,
                                        memory=memory).float().cpu()
            depth = self._align(depth, ref_depth, ref_mask, result)
        with timer.phase("memory_update"):
            mask = exclusion_mask(depth, max_depth=self.config.max_depth)
            mask |= inconsistency_mask(depth, ref_depth, ref_mask, self.config.inconsistency_threshold)
            if self.segmenter is not None:
                mask |= self.segmenter(rgb).cpu()
            if exclude is not None:
                extra = exclude(pixel, rgb)
                if extra is not None:
                    mask |= extra.bool().cpu()
            store = rgb if stores_pixels else clean.to(memory.dtype)
            result.memory_points_added += memory.insert_batch(store, depth, K_n, P_n, exclude=mask)
        return context

    def _align(self, depth, ref_depth, ref_mask, result):
        """Scale each frame's depth to the memory where they overlap; drop frames a relative provider can't place."""
        metric = getattr(self.depth_provider, "metric", True)
        if not self.config.align_depth and metric:
            return depth
        out = depth.clone()
        sampled, _ = pool_depth(depth, ref_depth.shape[-2:])  # the memory's own cell depth rule
        for i in range(depth.shape[0]):
            scale = align_depth_scale(sampled[i], ref_depth[i], ref_mask[i], self.config.min_alignment_cells)
            result.depth_scales.append(scale)
            if scale is not None:
                out[i] = depth[i] * scale
            elif not metric:
                out[i] = float("nan")  # depth only known up to scale and nothing to anchor it: keep it out
        return out

    def _rays(self, K_w, P_w):
        from .models import latent_rays

        rel = window_relative_poses(P_w).float()
        return latent_rays(K_w, rel, self.image_size, self.latent_size)[None].to(self.device, self.dtype)

    # ------------------------------------------------------------------ validation
    def _check_trajectory(self, intrinsics, cam_to_world):
        if not isinstance(cam_to_world, torch.Tensor) or cam_to_world.ndim != 3 or cam_to_world.shape[-2:] != (4, 4):
            raise ValueError(f"cam_to_world must have shape (T, 4, 4), got "
                             f"{tuple(getattr(cam_to_world, 'shape', ()))}")
        T = cam_to_world.shape[0]
        if T == 0:
            raise ValueError("cam_to_world holds zero frames")
        validate_pose(cam_to_world.float().cpu(), "cam_to_world")
        validate_intrinsics(intrinsics, "intrinsics")
        if intrinsics.ndim == 2:
            K = intrinsics.float().cpu().expand(T, 3, 3).contiguous()
        elif intrinsics.ndim == 3 and intrinsics.shape[0] == T:
            K = intrinsics.float().cpu()
        else:
            raise ValueError(f"intrinsics must be (3, 3) or (T={T}, 3, 3), got {tuple(intrinsics.shape)}")
        return K, cam_to_world.float().cpu()

    def _check_first(self, first_frame, first_depth):
        H, W = self.image_size
        if first_frame is not None:
            if not isinstance(first_frame, torch.Tensor) or tuple(first_frame.shape) != (3, H, W):
                raise ValueError(f"first_frame must have shape (3, {H}, {W}) (the model's image size), got "
                                 f"{tuple(getattr(first_frame, 'shape', ()))}")
            if not torch.isfinite(first_frame).all():
                raise ValueError("first_frame has non-finite values")
            first_frame = first_frame.float().clamp(0, 1)
        if first_depth is not None:
            if first_frame is None:
                raise ValueError("first_depth needs first_frame")
            validate_depth(first_depth, "first_depth")
            if tuple(first_depth.shape) != (H, W):
                raise ValueError(f"first_depth must have shape ({H}, {W}), got {tuple(first_depth.shape)}")
        return first_frame, first_depth


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(n, 3, H, W) float in [0, 1] -> (n, H, W, 3) uint8."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
