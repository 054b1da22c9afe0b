"""Data sources on real files: IDX (generated and the real Fashion-MNIST), digits, folders, arrays, batches."""

import gzip
import hashlib

import numpy as np
import pytest
import torch
from conftest import require_fashion_mnist
from PIL import Image

from vaekit.config import DataConfig
from vaekit.data import Batches, epoch_batches, load_dataset
from vaekit.data.idx import read_idx, write_idx
from vaekit.data.sources import IDX_FILES, REMOTE, load_idx_set
from vaekit.errors import VaekitError


def fake_mnist(folder, n_train=60, n_test=20, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = [rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_train, dtype=np.uint8),
              rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_test, dtype=np.uint8)]
    for stem, array in zip(IDX_FILES, arrays):
        write_idx(folder / (stem + (".gz" if gz else "")), array)
    return arrays


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    array = (np.arange(2 * 3 * 5).reshape(2, 3, 5) - 7).astype(dtype)
    if dtype == np.uint8:
        array = np.abs(array).astype(dtype)
    write_idx(tmp_path / f"a.idx{suffix}", array)
    back = read_idx(tmp_path / f"a.idx{suffix}")
    assert back.dtype == array.dtype and np.array_equal(back, array)


def test_idx_header_is_the_published_format(tmp_path):
    write_idx(tmp_path / "x", np.zeros((3, 2, 2), dtype=np.uint8))
    raw = (tmp_path / "x").read_bytes()
    assert raw[:4] == b"\x00\x00\x08\x03" and raw[4:8] == (3).to_bytes(4, "big") and len(raw) == 16 + 12


def test_idx_bad_files_give_clear_errors(tmp_path):
    write_idx(tmp_path / "ok", np.zeros((4, 5), dtype=np.uint8))
    raw = (tmp_path / "ok").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-3])
    (tmp_path / "magic").write_bytes(b"\x12\x34" + raw[2:])
    (tmp_path / "trunc.gz").write_bytes(gzip.compress(raw)[:-10])
    with pytest.raises(VaekitError, match="short: IDX data truncated"):
        read_idx(tmp_path / "short")
    with pytest.raises(VaekitError, match="magic: not an IDX file"):
        read_idx(tmp_path / "magic")
    with pytest.raises(VaekitError, match="trunc.gz: corrupt or truncated gzip"):
        read_idx(tmp_path / "trunc.gz")


def test_mnist_style_set_from_a_cache_folder(tmp_path):
    arrays = fake_mnist(tmp_path / "mnist", gz=False)
    data = load_dataset(DataConfig(name="mnist", data_dir=str(tmp_path), download=False, val_fraction=0.25))
    assert data.shape == (1, 28, 28) and (len(data.train), len(data.val), len(data.test)) == (45, 15, 20)
    assert torch.equal(data.test.images[:, 0], torch.from_numpy(arrays[2]))
    # train and val are a partition of the official training set
    seen = torch.cat([data.train.images, data.val.images]).flatten(1)
    assert sorted(map(bytes, seen.numpy())) == sorted(map(bytes, arrays[0].reshape(60, -1)))


def test_download_verifies_checksums(tmp_path, monkeypatch):
    """The download path, exercised against a local file:// 'server' (no network in tests)."""
    server = tmp_path / "server"
    fake_mnist(server)
    md5 = tuple(hashlib.md5((server / f"{s}.gz").read_bytes()).hexdigest() for s in IDX_FILES)
    monkeypatch.setitem(REMOTE, "mnist", {**REMOTE["mnist"], "url": server.as_uri() + "/", "md5": md5,
                                          "system": str(tmp_path / "nowhere")})
    data = load_idx_set("mnist", DataConfig(data_dir=str(tmp_path / "cache")))
    assert len(data.test) == 20 and (tmp_path / "cache" / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()

    monkeypatch.setitem(REMOTE, "mnist", {**REMOTE["mnist"], "md5": ("0" * 32,) * 4})
    with pytest.raises(VaekitError, match="checksum mismatch"):
        load_idx_set("mnist", DataConfig(data_dir=str(tmp_path / "cache2")))
    assert not list((tmp_path / "cache2" / "mnist").glob("*.gz")), "a bad download must not be kept"


def test_missing_data_set_without_network_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(REMOTE, "mnist", {**REMOTE["mnist"], "url": "http://127.0.0.1:9/", "system": str(tmp_path)})
    with pytest.raises(VaekitError, match="apt-get install dataset-mnist"):
        load_dataset(DataConfig(name="mnist", data_dir=str(tmp_path / "cache")))
    with pytest.raises(VaekitError, match="downloads are off"):
        load_dataset(DataConfig(name="mnist", data_dir=str(tmp_path / "cache"), download=False))


def test_real_fashion_mnist():
    require_fashion_mnist()
    data = load_dataset(DataConfig(name="fashion-mnist", data_dir="/nonexistent", download=False))
    assert (len(data.train) + len(data.val), len(data.test)) == (60_000, 10_000)
    assert data.shape == (1, 28, 28) and data.train.images.dtype == torch.uint8
    assert sorted(data.test.labels.unique().tolist()) == list(range(10))
    assert torch.bincount(data.test.labels).tolist() == [1000] * 10  # the published test set is balanced
    assert len(data.classes) == 10 and data.classes[9] == "Ankle boot"
    assert data.label_source == "the 10 classes of fashion-mnist"
    assert 60 < data.test.images.float().mean() < 80  # mean grey level of Fashion-MNIST is ~73


def test_digits_ship_with_the_package():
    data = load_dataset(DataConfig(name="digits"))
    assert data.shape == (1, 8, 8) and len(data.train) + len(data.val) + len(data.test) == 1797
    assert data.train.images.max() == 255 and data.test.labels is not None


def write_images(folder, n, size, mode, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        shape = size[::-1] + ((3,) if mode == "RGB" else ())
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"{i}.png")


def test_image_folder_with_class_subfolders(tmp_path):
    write_images(tmp_path / "imgs" / "cats", 12, (16, 12), "L")
    write_images(tmp_path / "imgs" / "dogs", 8, (16, 12), "L", seed=1)
    data = load_dataset(DataConfig(name=f"folder:{tmp_path / 'imgs'}", val_fraction=0.2, test_fraction=0.2))
    assert data.shape == (1, 12, 16) and data.classes == ["cats", "dogs"]
    assert len(data.train) + len(data.val) + len(data.test) == 20
    labels = torch.cat([data.train.labels, data.val.labels, data.test.labels])
    assert torch.bincount(labels).tolist() == [12, 8]


def test_image_folder_colour_and_resizing(tmp_path):
    write_images(tmp_path / "mixed", 6, (20, 20), "RGB")
    write_images(tmp_path / "mixed", 4, (10, 30), "L", seed=2)  # overwrites 0..3 with grey images of another size
    with pytest.raises(VaekitError, match="different sizes; choose one with --image-size"):
        load_dataset(DataConfig(name=f"folder:{tmp_path / 'mixed'}"))
    data = load_dataset(DataConfig(name=f"folder:{tmp_path / 'mixed'}", image_size=8, val_fraction=0.2,
                                   test_fraction=0.2))
    assert data.shape == (3, 8, 8)


def test_large_folder_streams_through_a_dataloader(tmp_path):
    write_images(tmp_path / "big", 20, (8, 8), "L")
    config = DataConfig(name=str(tmp_path / "big"), max_in_memory_gb=1e-9, val_fraction=0.2, test_fraction=0.2,
                        folder_cache=False)
    streamed = load_dataset(config)
    in_memory = load_dataset(DataConfig(name=str(tmp_path / "big"), val_fraction=0.2, test_fraction=0.2))
    assert type(streamed.train).__name__ == "FileImages"
    a, a_labels = zip(*Batches(streamed.train, 5, workers=1))
    b, b_labels = zip(*Batches(in_memory.train, 5))
    assert torch.equal(torch.cat(a), torch.cat(b)) and a_labels == b_labels


def test_empty_or_corrupt_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VaekitError, match="no images found"):
        load_dataset(DataConfig(name=f"folder:{tmp_path / 'empty'}"))
    write_images(tmp_path / "bad", 3, (8, 8), "L")
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(VaekitError, match="broken.png: not a readable image"):
        load_dataset(DataConfig(name=f"folder:{tmp_path / 'bad'}"))


def test_npy_and_npz_arrays(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "floats.npy", rng.random((30, 8, 8)).astype(np.float32))
    np.savez(tmp_path / "rgb.npz", images=rng.integers(0, 256, (30, 16, 16, 3), dtype=np.uint8),
             labels=rng.integers(0, 3, 30))
    assert load_dataset(DataConfig(name=f"npy:{tmp_path / 'floats.npy'}")).shape == (1, 8, 8)
    rgb = load_dataset(DataConfig(name=str(tmp_path / "rgb.npz")))
    assert rgb.shape == (3, 16, 16) and rgb.train.labels is not None
    bad = rng.random((30, 8, 8))
    bad[3, 2, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(VaekitError, match="NaN"):
        load_dataset(DataConfig(name=str(tmp_path / "nan.npy")))
    np.save(tmp_path / "rank.npy", rng.random((30, 64)))
    with pytest.raises(VaekitError, match=r"expected images shaped"):
        load_dataset(DataConfig(name=str(tmp_path / "rank.npy")))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}] * 30, dtype=object))
    with pytest.raises(VaekitError, match="not a plain numeric array"):
        load_dataset(DataConfig(name=str(tmp_path / "objects.npy")))


def test_unknown_data_set_name():
    with pytest.raises(VaekitError, match="unknown data set 'cifar-11'"):
        load_dataset(DataConfig(name="cifar-11"))


def test_epoch_order_is_seeded_and_shards_partition_each_step():
    a = epoch_batches(100, 8, shuffle=True, seed=3, epoch=2)
    assert [t.tolist() for t in a] == [t.tolist() for t in epoch_batches(100, 8, shuffle=True, seed=3, epoch=2)]
    assert torch.cat(a).sort().values.tolist() == list(range(100))
    assert a[0].tolist() != epoch_batches(100, 8, shuffle=True, seed=3, epoch=3)[0].tolist()
    r0 = epoch_batches(100, 8, shuffle=True, seed=3, epoch=2, rank=0, world=2)
    e0, e1 = (epoch_batches(100, 8, shuffle=False, rank=r, world=2, lockstep=False) for r in (0, 1))
    assert sorted(torch.cat(e0 + e1).tolist()) == list(range(100))  # evaluation: every image once
    r1 = epoch_batches(100, 8, shuffle=True, seed=3, epoch=2, rank=1, world=2)
    assert len(r0) == len(r1) == 100 // 16
    both = torch.cat(r0 + r1)
    assert len(set(both.tolist())) == len(both) == 96  # disjoint, ragged end dropped


def test_batches_are_floats_and_binarization_is_dynamic():
    from vaekit.data import TensorImages

    images = TensorImages(torch.full((10, 1, 4, 4), 128, dtype=torch.uint8))
    x, y = next(iter(Batches(images, 10)))
    assert y is None and x.dtype == torch.float32 and torch.allclose(x, torch.full_like(x, 128 / 255))
    b = Batches(images, 10, binarize=True)
    (first, _), (second, _) = next(iter(b)), next(iter(b))
    assert set(first.unique().tolist()) == {0.0, 1.0} and not torch.equal(first, second)


def cifar_archive(path, batches: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """An archive in the official CIFAR-10 binary layout: per record a label byte, then the R, G and B planes."""
    import io
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, (images, labels) in batches.items():
            data = np.concatenate([labels[:, None].astype(np.uint8), images.reshape(len(images), -1)], 1).tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_cifar10_reads_the_official_binary_archive_without_unpacking(tmp_path, monkeypatch):
    from vaekit.data import cifar

    rng = np.random.default_rng(0)
    batches = {name: (rng.integers(0, 256, (12, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 12))
               for name in [*cifar.TRAIN, *cifar.TEST]}
    batches["test_batch.bin"][0][0] = np.stack([np.full((32, 32), v, np.uint8) for v in (255, 0, 128)])
    archive = tmp_path / "cache" / "cifar10" / cifar.ARCHIVE
    cifar_archive(archive, batches)
    data = load_dataset(DataConfig(name="cifar10", data_dir=str(tmp_path / "cache"), val_fraction=0.1))
    assert data.shape == (3, 32, 32) and (len(data.train), len(data.val), len(data.test)) == (54, 6, 12)
    assert data.test.images[0, :, 5, 7].tolist() == [255, 0, 128]  # the planes are red, green, blue
    assert torch.equal(data.test.labels, torch.from_numpy(batches["test_batch.bin"][1]))
    assert data.classes[0] == "airplane" and data.classes[9] == "truck"
    assert not (archive.parent / "cifar-10-batches-bin").exists()  # read from the tar, nothing unpacked

    broken = dict(batches)
    broken["data_batch_3.bin"] = (batches["data_batch_3.bin"][0], np.full(12, 12))
    cifar_archive(tmp_path / "bad" / "cifar10" / cifar.ARCHIVE, broken)
    with pytest.raises(VaekitError, match="a label 12"):
        load_dataset(DataConfig(name="cifar10", data_dir=str(tmp_path / "bad")))
    broken = {name: v for name, v in batches.items() if name != "test_batch.bin"}
    cifar_archive(tmp_path / "bad" / "cifar10" / cifar.ARCHIVE, broken)
    with pytest.raises(VaekitError, match="has no cifar-10-batches-bin/test_batch.bin"):
        load_dataset(DataConfig(name="cifar10", data_dir=str(tmp_path / "bad")))
    (tmp_path / "bad" / "cifar10" / cifar.ARCHIVE).write_bytes(b"\x1f\x8b not a gzip")
    with pytest.raises(VaekitError, match="not a readable .tar.gz"):
        load_dataset(DataConfig(name="cifar10", data_dir=str(tmp_path / "bad")))
    with pytest.raises(VaekitError, match="downloads are off"):
        load_dataset(DataConfig(name="cifar10", data_dir=str(tmp_path / "none"), download=False))

    server = tmp_path / "server" / cifar.ARCHIVE  # the download: checked against its MD5, kept only when right
    cifar_archive(server, batches)
    monkeypatch.setattr(cifar, "URL", server.as_uri())
    monkeypatch.setattr(cifar, "MD5", hashlib.md5(server.read_bytes()).hexdigest())
    assert len(load_dataset(DataConfig(name="cifar10", data_dir=str(tmp_path / "fetched"))).test) == 12
    monkeypatch.setattr(cifar, "MD5", "0" * 32)
    with pytest.raises(VaekitError, match="checksum mismatch"):
        load_dataset(DataConfig(name="cifar10", data_dir=str(tmp_path / "fetched2")))
    assert not (tmp_path / "fetched2" / "cifar10" / cifar.ARCHIVE).exists()


def test_a_damaged_cifar10_archive_is_refused_not_read_as_pixels(tmp_path):
    from vaekit.data import cifar

    rng = np.random.default_rng(1)
    batches = {name: (rng.integers(0, 256, (40, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 40))
               for name in [*cifar.TRAIN, *cifar.TEST]}
    archive = tmp_path / "cifar10" / cifar.ARCHIVE
    cifar_archive(archive, batches)
    data = bytearray(archive.read_bytes())
    middle = slice(len(data) // 2, len(data) // 2 + 2000)
    data[middle] = bytes(b ^ 0x5A for b in data[middle])  # bytes flipped inside the compressed stream
    archive.write_bytes(bytes(data))
    with pytest.raises(VaekitError, match="not a readable .tar.gz"):
        load_dataset(DataConfig(name="cifar10", data_dir=str(tmp_path)))
