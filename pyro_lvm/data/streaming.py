"""Text corpora larger than memory: one pass for the vocabulary, then batches streamed from disk.

Sentences (for sequence models) and bags of words (for topic models), each in two steps:
:func:`scan_sentences` / :func:`scan_documents` count in one pass, and
:class:`StreamingSentences` / :class:`StreamingBagOfWords` yield batches.

::

    vocab, n = scan_sentences(paths, max_size=10_000)          # one pass over the files
    stream = StreamingSentences(paths, vocab, batch_size=64)    # an IterableDataset of (B, T) batches
    fit(vae, DataLoader(stream, batch_size=None), elbo=full_data_elbo(TraceMeanField_ELBO(), n))

Files hold one sentence per line, tokens separated by whitespace (the Penn Treebank format);
empty lines are skipped. Only ``buffer_batches * batch_size`` sentences are in memory at a
time: the buffer is sorted by length so batches carry little padding (bucketing), and the
order of its batches is shuffled with a generator seeded by ``(seed, epoch)``. ``fit`` calls
:meth:`StreamingSentences.set_epoch` each epoch, so a resumed run sees the same batches.

With :func:`pyro_lvm.infer.scaling.full_data_elbo` each batch's loss is an unbiased estimate of
the whole corpus's negative ELBO, which keeps global latents weighted right.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
from torch.utils.data import IterableDataset

from ..checkpoint import epoch_generator
from .bow import resolve_stop_words
from .text import BOS_ID, EOS_ID, PAD_ID, SPECIALS, Vocabulary
from ..validation import Integer, positive_int


def _paths(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise ValueError("no files given")
    out = [Path(p) for p in items]
    for p in out:
        if not p.is_file():
            raise FileNotFoundError(f"no text file at {p}")
    return out


def _lines(paths: list[Path]) -> Iterator[list[str]]:
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                tokens = line.split()
                if tokens:
                    yield tokens


def scan_sentences(paths: str | os.PathLike | Sequence[str | os.PathLike], max_size: int | None = None,
                   min_freq: int = 1) -> tuple[Vocabulary, int]:
    """``(vocabulary, number of sentences)`` from one pass over the files (counts, not text, in memory)."""
    files = _paths(paths)
    counts: collections.Counter[str] = collections.Counter()
    n = 0
    for tokens in _lines(files):
        counts.update(tokens)
        n += 1
    if n == 0:
        raise ValueError(f"{', '.join(map(str, files))} hold no sentences (only empty lines or nothing at all)")
    return Vocabulary.from_counts(counts, max_size=max_size, min_freq=min_freq), n


class _BufferedStream(IterableDataset):
    """Reads items lazily, holds ``buffer_batches * batch_size`` of them, and yields the
    buffer's batches in an order seeded by ``(seed, epoch)``. Subclasses give ``_items()``
    (the encoded items of one pass) and ``_batches(buffer, generator)``."""

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], batch_size: int,
                 buffer_batches: int, shuffle: bool, seed: int):
        batch_size, buffer_batches = positive_int("batch_size", batch_size), positive_int("buffer_batches", buffer_batches)
        self.paths = _paths(paths)
        self.batch_size, self.buffer_batches = batch_size, buffer_batches
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self, n: int, g: torch.Generator) -> Sequence[int]:
        return torch.randperm(n, generator=g).tolist() if self.shuffle else range(n)

    def _items(self) -> Iterator[list[int]]:
        raise NotImplementedError

    def _batches(self, buffer: list[list[int]], g: torch.Generator) -> Iterator[torch.Tensor]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[torch.Tensor]:
        g = epoch_generator(self.seed, self.epoch)
        buffer: list[list[int]] = []
        for item in self._items():
            buffer.append(item)
            if len(buffer) == self.buffer_batches * self.batch_size:
                yield from self._batches(buffer, g)
                buffer = []
        if buffer:
            yield from self._batches(buffer, g)


class StreamingSentences(_BufferedStream):
    """Padded ``(B, T)`` LongTensor batches of ``<bos> ids <eos>`` rows, read lazily from files.

    Args:
        paths: one or more text files, one sentence per line.
        vocab: the :class:`~pyro_lvm.data.text.Vocabulary` (e.g. from :func:`scan_sentences`);
            unknown words become ``<unk>``.
        batch_size: sentences per batch (the last batch of a buffer may be smaller).
        max_len: words kept per sentence; longer sentences are cut (the count is in
            ``truncated`` after an epoch).
        buffer_batches: batches' worth of sentences held at once for bucketing and shuffling.
        shuffle, seed: shuffle batch order within each buffer, seeded by ``(seed, epoch)``.
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], vocab: Vocabulary, batch_size: int = 64,
                 max_len: int | None = None, buffer_batches: int = 100, shuffle: bool = True, seed: int = 0):
        super().__init__(paths, batch_size, buffer_batches, shuffle, seed)
        Integer(1, optional=True)("max_len", max_len)
        if list(vocab.itos[:len(SPECIALS)]) != list(SPECIALS):
            raise ValueError("the vocabulary does not start with the special tokens <pad> <unk> <bos> <eos>")
        self.vocab, self.max_len = vocab, max_len
        self.truncated = 0

    def _batches(self, buffer: list[list[int]], g: torch.Generator) -> Iterator[torch.Tensor]:
        buffer.sort(key=len)  # bucketing: similar lengths share a batch
        chunks = [buffer[i:i + self.batch_size] for i in range(0, len(buffer), self.batch_size)]
        for i in self._order(len(chunks), g):
            rows = chunks[i]
            out = torch.full((len(rows), max(map(len, rows))), PAD_ID, dtype=torch.long)
            for j, r in enumerate(rows):
                out[j, :len(r)] = torch.tensor(r)
            yield out

    def _items(self) -> Iterator[list[int]]:
        self.truncated = 0
        for tokens in _lines(self.paths):
            if self.max_len is not None and len(tokens) > self.max_len:
                tokens = tokens[:self.max_len]
                self.truncated += 1
            yield [BOS_ID, *self.vocab.encode(tokens), EOS_ID]


# ----------------------------------------------------------------------------- bags of words

def _documents(paths: list[Path], stop: Iterable[str] | None, min_len: int) -> Iterator[list[str]]:
    from .bow import tokenize

    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.strip():
                    yield tokenize(line, min_len=min_len, stop_words=stop)


def scan_documents(paths: str | os.PathLike | Sequence[str | os.PathLike], min_df: int = 2, max_df: float = 0.5,
                   max_vocab: int | None = None, stop_words: Iterable[str] | None | str = "english",
                   min_len: int = 3) -> tuple[list[str], int]:
    """``(vocabulary, number of documents)`` from one pass over files of one document per line.

    Only document frequencies are held in memory; the cut-offs are those of
    :func:`pyro_lvm.data.bow.build_vocabulary`, so the result equals the in-memory pipeline's.
    """
    from .bow import vocabulary_from_document_frequencies

    files = _paths(paths)
    df: collections.Counter[str] = collections.Counter()
    n = 0
    for doc in _documents(files, resolve_stop_words(stop_words), min_len):
        df.update(set(doc))
        n += 1
    if n == 0:
        raise ValueError(f"{', '.join(map(str, files))} hold no documents (only blank lines or nothing at all)")
    return vocabulary_from_document_frequencies(df, n, min_df, max_df, max_vocab), n


class StreamingBagOfWords(_BufferedStream):
    """``(B, V)`` float count batches of documents read lazily, one document per line.

    Documents without a vocabulary word are skipped (``dropped`` counts them after an epoch).
    ``buffer_batches * batch_size`` documents are held at a time; their order is shuffled
    with a generator seeded by ``(seed, epoch)`` (``fit`` calls :meth:`set_epoch`).
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], vocab: Sequence[str],
                 batch_size: int = 200, buffer_batches: int = 50, shuffle: bool = True, seed: int = 0,
                 stop_words: Iterable[str] | None | str = "english", min_len: int = 3):
        super().__init__(paths, batch_size, buffer_batches, shuffle, seed)
        if not vocab:
            raise ValueError("the vocabulary is empty")
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.stop, self.min_len = resolve_stop_words(stop_words), min_len
        self.dropped = 0

    def _batches(self, rows: list[list[int]], g: torch.Generator) -> Iterator[torch.Tensor]:
        rows = [rows[i] for i in self._order(len(rows), g)]
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            counts = torch.zeros(len(chunk), len(self.vocab))
            for d, ids in enumerate(chunk):
                counts[d].index_add_(0, torch.tensor(ids), torch.ones(len(ids)))
            yield counts

    def _items(self) -> Iterator[list[int]]:
        self.dropped = 0
        for doc in _documents(self.paths, self.stop, self.min_len):
            ids = [self.index[w] for w in doc if w in self.index]
            if ids:
                yield ids
            else:
                self.dropped += 1
