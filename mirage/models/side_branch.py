"""Memory side branch: a ControlNet / VACE-style hint stream that injects the memory readout.

Input ("hint") per latent cell: the memory readout latents (48 channels) and the visibility mask (1 channel),
optionally followed by the 6 Plücker ray channels (``concat_rays=True``). By default the rays are *not*
concatenated: the camera embedding is added to the backbone's patch tokens, and those tokens seed the hint
stream (``proj_in``), so the branch already sees the camera without spending 6 more input channels.

Structure (diffusers' ``WanVACETransformer3DModel``, rebuilt because it rejects the 5B model's per-token
timesteps):

    hint tokens  = hint_patch_embedding(hint)                          (B, S, D)
    c_0          = hint_blocks[0].proj_in(hint tokens) + x_0           x_0: backbone patch tokens
    c_k          = hint_blocks[k](c_{k-1})                             a copy of backbone block injection_layers[k]
    skip_k       = hint_blocks[k].proj_out(c_k)                        added after backbone block injection_layers[k]

``proj_in`` and every ``proj_out`` start at zero, so a fresh branch leaves the backbone's output unchanged
bit for bit while gradients still reach every weight (ControlNet's zero-convolution trick).

The paper's reference setting is a hint block after every other backbone block: 15 hint blocks for the 30-block
5B model (``default_injection_layers``), run over every token of the window. Two inference options cut its cost
(29% of a 5B rollout at 704x1280), both off by default (:meth:`MemorySideBranch.set_inference_options`):

* ``target_only``: the hint stream runs over the tokens being denoised only (the context frames, timestep 0,
  are skipped); their skips are zero. What it computes exactly: the branch over the target tokens as if the
  context tokens did not exist (their hint and backbone tokens cannot change any output of it), so it differs
  from the full branch on the target tokens by what the hint stream's self-attention carried from the context
  tokens. With no context tokens it is the full branch.
* ``num_blocks``: run only the first n hint blocks; the skips of those n layers are bit-identical to the full
  branch's (the stream is causal in depth), the later injection layers get none. A branch trained with fewer
  blocks (``default_injection_layers(30, every=4)``: 8) is the trained alternative.

A branch loaded from the reference implementation may carry a ``hint_offset`` (D, F, h', w'): a constant added to
the hint tokens of every window, what is left of the reference's 48 constant "score" input channels after their
mean is folded into the bias (:mod:`mirage.models.reference_hint`). It is saved beside the weights
(``hint_offset.safetensors``) and is None for every branch mirage trains.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel, WanTransformerBlock
from safetensors.torch import load_file, save_file

from mirage.models.configs import LATENT_CHANNELS
from mirage.models.dtypes import cast_module
from mirage.models.modulation import check_diffusers_compat, frame_modulated_block
from mirage.models.placement import execution_device

__all__ = ["MemoryHintBlock", "MemorySideBranch", "default_injection_layers"]

MASK_CHANNELS = 1
RAY_CHANNELS = 6
HINT_OFFSET_FILE = "hint_offset.safetensors"


def default_injection_layers(num_layers: int, every: int = 2) -> list[int]:
    """Backbone blocks that receive a hint: 0, every, 2*every, ... (15 of 30 for the 5B model)."""
    return list(range(0, num_layers, every))


class MemoryHintBlock(WanTransformerBlock):
    """A Wan transformer block on the hint stream, with zero-init input / output projections.

    Accepts the same ``temb`` as the backbone blocks: (B, 6, D), per-token (B, S, 6, D) or per latent frame
    (B, F, 6, D) with F < S (:func:`~mirage.models.modulation.frame_modulated_block`).
    """

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, qk_norm: str | None = "rms_norm_across_heads",
                 cross_attn_norm: bool = True, eps: float = 1e-6, has_proj_in: bool = False):
        super().__init__(dim, ffn_dim, num_heads, qk_norm, cross_attn_norm, eps)
        self.proj_in = nn.Linear(dim, dim) if has_proj_in else None
        self.proj_out = nn.Linear(dim, dim)
        self.zero_init_projections()

    def zero_init_projections(self) -> None:
        for proj in (self.proj_in, self.proj_out):
            if proj is not None:
                nn.init.zeros_(proj.weight)
                nn.init.zeros_(proj.bias)

    def forward(self, hint: torch.Tensor, backbone_tokens: torch.Tensor | None, encoder_hidden_states: torch.Tensor,
                temb: torch.Tensor, rotary_emb) -> tuple[torch.Tensor, torch.Tensor]:
        """hint, backbone_tokens: (B, S, D). Returns (skip (B, S, D) to add to the backbone, next hint)."""
        if self.proj_in is not None:
            hint = self.proj_in(hint) + backbone_tokens
        if temb.ndim == 4 and temb.shape[1] != hint.shape[1]:
            hint = frame_modulated_block(self, hint, encoder_hidden_states, temb, rotary_emb)
        else:
            hint = super().forward(hint, encoder_hidden_states, temb, rotary_emb)
        return self.proj_out(hint), hint


class MemorySideBranch(ModelMixin, ConfigMixin):
    """Hint stream that turns the memory readout into per-block additions to the backbone hidden states.

    Args:
        injection_layers: backbone block indices that receive a hint, strictly increasing.
        num_backbone_layers: depth of the backbone (validated against the transformer it runs with).
        concat_rays: also feed the 6 Plücker ray channels to the hint patch embedding.
        Other arguments mirror ``WanTransformer3DModel`` and must match the backbone.

    Inference options (not part of the saved config; see the module docstring): ``target_only`` (False) and
    ``num_blocks`` (None: all), set with :meth:`set_inference_options`.
    """

    _supports_gradient_checkpointing = True
    _keep_in_fp32_modules = list(WanTransformer3DModel._keep_in_fp32_modules)
    _no_split_modules = ["MemoryHintBlock"]

    @register_to_config
    def __init__(
        self,
        injection_layers: Sequence[int] = (0,),
        num_backbone_layers: int = 30,
        num_attention_heads: int = 24,
        attention_head_dim: int = 128,
        ffn_dim: int = 14336,
        patch_size: Sequence[int] = (1, 2, 2),
        latent_channels: int = LATENT_CHANNELS,
        concat_rays: bool = False,
        qk_norm: str | None = "rms_norm_across_heads",
        cross_attn_norm: bool = True,
        eps: float = 1e-6,
    ):
        super().__init__()
        check_diffusers_compat()
        layers = [int(i) for i in injection_layers]
        if not layers or layers != sorted(set(layers)) or layers[0] < 0 or layers[-1] >= num_backbone_layers:
            raise ValueError(f"injection_layers must be strictly increasing indices in [0, {num_backbone_layers}), "
                             f"got {list(injection_layers)}")
        dim = num_attention_heads * attention_head_dim
        self.hint_patch_embedding = nn.Conv3d(self.hint_channels, dim, kernel_size=tuple(patch_size),
                                              stride=tuple(patch_size))
        self.hint_blocks = nn.ModuleList(
            MemoryHintBlock(dim, ffn_dim, num_attention_heads, qk_norm, cross_attn_norm, eps, has_proj_in=(k == 0))
            for k in range(len(layers))
        )
        self.gradient_checkpointing = False
        self.target_only = False
        self.num_blocks: int | None = None
        # not in the state dict: its shape depends on the window, so from_pretrained reads it from its own file
        self.register_buffer("hint_offset", None, persistent=False)

    def set_hint_offset(self, offset: torch.Tensor | None) -> None:
        """A constant (D, F, h', w') added to the hint tokens of windows of up to F latent frames of h' x w' tokens
        (sliced to the window's first frames), or None. See :mod:`mirage.models.reference_hint`."""
        if offset is not None:
            dim = self.hint_patch_embedding.out_channels
            if not isinstance(offset, torch.Tensor) or offset.ndim != 4 or offset.shape[0] != dim:
                raise ValueError(f"hint_offset must be ({dim}, F, h', w'), got {tuple(getattr(offset, 'shape', ()))}")
            weight = self.hint_patch_embedding.weight
            offset = offset.detach().to(weight.device, weight.dtype)
        self.hint_offset = offset

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """diffusers' save_pretrained, plus ``hint_offset.safetensors`` when the branch has an offset."""
        super().save_pretrained(save_directory, *args, **kwargs)
        path = os.path.join(str(save_directory), HINT_OFFSET_FILE)
        if self.hint_offset is not None:
            save_file({"hint_offset": self.hint_offset.detach().contiguous().cpu()}, path)
        elif os.path.isfile(path):  # a stale offset of an earlier save must not come back
            os.remove(path)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> "MemorySideBranch":
        """diffusers' from_pretrained, plus the hint offset of a local directory that has one."""
        branch = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        path = os.path.join(str(pretrained_model_name_or_path), HINT_OFFSET_FILE)
        if os.path.isfile(path):
            branch.set_hint_offset(load_file(path)["hint_offset"])
        return branch

    def set_inference_options(self, target_only: bool = False, num_blocks: int | None = None) -> None:
        """target_only: run over the tokens being denoised only; num_blocks: run only the first n hint blocks
        (None: all). Both change the output (see the module docstring); the defaults are the trained setting."""
        if num_blocks is not None and not 1 <= int(num_blocks) <= len(self.hint_blocks):
            raise ValueError(f"num_blocks must be in [1, {len(self.hint_blocks)}] or None, got {num_blocks}")
        self.target_only = bool(target_only)
        self.num_blocks = None if num_blocks is None else int(num_blocks)

    @property
    def active_injection_layers(self) -> list[int]:
        """The injection layers that get a skip with the current ``num_blocks``."""
        return self.injection_layers[: self.num_blocks]

    @property
    def hint_channels(self) -> int:
        """Input channels: readout latents + visibility mask (+ rays)."""
        return int(self.config.latent_channels) + MASK_CHANNELS + (RAY_CHANNELS if self.config.concat_rays else 0)

    @property
    def injection_layers(self) -> list[int]:
        return [int(i) for i in self.config.injection_layers]

    @classmethod
    def from_transformer(cls, transformer: WanTransformer3DModel, injection_layers: Sequence[int] | None = None,
                         concat_rays: bool = False, copy_weights: bool = True) -> "MemorySideBranch":
        """A branch sized for ``transformer``, its hint blocks initialised as copies of the injected blocks."""
        cfg = transformer.config
        layers = default_injection_layers(cfg.num_layers) if injection_layers is None else list(injection_layers)
        with execution_device(transformer):  # build in place: a 5B-sized branch on CPU first would take ~40 s
            branch = cls(
                injection_layers=layers, num_backbone_layers=cfg.num_layers,
                num_attention_heads=cfg.num_attention_heads, attention_head_dim=cfg.attention_head_dim,
                ffn_dim=cfg.ffn_dim, patch_size=tuple(cfg.patch_size), latent_channels=cfg.in_channels,
                concat_rays=concat_rays, qk_norm=cfg.qk_norm, cross_attn_norm=cfg.cross_attn_norm, eps=cfg.eps,
            )
        cast_module(branch, transformer.dtype)
        if copy_weights and transformer.device.type != "meta":
            branch.copy_backbone_blocks(transformer)
        return branch

    def copy_backbone_blocks(self, transformer: WanTransformer3DModel) -> None:
        """Load each hint block with the weights of the backbone block it is injected after."""
        for block, layer in zip(self.hint_blocks, self.injection_layers):
            missing, unexpected = block.load_state_dict(transformer.blocks[layer].state_dict(), strict=False)
            if unexpected or any(not k.startswith(("proj_in.", "proj_out.")) for k in missing):
                raise ValueError(f"backbone block {layer} does not match the hint block layout "
                                 f"(missing {missing}, unexpected {unexpected})")

    def check_compatible(self, transformer: WanTransformer3DModel) -> None:
        """Raise ValueError unless this branch fits ``transformer``'s width, depth and patch size."""
        cfg, own = transformer.config, self.config
        pairs = {
            "num_backbone_layers": (own.num_backbone_layers, cfg.num_layers),
            "num_attention_heads": (own.num_attention_heads, cfg.num_attention_heads),
            "attention_head_dim": (own.attention_head_dim, cfg.attention_head_dim),
            "patch_size": (tuple(own.patch_size), tuple(cfg.patch_size)),
            "latent_channels": (own.latent_channels, cfg.in_channels),
        }
        bad = {k: v for k, v in pairs.items() if v[0] != v[1]}
        if bad:
            raise ValueError("side branch does not fit the backbone: " +
                             ", ".join(f"{k} {a} != backbone {b}" for k, (a, b) in bad.items()))

    def forward(self, hint: torch.Tensor, backbone_tokens: torch.Tensor, encoder_hidden_states: torch.Tensor,
                temb: torch.Tensor, rotary_emb, token_index: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Compute the per-layer additions.

        hint: (B, hint_channels, F, h, w); backbone_tokens: (B, S, D) patch tokens of the backbone input
        (S = F*h*w / prod(patch)); encoder_hidden_states: (B, L, D) after the backbone's text projection;
        temb: (B, 6, D), per token (B, S, 6, D) or per latent frame (B, F', 6, D); rotary_emb: the backbone's RoPE
        tables. token_index: (S_t,) int64, run over these tokens only (whole latent frames when temb is per frame).
        Returns one tensor per entry of ``active_injection_layers``: (B, S, D), or (B, S_t, D) for the tokens of
        ``token_index``.
        """
        tokens = self.hint_patch_embedding(hint.to(self.hint_patch_embedding.weight.dtype))  # (B, D, F', h', w')
        if self.hint_offset is not None:
            offset = self.hint_offset
            if tokens.shape[2] > offset.shape[1] or tuple(tokens.shape[3:]) != tuple(offset.shape[2:]):
                raise ValueError(f"the hint offset covers windows of up to {offset.shape[1]} latent frames of "
                                 f"{tuple(offset.shape[2:])} tokens; this window has {tokens.shape[2]} of "
                                 f"{tuple(tokens.shape[3:])} (reload the reference weights for this size)")
            tokens = tokens + offset[None, :, : tokens.shape[2]].to(tokens.device)
        tokens = tokens.flatten(2).transpose(1, 2).contiguous()
        if tokens.shape != backbone_tokens.shape:
            raise ValueError(f"hint tokens {tuple(tokens.shape)} do not match backbone tokens "
                             f"{tuple(backbone_tokens.shape)}")
        if token_index is not None:
            tokens, backbone_tokens, temb, rotary_emb = _select_tokens(token_index, tokens, backbone_tokens, temb,
                                                                       rotary_emb)
        skips = []
        for block in self.hint_blocks[: self.num_blocks]:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                skip, tokens = torch.utils.checkpoint.checkpoint(
                    block, tokens, backbone_tokens, encoder_hidden_states, temb, rotary_emb, use_reentrant=False)
            else:
                skip, tokens = block(tokens, backbone_tokens, encoder_hidden_states, temb, rotary_emb)
            skips.append(skip)
        return skips


def _select_tokens(token_index: torch.Tensor, tokens: torch.Tensor, backbone_tokens: torch.Tensor, temb: torch.Tensor,
                   rotary_emb):
    """The hint tokens, backbone tokens (B, S, D), modulation and RoPE tables restricted to ``token_index`` (S_t,)."""
    seq = tokens.shape[1]
    index = token_index.to(tokens.device, torch.int64)
    if index.ndim != 1 or index.numel() == 0 or bool((index < 0).any() or (index >= seq).any()):
        raise ValueError(f"token_index must be a non-empty (S_t,) index into {seq} tokens")
    if temb.ndim == 4 and temb.shape[1] == seq:  # per token
        temb = temb.index_select(1, index.to(temb.device))
    elif temb.ndim == 4:  # per latent frame: the selection must be whole frames
        per_frame = seq // temb.shape[1]
        frame_index = index[::per_frame] // per_frame
        if index.numel() % per_frame or not torch.equal(
                index, (frame_index[:, None] * per_frame + torch.arange(per_frame, device=index.device)).flatten()):
            raise ValueError("token_index must select whole latent frames when the modulation is per frame")
        temb = temb.index_select(1, frame_index.to(temb.device))
    rotary_emb = tuple(t.index_select(1, index.to(t.device)) for t in rotary_emb)  # (1, S, 1, head_dim) each
    return tokens.index_select(1, index), backbone_tokens.index_select(1, index), temb, rotary_emb
