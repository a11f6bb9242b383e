"""Data loaders. Each returns tensors ready for :func:`pyro_lvm.fit`; files are given by path."""

from .bow import BowCorpus, load_lee_background, load_nvdm
from .images import (ImageData, load_binarized_mnist, load_digits_data, load_images, load_mnist_idx,
                     load_mnist_torchvision, split_indices)
from .music import MusicData, load_jsb_pickle, load_music21_chorales, pad_rolls
from .tagged_text import TaggedCorpus, load_tagged_corpus, toy_corpus
from .text import TextCorpus, Vocabulary, bucket_loader, encode_sentences, load_corpus

__all__ = ["BowCorpus", "ImageData", "MusicData", "TaggedCorpus", "TextCorpus", "Vocabulary", "bucket_loader",
           "encode_sentences", "load_binarized_mnist", "load_corpus", "load_digits_data", "load_images",
           "load_jsb_pickle", "load_lee_background", "load_mnist_idx", "load_mnist_torchvision",
           "load_music21_chorales", "load_nvdm", "load_tagged_corpus", "pad_rolls", "split_indices", "toy_corpus"]
