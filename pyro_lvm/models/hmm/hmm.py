"""Hidden Markov model as a Pyro model/guide pair, with swappable emissions and two inference paths.

    hmm = HMM(BernoulliEmission(16, 88), inference="fast")     # or inference="markov"
    fit(hmm, (x, mask), elbo=hmm.objective(), epochs=50, batch_size=32, lr=0.05)
    hmm.em_fit([(x, mask)], iterations=30)                     # or closed-form Baum-Welch
    paths, _ = hmm.viterbi(x, mask)

Shapes: ``x`` is ``(N, T, D)`` (vector emissions) or ``(N, T)`` (symbols); ``mask`` ``(N, T)``
bool, True where a step is observed (padding after a sequence's end is irrelevant: see
:mod:`pyro_lvm.models.hmm.inference`). The state at the first step has distribution ``init``.

* ``inference="markov"``: the way users write it -- one ``pyro.sample`` per step inside
  ``pyro.markov``, states enumerated in parallel, summed out by ``TraceEnum_ELBO`` (as Pyro's
  ``examples/hmm.py``). Readable, exact, slow.
* ``inference="fast"``: the same joint density, one ``pyro.factor`` holding the scaled forward
  algorithm over all sequences at once; train with ``Trace_ELBO``. ``hmm.objective()`` picks.

Parameters: ``"map"`` keeps point estimates of the initial and transition probabilities
(with a ``Dirichlet(concentration)`` prior term when ``concentration != 1``); ``"bayes"``
puts Dirichlet priors on them and learns a Dirichlet variational posterior for each row.
Emission parameters are always point estimates.

Mini-batches: the chain's terms (the ``"bayes"`` Dirichlet sites, the MAP prior factor) are
global and the sequences' terms local; ``hmm.objective(num_datapoints=N)`` scales a batch's
local terms to the whole training set of ``N`` sequences with the shared rule of
:func:`pyro_lvm.infer.scaling.full_data_elbo`.

:class:`HMMBase` holds everything that does not depend on how the hidden chain is built
(both inference paths, decoding, generation); the variants of Pyro's ``examples/hmm.py`` with
other chains (factorial, partially factorial, second order) are in :mod:`.hmm_family`.
"""

from __future__ import annotations

from typing import Any, Iterable

import warnings

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
from pyro.infer.util import is_validation_enabled
import torch
import torch.nn.functional as F
from torch import nn

from . import inference as inf
from .emissions import (AutoregressiveBernoulliEmission, BernoulliEmission, CategoricalEmission,
                        FeatureCategoricalEmission, GaussianEmission, NeuralBernoulliEmission, check_num_states,
                        previous_steps)
from ...infer.scaling import full_data_elbo
from ...validation import Integer, non_negative_number, positive_number

SEQUENCES = "sequences"  # the data plate: one sequence per datapoint

__all__ = ["HMM", "HMMBase", "AutoregressiveBernoulliEmission", "BernoulliEmission", "CategoricalEmission",
           "FeatureCategoricalEmission", "GaussianEmission", "NeuralBernoulliEmission", "lengths_to_mask"]


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """``(N,)`` sequence lengths -> ``(N, T)`` bool mask; refuses lengths below 1."""
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be a 1-d tensor, got shape {tuple(lengths.shape)}")
    if bool((lengths < 1).any()):
        raise ValueError(f"sequences of length 0 are not allowed (got length {int(lengths.min())})")
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device) < lengths.unsqueeze(-1)


class HMMBase(nn.Module):
    """A chain of discrete hidden states with per-step emissions, summed out exactly.

    Subclasses say how the chain is built; everything else lives here. The chain has
    ``num_states`` *joint* states (for a factorial chain, the pairs of its two chains' states),
    and joint state ``s`` emits with emission state ``emission_states[s]`` (the identity when
    ``None``). A subclass provides:

    * ``chain_factors(batch)``: the log-probability tables of the chain inside the model (it may
      sample global sites or add prior factors there), as a dict;
    * ``point_factors()``: the same tables from point estimates, outside any model;
    * ``joint_tables(factors)``: ``(log_init (S,), log_trans (S, S))`` over joint states, for the
      fast path and the decoders;
    * ``markov_step(t, factors, carry)``: the ``pyro.sample`` sites of step ``t`` on the markov
      path; returns ``(carry, emission_state)`` (``carry`` is what the next step conditions on);
    * ``markov_history``: how many steps back the chain looks (``pyro.markov(history=...)``).
    """

    markov_history = 1

    def __init__(self, emission: nn.Module, num_states: int, inference: str = "fast",
                 emission_states: torch.Tensor | None = None):
        super().__init__()
        self.num_states = check_num_states(num_states)
        if inference not in ("fast", "markov"):
            raise ValueError(f"inference must be 'fast' or 'markov', got {inference!r}")
        self.emission, self.inference = emission, inference
        if emission_states is not None:
            self.register_buffer("emission_states", emission_states.long())
        else:
            self.emission_states = None
            if emission.num_states != num_states:
                raise ValueError(f"emission has {emission.num_states} states but the chain has {num_states}")

    # ------------------------------------------------------------------ for subclasses

    def chain_factors(self, batch: int) -> dict[str, torch.Tensor]:
        return self.point_factors()

    def point_factors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def joint_tables(self, factors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def markov_step(self, t: int, factors: dict[str, torch.Tensor], carry: Any) -> tuple[Any, torch.Tensor]:
        raise NotImplementedError

    # ------------------------------------------------------------------ Pyro model and guide

    num_sequences: int | None = None  # deprecated: the size of the plate the model subsamples

    def objective(self, num_datapoints: int | None = None) -> Any:
        """The ELBO this pair is meant for: ``TraceEnum_ELBO`` for the markov path, else
        ``Trace_ELBO``; with ``num_datapoints`` (the number of training sequences) a batch's
        loss estimates the whole training set's by the shared rule of
        :func:`~pyro_lvm.infer.scaling.full_data_elbo` (sequence terms times ``N / batch``, the
        chain's global terms once)."""
        elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1) if self.inference == "markov" else pyro.infer.Trace_ELBO()
        return elbo if num_datapoints is None else full_data_elbo(elbo, num_datapoints, data_plate=SEQUENCES)

    def _sequences(self, x: torch.Tensor, **kwargs: Any) -> Any:
        """The data plate over ``x``'s sequences; of size ``num_sequences``, subsampled, for the
        deprecated argument (Pyro then scales the sequence terms as full_data_elbo does)."""
        if self.num_sequences is None:
            return pyro.plate(SEQUENCES, x.shape[0], **kwargs)
        return pyro.plate(SEQUENCES, self.num_sequences, subsample=torch.arange(x.shape[0], device=x.device), **kwargs)

    def elbo(self) -> Any:
        """Deprecated name of :meth:`objective`."""
        warnings.warn("HMM.elbo() is deprecated: use hmm.objective(), the name every pyro_lvm pair has",
                      DeprecationWarning, stacklevel=2)
        return self.objective()

    def model(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        x, mask = self.prepare(x, mask)
        factors = self.chain_factors(x.shape[0])
        if self.inference == "fast":
            log_lik = self._fast_log_likelihood(*self.joint_tables(factors), x, mask)
            with self._sequences(x):
                pyro.factor("log_lik", log_lik)
            return
        with self._sequences(x, dim=-1):
            carry = None
            for t in pyro.markov(range(x.shape[1]), history=self.markov_history):
                carry, state = self.markov_step(t, factors, carry)
                # Only the emission is masked: the chain keeps moving through unobserved steps.
                with poutine.mask(mask=mask[:, t]):
                    pyro.sample(f"x_{t}", self.emission.dist(state, x[:, t - 1] if t else None), obs=x[:, t])

    def guide(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        pass

    # ------------------------------------------------------------------ inputs

    def prepare(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Check ``x`` and ``mask``; return ``(x, bool mask)`` (``x`` with padding zeroed for
        emissions that read neighbouring steps).

        Shapes and lengths are always checked; observation values (0/1, ids inside the
        vocabulary, finite reals) while Pyro validation is enabled.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a tensor, got {type(x).__name__}")
        if x.dim() < 2:
            raise ValueError(f"x must have shape (N, T, ...), got {tuple(x.shape)}")
        n, t = x.shape[:2]
        if t == 0:
            raise ValueError("sequences of length 0: x has T = 0 steps")
        if mask is None:
            mask = torch.ones(n, t, dtype=torch.bool, device=x.device)
        elif mask.shape != (n, t):
            raise ValueError(f"mask has shape {tuple(mask.shape)} but x needs ({n}, {t})")
        mask = mask.bool()
        empty = (~mask.any(dim=1)).nonzero()
        if len(empty):
            raise ValueError(f"sequence {int(empty[0])} has length 0 (its mask is all False)")
        # Like Pyro's distributions, check values only while validation is on (the default):
        # on a full JSB pass the check costs about as much as the forward algorithm.
        self.emission.check(x, mask, values=is_validation_enabled())
        # Emissions are evaluated on observed steps only (emission_table), so padding is never
        # read there; emissions that see the previous step, and the markov path, get zeros.
        padded = not bool(mask.all()) and (self.inference == "markov" or self.emission.uses_previous)
        return self.emission.sanitize(x, mask, padded=padded), mask

    def emission_table(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``log p(x_t | joint state s)`` ``(N, T, S)``, evaluated on observed steps only (masked
        steps read 0; padding may hold anything unless the emission reads the previous step)."""
        n, steps = mask.shape
        if not bool(mask.all()):
            return self.emission_rows(x, torch.arange(n * steps, device=x.device), mask.reshape(-1)).view(n, steps, -1)
        table = self.emission.log_likelihoods(x, previous_steps(x) if self.emission.uses_previous else None)
        return table if self.emission_states is None else table.index_select(-1, self.emission_states)

    def emission_rows(self, x: torch.Tensor, rows: torch.Tensor, observed: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(x_t | joint state s)`` ``(R, S)`` at the steps ``rows`` ``(R,)`` (flat indices
        ``n * T + t``) of ``x``; with ``observed`` ``(R,)`` bool only those rows are evaluated and
        the others read 0, so what is not observed is never read."""
        if observed is not None:
            seen = observed.nonzero().squeeze(1)  # index_select: far cheaper than x[mask] here
            values = self.emission_rows(x, rows.index_select(0, seen))
            return values.new_zeros(len(rows), values.shape[-1]).index_copy(0, seen, values)
        n, steps = x.shape[:2]
        prev = previous_steps(x) if self.emission.uses_previous else None

        def at(v):
            return v.reshape(n * steps, *v.shape[2:]).index_select(0, rows)[None]

        values = self.emission.log_likelihoods(at(x), None if prev is None else at(prev))[0]
        return values if self.emission_states is None else values.index_select(-1, self.emission_states)

    def _fast_log_likelihood(self, log_init: torch.Tensor, log_trans: torch.Tensor, x: torch.Tensor,
                             mask: torch.Tensor) -> torch.Tensor:
        """``log p(x_n)`` ``(N,)`` by the forward algorithm; on a padded batch the emissions are
        evaluated on the packed steps (up to each sequence's end) only, never as an ``(N, T, S)``
        table that would be mostly padding (:func:`~pyro_lvm.models.hmm.inference.pack_sequences`)."""
        if bool(mask.all()):
            return inf.forward_log_likelihood(log_init, log_trans, self.emission_table(x, mask), mask)
        pack = inf.pack_sequences(mask)
        observed = None if pack.holes is None else ~pack.holes.squeeze(-1)
        return inf.packed_log_likelihood(log_init, log_trans, self.emission_rows(x, pack.rows, observed), pack)

    # ------------------------------------------------------------------ exact inference with point parameters

    def _tables(self, x, mask):
        return self._prepared_tables(x, mask)[1:]

    def _prepared_tables(self, x, mask):
        """``(prepared x, log_init, log_trans, log_emit, mask)`` under the point parameters."""
        x, mask = self.prepare(x, mask)
        log_init, log_trans = self.joint_tables(self.point_factors())
        return x, log_init, log_trans, self.emission_table(x, mask), mask

    def log_likelihood(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Exact ``log p(x_n)`` under the point parameters, ``(N,)``."""
        x, mask = self.prepare(x, mask)
        return self._fast_log_likelihood(*self.joint_tables(self.point_factors()), x, mask)

    @torch.no_grad()
    def viterbi(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Most probable joint-state paths ``(N, T)`` (``-1`` on padding) and their log joints ``(N,)``."""
        return inf.viterbi(*self._tables(x, mask))

    @torch.no_grad()
    def sample_states(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """One posterior draw of the joint-state paths ``(N, T)`` by forward-filter backward-sample."""
        return inf.sample_posterior(*self._tables(x, mask), generator=generator)

    def marginals(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior joint-state marginals ``(N, T, S)`` (zero rows on masked steps)."""
        return inf.posterior_marginals(*self._tables(x, mask))

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def sample(self, num_sequences: int, length: int, generator: torch.Generator | None = None):
        """Draw ``(joint states (N, T), x)`` from the model with its point parameters."""
        if num_sequences < 1 or length < 1:
            raise ValueError(f"need num_sequences >= 1 and length >= 1, got {num_sequences}, {length}")
        log_init, log_trans = self.joint_tables(self.point_factors())
        z = torch.multinomial(log_init.exp().expand(num_sequences, -1), 1, generator=generator).squeeze(1)
        states, xs = [], []
        for t in range(length):
            if t:
                z = torch.multinomial(log_trans.exp()[z], 1, generator=generator).squeeze(1)
            emitting = z if self.emission_states is None else self.emission_states[z]
            xs.append(self.emission.dist(emitting, xs[-1] if t else None).sample())
            states.append(z)
        return torch.stack(states, 1), torch.stack(xs, 1)


class HMM(HMMBase):
    """First-order discrete-state HMM with ``K = emission.num_states`` states over any emission of
    :mod:`.hmm_emissions` (see the module docstring for the arguments)."""

    def __init__(self, emission: nn.Module, num_states: int | None = None, inference: str = "fast",
                 parameters: str = "map", concentration: float = 1.0, num_sequences: int | None = None):
        if num_states is None:
            num_states = emission.num_states
        super().__init__(emission, num_states, inference)
        if parameters not in ("map", "bayes"):
            raise ValueError(f"parameters must be 'map' or 'bayes', got {parameters!r}")
        positive_number("concentration", concentration)
        self.parameter_mode = parameters
        self.concentration = float(concentration)
        if num_sequences is not None:
            warnings.warn("HMM(num_sequences=N) is deprecated: train with elbo=hmm.objective(num_datapoints=N), "
                          "the shared full-data scaling (pyro_lvm.infer.scaling.full_data_elbo). Until it goes, the model "
                          "subsamples a plate of N sequences, which scales the same way: a batch's loss is now "
                          "N / batch times what it was (the sequences' terms scaled up, not the chain's down)",
                          DeprecationWarning, stacklevel=2)
        self.num_sequences = Integer(1, optional=True)("num_sequences", num_sequences)
        k = num_states
        self.init_logits = nn.Parameter(0.1 * torch.randn(k))
        self.trans_logits = nn.Parameter(0.1 * torch.randn(k, k))
        if parameters == "bayes":
            # Variational Dirichlet concentrations, unconstrained (softplus keeps them positive).
            self.q_init = nn.Parameter(torch.full((k,), 2.0))
            self.q_trans = nn.Parameter(torch.full((k, k), 2.0) + 0.1 * torch.randn(k, k))

    # ------------------------------------------------------------------ the chain

    def chain_factors(self, batch: int) -> dict[str, torch.Tensor]:
        """``{"init": log p(z_0) (K,), "trans": log p(z_t | z_{t-1}) (K, K)}``: sampled (bayes) or
        point estimates (map, with the Dirichlet prior's log-density as a factor)."""
        k, c = self.num_states, self.concentration
        if self.parameter_mode == "bayes":
            device = self.q_init.device
            init = pyro.sample("init", dist.Dirichlet(torch.full((k,), c, device=device)))
            trans = pyro.sample("trans", dist.Dirichlet(torch.full((k, k), c, device=device)).to_event(1))
            return {"init": init.clamp(min=1e-30).log(), "trans": trans.clamp(min=1e-30).log()}
        factors = self.point_factors()
        if c != 1.0:  # MAP: add the Dirichlet log-density of the point estimate
            pyro.factor("dirichlet_prior", (c - 1) * (factors["init"].sum() + factors["trans"].sum()))
        return factors

    def point_factors(self) -> dict[str, torch.Tensor]:
        log_init, log_trans = self.point_estimates()
        return {"init": log_init, "trans": log_trans}

    def joint_tables(self, factors):
        return factors["init"], factors["trans"]

    def markov_step(self, t, factors, z):
        logits = factors["init"] if t == 0 else factors["trans"][z]
        z = pyro.sample(f"z_{t}", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})
        return z, z

    def guide(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        if self.parameter_mode == "bayes":
            pyro.sample("init", dist.Dirichlet(F.softplus(self.q_init)))
            pyro.sample("trans", dist.Dirichlet(F.softplus(self.q_trans)).to_event(1))

    def point_estimates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_init, log_trans)``: MAP values, or the variational posterior means ("bayes")."""
        if self.parameter_mode == "bayes":
            a, b = F.softplus(self.q_init), F.softplus(self.q_trans)
            return (a / a.sum()).log(), (b / b.sum(-1, keepdim=True)).log()
        return F.log_softmax(self.init_logits, -1), F.log_softmax(self.trans_logits, -1)

    # ------------------------------------------------------------------ Baum-Welch

    @torch.no_grad()
    def em_step(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]],
                emission_pseudocount: float = 1e-2) -> float:
        """One Baum-Welch iteration over all ``(x, mask)`` batches; returns the total log-likelihood
        before the update. MAP parameters only; adds ``concentration - 1`` pseudo-counts to the
        initial and transition rows."""
        if self.parameter_mode != "map":
            raise ValueError("em_step updates point estimates; use parameters='map'")
        k = self.num_states
        device = self.init_logits.device
        init_counts, trans_counts = torch.zeros(k, device=device), torch.zeros(k, k, device=device)
        stats, total = None, 0.0
        for x, mask in batches:
            x, log_init, log_trans, log_emit, mask = self._prepared_tables(x, mask)
            log_lik, c_init, c_trans, gamma = inf.expected_counts(log_init, log_trans, log_emit, mask)
            total += float(log_lik.sum())
            init_counts += c_init
            trans_counts += c_trans
            # Statistics weight x by gamma (0 on padding), so padding must hold zeros here.
            x = self.emission.sanitize(x, mask, padded=not bool(mask.all()))
            batch_stats = self.emission.expected_stats(x, gamma)
            stats = batch_stats if stats is None else tuple(a + b for a, b in zip(stats, batch_stats))
        if stats is None:
            raise ValueError("em_step got no batches")
        pseudo = self.concentration - 1.0
        self.init_logits.copy_((init_counts + pseudo).clamp(min=1e-30).log())
        self.trans_logits.copy_((trans_counts + pseudo).clamp(min=1e-30).log())
        self.emission.update(stats, emission_pseudocount)
        return total

    def em_fit(self, batches: list, iterations: int, emission_pseudocount: float = 1e-2,
               tol: float = 0.0, callback=None) -> list[float]:
        """Run ``em_step`` up to ``iterations`` times, stopping early once the relative change in
        log-likelihood is at most ``tol``; returns the log-likelihood before each step.
        ``callback(i, log_lik)`` after each."""
        non_negative_number("tol", tol)
        history: list[float] = []
        for i in range(iterations):
            history.append(self.em_step(batches, emission_pseudocount))
            if callback is not None:
                callback(i, history[-1])
            if len(history) > 1 and abs(history[-1] - history[-2]) <= tol * abs(history[-2]):
                break
        return history
