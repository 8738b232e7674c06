"""Where a possibly CPU-offloaded module computes."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["execution_device", "EXECUTION_DEVICE_ATTR"]

# Set by Backbone.enable_cpu_offload on every module it offloads.
EXECUTION_DEVICE_ATTR = "_mirage_execution_device"


def execution_device(module: nn.Module) -> torch.device:
    """The device a module's inputs must be on: its offload execution device, else its parameters' device."""
    device = getattr(module, EXECUTION_DEVICE_ATTR, None)
    if device is not None:
        return torch.device(device)
    hook = getattr(module, "_hf_hook", None)
    if hook is not None and getattr(hook, "execution_device", None) is not None:
        return torch.device(hook.execution_device)
    for p in module.parameters():
        return p.device
    return torch.device("cpu")
