"""Real images are messy: alpha, palettes, 16-bit, odd aspect ratios, symlinks and duplicates, folders that are
sizes rather than categories. Each case on files written here, and the whole of a real Debian icon theme."""

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.config import DataConfig
from vaekit.data import Batches, load_dataset
from vaekit.errors import VaekitError

SPLIT = {"val_fraction": 0.2, "test_fraction": 0.2}


def folder(tmp_path: Path, name: str, config: dict | None = None, **kw):
    return load_dataset(DataConfig(name=f"folder:{tmp_path / name}", **{**SPLIT, **(config or {}), **kw}))


def all_images(data) -> torch.Tensor:
    return torch.cat([data.train.images, data.val.images, data.test.images])


def icon(size: int = 12) -> np.ndarray:
    """RGBA: an opaque red square in the middle; transparent elsewhere, with black stored under the alpha."""
    a = np.zeros((size, size, 4), np.uint8)
    a[size // 4: -size // 4, size // 4: -size // 4] = (255, 0, 0, 255)
    return a


def save_many(path: Path, make, n: int = 10) -> None:
    """n PNGs; a text chunk makes their bytes differ even where their pixels do not (vaekit keeps byte-identical
    files once)."""
    from PIL.PngImagePlugin import PngInfo

    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        info = PngInfo()
        info.add_text("index", str(i))
        make(i).save(path / f"{i}.png", pnginfo=info)


def test_alpha_is_composited_on_the_background(tmp_path):
    save_many(tmp_path / "rgba", lambda i: Image.fromarray(icon()))
    white = folder(tmp_path, "rgba")
    assert white.shape == (3, 12, 12)
    corner, centre = all_images(white)[:, :, 0, 0], all_images(white)[:, :, 6, 6]
    assert (corner == 255).all() and (centre == torch.tensor([255, 0, 0], dtype=torch.uint8)).all()
    black = folder(tmp_path, "rgba", background="black")
    assert (all_images(black)[:, :, 0, 0] == 0).all()
    grey = folder(tmp_path, "rgba", background="#808080")
    assert (all_images(grey)[:, :, 0, 0] == 128).all()
    assert any("composited on white" in n for n in white.notes)
    with pytest.raises(VaekitError, match="background 'pink'"):
        folder(tmp_path, "rgba", background="pink")


def test_grey_with_alpha_and_palettes_with_transparency(tmp_path):
    def la(i):
        a = np.zeros((8, 8, 2), np.uint8)
        a[2:6, 2:6] = (40, 255)  # dark grey, opaque; transparent black elsewhere
        return Image.fromarray(a, "LA")

    save_many(tmp_path / "la", la)
    data = folder(tmp_path, "la", channels=1)
    assert (all_images(data)[:, 0, 0, 0] == 255).all() and (all_images(data)[:, 0, 3, 3] == 40).all()

    def palette(i):
        img = Image.fromarray(icon(8)).convert("RGB").quantize(4)
        black = [j for j, c in enumerate(np.array(img.getpalette()).reshape(-1, 3)[:4]) if c.sum() == 0][0]
        img.info["transparency"] = black
        return img

    save_many(tmp_path / "p", palette)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        data = folder(tmp_path, "p")
    assert not [w for w in seen if "PIL" in w.filename], [str(w.message) for w in seen]
    assert (all_images(data)[:, :, 0, 0] == 255).all() and (all_images(data)[:, 0, 4, 4] == 255).all()
    assert (all_images(data)[:, 1, 4, 4] == 0).all()  # red stays red


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    save_many(tmp_path / "deep", lambda i: Image.fromarray(ramp))
    data = folder(tmp_path, "deep")
    got = all_images(data)[0, 0].numpy().astype(float)
    assert data.shape == (1, 8, 8)
    assert np.abs(got - ramp / 257.0).max() <= 1.0  # 8 bits of the same ramp, not 84-99% white


def test_links_and_copies_are_kept_once_so_no_test_image_is_a_training_image(tmp_path):
    rng = np.random.default_rng(0)
    save_many(tmp_path / "set" / "a", lambda i: Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)), n=30)
    for i in range(10):
        os.symlink(tmp_path / "set" / "a" / f"{i}.png", tmp_path / "set" / "a" / f"link{i}.png")
    for i in range(5):
        shutil.copy(tmp_path / "set" / "a" / f"{i}.png", tmp_path / "set" / "a" / f"copy{i}.png")
    data = folder(tmp_path, "set")
    assert len(all_images(data)) == 30
    train, test = data.train.images.flatten(1), data.test.images.flatten(1)
    assert not (test[:, None] == train[None]).all(-1).any()
    assert any("skipped 10 links" in n and "5 files with the same bytes" in n for n in data.notes)


def test_labels_come_from_category_folders_not_size_folders(tmp_path):
    grey = lambda i: Image.fromarray(np.full((8, 8), i * 20 + 1, np.uint8))  # noqa: E731
    for k, name in enumerate(("16x16", "22x22", "scalable")):
        save_many(tmp_path / "theme" / name, lambda i, k=k: Image.fromarray(np.full((8, 8), i * 7 + k, np.uint8)))
    sizes = folder(tmp_path, "theme")
    assert sizes.train.labels is None and "look like image sizes" in sizes.label_source
    forced = folder(tmp_path, "theme", labels="folders")
    assert forced.classes == ["16x16", "22x22", "scalable"]
    save_many(tmp_path / "pets" / "cats", grey)
    save_many(tmp_path / "pets" / "dogs", lambda i: Image.fromarray(np.full((8, 8), 255 - i, np.uint8)))
    pets = folder(tmp_path, "pets")
    assert pets.classes == ["cats", "dogs"] and "subfolder names" in pets.label_source
    unlabelled = folder(tmp_path, "pets", labels="none")
    assert unlabelled.train.labels is None and unlabelled.label_source == "none (--labels none)"


@pytest.mark.parametrize("policy", ["crop", "pad", "stretch"])
def test_odd_aspect_ratios_follow_the_resize_policy(tmp_path, policy):
    wide = np.zeros((20, 40), np.uint8)  # 40 wide, 20 high: black with a white stripe down the middle
    wide[:, 18:22] = 255
    save_many(tmp_path / "wide", lambda i: Image.fromarray(wide))
    data = folder(tmp_path, "wide", image_size=20, resize=policy, background="grey")
    x = all_images(data)[0, 0].float()
    stripe = (x[10] > 128).sum().item()  # white columns in the middle row
    if policy == "pad":  # the whole image, halved: bands of grey above and below
        assert (x[0] == 128).all() and (x[-1] == 128).all() and 1 <= stripe <= 3
    elif policy == "crop":  # the centre square at full scale: the stripe keeps its width
        assert x[0].max() == 255 and 3 <= stripe <= 5
    else:  # squeezed sideways: a thinner stripe, no bands
        assert x[0].max() > 128 and 1 <= stripe <= 3
    assert any(f"are {'centre-cropped' if policy == 'crop' else policy}" in n for n in data.notes) or policy == "pad"


@pytest.mark.parametrize("cache", [True, False], ids=["decoded-once", "streamed"])
def test_a_corrupt_image_in_a_large_folder_is_one_line_or_skipped(tmp_path, cache, capsys):
    """Larger than memory: with the cache the file fails while the folder is decoded once (and again each time the
    entry is read, unless skipped); streamed, it fails when its batch is read in a worker process."""
    save_many(tmp_path / "big", lambda i: Image.fromarray(np.full((8, 8), i * 9, np.uint8)), n=20)
    good = (tmp_path / "big" / "3.png").read_bytes()
    (tmp_path / "big" / "3.png").write_bytes(good[:60])  # the header reads; the pixels do not
    config = dict(max_in_memory_gb=1e-9, workers=1, folder_cache=cache, data_dir=str(tmp_path / "cache"))

    def every_image(**kw) -> int:
        data = folder(tmp_path, "big", config, **kw)
        return sum(len(x) for split in (data.train, data.val, data.test) for x, _ in Batches(split, 4, workers=1))

    for attempt in range(2):  # the second time, a cache entry built while skipping must not hide the file
        with pytest.raises(VaekitError, match="3.png: not a readable image.*--skip-bad-images") as raised:
            every_image()
        assert "Traceback" not in str(raised.value) and "worker" not in str(raised.value)
        capsys.readouterr()
        assert every_image(skip_bad_images=True) == 19
        assert "3.png: not a readable image" in capsys.readouterr().err


ICONS = Path(os.environ.get("VAEKIT_TEST_DATA", Path.home() / ".cache" / "vaekit-test")) / "gnome-icon-theme"


def test_a_real_icon_theme(capsys):
    """Debian's gnome-icon-theme (scripts/setup.sh --test unpacks it): about 6,000 RGBA PNGs of 8 to 256 px in
    size folders, two thirds of them symlinks."""
    root = ICONS / "usr" / "share" / "icons" / "gnome"
    if not root.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{root} is missing; scripts/setup.sh --test should have unpacked gnome-icon-theme")
        pytest.skip("gnome-icon-theme not unpacked (bash scripts/setup.sh --test)")
    data = load_dataset(DataConfig(name=f"folder:{root}", image_size=32))
    assert data.shape == (3, 32, 32) and data.train.labels is None and "image sizes" in data.label_source
    assert 1500 < len(all_images(data)) < 2500  # ~6,000 files, ~3,900 of them links, a few dozen copies
    train, test = data.train.images.flatten(1), data.test.images.flatten(1)
    assert not (test[:, None] == train[None]).all(-1).any()
    assert capsys.readouterr().err == ""  # no raw PIL warnings
    apps = load_dataset(DataConfig(name=f"folder:{root / '48x48'}", image_size=32))
    assert {"apps", "actions", "devices"} <= set(apps.classes)


def test_every_data_set_says_what_its_labels_are(tmp_path):
    np.savez(tmp_path / "plain.npz", x=np.zeros((30, 8, 8), np.uint8))
    assert load_dataset(DataConfig(name="digits")).label_source == "the 10 digits"
    assert "no labels" in load_dataset(DataConfig(name=f"npz:{tmp_path / 'plain.npz'}")).label_source


def test_photos_are_turned_upright_by_their_exif_orientation(tmp_path):
    """A phone stores a portrait photo as a landscape one with an orientation tag (6: turn 90 degrees clockwise to
    view); vaekit reads it as a viewer shows it, and says so."""
    from PIL import ImageOps

    (tmp_path / "photos").mkdir()
    stored = np.zeros((8, 12, 3), np.uint8)  # 12 wide, 8 high, as stored
    stored[0, 0] = (255, 0, 0)  # a red corner, top left as stored
    for i in range(6):
        stored[7, 11, 2] = i  # each photo its own bytes
        img = Image.fromarray(stored.copy())
        exif = img.getexif()
        exif[0x0112] = 6
        img.save(tmp_path / "photos" / f"{i}.png", exif=exif.tobytes(), pnginfo=None)
    data = folder(tmp_path, "photos")
    assert data.shape == (3, 12, 8)  # upright: 8 wide, 12 high
    viewers = []
    for i in range(6):
        with Image.open(tmp_path / "photos" / f"{i}.png") as img:
            viewers.append(torch.from_numpy(np.asarray(ImageOps.exif_transpose(img)).transpose(2, 0, 1).copy()))
    assert all(any(torch.equal(image, seen) for seen in viewers) for image in all_images(data))
    assert (all_images(data)[:, 0, 0, -1] == 255).all()  # the red corner is top right once turned
    assert any("6 images turned upright by their EXIF orientation" in n for n in data.notes)


def test_hidden_files_and_svgs_are_skipped_and_counted_first_frames_said(tmp_path):
    root = tmp_path / "pets"
    for shade, name in enumerate(("cats", "dogs", ".thumbnails")):
        save_many(root / name, lambda i: Image.fromarray(np.full((8, 8), i * 9 + shade, np.uint8)), n=6)
    (root / "cats" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble, not an image")
    (root / "cats" / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (200, 10)]
    frames[0].save(root / "dogs" / "moving.gif", save_all=True, append_images=frames[1:])
    data = folder(tmp_path, "pets")
    assert data.classes == ["cats", "dogs"] and len(all_images(data)) == 13
    notes = " ".join(data.notes)
    assert "skipped 7 hidden files" in notes and "skipped 1 SVG files" in notes
    assert "1 animated or multi-page images" in notes and "composited" not in notes  # no transparency: no word
    everything = folder(tmp_path, "pets", labels="folders", hidden_files=True, skip_bad_images=True)
    assert ".thumbnails" in everything.classes


def test_string_labels_in_an_array_file_are_class_names(tmp_path):
    names = np.array(["cat", "dog", "emu"])[np.arange(30) % 3]
    np.savez(tmp_path / "named.npz", x=np.zeros((30, 8, 8), np.uint8), y=names)
    data = load_dataset(DataConfig(name=f"npz:{tmp_path / 'named.npz'}"))
    assert data.classes == ["cat", "dog", "emu"] and "string labels" in data.label_source
    labels = torch.cat([data.train.labels, data.val.labels, data.test.labels])
    assert sorted(labels.tolist()) == sorted((np.arange(30) % 3).tolist())


def test_every_command_reads_a_folder_alike_and_writes_any_file_name(cli, tmp_path):
    """A grey + alpha folder given to an RGB model is read as RGB by reconstruct and score, as `ood --ood` reads it;
    a file name that is not UTF-8 (Linux allows it) is written to the CSV escaped, not a crash."""
    save_many(tmp_path / "rgb", lambda i: Image.fromarray(np.full((8, 8, 3), (i * 20, 40, 200 - i * 9), np.uint8)),
              n=20)
    cli("train", "--data", "folder:rgb", "--epochs", "1", "--two-stage-epochs", "0", "--out", "run")
    save_many(tmp_path / "la", lambda i: Image.fromarray(np.full((8, 8, 2), (i * 20, 255), np.uint8), "LA"), n=6)
    name = os.fsdecode(b"caf\xe9-\xff.png")  # Latin-1 bytes, as an old camera names files
    shutil.copy(tmp_path / "la" / "0.png", tmp_path / "la" / name)
    (tmp_path / "la" / "0.png").unlink()
    cli("reconstruct", "run", "--data", "folder:la", "--out", "r.png")
    assert "6 posterior means" in cli("encode", "run", "--data", "folder:la", "--out", "c.npy").stdout  # all of it
    out = cli("score", "run", "--data", "folder:la", "--out", "s.csv", "-k", "2").stdout
    assert "6 images" in out
    assert "caf\\xe9-\\xff.png" in (tmp_path / "s.csv").read_text(encoding="utf-8")


def test_a_changed_folder_is_said_when_a_run_reads_it_again(cli, tmp_path):
    save_many(tmp_path / "imgs", lambda i: Image.fromarray(np.full((8, 8), i * 9, np.uint8)), n=20)
    cli("train", "--data", "folder:imgs", "--epochs", "1", "--two-stage-epochs", "0", "--out", "run")
    assert "has changed" not in cli("reconstruct", "run", "--out", "a.png").stderr
    Image.fromarray(np.full((8, 8), 3, np.uint8)).save(tmp_path / "imgs" / "new.png")
    warning = cli("reconstruct", "run", "--out", "b.png").stderr
    assert "folder:imgs has changed since run was trained" in warning and "then 16 / 2 / 2, now 17 / 2 / 2" in warning
