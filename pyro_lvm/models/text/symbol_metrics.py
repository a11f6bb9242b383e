"""Evaluating a :class:`~pyro_lvm.models.text.symbol_sequences.SymbolSequenceAutoencoder` on
sentences: the -ELBO, the log-likelihood (exact when the ``K**L`` codes can be summed, else
importance-sampled), perplexity, reconstruction accuracy, and greedy reconstructions.

    test = evaluate_model(model, tokens)          # {"nll": ..., "ppl": ..., "kl": ..., ...}
    share, rows = exact_reconstructions(model, vocab, tokens[:200])
"""

from __future__ import annotations

import math
from typing import Any

import torch

from . import decoding
from ...data.text import Vocabulary, bucket_loader
from ...evaluation.metrics import log_likelihood
from .symbol_sequences import SymbolSequenceAutoencoder


def evaluate_model(model: SymbolSequenceAutoencoder, tokens: torch.Tensor, samples: int = 100,
                   batch_size: int = 50, exact_codes: int | None = None) -> dict[str, Any]:
    """Test metrics in nats per sentence, perplexity per predicted token (words + ``<eos>``).

    The NLL is the exact sum over the ``K**L`` codes when there are at most ``exact_codes`` of
    them (default ``model.max_codes``), else importance-sampled with ``samples`` codes from q
    (the exact sum costs ``K**L`` decoder passes per sentence, the estimate ``samples``)."""
    model.eval()
    loader = list(bucket_loader(tokens, batch_size, shuffle=False))
    n_tokens = int((tokens[:, 1:] != 0).sum())
    neg_elbo = torch.cat([model.negative_elbo(b, num_samples=1) for b in loader])
    out: dict[str, Any] = {"sentences": len(tokens), "tokens": n_tokens, "neg_elbo": float(neg_elbo.mean()),
                           "bits_per_code": model.n_symbols * math.log2(model.alphabet)}
    codes = model.alphabet ** model.n_symbols
    limit = model.max_codes if exact_codes is None else min(exact_codes, model.max_codes)
    with torch.no_grad():
        if codes <= limit:
            nll = -torch.cat([model.log_marginal(b) for b in loader])
            out["nll_method"] = f"exact sum over {codes} codes"
        else:
            # batch by batch: a list of batches would read as one tuple of model arguments
            nll = -torch.cat([log_likelihood(model, b, num_samples=samples) for b in loader])
            out["nll_method"] = f"importance sampling, {samples} codes from q"
    out.update(nll=float(nll.mean()), ppl=math.exp(float(nll.sum()) / n_tokens),
               reconstruction_accuracy=decoding.reconstruction_accuracy(model, loader))
    # exact for the uniform prior; for the language-model prior an estimate from 10 codes per sentence
    out["kl"] = float(torch.cat([model.code_kl(b, num_samples=10) for b in loader]).mean())
    return out


def exact_reconstructions(model: SymbolSequenceAutoencoder, vocab: Vocabulary, tokens: torch.Tensor
                          ) -> tuple[float, list[dict[str, Any]]]:
    """Share of sentences that greedy decoding of their own most probable code gives back word
    for word, and the examples ``{sentence, code, reconstruction}`` (and ``code_words``, the code
    read as words, with the compression prior)."""
    model.eval()
    codes = model.symbols(tokens)
    decoded = decoding.greedy(model, torch.nn.functional.one_hot(codes, model.alphabet).float().flatten(-2))
    rows, same = [], 0
    for row, code, out in zip(tokens.tolist(), codes.tolist(), decoded):
        words = [t for t in row[1:] if t not in (0, 3)]
        same += out == words
        rows.append({"sentence": " ".join(vocab.decode(words)), "code": code, "reconstruction": " ".join(vocab.decode(out))})
        if model.compresses:
            rows[-1]["code_words"] = code_as_words(vocab, code)
    return same / max(len(rows), 1), rows


def code_as_words(vocab: Vocabulary, code: list[int]) -> str:
    """A compression-prior code (``L`` word indices) read as words, special tokens kept."""
    return " ".join(vocab.decode(code, strip=False))
