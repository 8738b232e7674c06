"""Speed options for a MirageTransformer: regional torch.compile, the SDPA backend, FP8 GEMMs.

    from mirage.models.acceleration import accelerate_transformer
    accelerate_transformer(model.transformer, compile="regional", sdpa_backend="cudnn", fp8=True)

Each is measured on and off by ``bench/gpu_suite.py`` (speed and the numeric difference against bf16 on the same
seed). None changes the weights on disk or the config; all act in place on the loaded modules.

* ``compile="regional"``: ``torch.compile`` of the repeated blocks only (diffusers' "regional compilation":
  one graph shared by the 30 backbone blocks, another by the hint blocks, compiled in seconds instead of the
  whole model), which fuses the elementwise work around the GEMMs (norms, modulation, RoPE, gates).
* ``sdpa_backend``: which ``torch.nn.functional.scaled_dot_product_attention`` kernel the attention layers use
  ("flash", "efficient", "math", "cudnn"; diffusers' native attention backends), set per attention processor,
  never process-wide.
* ``fp8=True``: the linear layers of the blocks as e4m3 GEMMs (``torch._scaled_mm``, per-tensor scales: the
  weight's once, the activation's per call), CUDA with FP8 tensor cores (sm_89+) only.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from mirage.models.modulation import frame_modulated_block

__all__ = ["accelerate_transformer", "Fp8Linear", "SDPA_BACKENDS", "E4M3_MAX"]

# Our names -> diffusers' AttentionBackendName values (torch SDPA restricted to one kernel).
SDPA_BACKENDS = {"flash": "_native_flash", "efficient": "_native_efficient", "math": "_native_math",
                 "cudnn": "_native_cudnn"}
E4M3_MAX = float(torch.finfo(torch.float8_e4m3fn).max)  # 448


def accelerate_transformer(transformer, compile: str | None = None, sdpa_backend: str | None = None,
                           fp8: bool = False, *, compile_options: dict | None = None):
    """Apply speed options to a :class:`~mirage.models.MirageTransformer` in place; returns it.

    compile: None or "regional" (compile every backbone block, every hint block and the per-frame block
        function). compile_options: keyword arguments of ``torch.compile`` (default ``fullgraph=True``).
    sdpa_backend: None (leave as is), "flash", "efficient", "math" or "cudnn".
    fp8: e4m3 GEMMs for the blocks' linear layers whose sizes are multiples of 16 (LoRA-wrapped layers stay as they
        are: merge LoRA first). Needs the model on a CUDA device with FP8 tensor cores, else ValueError.
    The applied options are recorded in ``transformer.acceleration``. For inference: save adapters before
    accelerating (FP8 layers hold e4m3 buffers instead of ``weight``), and the embedders, patch embedding and output
    projection outside the blocks stay in their dtype.
    """
    if compile not in (None, "regional"):
        raise ValueError(f"compile must be None or 'regional', got {compile!r}")
    if sdpa_backend is not None and sdpa_backend not in SDPA_BACKENDS:
        raise ValueError(f"sdpa_backend must be None or one of {list(SDPA_BACKENDS)}, got {sdpa_backend!r}")
    applied = dict(getattr(transformer, "acceleration", {}))
    if compile and applied.get("compile"):
        raise ValueError("this transformer is already compiled")
    if fp8:
        _check_fp8_device(transformer.device)
    blocks = _repeated_blocks(transformer)

    # 1. FP8 first: compilation must see the modules it will run
    if fp8:
        applied["fp8_layers"] = applied.get("fp8_layers", 0) + sum(_to_fp8(block) for block in blocks)
    # 2. Attention kernel
    if sdpa_backend is not None:
        _set_sdpa_backend(transformer, sdpa_backend)
        applied["sdpa_backend"] = sdpa_backend
    # 3. Regional compilation
    if compile:
        options = {"fullgraph": True, **(compile_options or {})}
        for block in blocks:
            block.compile(**options)
        transformer.frame_block_forward = torch.compile(frame_modulated_block, **options)
        applied["compile"] = compile
    transformer.acceleration = applied
    return transformer


def _repeated_blocks(transformer) -> list[nn.Module]:
    blocks = list(transformer.backbone.blocks)
    if transformer.side_branch is not None:
        blocks += list(transformer.side_branch.hint_blocks)
    return blocks


def _set_sdpa_backend(transformer, name: str) -> None:
    """diffusers' ``set_attention_backend`` without its process-wide "active backend": per processor only."""
    from diffusers.models.attention import AttentionModuleMixin
    from diffusers.models.attention_dispatch import AttentionBackendName

    backend = AttentionBackendName(SDPA_BACKENDS[name])
    count = 0
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if isinstance(module, AttentionModuleMixin) and hasattr(processor, "_attention_backend"):
            processor._attention_backend = backend
            count += 1
    if count == 0:
        raise ValueError("no diffusers attention processor found to set an SDPA backend on")


# ----------------------------------------------------------------------------------------------- FP8
def _check_fp8_device(device: torch.device) -> None:
    if device.type != "cuda":
        raise ValueError(f"fp8 GEMMs (torch._scaled_mm, e4m3) need the model on a CUDA device, it is on {device}")
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        raise ValueError(f"fp8 GEMMs need FP8 tensor cores (sm_89+: Ada, Hopper, Blackwell); "
                         f"{torch.cuda.get_device_name(device)} is sm_{major}{minor}")


def _to_fp8(block: nn.Module) -> int:
    """Replace the block's eligible nn.Linear layers by :class:`Fp8Linear`; returns how many."""
    replaced = 0
    for name, module in list(block.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if type(child) is nn.Linear and "base_layer" not in full and Fp8Linear.eligible(child):
                setattr(module, child_name, Fp8Linear.from_linear(child))
                replaced += 1
    return replaced


class Fp8Linear(nn.Module):
    """``nn.Linear`` as one e4m3 GEMM: weight quantised once with a per-tensor scale, the input per call.

    y = (x_q * s_x) @ (W_q * s_w)^T + b with ``x_q = e4m3(x / s_x)``, ``s_x = amax|x| / 448`` (``s_w`` likewise),
    accumulated in float32 by ``torch._scaled_mm`` and returned in the input's dtype. Sizes must be multiples of 16.
    """

    def __init__(self, weight_fp8: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight_fp8.shape
        self.register_buffer("weight_fp8", weight_fp8)
        self.register_buffer("weight_scale", weight_scale)
        self.register_buffer("bias", bias)

    @staticmethod
    def eligible(linear: nn.Linear) -> bool:
        """Multiples of 16 in both sizes (``_scaled_mm``) and a non-zero weight (zero-init adapters stay exact)."""
        return linear.in_features % 16 == 0 and linear.out_features % 16 == 0 and bool(linear.weight.detach().any())

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Fp8Linear":
        weight = linear.weight.detach().float()
        scale = (weight.abs().amax() / E4M3_MAX).clamp(min=torch.finfo(torch.float32).tiny)
        weight_fp8 = (weight / scale).to(torch.float8_e4m3fn)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(weight_fp8, scale.reshape(()), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if x2.shape[0] == 0:
            return x.new_zeros(*shape[:-1], self.out_features)
        scale = (x2.abs().amax().float() / E4M3_MAX).clamp(min=torch.finfo(torch.float32).tiny)
        x_fp8 = (x2.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        out = torch._scaled_mm(x_fp8, self.weight_fp8.t(), scale_a=scale, scale_b=self.weight_scale, bias=bias,
                               out_dtype=x.dtype)
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3, per-tensor scales"
