"""Inspection data: normal images to train on, test images with defects, and a mask of each defect (`mvtec:ROOT`).

Two layouts, read as published:

  MVTec AD  ROOT/train/good/*             normal images: the training and validation splits
            ROOT/test/<type>/*            test images, `good` among the types
            ROOT/ground_truth/<type>/<stem>_mask.png (or <stem>.png)   one mask per defective test image
  folders   ROOT/normal/*                 normal images, split into train / validation / test (anomalib's Folder)
            ROOT/abnormal/[<type>/]*      defective test images (subfolders name defect types)
            ROOT/masks/[<type>/]<stem>_mask.png (or <stem>.png)        one mask per defective image

A mask is an image of the same size as its image, holding two values: 0 for normal pixels and one other value for
defective ones (MVTec's 0 and 255; 0 and 1; a two-colour palette). Anything else is refused in one line: a grey
level between, another size, a defective image without its mask or with an empty one. Masks are fitted to the image
size as their images are (--resize); shrunk, a pixel any part of a defect covers is defective, so no small defect
vanishes. The test split's labels are the defect types, `good`
first (label 0).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaekit.config import DataConfig
from vaekit.data.decode import fit, pil_errors
from vaekit.data.folder import IMAGE_SUFFIXES, Scan, scan_folder, upright_size
from vaekit.data.sets import Dataset, TensorImages, split_indices
from vaekit.errors import VaekitError, path_text

GOOD = "good"
MASK_SUFFIX = "_mask"


def layout(root: Path) -> tuple[Path, Path, Path]:
    """(normal images, defective test images, masks) of a root in either layout."""
    if not root.is_dir():
        raise VaekitError(f"{root}: no such folder")
    if (root / "train" / GOOD).is_dir() and (root / "test").is_dir():
        return root / "train" / GOOD, root / "test", root / "ground_truth"
    if (root / "normal").is_dir() and (root / "abnormal").is_dir():
        return root / "normal", root / "abnormal", root / "masks"
    raise VaekitError(f"{root}: neither the MVTec AD layout (train/good/, test/<type>/, ground_truth/<type>/) nor "
                      "the folder layout (normal/, abnormal/, masks/)")


def mask_file(image: Path, tested: Path, masks: Path) -> Path:
    """The mask of a defective image: its path under `tested` mirrored under `masks`, named <stem>_mask.<ext> or
    <stem>.<ext> (any image suffix)."""
    where = masks / image.relative_to(tested).parent
    for stem in (image.stem + MASK_SUFFIX, image.stem):
        for suffix in (".png", image.suffix, *sorted(IMAGE_SUFFIXES)):
            if (where / (stem + suffix)).is_file():
                return where / (stem + suffix)
    raise VaekitError(f"{image}: a defective image without a mask (looked for "
                      f"{where / (image.stem + MASK_SUFFIX)}.png or {where / image.stem}.png)")


def read_mask(file: Path, image: Path, shape: tuple[int, int, int], config: DataConfig) -> Tensor:
    """A mask as bool (H, W), fitted to `shape` as its image is; refused unless binary and of its image's size."""
    from PIL import Image, ImageOps

    with pil_errors(image), Image.open(image) as img:
        size = upright_size(img, {"turned": 0, "frames": 0, "transparent": 0})
    with pil_errors(file), Image.open(file) as m:
        m = ImageOps.exif_transpose(m) or m
        if m.size != size:
            raise VaekitError(f"{file}: the mask is {m.size[0]}x{m.size[1]}, its image {image.name} "
                              f"{size[0]}x{size[1]}; a mask has its image's size")
        values = np.asarray(m.convert("L"))
    levels = np.unique(values)
    if len(levels) > 2 or (len(levels) == 2 and levels[0] != 0):
        shown = ", ".join(str(v) for v in levels[:5]) + (", ..." if len(levels) > 5 else "")
        raise VaekitError(f"{file}: not a binary mask (grey levels {shown}); a mask holds 0 for normal pixels and "
                          "one other value for defective ones")
    if levels.max() == 0:
        raise VaekitError(f"{file}: the mask of a defective image marks no pixel (all 0); mark the defect, or move "
                          f"{image.name} to the normal images")
    binary = Image.fromarray(np.where(values > 0, 255, 0).astype(np.uint8))
    fitted = np.asarray(fit(binary, (shape[2], shape[1]), config.resize, (0, 0, 0), area=True))
    shrunk = shape[1] * shape[2] < values.size  # smaller: a pixel any part of a defect covers is defective, so no
    return torch.from_numpy(fitted > (0 if shrunk else 127))  # small defect vanishes; larger: the nearest side


def typed(scan: Scan, single: str) -> tuple[list[str], Tensor]:
    """The defect types of scanned test images, `good` first, and each image's index among them; without
    subfolders, every image is of the one type `single`."""
    names = scan.classes or [single]
    order = [GOOD, *sorted(n for n in names if n != GOOD)] if GOOD in names else [GOOD, *names]
    labels = scan.labels if scan.labels is not None else torch.zeros(len(scan.files), dtype=torch.long)
    return order, torch.tensor([order.index(names[i]) for i in labels.tolist()], dtype=torch.long)


def load_tested(tested: Path, masks: Path, shape: tuple[int, int, int], config: DataConfig,
                single: str) -> tuple[TensorImages, list[str], str]:
    """The test images under `tested` decoded to `shape`, labelled by defect type, with their masks (all normal for
    `good`); and a fingerprint of the files and the masks."""
    from vaekit.data.sources import decode_in_memory

    c, h, w = shape
    scan = scan_folder(tested, replace(config, labels="folders", image_size=0 if h != w else h, channels=c))
    if scan.shape != shape:
        raise VaekitError(f"{tested}: test images are {scan.shape[1]}x{scan.shape[2]}, the normal images "
                          f"{h}x{w}; choose one size with --image-size N")
    types, scan.labels = typed(scan, single)
    decoded = decode_in_memory(tested, scan, config)
    files = {path_text(f): f for f in scan.files}
    defective = [i for i, label in enumerate(decoded.labels.tolist()) if types[label] != GOOD]
    if defective and not masks.is_dir():
        raise VaekitError(f"{masks}: no such folder; the defective images of {tested} need their masks there")
    digest = hashlib.sha1(scan.fingerprint(tested).encode(), usedforsecurity=False)
    marked = torch.zeros((len(decoded), h, w), dtype=torch.bool)
    for i in defective:
        image = files[decoded.names[i]]
        marked[i] = read_mask(mask_file(image, tested, masks), image, shape, config)
        digest.update(marked[i].numpy().tobytes())
    return TensorImages(decoded.images, decoded.labels, decoded.names, marked), types, digest.hexdigest()


def joined(parts: list[TensorImages]) -> TensorImages:
    """Image sets one after another (labels kept only where every part has them; names and masks likewise)."""
    def column(values: list, cat):
        return None if any(v is None for v in values) else cat(values)

    return TensorImages(torch.cat([p.images for p in parts]), column([p.labels for p in parts], torch.cat),
                        column([p.names for p in parts], np.concatenate), column([p.masks for p in parts], torch.cat))


def load_inspection(path: str, config: DataConfig, split: bool = True) -> Dataset:
    """`mvtec:ROOT`: normal training and validation images, and test images with their defect types and masks
    (the module's docstring has the layouts). `split` is ignored: the layout fixes the split."""
    from vaekit.data.sources import load_folder

    root = Path(path)
    normal, tested, masks = layout(root)
    normals = load_folder(str(normal), replace(config, labels="none", classes=""))
    if not all(isinstance(s, TensorImages) for s in (normals.train, normals.val, normals.test)):
        raise VaekitError(f"{normal}: too many normal images to hold in memory (--max-in-memory-gb); inspection "
                          "data is read into memory")
    whole = joined([normals.train, normals.val, normals.test])
    test, types, fingerprint = load_tested(tested, masks, normals.shape, config, "defective")
    if tested.name == "test":  # MVTec AD: every normal image is for training and validation
        rest, val = split_indices(len(whole), (config.val_fraction,))
    else:  # the folder layout: some normal images are held out for the test
        rest, val, held = split_indices(len(whole), (config.val_fraction, config.test_fraction))
        good = whole.subset(held)
        good = TensorImages(good.images, torch.zeros(len(good), dtype=torch.long), good.names,
                            torch.zeros((len(good), *test.masks.shape[1:]), dtype=torch.bool))
        test = joined([good, test])
    fingerprint = hashlib.sha1(f"{normals.fingerprint}{fingerprint}".encode(), usedforsecurity=False).hexdigest()
    notes = [*normals.notes, f"{int(test.masks.flatten(1).any(1).sum())} of {len(test)} test images have a defect "
             f"marked in their mask (types: {', '.join(types[1:])})"]
    return Dataset(f"mvtec:{path_text(root)}", whole.subset(rest), whole.subset(val), test, types,
                   f"the defect types of {tested.name}/ ({', '.join(types)})", notes, fingerprint)
