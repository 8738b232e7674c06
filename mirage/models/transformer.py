"""MirageTransformer: the Wan2.2 backbone with the memory side branch and camera (Plücker) control.

The forward pass re-runs diffusers' ``WanTransformer3DModel.forward`` step by step on the backbone's own
modules (so LoRA adapters injected by peft, offload hooks and per-token timesteps behave exactly as in
diffusers) and adds two things:

* the camera embedding of the rays, added to the patch tokens before the blocks;
* the side branch's per-layer skips, added after the matching backbone blocks.

Both start at zero, so a fresh MirageTransformer reproduces the backbone's output bit for bit.

Per-token timesteps that are constant over each latent frame (always so in mirage: context frames 0, generated
frames t) are embedded and modulated once per frame (:mod:`mirage.models.modulation`): diffusers' per-token path
to float32 rounding of the timestep embedding (bit for bit in most shapes), without its (B, S, 6, D) tensors in
every block; ``modulation = "per_token"`` keeps diffusers' path.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn as nn
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel

from mirage.models.camera_embedding import RAY_CHANNELS, PluckerEmbedding
from mirage.models.modulation import MODULATION_MODES, check_diffusers_compat, frame_modulated_block, frame_timesteps
from mirage.models.placement import execution_device
from mirage.models.reference_frames import rope_with_reference_frames
from mirage.models.side_branch import MemorySideBranch
from mirage.models.summary import count_parameters

__all__ = ["MirageTransformer", "per_token_timesteps", "target_tokens"]


def per_token_timesteps(frame_timesteps: torch.Tensor, latent_size: Sequence[int],
                        patch_size: Sequence[int] = (1, 2, 2)) -> torch.Tensor:
    """Expand one timestep per latent frame to one per token (Wan2.2 TI2V ``expand_timesteps``).

    frame_timesteps: (F,) or (B, F), e.g. 0 for clean context frames and t for frames being denoised.
    latent_size: (h, w) of the latent grid. Returns (B, F/p_t * h/p_h * w/p_w) in token order (f, y, x).
    """
    ts = frame_timesteps if frame_timesteps.ndim == 2 else frame_timesteps[None]
    p_t, p_h, p_w = (int(p) for p in patch_size)
    h, w = int(latent_size[0]), int(latent_size[1])
    if ts.ndim != 2 or ts.shape[1] % p_t or h % p_h or w % p_w:
        raise ValueError(f"frame_timesteps {tuple(frame_timesteps.shape)} / latent size {h}x{w} do not fit "
                         f"patch size {tuple(patch_size)}")
    ts = ts[:, ::p_t]
    return ts[:, :, None].expand(ts.shape[0], ts.shape[1], (h // p_h) * (w // p_w)).reshape(ts.shape[0], -1)


def target_tokens(timestep: torch.Tensor, seq_len: int) -> torch.Tensor | None:
    """Indices (S_t,) of the tokens being denoised (timestep > 0 in any sample), None when that is every token.

    timestep: (B,) or per-token (B, seq_len). Context tokens (timestep 0 in every sample) are left out; an empty
    result means nothing is denoised. Reads the mask on the host (one synchronisation on a GPU).
    """
    noisy = timestep > 0
    noisy = noisy.any(0) if timestep.ndim == 2 else noisy.any().expand(seq_len)
    if bool(noisy.all()):
        return None
    return noisy.nonzero().squeeze(1)


class MirageTransformer(nn.Module):
    """Backbone transformer + :class:`MemorySideBranch` + :class:`PluckerEmbedding`.

    Attributes:
        backbone: ``WanTransformer3DModel`` (frozen in stage 1, LoRA in stage 2).
        side_branch: ``MemorySideBranch`` or None (then memory inputs are rejected).
        camera_embedding: ``PluckerEmbedding`` or None (then rays are rejected).
        modulation: "per_frame" (default) or "per_token" (diffusers' path), see :data:`MODULATION_MODES`.
        frame_block_forward: the per-frame block function (``frame_modulated_block``; ``accelerate_transformer``
            swaps in a compiled one).
    """

    def __init__(self, backbone: WanTransformer3DModel, side_branch: MemorySideBranch | None = None,
                 camera_embedding: PluckerEmbedding | None = None):
        super().__init__()
        check_diffusers_compat()
        if side_branch is not None:
            side_branch.check_compatible(backbone)
        if camera_embedding is not None and camera_embedding.config.inner_dim != self._inner_dim(backbone):
            raise ValueError(f"camera embedding width {camera_embedding.config.inner_dim} != backbone width "
                             f"{self._inner_dim(backbone)}")
        self.backbone = backbone
        self.side_branch = side_branch
        self.camera_embedding = camera_embedding
        self.gradient_checkpointing = False
        self.modulation = "per_frame"
        self.frame_block_forward = frame_modulated_block

    @classmethod
    def from_backbone(cls, backbone: WanTransformer3DModel, injection_layers: Sequence[int] | None = None,
                      concat_rays: bool = False, side_branch: bool = True, camera: bool = True) -> "MirageTransformer":
        """Fresh (zero-initialised) side branch and camera embedding for ``backbone``.

        injection_layers default to every other block (0, 2, 4, ...), the hint blocks start as copies of them.
        """
        branch = MemorySideBranch.from_transformer(backbone, injection_layers, concat_rays) if side_branch else None
        cam = PluckerEmbedding.from_transformer(backbone) if camera else None
        return cls(backbone, branch, cam)

    # ------------------------------------------------------------------ properties
    @staticmethod
    def _inner_dim(backbone) -> int:
        return int(backbone.config.num_attention_heads * backbone.config.attention_head_dim)

    @property
    def config(self):
        return self.backbone.config

    @property
    def patch_size(self) -> tuple[int, int, int]:
        return tuple(int(p) for p in self.backbone.config.patch_size)

    @property
    def device(self) -> torch.device:
        """Where the backbone computes (its offload execution device when CPU offload is on)."""
        return execution_device(self.backbone)

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.dtype

    def enable_gradient_checkpointing(self) -> None:
        self.gradient_checkpointing = True
        if self.side_branch is not None:
            self.side_branch.gradient_checkpointing = True

    def disable_gradient_checkpointing(self) -> None:
        self.gradient_checkpointing = False
        if self.side_branch is not None:
            self.side_branch.gradient_checkpointing = False

    def set_trainable(self, stage: str) -> list[nn.Parameter]:
        """Select trainable parameters for a training stage and return them.

        "side_branch" (stage 1): side branch + camera embedding; the backbone frozen.
        "lora" (stage 2): side branch + camera embedding + LoRA adapter weights (attach LoRA first).
        "none": everything frozen.
        """
        if stage not in ("side_branch", "lora", "none"):
            raise ValueError(f"stage must be 'side_branch', 'lora' or 'none', got {stage!r}")
        if stage == "lora" and not any("lora_" in n for n, _ in self.backbone.named_parameters()):
            raise ValueError("stage 'lora' needs a LoRA adapter: call mirage.models.lora.add_lora first")
        self.requires_grad_(False)
        if stage != "none":
            for module in self.adapter_modules().values():
                module.requires_grad_(True)
        if stage == "lora":
            for n, p in self.backbone.named_parameters():
                if "lora_" in n:
                    p.requires_grad_(True)
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_summary(self) -> tuple[dict, object]:
        """Parameter counts (backbone without LoRA, LoRA, each adapter, trainable) and the backbone's config
        (:func:`mirage.models.summarize`)."""
        lora = sum(p.numel() for n, p in self.backbone.named_parameters() if "lora_" in n)
        counts = {"transformer": count_parameters(self.backbone) - lora, "lora": lora}
        counts.update({name: count_parameters(module) for name, module in self.adapter_modules().items()})
        if self.side_branch is not None:
            counts["injection_layers"] = self.side_branch.injection_layers
        counts["trainable"] = count_parameters(self, trainable_only=True)
        return counts, self.backbone.config

    def adapter_modules(self) -> dict[str, nn.Module]:
        """The modules mirage trains besides LoRA: {"side_branch": ..., "camera_embedding": ...} (present ones)."""
        return {k: m for k, m in (("side_branch", self.side_branch), ("camera_embedding", self.camera_embedding))
                if m is not None}

    # ------------------------------------------------------------------ forward
    # Adapted from diffusers 0.42.1 WanTransformer3DModel.forward (check_diffusers_compat, run at construction,
    # fails when the installed diffusers changed it), plus the camera embedding, the side branch and modulation
    # per latent frame.
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        memory_latents: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        rays: torch.Tensor | None = None,
        memory_scale: float = 1.0,
        reference_frames: int = 0,
    ) -> torch.Tensor:
        """Flow prediction for noisy latents.

        hidden_states: (B, C=48, F, h, w) noisy latents (h, w divisible by the patch size 2).
        timestep: (B,) or per-token (B, F*(h//2)*(w//2)) in [0, 1000] (a scalar is broadcast).
        encoder_hidden_states: (B, L, text_dim) (B may be 1 and is then broadcast).
        memory_latents: (B, 48, F, h, w) memory readout (zeros where unseen) — needs ``memory_mask``.
        memory_mask: (B, 1, F, h, w) visibility (bool or float; 1 = seen).
        rays: (B, 6, F, h, w) Plücker rays per latent cell (see ``latent_rays``).
        memory_scale: multiplier of the side branch's contributions (0 disables the memory).
        reference_frames: R, the first R latent frames are retrieved reference frames (the reference
            implementation's layout, :mod:`mirage.models.reference_frames`): their own RoPE positions, no hint;
            ``memory_latents`` / ``memory_mask`` then cover the other F - R frames (rays cover all F).
        Returns (B, 48, F, h, w) in the backbone's dtype.

        Per-token timesteps that are constant over each latent frame (context frames 0, generated frames t) are
        modulated once per frame (``self.modulation``, see :data:`MODULATION_MODES`); others per token.
        """
        bb = self.backbone
        offload_hook = getattr(bb, "_hf_hook", None)
        if offload_hook is not None:  # model-level CPU offload: the hook sits on bb.forward, which we bypass
            offload_hook.pre_forward(bb)
        R = int(reference_frames)
        timestep, encoder_hidden_states = self._check_inputs(hidden_states, timestep, encoder_hidden_states,
                                                             memory_latents, memory_mask, rays, R)
        batch, _, frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.patch_size
        pf, ph, pw = frames // p_t, height // p_h, width // p_w
        hidden_states = hidden_states.to(self.dtype)

        # 1. Patch embedding (+ camera rays) and RoPE
        rotary_emb = rope_with_reference_frames(bb.rope, hidden_states, R) if R else bb.rope(hidden_states)
        x = bb.patch_embedding(hidden_states)
        if rays is not None and self.camera_embedding is not None:
            x = x + self.camera_embedding(rays).to(x.dtype)
        x = x.flatten(2).transpose(1, 2).contiguous()  # (B, S, D)

        # 2. Timestep and text embeddings: temb (B, D) / (B, S, D) / (B, F, D), timestep_proj with a 6 before D
        temb, timestep_proj, encoder_hidden_states = self._embed(timestep, encoder_hidden_states, pf)

        # 3. Side branch: one skip per injection layer over the tokens after any reference frames (which the
        #    reference's VACE never sees), all of them or only the target ones; added back at skip_index
        skips: dict[int, torch.Tensor] = {}
        skip_index = None
        if memory_latents is not None and memory_scale != 0:
            branch = self.side_branch
            first = R // p_t * ph * pw
            hint_x, hint_t, hint_temb, hint_rope = x, timestep, timestep_proj, rotary_emb
            if first:
                per_token = timestep_proj.ndim == 4 and timestep_proj.shape[1] == x.shape[1]
                hint_x, hint_rope = x[:, first:], tuple(t[:, first:] for t in rotary_emb)
                hint_t = timestep[:, first:] if timestep.ndim == 2 else timestep
                if timestep_proj.ndim == 4:
                    hint_temb = timestep_proj[:, first:] if per_token else timestep_proj[:, R // p_t:]
            token_index = target_tokens(hint_t, hint_x.shape[1]) if branch.target_only else None
            if token_index is None or token_index.numel() > 0:
                hint = [memory_latents, memory_mask.to(memory_latents.dtype)]
                if branch.config.concat_rays:
                    hint.append(rays[:, :, R:].to(memory_latents.dtype))
                outputs = branch(torch.cat(hint, dim=1), hint_x, encoder_hidden_states, hint_temb, hint_rope,
                                 token_index=token_index)
                skips = dict(zip(branch.injection_layers, outputs))
                if token_index is not None:
                    skip_index = token_index + first
                elif first:
                    skip_index = torch.arange(first, x.shape[1], device=x.device)

        # 4. Transformer blocks
        per_frame = timestep_proj.ndim == 4 and timestep_proj.shape[1] != x.shape[1]
        checkpointing = torch.is_grad_enabled() and (self.gradient_checkpointing or bb.gradient_checkpointing)
        for i, block in enumerate(bb.blocks):
            run = functools.partial(self.frame_block_forward, block) if per_frame else block
            if checkpointing:
                x = torch.utils.checkpoint.checkpoint(run, x, encoder_hidden_states, timestep_proj, rotary_emb,
                                                      use_reentrant=False)
            else:
                x = run(x, encoder_hidden_states, timestep_proj, rotary_emb)
            if i in skips:
                skip = skips[i].to(x.device)
                skip = skip if memory_scale == 1 else skip * memory_scale
                x = x + skip if skip_index is None else x.index_add(1, skip_index.to(x.device), skip)

        # 5. Output norm, projection and unpatchify
        x = self._output_norm(x, temb)
        x = bb.proj_out(x)
        x = x.reshape(batch, pf, ph, pw, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)

    def _embed(self, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor, frames: int):
        """Condition embeddings: (temb, timestep_proj, text tokens).

        timestep (B,): temb (B, D), timestep_proj (B, 6, D). Per-token (B, S): per token, (B, S, D) and
        (B, S, 6, D), or, when the timesteps are constant over each latent frame and ``self.modulation`` is
        "per_frame", per frame, (B, F, D) and (B, F, 6, D).
        """
        mode = self.modulation
        if mode not in MODULATION_MODES:
            raise ValueError(f"modulation must be one of {MODULATION_MODES}, got {mode!r}")
        frame_ts = frame_timesteps(timestep, frames) if timestep.ndim == 2 and mode == "per_frame" else None
        if frame_ts is not None:
            timestep, seq_len = frame_ts.flatten(), frames
        else:
            seq_len = timestep.shape[1] if timestep.ndim == 2 else None
            timestep = timestep.flatten()
        temb, proj, encoder_hidden_states, _ = self.backbone.condition_embedder(
            timestep, encoder_hidden_states, None, timestep_seq_len=seq_len)
        return temb, proj.unflatten(-1, (6, -1)), encoder_hidden_states

    def _output_norm(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """diffusers' output norm and shift/scale, x (B, S, D); temb (B, D), (B, S, D) or per frame (B, F, D)."""
        bb = self.backbone
        table = bb.scale_shift_table.to(temb.device)
        if temb.ndim == 3:  # per token or per frame: (B, S or F, 1, D) each
            shift, scale = (table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
        else:
            shift, scale = (table + temb.unsqueeze(1)).chunk(2, dim=1)
        shift, scale = shift.to(x.device), scale.to(x.device)
        normed = bb.norm_out(x.float())
        if temb.ndim == 3:
            batch, seq, dim = x.shape
            normed = normed.reshape(batch, temb.shape[1], seq // temb.shape[1], dim)
        return (normed * (1 + scale) + shift).reshape(x.shape).type_as(x)

    def _check_inputs(self, hidden_states, timestep, encoder_hidden_states, memory_latents, memory_mask, rays,
                      reference_frames: int = 0):
        cfg = self.backbone.config
        if not isinstance(hidden_states, torch.Tensor) or hidden_states.ndim != 5:
            raise ValueError(f"hidden_states must have shape (B, C, F, h, w), got "
                             f"{tuple(getattr(hidden_states, 'shape', ()))}")
        batch, channels, frames, height, width = hidden_states.shape
        if channels != cfg.in_channels:
            raise ValueError(f"hidden_states must have {cfg.in_channels} channels, got {channels}")
        p_t, p_h, p_w = self.patch_size
        if frames % p_t or height % p_h or width % p_w or min(frames, height, width) == 0:
            raise ValueError(f"latent size (F={frames}, h={height}, w={width}) must be positive multiples of the "
                             f"patch size {self.patch_size}")
        seq_len = (frames // p_t) * (height // p_h) * (width // p_w)
        if max(frames // p_t, height // p_h, width // p_w) > cfg.rope_max_seq_len:
            raise ValueError(f"latent grid {frames}x{height}x{width} exceeds rope_max_seq_len {cfg.rope_max_seq_len}")

        timestep = torch.as_tensor(timestep, device=hidden_states.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(batch)
        if timestep.ndim == 1 and timestep.shape[0] == 1 and batch > 1:
            timestep = timestep.expand(batch)
        if not ((timestep.ndim == 1 and timestep.shape[0] == batch) or
                (timestep.ndim == 2 and tuple(timestep.shape) == (batch, seq_len))):
            raise ValueError(f"timestep must have shape ({batch},) or per-token ({batch}, {seq_len}), "
                             f"got {tuple(timestep.shape)}")

        if not isinstance(encoder_hidden_states, torch.Tensor) or encoder_hidden_states.ndim != 3 or \
                encoder_hidden_states.shape[2] != cfg.text_dim or encoder_hidden_states.shape[0] not in (1, batch):
            raise ValueError(f"encoder_hidden_states must have shape ({batch}, L, {cfg.text_dim}), got "
                             f"{tuple(getattr(encoder_hidden_states, 'shape', ()))}")
        encoder_hidden_states = encoder_hidden_states.to(self.dtype)
        if encoder_hidden_states.shape[0] != batch:
            encoder_hidden_states = encoder_hidden_states.expand(batch, -1, -1)

        if not 0 <= reference_frames < frames or reference_frames % p_t:
            raise ValueError(f"reference_frames must be in [0, {frames}) and a multiple of {p_t}, "
                             f"got {reference_frames}")
        grid = (frames - reference_frames, height, width)  # what the memory covers: the frames after them
        if memory_latents is not None or memory_mask is not None:
            if self.side_branch is None:
                raise ValueError("memory inputs given but this MirageTransformer has no side branch")
            if memory_latents is None or memory_mask is None:
                raise ValueError("memory_latents and memory_mask must be given together")
            _check_shape(memory_latents, (batch, self.side_branch.config.latent_channels, *grid), "memory_latents")
            _check_shape(memory_mask, (batch, 1, *grid), "memory_mask")
        branch_takes_rays = self.side_branch is not None and self.side_branch.config.concat_rays
        if rays is not None:
            if self.camera_embedding is None and not branch_takes_rays:
                raise ValueError("rays given but this MirageTransformer has no camera embedding")
            _check_shape(rays, (batch, RAY_CHANNELS, frames, height, width), "rays")
        elif branch_takes_rays and memory_latents is not None:
            raise ValueError("this side branch takes rays with the memory readout (concat_rays=True): pass rays")
        return timestep, encoder_hidden_states


def _check_shape(t, shape: tuple, name: str) -> None:
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(getattr(t, 'shape', ()))}")
