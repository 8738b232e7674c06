"""Timestep modulation once per latent frame instead of once per token, and the guard on the diffusers code it adapts.

The Wan2.2 TI2V model takes one timestep per token (clean context frames 0, generated frames t), and diffusers'
``WanTransformerBlock.forward`` then builds a (B, S, 6, D) float32 modulation tensor in every block (at 704x1280
and 15 latent frames: S = 13,200 tokens, D = 3,072, so ~1 GB written and read per block). Every token of a latent
frame has the same timestep, so one (6, D) row per frame, broadcast over the frame's tokens, gives the same
numbers with a (B, F, 6, D) tensor. :func:`frame_modulated_block` is that block forward; it does the same
float32 operations in the same order on the same values as diffusers' per-token path, so given the same
modulation rows its output is bit for bit the same (tests/test_transformer_modulation.py); see
:data:`MODULATION_MODES` for the embedding.

Adapted from diffusers 0.42.1 (``WanTransformerBlock.forward``; ``mirage.models.transformer`` adapts
``WanTransformer3DModel.forward``). :func:`check_diffusers_compat` fails with a RuntimeError naming 0.42.1 when
an installed diffusers of another version changed the code of one of the functions we adapted (compared as
normalised syntax trees: comments, docstrings, type hints and decorators don't count).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import textwrap
import warnings

import torch
from diffusers.models.transformers.transformer_wan import (
    WanTimeTextImageEmbedding,
    WanTransformer3DModel,
    WanTransformerBlock,
)

__all__ = [
    "ADAPTED_DIFFUSERS_VERSION",
    "MODULATION_MODES",
    "check_diffusers_compat",
    "source_fingerprint",
    "frame_timesteps",
    "frame_modulated_block",
]

ADAPTED_DIFFUSERS_VERSION = "0.42.1"

# Fingerprints (source_fingerprint) of the diffusers 0.42.1 functions mirage re-implements or relies on the exact
# output layout of. diffusers 0.41.0 and github main of 2026-08-23 have the same code (main only adds a return type
# hint); 0.35.2 differs in WanTransformer3DModel.forward (LoRA scaling inline instead of the @apply_lora_scale
# decorator, no .contiguous() before the blocks). The output norm's shift/scale code is unchanged since the
# ``.to(temb.device)`` fix (diffusers #12347).
_ADAPTED_FUNCTIONS = {
    "WanTransformer3DModel.forward": (WanTransformer3DModel.forward, "b89293a3a4d6d8bb"),
    "WanTransformerBlock.forward": (WanTransformerBlock.forward, "1c5bb4dcb0c3699b"),
    "WanTimeTextImageEmbedding.forward": (WanTimeTextImageEmbedding.forward, "cdecadf4dac636bb"),
}

# "per_token": diffusers' path, one timestep embedding and one (6, D) modulation row per token. "per_frame": both
# once per latent frame (B*F rows through the embedder's GEMMs instead of B*S). The broadcast itself is exact
# (frame_modulated_block is bit-identical to diffusers' block given the same rows); the embedding can differ in
# the last bit, because BLAS does not promise identical results for identical rows of one GEMM (a remainder row
# of a tile may round differently: seen here on a (18, 256) x (256, 24) float32 product, |diff| 1.5e-8), nor
# for another row count. So "per_frame" equals "per_token" to float32 rounding of the embedding, and bit for
# bit whenever the per-token embedder gives a frame's tokens identical rows (most shapes tried).
MODULATION_MODES = ("per_frame", "per_token")


def source_fingerprint(source: str) -> str:
    """16 hex digits identifying the code of one function definition, ignoring its docstring, comments, layout,
    type annotations and decorators."""
    tree = ast.parse(textwrap.dedent(source))
    if len(tree.body) != 1 or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise ValueError("source_fingerprint needs the source of exactly one function definition")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.decorator_list = []
            node.returns = None
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        elif isinstance(node, ast.arg):
            node.annotation = None
    return hashlib.sha256(ast.unparse(tree).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def check_diffusers_compat() -> None:
    """Raise RuntimeError if the installed diffusers changed code that mirage's Wan forward passes adapt.

    Exactly diffusers 0.42.1 passes without looking. Another version passes when the adapted functions are
    unchanged (their :func:`source_fingerprint` matches 0.42.1's), and raises otherwise, naming them.
    """
    import diffusers

    installed = diffusers.__version__
    if installed == ADAPTED_DIFFUSERS_VERSION:
        return
    changed = []
    for name, (fn, expected) in _ADAPTED_FUNCTIONS.items():
        try:
            source = inspect.getsource(fn)
        except (OSError, TypeError):
            warnings.warn(f"diffusers {installed}: no source for {name}, cannot check it against the diffusers "
                          f"{ADAPTED_DIFFUSERS_VERSION} code mirage adapts", RuntimeWarning, stacklevel=2)
            continue
        if source_fingerprint(source) != expected:
            changed.append(name)
    if changed:
        raise RuntimeError(
            f"mirage's Wan transformer forward is adapted from diffusers {ADAPTED_DIFFUSERS_VERSION}, but the "
            f"installed diffusers {installed} changed {', '.join(changed)}. Install diffusers=="
            f"{ADAPTED_DIFFUSERS_VERSION}, or port the change into mirage/models/transformer.py and "
            f"mirage/models/modulation.py and update their fingerprints.")


def frame_timesteps(timestep: torch.Tensor, frames: int) -> torch.Tensor | None:
    """Per-token timesteps (B, S) -> (B, frames) when every token of each latent frame has the same value, else None.

    Tokens are in (f, y, x) order, S = frames * tokens per frame. Reads the comparison's result on the host (one
    synchronisation on a GPU).
    """
    batch, seq = timestep.shape
    if frames <= 0 or seq % frames:
        raise ValueError(f"{seq} tokens do not split into {frames} latent frames")
    per_frame = timestep.view(batch, frames, seq // frames)
    first = per_frame[:, :, 0]
    return first if bool((per_frame == first[:, :, None]).all()) else None


# Adapted from diffusers 0.42.1 WanTransformerBlock.forward (the per-token "temb.ndim == 4" branch), with the
# modulation broadcast over each frame's tokens instead of materialised per token.
def frame_modulated_block(block: WanTransformerBlock, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                          temb: torch.Tensor, rotary_emb) -> torch.Tensor:
    """One Wan block with one modulation per latent frame.

    hidden_states: (B, S, D) tokens in (f, y, x) order; encoder_hidden_states: (B, L, D); temb: (B, F, 6, D), one
    timestep projection per latent frame (S = F * tokens per frame); rotary_emb: the backbone's RoPE tables.
    Returns (B, S, D), bit-identical to ``block(hidden_states, encoder_hidden_states, per_token_temb, rotary_emb)``
    with ``per_token_temb`` (B, S, 6, D) repeating each frame's row over its tokens.
    """
    batch, seq, dim = hidden_states.shape
    frames = temb.shape[1]
    if temb.ndim != 4 or temb.shape[0] != batch or seq % frames:
        raise ValueError(f"temb {tuple(temb.shape)} is not one (6, D) row per latent frame of {seq} tokens")
    # (B, F, 1, D) each, broadcast over a frame's tokens; same float32 sums as diffusers' (B, S, 6, D) path
    modulation = (block.scale_shift_table.unsqueeze(0) + temb.float()).unsqueeze(2)
    shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = modulation.unbind(3)

    def framed(t: torch.Tensor) -> torch.Tensor:  # (B, S, D) -> (B, F, S/F, D)
        return t.reshape(batch, frames, seq // frames, dim)

    def flat(t: torch.Tensor) -> torch.Tensor:  # (B, F, S/F, D) -> (B, S, D)
        return t.reshape(batch, seq, dim)

    # 1. Self-attention
    norm_hidden_states = flat(framed(block.norm1(hidden_states.float())) * (1 + scale_msa) + shift_msa)
    norm_hidden_states = norm_hidden_states.type_as(hidden_states)
    attn_output = block.attn1(norm_hidden_states, None, None, rotary_emb)
    hidden_states = flat(framed(hidden_states.float()) + framed(attn_output) * gate_msa).type_as(hidden_states)

    # 2. Cross-attention (no modulation)
    norm_hidden_states = block.norm2(hidden_states.float()).type_as(hidden_states)
    attn_output = block.attn2(norm_hidden_states, encoder_hidden_states, None, None)
    hidden_states = hidden_states + attn_output

    # 3. Feed-forward
    norm_hidden_states = flat(framed(block.norm3(hidden_states.float())) * (1 + c_scale_msa) + c_shift_msa)
    ff_output = block.ffn(norm_hidden_states.type_as(hidden_states))
    return flat(framed(hidden_states.float()) + framed(ff_output.float()) * c_gate_msa).type_as(hidden_states)
