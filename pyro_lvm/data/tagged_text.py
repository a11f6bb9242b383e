"""Part-of-speech tagged text in the formats users have. Words feed the model; tags are kept
for evaluation only.

* MASC as NLTK ships it (``masc_tagged.zip``): each ``.txt`` file under ``written/`` and
  ``spoken/`` holds one sentence a line as ``word_TAG`` tokens (:func:`read_masc_sentences`);
* CoNLL-U (Universal Dependencies), the UPOS or the XPOS column (:func:`read_conllu`);
* ``word/TAG`` text in the Penn Treebank ``.pos`` style: ``[ ]`` chunk brackets and ``-NONE-``
  traces removed, ``\\/`` unescaped, the first of ``NN|JJ`` kept (:func:`read_slash_tagged`).

    corpus = load_tagged_corpus("en_ewt-ud-train.conllu", tag_column="xpos")
    x, mask, tags = corpus.batches()[0]     # (B, T) word ids, (B, T) bool, (B, T) tag ids
"""

from __future__ import annotations

import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .reading import reading
from ..validation import positive_int

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


CONLLU_COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")


def read_conllu(path: str | Path, tag_column: str = "upos") -> list[list[tuple[str, str]]]:
    """Sentences of a CoNLL-U file as lists of ``(FORM, tag)``, the tag from column
    ``tag_column`` (``"upos"`` or ``"xpos"``). Comment lines and the extra lines of multiword
    tokens (``3-4``) and empty nodes (``5.1``) are skipped; a line without 10 tab-separated
    columns is an error naming the line."""
    if tag_column not in ("upos", "xpos"):
        raise ValueError(f"tag_column must be 'upos' or 'xpos' (CoNLL-U columns {', '.join(CONLLU_COLUMNS)}), "
                         f"got {tag_column!r}")
    column = CONLLU_COLUMNS.index(tag_column)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CoNLL-U file at {path}")
    sentences, current, missing = [], [], 0
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                if current:
                    sentences.append(current)
                current = []
                continue
            if line.startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) != 10:
                raise ValueError(f"{path}:{number}: a CoNLL-U token line has 10 tab-separated columns, "
                                 f"this one has {len(fields)}: {line[:60]!r}")
            if "-" in fields[0] or "." in fields[0]:
                continue  # multiword token range or empty node: the words are on their own lines
            if not fields[0].isdigit():
                raise ValueError(f"{path}:{number}: the ID column must be a word index, got {fields[0]!r}")
            if fields[column] == "_":
                missing += 1
            current.append((fields[1], fields[column]))
    if current:
        sentences.append(current)
    if not sentences:
        raise ValueError(f"{path} holds no CoNLL-U sentences")
    tokens = sum(map(len, sentences))
    if missing == tokens:
        raise ValueError(f"{path} has no {tag_column.upper()} tags (the column is '_' throughout); "
                         f"use tag_column={'upos' if tag_column == 'xpos' else 'xpos'!r}")
    return sentences


_SEPARATOR = re.compile(r"^=+$")
_SLASH_TOKEN = re.compile(r"^(.+)(?<!\\)/([^/]+)$")  # the last unescaped slash splits word from tag


def read_slash_tagged(path: str | Path, one_per_line: bool = False) -> list[list[tuple[str, str]]]:
    """``word/TAG`` text as sentences of ``(word, tag)``: the Penn Treebank ``.pos`` style, where
    a sentence runs over several lines until a blank or ``=====`` line (``one_per_line=True``: each
    line is a sentence). ``[`` / ``]`` chunk brackets and ``-NONE-`` traces are dropped, ``\\/``
    in a word is a slash, and of alternative tags ``VBN|JJ`` the first is kept. A token without a
    ``/TAG`` is an error naming the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no word/TAG file at {path}")
    sentences, current = [], []

    def close():
        nonlocal current
        if current:
            sentences.append(current)
        current = []

    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            stripped = line.strip()
            if not stripped or _SEPARATOR.match(stripped):
                close()
                continue
            for token in stripped.split():
                if token in ("[", "]"):
                    continue
                match = _SLASH_TOKEN.match(token)
                if match is None:
                    raise ValueError(f"{path}:{number}: token {token!r} is not word/TAG")
                word, tag = match.groups()
                if tag == "-NONE-":
                    continue  # an empty element (trace) of the treebank, not a word
                current.append((word.replace("\\/", "/"), tag.split("|")[0]))
            if one_per_line:
                close()
    close()
    if not sentences:
        raise ValueError(f"{path} holds no word/TAG sentences")
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
    """MASC as a :class:`TaggedCorpus` (see :func:`corpus_from_sentences` for the options)."""
    return corpus_from_sentences(read_masc_sentences(path), lowercase, min_count, max_sentences, rare)


def read_tagged(path: str | Path, format: str = "auto", tag_column: str = "upos",
                one_per_line: bool = False) -> list[list[tuple[str, str]]]:
    """Sentences of ``(word, tag)`` from any of the three formats. ``format``: ``"masc"`` (a zip
    or folder of ``word_TAG`` files), ``"conllu"`` (``tag_column`` ``"upos"`` or ``"xpos"``),
    ``"slash"`` (``word/TAG``, Penn ``.pos`` style), or ``"auto"``: by the name's ending
    (``.zip`` or a folder, ``.conllu``, ``.pos``)."""
    path = Path(path)
    if format == "auto":
        name = path.name.lower()
        format = ("masc" if path.is_dir() or name.endswith(".zip") else "conllu" if name.endswith(".conllu")
                  else "slash" if name.endswith(".pos") else "unknown")
        if format == "unknown":
            raise ValueError(f"cannot tell the format of {path.name} from its name; pass format='masc', "
                             "'conllu' or 'slash'")
    if format == "masc":
        return read_masc_sentences(path)
    if format == "conllu":
        return read_conllu(path, tag_column)
    if format == "slash":
        return read_slash_tagged(path, one_per_line)
    raise ValueError(f"format must be 'auto', 'masc', 'conllu' or 'slash', got {format!r}")


def load_tagged_corpus(path: str | Path, format: str = "auto", tag_column: str = "upos", lowercase: bool = False,
                       min_count: int = 1, max_sentences: int | None = None, rare: str = "unk",
                       one_per_line: bool = False) -> TaggedCorpus:
    """:func:`read_tagged` then :func:`corpus_from_sentences`."""
    return corpus_from_sentences(read_tagged(path, format, tag_column, one_per_line), lowercase, min_count,
                                 max_sentences, rare)


def corpus_from_sentences(sentences: list[list[tuple[str, str]]], lowercase: bool = False, min_count: int = 1,
                          max_sentences: int | None = None, rare: str = "unk") -> TaggedCorpus:
    """Sentences of ``(word, tag)`` -> :class:`TaggedCorpus`. Words seen fewer than ``min_count``
    times become ``<unk>`` (``rare="unk"``) or their spelling class :func:`word_shape`
    (``rare="shape"``, computed before lowercasing)."""
    positive_int("min_count", min_count)
    if rare not in ("unk", "shape"):
        raise ValueError(f"rare must be 'unk' or 'shape', got {rare!r}")
    sentences = sentences[:max_sentences]
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


# ----------------------------------------------------------------------------- a toy corpus

_TOY_WORDS = {
    "DT": "the a this every", "JJ": "small red old happy quick", "NN": "dog cat house idea tree bird",
    "VB": "sees likes finds eats builds", "IN": "in on near under", "PRP": "she he it", ".": ". !",
}
# Tag bigram grammar: sentence = (DT JJ* NN | PRP) VB (DT JJ* NN) (IN DT NN)? .
_TOY_NEXT = {"<s>": {"DT": 0.7, "PRP": 0.3}, "DT": {"JJ": 0.4, "NN": 0.6}, "JJ": {"JJ": 0.2, "NN": 0.8},
             "NN": {"VB": 0.45, "IN": 0.25, ".": 0.3}, "PRP": {"VB": 1.0}, "VB": {"DT": 1.0},
             "IN": {"DT": 1.0}}


def toy_sentences(num_sentences: int, seed: int = 0) -> list[list[tuple[str, str]]]:
    """Sentences of ``(word, tag)`` from a small tag grammar with disjoint word lists per tag
    (offline stand-in for MASC)."""
    positive_int("num_sentences", num_sentences)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num_sentences):
        tag, sentence = "<s>", []
        while tag != "." and len(sentence) < 30:
            options = _TOY_NEXT[tag]
            tag = str(rng.choice(list(options), p=list(options.values())))
            sentence.append((str(rng.choice(_TOY_WORDS[tag].split())), tag))
        out.append(sentence)
    return out


def toy_corpus(num_sentences: int, seed: int = 0) -> TaggedCorpus:
    """:func:`toy_sentences` as a :class:`TaggedCorpus` (the offline stand-in for MASC)."""
    return corpus_from_sentences(toy_sentences(num_sentences, seed))
