"""MirageWorldModel: the components of a Mirage world model and what they do to one frame or one window.

Components: a backbone (autoencoder, scheduler settings, text embedding, :class:`mirage.models.Backbone`), the
:class:`~mirage.models.MirageTransformer` around its transformer (memory side branch, camera embedding, LoRA), a
depth provider for generated frames and an optional segmenter for dynamic / sky masks. Loading and saving live in
:mod:`mirage.pipeline.loading`; the chunked rollout in :mod:`mirage.pipeline.rollout` (:meth:`rollout` calls it).

Latent types. With a causal autoencoder of temporal stride ``s > 1`` (the Wan2.2 VAE, ``s = 4``) latent 0 of a clip
encodes frame 0 alone and every later latent a group of ``s`` frames; the two are different codes (with mirage-tiny's
VAE a frame's latent-0 code and its static group code have cosine 0.09, relative MSE 1.9, on 12 held-out frames).
A window's first position is latent-0 type, every target the side branch conditions is group type, so:

* :meth:`encode_images` gives TARGET-type latents: what the memory stores (keyframes, :meth:`observe`, the RGB
  baseline's re-encoded views);
* :meth:`encode_context_frames` gives latent-0-type latents: the clean first position of a window (the
  conditioning frame, the context carried into the next chunk);
* at stride 1 (a per-frame autoencoder) the two are the same: a frame alone is exactly its latent in any clip.
"""

from __future__ import annotations

import contextlib
import os
import torch

from mirage.camera import latent_size
from mirage.perception.depth import ReadoutDepth
from mirage.pipeline.config import WorldModelConfig
from mirage.pipeline.loading import load_world_model, save_world_model
from mirage.pipeline.rollout import rollout

__all__ = ["MirageWorldModel"]


class MirageWorldModel:
    """Backbone (autoencoder, scheduler, text) + MirageTransformer + depth provider (+ optional segmenter).

    Attributes: ``config`` (:class:`WorldModelConfig`), ``backbone`` (:class:`mirage.models.Backbone`),
    ``transformer`` (:class:`mirage.models.MirageTransformer`), ``depth_provider`` (default
    :class:`~mirage.perception.depth.ReadoutDepth`), ``segmenter`` (an :class:`~mirage.perception.exclusion.OpenVocabularySegmenter`
    or None). Raises ValueError when the config's image size or chunk length do not fit the backbone's strides.
    """

    def __init__(self, config: WorldModelConfig, backbone, transformer, depth_provider=None, segmenter=None):
        config.check_backbone(int(backbone.spatial_stride), int(backbone.temporal_stride), transformer.patch_size)
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
    def temporal_stride(self) -> int:
        """Pixel frames per latent frame after the first (4 for the Wan2.2 VAE, 1 for a per-frame autoencoder)."""
        return int(self.backbone.temporal_stride)

    @property
    def spatial_stride(self) -> int:
        """Pixels per latent cell along each image axis (16 for the Wan2.2 VAE)."""
        return int(self.backbone.spatial_stride)

    @property
    def latent_size(self) -> tuple[int, int]:
        return latent_size(self.config.height, self.config.width, self.spatial_stride)

    @property
    def latent_channels(self) -> int:
        return int(self.backbone.latent_channels)

    @property
    def memory_holds_context_type(self) -> bool:
        """True when the memory's latents are also the type of a window's first position (temporal stride 1, or a
        ``memory_latent_type="single_frame"`` model): a readout then serves as a clean context latent as it is."""
        return self.temporal_stride == 1 or self.config.memory_latent_type == "single_frame"

    @property
    def chunk_frames(self) -> int:
        return self.config.chunk_frames

    @property
    def chunk_latent_frames(self) -> int:
        return self.config.chunk_latent_frames(self.temporal_stride)

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
        """Build or load a world model (:func:`mirage.pipeline.loading.load_world_model`).

        name_or_path:
            * "tiny": random tiny backbone (``load_backbone("tiny")``) + zero-initialised side branch and
              camera embedding; "wan22_5b-random": the real 5B shapes with random weights (benchmarks).
            * "mirage-tiny": the trained tiny weights shipped under ``mirage/assets/mirage-tiny/``.
            * a directory written by :meth:`save_pretrained` (``mirage_world_model.json``).
            * a Wan2.2 diffusers directory or hub id (``transformer/ vae/ scheduler/``): 704x1280 defaults,
              fresh side branch unless checkpoints are given.
        overrides: any :class:`WorldModelConfig` field, plus ``adapters_path`` (a directory with side_branch/,
            camera_embedding/, lora/ to load instead of the saved / fresh ones, e.g. a training checkpoint),
            ``side_branch_path`` / ``camera_embedding_path`` / ``lora_path`` (one part's directory each,
            applied after ``adapters_path``), ``reference_checkpoint_path`` (the paper's reference weights: a
            file, directory or list; loaded completely or ValueError, ``reference_strict=False`` loads what fits),
            ``depth_provider`` (an object, "readout", or a Depth Anything directory / hub id), ``segmenter``,
            ``backbone_kwargs`` (passed to :func:`mirage.models.load_backbone`), and the inference speed options
            ``modulation``, ``side_branch_target_only``, ``side_branch_blocks``, ``compile``, ``sdpa_backend``,
            ``fp8`` (:func:`mirage.pipeline.loading.apply_inference_options`).
        """
        return load_world_model(cls, name_or_path, device=device, torch_dtype=torch_dtype, **overrides)

    def save_pretrained(self, path: str | os.PathLike, copy_backbone: bool | None = None) -> None:
        """Write a directory :meth:`from_pretrained` reloads bit for bit
        (:func:`mirage.pipeline.loading.save_world_model` says what is copied and what referenced)."""
        save_world_model(self, path, copy_backbone=copy_backbone)

    # ------------------------------------------------------------------ autoencoder
    def _video(self, rgb: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 3, H, W) in [-1, 1] float32 on the device; ValueError on bad shapes."""
        if not isinstance(rgb, torch.Tensor) or rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ValueError(f"rgb must have shape (N, 3, H, W), got {tuple(getattr(rgb, 'shape', ()))}")
        latent_size(*rgb.shape[-2:], self.spatial_stride)  # raises unless multiples of the spatial stride
        return rgb.to(self.device, torch.float32) * 2 - 1

    @torch.no_grad()
    def encode_images(self, rgb: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, C, h, w) normalised TARGET-type latents: what the memory stores.

        Temporal stride 1: each frame encoded alone (exactly its latent inside any clip). Stride ``s > 1``: each
        frame encoded as a static clip of ``1 + s`` copies, keeping latent 1, the group latent of a static
        scene seen from that one pose. This is the choice for live keyframes because a keyframe has one pose
        and no generated neighbours: its real neighbours were taken elsewhere along a moving camera (mixing them
        in would store a blur of poses at one point), while the static group code is the code a target latent
        has when the camera rests at exactly that pose, so a readout of it sits in the coordinates of the
        targets it conditions. It costs ``1 + s`` frames of encoding per image. A model configured with
        ``memory_latent_type="single_frame"`` (trained before same-type latents) gets single-frame latents.
        """
        if self.memory_holds_context_type:
            return self.encode_context_frames(rgb)
        video = self._video(rgb)[:, :, None]  # (N, 3, 1, H, W)
        s = self.temporal_stride
        return self.backbone.encode(video.expand(-1, -1, 1 + s, -1, -1).contiguous())[:, :, 1]

    @torch.no_grad()
    def encode_context_frames(self, rgb: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, C, h, w) latent-0-type latents: each frame encoded alone, a one-frame clip.

        What a window's first (clean context) position holds: the rollout's conditioning frame and the context
        carried into the next chunk. The same as :meth:`encode_images` at temporal stride 1."""
        return self.backbone.encode(self._video(rgb)[:, :, None])[:, :, 0]

    @torch.no_grad()
    def encode_video(self, rgb: torch.Tensor) -> torch.Tensor:
        """(T, 3, H, W) in [0, 1], T = 1 + s k -> (1 + k, C, h, w): one clip, latent 0 first (as a window starts)."""
        return self.backbone.encode(self._video(rgb).transpose(0, 1)[None])[0].transpose(0, 1)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, F, h, w) clip latents -> (B, 3, 1 + s(F-1), H, W) in [0, 1]."""
        return ((self.backbone.decode(latents).float() + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def decode_images(self, latents: torch.Tensor, refine_steps: int = 2) -> torch.Tensor:
        """(N, C, h, w) target-type latents (as :meth:`encode_images` makes them) -> (N, 3, H, W) in [0, 1].

        Stride 1: each latent decoded alone. Stride ``s > 1``: a group latent ``z`` decodes only after a latent 0,
        which the memory does not hold, so ``z`` is decoded as the static clip ``[l0, z]`` (last frame kept) with
        ``l0`` the mean latent (zeros) first, then ``refine_steps`` times ``l0 = encode_context_frames(frame)``:
        the consistency a static clip has. On the shipped mirage-tiny VAE (12 held-out frames) this gives
        16.5 / 17.2 / 17.4 dB after 0 / 1 / 2 refinements (``[z, z]``: 15.3 dB; the true static clip: 18.5 dB).
        Used for a rollout's frame 0 when it starts from the memory."""
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
            raise ValueError(f"latents must have shape (N, C, h, w), got {tuple(getattr(latents, 'shape', ()))}")
        if self.memory_holds_context_type:
            return self.decode_latents(latents[:, :, None])[:, :, 0]
        first = torch.zeros_like(latents)
        for step in range(int(refine_steps) + 1):
            frames = self.decode_latents(torch.stack([first, latents], 2))[:, :, -1]
            if step < refine_steps:
                first = self.encode_context_frames(frames).to(latents.dtype)
        return frames

    # ------------------------------------------------------------------ memory
    def new_memory(self, **kw):
        """An empty :class:`~mirage.memory.LatentSpatialMemory` with this model's channels and voxel size (none when
        ``config.memory_update`` is "append": every point kept, as the reference code does)."""
        from mirage.memory import LatentSpatialMemory

        kw.setdefault("channels", self.latent_channels)
        kw.setdefault("voxel_size", None if self.config.memory_update == "append" else self.config.voxel_size)
        kw.setdefault("device", self.device)
        return LatentSpatialMemory(**kw)

    @torch.no_grad()
    def observe(self, memory, rgb, depth, intrinsics, cam_to_world, exclude=None, latents=None) -> int:
        """Write frame(s) into ``memory`` (``memory.observe_batch`` with :meth:`encode_images` as the encoder).

        rgb (3, H, W) or (N, 3, H, W) in [0, 1]; depth (H, W) / (N, H, W) metres; intrinsics (3, 3) or (N, 3, 3)
        at (H, W); cam_to_world (4, 4) / (N, 4, 4); exclude (H, W) / (N, H, W) bool or None; latents (N, C, h, w):
        ``encode_images(rgb)`` computed beforehand (e.g. timed apart from the insert), or None to encode here. Returns the
        number of cells written; raises ValueError on bad input, leaving the memory unchanged."""
        if not isinstance(rgb, torch.Tensor) or rgb.ndim not in (3, 4):
            raise ValueError(f"rgb must have shape (3, H, W) or (N, 3, H, W), got {tuple(getattr(rgb, 'shape', ()))}")
        if rgb.ndim == 3:
            rgb, depth, cam_to_world = rgb[None], depth[None], cam_to_world[None]
            exclude = None if exclude is None else exclude[None]
        if latents is not None:
            return memory.observe_batch(rgb, depth, intrinsics, cam_to_world, exclude, latents=latents)
        return memory.observe_batch(rgb, depth, intrinsics, cam_to_world, exclude, encode=self.encode_images)

    @contextlib.contextmanager
    def inference_options(self, **overrides):
        """``with model.inference_options(chunk_seed="denoised"): model.rollout(...)``: the config with these
        :class:`WorldModelConfig` fields (validated) inside the block, the old one after it, e.g.
        ``**REFERENCE_INFERENCE`` (the reference code's inference). One model serves one block at a time; a
        memory made before keeps its own growth rule."""
        previous = self.config
        self.config = WorldModelConfig(**{**previous.__dict__, **overrides})
        try:
            yield self
        finally:
            self.config = previous

    # ------------------------------------------------------------------ rollout
    # The chunked rollout with memory read / update (mirage.pipeline.rollout.rollout; the model is its first
    # argument, so ``model.rollout(memory, intrinsics, cam_to_world, ...)`` keeps its signature and docstring).
    rollout = rollout
