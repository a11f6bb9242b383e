"""What ProdLDA and LDA share: words as an ordered bag given a document (:class:`BagOfWords`,
:class:`WordGivenTopic`), the Laplace approximation of a Dirichlet prior, the encoder of
Srivastava & Sutton, and the argument rules.

Every model takes one batch ``counts (B, V)``: float word counts of B documents over a
vocabulary of V words (:mod:`pyro_lvm.data.bow`). Words are modelled as an *ordered*
sequence drawn i.i.d. given the document, so a document's likelihood is
``sum_v counts_v * log p(v | document)`` with no multinomial coefficient; this is what
per-word perplexity uses and what per-word enumeration sums.

Shapes: ``K`` topics, ``V`` words, ``B`` documents in a batch, ``L`` the longest document.
"""

from __future__ import annotations

from typing import Any, Sequence

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from torch import nn

from ... import validation


TINY = torch.finfo(torch.float32).tiny


DOCUMENTS = "documents"  # the data plate: one document per datapoint


def laplace_dirichlet_prior(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Laplace approximation of ``Dirichlet(alpha)`` in the softmax basis: ``(mu, sigma2)``, each ``(K,)``.

    ``mu_k = log alpha_k - mean_i log alpha_i`` and
    ``sigma2_k = (1/alpha_k)(1 - 2/K) + (1/K^2) sum_i 1/alpha_i`` (MacKay 1998; Hennig et al.
    2012): ``softmax(h)`` with ``h ~ Normal(mu, sigma2)`` approximates ``theta ~ Dirichlet(alpha)``.
    ``sigma2`` is the diagonal of ``P diag(1/alpha) P`` (``P`` centres a vector), a generalised
    inverse of the Hessian of ``-log Dirichlet`` at its mode in that basis.
    """
    alpha = torch.as_tensor(alpha)
    if alpha.dim() != 1 or alpha.numel() < 2:
        raise ValueError(f"alpha must be a vector of K >= 2 concentrations, got shape {tuple(alpha.shape)}")
    if not bool((alpha > 0).all()):
        raise ValueError("alpha must be positive")
    k = alpha.numel()
    mu = alpha.log() - alpha.log().mean()
    sigma2 = (1.0 / alpha) * (1 - 2.0 / k) + (1.0 / alpha).sum() / k ** 2
    return mu, sigma2


class BagOfWords(TorchDistribution):
    """Word counts of a document whose words are i.i.d. ``Categorical(logits)``.

    ``log_prob(x) = sum_v x_v log softmax(logits)_v``: the probability of the ordered word
    sequence (no multinomial coefficient). ``batch_shape = logits.shape[:-1]``, event ``(V,)``.
    Sampling needs ``total_count`` (words per document, broadcastable to the batch shape).
    """

    arg_constraints = {"logits": constraints.real_vector}
    support = constraints.independent(constraints.nonnegative_integer, 1)

    def __init__(self, logits: torch.Tensor, total_count: torch.Tensor | None = None, validate_args=None):
        self.logits = logits
        self.total_count = total_count
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> "BagOfWords":
        batch_shape = torch.Size(batch_shape)
        total = None if self.total_count is None else torch.as_tensor(self.total_count).expand(batch_shape)
        return BagOfWords(self.logits.expand(batch_shape + self.event_shape), total, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return (value * self.logits.log_softmax(-1)).sum(-1)

    def sample(self, sample_shape: Sequence[int] = torch.Size()) -> torch.Tensor:
        if self.total_count is None:
            raise ValueError("BagOfWords needs total_count (words per document) to sample")
        shape = torch.Size(sample_shape) + self.batch_shape
        total = torch.as_tensor(self.total_count, device=self.logits.device).expand(shape).long()
        n = int(total.max()) if total.numel() else 0
        with torch.no_grad():
            words = dist.Categorical(logits=self.logits.expand(shape + self.event_shape)).sample((max(n, 1),))
            keep = (torch.arange(max(n, 1), device=total.device).view(-1, *([1] * len(shape))) < total).to(self.logits.dtype)
            counts = torch.zeros(shape + self.event_shape, dtype=self.logits.dtype, device=self.logits.device)
            counts.scatter_add_(-1, words.movedim(0, -1), keep.movedim(0, -1))
        return counts


class WordGivenTopic(TorchDistribution):
    """``w | z ~ Categorical(exp(log_phi[z]))`` for word ids, evaluated by indexing: ``log_prob(w) =
    log_phi[z, w]``. (``Categorical(logits=log_phi[z]).log_prob`` would broadcast the word ids
    against a ``(..., V)`` table and allocate ``K x B x L x V`` numbers under enumeration.)
    ``log_phi`` ``(K, V)`` rows must be normalised; ``batch_shape = z.shape``."""

    arg_constraints = {}
    has_enumerate_support = False

    def __init__(self, log_phi: torch.Tensor, z: torch.Tensor, validate_args=None):
        self.log_phi, self.z = log_phi, z
        super().__init__(z.shape, torch.Size(), validate_args=validate_args)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:
        return constraints.integer_interval(0, self.log_phi.shape[-1] - 1)

    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> "WordGivenTopic":
        return WordGivenTopic(self.log_phi, self.z.expand(batch_shape), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.log_phi[self.z, value.long()]

    def sample(self, sample_shape: Sequence[int] = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return dist.Categorical(logits=self.log_phi[self.z]).sample(sample_shape)


def counts_to_tokens(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts ``(B, V)`` -> word ids ``(B, L)`` (int64) and mask ``(B, L)`` (bool), L = longest document.

    Words of a document come in vocabulary order (order does not matter to a bag of words);
    padded positions hold word 0 and mask ``False``.
    """
    b, v = counts.shape
    c = counts.long()
    lengths = c.sum(1)
    length = max(int(lengths.max()), 1) if b else 1
    words = torch.arange(v, device=counts.device).expand(b, v).reshape(-1)
    flat_words = torch.repeat_interleave(words, c.reshape(-1))
    doc = torch.repeat_interleave(torch.arange(b, device=counts.device), lengths)
    pos = torch.arange(flat_words.numel(), device=counts.device) - (lengths.cumsum(0) - lengths)[doc]
    tokens = torch.zeros(b, length, dtype=torch.long, device=counts.device)
    mask = torch.zeros(b, length, dtype=torch.bool, device=counts.device)
    tokens[doc, pos] = flat_words
    mask[doc, pos] = True
    return tokens, mask


def batch_norm(layer: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm over every leading dim (vectorised samples ``(S, B, C)`` too); a batch of one
    document in training uses the running statistics instead of failing."""
    flat = x.reshape(-1, x.shape[-1])
    use_batch = layer.training and flat.shape[0] > 1
    out = F.batch_norm(flat, layer.running_mean, layer.running_var, layer.weight, layer.bias,
                       use_batch, layer.momentum, layer.eps)
    return out.reshape(x.shape)


class Encoder(nn.Module):
    """counts ``(B, V)`` -> two ``(B, K)`` outputs through 2 softplus layers, dropout and batch norm
    (the encoder of Srivastava & Sutton; batch norm without affine terms)."""

    def __init__(self, vocab_size: int, num_topics: int, hidden: int = 100, dropout: float = 0.2):
        super().__init__()
        hidden = validation.positive_int("hidden", hidden)
        dropout = validation.Number(0.0, strict=False, maximum=0.99)("dropout", dropout)
        self.fc1 = nn.Linear(vocab_size, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(dropout)
        self.fc_a = nn.Linear(hidden, num_topics)
        self.fc_b = nn.Linear(hidden, num_topics)
        self.bn_a = nn.BatchNorm1d(num_topics, affine=False)
        self.bn_b = nn.BatchNorm1d(num_topics, affine=False)

    def forward(self, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.drop(F.softplus(self.fc2(F.softplus(self.fc1(counts)))))
        return batch_norm(self.bn_a, self.fc_a(h)), batch_norm(self.bn_b, self.fc_b(h))


def check_topics(vocab_size: int, num_topics: int) -> None:
    validation.Integer(2)("num_topics (K < 2 is not a topic model)", num_topics)
    validation.Integer(2)("vocab_size", vocab_size)


def alpha_vector(alpha: float | torch.Tensor, k: int, what: str = "alpha") -> torch.Tensor:
    a = torch.as_tensor(alpha, dtype=torch.float32)
    a = a.expand(k).clone() if a.dim() == 0 else a
    if a.shape != (k,) or not bool((a > 0).all()):
        raise ValueError(f"{what} must be a positive number or a ({k},) vector of positive numbers")
    return a
