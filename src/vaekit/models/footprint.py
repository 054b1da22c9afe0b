"""What a batch will cost in memory, known before it runs: a batch size too large for the machine is refused in one
line naming the flag, instead of ending minutes later in "can't allocate memory" or the kernel's out-of-memory kill.

The cost is counted, not guessed: the model's objective (the encoder, every draw the preset decodes, its penalty,
the likelihood) is traced on the meta device, where tensors have shapes and no storage, and the peak of the bytes
its tensors hold at once is taken (with the backward pass, for a training step: what autograd keeps for it counts
until it is used). Tracing loads PyTorch's meta kernels (about two seconds, once per process), so batches that are
cheap by a generous rough bound are not traced at all.
"""

from __future__ import annotations

import math

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from vaekit.config import ModelConfig
from vaekit.errors import VaekitError

ROUGH_FACTOR = 256  # bytes per input byte no preset's batch reaches (measured: 50 to 240, IWAE's k = 5 included)


class Counting(TorchDispatchMode):
    """The peak of the bytes held at once by the tensors operations return while active: each storage counted once
    (views share it), until nothing refers to it any more (autograd keeping it for the backward pass counts)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                self.live.setdefault(storage._cdata, (StorageWeakRef(storage), storage.nbytes()))
        self.live = {key: held for key, held in self.live.items() if not held[0].expired()}
        self.bytes = max(self.bytes, sum(size for _, size in self.live.values()))
        return out


def rough_bytes(config: ModelConfig, batch: int) -> int:
    """A generous bound no preset's batch reaches: linear in the pixels of the images and of the draws decoded per
    image (IWAE) and the pseudo-inputs encoded per batch (VAMP), and quadratic in the batch for the kernel matrices
    of an MMD penalty (WAE)."""
    image = math.prod(config.image_shape) * 4
    return ROUGH_FACTOR * image * (batch * config.iwae_k + config.pseudo_inputs) + ROUGH_FACTOR * 4 * (2 * batch) ** 2


def traced_bytes(config: ModelConfig, batch: int, training: bool) -> int:
    """The bytes every tensor of one batch's objective takes (and its gradients', when `training`), traced on the
    meta device."""
    from vaekit.models.autoencoder import Autoencoder

    with torch.device("meta"), torch.set_grad_enabled(training):
        model = Autoencoder(config)
        x = torch.zeros(batch, *config.image_shape)
        y = torch.zeros(batch, dtype=torch.long) if config.conditional else None
        with Counting() as count:
            loss = model(x, y=y)
            if training:
                loss.objective.backward()
    return count.bytes


def check_batch(config: ModelConfig, batch: int, flag: str, *, training: bool = False,
                device: torch.device | str = "cpu") -> None:
    """Refuse, before any work, a batch of `batch` images (the value of `flag`) that would not fit in the memory
    `device` has free."""
    from vaekit.devices import free_bytes

    free = free_bytes(torch.device(device))
    if free is None or rough_bytes(config, batch) <= free // 2:
        return
    needed = traced_bytes(config, batch, training)
    if needed > free:
        what = "a training step" if training else "a batch"
        raise VaekitError(f"{flag} {batch}: {what} of {batch} images of {'x'.join(map(str, config.image_shape))} "
                          f"through this {config.kind} needs about {needed / 2**30:.1f} GiB, more than the "
                          f"{free / 2**30:.1f} GiB free on {device}; choose a smaller {flag}")


def check_training_state(config: ModelConfig, device: torch.device | str = "cpu", average: bool = False) -> None:
    """The training state beside the weights (their gradients and Adam's two moments: three more copies, four with a
    moving average of the weights) fits in the memory `device` has free, or the run is refused before it starts."""
    from vaekit.devices import free_bytes
    from vaekit.models.autoencoder import parameter_count

    free = free_bytes(torch.device(device))
    copies = 4 if average else 3
    needed = copies * 4 * parameter_count(config)
    if free is not None and needed > free:
        kept = " and their moving average" if average else ""
        raise VaekitError(f"training this {config.kind}'s {needed // (4 * copies):,} parameters keeps their gradients, "
                          f"the optimizer's two moments{kept}, {needed / 2**30:.1f} GiB more than the weights, and "
                          f"{free / 2**30:.1f} GiB are free on {device}; use a smaller --hidden, --conv-channels, "
                          "--latent-dim or --image-size")
