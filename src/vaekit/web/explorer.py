"""What the explorer computes, as plain functions of an `Explorer` (no HTTP needed to call them).

The model work runs under no_grad and returns JSON-ready dicts, images as base64 PNG. Input the routes' schemas
cannot check (a latent vector of another model's size, an index past the end, an unreadable upload) is refused
with an HTTPException carrying the status and message the API answers with.
"""

import base64
import io
from dataclasses import dataclass, field

import numpy as np
import torch
from fastapi import HTTPException

from vaekit.config import DataConfig, trained_data_config
from vaekit.data import Batches, Dataset, map_batches
from vaekit.data.decode import load_image
from vaekit.errors import VaekitError
from vaekit.evaluation.evaluate import training_codes
from vaekit.evaluation.latent import Projection, interpolate, radius_99
from vaekit.evaluation.maps import MapSettings, best_labels, decoded_maps, image_scores
from vaekit.images import png_bytes
from vaekit.models import Autoencoder
from vaekit.models.conditioning import line_labels
from vaekit.models.samplers import DENSITY, fit_samplers, label_of
from vaekit.web.schemas import MAX_UPLOAD_PIXELS, Z_LIMIT


@dataclass
class Explorer:
    """What the API serves: named models (each with its priors: N(0, I) and a mixture fitted to its training
    codes), their test codes in 2-D."""

    models: dict[str, Autoencoder]
    data: Dataset
    test_images: torch.Tensor  # float (N, C, H, W), a sample of the test split
    test_labels: torch.Tensor | None  # their labels, None for data without labels
    maps: dict[str, dict]
    data_config: DataConfig = field(default_factory=DataConfig)  # how the models' training images were read
    dark_background: bool = False  # the data's images are light on dark (Fashion-MNIST, MNIST): uploads follow
    normal: dict[str, "Normal"] = field(default_factory=dict)  # each model's anomaly map on the test images

    @classmethod
    def build(cls, models: dict[str, Autoencoder], data: Dataset, n_map: int = 2000, seed: int = 0) -> "Explorer":
        n = min(n_map, len(data.test))
        images = data.test.subset(torch.arange(n))
        x = torch.cat([xb for xb, _ in Batches(images, 1000)])
        labels = images.labels.tolist() if images.labels is not None else [0] * n
        maps = {}
        for name, model in models.items():
            model.eval()
            codes = map_batches(model.embed, images, 1000, model.device)
            maps[name] = latent_map(Projection.fit(codes), codes, labels, images.labels is not None, model.latent_dim)
            if DENSITY not in model.priors:  # a checkpoint without one (older, or trained with --gmm-components 0)
                fitted = fit_samplers(lambda: training_codes(model, data, limit=5000), {DENSITY: 10}, seed,
                                      model.latent, model.device)
                model.priors.update(fitted)
            if not model.fitted_priors():  # codes no mixture fits (past 512 dimensions, not finite: warned)
                raise VaekitError(f"{name}: no sampler fitted to its codes to draw from, and no Gaussian mixture "
                                  "could be fitted here")
        data_config = trained_data_config(next(iter(models.values())).meta)
        normal = {name: Normal.of(model, x[:NORMAL_IMAGES]) for name, model in models.items()}
        return cls(models, data, x, None if images.labels is None else images.labels.clone(), maps, data_config,
                   bool(border(x).mean() < 0.5), normal)


NORMAL_IMAGES = 500  # test images an upload's anomaly map and score are compared with


@dataclass
class Normal:
    """A model's nll anomaly map on test images: the value its colour scale tops out at, and their image scores."""

    low: float  # the colour scale's ends: the test pixels' 0.5% and 99.5% quantiles (-log p may be negative)
    top: float
    scores: np.ndarray  # sorted

    @classmethod
    def of(cls, model: Autoencoder, x: torch.Tensor) -> "Normal":
        heat = torch.cat([nll_map(model, xb) for xb in x.split(100)])
        low, top = np.quantile(heat.numpy(), [0.005, 0.995])
        return cls(float(low), float(max(top, low + 1e-6)), np.sort(image_scores(heat, TOP)["top"].numpy()))


TOP = MapSettings().top


@torch.no_grad()
def nll_map(model: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per pixel at the code, under the class that explains the image best for a conditional model."""
    x = x.to(model.device)
    return decoded_maps(model, x, best_labels(model, x))["nll"].sum(1).float().cpu()


def heat_png(x: torch.Tensor, heat: torch.Tensor, normal: Normal) -> str:
    """The map in the inferno colours (black: the normal low end, yellow: its top and above) over the grey image,
    as base64 PNG."""
    from matplotlib import colormaps

    shade = ((heat[0] - normal.low) / (normal.top - normal.low)).clamp(0, 1)
    colours = torch.from_numpy(colormaps["inferno"](shade.numpy())[..., :3]).float()
    grey = x[0].mean(0)[..., None].cpu()
    return png_b64((0.35 * grey + 0.65 * colours).permute(2, 0, 1)[None])


def upload_map(ex: Explorer, name: str, x: torch.Tensor) -> dict:
    """Where a model finds the upload unlikely, and how unusual it is against the test images (the share of them
    whose score is lower)."""
    heat = nll_map(ex.models[name], x)
    score = float(image_scores(heat, TOP)["top"][0])
    normal = ex.normal[name]
    return {"png": heat_png(x, heat, normal), "score": score,
            "above": float(np.searchsorted(normal.scores, score, side="left") / len(normal.scores))}


def latent_map(p: Projection, codes: torch.Tensor, labels: list[int], labelled: bool, dim: int) -> dict:
    """A model's map for the page: the test codes projected on a plane, the plane's basis and the codes' mean off it
    (so a click can go back to a code), the range the sliders must cover, and N(0, I)'s 99% radius."""
    return {"points": np.round(p.xy, 3).tolist(), "labels": labels, "labelled": labelled, "axes": p.axes,
            "basis": p.basis.T.tolist(), "offset": p.offset.tolist(),
            "limit": float(max(3.0, np.ceil(codes.abs().max().item()))),
            "radius99": radius_99(dim)}


def png(images: torch.Tensor) -> bytes:
    """Images side by side, no border, about 96 pixels tall, as PNG."""
    return png_bytes(images, nrow=len(images), pad=0, height=96)


def png_b64(images: torch.Tensor) -> str:
    """The same PNG in base64, for JSON."""
    return base64.b64encode(png(images)).decode()


def pngs_b64(images: torch.Tensor) -> list[str]:
    """Each image on its own, as base64 PNG."""
    return [png_b64(image[None]) for image in images]


def model_list(ex: Explorer) -> list[dict]:
    """Name, kind, latent size, image shape and architecture of each model, with the data's class names."""
    return [{"name": n, "kind": m.kind, "latent_dim": m.latent_dim, "image_shape": list(m.config.image_shape),
             "arch": m.config.arch, "classes": ex.data.classes, "conditional": m.classes} for n, m in ex.models.items()]


def labels_for(model: Autoencoder, label: int | None, n: int, required: bool = False) -> torch.Tensor | None:
    """The labels of n images for `model`: None for an unconditional one (it ignores a label); for a conditional
    one, `label` n times, or, with none given, the classes in turn (refused where `required`)."""
    if not model.classes:
        return None
    if label is None and required:
        raise HTTPException(422, f"this model is conditional on {model.classes} classes: give label (0 to "
                                 f"{model.classes - 1})")
    if label is not None and label >= model.classes:
        raise HTTPException(422, f"label must be below {model.classes}, this model's number of classes")
    return model.conditioning.spread(n, model.device) if label is None else \
        model.conditioning.fill(label, n, model.device)


def draw_samples(ex: Explorer, n: int, seed: int | None, label: int | None = None) -> dict:
    """The same n codes z ~ N(0, I) decoded by every model (a smaller latent space takes the first values of
    each z), and n samples from each model's fitted mixture (another fitted sampler where it has none); a random
    seed when `seed` is None. Conditional models draw class `label` (or the classes in turn)."""
    g = torch.Generator().manual_seed(seed if seed is not None else int(torch.randint(0, 2**31 - 1, ())))
    z = torch.randn(n, max(m.latent_dim for m in ex.models.values()), generator=g)
    out = {"z": z.tolist(), "images": {}, DENSITY: {}, "fitted": {}}  # the page reads the fitted sampler's draws
    with torch.no_grad():  # under the mixture's name, and which sampler drew them under "fitted"
        for name, m in ex.models.items():
            y = labels_for(m, label, n)
            out["images"][name] = pngs_b64(m.generate(z[:, :m.latent_dim], y))
            fitted = DENSITY if DENSITY in m.priors else next(iter(m.fitted_priors()))  # a mixture where there is one
            out[DENSITY][name] = pngs_b64(m.sample(n, generator=g, prior=fitted, y=y))
            out["fitted"][name] = label_of(fitted)
    return out


def latent_vector(model: Autoencoder, z: list[float]) -> torch.Tensor:
    """`z` as a tensor, once it is known to fit the model's latent space and to hold finite, moderate values."""
    if len(z) != model.latent_dim:
        raise HTTPException(422, f"z has {len(z)} values; this model's latent space has {model.latent_dim}")
    t = torch.tensor(z, dtype=torch.float32)
    if not torch.isfinite(t).all() or t.abs().max() > Z_LIMIT:
        raise HTTPException(422, f"z values must be finite and within [-{Z_LIMIT:g}, {Z_LIMIT:g}]")
    return t


def generate(model: Autoencoder, z: torch.Tensor, label: int | None = None) -> torch.Tensor:
    """The images the model decodes from the codes `z` (a batch), as class `label` for a conditional model."""
    y = labels_for(model, label, len(z), required=True)
    with torch.no_grad():
        return model.generate(z, y)


def image_strip(ex: Explorer, start: int, count: int) -> dict:
    """Up to `count` test images from index `start`, with their labels and the number of test images."""
    if start >= len(ex.test_images):
        raise HTTPException(422, f"start must be below {len(ex.test_images)}")
    images = ex.test_images[start:start + count]
    labels = [0] * len(images) if ex.test_labels is None else ex.test_labels[start:start + count].tolist()
    return {"start": start, "images": pngs_b64(images), "labels": labels, "total": len(ex.test_images)}


def image_pair(ex: Explorer, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Test images `a` and `b` as a batch of two, with their labels."""
    n = len(ex.test_images)
    if a >= n or b >= n:
        raise HTTPException(422, f"image indices must be below {n}")
    return ex.test_images[[a, b]], None if ex.test_labels is None else ex.test_labels[[a, b]]


def interpolate_between(ex: Explorer, pair: tuple[torch.Tensor, torch.Tensor | None], steps: int) -> dict:
    """For each model, `steps` images decoded along the straight line between the codes of the two images; a
    conditional model encodes each with its own label and decodes the first half of the line as the first's
    class, the rest as the second's."""
    (x, y), out = pair, {}
    with torch.no_grad():
        for name, m in ex.models.items():
            if m.classes and y is None:
                raise HTTPException(422, f"{name} is conditional and the test images have no labels")
            z = m.embed(x, y)
            labels = None if y is None else line_labels(y, steps)
            out[name] = pngs_b64(m.generate(interpolate(z[0], z[1], steps), labels))
    return out


def border(x: torch.Tensor) -> torch.Tensor:
    """The pixels on the edges of images (N, C, H, W)."""
    return torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)


def decode_upload(ex: Explorer, data: bytes) -> tuple[torch.Tensor, list[str]]:
    """The upload as a batch of one float image, read as the training images were (alpha on the same
    background, 16 bits scaled, the same resize policy, by the folder loader's own decoder), and turned light on
    dark when the data is and the upload is not; with what was done, in words."""
    shape = next(iter(ex.models.values())).config.image_shape
    folder = ex.data_config.name.startswith("folder:")
    resize = ex.data_config.resize if folder else "pad"  # the built-in and array sets hold whole, centred objects
    background = ex.data_config.background
    if not folder:  # pad with the upload's own ground (its top and bottom rows, seen in a centre crop)
        background = "black" if border(read_upload(data, shape, "crop", "white")).mean() < 0.5 else "white"
    x = read_upload(data, shape, resize, background)
    notes = [f"{resize} to {shape[1]}x{shape[2]}" + (f" on {background}" if resize == "pad" else "")
             + f", {'grey' if shape[0] == 1 else 'RGB'}, as the training images were read"]
    if (border(x).mean() < 0.5) != ex.dark_background:
        x = 1 - x
        notes.append("inverted: the training images are " + ("light on dark" if ex.dark_background else
                                                              "dark on light") + " and this one was not")
    return x, notes


def read_upload(data: bytes, shape: tuple[int, int, int], resize: str, background: str) -> torch.Tensor:
    """The upload decoded by the folder loader (alpha composited, 16 bits scaled) as a batch of one float image."""
    try:
        return load_image(io.BytesIO(data), shape, resize, background, max_pixels=MAX_UPLOAD_PIXELS)[None].float() / 255
    except VaekitError as e:
        if "too many pixels" in str(e):
            raise HTTPException(413, str(e).removeprefix("upload: ")[:200]) from None
        raise HTTPException(415, "not a readable image (PNG, JPEG, GIF, BMP, TIFF or WebP)") from None


def reconstruct_upload(ex: Explorer, data: bytes, label: int | None = None) -> dict:
    """The uploaded image as the models see it, what was done to it, each model's reconstruction (as class `label`
    for a conditional model) and its anomaly map (`upload_map`)."""
    x, notes = decode_upload(ex, data)
    with torch.no_grad():
        return {"input": png_b64(x), "notes": notes,
                **{n: png_b64(m.reconstruct(x, labels_for(m, label, 1, required=True))) for n, m in ex.models.items()},
                "maps": {n: upload_map(ex, n, x) for n in ex.models}}


def encode_upload(ex: Explorer, data: bytes, samples: int, label: int | None = None) -> dict:
    """The uploaded image and, for each model, its code (the posterior mean) and that code decoded; for a model
    whose posterior has a density, also mu, sigma and `samples` codes z = mu + sigma * eps, decoded."""
    x, notes = decode_upload(ex, data)
    out = {"input": png_b64(x), "notes": notes}
    with torch.no_grad():
        for name, m in ex.models.items():
            y = labels_for(m, label, 1, required=True)
            q = m.encode(x, y)
            out[name] = {"z": q.mean[0].tolist(), "mean_decoded": png_b64(m.generate(q.mean, y))}
            if q.scale is not None:  # a posterior that spreads: the same x, different z
                z = q.sample(samples)[:, 0]
                out[name].update(mu=q.mean[0].tolist(), sigma=q.scale[0].tolist(), z=z.tolist(),
                                 decoded=pngs_b64(m.generate(z, labels_for(m, label, samples))))
    return out
