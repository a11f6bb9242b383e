"""Sentences as padded token tensors: tokenizer, vocabulary, readers, bucketing.

A corpus is a list of sentences, each a list of string tokens. :func:`encode_sentences`
turns it into one ``LongTensor (N, T)`` whose rows are ``<bos> w_1 ... w_n <eos> <pad> ...``;
``<pad>`` is id 0, so ``tokens != PAD`` is the mask of real positions. That tensor is the
batch the sentence models take (:mod:`pyro_lvm.models.text.sentence_vae`), and
:func:`bucket_loader` serves it in batches of similar lengths, trimmed of all-padding columns.

Readers:

* :func:`read_sentences`: one sentence per line, tokens separated by spaces (the format of
  Mikolov's Penn Treebank files, ``ptb.train.txt``).
* :func:`read_ptb`: the three PTB splits from ``ptb.zip`` or a folder (``__MACOSX/`` skipped).
* :func:`load_embedded_corpus`: the offline default, about 20,000 sentences of English
  Wikipedia taken from the article sample inside gensim's wheel (``pip install gensim``,
  the ``text`` extra), cleaned of wiki markup, split into sentences and cached.

Documented behaviour for awkward input:

* empty or whitespace-only lines are skipped (their count is in ``TextCorpus.skipped``);
* a corpus with no sentences left raises ``ValueError`` naming the file;
* tokens outside the vocabulary become ``<unk>`` (never an error);
* sentences longer than ``max_len`` tokens are truncated to ``max_len`` with one warning that
  counts them (``too_long="truncate"``), dropped (``"drop"``) or refused (``"error"``).
"""

from __future__ import annotations

import bz2
import collections
import json
import math
import os
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ..checkpoint import atomic_json_save, epoch_seed
from .images import split_indices
from .reading import reading
from ..validation import Integer, positive_int

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)

# Numbers with inner separators (1,987 / 3.5), words (with inner apostrophes/hyphens),
# or single punctuation marks.
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*(?!\w)|[^\W_]+(?:['\-][^\W_]+)*|[^\w\s]")
_NUMBER = re.compile(r"^[\d.,\-]*\d[\d.,\-]*$")


NUMBER = "N"  # what numbers read as (PTB's convention)


def tokenize(text: str, lower: bool = True, numbers: str | None = NUMBER) -> list[str]:
    """Split raw text into word and punctuation tokens.

    ``lower`` lower-cases; ``numbers`` replaces tokens made of digits (``1,987``, ``3.5``)
    by one symbol, as the Penn Treebank language-modelling data does with ``N``
    (``None`` keeps them).
    """
    if not isinstance(text, str):
        raise TypeError(f"tokenize expects a str, got {type(text).__name__}")
    if lower:
        text = text.lower()
    tokens = _TOKEN.findall(text)
    if numbers is not None:
        tokens = [numbers if _NUMBER.match(t) else t for t in tokens]
    return tokens


def tokenize_text(text: str) -> list[str]:
    """Tokens of a sentence typed by a user or taken from a tokenised corpus: as
    :func:`tokenize`, except that the number symbol ``N`` stays ``N`` (so ``"born in N ."``
    reads as the corpus wrote it, not with the word ``n``)."""
    return [t if t == NUMBER else t.lower() for t in tokenize(text, lower=False)]


class Vocabulary:
    """Token <-> id map with the four special tokens at ids 0-3 (``<pad> <unk> <bos> <eos>``).

    Build it from training sentences with :meth:`build`; words rarer than ``min_freq`` or
    beyond the ``max_size`` most frequent ones are left out and read as ``<unk>``.
    """

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if tuple(tokens[:4]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}, got {tuple(tokens[:4])}")
        if len(set(tokens)) != len(tokens):
            dup = [t for t, c in collections.Counter(tokens).items() if c > 1]
            raise ValueError(f"duplicate tokens in vocabulary: {dup[:5]}")
        self.itos = tokens
        self.stoi = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], max_size: int | None = None, min_freq: int = 1) -> "Vocabulary":
        """Most frequent tokens first (ties alphabetically, so the result is deterministic).

        ``max_size`` counts the special tokens too. A literal ``<unk>`` in the data (PTB has
        them) maps to the special id, it is not a word of its own.
        """
        return cls.from_counts(collections.Counter(t for s in sentences for t in s), max_size, min_freq)

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], max_size: int | None = None, min_freq: int = 1) -> "Vocabulary":
        """The vocabulary of token counts (what :meth:`build` counts; a stream can count them itself)."""
        Integer(len(SPECIALS) + 1, optional=True)("max_size (it includes the 4 special tokens)", max_size)
        positive_int("min_freq", min_freq)
        counts = {w: c for w, c in counts.items() if w not in SPECIALS}
        words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[:max_size - len(SPECIALS)]
        if not words:
            raise ValueError(f"no token occurs at least min_freq={min_freq} times: the vocabulary would be empty")
        return cls(list(SPECIALS) + words)

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Ids of ``tokens``; unknown tokens become ``UNK_ID``."""
        return [self.stoi.get(t, UNK_ID) for t in tokens]

    def decode(self, ids: Iterable[int], strip: bool = True) -> list[str]:
        """Tokens of ``ids``. ``strip``: drop ``<bos>``/``<pad>`` and stop at the first ``<eos>``."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.itos):
                raise ValueError(f"token id {i} is outside the vocabulary of {len(self.itos)}")
            if strip and i == EOS_ID:
                break
            if strip and i in (PAD_ID, BOS_ID):
                continue
            out.append(self.itos[i])
        return out

    def check_same(self, other: "Vocabulary", where: str = "checkpoint") -> None:
        """Raise ``ValueError`` unless ``other`` is this vocabulary, saying how they differ."""
        if self == other:
            return
        if len(self) != len(other):
            why = f"sizes differ: {len(self)} here vs {len(other)} in the {where}"
        else:
            i = next(i for i, (a, b) in enumerate(zip(self.itos, other.itos)) if a != b)
            why = f"id {i} is {self.itos[i]!r} here but {other.itos[i]!r} in the {where}"
        raise ValueError(f"vocabulary mismatch: {why}. Use the vocabulary saved with the {where} "
                         f"(Vocabulary.load) so token ids mean the same words.")

    def to_dict(self) -> dict:
        return {"format": "pyro_lvm.vocabulary/1", "tokens": self.itos}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocabulary":
        if not isinstance(d, dict) or d.get("format") != "pyro_lvm.vocabulary/1" or "tokens" not in d:
            raise ValueError("not a saved pyro_lvm vocabulary (expected format 'pyro_lvm.vocabulary/1')")
        return cls(d["tokens"])

    def save(self, path: str | os.PathLike) -> None:
        atomic_json_save(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no vocabulary file at {path}")
        with reading(path, "a vocabulary saved by pyro_lvm (JSON)"):
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


# ----------------------------------------------------------------------------- readers

@dataclass
class TextCorpus:
    """Tokenised sentences of the three splits, and how many empty lines were skipped."""

    train: list[list[str]]
    valid: list[list[str]]
    test: list[list[str]]
    name: str
    skipped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict:
        return {"name": self.name, **{s: len(getattr(self, s)) for s in ("train", "valid", "test")},
                "train_tokens": sum(len(s) for s in self.train), "skipped_empty_lines": self.skipped}

    def subset(self, n_train: int | None, n_eval: int | None = None) -> "TextCorpus":
        """First ``n_train`` training sentences and first ``n_eval`` of valid and test (quick runs)."""
        for name, n in (("n_train", n_train), ("n_eval", n_eval)):
            Integer(1, optional=True)(name, n)
        ev = n_eval if n_eval is not None else n_train
        return TextCorpus(self.train[:n_train], self.valid[:ev], self.test[:ev], self.name, dict(self.skipped))


def _split_lines(lines: Iterable[str], what: str) -> tuple[list[list[str]], int]:
    sentences, skipped = [], 0
    for line in lines:
        tokens = line.split()
        if tokens:
            sentences.append(tokens)
        else:
            skipped += 1
    if not sentences:
        raise ValueError(f"{what} holds no sentences (only empty lines or nothing at all)")
    return sentences, skipped


def read_sentences(path: str | os.PathLike) -> list[list[str]]:
    """One sentence per line, tokens separated by whitespace (PTB format); empty lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no text file at {path}")
    with reading(path, "a UTF-8 text file with one sentence per line"), open(path, encoding="utf-8") as f:
        return _split_lines(f, str(path))[0]


def read_ptb(path: str | os.PathLike) -> TextCorpus:
    """Penn Treebank (Mikolov's version) from ``ptb.zip`` or a folder holding ``ptb.{train,valid,test}.txt``."""
    path = Path(path)
    texts: dict[str, list[str]] = {}
    if path.is_file() and zipfile.is_zipfile(path):
        with reading(path, "a ptb.zip of UTF-8 text files"), zipfile.ZipFile(path) as z:
            for split in ("train", "valid", "test"):
                names = [n for n in z.namelist() if n.endswith(f"ptb.{split}.txt") and not n.startswith("__MACOSX/")
                         and "/._" not in n]
                if not names:
                    raise FileNotFoundError(f"{path} has no ptb.{split}.txt (members: {z.namelist()[:8]})")
                texts[split] = z.read(names[0]).decode("utf-8").splitlines()
    elif path.is_dir():
        for split in ("train", "valid", "test"):
            f = path / f"ptb.{split}.txt"
            if not f.is_file():
                raise FileNotFoundError(f"{f} not found")
            with reading(f, "a UTF-8 text file"):
                texts[split] = f.read_text(encoding="utf-8").splitlines()
    else:
        raise FileNotFoundError(f"{path} is neither ptb.zip nor a folder with ptb.{{train,valid,test}}.txt")
    parts, skipped = {}, {}
    for split, lines in texts.items():
        parts[split], skipped[split] = _split_lines(lines, f"{path}:ptb.{split}.txt")
    return TextCorpus(parts["train"], parts["valid"], parts["test"], "ptb", skipped)


# ----------------------------------------------------------------------------- embedded corpus

EMBEDDED_VERSION = 2
_WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
# The showcase's text (issue 21): with every token seen at least 3 times in the sample and at
# most 30 tokens, a vocabulary of the training split's words leaves < 5% of test tokens <unk>.
SIMPLE = {"min_count": 3, "max_tokens": 30}
_MARKUP = re.compile(r"'{2,}|\[\[|\]\]|<[^>]*>|&[a-z]+;")


def _cache_dir() -> Path:
    root = os.environ.get("PYRO_LVM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "pyro_lvm")
    return Path(root)


def _wiki_sentences(source: Path, min_tokens: int, max_tokens: int) -> list[str]:
    """Article text -> sentences (space-joined tokens), in document order."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    out = []
    with bz2.open(source) as f:
        for _title, text, _pid in extract_pages(f):
            if text.lstrip().lower().startswith("#redirect"):
                continue
            for para in filter_wiki(text).split("\n"):
                para = _MARKUP.sub("", para).strip()
                # Lists, tables, captions and headings are not prose.
                if len(para) < 40 or para[0] in "*#|!{=:;" or para.lower().startswith(("file:", "image:", "category:")):
                    continue
                for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'(])", para):
                    if not s.rstrip().endswith((".", "!", "?")):
                        continue
                    tokens = tokenize(s)
                    words = sum(t.isalpha() for t in tokens)
                    if min_tokens <= len(tokens) <= max_tokens and words >= 0.7 * len(tokens):
                        out.append(" ".join(tokens))
    return out


def embedded_sentences(cache: bool = True) -> list[list[str]]:
    """Every prepared sentence of the Wikipedia sample, in document order (cached as text)."""
    try:
        from gensim.test.utils import datapath
    except ImportError as e:
        raise ImportError("the embedded text corpus comes from gensim's wheel: pip install 'pyro_lvm[text]' "
                          "(or pip install gensim), or pass a corpus file/ptb.zip instead") from e
    source = Path(datapath(_WIKI_FILE))
    if not source.is_file():
        raise FileNotFoundError(f"gensim is installed but its Wikipedia sample is missing at {source}")
    cache_file = _cache_dir() / f"wiki_sentences_v{EMBEDDED_VERSION}_{source.stat().st_size}.txt"
    if cache and cache_file.is_file():
        lines = cache_file.read_text(encoding="utf-8").splitlines()
    else:
        lines = _wiki_sentences(source, min_tokens=5, max_tokens=50)
        if cache:
            try:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
                os.replace(tmp, cache_file)
            except OSError as e:  # a read-only home should not stop training
                warnings.warn(f"could not cache the prepared corpus at {cache_file}: {e}")
    return [line.split() for line in lines if line.strip()]


def simple_sentences(sentences: Sequence[Sequence[str]], min_count: int = SIMPLE["min_count"],
                     max_tokens: int = SIMPLE["max_tokens"]) -> list[list[str]]:
    """The sentences of at most ``max_tokens`` tokens whose every token occurs at least
    ``min_count`` times in ``sentences`` (order kept).

    Counting over the whole text, before any split, makes the choice independent of the
    split; it drops the sentences that carry a rare name or term, which a vocabulary fitted to
    a small training split could only read as ``<unk>``.
    """
    for name, v in (("min_count", min_count), ("max_tokens", max_tokens)):
        positive_int(name, v)
    counts = collections.Counter(t for s in sentences for t in s)
    return [list(s) for s in sentences if len(s) <= max_tokens and all(counts[t] >= min_count for t in s)]


def load_embedded_corpus(seed: int = 0, cache: bool = True, simple: bool = False) -> TextCorpus:
    """English Wikipedia sentences from gensim's test data, split 80/10/10 deterministically.

    Needs ``gensim`` (``pip install pyro_lvm[text]``), never the network. Sentences of 5-50
    tokens that are mostly words are kept; the prepared text is cached under
    ``$PYRO_LVM_CACHE`` (default ``~/.cache/pyro_lvm``) so later loads take milliseconds.
    ``simple=True`` keeps only :func:`simple_sentences` (short, no rare word) before splitting.
    """
    sentences = embedded_sentences(cache)
    name = "wikipedia-gensim-sample"
    if simple:
        sentences, name = simple_sentences(sentences), name + "-simple"
    tr, va, te = split_indices(len(sentences), seed=seed)
    pick = lambda idx: [sentences[i] for i in sorted(idx)]  # noqa: E731 (keep document order inside a split)
    return TextCorpus(pick(tr), pick(va), pick(te), name)


EMBEDDED = {"embedded": False, "embedded-simple": True}  # corpus name -> simple


def load_corpus(source: str | None, seed: int = 0) -> TextCorpus:
    """``None``/``"embedded"``: the Wikipedia sample; ``"embedded-simple"``: its short sentences
    without rare words (:func:`simple_sentences`); a ``ptb.zip``/PTB folder; or one text file
    (one sentence per line), split 80/10/10."""
    if source is None or source in EMBEDDED:
        return load_embedded_corpus(seed, simple=EMBEDDED.get(source, False))
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"corpus {source!r} does not exist: give {' or '.join(map(repr, EMBEDDED))}, "
                                "a ptb.zip or PTB folder, or a text file with one sentence per line")
    if path.is_dir() or (path.is_file() and zipfile.is_zipfile(path)):
        return read_ptb(path)
    sentences = read_sentences(path)
    tr, va, te = split_indices(len(sentences), seed=seed)
    return TextCorpus([sentences[i] for i in tr], [sentences[i] for i in va], [sentences[i] for i in te], path.name)


# ----------------------------------------------------------------------------- tensors

def encode_sentences(sentences: Sequence[Sequence[str]], vocab: Vocabulary, max_len: int | None = None,
                     too_long: str = "truncate") -> torch.Tensor:
    """``(N, T)`` LongTensor of ``<bos> ids <eos>`` rows padded with ``PAD_ID``.

    ``T = 2 + longest kept sentence``. ``max_len`` limits the words per sentence (without
    ``<bos>``/``<eos>``); longer ones are handled by ``too_long`` (see the module docstring).
    Out-of-vocabulary tokens become ``<unk>``.
    """
    if too_long not in ("truncate", "drop", "error"):
        raise ValueError(f"too_long must be 'truncate', 'drop' or 'error', got {too_long!r}")
    Integer(1, optional=True)("max_len", max_len)
    if isinstance(sentences, str):
        raise TypeError("encode_sentences expects a list of token lists, got one str (tokenize it first)")
    rows, n_long = [], 0
    for i, s in enumerate(sentences):
        if isinstance(s, str):
            raise TypeError(f"sentence {i} is a str; expected a list of tokens (use tokenize())")
        if len(s) == 0:
            raise ValueError(f"sentence {i} is empty; a sentence needs at least one token")
        if max_len is not None and len(s) > max_len:
            n_long += 1
            if too_long == "error":
                raise ValueError(f"sentence {i} has {len(s)} tokens, more than max_len={max_len}")
            if too_long == "drop":
                continue
            s = s[:max_len]
        rows.append([BOS_ID, *vocab.encode(s), EOS_ID])
    if n_long and too_long == "truncate":
        warnings.warn(f"{n_long} of {len(sentences)} sentences were longer than max_len={max_len} tokens and were truncated")
    if not rows:
        raise ValueError("no sentences to encode" + (f" ({n_long} dropped as longer than max_len={max_len})" if n_long else ""))
    out = torch.full((len(rows), max(map(len, rows))), PAD_ID, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r)
    return out


def lengths_of(tokens: torch.Tensor) -> torch.Tensor:
    """Number of real positions (``<bos>`` and ``<eos>`` included) per row: ``(N, T) -> (N,)``."""
    return (tokens != PAD_ID).sum(-1)


def trim(tokens: torch.Tensor) -> torch.Tensor:
    """Drop trailing columns that are padding in every row."""
    return tokens[:, :max(int(lengths_of(tokens).max()), 1)] if tokens.numel() else tokens


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of sentences of similar length, in random order.

    Indices are sorted by length (ties broken at random), cut into batches, and the batches
    shuffled; with ``(seed, epoch)`` fixing the randomness. :meth:`set_epoch` is called by
    :class:`BucketEpoch` so a resumed ``fit`` sees the same batches as an uninterrupted one.
    """

    def __init__(self, lengths: torch.Tensor, batch_size: int, shuffle: bool = True, seed: int = 0):
        positive_int("batch_size", batch_size)
        self.lengths = np.asarray(lengths)
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.RandomState(epoch_seed(self.seed, self.epoch))
        n = len(self.lengths)
        tiebreak = rng.permutation(n) if self.shuffle else np.arange(n)
        order = np.lexsort((tiebreak, self.lengths))
        batches = [order[i:i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return iter(batches)

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


class _Rows(torch.utils.data.Dataset):
    def __init__(self, tokens: torch.Tensor):
        self.tokens = tokens

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.tokens[i]


def _collate(rows: list[torch.Tensor]) -> torch.Tensor:
    return trim(torch.stack(rows))


def bucket_loader(tokens: torch.Tensor, batch_size: int, shuffle: bool = True, seed: int = 0) -> DataLoader:
    """DataLoader of ``(B, T_batch)`` token batches bucketed by length and trimmed of padding."""
    if not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.long or tokens.dim() != 2:
        raise TypeError(f"tokens must be a (N, T) LongTensor from encode_sentences, got {getattr(tokens, 'dtype', type(tokens))}")
    if len(tokens) == 0:
        raise ValueError("no sentences to load (0 rows)")
    sampler = BucketBatchSampler(lengths_of(tokens), batch_size, shuffle=shuffle, seed=seed)
    return DataLoader(_Rows(tokens), batch_sampler=sampler, collate_fn=_collate)


def count_tokens(tokens: torch.Tensor) -> int:
    """Predicted positions in a token tensor: words plus one ``<eos>`` per sentence (not ``<bos>``)."""
    return int((lengths_of(tokens) - 1).sum())


def unk_rate(tokens: torch.Tensor) -> float:
    """Share of the words of ``tokens (N, T)`` (not ``<bos>``, ``<eos>``, ``<pad>``) that are ``<unk>``."""
    words = (tokens != PAD_ID) & (tokens != BOS_ID) & (tokens != EOS_ID)
    return int((tokens == UNK_ID).sum()) / max(int(words.sum()), 1)
