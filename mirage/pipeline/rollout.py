"""The rollout: chunk-wise autoregressive generation along a camera trajectory with latent memory (paper Sec. 3).

:func:`rollout` runs numbered steps over one :class:`RolloutState` (:mod:`mirage.pipeline.chunks` says how frames
are chunked):

1. **check inputs**: trajectory, first frame / depth, mode, memory; then the :class:`RolloutState` is built;
2. **prepare the first frame**: seed the memory with ``first_depth``; frame 0 is ``first_frame`` or, without one,
   the memory decoded at pose 0; its single-frame encoding is chunk 0's clean context (the readout itself where
   the memory holds that latent type: :attr:`MirageWorldModel.memory_holds_context_type`);
   then for every chunk:
3. **condition** the window (:func:`mirage.pipeline.conditioning.chunk_conditioning`, shared with training): the
   memory readout + mask at the camera of every latent frame, Plücker rays, the window with its clean context;
   optionally the reference code's extra context: earlier latents appended after the window
   (``preceding_latent_frames``, :mod:`mirage.pipeline.preceding`) and retrieved ones before it
   (``reference_frames``, :mod:`mirage.pipeline.retrieval`);
4. **denoise** it with flow matching (UniPC, shift 5; context kept clean, :mod:`mirage.pipeline.sampling`);
5. **decode** it to pixels and stream the new frames;
6. **update memory**: depth of each new latent frame's representative pixel frame (the depth provider, aligned to
   the memory's depth), exclusion masks (dynamic / sky / invalid / inconsistent cells, :mod:`mirage.perception.exclusion`),
   then ``memory.observe_batch`` at those frames' poses with the chunk's denoised latents
   (``config.memory_latents="denoised"``) or the decoded frames re-encoded (``"reencoded"``); an RGB memory stores
   the pixels either way. The last frames, re-encoded as the start of a window (``config.chunk_seed="reencoded"``)
   or the last denoised latents as they are (``"denoised"``), are the next chunk's context.

Modes: "full" (the above), "memory_only" (the readout replaces denoising: a fast preview and a diagnostic of what
the memory holds; writes nothing) and "no_memory" (the camera-conditioned video model alone: no read, no side
branch, no update).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from mirage.camera import batch_intrinsics, validate_depth, validate_pose
from mirage.perception.depth import align_depth_scale
from mirage.perception.exclusion import exclusion_mask, inconsistency_mask
from mirage.media import to_uint8
from mirage.pipeline.chunks import Chunk, plan_chunks
from mirage.pipeline.conditioning import ChunkConditioning, chunk_conditioning
from mirage.pipeline.preceding import record_history, with_preceding
from mirage.pipeline.retrieval import record_visibility, select_reference_frames, with_reference_frames
from mirage.pipeline.outputs import CancelToken, PhaseTimer, RolloutCancelled, RolloutProgress, RolloutResult
from mirage.pipeline.sampling import make_scheduler, sample_chunk
from mirage.memory.lifting import pool_depth

__all__ = ["rollout", "RolloutState", "RolloutHooks", "MODES"]

MODES = ("full", "memory_only", "no_memory")


@dataclass
class RolloutHooks:
    """The caller's callbacks (see :func:`rollout`); each may be None."""

    progress: Callable[[RolloutProgress], None] | None = None
    cancel: CancelToken | None = None
    exclude: Callable[[torch.Tensor, torch.Tensor], torch.Tensor | None] | None = None
    step_callback: Callable[[Chunk, int, torch.Tensor], None] | None = None
    on_frames: Callable[[int, np.ndarray], None] | None = None


@dataclass
class RolloutState:
    """What the steps of one rollout share.

    Set by step 1: intrinsics (T, 3, 3) and cam_to_world (T, 4, 4) float32 on the CPU at the model's image size;
    chunks; memory (None in "no_memory" mode); mode; write_memory (whether step 6 writes); num_steps; text
    (1, L, D) prompt embedding; generator (CPU, seeded); hooks; timer; guidance_scale and negative_text (the
    negative prompt's embedding, None without guidance).
    Advanced by the steps: frames (T, 3, H, W) float32 in [0, 1] on the CPU, frames_done, context (c, C, h, w)
    the clean latents the next window starts with, result (memory_points_added, depth_scales; frames and timings
    at the end).
    """

    intrinsics: torch.Tensor
    cam_to_world: torch.Tensor
    chunks: list[Chunk]
    memory: object | None
    mode: str
    write_memory: bool
    num_steps: int
    text: torch.Tensor
    generator: torch.Generator
    hooks: RolloutHooks
    timer: PhaseTimer
    frames: torch.Tensor
    frames_done: int = 0
    context: torch.Tensor | None = None
    result: RolloutResult | None = None
    guidance_scale: float = 1.0
    negative_text: torch.Tensor | None = None
    history: dict = field(default_factory=dict)  # latent index -> (latent, readout, mask): preceding / references
    visible: dict = field(default_factory=dict)  # latent index -> voxel keys in its view: reference retrieval

    def report(self, chunks_done: int, step: int) -> None:
        if self.hooks.progress is not None:
            self.hooks.progress(RolloutProgress(self.frames_done, self.frames.shape[0], chunks_done,
                                                len(self.chunks), step, self.num_steps, self.timer.elapsed))


@torch.no_grad()
def rollout(
    model,
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
    exclude: Callable[[torch.Tensor, torch.Tensor], torch.Tensor | None] | None = None,
    step_callback: Callable[[Chunk, int, torch.Tensor], None] | None = None,
    on_frames: Callable[[int, np.ndarray], None] | None = None,
    guidance_scale: float | None = None,
    negative_prompt: str = "",
) -> RolloutResult:
    """Generate T frames along ``cam_to_world`` with ``model`` (a :class:`~mirage.pipeline.MirageWorldModel`).

    memory: a spatial memory (latent, or the RGB baseline); may be None when ``first_frame`` and ``first_depth``
        seed a new latent one, or in "no_memory" mode.
    intrinsics: (3, 3) or (T, 3, 3) at the model's (height, width). cam_to_world: (T, 4, 4); T = 1 + s m for the
        model's temporal stride s (:func:`mirage.pipeline.chunks.pad_trajectory` pads a goal).
    first_frame: (3, H, W) in [0, 1]; first_depth: (H, W) metres (seeds the memory with frame 0).
    mode: "full", "memory_only" (never writes the memory) or "no_memory" (no read, no write; needs first_frame).
    exclude: ``exclude(frame_indices (n,), frames (n,3,H,W)) -> (n,H,W) bool | None``: extra exclusion masks for
        the frames written to the memory (e.g. a tracker's dynamic masks).
    step_callback: diagnostic hook ``(chunk, step, latents (1,C,F,h,w))`` after every denoising step.
    on_frames: ``on_frames(first_index, frames (n, H, W, 3) uint8)`` as soon as frames exist (frame 0, then each
        chunk's new frames), so callers can stream them instead of waiting for the whole rollout.
    guidance_scale: classifier-free guidance (None: ``config.guidance_scale``; 1.0: none, one pass per step);
        negative_prompt: its unconditional prompt (empty, as the reference's). With prompt == negative prompt
        (e.g. both empty) guidance changes nothing but doubles the passes.
    Raises ValueError on bad input (nothing written), RolloutCancelled when ``cancel`` fires (the memory keeps the
    chunks finished before; the chunk being generated writes nothing).
    """
    # 1. Check inputs (nothing is written before all of them pass)
    if mode not in MODES:
        raise ValueError(f"mode must be 'full', 'memory_only' or 'no_memory', got {mode!r}")
    K, c2w = check_trajectory(intrinsics, cam_to_world)
    chunks = plan_chunks(c2w.shape[0], model.chunk_latent_frames, model.config.context_latent_frames,
                         temporal_stride=model.temporal_stride)
    first_frame = check_first_frame(model, first_frame, first_depth)
    steps = model.config.num_inference_steps if num_inference_steps is None else int(num_inference_steps)
    if steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {steps}")
    scale = float(model.config.guidance_scale if guidance_scale is None else guidance_scale)
    if not scale > 0:
        raise ValueError(f"guidance_scale must be positive (1.0: no guidance), got {scale}")
    memory = resolve_memory(model, memory, mode, first_frame, first_depth)
    state = RolloutState(
        intrinsics=K, cam_to_world=c2w, chunks=chunks, memory=memory, mode=mode,
        write_memory=bool(update_memory) and mode == "full", num_steps=steps, text=model.backbone.encode_prompt(prompt),
        generator=torch.Generator("cpu").manual_seed(int(seed)),
        hooks=RolloutHooks(progress, cancel, exclude, step_callback, on_frames),
        timer=PhaseTimer(torch.cuda.synchronize if model.device.type == "cuda" else None),
        frames=torch.zeros(c2w.shape[0], 3, *model.image_size), result=RolloutResult(frames=np.zeros((0,))),
        guidance_scale=scale, negative_text=model.backbone.encode_prompt(negative_prompt) if scale != 1 else None)
    # 2. Prepare the first frame (seed the memory, frame 0, chunk 0's context)
    prepare_first_frame(model, state, first_frame, first_depth if memory is not None else None)
    for chunk in state.chunks:
        # 3. Condition the window on the memory, the cameras and the clean context
        with state.timer.phase("memory_read"):
            frames = chunk.pixel_frames
            cond = chunk_conditioning(model, state.memory, state.intrinsics[frames], state.cam_to_world[frames],
                                      state.context)
            window_cond = cond
            if model.config.preceding_latent_frames:  # the reference's layout: earlier latents after the window
                cond = with_preceding(model, state, chunk, cond, model.config.preceding_latent_frames)
            if model.config.reference_frames:  # retrieved earlier latents before it
                cond = with_reference_frames(model, state, chunk, cond, select_reference_frames(model, state, chunk))
        # 4. Denoise (the window's own frames come back)
        latents = denoise_chunk(model, state, chunk, cond)
        if model.config.preceding_latent_frames or model.config.reference_frames:
            record_history(state, chunk, window_cond, latents)
        # 5. Decode
        decode_chunk(model, state, chunk, latents)
        # 6. Update memory (and the next chunk's context)
        update_chunk_memory(model, state, chunk, window_cond, latents)
        if model.config.reference_frames and state.memory is not None:
            record_visibility(model, state, chunk)
        state.report(chunk.index + 1, state.num_steps)
    result = state.result
    result.frames = to_uint8(state.frames)
    result.timings = dict(state.timer.seconds)
    result.timings["total"] = state.timer.elapsed
    result.seconds_per_frame = result.timings["total"] / max(state.frames.shape[0] - 1, 1)
    return result


# ---------------------------------------------------------------------------------------------------------- steps
def check_trajectory(intrinsics, cam_to_world) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 1: (3, 3) | (T, 3, 3) intrinsics and (T, 4, 4) poses -> both float32 on the CPU, (T, 3, 3) and (T, 4, 4)."""
    if not isinstance(cam_to_world, torch.Tensor) or cam_to_world.ndim != 3 or cam_to_world.shape[-2:] != (4, 4):
        raise ValueError(f"cam_to_world must have shape (T, 4, 4), got {tuple(getattr(cam_to_world, 'shape', ()))}")
    if cam_to_world.shape[0] == 0:
        raise ValueError("cam_to_world holds zero frames")
    c2w = cam_to_world.float().cpu()
    validate_pose(c2w, "cam_to_world")
    if not isinstance(intrinsics, torch.Tensor):
        raise ValueError(f"intrinsics must be a (3, 3) or (T, 3, 3) tensor, got {type(intrinsics).__name__}")
    return batch_intrinsics(intrinsics.float().cpu(), c2w.shape[0], "intrinsics").contiguous(), c2w


def check_first_frame(model, first_frame, first_depth) -> torch.Tensor | None:
    """Step 1: first_frame (3, H, W) at the model's size -> float32 CPU in [0, 1]; first_depth (H, W) checked."""
    H, W = model.image_size
    if first_frame is not None:
        if not isinstance(first_frame, torch.Tensor) or tuple(first_frame.shape) != (3, H, W):
            raise ValueError(f"first_frame must have shape (3, {H}, {W}) (the model's image size), got "
                             f"{tuple(getattr(first_frame, 'shape', ()))}")
        if not torch.isfinite(first_frame).all():
            raise ValueError("first_frame has non-finite values")
        first_frame = first_frame.float().cpu().clamp(0, 1)
    if first_depth is not None:
        if first_frame is None:
            raise ValueError("first_depth needs first_frame")
        validate_depth(first_depth, "first_depth")
        if tuple(first_depth.shape) != (H, W):
            raise ValueError(f"first_depth must have shape ({H}, {W}), got {tuple(first_depth.shape)}")
    return first_frame


def resolve_memory(model, memory, mode: str, first_frame, first_depth):
    """Step 1: the memory the rollout reads and writes: None in "no_memory" mode, a new one when ``first_depth``
    seeds it; ValueError when it cannot serve (wrong channels, empty with nothing to start from)."""
    if mode == "no_memory":
        if first_frame is None:
            raise ValueError("mode='no_memory' needs a first_frame")
        return None
    if memory is None:
        if first_depth is None:
            raise ValueError("no memory given: pass one, or first_frame with first_depth to seed a new one")
        memory = model.new_memory()
    if int(memory.channels) != model.latent_channels:
        raise ValueError(f"memory has {memory.channels} channels, the model needs {model.latent_channels}")
    if first_frame is None and len(memory) == 0:
        raise ValueError("the memory is empty and no first_frame was given: nothing to start from")
    return memory


def prepare_first_frame(model, state: RolloutState, first_frame, first_depth) -> None:
    """Step 2: seed the memory with frame 0's depth; frame 0 and chunk 0's clean context (latent-0 type)."""
    K0, P0 = state.intrinsics[0], state.cam_to_world[0]
    timer = state.timer
    if first_depth is not None:
        with timer.phase("memory_update"):
            state.result.memory_points_added += model.observe(state.memory, first_frame, first_depth, K0, P0)
    if first_frame is None:
        with timer.phase("memory_read"):
            readout = state.memory.read_batch(K0[None], P0[None], model.image_size, model.latent_size)
        if not bool(readout.mask.any()):
            raise ValueError("the memory holds nothing visible from pose 0 and no first_frame was given")
        latent = readout.features.to(model.device, model.dtype)
        with timer.phase("decode"):
            first_frame = model.decode_images(latent)[0].float().cpu()
        if model.memory_holds_context_type:  # the readout already is a window-start latent
            state.context = latent
    if state.context is None:
        with timer.phase("memory_update"):
            state.context = model.encode_context_frames(first_frame[None])
    state.frames[0] = first_frame
    state.frames_done = 1
    if state.hooks.on_frames is not None:
        state.hooks.on_frames(0, to_uint8(state.frames[:1]))


def denoise_chunk(model, state: RolloutState, chunk: Chunk, cond: ChunkConditioning) -> torch.Tensor:
    """Step 4: the window's latents (1, C, F, h, w) float32, context positions clean; reference frames before the
    window and preceding context after it (:mod:`mirage.pipeline.retrieval`, :mod:`mirage.pipeline.preceding`) are
    conditioning only and not returned."""
    F, R = chunk.length, cond.reference_frames
    own = slice(R, R + F)  # the window's own frames between reference frames and preceding context
    if state.mode == "memory_only":  # the readout stands in for the prediction
        keep = cond.is_context[R:].to(cond.window.device).view(1, 1, -1, 1, 1)
        return torch.where(keep, cond.window[:, :, R:], cond.memory_latents.float())[:, :, :F]
    shape = cond.window.shape
    # noise for the window's own frames (the same draw with or without added context, as the reference's)
    noise = cond.window.new_zeros(shape, device="cpu")
    noise[:, :, own] = torch.randn((*shape[:2], F, *shape[3:]), generator=state.generator, dtype=torch.float32)
    noise = noise.to(model.device)
    memory_kw = {}
    if model.transformer.side_branch is not None and cond.memory_latents is not None:
        memory_kw = dict(memory_latents=cond.memory_latents, memory_mask=cond.memory_mask,
                         memory_scale=model.config.memory_scale)
    if R:
        memory_kw["reference_frames"] = R

    def transformer(latents, timestep):
        cond_out = model.transformer(latents, timestep, state.text, rays=cond.rays, **memory_kw)
        if state.negative_text is None:
            return cond_out
        # the reference's guidance: both passes see the same memory and cameras, only the text differs
        uncond = model.transformer(latents, timestep, state.negative_text, rays=cond.rays, **memory_kw)
        return uncond + state.guidance_scale * (cond_out - uncond)

    def on_step(i, latents):
        if state.hooks.step_callback is not None:
            state.hooks.step_callback(chunk, i, latents[:, :, own])
        state.report(chunk.index, i + 1)

    cancel = state.hooks.cancel
    scheduler = make_scheduler(model.config.flow_shift)  # a fresh one per chunk: it keeps per-run state
    with state.timer.phase("denoise"):
        latents = sample_chunk(transformer, noise, cond.window, cond.is_context, scheduler, state.num_steps,
                               patch_size=model.transformer.patch_size, on_step=on_step,
                               should_stop=(lambda: cancel.cancelled) if cancel is not None else None,
                               prediction_type=model.config.prediction_type)
    if latents is None:
        raise RolloutCancelled(f"rollout cancelled during chunk {chunk.index}")
    return latents[:, :, own]


def decode_chunk(model, state: RolloutState, chunk: Chunk, latents: torch.Tensor) -> None:
    """Step 5: decode the window and keep (and stream) the frames it adds."""
    with state.timer.phase("decode"):
        video = model.decode_latents(latents)[0].transpose(0, 1).cpu()  # (1 + s(F-1), 3, H, W)
    new, offset = chunk.new_pixel_frames, chunk.pixel_offset
    state.frames[new.start : new.stop] = video[new.start - offset : new.stop - offset]
    state.frames_done = new.stop
    if state.hooks.on_frames is not None:
        state.hooks.on_frames(new.start, to_uint8(state.frames[new.start : new.stop]))


def update_chunk_memory(model, state: RolloutState, chunk: Chunk, cond: ChunkConditioning,
                        latents: torch.Tensor) -> None:
    """Step 6: the next chunk's context, then the chunk's new latent frames into the memory (see the module
    docstring). Writes once, after everything else succeeded."""
    timer = state.timer
    if chunk.index + 1 < len(state.chunks):
        with timer.phase("memory_update"):
            state.context = next_context(model, state, chunk, state.chunks[chunk.index + 1].context, latents)
    if not state.write_memory:
        return
    new = torch.tensor(list(chunk.new_latent_indices))
    positions = new - chunk.start
    pixel = new * chunk.temporal_stride  # each new latent frame's representative pixel frame: its camera
    rgb, K_n, P_n = state.frames[pixel], state.intrinsics[pixel], state.cam_to_world[pixel]
    ref_depth = cond.readout.depth[positions].float().cpu()
    ref_mask = cond.readout.mask[positions].cpu()
    with timer.phase("depth"):
        depth = model.depth_provider(rgb, intrinsics=K_n, cam_to_world=P_n, frame_indices=pixel,
                                     grid_size=model.latent_size, memory=state.memory).float().cpu()
        depth = align_to_memory(model, depth, ref_depth, ref_mask, state.result)
    with timer.phase("memory_update"):
        mask = exclusion_mask(depth, max_depth=model.config.max_depth)
        mask |= inconsistency_mask(depth, ref_depth, ref_mask, model.config.inconsistency_threshold)
        if model.segmenter is not None:
            mask |= model.segmenter(rgb).cpu()
        if state.hooks.exclude is not None:
            extra = state.hooks.exclude(pixel, rgb)
            if extra is not None:
                mask |= extra.bool().cpu()
        # denoised: the chunk's own target-type latents; reencoded: the memory encodes the decoded frames
        stored = latents[0, :, positions].transpose(0, 1) if model.config.memory_latents == "denoised" else None
        state.result.memory_points_added += state.memory.observe_batch(
            rgb, depth, K_n, P_n, mask, encode=model.encode_images, latents=stored)


# ---------------------------------------------------------------------------------------------------------- pieces
def next_context(model, state: RolloutState, chunk: Chunk, count: int, latents: torch.Tensor) -> torch.Tensor:
    """(count, C, h, w): the next window's clean context. ``config.chunk_seed="reencoded"``: the pixel frames ending
    at the chunk's last latent frame, encoded as one clip, i.e. as the start of a window (its first latent a
    single-frame, latent-0-type code); "denoised": the chunk's last ``count`` denoised latents of ``latents``
    (1, C, F, h, w) as they are (the reference code's choice: no encode, but group-type codes at window start)."""
    if model.config.chunk_seed == "denoised":
        return latents[0, :, -count:].transpose(0, 1).contiguous()
    last = int(chunk.pixel_frames[-1])
    first = last - chunk.temporal_stride * (count - 1)
    return model.encode_video(state.frames[first : last + 1])


def align_to_memory(model, depth, ref_depth, ref_mask, result: RolloutResult) -> torch.Tensor:
    """Scale each frame's depth (n, H, W) to the memory's where they overlap; frames a relative provider can't
    place become NaN (kept out). Appends each frame's scale (or None) to ``result.depth_scales``."""
    metric = getattr(model.depth_provider, "metric", True)
    if not model.config.align_depth and metric:
        return depth
    out = depth.clone()
    sampled, _ = pool_depth(depth, ref_depth.shape[-2:])  # the memory's own cell depth rule
    for i in range(depth.shape[0]):
        scale = align_depth_scale(sampled[i], ref_depth[i], ref_mask[i], model.config.min_alignment_cells)
        result.depth_scales.append(scale)
        if scale is not None:
            out[i] = depth[i] * scale
        elif not metric:
            out[i] = float("nan")  # depth only known up to scale and nothing to anchor it: keep it out
    return out
