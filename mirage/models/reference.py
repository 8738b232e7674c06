"""Loading weights of the paper's reference implementation (github microsoft/LatentSpatialMemory): all or nothing.

What a reference training run writes (``scripts/train.py``): one file per stage, ``vace/step_*_vace.safetensors``
(the side branch: ``vace_blocks.N.*``, ``vace_patch_embedding.*``) and ``lora/step_*_lora.safetensors`` (peft LoRA of
rank 32, alpha 32 on ``q, k, v, o, ffn.0, ffn.2`` of every DiT block: self- and cross-attention and the FFN); its
inference also reads ``.pt`` files. The base DiT is Wan2.2-TI2V-5B itself, which we load in diffusers layout from
the hub; a DiffSynth-named copy of it (``blocks.N.self_attn.q.weight``, ...) maps too.

:func:`load_reference_checkpoint` maps every tensor (names: :mod:`mirage.models.reference_keys`) and by default
loads only when everything fits (``strict=True``): every source tensor has a place of the same shape, and every
part it touches (side branch, LoRA adapter, backbone) is provided entirely. Otherwise it raises ValueError listing
unmapped, mismatched and missing keys, before changing anything. ``strict=False`` loads what fits and logs the
same list at WARNING. Three adaptations make a reference file fit exactly:

* LoRA: an adapter with the checkpoint's targets (:data:`~mirage.models.lora.REFERENCE_LORA_TARGETS` for a default
  reference run), its rank and alpha = rank is attached (the reference merges with ``alpha=1.0``: scale 1).
* The 96-channel hint embedding is folded into our 49 channels with the score latent
  (:mod:`mirage.models.reference_hint`; :func:`~mirage.models.reference_hint.reference_score_latent` computes it with
  the backbone's VAE): exact, the mask channel's weights zero.
* The camera embedding is zeroed when a side branch is loaded: the reference has none (its camera reaches the model
  only through the memory readout), and a zero embedding adds nothing.
"""

from __future__ import annotations

import logging
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from mirage.models.lora import add_lora, lora_adapters, remove_lora
from mirage.models.reference_hint import REFERENCE_HINT_CHANNELS, fold_score_channels
from mirage.models.reference_keys import reference_to_mirage_key
from mirage.models.transformer import MirageTransformer

logger = logging.getLogger(__name__)

__all__ = ["ConversionReport", "reference_to_mirage_key", "load_reference_checkpoint", "read_state_dict",
           "PICKLE_SUFFIXES"]

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_HINT_WEIGHT = "side_branch.hint_patch_embedding.weight"
_HINT_BIAS = "side_branch.hint_patch_embedding.bias"
_BLOCK_PREFIX = re.compile(r"^backbone\.blocks\.\d+\.")


@dataclass
class ConversionReport:
    """What :func:`load_reference_checkpoint` did (or would do), key by key.

    mapped: source key -> our key, loaded as is (after a dtype cast).
    folded: source key -> our key, the 96-channel hint embedding folded into ours (weight and bias).
    shape_mismatches: (source key, our key, source shape, our shape).
    unmapped_source: source key -> why it has no place in the model.
    missing_target: our keys of a part the checkpoint touches that it does not provide.
    duplicates: our key -> the source keys that all map to it.
    lora_attached: {"rank", "alpha", "targets"} of an adapter attached to receive the checkpoint's LoRA, or None.
    zeroed: parts set to zero because the reference has none ("camera_embedding").
    hint_offset: the (D, F, h', w') shape of the hint offset the fold left (None: the fold went into the bias alone).
    """

    mapped: dict[str, str] = field(default_factory=dict)
    folded: dict[str, str] = field(default_factory=dict)
    shape_mismatches: list[tuple[str, str, tuple, tuple]] = field(default_factory=list)
    unmapped_source: dict[str, str] = field(default_factory=dict)
    missing_target: list[str] = field(default_factory=list)
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    lora_attached: dict | None = None
    zeroed: list[str] = field(default_factory=list)
    hint_offset: tuple | None = None

    @property
    def complete(self) -> bool:
        """True when every source tensor has a place and every part it touches is provided entirely."""
        return not (self.shape_mismatches or self.unmapped_source or self.missing_target or self.duplicates)

    def summary(self, max_items: int = 10) -> str:
        """Counts, then up to ``max_items`` keys of each problem (the rest counted)."""
        lines = [f"mapped {len(self.mapped)}, folded {len(self.folded)}, unmapped source {len(self.unmapped_source)}, "
                 f"shape mismatches {len(self.shape_mismatches)}, missing in checkpoint {len(self.missing_target)}, "
                 f"duplicates {len(self.duplicates)}"]
        if self.lora_attached:
            lines.append("attached LoRA rank {rank} alpha {alpha} on {targets}".format(**self.lora_attached))
        if self.zeroed:
            lines.append(f"zeroed (not in the reference): {', '.join(self.zeroed)}")
        groups = [
            ("unmapped", [f"{src} ({why})" for src, why in self.unmapped_source.items()]),
            ("shape", [f"{src} {a} -> {dst} {b}" for src, dst, a, b in self.shape_mismatches]),
            ("missing", list(self.missing_target)),
            ("duplicate", [f"{dst} <- {', '.join(srcs)}" for dst, srcs in self.duplicates.items()]),
        ]
        for label, items in groups:
            lines.extend(f"  {label:9s}{item}" for item in items[:max_items])
            if len(items) > max_items:
                lines.append(f"  {label:9s}... and {len(items) - max_items} more")
        return "\n".join(lines)

    __str__ = summary


def _flatten(tree: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors of a (nested) dict, nested names joined with dots (``{"vace": {"x": t}}`` -> ``vace.x``)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, dict):
            out.update(_flatten(value, name + "."))
    return out


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return dict(load_file(str(path)))
    if path.suffix in PICKLE_SUFFIXES:
        try:  # weights_only: tensors and plain containers, never code
            data = torch.load(str(path), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
            raise ValueError(f"{str(path)!r} could not be read with torch.load(weights_only=True) ({error}); only "
                             "tensors and plain dicts are loaded from pickles: convert it to .safetensors") from None
        if not isinstance(data, dict):
            raise ValueError(f"{str(path)!r} holds a {type(data).__name__}, not a state dict")
        return _flatten(data)
    raise ValueError(f"{str(path)!r} is neither .safetensors nor a torch state dict ({', '.join(PICKLE_SUFFIXES)})")


def read_state_dict(source) -> dict[str, torch.Tensor]:
    """Tensors from a dict, a .safetensors / .pt file, a directory of them, or a list of those.

    A name given by two files raises ValueError (two steps of one stage, say): pass the files you mean.
    """
    if isinstance(source, dict):
        return _flatten(source)
    if isinstance(source, (list, tuple)):
        out: dict[str, torch.Tensor] = {}
        for s in source:
            part = read_state_dict(s)
            twice = sorted(set(part) & set(out))
            if twice:
                raise ValueError(f"{len(twice)} tensor names are given twice (e.g. {twice[0]!r}, in {str(s)!r}): "
                                 "pass each stage's file once")
            out.update(part)
        return out
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".safetensors",) + PICKLE_SUFFIXES)
        if not files:
            raise ValueError(f"no .safetensors or {'/'.join(PICKLE_SUFFIXES)} files under {str(path)!r}")
        return read_state_dict(files)
    if not path.is_file():
        raise ValueError(f"reference checkpoint {str(path)!r} does not exist")
    return _read_file(path)


def _attach_lora(model, report, renamed, source_sd, adapter_name):
    """Attach an adapter shaped like the checkpoint's LoRA (targets, rank; alpha = rank); returns the grad flags to
    restore on undo, or None when nothing was attached."""
    own_modules = dict(model.named_modules())
    lora = {k: t for k, t in renamed.items() if t is not None and ".lora_A." in t
            and t.split(".lora_A.")[0] in own_modules and t.startswith("backbone.blocks.")}
    if not lora or adapter_name in lora_adapters(model):
        return None
    ranks = {int(source_sd[k].shape[0]) for k in lora}
    if len(ranks) > 1:
        raise ValueError(f"reference LoRA tensors have several ranks {sorted(ranks)}")
    rank = ranks.pop()
    targets = sorted({_BLOCK_PREFIX.sub("", t.split(".lora_A.")[0]) for t in lora.values()})
    grad_flags = {n: p.requires_grad for n, p in model.backbone.named_parameters()}
    add_lora(model, rank=rank, alpha=float(rank), adapter_name=adapter_name, targets=targets)
    report.lora_attached = {"rank": rank, "alpha": float(rank), "targets": targets}
    return grad_flags


def _missing(own: dict, provided: set, touched: set, adapter_name: str) -> list[str]:
    """Our keys of the parts the checkpoint touches ("side_branch", "lora", "backbone") it does not provide."""
    def part(key: str) -> str | None:
        if key.startswith("side_branch."):
            return "side_branch"
        if f".lora_A.{adapter_name}." in key or f".lora_B.{adapter_name}." in key:
            return "lora"
        if key.startswith("backbone.") and ".lora_" not in key:
            return "backbone"
        return None

    return sorted(k for k in own if k not in provided and part(k) in touched)


def load_reference_checkpoint(model: MirageTransformer, source, *, score_latent: torch.Tensor | None = None,
                              strict: bool = True, adapter_name: str = "default",
                              attach_lora: bool = True) -> ConversionReport:
    """Load reference-implementation weights into ``model`` (see the module docstring).

    source: a state dict, a .safetensors / .pt file, a directory of them, or a list (e.g. the vace and lora files).
    score_latent: (48, F, h, w), the score latent of the longest window the model will run (needed to fold a
        96-channel hint embedding; :func:`~mirage.models.reference_hint.reference_score_latent`).
    strict: raise ValueError, changing nothing, unless everything fits (default); False loads what fits and logs
        the rest at WARNING. attach_lora: attach an adapter shaped like the checkpoint's LoRA when the model has
        none named ``adapter_name``. Returns the :class:`ConversionReport`.
    """
    if not isinstance(model, MirageTransformer):
        raise ValueError(f"load_reference_checkpoint expects a MirageTransformer, got {type(model).__name__}")
    source_sd = read_state_dict(source)
    if not source_sd:
        raise ValueError("the reference checkpoint holds no tensors")
    report = ConversionReport()
    renamed = {k: reference_to_mirage_key(k, adapter_name) for k in source_sd}
    grad_flags = _attach_lora(model, report, renamed, source_sd, adapter_name) if attach_lora else None

    own = model.state_dict()
    updates: dict[str, torch.Tensor] = {}
    sources_of: dict[str, list[str]] = {}
    touched: set[str] = set()
    hint = {}  # the reference's 96-channel hint embedding, folded after the loop
    hint_src = next((s for s, d in renamed.items() if d == _HINT_WEIGHT), None)
    fold = model.side_branch is not None and hint_src is not None and source_sd[hint_src].ndim == 5 and \
        source_sd[hint_src].shape[1] == REFERENCE_HINT_CHANNELS
    for src, dst in renamed.items():
        tensor = source_sd[src]
        if dst is not None and dst not in own:  # peft moved the wrapped linear's own weights under base_layer
            module, _, leaf = dst.rpartition(".")
            if f"{module}.base_layer.{leaf}" in own:
                dst = f"{module}.base_layer.{leaf}"
        if dst is None:
            report.unmapped_source[src] = "no counterpart name"
            continue
        if dst not in own:
            why = "LoRA target this model's adapter lacks" if ".lora_" in dst else "not in this model"
            report.unmapped_source[src] = f"{why} ({dst})"
            continue
        sources_of.setdefault(dst, []).append(src)
        touched.add("side_branch" if dst.startswith("side_branch.") else "lora" if ".lora_" in dst else "backbone")
        if fold and dst in (_HINT_WEIGHT, _HINT_BIAS):
            hint[dst] = src
        elif tuple(tensor.shape) == tuple(own[dst].shape):
            report.mapped[src] = dst
            updates[dst] = tensor
        else:
            report.shape_mismatches.append((src, dst, tuple(tensor.shape), tuple(own[dst].shape)))
    report.duplicates = {dst: srcs for dst, srcs in sources_of.items() if len(srcs) > 1}

    offset = _fold_hint(model, report, hint, source_sd, score_latent, updates, own)
    report.missing_target = _missing(own, set(updates), touched, adapter_name)
    if "side_branch" in touched and model.camera_embedding is not None:
        report.zeroed.append("camera_embedding")

    if not report.complete:
        if strict:
            if grad_flags is not None:  # undo the attachment, including peft's freezing of the backbone
                remove_lora(model, adapter_name)
                for n, p in model.backbone.named_parameters():
                    p.requires_grad_(grad_flags.get(n, p.requires_grad))
            raise ValueError("the reference checkpoint does not fit this model (nothing was loaded; strict=False "
                             "loads what fits):\n" + report.summary())
        logger.warning("reference checkpoint loaded INCOMPLETELY (the rest keeps its current values):\n%s",
                       report.summary())
    with torch.no_grad():
        params = dict(model.named_parameters())
        params.update(dict(model.named_buffers()))
        for dst, tensor in updates.items():
            params[dst].copy_(tensor.to(dtype=params[dst].dtype, device=params[dst].device))
        if report.folded:
            model.side_branch.set_hint_offset(offset)
        if "camera_embedding" in report.zeroed:
            for p in model.camera_embedding.parameters():
                p.zero_()
    return report


def _fold_hint(model, report, hint: dict, source_sd, score_latent, updates: dict, own: dict):
    """Fold the 96-channel hint embedding (sources ``hint``: our key -> source key) into ``updates``; returns the
    hint offset (or None). Problems go to the report (the caller decides whether to raise)."""
    if not hint:
        return None
    src_w, src_b = hint.get(_HINT_WEIGHT), hint.get(_HINT_BIAS)
    branch = model.side_branch
    if branch.hint_channels != REFERENCE_HINT_CHANNELS // 2 + 1:
        why = f"a 96-channel hint folds into 49 channels (readout + mask), this branch takes {branch.hint_channels}"
    elif src_b is None:
        why = "folding the 96-channel hint embedding needs its bias (vace_patch_embedding.bias) too"
    elif score_latent is None:
        why = ("folding the 96-channel hint embedding needs score_latent "
               "(mirage.models.reference_hint.reference_score_latent)")
    else:
        folded = fold_score_channels(source_sd[src_w], source_sd[src_b], score_latent)
        if tuple(folded.weight.shape) != tuple(own[_HINT_WEIGHT].shape):
            report.shape_mismatches.append((src_w, _HINT_WEIGHT, tuple(folded.weight.shape),
                                            tuple(own[_HINT_WEIGHT].shape)))
            return None
        updates[_HINT_WEIGHT], updates[_HINT_BIAS] = folded.weight, folded.bias
        report.folded = {src_w: _HINT_WEIGHT, src_b: _HINT_BIAS}
        report.hint_offset = None if folded.offset is None else tuple(folded.offset.shape)
        return folded.offset
    for dst, src in hint.items():
        report.unmapped_source[src] = why
    return None
