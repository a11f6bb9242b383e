"""Word emissions for part-of-speech induction beyond one categorical per state.

* :class:`EmbeddingGaussianEmission`: a Gaussian over each word's vector (word2vec, or any
  ``(V, D)`` table), optionally seen through a volume-preserving flow (He, Neubig &
  Berg-Kirkpatrick 2018, "Unsupervised Learning of Syntactic Structure with Invertible Neural
  Projections"): ``p(vec_x | z) = N(f(vec_x); mu_z, diag(s^2))`` with ``f`` a stack of additive
  coupling layers (NICE, Dinh et al. 2015), whose Jacobian determinant is 1, so the forward
  algorithm over ``f(vec)`` *is* the exact marginal likelihood of the vectors.
* :class:`NeuralCategoricalEmission`: a softmax over the vocabulary scored by state embeddings
  against word embeddings and character-CNN features (Tran et al. 2016, "Unsupervised Neural
  Hidden Markov Models"), trained by gradient on the exact marginal likelihood.

Both take word ids ``(N, T)`` like :class:`.hmm_emissions.CategoricalEmission`, and compute their
table over the vocabulary once per call, then gather it for the tokens.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .emissions import CategoricalEmission, check_num_states
from ...validation import Integer, positive_number

__all__ = ["AdditiveCoupling", "EmbeddingGaussianEmission", "NeuralCategoricalEmission", "VolumePreservingFlow",
           "char_ids", "char_windows"]


class AdditiveCoupling(nn.Module):
    """``(a, b) -> (a, b + m(a))`` on the two halves of the last dimension (``flip`` swaps which
    half is kept); ``m`` a one-hidden-layer ReLU network. Invertible, Jacobian determinant 1."""

    def __init__(self, dim: int, hidden: int, flip: bool):
        super().__init__()
        self.half, self.flip = dim // 2, flip
        kept = dim - self.half if flip else self.half
        self.net = nn.Sequential(nn.Linear(kept, hidden), nn.ReLU(), nn.Linear(hidden, dim - kept))
        nn.init.zeros_(self.net[-1].weight)  # starts as the identity
        nn.init.zeros_(self.net[-1].bias)

    def _split(self, v):
        a, b = v[..., : self.half], v[..., self.half:]
        return (b, a) if self.flip else (a, b)

    def _join(self, kept, moved):
        return torch.cat([moved, kept] if self.flip else [kept, moved], dim=-1)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        kept, moved = self._split(v)
        return self._join(kept, moved + self.net(kept))

    def inverse(self, v: torch.Tensor) -> torch.Tensor:
        kept, moved = self._split(v)
        return self._join(kept, moved - self.net(kept))


class VolumePreservingFlow(nn.Module):
    """``layers`` additive couplings, alternating halves (He et al. 2018 use 4)."""

    def __init__(self, dim: int, layers: int = 4, hidden: int | None = None):
        super().__init__()
        if dim < 2 or layers < 1:
            raise ValueError(f"a coupling flow needs dim >= 2 and layers >= 1, got dim={dim}, layers={layers}")
        self.layers = nn.ModuleList(AdditiveCoupling(dim, hidden or dim, flip=i % 2 == 1) for i in range(layers))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            v = layer(v)
        return v

    def inverse(self, v: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            v = layer.inverse(v)
        return v


class _VectorDensity(dist.TorchDistribution):
    """Distribution of a word id whose ``log_prob`` is the density of the word's (projected) vector
    under ``base`` (a Gaussian over vectors), plus ``extra(ids)`` (the spelling class's log-probability,
    or 0): the markov path's view of an embedding emission."""

    arg_constraints: dict = {}
    support = dist.constraints.nonnegative_integer

    def __init__(self, base: dist.Distribution, embed, extra=None):
        self.base, self.embed, self.extra = base, embed, extra
        super().__init__(base.batch_shape, validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return _VectorDensity(self.base.expand(batch_shape), self.embed, self.extra)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        log_density = self.base.log_prob(self.embed(value))
        return log_density if self.extra is None else log_density + self.extra(value)

    def sample(self, sample_shape=torch.Size()):
        raise NotImplementedError("a Gaussian over word vectors is a density, not a distribution over words: "
                                  "it cannot generate word ids")


class EmbeddingGaussianEmission(CategoricalEmission):
    """Gaussian over word vectors, with word ids in (see the module docstring).

    ``vectors`` ``(V, D)`` is the vector of each vocabulary word (e.g. from
    :meth:`pyro_lvm.data.word_vectors.WordVectors.lookup`); ``frequencies`` ``(V,)`` token counts
    used to initialise the means (the token mean plus ``init_noise`` standard deviations of
    noise, unless ``init_means`` ``(K, D)`` are given) and the variance. ``scale``: ``"fixed"``
    one diagonal variance, the tokens' (He et al. 2018); ``"shared"`` one diagonal variance,
    learned; ``"state"`` one per state.
    ``variance_scale`` multiplies the tokens' variance used as (or to start) the variance: above
    1 it flattens the emission densities, so the transitions weigh more against them.
    ``flow_layers > 0`` adds the volume-preserving projection. ``spelling`` ``(V,)`` gives each
    word a spelling class (e.g. :func:`pyro_lvm.data.tagged_text.word_shape`: capital, digits,
    suffix); each state then also has a categorical over the classes, and a word's vector and its
    class are two views of it, independent given the state -- what vectors trained on a small
    text miss about morphology (``-s``, ``-ing``, capitals) the class says. Baum-Welch updates
    the Gaussians and the class probabilities in closed form given the current projection; the
    projection itself is trained by gradient (``fit`` or Adam on the fast path).
    """

    uses_previous = False

    def __init__(self, num_states: int, vectors: torch.Tensor, frequencies: torch.Tensor | None = None,
                 scale: str = "fixed", flow_layers: int = 0, flow_hidden: int | None = None, init_noise: float = 0.04,
                 min_variance: float = 1e-4, spelling: torch.Tensor | None = None,
                 init_means: torch.Tensor | None = None, variance_scale: float = 1.0):
        nn.Module.__init__(self)
        self.num_states = check_num_states(num_states)
        if vectors.dim() != 2 or len(vectors) < 1:
            raise ValueError(f"vectors must be a (V, D) table, got shape {tuple(vectors.shape)}")
        if not bool(torch.isfinite(vectors).all()):
            raise ValueError("vectors hold NaN or inf")
        if scale not in ("fixed", "shared", "state"):
            raise ValueError(f"scale must be 'fixed', 'shared' or 'state', got {scale!r}")
        positive_number("variance_scale", variance_scale)
        self.vocab_size, self.dim = vectors.shape
        if frequencies is None:
            frequencies = torch.ones(self.vocab_size)
        if frequencies.shape != (self.vocab_size,) or bool((frequencies < 0).any()) or not float(frequencies.sum()) > 0:
            raise ValueError(f"frequencies must be {self.vocab_size} non-negative counts, not all zero")
        self.scale_mode, self.min_variance = scale, min_variance
        self.register_buffer("vectors", vectors.float())
        self.flow = VolumePreservingFlow(self.dim, flow_layers, flow_hidden) if flow_layers else None
        w = frequencies.float() / frequencies.sum()
        mean = w @ self.vectors
        var = (variance_scale * (w @ (self.vectors - mean) ** 2)).clamp(min=min_variance)
        if init_means is not None and init_means.shape != (num_states, self.dim):
            raise ValueError(f"init_means must be ({num_states}, {self.dim}), got {tuple(init_means.shape)}")
        start = mean + init_noise * var.sqrt() * torch.randn(num_states, self.dim) if init_means is None else init_means
        self.loc = nn.Parameter(start.float().clone())
        log_var = var.log().expand(num_states if scale == "state" else 1, -1).clone()
        if scale == "fixed":
            self.register_buffer("log_var", log_var)
        else:
            self.log_var = nn.Parameter(log_var)
        if spelling is not None:
            if spelling.shape != (self.vocab_size,) or spelling.is_floating_point() or bool((spelling < 0).any()):
                raise ValueError(f"spelling must hold a class id >= 0 for each of the {self.vocab_size} words")
            self.spelling_logits = nn.Parameter(0.1 * torch.randn(num_states, int(spelling.max()) + 1))
            spelling = spelling.long()
        self.register_buffer("spelling", spelling)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """The (projected) vectors of word ids ``(...,)`` -> ``(..., D)``."""
        v = self.vectors[ids]
        return v if self.flow is None else self.flow(v)

    def _gaussian_table(self, e: torch.Tensor) -> torch.Tensor:
        """``log N(e_u; mu_k, diag var_k)`` for rows ``e`` ``(U, D)`` -> ``(U, K)``."""
        prec = (-self.log_var).exp()
        quad = (e ** 2) @ prec.T - 2 * e @ (self.loc * prec).T + (self.loc ** 2 * prec).sum(-1)
        return -0.5 * (quad + self.log_var.sum(-1) + self.dim * math.log(2 * math.pi))

    def _table(self, ids: torch.Tensor) -> torch.Tensor:
        """``log p(vec_v [, class_v] | k)`` for word ids ``(U,)`` -> ``(U, K)``."""
        table = self._gaussian_table(self.embed(ids))
        if self.spelling is not None:
            table = table + F.log_softmax(self.spelling_logits, -1).T[self.spelling[ids]]
        return table

    def log_likelihoods(self, x: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        ids, inverse = torch.unique(x, return_inverse=True)  # each distinct word once
        return self._table(ids)[inverse]

    @property
    def logits(self) -> torch.Tensor:
        """``(K, V)`` log-densities of every vocabulary word (not normalised over words)."""
        return self._table(torch.arange(self.vocab_size, device=self.vectors.device)).T

    def dist(self, z: torch.Tensor, prev: torch.Tensor | None) -> dist.Distribution:
        scale = (0.5 * self.log_var).exp()
        base = dist.Normal(self.loc[z], scale[z] if self.scale_mode == "state" else scale[0]).to_event(1)
        extra = None
        if self.spelling is not None:
            spelling_log_probs = F.log_softmax(self.spelling_logits, -1)
            extra = lambda ids: spelling_log_probs[z, self.spelling[ids]]  # noqa: E731 (z broadcasts with ids)
        return _VectorDensity(base, self.embed, extra)

    @torch.no_grad()
    def update(self, stats: tuple[torch.Tensor, ...], pseudocount: float) -> None:
        """Closed-form M-step given the projection: ``pseudocount`` tokens of each state's current
        Gaussian are added to its expected counts, so an unused state keeps its parameters."""
        counts = stats[0]  # (K, V) expected emission counts
        if self.spelling is not None:
            per_class = counts.new_zeros(self.spelling_logits.shape).index_add_(1, self.spelling, counts)
            self.spelling_logits.copy_((per_class + pseudocount).log())
        e = self.embed(torch.arange(self.vocab_size, device=counts.device))
        old_loc, old_var = self.loc.clone(), self.log_var.exp()
        weight = counts.sum(1, keepdim=True) + pseudocount
        mean = (counts @ e + pseudocount * old_loc) / weight
        self.loc.copy_(mean)
        if self.scale_mode == "fixed":
            return
        second = counts @ e ** 2 + pseudocount * (old_loc ** 2 + old_var)  # (K, D) second moments
        if self.scale_mode == "state":
            var = second / weight - mean ** 2
        else:
            var = (second - weight * mean ** 2).sum(0, keepdim=True) / weight.sum()
        self.log_var.copy_(var.clamp(min=self.min_variance).log())


def char_windows(chars: torch.Tensor, kernel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(windows (P, kernel), word (P,))``: for every real character position of ``chars``
    ``(V, L)`` (:func:`char_ids`, 0 pads), the ids of the ``kernel`` characters centred on it (0
    beyond the word, as a zero-padded convolution sees them) and the word it belongs to."""
    Integer(1)("kernel", kernel)
    left = kernel // 2
    padded = F.pad(chars, (left, kernel - 1 - left))
    word, position = (chars != 0).nonzero(as_tuple=True)
    windows = torch.stack([padded[word, position + j] for j in range(kernel)], dim=-1)
    return windows, word


def char_ids(vocab: list[str], max_chars: int = 20) -> tuple[torch.Tensor, list[str]]:
    """``(ids (V, L) long, alphabet)``: each word's characters as ids ``1..C`` (0 pads). Words
    longer than ``max_chars`` keep their first 4 and last ``max_chars - 4`` characters (the
    suffix says most about the part of speech)."""
    if not vocab:
        raise ValueError("char_ids needs a non-empty vocabulary")
    Integer(5)("max_chars", max_chars)
    clipped = [w if len(w) <= max_chars else w[:4] + w[-(max_chars - 4):] for w in vocab]
    alphabet = sorted({c for w in clipped for c in w})
    index = {c: i + 1 for i, c in enumerate(alphabet)}
    ids = torch.zeros(len(vocab), max(1, max(map(len, clipped))), dtype=torch.long)
    for row, word in enumerate(clipped):
        ids[row, : len(word)] = torch.tensor([index[c] for c in word], dtype=torch.long)
    return ids, alphabet


class NeuralCategoricalEmission(CategoricalEmission):
    """Categorical over the vocabulary with ``logits[k, v] = h_k . u_v + b_v`` (Tran et al. 2016):
    ``h_k`` a two-layer network of a learned state embedding, ``u_v`` the concatenation of a word
    embedding (initialised from ``vectors`` when given) and character-CNN features of the word
    (max over positions of a width-``kernel`` convolution). Rare and unseen-looking words thus
    share statistics through their spelling. Train it by gradient on the exact marginal
    likelihood, or by generalised EM: the E-step's expected counts are those of
    :class:`CategoricalEmission`, and ``update`` takes ``m_steps`` Adam steps (rate ``m_lr``,
    its state kept across iterations) on the expected complete-data log-likelihood per token.
    """

    uses_previous = False

    def __init__(self, num_states: int, vocab: list[str], vectors: torch.Tensor | None = None, word_dim: int = 64,
                 char_dim: int = 16, channels: int = 64, kernel: int = 3, hidden: int = 128, max_chars: int = 20,
                 m_steps: int = 10, m_lr: float = 3e-3):
        nn.Module.__init__(self)
        self.num_states = check_num_states(num_states)
        if m_steps < 1 or not m_lr > 0:
            raise ValueError(f"need m_steps >= 1 and m_lr > 0, got {m_steps} and {m_lr}")
        self.vocab_size, self.m_steps, self.m_lr = len(vocab), m_steps, m_lr
        self._m_optimizer, self._cached = None, None
        chars, alphabet = char_ids(vocab, max_chars)
        self.register_buffer("chars", chars)
        windows, owner = char_windows(chars, kernel)  # derived from chars: not saved in the state dict
        self.register_buffer("windows", windows, persistent=False)
        self.register_buffer("window_word", owner, persistent=False)
        if vectors is not None:
            if vectors.shape[0] != len(vocab):
                raise ValueError(f"vectors has {vectors.shape[0]} rows but the vocabulary {len(vocab)} words")
            self.words = nn.Embedding.from_pretrained(vectors.float() / vectors.std(), freeze=False)
        else:
            self.words = nn.Embedding(len(vocab), word_dim)
        self.char_embedding = nn.Embedding(len(alphabet) + 1, char_dim, padding_idx=0)
        self.conv = nn.Conv1d(char_dim, channels, kernel, padding=kernel // 2)
        out = self.words.embedding_dim + channels
        self.states = nn.Embedding(num_states, hidden)
        self.state_net = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out))
        # Start from small scores: large random ones make the first gradient steps wild.
        nn.init.normal_(self.state_net[-1].weight, std=0.01)
        nn.init.zeros_(self.state_net[-1].bias)
        self.bias = nn.Parameter(torch.zeros(len(vocab)))

    def char_features(self) -> torch.Tensor:
        """Character-CNN features ``(V, channels)``: the max over each word's characters of
        ``relu(conv)``. The convolution runs once per step over every *type* and only at real
        character positions (``windows`` ``(P, kernel)``, ``P`` = the vocabulary's total length),
        one matrix product instead of a padded ``(V, channels, max_chars)`` convolution: the same
        numbers, several times faster (``benchmarks/neural_emission_speed.py`` times both)."""
        weight = self.conv.weight.permute(0, 2, 1).reshape(self.conv.out_channels, -1)  # (channels, kernel * char_dim)
        x = self.char_embedding(self.windows).reshape(len(self.windows), -1)  # (P, kernel * char_dim); pads embed to 0
        h = F.relu(x @ weight.T + self.conv.bias)  # (P, channels)
        out = h.new_zeros(self.vocab_size, h.shape[1])
        return out.scatter_reduce(0, self.window_word[:, None].expand_as(h), h, "amax", include_self=False)

    def word_features(self) -> torch.Tensor:
        """``u`` ``(V, word_dim + channels)``."""
        return torch.cat([self.words.weight, self.char_features()], dim=-1)

    @property
    def logits(self) -> torch.Tensor:
        """``(K, V)`` scores of every state against every word type (unnormalised)."""
        return self.state_net(self.states.weight) @ self.word_features().T + self.bias

    def log_table(self) -> torch.Tensor:
        """``log p(word v | state k)`` ``(K, V)``. Without gradients (an E-step, Viterbi, scoring)
        it is computed once and reused until a parameter changes: an E-step over many batches
        then pays for the character CNN and the softmax over the vocabulary once, not per batch."""
        if torch.is_grad_enabled():
            self._cached = None
            return F.log_softmax(self.logits, dim=-1)
        key = tuple((t.data_ptr(), t._version) for t in (*self.parameters(), *self.buffers()))
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, F.log_softmax(self.logits, dim=-1))
        return self._cached[1]

    def log_likelihoods(self, x: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        return self.log_table().T[x]  # the type table gathered for the tokens: (N, T) -> (N, T, K)

    @torch.enable_grad()
    def update(self, stats: tuple[torch.Tensor, ...], pseudocount: float) -> None:
        counts = stats[0]  # (K, V) expected emission counts
        if self._m_optimizer is None:
            self._m_optimizer = torch.optim.Adam(self.parameters(), lr=self.m_lr)
        total = counts.sum().clamp(min=1.0)
        for _ in range(self.m_steps):
            self._m_optimizer.zero_grad()
            loss = -(counts * F.log_softmax(self.logits, dim=-1)).sum() / total
            loss.backward()
            self._m_optimizer.step()
