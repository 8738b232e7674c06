"""Tensor names of the paper's reference implementation (github microsoft/LatentSpatialMemory) -> ours.

The reference trains a DiffSynth-style Wan2.2 DiT (original Wan names: ``blocks.N.self_attn.q``, ``norm3``,
``ffn.0``, ``head.head``, ...) with a VACE side branch (``vace_blocks.N.*``, ``vace_patch_embedding``,
``before_proj`` / ``after_proj``) and peft LoRA, exported as ``pipe.dit.blocks.N.<module>.lora_A.weight``
(``scripts/train.py``: ``to_pipeline_lora_key``). Its stages are saved as separate files (``vace/step_*.safetensors``,
``lora/step_*.safetensors``); its inference also reads ``.pt`` files whose tensors sit under ``"vace"``,
``"generator"`` or ``"state_dict"``.

:func:`reference_to_mirage_key` renames one tensor to our :class:`~mirage.models.MirageTransformer` state-dict
name; it knows names only, shapes are the loader's business (:mod:`mirage.models.reference`).
"""

from __future__ import annotations

import re

__all__ = ["reference_to_mirage_key", "strip_prefixes", "WRAPPER_PREFIXES"]

# Wrappers a saved name may carry (DDP, FSDP, peft, the DiffSynth pipeline, the nested dicts of a .pt file).
WRAPPER_PREFIXES = ("module.", "_fsdp_wrapped_module.", "model.", "pipe.vace.", "pipe.dit.", "vace.", "dit.",
                    "base_model.model.", "base_model.", "diffusion_model.", "generator.", "state_dict.", "lora.")

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


def strip_prefixes(key: str, prefixes: tuple[str, ...] = WRAPPER_PREFIXES) -> str:
    """``key`` without any leading wrapper prefixes (repeatedly: ``module.pipe.dit.x`` -> ``x``)."""
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def reference_to_mirage_key(key: str, adapter_name: str = "default") -> str | None:
    """Our MirageTransformer state-dict name for a reference tensor name, or None if it has no counterpart.

    ``vace_blocks.3.self_attn.q.weight`` -> ``side_branch.hint_blocks.3.attn1.to_q.weight``;
    ``pipe.dit.blocks.0.self_attn.o.lora_B.weight`` -> ``backbone.blocks.0.attn1.to_out.0.lora_B.default.weight``;
    ``pipe.dit.blocks.0.ffn.2.lora_A.weight`` -> ``backbone.blocks.0.ffn.net.2.lora_A.default.weight``.
    """
    key = strip_prefixes(key)
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
