"""Data loaders. Each returns tensors ready for :func:`pyro_lvm.fit`; files are given by path."""

from .images import (ImageData, load_binarized_mnist, load_digits_data, load_images, load_mnist_idx,
                     load_mnist_torchvision, split_indices)

__all__ = ["ImageData", "load_binarized_mnist", "load_digits_data", "load_images", "load_mnist_idx",
           "load_mnist_torchvision", "split_indices"]
