"""Image data sets as float tensors ``(N, pixels)`` in [0, 1], with deterministic splits.

* :func:`load_digits_data`: scikit-learn's bundled 8x8 digits (1,797 images): the offline
  default, no download ever.
* :func:`load_binarized_mnist`: the standard statically binarized MNIST (Larochelle & Murray
  2011) from its ``.amat`` files (text, or MATLAB v5 as some mirrors ship them).
* :func:`load_mnist_idx`: MNIST from the official IDX files in a folder (``.gz`` or not).
* :func:`load_mnist_torchvision`: optional download through torchvision; offline it fails
  with a message that says how to use local files instead.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .reading import reading


@dataclass
class ImageData:
    """Train/valid/test splits, each ``(N, height * width)`` float32 in [0, 1]."""

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    image_shape: tuple[int, int]
    name: str
    train_labels: torch.Tensor | None = None
    valid_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None

    @property
    def x_dim(self) -> int:
        return self.image_shape[0] * self.image_shape[1]

    def summary(self) -> dict:
        return {"name": self.name, "image_shape": list(self.image_shape),
                "train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


def split_indices(n: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic shuffled train/valid/test index arrays for ``n`` items."""
    if n < 3:
        raise ValueError(f"need at least 3 datapoints to split into train/valid/test, got {n}")
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three positive numbers summing to 1, got {fractions}")
    order = np.random.RandomState(seed).permutation(n)
    n_train = max(1, int(round(fractions[0] * n)))
    n_valid = max(1, int(round(fractions[1] * n)))
    n_train = min(n_train, n - n_valid - 1)
    return order[:n_train], order[n_train:n_train + n_valid], order[n_train + n_valid:]


def _as_images(array: np.ndarray, what: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(array, dtype=np.float32))
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{what}: expected a non-empty (N, pixels) array, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what} contains NaN or inf values")
    if bool(((x < 0) | (x > 1)).any()):
        raise ValueError(f"{what}: pixel values must lie in [0, 1] (found min {float(x.min())}, max {float(x.max())})")
    return x


def load_digits_data(binarize: bool = True, seed: int = 0,
                     fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> ImageData:
    """scikit-learn's 8x8 digits scaled to [0, 1] (intensities 0..16 divided by 16).

    ``binarize=True`` thresholds at 0.5, giving binary images for a Bernoulli likelihood.
    The split is a fixed shuffle by ``seed`` (1,438 / 180 / 179 with the defaults).
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.data.astype(np.float32) / 16.0
    if binarize:
        x = (x > 0.5).astype(np.float32)
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    tr, va, te = split_indices(len(x), fractions, seed)
    x = _as_images(x, "digits")
    return ImageData(x[tr], x[va], x[te], (8, 8), "digits" + ("-binarized" if binarize else ""),
                     y[tr], y[va], y[te])


def _read_amat(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"binarized MNIST file not found: {path}")
    try:
        from scipy.io import loadmat

        return np.asarray(loadmat(str(path))["X"])
    except Exception:  # noqa: BLE001 - scipy raises its own MatReadError among others: not MATLAB, so text
        # The original files are whitespace-separated text, one image a line.
        with reading(path, "a binarized MNIST .amat file (whitespace-separated 0/1 text, or MATLAB v5)"):
            return np.loadtxt(path, dtype=np.float32, ndmin=2)


def load_binarized_mnist(folder: str | Path) -> ImageData:
    """Statically binarized MNIST from ``folder`` holding ``{train,valid[,test]}.amat``.

    Files may be named ``binarized_mnist_train.amat`` etc. as well. When there is no test
    file, ``test`` is the validation set (say so in reports: ``name`` ends in ``-valid-as-test``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"binarized MNIST folder not found: {folder}")

    def find(split: str) -> Path | None:
        for name in (f"{split}.amat", f"binarized_mnist_{split}.amat"):
            if (folder / name).is_file():
                return folder / name
        return None

    train_path, valid_path, test_path = find("train"), find("valid"), find("test")
    if train_path is None or valid_path is None:
        raise FileNotFoundError(f"{folder} must contain train.amat and valid.amat (binarized MNIST)")
    train = _as_images(_read_amat(train_path), str(train_path))
    valid = _as_images(_read_amat(valid_path), str(valid_path))
    for x, p in ((train, train_path), (valid, valid_path)):
        if x.shape[1] != 784:
            raise ValueError(f"{p}: expected 784 pixels per image, got {x.shape[1]}")
    if test_path is not None:
        test, name = _as_images(_read_amat(test_path), str(test_path)), "binarized-mnist"
    else:
        test, name = valid, "binarized-mnist-valid-as-test"
    return ImageData(train, valid, test, (28, 28), name)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with reading(path, "an MNIST IDX file"), opener(path, "rb") as f:
        magic = f.read(4)
        if len(magic) != 4 or magic[:2] != b"\x00\x00":
            raise ValueError(f"{path} is not an IDX file (bad magic number {magic!r})")
        dtype_code, ndim = magic[2], magic[3]
        if dtype_code != 0x08:
            raise ValueError(f"{path}: only unsigned-byte IDX files are supported (type code {dtype_code:#x})")
        shape = struct.unpack(f">{ndim}I", f.read(4 * ndim))
        data = np.frombuffer(f.read(), dtype=np.uint8).copy()  # writable, for torch
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but the file holds {data.size} values (truncated?)")
    return data.reshape(shape)


def load_mnist_idx(folder: str | Path, binarize: bool = False, valid_size: int = 10_000) -> ImageData:
    """MNIST from the official IDX files in ``folder`` (``train-images-idx3-ubyte[.gz]`` etc.).

    The last ``valid_size`` training images form the validation split (a fixed rule, so
    the split is deterministic). ``binarize=True`` thresholds intensities at 0.5.
    """
    folder = Path(folder)

    def find(stem: str) -> Path:
        for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
            if (folder / name).is_file():
                return folder / name
        raise FileNotFoundError(f"MNIST IDX file {stem}[.gz] not found in {folder}")

    x_train = _read_idx(find("train-images-idx3-ubyte")).reshape(-1, 784) / 255.0
    y_train = _read_idx(find("train-labels-idx1-ubyte"))
    x_test = _read_idx(find("t10k-images-idx3-ubyte")).reshape(-1, 784) / 255.0
    y_test = _read_idx(find("t10k-labels-idx1-ubyte"))
    if not 0 < valid_size < len(x_train):
        raise ValueError(f"valid_size must be between 1 and {len(x_train) - 1}, got {valid_size}")
    if binarize:
        x_train, x_test = (x_train > 0.5), (x_test > 0.5)
    x_train, x_test = _as_images(x_train, "MNIST train"), _as_images(x_test, "MNIST test")
    y_train_t, y_test_t = torch.as_tensor(y_train, dtype=torch.long), torch.as_tensor(y_test, dtype=torch.long)
    cut = len(x_train) - valid_size
    return ImageData(x_train[:cut], x_train[cut:], x_test, (28, 28), "mnist" + ("-binarized" if binarize else ""),
                     y_train_t[:cut], y_train_t[cut:], y_test_t)


def load_mnist_torchvision(root: str | Path, binarize: bool = False, download: bool = True) -> ImageData:
    """MNIST through ``torchvision.datasets.MNIST`` (downloads into ``root`` if allowed).

    Raises ``ImportError`` when torchvision is missing and ``RuntimeError`` when the download
    fails (e.g. no network), saying how to load local files instead.
    """
    try:
        from torchvision.datasets import MNIST
    except ImportError as e:
        raise ImportError(
            "torchvision is not installed (pip install 'pyro_lvm[vision]'); without it, use "
            "load_mnist_idx(folder) on the official IDX files or load_binarized_mnist(folder)"
        ) from e
    try:
        MNIST(str(root), train=True, download=download)
        MNIST(str(root), train=False, download=download)
    except Exception as e:  # torchvision raises RuntimeError/URLError/OSError depending on version
        raise RuntimeError(
            f"could not get MNIST into {root} ({type(e).__name__}: {e}). Without a network, copy the "
            "four IDX files there and call load_mnist_idx(folder), or use load_digits_data() which ships offline."
        ) from e
    return load_mnist_idx(Path(root) / "MNIST" / "raw", binarize=binarize)


def load_images(name: str, path: str | Path | None = None, binarize: bool = True, seed: int = 0) -> ImageData:
    """Load a data set by name: ``"digits"`` (offline), ``"binarized-mnist"`` or ``"mnist"`` (need ``path``)."""
    if name == "digits":
        return load_digits_data(binarize=binarize, seed=seed)
    if name in ("binarized-mnist", "mnist") and path is None:
        raise ValueError(f"data set {name!r} needs a path (--data-path) to its files")
    if name == "binarized-mnist":
        return load_binarized_mnist(path)  # type: ignore[arg-type]
    if name == "mnist":
        return load_mnist_idx(path, binarize=binarize)  # type: ignore[arg-type]
    raise ValueError(f"unknown image data set {name!r}; choose 'digits', 'binarized-mnist' or 'mnist'")
