"""Emission models for :class:`pyro_lvm.models.hmm.hmm.HMM`, one class per observation type.

Each emission is an ``nn.Module`` over ``K = emission.num_states`` states with four jobs:

* ``check(x, mask, values)``: refuse observations of the wrong shape, and with ``values=True``
  outside its support (``ValueError`` naming them);
* ``log_likelihoods(x, prev=None)``: ``log p(x_t | z_t = k)`` for every sequence, step and state
  at once, ``(N, T, K)`` -- the fast path's only per-observation cost, so each is one matrix
  product or one gather rather than a broadcast over ``(N, T, K, D)``. ``prev`` ``(N, T, ...)``
  holds ``x_{t-1}`` (zeros before the first step) for emissions that condition on it;
* ``dist(z, prev)``: the Pyro distribution of one step given (possibly enumerated) states ``z``
  and the previous observation ``prev`` (``None`` at the first step) -- the ``pyro.markov`` path;
* ``expected_stats(x, gamma)`` / ``update(stats, pseudocount)``: the closed-form M-step of
  Baum-Welch from posterior marginals ``gamma`` ``(N, T, K)`` (statistics add over batches).

``uses_previous = True`` marks those: they are given ``prev`` (from zero-padded ``x``: an
unobserved previous step reads as zeros), and the others ignore it. Either way the HMM evaluates
only the observed steps, so padding is never read.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ...validation import positive_int


def previous_steps(x: torch.Tensor) -> torch.Tensor:
    """``x_{t-1}`` at every step of ``x`` ``(N, T, ...)``, zeros before the first."""
    return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)


def check_num_states(num_states: int) -> int:
    return positive_int("num_states (the number of states)", num_states)


class BernoulliEmission(nn.Module):
    """Independent Bernoulli per dimension (e.g. the 88 keys of a piano roll); ``x`` ``(N, T, D)`` in {0, 1}."""

    uses_previous = False

    def __init__(self, num_states: int, dim: int, init_scale: float = 1.0):
        super().__init__()
        self.num_states = check_num_states(num_states)
        positive_int("dim", dim)
        self.dim = dim
        # Random logits around "mostly off" break the symmetry between states.
        self.logits = nn.Parameter(init_scale * torch.randn(num_states, dim) - 2.0)

    def check(self, x: torch.Tensor, mask: torch.Tensor, values: bool = True) -> None:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"Bernoulli emissions need x of shape (N, T, {self.dim}), got {tuple(x.shape)}")
        if not values:
            return
        bad = (x * (1 - x) != 0) & mask.unsqueeze(-1)  # 0/1 only; padding may hold anything
        if bool(bad.any()):
            raise ValueError(f"Bernoulli emissions need 0/1 observations; found {x[bad][0].item()!r}")

    def sanitize(self, x: torch.Tensor, mask: torch.Tensor, padded: bool) -> torch.Tensor:
        x = x.float()
        return x.masked_fill(~mask.unsqueeze(-1), 0.0) if padded else x

    def log_likelihoods(self, x: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        # sum_d x log p + (1 - x) log(1 - p) = x @ logits.T + sum_d log(1 - p): one matrix product
        # (N, T, D) @ (D, K), since log sigmoid(l) - log sigmoid(-l) = l.
        return x @ self.logits.T + F.logsigmoid(-self.logits).sum(-1)

    def dist(self, z: torch.Tensor, prev: torch.Tensor | None) -> dist.Distribution:
        return dist.Bernoulli(logits=self.logits[z]).to_event(1)

    def expected_stats(self, x: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return gamma.sum(dim=(0, 1)), torch.einsum("ntk,ntd->kd", gamma, x)

    @torch.no_grad()
    def update(self, stats: tuple[torch.Tensor, ...], pseudocount: float) -> None:
        weight, on = stats
        p = (on + pseudocount) / (weight.unsqueeze(-1) + 2 * pseudocount)
        self.logits.copy_(torch.logit(p.clamp(1e-6, 1 - 1e-6)))


class OrderedBernoulli(dist.TorchDistribution):
    """Bernoulli per dimension where dimension ``d`` also sees dimensions ``< d`` of the same
    draw: ``logits_d = base_d + sum_{j<d} weight[d, j] x_j`` (a fully visible sigmoid belief net,
    Frey 1998). Normalised: each factor is a Bernoulli given what comes before it.
    ``base`` ``(..., D)``; ``weight`` ``(D, D)``, only its strictly lower triangle used."""

    arg_constraints = {"base": dist.constraints.real}
    support = dist.constraints.independent(dist.constraints.boolean, 1)

    def __init__(self, base: torch.Tensor, weight: torch.Tensor, validate_args=None):
        self.base, self.weight = base, weight.tril(-1)
        super().__init__(base.shape[:-1], base.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return OrderedBernoulli(self.base.expand(*batch_shape, self.base.shape[-1]), self.weight)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logits = self.base + value @ self.weight.T
        return -F.binary_cross_entropy_with_logits(logits, value.expand_as(logits), reduction="none").sum(-1)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            base = self.base.expand(*sample_shape, *self.base.shape)
            x = torch.zeros_like(base)
            for d in range(base.shape[-1]):  # one dimension after another, each seeing the ones before
                x[..., d] = torch.bernoulli(torch.sigmoid(base[..., d] + x @ self.weight[d]))
            return x


class NeuralBernoulliEmission(BernoulliEmission):
    """Bernoulli per dimension with logits from a small network of the state and the previous
    frame, in the spirit of Pyro ``examples/hmm.py`` model 7:
    ``logits = W relu(E[z] + V x_{t-1}) + U x_{t-1} + b``. The direct path ``U`` lets a key
    depend on the previous frame without squeezing through the ``hidden`` units.

    ``within_frame=True`` adds ``+ L x_t`` with ``L`` strictly lower triangular: key ``d`` also
    sees the keys below it in the same frame (:class:`OrderedBernoulli`), so notes sounding
    together are no longer independent given the state. Still a normalised ``p(x_t | z_t,
    x_{t-1})``.

    No closed-form M-step: train it by gradient (``fit``).
    """

    uses_previous = True

    def __init__(self, num_states: int, dim: int, hidden: int = 16, within_frame: bool = False):
        nn.Module.__init__(self)
        self.num_states = check_num_states(num_states)
        positive_int("dim", dim), positive_int("hidden", hidden)
        self.dim = dim
        self.state_to_hidden = nn.Embedding(num_states, hidden)
        self.prev_to_hidden = nn.Linear(dim, hidden)
        self.hidden_to_logits = nn.Linear(hidden, dim)
        self.prev_to_logits = nn.Linear(dim, dim, bias=False)
        self.within = nn.Parameter(torch.zeros(dim, dim)) if within_frame else None

    def _logits(self, state_hidden: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        return self.hidden_to_logits(F.relu(state_hidden + self.prev_to_hidden(prev))) + self.prev_to_logits(prev)

    def log_likelihoods(self, x: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        prev = previous_steps(x) if prev is None else prev
        logits = self._logits(self.state_to_hidden.weight, prev.unsqueeze(-2))  # (N, T, K, D)
        if self.within is not None:
            logits = logits + (x @ self.within.tril(-1).T).unsqueeze(-2)
        return -F.binary_cross_entropy_with_logits(
            logits, x.unsqueeze(-2).expand_as(logits), reduction="none").sum(-1)

    def dist(self, z: torch.Tensor, prev: torch.Tensor | None) -> dist.Distribution:
        if prev is None:
            prev = torch.zeros(self.dim, device=z.device)
        logits = self._logits(self.state_to_hidden(z), prev)
        if self.within is not None:
            return OrderedBernoulli(logits, self.within)
        return dist.Bernoulli(logits=logits).to_event(1)

    def expected_stats(self, x, gamma):
        raise NotImplementedError("the neural emission has no closed-form M-step; train it with fit()")

    update = expected_stats


class AutoregressiveBernoulliEmission(BernoulliEmission):
    """Bernoulli per dimension whose probability depends on the state and on the same dimension's
    value at the previous step (the "arHMM" of Pyro ``examples/hmm.py``, model 2): ``logits[k, j, d]``
    with ``j = x_{t-1, d}`` (``x_0 = 0``). ``x`` ``(N, T, D)`` in {0, 1}. Baum-Welch has a closed
    form: the counts of ``x_{t, d} = 1`` split by ``x_{t-1, d}``.
    """

    uses_previous = True

    def __init__(self, num_states: int, dim: int, init_scale: float = 1.0):
        nn.Module.__init__(self)
        self.num_states = check_num_states(num_states)
        positive_int("dim", dim)
        self.dim = dim
        self.logits = nn.Parameter(init_scale * torch.randn(num_states, 2, dim) - 2.0)

    def log_likelihoods(self, x: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        # With l = l0 + p (l1 - l0) for the previous value p in {0, 1}: sum_d x l + log sigmoid(-l)
        # = x @ l0 + (x p) @ (l1 - l0) + sum_d c0 + p @ (c1 - c0), c_j = log sigmoid(-l_j).
        prev = previous_steps(x) if prev is None else prev
        l0, l1 = self.logits.unbind(1)
        c0, c1 = F.logsigmoid(-l0), F.logsigmoid(-l1)
        return x @ l0.T + (x * prev) @ (l1 - l0).T + prev @ (c1 - c0).T + c0.sum(-1)

    def dist(self, z: torch.Tensor, prev: torch.Tensor | None) -> dist.Distribution:
        l0, l1 = self.logits[z].unbind(-2)
        if prev is None:
            return dist.Bernoulli(logits=l0).to_event(1)
        return dist.Bernoulli(logits=l0 + prev * (l1 - l0)).to_event(1)

    def expected_stats(self, x: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        prev = previous_steps(x)
        weight1, on1 = (torch.einsum("ntk,ntd->kd", gamma, v) for v in (prev, x * prev))
        weight, on = gamma.sum(dim=(0, 1)).unsqueeze(-1), torch.einsum("ntk,ntd->kd", gamma, x)
        return weight - weight1, on - on1, weight1, on1

    @torch.no_grad()
    def update(self, stats: tuple[torch.Tensor, ...], pseudocount: float) -> None:
        weight0, on0, weight1, on1 = stats
        p = torch.stack([(on0 + pseudocount) / (weight0 + 2 * pseudocount),
                         (on1 + pseudocount) / (weight1 + 2 * pseudocount)], dim=1)
        self.logits.copy_(torch.logit(p.clamp(1e-6, 1 - 1e-6)))


class CategoricalEmission(nn.Module):
    """One categorical symbol per step (e.g. a word id); ``x`` ``(N, T)`` long in ``[0, V)``."""

    uses_previous = False

    def __init__(self, num_states: int, vocab_size: int, init_scale: float = 1.0):
        super().__init__()
        self.num_states = check_num_states(num_states)
        positive_int("vocab_size", vocab_size)
        self.vocab_size = vocab_size
        self.logits = nn.Parameter(init_scale * torch.randn(num_states, vocab_size))

    def check(self, x: torch.Tensor, mask: torch.Tensor, values: bool = True) -> None:
        if x.dim() != 2 or x.is_floating_point():
            raise ValueError(f"categorical emissions need integer x of shape (N, T), got {x.dtype} {tuple(x.shape)}")
        if not values:
            return
        observed = x[mask]
        bad = (observed < 0) | (observed >= self.vocab_size)
        if bool(bad.any()):
            raise ValueError(f"symbol id {observed[bad][0].item()} is outside the vocabulary [0, {self.vocab_size})")

    def sanitize(self, x: torch.Tensor, mask: torch.Tensor, padded: bool) -> torch.Tensor:
        return x.long().masked_fill(~mask, 0) if padded else x.long()

    def log_likelihoods(self, x: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        return F.log_softmax(self.logits, dim=-1).T[x]  # gather: (N, T) -> (N, T, K)

    def dist(self, z: torch.Tensor, prev: torch.Tensor | None) -> dist.Distribution:
        return dist.Categorical(logits=self.logits[z])

    def expected_stats(self, x: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        counts = torch.zeros(self.vocab_size, gamma.shape[-1], dtype=gamma.dtype, device=gamma.device)
        counts.index_add_(0, x.reshape(-1), gamma.reshape(-1, gamma.shape[-1]))
        return (counts.T,)

    @torch.no_grad()
    def update(self, stats: tuple[torch.Tensor, ...], pseudocount: float) -> None:
        self.logits.copy_((stats[0] + pseudocount).clamp(min=1e-30).log())


class FeatureCategoricalEmission(CategoricalEmission):
    """Categorical symbols with log-linear emissions over symbol features (the "feature HMM" of
    Berg-Kirkpatrick et al. 2010): ``logits[k, v] = sum_f weight[k, f] features[v, f]``, with
    ``features`` ``(V, F)`` (dense or sparse COO) e.g. word identity, suffixes, capitalisation.
    Rare words then share statistics with words that look alike.

    Train it by gradient on the fast path, or by Baum-Welch: the E-step's expected counts are
    those of :class:`CategoricalEmission`, and the M-step has no closed form, so ``update``
    runs ``m_steps`` L-BFGS iterations on the expected complete-data log-likelihood minus
    ``l2 * |weight|^2`` (a generalised EM step, warm-started from the current weights).
    """

    def __init__(self, num_states: int, features: torch.Tensor, init_scale: float = 0.01, l2: float = 1.0,
                 m_steps: int = 20):
        nn.Module.__init__(self)
        self.num_states = check_num_states(num_states)
        if features.dim() != 2 or features.shape[0] < 1 or features.shape[1] < 1:
            raise ValueError(f"features must be a (V, F) matrix, got shape {tuple(features.shape)}")
        if l2 < 0 or m_steps < 1:
            raise ValueError(f"need l2 >= 0 and m_steps >= 1, got {l2} and {m_steps}")
        self.vocab_size = features.shape[0]
        self.l2, self.m_steps = l2, m_steps
        self.register_buffer("features", features.float().coalesce() if features.is_sparse else features.float())
        self.weight = nn.Parameter(init_scale * torch.randn(num_states, features.shape[1]))

    @property
    def logits(self) -> torch.Tensor:
        """``(K, V)`` emission logits (recomputed from the weights at each call)."""
        if self.features.is_sparse:
            return torch.sparse.mm(self.features, self.weight.T).T
        return self.weight @ self.features.T

    @torch.enable_grad()
    def update(self, stats: tuple[torch.Tensor, ...], pseudocount: float) -> None:
        counts = stats[0]  # (K, V) expected emission counts; the pseudocount is replaced by l2
        opt = torch.optim.LBFGS([self.weight], max_iter=self.m_steps, history_size=10,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = -(counts * F.log_softmax(self.logits, dim=-1)).sum() + self.l2 * self.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)


class GaussianEmission(nn.Module):
    """Diagonal Gaussian per state; ``x`` ``(N, T, D)`` real."""

    uses_previous = False

    def __init__(self, num_states: int, dim: int, min_scale: float = 1e-3):
        super().__init__()
        self.num_states = check_num_states(num_states)
        positive_int("dim", dim)
        self.dim, self.min_scale = dim, min_scale
        self.loc = nn.Parameter(torch.randn(num_states, dim))
        self.log_scale = nn.Parameter(torch.zeros(num_states, dim))

    def check(self, x: torch.Tensor, mask: torch.Tensor, values: bool = True) -> None:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"Gaussian emissions need x of shape (N, T, {self.dim}), got {tuple(x.shape)}")
        if values and not bool(torch.isfinite(x[mask]).all()):
            raise ValueError("Gaussian emissions need finite observations; found NaN or inf")

    def sanitize(self, x: torch.Tensor, mask: torch.Tensor, padded: bool) -> torch.Tensor:
        x = x.float()
        return x.masked_fill(~mask.unsqueeze(-1), 0.0) if padded else x

    def scale(self) -> torch.Tensor:
        return self.log_scale.exp() + self.min_scale

    def log_likelihoods(self, x: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        # Expand the square so the (N, T, K) table is three matrix products, not a (N, T, K, D) tensor.
        prec = self.scale() ** -2
        quad = (x ** 2) @ prec.T - 2 * x @ (self.loc * prec).T + (self.loc ** 2 * prec).sum(-1)
        return -0.5 * quad - self.scale().log().sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)

    def dist(self, z: torch.Tensor, prev: torch.Tensor | None) -> dist.Distribution:
        return dist.Normal(self.loc[z], self.scale()[z]).to_event(1)

    def expected_stats(self, x: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (gamma.sum(dim=(0, 1)), torch.einsum("ntk,ntd->kd", gamma, x),
                torch.einsum("ntk,ntd->kd", gamma, x ** 2))

    @torch.no_grad()
    def update(self, stats: tuple[torch.Tensor, ...], pseudocount: float) -> None:
        weight, s1, s2 = stats
        weight = weight.unsqueeze(-1) + pseudocount
        mean = s1 / weight
        var = (s2 / weight - mean ** 2).clamp(min=self.min_scale ** 2 * 4)
        self.loc.copy_(mean)
        self.log_scale.copy_((var.sqrt() - self.min_scale).log())
