"""Miao & Blunsom's compression prior: an LSTM language model over a code of L latent words.

Miao & Blunsom (2016, "Language as a Latent Variable: Discrete Generative Models for Sentence
Compression", EMNLP) compress a sentence into a sequence of its own words and score that
sequence with a language model trained beforehand on the text and then kept fixed, so that
codes read as sentences. Here the latent words are token ids: symbol ``k`` of an alphabet of
``K`` is token id ``k`` of the :class:`~pyro_lvm.data.text.Vocabulary` (its 4 special tokens,
then its ``K - 4`` most frequent words; rarer words are ``<unk>``).

The prior of a code ``c = (c_1 .. c_L)`` (one-hot ``(L, K)``) is the language model's
probability of a sentence *starting* with those words::

    p(c) = prod_l p_LM(c_l | <bos>, c_1 .. c_{l-1}),   next-word distribution over <unk> and words

(``<pad>``, ``<bos>`` and ``<eos>`` are masked out of the next-word distribution: the code has
exactly L words, so "the sentence ends here" is not one of its values). :class:`WordLanguageModel`
computes it, for one-hot or relaxed (Gumbel-softmax) codes alike; :class:`LanguageModelPrior`
is it as a Pyro distribution; :func:`pretrain_language_model` fits it to sentences with the
same masked next-word distribution.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch import nn
from torch.distributions import constraints

from ... import validation
from ...data.text import BOS_ID, EOS_ID, PAD_ID, UNK_ID, bucket_loader

NON_WORDS = (PAD_ID, BOS_ID, EOS_ID)  # never a latent word
# A finite "impossible": 0 * MASKED is 0 for relaxed values with no mass there (0 * -inf is NaN).
MASKED = -1e4
MIN_ALPHABET = 5  # the 4 special tokens and at least one word


def word_mask(alphabet: int, device: Any = None) -> torch.Tensor:
    """``(K,)`` bool: True for the symbols that may be latent words (``<unk>`` and words)."""
    mask = torch.ones(alphabet, dtype=torch.bool, device=device)
    mask[list(NON_WORDS)] = False
    return mask


def to_symbols(tokens: torch.Tensor, alphabet: int) -> torch.Tensor:
    """Token ids -> symbol ids of an alphabet of ``K``: the same id, ``<unk>`` for ids ``>= K``. Any shape."""
    return tokens.masked_fill(tokens >= alphabet, UNK_ID)


class WordLanguageModel(nn.Module):
    """An LSTM language model over the ``K`` symbols, read as a prefix of a sentence.

    Args:
        alphabet: K, symbols (= token ids ``< K``).
        embed_dim, hidden_dim: its word embedding and LSTM sizes.
    """

    def __init__(self, alphabet: int, embed_dim: int = 64, hidden_dim: int = 128):
        super().__init__()
        self.alphabet = validation.Integer(MIN_ALPHABET)("alphabet", alphabet)
        self.embedding = nn.Embedding(alphabet, embed_dim)
        self.rnn = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.output = nn.Linear(hidden_dim, alphabet)
        self.register_buffer("mask", word_mask(alphabet), persistent=False)

    def next_log_probs(self, inputs: torch.Tensor) -> torch.Tensor:
        """``log p_LM(next word | inputs so far)`` at every step, non-words at ``MASKED``.

        ``inputs``: ``(N, T)`` symbol ids or ``(N, T, K)`` one-hot/relaxed symbols -> ``(N, T, K)``.
        """
        emb = self.embedding(inputs) if inputs.dtype == torch.long else inputs @ self.embedding.weight
        out, _ = self.rnn(emb)
        return self.output(out).masked_fill(~self.mask, MASKED).log_softmax(-1)

    def code_log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """``log p(c) = sum_l <c_l, log p_LM(. | <bos> c_<l)>``: codes ``(*S, L, K)`` -> ``(*S,)``.

        For one-hot codes the LM's log-probability of the words; for relaxed ones its cross-entropy.
        """
        lead, (L, K) = codes.shape[:-2], codes.shape[-2:]
        flat = codes.reshape(-1, L, K)
        start = F.one_hot(torch.full(flat.shape[:1], BOS_ID, device=codes.device), K).to(flat.dtype)
        inputs = torch.cat([start.unsqueeze(1), flat[:, :-1]], dim=1)
        return (flat * self.next_log_probs(inputs)).sum((-1, -2)).reshape(lead)

    @torch.no_grad()
    def sample(self, n: int, length: int) -> torch.Tensor:
        """``n`` codes of ``length`` words drawn from the LM: ``(n, length)`` symbol ids."""
        prev = torch.full((n, 1), BOS_ID, dtype=torch.long, device=self.mask.device)
        state, out = None, []
        for _ in range(length):
            h, state = self.rnn(self.embedding(prev), state)
            logits = self.output(h[:, -1]).masked_fill(~self.mask, MASKED)
            prev = torch.distributions.Categorical(logits=logits).sample().unsqueeze(1)
            out.append(prev)
        return torch.cat(out, dim=1)

    def sentence_loss(self, tokens: torch.Tensor) -> torch.Tensor:
        """Mean ``-log p_LM`` per word of sentences ``tokens (B, T)`` (``<bos> w.. <eos> <pad>..``), the
        same masked next-word distribution as the prior (the ``<eos>`` target is not predicted)."""
        symbols = to_symbols(tokens, self.alphabet)
        log_probs = self.next_log_probs(symbols[:, :-1])
        targets = symbols[:, 1:]
        words = self.mask[targets]
        return -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)[words].mean()


class LanguageModelPrior(TorchDistribution):
    """``p(c)`` of :class:`WordLanguageModel` as a distribution over codes of ``n_symbols`` words.

    ``batch_shape`` (e.g. ``(B,)`` in ``pyro.plate("data")``), ``event_shape`` ``(L, K)``; values
    are one-hot codes (relaxed ones are scored by their cross-entropy, see
    :meth:`WordLanguageModel.code_log_prob`); ``log_prob`` broadcasts over leading sample dims.
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.simplex, 1)
    has_enumerate_support = False

    def __init__(self, language_model: WordLanguageModel, n_symbols: int, batch_shape=torch.Size(),
                 validate_args: bool | None = None):
        self.language_model, self.n_symbols = language_model, n_symbols
        super().__init__(torch.Size(batch_shape), torch.Size([n_symbols, language_model.alphabet]),
                         validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return LanguageModelPrior(self.language_model, self.n_symbols, batch_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``(*S, *batch, L, K) -> (*S, *batch)`` (the LM does not depend on the batch: broadcast to it)."""
        log_prob = self.language_model.code_log_prob(value)
        return log_prob.expand(torch.broadcast_shapes(log_prob.shape, self.batch_shape))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        ids = self.language_model.sample(max(math.prod(shape), 1), self.n_symbols)
        return F.one_hot(ids, self.language_model.alphabet).float().reshape(shape + self.event_shape)


def pretrain_language_model(language_model: WordLanguageModel, tokens: torch.Tensor, epochs: int = 2,
                            batch_size: int = 64, lr: float = 2e-3, seed: int = 0) -> list[float]:
    """Fit the LM prior to sentences ``tokens (N, T)`` by maximum likelihood (Adam), as Miao &
    Blunsom pretrain theirs; returns the mean loss (nats per word) of each epoch.

    The parameters' ``requires_grad`` flags are restored afterwards, so a prior frozen for the
    autoencoder's training stays frozen.
    """
    validation.non_negative_int("epochs", epochs)
    validation.positive_int("batch_size", batch_size)
    validation.positive_number("lr", lr)
    params = list(language_model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=lr)
    losses = []
    try:
        with torch.enable_grad():
            for epoch in range(epochs):
                total, n = 0.0, 0
                for batch in bucket_loader(tokens, batch_size, seed=seed + epoch):
                    loss = language_model.sentence_loss(batch)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    total, n = total + loss.item(), n + 1
                losses.append(total / max(n, 1))
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    return losses
