"""Which device to run on: the one picker every command uses."""

from __future__ import annotations

import torch

from vaekit.errors import VaekitError


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise VaekitError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VaekitError(f"device {name!r} asked for, but this machine has no CUDA GPU")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise VaekitError(f"device {name!r} asked for, but MPS is not available here")
    return device
