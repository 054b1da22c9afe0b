"""The model card: a README.md in Hugging Face's format (YAML front matter, then Markdown) beside config.json and
model.safetensors, written from what the checkpoint and its run measured; no network needed to make it.

Every run folder gets one when training ends (and so does its best checkpoint folder, the part to push to a hub),
and so does every `vaekit export`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vaekit.config import ModelConfig
from vaekit.models.likelihoods import bits_note
from vaekit.models.presets import PRESETS, Preset
from vaekit.models.samplers import OWN


def preset_of(kind: str) -> Preset | None:
    """The preset a card describes, if this vaekit knows it (a card is written from a checkpoint handed in)."""
    return PRESETS.get(kind)


def model_card(config: Mapping[str, Any], test: Mapping[str, Any] | None = None, *, priors: Sequence[str] = (),
               extra: Sequence[str] = ()) -> str:
    """The card of a checkpoint whose config.json is `config`; `test` holds its test metrics (summary.json's), if
    measured; `priors` the names of its samplers; `extra` more Markdown sections (an export's files)."""
    from vaekit import __version__

    kind = word(part(config, "model").get("kind", ModelConfig.kind), 20)
    preset = preset_of(kind)
    dataset = public_name(word(config.get("dataset") or part(config, "data").get("name") or "?"))
    what = preset.card if preset else kind
    parts = [front_matter(preset, dataset), f"# {preset.label if preset else kind} on {dataset}\n",
             f"{what[0].upper()}{what[1:]}, trained with vaekit (this card: vaekit {__version__}).\n",
             data_section(config, dataset), settings_section(config), measured_section(config, test),
             samplers_section(preset, priors), USE, *extra, load_section(part(config, "model"))]
    return "\n".join(parts)


def part(config: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A section of a config.json read from disk, or nothing where it is not a section (cards are written from
    checkpoints a user hands in: no value there is trusted to have its type)."""
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def word(value: Any, limit: int = 80) -> str:
    """A value as one short line of text."""
    if isinstance(value, (list, tuple)):
        value = ", ".join(word(v, 40) for v in value[:30]) + (", ..." if len(value) > 30 else "")
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit] + "..."


HUB_DATASETS = {"fashion-mnist": "fashion_mnist", "mnist": "mnist"}  # their names on the Hugging Face hub


def public_name(spec: str) -> str:
    """A data set's name fit to publish: a file or folder by its own name, never the path on this machine."""
    kind, sep, path = spec.partition(":")
    return f"{kind}:{Path(path).name}" if sep else spec


def front_matter(preset: Preset | None, dataset: str) -> str:
    variational = preset is not None and preset.latent.has_density
    tags = ["vaekit", "autoencoder", "generative-model", "image"] + (["variational-autoencoder"] if variational else [])
    hub = HUB_DATASETS.get(dataset)
    return "---\nlibrary_name: vaekit\ntags:\n" + "".join(f"- {t}\n" for t in tags) + \
        (f"datasets:\n- {hub}\n" if hub else "") + "---\n"


def data_section(config: Mapping[str, Any], dataset: str) -> str:
    data, model = part(config, "data"), part(config, "model")
    shape = word(model.get("image_shape", "?")).replace(", ", "x")
    classes = config.get("classes") if isinstance(config.get("classes"), list) else []
    kept = data.get("classes")
    lines = [f"- data set: `{dataset}`; images {shape} (channels x height x width), pixel values in [0, 1]"
             + ("; binarized (pixels drawn as 0 or 1)" if data.get("binarize") is True else ""),
             f"- classes: {word(kept) if kept else 'all'}"
             + (f" (of {len(classes)}: {word(classes, 400)})" if classes else ""),
             f"- splits: validation {word(data.get('val_fraction', '?'))} and test "
             f"{word(data.get('test_fraction', '?'))} of the data where the set has no fixed split (Fashion-MNIST and "
             "MNIST keep their own test split)"]
    return "## Data\n\n" + "\n".join(lines) + "\n"


def settings_section(config: Mapping[str, Any]) -> str:
    model, train, progress = (part(config, key) for key in ("model", "train", "progress"))
    get = lambda section, key: word(section.get(key, "?"))  # noqa: E731
    layers = f"hidden {get(model, 'hidden')}" if model.get("arch") == "mlp" else f"channels {get(model, 'channels')}"
    lines = [f"- network: {get(model, 'arch')} ({layers}), latent dimension {get(model, 'latent_dim')}, "
             f"{get(model, 'likelihood')} likelihood p(x|z)",
             f"- training: {get(train, 'epochs')} epochs of batch {get(train, 'batch_size')}, "
             f"{get(train, 'optimizer')} lr {get(train, 'lr')}, seed {get(train, 'seed')}; this checkpoint: epoch "
             f"{get(progress, 'epoch')}, step {get(progress, 'step')}",
             "- every setting: `config.json` (`model`, `data`, `train`)"]
    decay = train.get("ema_decay")
    if isinstance(decay, (int, float)) and decay > 0:
        lines.insert(2, f"- weights: the exponential moving average of the training weights (decay {decay:g})")
    if model.get("conditional") is True:
        lines.insert(1, f"- conditional on the label ({get(model, 'classes')} classes) in encoder and decoder: "
                        "`vaekit sample PATH --label CLASS` draws one class")
    return "## Settings\n\n" + "\n".join(lines) + "\n"


def measured_section(config: Mapping[str, Any], test: Mapping[str, Any] | None) -> str:
    """Validation (at the checkpoint's epoch) and test metrics, per image, with their sample sizes."""
    val = part(config, "metrics")
    rows = []
    if "val_recon" in val:
        rows.append(metric_row("validation", {k[4:]: v for k, v in val.items() if k.startswith("val_")}))
    if isinstance(test, dict) and test:
        rows.append(metric_row("test", test))
    if not rows:
        return "## Measured\n\nNothing measured yet.\n"
    note = bits_note(str(part(config, "model").get("likelihood", "bernoulli")))
    return ("## Measured\n\nPer image, in nats (natural-log units); bits/dim is the same loss in bits per pixel "
            f"value ({note}). An AE has no -ELBO (no density).\n\n| split | images | reconstruction -log p(x\\|z) "
            "| KL | -ELBO | bits/dim |\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            "More (importance-sampled NLL, sample quality): `vaekit evaluate` on this checkpoint.\n")


def metric_row(split: str, m: Mapping[str, Any]) -> str:
    def cell(key: str, digits: int = 2) -> str:
        v = m.get(key)
        return f"{v:.{digits}f}" if isinstance(v, (int, float)) and math.isfinite(v) else "-"

    kl = cell("kl") if "nelbo" in m else "-"  # a model without a density has no KL term
    return f"| {split} | {cell('images', 0)} | {cell('recon')} | {kl} | {cell('nelbo')} | {cell('bpd', 4)} |"


def samplers_section(preset: Preset | None, priors: Sequence[str]) -> str:
    fitted = [p for p in priors if p != OWN]
    words = (f"Fitted to the training codes and saved in `priors.safetensors`: {', '.join(fitted)} "
             f"(`vaekit sample PATH --prior {fitted[0]}`)." if fitted else "No sampler fitted to the codes is saved.")
    how = preset.generating if preset else "Draw z from a sampler fitted to the codes and decode it."
    return f"## Generating\n\n{how} {words}\n"


USE = """## Intended use and limitations

- For teaching, research and prototypes: generating images like the training set, embedding images into codes,
  reconstructing them, and scoring how typical an image is (`vaekit score`).
- Trained only on the data above, at this image size: images unlike it are reconstructed poorly and may still get
  a high likelihood (deep generative models are known to rate some out-of-distribution images as likely;
  `vaekit ood` measures this). Not for decisions about people.
- Samples of small MLP or conv models are blurry; the numbers above are on this data set's test split only.
"""


def load_section(model: Mapping[str, Any]) -> str:
    """How to load and use it; a conditional model's lines pass labels."""
    classes = model.get("classes") if model.get("conditional") is True else 0
    k = classes if type(classes) is int and classes > 0 else 0
    shell = [f"vaekit sample PATH {'--label 0 -n 16' if k else '-n 64'} --out samples.png  # PATH: this folder",
             "vaekit info PATH"]
    python = ["from vaekit import load",
              "model = load(\"PATH\")  # safetensors + JSON: no code runs at load time",
              *([f"labels = torch.arange(16) % {k}  # the classes to draw (a conditional model)"] if k else []),
              f"images = model.sample(16{', y=labels' if k else ''})  # (16, C, H, W) in [0, 1]",
              f"codes = model.embed(images{', labels' if k else ''})  # posterior means"]
    if k:
        python.insert(0, "import torch")
    return ("## How to load\n\nWith vaekit installed (its README):\n\n```bash\n" + "\n".join(shell) +
            "\n```\n\n```python\n" + "\n".join(python) + "\n```\n")
