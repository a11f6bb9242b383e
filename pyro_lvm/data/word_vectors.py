"""Word vectors for embedding-emission HMMs: gensim word2vec trained offline on the text at hand.

    sentences = embedding_sentences({"masc": masc_words}, ptb="ptb.zip", wikipedia=True)
    vectors = load_or_train_word_vectors(sentences, dim=100, window=1)       # cached
    table, fallbacks = vectors.lookup(corpus.vocab)                          # (V, D) and counts

Words are looked up by :func:`embedding_key` (lower case, numbers -> ``N``, as the Penn
Treebank language-modelling text already is). Words seen fewer than ``min_count`` times in
the training text are replaced there by their spelling class (:func:`.tagged_text.word_shape`,
e.g. ``<unk-cap-ing>``), so every rare word still gets the vector of words that look like it.
A window of 1 is the default: short contexts make vectors that separate syntactic classes
(Lin et al. 2015; He et al. 2018 use skip-gram with window 1).

The cache is a NumPy ``.npz`` (words as a unicode array, vectors as float32) read with
``allow_pickle=False``: loading it never executes code.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .tagged_text import word_shape
from .text import _NUMBER, _cache_dir
from ..validation import positive_int

CACHE_VERSION = 1


def embedding_key(word: str) -> str:
    """The form a word is looked up by: lower case, and ``N`` for a number (``1,987``, ``3.5``)."""
    return "N" if _NUMBER.match(word) else word.lower()


def embedding_sentences(texts: dict[str, list[list[str]]] | None = None, ptb: str | Path | None = None,
                        wikipedia: bool = False) -> dict[str, list[list[str]]]:
    """Training text for word2vec by source, one token list per sentence: ``texts`` as given
    (e.g. the words of a tagged corpus, original case kept so that rare words can be given a
    spelling class), plus the Penn Treebank text of ``ptb.zip`` and gensim's Wikipedia sample."""
    from .text import load_embedded_corpus, read_ptb

    out = dict(texts or {})
    if ptb is not None:
        c = read_ptb(ptb)
        out["ptb"] = c.train + c.valid + c.test
    if wikipedia:
        c = load_embedded_corpus()
        out["wikipedia"] = c.train + c.valid + c.test
    if not out or not any(out.values()):
        raise ValueError("embedding_sentences needs some text (texts, ptb or wikipedia=True)")
    return out


def prepare_text(sentences: Iterable[Sequence[str]], min_count: int) -> list[list[str]]:
    """Sentences as embedding keys, with keys seen fewer than ``min_count`` times replaced by
    the spelling class of the word (computed on the original form)."""
    sentences = [list(s) for s in sentences]
    counts = Counter(embedding_key(w) for s in sentences for w in s)
    return [[k if counts[k] >= min_count else word_shape(w) for w in s for k in (embedding_key(w),)]
            for s in sentences]


@dataclass
class WordVectors:
    """``words`` (list of keys) and their ``vectors`` ``(W, D)`` float32, plus how they were made."""

    words: list[str]
    vectors: np.ndarray
    info: dict = field(default_factory=dict)
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.vectors.ndim != 2 or len(self.words) != self.vectors.shape[0]:
            raise ValueError(f"{len(self.words)} words but vectors of shape {self.vectors.shape}")
        self._index = {w: i for i, w in enumerate(self.words)}

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def lookup(self, vocab: Sequence[str]) -> tuple[torch.Tensor, dict[str, int]]:
        """``(table (V, D) float32, counts)``: each vocabulary word's vector by its key; a word
        without one falls back to its spelling class's vector, and failing that to the mean
        vector. ``counts`` says how many words took each route (``own``, ``shape``, ``mean``)."""
        if len(vocab) == 0:
            raise ValueError("lookup needs a non-empty vocabulary")
        mean = self.vectors.mean(axis=0)
        rows, counts = [], {"own": 0, "shape": 0, "mean": 0}
        for word in vocab:
            for route, key in (("own", embedding_key(word)), ("shape", word_shape(word))):
                if key in self._index:
                    rows.append(self.vectors[self._index[key]])
                    counts[route] += 1
                    break
            else:
                rows.append(mean)
                counts["mean"] += 1
        return torch.from_numpy(np.stack(rows).astype(np.float32)), counts

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, words=np.array(self.words, dtype=str), vectors=self.vectors.astype(np.float32),
                 info=np.array(json.dumps(self.info)))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "WordVectors":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no word-vector file at {path} (expected a .npz written by WordVectors.save)")
        with np.load(path, allow_pickle=False) as z:  # no pickle: loading runs no code
            return cls([str(w) for w in z["words"]], z["vectors"], json.loads(str(z["info"])))


def positional_contexts(text: list[list[str]]) -> list[list[str]]:
    """One 3-token "sentence" ``[L:w_{t-1}, w_t, R:w_{t+1}]`` per token (``<s>``/``</s>`` at the
    ends): skip-gram with window 1 on these predicts the left and the right neighbour as different
    words, which is the structured skip-gram of Ling et al. (2015) with window 1 -- vectors that
    know which side a context word was on."""
    out = []
    for s in text:
        padded = ["<s>", *s, "</s>"]
        out.extend(["L:" + padded[i - 1], padded[i], "R:" + padded[i + 1]] for i in range(1, len(padded) - 1))
    return out


def train_word_vectors(sentences: dict[str, list[list[str]]], dim: int = 100, window: int = 1,
                       min_count: int = 3, epochs: int = 20, negative: int = 10, seed: int = 0,
                       workers: int = 1, contexts: str = "plain") -> WordVectors:
    """Skip-gram word2vec (gensim) over all sources together; see the module docstring.
    ``contexts="positional"``: left and right neighbours as distinct context words
    (:func:`positional_contexts`; ``window`` is then 1)."""
    try:
        from gensim.models import Word2Vec
    except ImportError as e:
        raise ImportError("training word vectors needs gensim: pip install 'pyro_lvm[text]'") from e
    for name, value in (("dim", dim), ("window", window), ("min_count", min_count), ("epochs", epochs)):
        positive_int(name, value)
    if contexts not in ("plain", "positional"):
        raise ValueError(f"contexts must be 'plain' or 'positional', got {contexts!r}")
    text = prepare_text((s for part in sentences.values() for s in part), min_count)
    t0 = time.perf_counter()
    model = Word2Vec(positional_contexts(text) if contexts == "positional" else text, vector_size=dim,
                     window=1 if contexts == "positional" else window, min_count=1, sg=1, negative=negative,
                     epochs=epochs, seed=seed, workers=workers)
    keep = [i for i, w in enumerate(model.wv.index_to_key) if not w.startswith(("L:", "R:"))]
    info = {"sources": {k: {"sentences": len(v), "tokens": sum(map(len, v))} for k, v in sentences.items()},
            "tokens": sum(map(len, text)), "dim": dim, "window": window, "min_count": min_count, "epochs": epochs,
            "negative": negative, "seed": seed, "contexts": contexts, "words": len(keep),
            "train_seconds": round(time.perf_counter() - t0, 1)}
    return WordVectors([model.wv.index_to_key[i] for i in keep], model.wv.vectors[keep].astype(np.float32), info)


def load_or_train_word_vectors(sentences: dict[str, list[list[str]]], cache_dir: str | Path | None = None,
                               **options) -> WordVectors:
    """:func:`train_word_vectors`, cached under ``cache_dir`` (default ``$PYRO_LVM_CACHE`` or
    ``~/.cache/pyro_lvm``) by a hash of the text and the options."""
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for name in sorted(sentences):
        digest.update(name.encode())
        for s in sentences[name]:
            digest.update(" ".join(s).encode() + b"\n")
    path = Path(cache_dir or _cache_dir()) / f"word2vec_v{CACHE_VERSION}_{digest.hexdigest()[:16]}.npz"
    if path.is_file():
        return WordVectors.load(path)
    vectors = train_word_vectors(sentences, **options)
    vectors.save(path)
    return vectors
