"""Part-of-speech tagged text: the MASC corpus as NLTK ships it (``masc_tagged.zip``).

Each ``.txt`` file under ``written/`` and ``spoken/`` holds one sentence a line as
``word_TAG`` tokens (Penn Treebank tags). Words feed the model; tags are kept for evaluation.

    corpus = load_masc_tagged("../shared/data/masc_tagged.zip")
    x, mask = corpus.padded(corpus.sentences[:100])   # (N, T) word ids, (N, T) bool
"""

from __future__ import annotations

import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .reading import reading

UNK = "<unk>"


@dataclass
class TaggedCorpus:
    """Sentences as word-id and tag-id lists, with their vocabularies."""

    words: list[list[int]]
    tags: list[list[int]]
    vocab: list[str]
    tagset: list[str]
    word_index: dict[str, int] = field(repr=False, default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return sum(len(s) for s in self.words)

    def summary(self) -> dict:
        return {"sentences": len(self.words), "tokens": self.num_tokens, "vocab": len(self.vocab),
                "tags": len(self.tagset)}

    def batches(self, batch_tokens: int = 20000) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Sentences sorted by length and cut into ``(words (B, T), mask (B, T), tags (B, T))``
        batches of about ``batch_tokens`` padded tokens (little padding, few forward steps)."""
        order = sorted(range(len(self.words)), key=lambda i: len(self.words[i]))
        out, start = [], 0
        while start < len(order):
            length = len(self.words[order[start]])
            stop = start + 1
            while stop < len(order) and (stop - start + 1) * len(self.words[order[stop]]) <= max(batch_tokens, length):
                stop += 1
            idx = order[start:stop]
            out.append((*pad_ids([self.words[i] for i in idx]), pad_ids([self.tags[i] for i in idx])[0]))
            start = stop
        return out


def pad_ids(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists of ids -> ``(ids (N, T) long, zero-padded, mask (N, T) bool)``; refuses empty sequences."""
    for i, s in enumerate(seqs):
        if len(s) == 0:
            raise ValueError(f"sequence {i} has length 0")
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(s, dtype=torch.long) for s in seqs], batch_first=True)
    return ids, torch.arange(ids.shape[1]) < lengths.unsqueeze(1)


def read_masc_sentences(path: str | Path) -> list[list[tuple[str, str]]]:
    """All sentences of the zip as lists of ``(word, tag)``, files in name order."""
    path = Path(path)
    if path.is_dir():
        path = path / "masc_tagged.zip"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass the path of masc_tagged.zip (NLTK's MASC tagged corpus)")
    sentences = []
    with reading(path, "a zip of word_TAG text files (NLTK's masc_tagged.zip)"), zipfile.ZipFile(path) as z:
        for name in sorted(n for n in z.namelist() if n.endswith(".txt") and "/categories" not in n):
            for line in z.read(name).decode("utf-8", errors="replace").splitlines():
                tokens = [tok.rpartition("_") for tok in line.split()]
                # A token without "_TAG" has no gold tag: skip it rather than invent one.
                sentence = [(w, t) for w, sep, t in tokens if sep and w and t]
                if sentence:
                    sentences.append(sentence)
    if not sentences:
        raise ValueError(f"{path} holds no word_TAG sentences")
    return sentences


_SUFFIXES = ("ing", "ed", "ly", "ion", "ies", "es", "s", "er", "est", "al", "ous", "ive", "able", "ible", "ment",
             "ness", "ity", "ic", "ful", "less", "ize", "ise", "ism", "ist", "an", "y")


def word_shape(word: str) -> str:
    """Spelling class of a (rare) word: ``<unk-...>`` from digits, punctuation, a capital
    first letter, a hyphen and the longest known suffix, e.g. ``"Reframing" -> "<unk-cap-ing>"``.
    Rare words share these classes instead of one ``<unk>``, so their emissions say something."""
    if any(ch.isdigit() for ch in word):
        return "<unk-num>"
    if not any(ch.isalpha() for ch in word):
        return "<unk-punct>"
    parts = ["<unk"]
    if word[0].isupper():
        parts.append("cap")
    if "-" in word:
        parts.append("hyph")
    lower = word.lower()
    suffix = next((x for x in sorted(_SUFFIXES, key=len, reverse=True) if lower.endswith(x) and len(lower) > len(x) + 2), "")
    if suffix:
        parts.append(suffix)
    return "-".join(parts) + ">"


def word_features(vocab: list[str], suffix_lengths: tuple[int, ...] = (1, 2, 3)) -> tuple[torch.Tensor, list[str]]:
    """Binary features of each word for a log-linear emission: ``(features (V, F) sparse COO,
    names (F,))``. Per word: its identity, its lowercased suffixes of ``suffix_lengths`` letters
    (words longer than the suffix only), initial capital, contains a digit, contains a hyphen, and
    a bias shared by all words (Berg-Kirkpatrick et al. 2010's basic set)."""
    if not vocab:
        raise ValueError("word_features needs a non-empty vocabulary")
    index: dict[str, int] = {}
    rows, cols = [], []

    def add(row: int, name: str) -> None:
        rows.append(row)
        cols.append(index.setdefault(name, len(index)))

    for i, word in enumerate(vocab):
        add(i, "bias")
        add(i, "word=" + word)
        lower = word.lower()
        for n in suffix_lengths:
            if len(lower) > n:
                add(i, f"suffix{n}=" + lower[-n:])
        if word[:1].isupper():
            add(i, "capital")
        if any(ch.isdigit() for ch in word):
            add(i, "digit")
        if "-" in word:
            add(i, "hyphen")
    values = torch.ones(len(rows))
    features = torch.sparse_coo_tensor(torch.tensor([rows, cols]), values, (len(vocab), len(index)),
                                       check_invariants=True).coalesce()
    return features, list(index)


def load_masc_tagged(path: str | Path, lowercase: bool = False, min_count: int = 1,
                     max_sentences: int | None = None, rare: str = "unk") -> TaggedCorpus:
    """MASC as a :class:`TaggedCorpus`. Words seen fewer than ``min_count`` times become ``<unk>``
    (``rare="unk"``) or their spelling class :func:`word_shape` (``rare="shape"``, computed
    before lowercasing)."""
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    if rare not in ("unk", "shape"):
        raise ValueError(f"rare must be 'unk' or 'shape', got {rare!r}")
    sentences = read_masc_sentences(path)[:max_sentences]
    norm = str.lower if lowercase else str
    counts = Counter(norm(w) for s in sentences for w, _ in s)
    kept = {w for w, c in counts.items() if c >= min_count}

    def token(w: str) -> str:
        n = norm(w)
        return n if n in kept else (word_shape(w) if rare == "shape" else UNK)

    vocab = sorted(kept | {token(w) for s in sentences for w, _ in s})
    word_index = {w: i for i, w in enumerate(vocab)}
    tagset = sorted({t for s in sentences for _, t in s})
    tag_index = {t: i for i, t in enumerate(tagset)}
    words = [[word_index[token(w)] for w, _ in s] for s in sentences]
    tags = [[tag_index[t] for _, t in s] for s in sentences]
    return TaggedCorpus(words, tags, vocab, tagset, word_index)
