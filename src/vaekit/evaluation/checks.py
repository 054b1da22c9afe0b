"""What an evaluation needs, checked before any work: memory for the sample sets, the Inception extra's weights."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from vaekit.data import Dataset
from vaekit.devices import free_bytes
from vaekit.errors import VaekitError
from vaekit.evaluation import inception
from vaekit.evaluation.classifier import FEATURES

if TYPE_CHECKING:  # evaluate.py imports this module
    from vaekit.evaluation.evaluate import EvalSettings

SAMPLE_SETS = 4  # sets of n_samples images held at once: the model's prior, the two fitted samplers, the real floor


def check_sample_memory(shape: tuple[int, ...], s: EvalSettings) -> None:
    """The samples of every sampler, and their features, fit in the host's free memory (they are held there, as
    floats, until they are measured), or --samples is refused before any work."""
    per_image = 4 * (math.prod(shape) + 2 * FEATURES + (inception.FEATURES if s.inception else 0))
    needed, free = SAMPLE_SETS * s.n_samples * per_image, free_bytes(torch.device("cpu"))
    if free is not None and needed > free:
        raise VaekitError(f"--samples {s.n_samples}: {SAMPLE_SETS} sets of that many {'x'.join(map(str, shape))} "
                          f"images and their features need about {needed / 2**30:.1f} GiB, more than the "
                          f"{free / 2**30:.1f} GiB free; choose fewer")


def check_inputs(data: Dataset, s: EvalSettings) -> None:
    """What the evaluation needs, checked before any work: memory for the samples; for --inception-fid, the extra's
    weights, intact, and images in memory."""
    check_sample_memory(data.shape, s)
    if s.inception:
        inception.verified()
        if not all(x.in_memory for x in (data.train, data.test)):
            raise VaekitError(f"--inception-fid needs the images in memory; {data.spec} is read from disk in batches "
                              "(raise --max-in-memory-gb to hold it)")
