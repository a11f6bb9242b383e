"""Image loaders: bundled digits, binarized MNIST files, IDX files, clear errors."""

import gzip
import struct

import numpy as np
import pytest
import torch

from pyro_lvm.data import (load_binarized_mnist, load_digits_data, load_images, load_mnist_idx,
                           load_mnist_torchvision, split_indices)


def test_digits_split_is_deterministic_and_disjoint():
    a, b = load_digits_data(), load_digits_data()
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert (len(a.train), len(a.valid), len(a.test)) == (1438, 180, 179)
    assert set(a.train.unique().tolist()) == {0.0, 1.0}
    grey = load_digits_data(binarize=False)
    assert 0 <= float(grey.train.min()) and float(grey.train.max()) <= 1 and len(grey.train.unique()) > 2
    tr, va, te = split_indices(100)
    assert len(set(tr) | set(va) | set(te)) == 100


def test_split_refuses_tiny_data():
    with pytest.raises(ValueError, match="at least 3"):
        split_indices(2)


def _write_idx(path, array, gz=False):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_round_trip(tmp_path):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(30, 28, 28))
    labels = rng.randint(0, 10, size=30)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, gz=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, gz=True)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images[:5])
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:5])
    data = load_mnist_idx(tmp_path, valid_size=10)
    assert data.train.shape == (20, 784) and data.valid.shape == (10, 784) and data.test.shape == (5, 784)
    assert torch.allclose(data.train[0], torch.tensor(images[0].reshape(-1) / 255.0, dtype=torch.float32))
    assert data.valid_labels.tolist() == labels[20:].tolist()


def test_idx_truncated_file_is_reported(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    _write_idx(path, np.zeros((3, 28, 28)))
    path.write_bytes(path.read_bytes()[:-10])
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        _write_idx(tmp_path / name, np.zeros((3,) if "labels" in name else (3, 28, 28)))
    with pytest.raises(ValueError, match="truncated"):
        load_mnist_idx(tmp_path)


def test_amat_text_files(tmp_path):
    rng = np.random.RandomState(0)
    for split, n in (("train", 6), ("valid", 4)):
        np.savetxt(tmp_path / f"binarized_mnist_{split}.amat", rng.randint(0, 2, size=(n, 784)), fmt="%d")
    data = load_binarized_mnist(tmp_path)
    assert data.train.shape == (6, 784) and data.name.endswith("valid-as-test")


def test_amat_out_of_range_values(tmp_path):
    for split in ("train", "valid"):
        np.savetxt(tmp_path / f"{split}.amat", np.full((2, 784), 3.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_binarized_mnist(tmp_path)


def test_missing_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_binarized_mnist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="train.amat"):
        load_binarized_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="train-images"):
        load_mnist_idx(tmp_path)
    with pytest.raises(ValueError, match="needs a path"):
        load_images("binarized-mnist")
    with pytest.raises(ValueError, match="unknown image data set"):
        load_images("cifar")


def test_torchvision_download_fails_clearly(tmp_path):
    # torchvision is optional: without it an ImportError says what to do; with it and no
    # network, the download error says how to use local files.
    with pytest.raises((ImportError, RuntimeError), match="load_mnist_idx"):
        load_mnist_torchvision(tmp_path)


def test_binarized_mnist_from_shared_data(shared_data):
    data = load_binarized_mnist(shared_data / "binarized_mnist")
    assert data.train.shape == (50_000, 784) and data.valid.shape == (10_000, 784)
    assert set(data.valid[:100].unique().tolist()) == {0.0, 1.0}
