"""Bag-of-words corpora for topic models: tokens -> vocabulary -> document-word counts.

A corpus here is a :class:`BowCorpus`: a dense ``float32`` count matrix ``counts (D, V)``
(row d, column v = how often word v occurs in document d), the vocabulary ``vocab`` (V
strings, column order) and optional integer ``labels (D,)``. That matrix is the batch every
topic model in :mod:`pyro_lvm.models.topic` takes. :meth:`BowCorpus.sparse` gives a
``scipy.sparse.csr_matrix`` of the same counts (for scikit-learn).

Pipeline (:func:`corpus_from_texts`): :func:`tokenize` (lower case, letters only, tokens of
at least ``min_len`` letters) -> drop stop words (scikit-learn's English list by default)
-> :func:`build_vocabulary` with document-frequency cut-offs (``min_df`` documents at
least, ``max_df`` share of documents at most, the ``max_vocab`` most frequent kept) ->
:func:`count_matrix`. :meth:`BowCorpus.split` splits by document (never by token).

Readers:

* :func:`read_texts`: raw text, one document per line of a file, or one ``.txt`` file per
  document in a folder;
* :func:`load_nvdm`: the NVDM bag-of-words format of Miao et al. (2016), e.g.
  ``20ng.zip`` (``train.feat`` / ``test.feat`` lines ``label id:count ...`` with ids from 1,
  ``vocab.new`` lines ``word count`` in id order), from the zip or its folder;
* :func:`load_lee_background`: the embedded default corpus, 300 news articles from the
  Lee et al. (2005) document-similarity study, shipped inside gensim's wheel as
  ``test/test_data/lee_background.cor`` (``pip install gensim``, the ``text`` extra).
  Chosen over gensim's Wikipedia sample because it is plain text with one document per
  line (no wiki markup to strip), a few hundred documents on recognisable news topics
  (bushfires, the Middle East, cricket, Afghanistan, ...), and loads in milliseconds.

Documented behaviour for awkward input:

* documents left with no vocabulary words are **dropped**, and their number is kept in
  ``BowCorpus.dropped`` (``drop_empty=False`` refuses them with ``ValueError`` instead);
* a vocabulary that comes out empty after the cut-offs, negative / fractional / NaN counts,
  and a test corpus whose vocabulary differs from the training one raise ``ValueError``
  saying which.
"""

from __future__ import annotations

import collections
import io
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from .reading import reading
from ..validation import Integer, Number, positive_int

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def english_stop_words() -> frozenset[str]:
    """scikit-learn's English stop-word list (318 words)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def resolve_stop_words(stop_words: Iterable[str] | None | str) -> Iterable[str] | None:
    """``"english"`` -> scikit-learn's list; any other value (an iterable of words, ``None``) as is."""
    return english_stop_words() if stop_words == "english" else stop_words


def tokenize(text: str, min_len: int = 3, stop_words: Iterable[str] | None = ()) -> list[str]:
    """Lower-cased alphabetic tokens of ``text`` with at least ``min_len`` letters.

    Possessive/contraction endings are cut (``"Sydney's"`` -> ``"sydney"``); numbers and
    punctuation are dropped; ``stop_words`` (any iterable, ``None`` for none) are removed.
    """
    stop = frozenset(stop_words or ())
    out = []
    for tok in _WORD.findall(text.lower()):
        tok = tok.split("'")[0]
        if len(tok) >= min_len and tok not in stop:
            out.append(tok)
    return out


def build_vocabulary(docs: Sequence[Sequence[str]], min_df: int = 2, max_df: float = 0.5,
                     max_vocab: int | None = None) -> list[str]:
    """Words kept by document-frequency cut-offs, most frequent first (ties alphabetical).

    Args:
        docs: tokenised documents.
        min_df: keep words in at least this many documents.
        max_df: keep words in at most this share (0, 1] of documents (drops corpus-wide
            words that stop-word lists miss).
        max_vocab: then keep the ``max_vocab`` words with the highest document frequency.

    Raises:
        ValueError: no documents, bad cut-offs, or no word survives them.
    """
    if not docs:
        raise ValueError("cannot build a vocabulary from 0 documents")
    return vocabulary_from_document_frequencies(collections.Counter(w for doc in docs for w in set(doc)), len(docs),
                                                min_df, max_df, max_vocab)


def vocabulary_from_document_frequencies(df: Mapping[str, int], num_docs: int, min_df: int = 2, max_df: float = 0.5,
                                         max_vocab: int | None = None) -> list[str]:
    """:func:`build_vocabulary` from ``{word: documents containing it}`` and the number of
    documents (what one pass over a stream can count)."""
    if num_docs < 1:
        raise ValueError("cannot build a vocabulary from 0 documents")
    min_df = positive_int("min_df", min_df)
    max_df = Number(0.0, maximum=1.0)("max_df", max_df)
    max_vocab = Integer(1, optional=True)("max_vocab", max_vocab)
    ceiling = max_df * num_docs
    kept = [w for w, n in df.items() if min_df <= n <= ceiling]
    if not kept:
        raise ValueError(
            f"the vocabulary is empty after the document-frequency cut-offs (min_df={min_df}, "
            f"max_df={max_df}, {num_docs} documents, {len(df)} distinct words before the cut): "
            "lower min_df or raise max_df")
    kept.sort(key=lambda w: (-df[w], w))
    return kept[:max_vocab] if max_vocab is not None else kept


def count_matrix(docs: Sequence[Sequence[str]], vocab: Sequence[str]) -> torch.Tensor:
    """Document-word counts ``(len(docs), len(vocab))`` float32; words outside ``vocab`` are ignored."""
    index = {w: i for i, w in enumerate(vocab)}
    counts = np.zeros((len(docs), len(vocab)), dtype=np.float32)
    for d, doc in enumerate(docs):
        for w in doc:
            i = index.get(w)
            if i is not None:
                counts[d, i] += 1
    return torch.from_numpy(counts)


def check_counts(counts: torch.Tensor, vocab_size: int | None = None, what: str = "counts") -> torch.Tensor:
    """Return ``counts`` if it is a valid ``(D, V)`` count matrix, else raise ``ValueError``.

    Valid: a floating-point tensor with 2 dims, finite, non-negative, whole numbers, ``V``
    equal to ``vocab_size`` when given.
    """
    if not isinstance(counts, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor (documents, vocabulary), got {type(counts).__name__}")
    if counts.dim() != 2:
        raise ValueError(f"{what} must have shape (documents, vocabulary), got {tuple(counts.shape)}")
    if vocab_size is not None and counts.shape[1] != vocab_size:
        raise ValueError(f"vocabulary mismatch: {what} has {counts.shape[1]} word columns, the model/vocabulary "
                         f"has {vocab_size}; encode every split with the training vocabulary")
    if not counts.is_floating_point():
        raise ValueError(f"{what} must be a floating-point tensor of counts, got dtype {counts.dtype}")
    # Models check every batch (in model and guide): the valid case costs three passes over the
    # tensor (not seven), as frac() is NaN at NaN/inf and so sees those too; only a bad one is looked at
    # again below, to name its fault.
    if counts.numel() and not bool(counts.frac().any()) and bool(counts.min() >= 0):
        return counts
    if not bool(torch.isfinite(counts).all()):
        raise ValueError(f"{what} contains NaN or inf")
    if bool((counts < 0).any()):
        raise ValueError(f"{what} contains negative counts (min {float(counts.min())})")
    if not bool((counts == counts.round()).all()):
        raise ValueError(f"{what} must hold whole-number counts; found fractional values")
    return counts


@dataclass
class BowCorpus:
    """Document-word counts with their vocabulary.

    Attributes:
        counts: ``(D, V)`` float32 counts.
        vocab: ``V`` words, in column order.
        labels: optional ``(D,)`` int64 labels (e.g. newsgroup ids).
        dropped: documents removed because they held no vocabulary word.
        name: where the corpus came from.
    """

    counts: torch.Tensor
    vocab: list[str]
    labels: torch.Tensor | None = None
    dropped: int = 0
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_counts(self.counts, len(self.vocab), what=f"corpus {self.name!r}" if self.name else "corpus")
        if self.labels is not None and len(self.labels) != len(self.counts):
            raise ValueError(f"{len(self.labels)} labels for {len(self.counts)} documents")

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    @property
    def num_words(self) -> int:
        """Total number of tokens."""
        return int(self.counts.sum())

    def sparse(self) -> Any:
        """The counts as a ``scipy.sparse.csr_matrix`` (for scikit-learn)."""
        import scipy.sparse

        return scipy.sparse.csr_matrix(self.counts.numpy())

    def subset(self, index: torch.Tensor | Sequence[int], name: str | None = None) -> "BowCorpus":
        index = torch.as_tensor(index, dtype=torch.long)
        return BowCorpus(self.counts[index], list(self.vocab), None if self.labels is None else self.labels[index],
                         0, name if name is not None else self.name, dict(self.meta))

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple["BowCorpus", "BowCorpus"]:
        """``(train, test)`` by document, shuffled with ``seed``."""
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        n = len(self)
        n_test = int(round(test_fraction * n))
        if n_test < 1 or n_test >= n:
            raise ValueError(f"cannot split {n} documents with test_fraction={test_fraction}")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return self.subset(order[n_test:], f"{self.name}/train"), self.subset(order[:n_test], f"{self.name}/test")

    def restrict(self, words: Sequence[str], drop_empty: bool = True) -> "BowCorpus":
        """The same documents over the vocabulary ``words`` (a subset of ``vocab``), e.g. to
        drop stop words from a ready-made count matrix. Empty documents are then dropped."""
        index = {w: i for i, w in enumerate(self.vocab)}
        missing = [w for w in words if w not in index]
        if missing:
            raise ValueError(f"vocabulary mismatch: {len(missing)} words not in this corpus, e.g. {missing[:5]}")
        if not words:
            raise ValueError("the restricted vocabulary is empty")
        cols = torch.tensor([index[w] for w in words], dtype=torch.long)
        out = BowCorpus(self.counts[:, cols], list(words), self.labels, self.dropped, self.name, dict(self.meta))
        return drop_empty_documents(out, refuse=not drop_empty)

    def summary(self) -> dict:
        lengths = self.counts.sum(1)
        return {"name": self.name, "documents": len(self), "vocabulary": len(self.vocab), "tokens": self.num_words,
                "mean_length": round(float(lengths.mean()), 2), "max_length": int(lengths.max()),
                "dropped_empty": self.dropped}


def drop_empty_documents(corpus: BowCorpus, refuse: bool = False) -> BowCorpus:
    """Remove documents without any vocabulary word (count added to ``dropped``), or refuse them."""
    empty = corpus.counts.sum(1) == 0
    k = int(empty.sum())
    if k == 0:
        return corpus
    if refuse:
        raise ValueError(f"{k} of {len(corpus)} documents are empty (no vocabulary word); "
                         "drop them (drop_empty=True) or widen the vocabulary")
    if k == len(corpus):
        raise ValueError(f"every one of the {k} documents is empty (no vocabulary word)")
    keep = (~empty).nonzero().squeeze(1)
    out = corpus.subset(keep)
    out.dropped = corpus.dropped + k
    return out


def check_same_vocabulary(train: BowCorpus, test: BowCorpus) -> None:
    """Raise ``ValueError`` unless both corpora use the same vocabulary in the same order."""
    if list(train.vocab) != list(test.vocab):
        a, b = set(train.vocab), set(test.vocab)
        detail = (f"{len(b - a)} test words not in training, {len(a - b)} training words not in test"
                  if a != b else "same words in a different order")
        raise ValueError(f"vocabulary mismatch between train ({len(train.vocab)} words) and test "
                         f"({len(test.vocab)} words): {detail}")


def corpus_from_texts(texts: Sequence[str], min_df: int = 2, max_df: float = 0.5, max_vocab: int | None = None,
                      stop_words: Iterable[str] | None | str = "english", min_len: int = 3,
                      vocab: Sequence[str] | None = None, drop_empty: bool = True, name: str = "texts",
                      labels: Sequence[int] | None = None) -> BowCorpus:
    """Raw documents -> :class:`BowCorpus`.

    Args:
        texts: one string per document.
        min_df, max_df, max_vocab: document-frequency cut-offs (:func:`build_vocabulary`).
        stop_words: ``"english"`` (scikit-learn's list), an iterable of words, or ``None``.
        vocab: use this vocabulary instead of building one (encode a test split with the
            training vocabulary).
        drop_empty: drop documents with no vocabulary word (count in ``dropped``), or refuse.
    """
    if not texts:
        raise ValueError("no documents given")
    stop = resolve_stop_words(stop_words)
    docs = [tokenize(t, min_len=min_len, stop_words=stop) for t in texts]
    vocab = list(vocab) if vocab is not None else build_vocabulary(docs, min_df, max_df, max_vocab)
    if not vocab:
        raise ValueError("the vocabulary given is empty")
    lab = torch.as_tensor(list(labels), dtype=torch.long) if labels is not None else None
    corpus = BowCorpus(count_matrix(docs, vocab), vocab, lab, 0, name)
    return drop_empty_documents(corpus, refuse=not drop_empty)


def read_texts(path: str | os.PathLike) -> list[str]:
    """Raw documents: one per non-blank line of a file, or one per ``*.txt`` file in a folder
    (sorted by name). Raises ``FileNotFoundError`` / ``ValueError`` (no documents)."""
    path = Path(path)
    if path.is_dir():
        texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(path.glob("*.txt"))]
    elif path.is_file():
        texts = path.read_text(encoding="utf-8", errors="replace").splitlines()
    else:
        raise FileNotFoundError(f"{path}: no such file or folder of .txt documents")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError(f"{path} holds no documents (empty file, or a folder without non-empty .txt files)")
    return texts


def lee_background_path() -> Path:
    """Path of ``lee_background.cor`` inside the installed gensim package."""
    try:
        import gensim
    except ImportError as e:
        raise ImportError("the embedded corpus ships inside gensim's wheel: pip install 'pyro_lvm[text]' "
                          "(or pass a path to your own documents)") from e
    path = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from this gensim installation")
    return path


def load_lee_background(min_df: int = 3, max_df: float = 0.3, max_vocab: int | None = 2000,
                        test_fraction: float = 0.2, seed: int = 0) -> tuple[BowCorpus, BowCorpus]:
    """The embedded default corpus (300 Lee et al. news articles) as ``(train, test)``,
    the vocabulary built on the training documents only."""
    return split_texts(read_texts(lee_background_path()), "lee_background", min_df, max_df, max_vocab,
                       test_fraction, seed)


def split_texts(texts: Sequence[str], name: str, min_df: int = 2, max_df: float = 0.5,
                max_vocab: int | None = None, test_fraction: float = 0.2, seed: int = 0,
                stop_words: Iterable[str] | None | str = "english") -> tuple[BowCorpus, BowCorpus]:
    """Split raw documents by document, build the vocabulary on the training part, encode both."""
    n = len(texts)
    n_test = int(round(test_fraction * n))
    if not 0 < n_test < n:
        raise ValueError(f"cannot split {n} documents with test_fraction={test_fraction}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    train_texts = [texts[i] for i in order[n_test:]]
    test_texts = [texts[i] for i in order[:n_test]]
    train = corpus_from_texts(train_texts, min_df, max_df, max_vocab, stop_words, name=f"{name}/train")
    test = corpus_from_texts(test_texts, stop_words=stop_words, vocab=train.vocab, name=f"{name}/test")
    return train, test


# ----------------------------------------------------------------------------- NVDM format

def _nvdm_members(path: Path) -> dict[str, bytes]:
    wanted = ("train.feat", "test.feat", "vocab.new")
    found: dict[str, bytes] = {}
    if path.is_dir():
        for name in wanted:
            hits = sorted(path.rglob(name))
            if hits:
                found[name] = hits[0].read_bytes()
    elif path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                base = info.filename.rsplit("/", 1)[-1]
                if base in wanted and "__MACOSX" not in info.filename and base not in found:
                    found[base] = z.read(info)
    else:
        raise FileNotFoundError(f"{path}: expected a .zip or a folder with train.feat, test.feat, vocab.new")
    missing = [w for w in wanted if w not in found]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)} (NVDM bag-of-words format)")
    return found


def _parse_feat(text: str, vocab_size: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [line.split() for line in io.StringIO(text) if line.strip()]
    counts = np.zeros((len(rows), vocab_size), dtype=np.float32)
    labels = np.zeros(len(rows), dtype=np.int64)
    for d, parts in enumerate(rows):
        try:
            labels[d] = int(parts[0])
            pairs = [item.split(":") for item in parts[1:]]
            pairs = [(int(i), float(c)) for i, c in pairs]
        except ValueError:
            raise ValueError(f"{what}, line {d + 1}: expected 'label id:count ...', got {' '.join(parts)[:60]!r}") from None
        for i, c in pairs:
            if not 1 <= i <= vocab_size:  # ids start at 1 in this format
                raise ValueError(f"{what}, line {d + 1}: word id {i} outside 1..{vocab_size}")
            if c < 0:
                raise ValueError(f"{what}, line {d + 1}: negative count {c} for word id {i}")
            counts[d, i - 1] += c
    return torch.from_numpy(counts), torch.from_numpy(labels)


def load_nvdm(path: str | os.PathLike, drop_empty: bool = True,
              stop_words: Iterable[str] | None | str = None) -> tuple[BowCorpus, BowCorpus]:
    """``(train, test)`` from an NVDM bag-of-words folder or zip (e.g. ``20ng.zip``).

    Word ids in ``*.feat`` start at 1 and index the lines of ``vocab.new``; the first field
    of each line is the label. ``stop_words`` (``"english"``, an iterable of words, or ``None``
    to keep the file's vocabulary as it is) are removed from both splits' vocabulary; documents
    left without words are dropped (count in ``dropped``).
    """
    path = Path(path)
    with reading(path, "an NVDM bag-of-words zip or folder (train.feat, test.feat, vocab.new)"):
        files = _nvdm_members(path)
        vocab = [line.split()[0] for line in files["vocab.new"].decode("utf-8").splitlines() if line.strip()]
        out = []
        for split in ("train", "test"):
            counts, labels = _parse_feat(files[f"{split}.feat"].decode("utf-8"), len(vocab), f"{path}:{split}.feat")
            corpus = BowCorpus(counts, list(vocab), labels, 0, f"{path.stem}/{split}")
            out.append(drop_empty_documents(corpus, refuse=not drop_empty))
    stop = frozenset(resolve_stop_words(stop_words) or ())
    if stop:
        kept = [w for w in vocab if w not in stop]
        out = [corpus.restrict(kept, drop_empty=drop_empty) for corpus in out]
    return out[0], out[1]
