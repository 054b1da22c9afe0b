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


def free_bytes(device: torch.device) -> int | None:
    """Memory a new allocation on `device` can take: a GPU's free memory; on the host, what the system has available,
    within this process's address-space limit where one is set (ulimit -v). None where it cannot be told."""
    if device.type == "cuda":  # what the driver has free, and what PyTorch's allocator holds unused
        return torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) \
            - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return None
    free = meminfo("MemAvailable")
    limit, used = address_space_limit(), status("VmSize")
    if limit is not None and used is not None:
        free = limit - used if free is None else min(free, limit - used)
    return None if free is None else max(free, 0)


def address_space_limit() -> int | None:
    """This process's address-space limit (ulimit -v) in bytes, or None where there is none."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    return None if limit == resource.RLIM_INFINITY else limit


def meminfo(field: str, file: str = "/proc/meminfo") -> int | None:
    """A field of /proc/meminfo (or /proc/self/status) in bytes; None where there is no such file (not Linux)."""
    from vaekit.files import proc_field

    text = proc_field(field, file)
    return int(text.split()[0]) * 1024 if text else None


def status(field: str) -> int | None:
    return meminfo(field, "/proc/self/status")
