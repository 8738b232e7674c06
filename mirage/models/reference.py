"""Checkpoints of the paper's reference implementation (github microsoft/LatentSpatialMemory).

The reference trains a DiffSynth-style Wan2.2 DiT with a VACE side branch (``vace_blocks.N.*``,
``vace_patch_embedding``; 15 blocks at backbone blocks 0, 2, ..., 28; 96 input channels = 48 readout latents
+ 48 channels of a VAE-encoded all-ones "score" video) and peft LoRA saved as ``pipe.dit.blocks.N.<module>.
lora_A.weight`` (default targets ``q,k,v,o,ffn.0,ffn.2`` at rank 32, i.e. self- *and* cross-attention and
the FFN; the paper describes self-attention only at rank 64). Its stages are saved as separate safetensors
files.

:func:`reference_to_mirage_key` renames one tensor (DiffSynth / original Wan names -> our
MirageTransformer state-dict names); :func:`load_reference_checkpoint` loads whatever fits and returns a
:class:`ConversionReport` of what was mapped, what mismatched in shape and which keys found no counterpart
on either side. Our side branch takes 49 input channels (readout + visibility mask), so the reference's
96-channel hint patch embedding cannot load as is; ``adapt_hint_embedding=True`` copies its first 48 input
channels (the readout latents) and zeroes the mask channel.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from mirage.models.configs import LATENT_CHANNELS
from mirage.models.lora import add_lora, lora_adapters, remove_lora
from mirage.models.transformer import MirageTransformer

__all__ = ["ConversionReport", "reference_to_mirage_key", "load_reference_checkpoint", "read_state_dict"]

_PREFIXES = ("module.", "_fsdp_wrapped_module.", "model.", "pipe.vace.", "pipe.dit.", "vace.", "dit.",
             "base_model.model.", "base_model.", "diffusion_model.")

# Module paths inside one Wan block: DiffSynth / original Wan name -> diffusers name.
# Wan's norm3 is the (affine) cross-attention norm, diffusers calls it norm2; Wan's norm2 has no weights.
_BLOCK_MODULES = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0", "self_attn.norm_q": "attn1.norm_q", "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0", "cross_attn.norm_q": "attn2.norm_q", "cross_attn.norm_k": "attn2.norm_k",
    "cross_attn.k_img": "attn2.add_k_proj", "cross_attn.v_img": "attn2.add_v_proj",
    "cross_attn.norm_k_img": "attn2.norm_added_k",
    "norm3": "norm2", "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2",
    "before_proj": "proj_in", "after_proj": "proj_out",
}
_TOP_MODULES = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
}
_TOP_PARAMS = {"head.modulation": "scale_shift_table"}
_PARAM = re.compile(r"^(?P<module>.+?)\.(?:(?P<lora>lora_[AB])(?:\.[^.]+)?\.)?(?P<leaf>weight|bias)$")
_BLOCK = re.compile(r"^(?P<kind>blocks|vace_blocks)\.(?P<index>\d+)\.(?P<rest>.+)$")


@dataclass
class ConversionReport:
    """What :func:`load_reference_checkpoint` did, key by key.

    mapped: source key -> our key, loaded as is (after a dtype cast).
    adapted: source key -> our key, loaded partially (``adapt_hint_embedding``).
    shape_mismatches: (source key, our key, source shape, our shape), not loaded.
    unmapped_source: source keys with no counterpart in the model (with the reason).
    missing_target: our trainable keys (side branch, camera embedding, LoRA) the checkpoint did not provide.
    lora_attached: (rank, alpha) of a LoRA adapter created to receive the checkpoint's LoRA, or None.
    """

    mapped: dict[str, str] = field(default_factory=dict)
    adapted: dict[str, str] = field(default_factory=dict)
    shape_mismatches: list[tuple[str, str, tuple, tuple]] = field(default_factory=list)
    unmapped_source: dict[str, str] = field(default_factory=dict)
    missing_target: list[str] = field(default_factory=list)
    lora_attached: tuple[int, float] | None = None

    @property
    def complete(self) -> bool:
        """True when every source tensor loaded and nothing trainable was left out."""
        return not (self.shape_mismatches or self.unmapped_source or self.missing_target or self.adapted)

    def summary(self, max_items: int = 8) -> str:
        lines = [f"mapped {len(self.mapped)}, adapted {len(self.adapted)}, shape mismatches "
                 f"{len(self.shape_mismatches)}, unmapped source {len(self.unmapped_source)}, missing in "
                 f"checkpoint {len(self.missing_target)}"]
        if self.lora_attached:
            lines.append(f"attached LoRA rank {self.lora_attached[0]} alpha {self.lora_attached[1]}")
        for src, dst in list(self.adapted.items())[:max_items]:
            lines.append(f"  adapted  {src} -> {dst}")
        for src, dst, a, b in self.shape_mismatches[:max_items]:
            lines.append(f"  shape    {src} {a} -> {dst} {b}")
        for src, why in list(self.unmapped_source.items())[:max_items]:
            lines.append(f"  unmapped {src} ({why})")
        for k in self.missing_target[:max_items]:
            lines.append(f"  missing  {k}")
        return "\n".join(lines)

    __str__ = summary


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def reference_to_mirage_key(key: str, adapter_name: str = "default") -> str | None:
    """Our MirageTransformer state-dict name for a reference tensor name, or None if it has no counterpart.

    ``vace_blocks.3.self_attn.q.weight`` -> ``side_branch.hint_blocks.3.attn1.to_q.weight``;
    ``pipe.dit.blocks.0.self_attn.o.lora_B.weight`` -> ``backbone.blocks.0.attn1.to_out.0.lora_B.default.weight``.
    """
    key = _strip_prefixes(key)
    if key.startswith("vace_patch_embedding."):
        return "side_branch.hint_patch_embedding." + key[len("vace_patch_embedding."):]
    if key in _TOP_PARAMS:
        return "backbone." + _TOP_PARAMS[key]
    block = _BLOCK.match(key)
    if block:
        prefix = ("side_branch.hint_blocks." if block["kind"] == "vace_blocks" else "backbone.blocks.") + block["index"]
        rest = block["rest"]
        if rest == "modulation":
            return f"{prefix}.scale_shift_table"
        m = _PARAM.match(rest)
        if not m or m["module"] not in _BLOCK_MODULES:
            return None
        module = _BLOCK_MODULES[m["module"]]
    else:
        m = _PARAM.match(key)
        if not m or m["module"] not in _TOP_MODULES:
            return None
        prefix, module = "backbone", _TOP_MODULES[m["module"]]
    if m["lora"]:
        if m["leaf"] != "weight":
            return None
        return f"{prefix}.{module}.{m['lora']}.{adapter_name}.weight"
    return f"{prefix}.{module}.{m['leaf']}"


def read_state_dict(source: str | os.PathLike | dict | list) -> dict[str, torch.Tensor]:
    """Tensors from a dict, a .safetensors file, a directory of them, or a list of those (later wins)."""
    if isinstance(source, dict):
        return {k: v for k, v in source.items() if isinstance(v, torch.Tensor)}
    if isinstance(source, (list, tuple)):
        out: dict[str, torch.Tensor] = {}
        for s in source:
            out.update(read_state_dict(s))
        return out
    path = Path(source)
    if path.is_dir():
        files = sorted(path.rglob("*.safetensors"))
        if not files:
            raise ValueError(f"no .safetensors files under {str(path)!r}")
        return read_state_dict(files)
    if path.suffix != ".safetensors" or not path.is_file():
        raise ValueError(f"{str(path)!r} is not a .safetensors file (pickled checkpoints are not loaded)")
    return dict(load_file(str(path)))


def load_reference_checkpoint(model: MirageTransformer, source, adapter_name: str = "default",
                              attach_lora: bool = True, adapt_hint_embedding: bool = False,
                              strict: bool = False) -> ConversionReport:
    """Load reference-implementation weights into ``model`` where names and shapes allow.

    attach_lora: when the checkpoint has LoRA tensors for our targets and the model has no adapter
        ``adapter_name``, attach one with the checkpoint's rank and alpha = rank (the reference merges
        with scale 1).
    strict: raise ValueError (before changing anything) unless the report is complete.
    """
    if not isinstance(model, MirageTransformer):
        raise ValueError(f"load_reference_checkpoint expects a MirageTransformer, got {type(model).__name__}")
    source_sd = read_state_dict(source)
    if not source_sd:
        raise ValueError("the reference checkpoint holds no tensors")
    report = ConversionReport()
    renamed = {k: reference_to_mirage_key(k, adapter_name) for k in source_sd}

    attached = None
    lora_sources = {k: t for k, t in renamed.items() if t is not None and ".lora_A." in t}
    if attach_lora and lora_sources and adapter_name not in lora_adapters(model):
        own_modules = dict(model.named_modules())
        ranks = {source_sd[k].shape[0] for k, t in lora_sources.items()
                 if t.split(".lora_A.")[0] in own_modules}
        if len(ranks) > 1:
            raise ValueError(f"reference LoRA tensors have several ranks {sorted(ranks)}")
        if ranks:
            grad_flags = {n: p.requires_grad for n, p in model.backbone.named_parameters()}
            rank = ranks.pop()
            add_lora(model, rank=rank, alpha=float(rank), adapter_name=adapter_name)
            attached = report.lora_attached = (rank, float(rank))

    own = model.state_dict()
    trainable_prefixes = ("side_branch.", "camera_embedding.")
    updates: dict[str, torch.Tensor] = {}
    for src, dst in renamed.items():
        tensor = source_sd[src]
        if dst is not None and dst not in own:  # peft moved the wrapped linear's own weights under base_layer
            module, _, leaf = dst.rpartition(".")
            if f"{module}.base_layer.{leaf}" in own:
                dst = f"{module}.base_layer.{leaf}"
        if dst is None:
            report.unmapped_source[src] = "no counterpart name"
        elif dst not in own:
            why = "LoRA target we do not adapt" if ".lora_" in dst else "not in this model"
            report.unmapped_source[src] = f"{why} ({dst})"
        elif tuple(tensor.shape) == tuple(own[dst].shape):
            report.mapped[src] = dst
            updates[dst] = tensor
        elif adapt_hint_embedding and dst == "side_branch.hint_patch_embedding.weight" and \
                tensor.shape[0] == own[dst].shape[0] and tensor.shape[2:] == own[dst].shape[2:] and \
                tensor.shape[1] >= LATENT_CHANNELS:
            adapted = torch.zeros_like(own[dst])
            adapted[:, :LATENT_CHANNELS] = tensor[:, :LATENT_CHANNELS]
            report.adapted[src] = dst
            updates[dst] = adapted
        else:
            report.shape_mismatches.append((src, dst, tuple(tensor.shape), tuple(own[dst].shape)))
    provided = set(updates)
    report.missing_target = sorted(k for k in own if k not in provided and
                                   (k.startswith(trainable_prefixes) or f".lora_A.{adapter_name}." in k
                                    or f".lora_B.{adapter_name}." in k))
    if strict and not report.complete:
        if attached is not None:  # undo the attachment, including peft's freezing of the backbone
            remove_lora(model, adapter_name)
            for n, p in model.backbone.named_parameters():
                p.requires_grad_(grad_flags.get(n, p.requires_grad))
        raise ValueError("reference checkpoint does not fit exactly:\n" + report.summary())
    with torch.no_grad():
        params = dict(model.named_parameters())
        params.update(dict(model.named_buffers()))
        for dst, tensor in updates.items():
            params[dst].copy_(tensor.to(dtype=params[dst].dtype, device=params[dst].device))
    return report
