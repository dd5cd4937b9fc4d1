import gzip
import pickle

import numpy as np
import pytest
import torch

from conferprint.data import (
    IMAGENET32_SUBSET_100, DataFormatError, DataNotFoundError, load_cifar10, load_cinic10, load_digits,
    load_fashion_mnist, load_imagenet32, split_defender_attacker,
)
from conferprint.data.fashion_mnist import read_idx

from conftest import FMNIST_DIR, SHARED_CIFAR


def write_idx(path, arr):
    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def make_fmnist(folder, n=20):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
    write_idx(folder / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n // 2, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, n // 2))


def test_fashion_mnist_from_official_idx_files(tmp_path):
    make_fmnist(tmp_path / "fm")
    d = load_fashion_mnist(tmp_path / "fm", allow_download=False)
    assert d.x_train.shape == (20, 1, 28, 28) and d.x_test.shape == (10, 1, 28, 28)
    assert d.x_train.dtype == torch.float32 and 0 <= float(d.x_train.min()) and float(d.x_train.max()) <= 1
    assert d.num_classes == 10 and d.y_train.dtype == torch.int64


def test_env_var_is_searched(tmp_path, monkeypatch):
    make_fmnist(tmp_path / "fashion-mnist")
    monkeypatch.setenv("CONFERPRINT_DATA", str(tmp_path))
    assert load_fashion_mnist(None, allow_download=False).source == str(tmp_path / "fashion-mnist")


@pytest.mark.skipif(not FMNIST_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    d = load_fashion_mnist(FMNIST_DIR, allow_download=False)
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(d.y_train).tolist() == [6000] * 10


def test_missing_data_error_names_every_place_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CONFERPRINT_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("conferprint.data.fashion_mnist.SYSTEM_DIRS", [str(tmp_path / "system")])
    with pytest.raises(DataNotFoundError) as e:
        load_fashion_mnist(tmp_path / "given", allow_download=False)
    msg = str(e.value)
    for place in ["given", "env", "system", "cache"]:
        assert str(tmp_path / place) in msg
    assert "apt-get install dataset-fashion-mnist" in msg


def test_broken_idx_files_are_format_errors(tmp_path):
    p = tmp_path / "x.gz"
    with gzip.open(p, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 100)
    with pytest.raises(DataFormatError, match="bytes follow"):
        read_idx(p, 3)
    with gzip.open(p, "wb") as f:
        f.write(b"PK\x03\x04")
    with pytest.raises(DataFormatError, match="magic"):
        read_idx(p, 3)


def test_split_is_seeded_disjoint_and_complete():
    a1, b1 = split_defender_attacker(1001, seed=3)
    a2, b2 = split_defender_attacker(1001, seed=3)
    a3, _ = split_defender_attacker(1001, seed=4)
    assert torch.equal(a1, a2) and torch.equal(b1, b2) and not torch.equal(a1, a3)
    assert not set(a1.tolist()) & set(b1.tolist())
    assert sorted(a1.tolist() + b1.tolist()) == list(range(1001))
    assert abs(len(a1) - len(b1)) <= 1


def _cifar_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist(),
                     b"batch_label": b"x", b"filenames": [b"f"] * n}, f)


def test_cifar10_from_the_official_python_layout(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for i in range(1, 6):
        _cifar_batch(d / f"data_batch_{i}", 4, i)
    _cifar_batch(d / "test_batch", 3, 9)
    ds = load_cifar10(tmp_path, allow_download=False)  # the parent folder works too
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    # the R plane comes first in a row
    with open(d / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"][0]
    assert torch.allclose(ds.x_test[0, 0].flatten(), torch.tensor(raw[:1024] / 255.0, dtype=torch.float32))


@pytest.mark.skipif(not SHARED_CIFAR.is_dir(), reason="../shared/data/cifar-10-batches-py is absent")
def test_shared_cifar10_folder():
    ds = load_cifar10(SHARED_CIFAR, allow_download=False)
    assert ds.x_train.shape == (50000, 3, 32, 32) and ds.x_test.shape == (10000, 3, 32, 32)
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.classes[3] == "cat"


def test_cinic10_from_png_folders(tmp_path):
    from PIL import Image

    from conferprint.data.cifar10 import CLASSES

    rng = np.random.default_rng(0)
    for split in ("train", "valid", "test"):
        for k, c in enumerate(CLASSES):
            (tmp_path / split / c).mkdir(parents=True)
            for j in range(2):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / split / c / f"{j}.png")
    ds = load_cinic10(tmp_path)
    assert ds.x_train.shape == (40, 3, 32, 32) and ds.x_test.shape == (20, 3, 32, 32)
    assert torch.bincount(ds.y_test).tolist() == [2] * 10
    (tmp_path / "test" / "cat" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataFormatError, match="readable PNG"):
        load_cinic10(tmp_path)


def test_imagenet32_subset_with_one_based_labels(tmp_path):
    # a map file in the ILSVRC format with the 100 subset classes scattered among 1000
    names = [f"filler_{i}" for i in range(1000)]
    chosen = list(range(3, 1000, 10))[:100]
    for idx, name in zip(chosen, IMAGENET32_SUBSET_100):
        names[idx] = name.replace(" ", "_")
    (tmp_path / "map_clsloc.txt").write_text("".join(f"n{i:08d} {i + 1} {n}\n" for i, n in enumerate(names)))
    rng = np.random.default_rng(0)
    labels = np.array([chosen[0] + 1, chosen[5] + 1, 1, 1000, chosen[99] + 1])  # 1-based
    for name in ("train_data_batch_1", "train_data_batch_2", "val_data"):
        with open(tmp_path / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (5, 3072), dtype=np.uint8), "labels": labels.tolist(),
                         "mean": np.zeros(3072)}, f)
    ds = load_imagenet32(tmp_path)
    assert ds.num_classes == 100 and ds.classes[0] == "kit fox"
    assert ds.y_test.tolist() == [0, 5, 99]
    assert ds.x_train.shape == (6, 3, 32, 32)


def test_imagenet32_without_class_map_is_a_clear_error(tmp_path):
    for name in ("train_data_batch_1", "val_data"):
        with open(tmp_path / name, "wb") as f:
            pickle.dump({"data": np.zeros((1, 3072), np.uint8), "labels": [1]}, f)
    with pytest.raises(DataFormatError, match="map_clsloc.txt"):
        load_imagenet32(tmp_path)


def test_digits_are_real_and_scaled():
    d = load_digits()
    assert d.x_train.shape[1:] == (1, 8, 8) and len(d.x_train) + len(d.x_test) == 1797
    assert float(d.x_train.max()) == 1.0 and float(d.x_train.min()) == 0.0
