"""ONNX export: the encoder and the decoder as two graphs, checked against PyTorch with onnxruntime.

    encoder.onnx   image (N, C, H, W) floats in [0, 1]  ->  mean, logvar (N, D): q(z|x) = N(mean, diag exp(logvar));
                                                         ->  code (N, D) for a model without a density (the AE's)
    decoder.onnx   z (N, D)                             ->  image (N, C, H, W): the mean of p(x|z), in [0, 1]

A conditional model's two graphs take a second input, `label` (N,) int64 class indices: q(z|x, y) and p(x|z, y).
The graphs do not check labels: one outside 0..K-1 silently reads as no class at all (a zero one-hot).

Exported with PyTorch's torch.export-based exporter (needs onnx and onnxscript; the parity check onnxruntime:
the optional extra `vaekit[export]`). The batch dimension is dynamic.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from vaekit.config import class_word
from vaekit.errors import VaekitError
from vaekit.layout import GRAPHS
from vaekit.models.autoencoder import Autoencoder

ENCODER, DECODER, _ = GRAPHS
OPSET = 18
TOLERANCE = 1e-3  # the largest difference from PyTorch an export may show (float32 rounding is far below it)
EXTRA = "pip install onnx onnxscript onnxruntime (the extra vaekit[export])"


class EncoderGraph(nn.Module):
    """x (and y, for a conditional model) -> the posterior's parameters: (mean, logvar), or the point code."""

    def __init__(self, model: Autoencoder):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, ...]:
        return self.model.encode(x, y).exported()


class DecoderGraph(nn.Module):
    """z (and y, for a conditional model) -> the mean image of p(x|z)."""

    def __init__(self, model: Autoencoder):
        super().__init__()
        self.model = model

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.model.generate(z, y)


@contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Errors only from a logger while the block runs ("torchvision is not installed" is no news here)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def with_labels(model: Autoencoder, first: Tensor, labels: Tensor | None) -> tuple[Tensor, ...]:
    """A graph's inputs: `first` alone, or with its labels for a conditional model (the classes in turn where
    none are given)."""
    if not model.classes:
        return (first,)
    return first, labels if labels is not None else model.conditioning.spread(len(first), first.device)


def output_names(model: Autoencoder) -> list[str]:
    return list(model.latent.outputs)


def require_extra() -> None:
    """A one-line error before any work when the exporter's packages are missing."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise VaekitError(f"ONNX export needs {', '.join(missing)}: {EXTRA}")


def weights_apart(model: nn.Module) -> bool:
    """Whether a graph's weights go into a file beside it (GRAPH.onnx.data): past 1 GiB, well before protobuf's 2 GB
    limit on one file."""
    return sum(p.numel() * p.element_size() for p in model.parameters()) > 1 << 30


def export_graphs(model: Autoencoder, folder: Path) -> dict[str, Path]:
    """Write encoder.onnx and decoder.onnx into `folder` (the model in eval mode, on the CPU)."""
    model = model.cpu().eval()
    x = with_labels(model, torch.rand(2, *model.config.image_shape), None)
    z = with_labels(model, torch.randn(2, model.latent_dim), None)
    batch = torch.export.Dim("batch", min=1)
    files = {"encoder": folder / ENCODER, "decoder": folder / DECODER}
    big = weights_apart(model)
    labels = ["label"] if model.classes else []
    graphs = {"encoder": (EncoderGraph(model), x, ["image", *labels], output_names(model)),
              "decoder": (DecoderGraph(model), z, ["z", *labels], ["image"])}
    for part, (graph, args, inputs, outputs) in graphs.items():
        with torch.no_grad(), warnings.catch_warnings(), quiet_logger("torch.onnx"):
            warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning, UserWarning))  # the exporter's own
            torch.onnx.export(graph, args, str(files[part]), input_names=inputs, output_names=outputs,
                              dynamic_shapes=tuple({0: batch} for _ in args), opset_version=OPSET, dynamo=True,
                              external_data=big, verbose=False)
    return files


@torch.no_grad()
def parity(model: Autoencoder, files: dict[str, Path], images: Tensor, labels: Tensor | None = None,
           seed: int = 0) -> dict[str, float | int]:
    """The largest absolute difference between onnxruntime and PyTorch on real images (encoder) and on their codes
    plus as many draws from N(0, I) (decoder); a conditional model's with `labels` (the classes in turn without)."""
    import onnxruntime as ort

    model = model.cpu().eval()
    x = images.float().cpu()
    run = lambda f, feed: ort.InferenceSession(str(f), providers=["CPUExecutionProvider"]).run(None, feed)  # noqa: E731
    feed = lambda names, args: {n: a.numpy() for n, a in zip(names, args)}  # noqa: E731
    x = with_labels(model, x, labels)
    torch_out = EncoderGraph(model)(*x)
    onnx_out = run(files["encoder"], feed(["image", "label"], x))
    encoder = max(float(np.abs(o - t.numpy()).max()) for o, t in zip(onnx_out, torch_out))
    drawn = torch.randn(len(x[0]), model.latent_dim, generator=torch.Generator().manual_seed(seed))
    z = with_labels(model, torch.cat([torch_out[0], drawn]), None if len(x) == 1 else x[1].repeat(2))
    decoder = float(np.abs(run(files["decoder"], feed(["z", "label"], z))[0] - DecoderGraph(model)(*z).numpy()).max())
    diff = {"encoder_max_abs_diff": encoder, "decoder_max_abs_diff": decoder, "images": len(x[0]), "codes": len(z[0])}
    if not (math.isfinite(encoder) and math.isfinite(decoder)) or max(encoder, decoder) > TOLERANCE:
        raise VaekitError(f"the ONNX graphs disagree with PyTorch ({parity_words(diff)}; at most {TOLERANCE:g} is "
                          "accepted): nothing exported")
    return diff


def parity_words(diff: dict) -> str:
    return (f"the largest absolute difference from PyTorch is {diff['encoder_max_abs_diff']:.2e} for the encoder on "
            f"{diff['images']} images and {diff['decoder_max_abs_diff']:.2e} for the decoder on {diff['codes']} codes")


def usage(model: Autoencoder) -> str:
    """A card section: the files and a runnable onnxruntime example (with labels for a conditional model)."""
    c, d, names, k = model.config.image_shape, model.latent_dim, output_names(model), model.classes
    outputs = ", ".join(names) + ("," if len(names) == 1 else "")  # `code, = ...` unpacks a one-output run
    shape = f"{c[0]}, {c[1]}, {c[2]}"
    label = f", `label` (N,) int64 class indices in 0..{k - 1}" if k else ""
    given = f"y = np.arange(4, dtype=np.int64) % {k}  # each image's class\n" if k else ""
    drawn = (f"labels = np.full(16, {k - 1}, dtype=np.int64)  # 16 draws of class "
             f"{class_word(k - 1, model.class_names)}\n") if k else ""
    unchecked = f"The graphs do not check labels: make sure yours lie in 0..{k - 1}.\n" if k else ""
    return f"""## ONNX

`encoder.onnx`: `image` (N, {shape}) floats in [0, 1]{label} -> {", ".join(names)} (N, {d}).
`decoder.onnx`: `z` (N, {d}){label} -> `image` (N, {shape}), the mean of p(x|z{", y" if k else ""}). Any batch size N.
{unchecked}
```python
import numpy as np
import onnxruntime as ort

encoder = ort.InferenceSession("encoder.onnx", providers=["CPUExecutionProvider"])
decoder = ort.InferenceSession("decoder.onnx", providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).random((4, {shape}), dtype=np.float32)  # your images, in [0, 1]
{given}{outputs} = encoder.run(None, {{"image": x{', "label": y' if k else ""}}})
z = np.random.default_rng(1).standard_normal((16, {d})).astype(np.float32)  # z ~ N(0, I)
{drawn}images = decoder.run(None, {{"z": z{', "label": labels' if k else ""}}})[0]  # (16, {shape})
```
"""
