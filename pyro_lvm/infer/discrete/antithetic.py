"""ARM and DisARM for any pair: antithetic, unbiased gradients for Bernoulli and categorical sites.

For ``b ~ Bernoulli(sigmoid(a))`` written through a uniform ``u``, the antithetic pair is
``b = 1[u < sigmoid(a)]`` and ``b~ = 1[1 - u < sigmoid(a)]``; with ``f`` the cost of the site
(its datapoint's ``log p - log q`` and what depends on it):

* **ARM** (Yin & Zhou 2019): ``g_a = (f(b~) - f(b)) (u - 1/2)``;
* **DisARM** (Dong, Mnih & Tucker 2020): ``u`` integrated out given the pair,
  ``g_a = 1/2 (f(b) - f(b~)) (-1)^{b~} 1[b != b~] sigmoid(|a|)``, never noisier than ARM.

Both are per coordinate of a vector of independent Bernoullis with ``f`` the joint cost, and
cost two model evaluations per pair (vectorised: one pass over ``2 * pairs`` particles).

**Categorical sites** (``Categorical`` or ``OneHotCategorical``) use the stick-breaking coupling
of Dong, Mnih & Tucker (2021), "Coupled gradient estimators for discrete latent variables":
a K-way categorical is the first success among K-1 *independent* Bernoullis with logits
``l_j - logsumexp(l_{j+1..K})`` (classes in ascending order of their logits, as in their
code), so the estimator above applies to those Bernoullis, exactly and unbiasedly, and the
chain rule carries the gradient to the categorical logits. (Their importance-weighted
refinement is not implemented.)

Several discrete sites: for the k-th site (guide order), a group of particle pairs shares the
values of every site sampled before it and draws the ones after it independently, so each
site's pairs differ only at that site and downstream. ``K`` sites cost ``2 K`` evaluations
per pair.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ...traces import unwrap_independent
from .particles import (ParticleEstimator, ParticleSampler, ParticleTraces, Structure, StructureChanged, as_loss,
                        event_view,
                        logit_event_dims, regroup, share, ungroup)


def stick_breaking_logits(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(binary logits (..., K-1), class order (..., K))`` of the stick-breaking representation.

    Classes are taken in ascending order of ``logits`` (no gradient through the order);
    binary j decides "class order[j]" against every later class.
    """
    order = logits.detach().argsort(-1)
    ordered = logits.gather(-1, order)
    tail = torch.logcumsumexp(ordered.flip(-1), -1).flip(-1)   # logsumexp of classes j.. K-1
    return ordered[..., :-1] - tail[..., 1:], order


def first_success(binary: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Class index from the stick-breaking binaries ``(..., K-1)``: the first 1, else the last class."""
    k = order.shape[-1]
    hit = binary.any(-1)
    position = torch.where(hit, binary.float().argmax(-1), torch.full_like(hit, k - 1, dtype=torch.long))
    return order.gather(-1, position.unsqueeze(-1)).squeeze(-1)


class AntitheticSampler(ParticleSampler):
    """Guide values for ``len(structure.sites)`` groups of ``pairs`` antithetic pairs each."""

    def __init__(self, structure: Structure, pairs: int):
        super().__init__(structure.max_plate_nesting)
        self.structure = structure
        self.pairs = pairs
        self.groups = len(structure.sites) * pairs
        self.seen = 0
        # site -> (binary logits, u, b, b~, event dims of the logits)
        self.records: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]] = {}

    def _groups_after(self, m: int, like: torch.Tensor) -> torch.Tensor | None:
        """Groups whose site index is >= m (they share the sites sampled before their own); None if all are."""
        if m == 0:
            return None
        return torch.arange(self.groups, device=like.device) // self.pairs >= m

    def sample_site(self, msg: dict, axis: int) -> None:
        fn = msg["fn"]
        sites = len(self.structure.sites)
        j = self.structure.check(msg["name"], fn, self.seen)
        if j is None:
            value = self.draw(fn)
            if self.seen < sites:  # some groups' own site comes later: they share this value
                value = share(value, axis, self.groups, self._groups_after(self.seen, value))
            msg["value"] = value
            return
        self.seen += 1
        # the other groups' values: shared by the groups whose own site comes later, independent otherwise
        value = None
        if sites > 1:
            value = self.draw(fn)
            if j < sites - 1:
                value = share(value, axis, self.groups, self._groups_after(j + 1, value))
        msg["value"] = self._antithetic(msg["name"], fn, value, axis, j)

    def _antithetic(self, name: str, fn: Any, value: torch.Tensor | None, axis: int, j: int) -> torch.Tensor:
        family = self.structure.families[name]
        base, _ = unwrap_independent(fn)
        mine = slice(j * self.pairs, (j + 1) * self.pairs)
        logits = regroup(base.logits, axis, self.groups)[mine, 0]        # (pairs, *site shape[, K])
        if family == "bernoulli":
            binary_logits, order = logits, None
        else:
            binary_logits, order = stick_breaking_logits(logits)
        u = torch.rand_like(binary_logits)
        with torch.no_grad():
            p = torch.sigmoid(binary_logits)
            b, b_anti = (u < p), (1 - u < p)
        self.records[name] = (binary_logits, u, b, b_anti, logit_event_dims(fn, family))
        pair = torch.stack([b, b_anti], 1)
        if family == "bernoulli":
            pair = pair.to(logits.dtype)
        else:
            index = first_success(pair, order.unsqueeze(1).expand(*pair.shape[:-1], order.shape[-1]))
            pair = (torch.nn.functional.one_hot(index, order.shape[-1]).to(logits.dtype) if family == "one-hot"
                    else index)
        if value is None:  # every group is this site's
            return ungroup(pair, axis)
        grouped = regroup(value, axis, self.groups)
        grouped = torch.cat([grouped[:mine.start], pair, grouped[mine.stop:]], 0)
        return ungroup(grouped, axis)


class Antithetic(ParticleEstimator):
    """ARM (``disarm=False``) or DisARM over ``num_particles`` antithetic pairs per site."""

    def __init__(self, disarm: bool, num_particles: int = 1):
        super().__init__(num_particles)
        self.disarm = disarm
        self.name = "disarm" if disarm else "arm"
        self.sites = 1

    @property
    def model_evaluations(self) -> int:
        return 2 * self.num_particles * self.sites

    def loss(self, model: Callable, guide: Callable, args: tuple, kwargs: dict, structure: Structure
             ) -> tuple[torch.Tensor, dict[str, float]]:
        pairs = self.num_particles
        self.sites = len(structure.sites)
        sampler = AntitheticSampler(structure, pairs)
        traces = ParticleTraces(model, guide, args, kwargs, num_particles=2 * sampler.groups,
                                max_plate_nesting=structure.max_plate_nesting, sampler=sampler)
        if sampler.seen != len(structure.sites):
            raise StructureChanged("a handled site did not appear")
        costs, value, stats = self.elbo(traces, structure.sites)
        if not torch.is_grad_enabled():
            return -value, stats
        surrogate = value
        for j, name in enumerate(structure.sites):
            logits, u, b, b_anti, event_dims = sampler.records[name]
            cost = regroup(traces.front(costs[name]), 0, sampler.groups)[j * pairs:(j + 1) * pairs]
            diff = event_view(cost[:, 0] - cost[:, 1], event_dims)   # f(b) - f(b~), per datapoint
            if self.disarm:
                sign = 1 - 2 * b_anti.to(diff.dtype)
                grad = 0.5 * diff * sign * (b != b_anti).to(diff.dtype) * torch.sigmoid(logits.detach().abs())
            else:
                grad = -diff * (u - 0.5)
            surrogate = surrogate + (logits * grad.detach()).sum() / pairs
        return as_loss(value, traces.with_plain_score(surrogate, structure.sites)), stats
