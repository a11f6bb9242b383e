"""Text corpora larger than memory: one pass for the vocabulary, then batches streamed from disk.

::

    vocab, n = scan_sentences(paths, max_size=10_000)          # one pass over the files
    stream = StreamingSentences(paths, vocab, batch_size=64)    # an IterableDataset of (B, T) batches
    fit(vae, DataLoader(stream, batch_size=None), elbo=full_data_elbo(TraceMeanField_ELBO(), n))

Files hold one sentence per line, tokens separated by whitespace (the Penn Treebank format);
empty lines are skipped. Only ``buffer_batches * batch_size`` sentences are in memory at a
time: the buffer is sorted by length so batches carry little padding (bucketing), and the
order of its batches is shuffled with a generator seeded by ``(seed, epoch)``. ``fit`` calls
:meth:`StreamingSentences.set_epoch` each epoch, so a resumed run sees the same batches.

With :func:`pyro_lvm.scaling.full_data_elbo` each batch's loss is an unbiased estimate of
the whole corpus's negative ELBO, which keeps global latents weighted right.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
from torch.utils.data import IterableDataset

from .text import BOS_ID, EOS_ID, PAD_ID, SPECIALS, Vocabulary


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


class StreamingSentences(IterableDataset):
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
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(buffer_batches, int) or buffer_batches < 1:
            raise ValueError(f"buffer_batches must be a positive int, got {buffer_batches!r}")
        if max_len is not None and (not isinstance(max_len, int) or max_len < 1):
            raise ValueError(f"max_len must be a positive int or None, got {max_len!r}")
        if list(vocab.itos[:len(SPECIALS)]) != list(SPECIALS):
            raise ValueError("the vocabulary does not start with the special tokens <pad> <unk> <bos> <eos>")
        self.paths, self.vocab = _paths(paths), vocab
        self.batch_size, self.max_len, self.buffer_batches = batch_size, max_len, buffer_batches
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.truncated = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self, buffer: list[list[int]], g: torch.Generator) -> Iterator[torch.Tensor]:
        buffer.sort(key=len)
        chunks = [buffer[i:i + self.batch_size] for i in range(0, len(buffer), self.batch_size)]
        order = torch.randperm(len(chunks), generator=g).tolist() if self.shuffle else range(len(chunks))
        for i in order:
            rows = chunks[i]
            out = torch.full((len(rows), max(map(len, rows))), PAD_ID, dtype=torch.long)
            for j, r in enumerate(rows):
                out[j, :len(r)] = torch.tensor(r)
            yield out

    def __iter__(self) -> Iterator[torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.truncated = 0
        buffer: list[list[int]] = []
        for tokens in _lines(self.paths):
            if self.max_len is not None and len(tokens) > self.max_len:
                tokens = tokens[:self.max_len]
                self.truncated += 1
            buffer.append([BOS_ID, *self.vocab.encode(tokens), EOS_ID])
            if len(buffer) == self.buffer_batches * self.batch_size:
                yield from self._batches(buffer, g)
                buffer = []
        if buffer:
            yield from self._batches(buffer, g)


def iter_sentences(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> Iterable[list[str]]:
    """The token lists of the files, lazily (empty lines skipped)."""
    return _lines(_paths(paths))
