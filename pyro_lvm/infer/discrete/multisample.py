"""Multi-sample score-function estimators for any pair: RLOO and VIMCO.

Both draw ``S`` independent samples of every latent per datapoint (one vectorised pass, see
:mod:`pyro_lvm.infer.discrete.particles`) and use the other samples as a baseline for each one.

* **RLOO** (Kool, van Hoof & Welling 2019, "Buy 4 REINFORCE samples, get a baseline for
  free!"): the ELBO's gradient ``(1/S) sum_s [(f_s - mean_{j != s} f_j) grad log q(z_s) +
  grad f_s]``, ``f`` the cost of the site (its datapoint's ``log p - log q``). Unbiased for
  the ELBO; the baseline of sample ``s`` does not depend on ``z_s``.
* **VIMCO** (Mnih & Rezende 2016): the gradient of the ``S``-sample bound ``L_S = log (1/S)
  sum_s w_s`` (IWAE), with per-sample learning signal ``L_S - L_S^{-s}``, where
  ``L_S^{-s}`` replaces ``log w_s`` by the mean of the others' (their geometric mean). Unbiased
  for ``L_S`` (not for the ELBO, which it bounds from below). The bound is taken per *unit*:
  the plates every site of the pair shares (the datapoint, for a per-datapoint pair; the
  whole batch when a global latent exists).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .particles import ParticleEstimator, ParticleSampler, ParticleTraces, Structure, as_loss


class _MultiSample(ParticleEstimator):
    """S independent samples per datapoint."""

    def __init__(self, num_particles: int = 2):
        if not isinstance(num_particles, int) or isinstance(num_particles, bool) or num_particles < 2:
            raise ValueError(f"the {self.name!r} estimator needs num_particles = S >= 2 samples per datapoint "
                             f"(each sample's baseline comes from the others), got {num_particles!r}")
        super().__init__(num_particles)

    def traces(self, model: Callable, guide: Callable, args: tuple, kwargs: dict, structure: Structure
               ) -> ParticleTraces:
        return ParticleTraces(model, guide, args, kwargs, num_particles=self.num_particles,
                              max_plate_nesting=structure.max_plate_nesting,
                              sampler=ParticleSampler(structure.max_plate_nesting))


class RLOO(_MultiSample):
    """REINFORCE with the leave-one-out baseline over ``num_particles`` samples per datapoint."""

    name = "rloo"

    def loss(self, model: Callable, guide: Callable, args: tuple, kwargs: dict, structure: Structure
             ) -> tuple[torch.Tensor, dict[str, float]]:
        s = self.num_particles
        traces = self.traces(model, guide, args, kwargs, structure)
        costs, value, stats = self.elbo(traces, structure.sites)
        if not torch.is_grad_enabled():
            return -value, stats
        surrogate = value
        for name in structure.sites:
            cost = traces.front(costs[name])
            advantage = (cost - (cost.sum(0, keepdim=True) - cost) / (s - 1)).detach()
            surrogate = surrogate + (traces.front(traces.log_q(name)) * advantage).sum() / s
        return as_loss(value, traces.with_plain_score(surrogate, structure.sites)), stats


class VIMCO(_MultiSample):
    """The ``S``-sample bound with per-sample leave-one-out control variates."""

    name = "vimco"

    def loss(self, model: Callable, guide: Callable, args: tuple, kwargs: dict, structure: Structure
             ) -> tuple[torch.Tensor, dict[str, float]]:
        s = self.num_particles
        traces = self.traces(model, guide, args, kwargs, structure)
        units = frozenset.intersection(*[frozenset(frames.values()) for _, frames in traces.terms()])
        log_w = traces.front(traces.cost(units))                       # (S, *unit dims)
        log_s = math.log(s)
        per_unit = torch.logsumexp(log_w, 0) - log_s
        bound = per_unit.sum()
        stats = {"bound": float(bound.detach()), "elbo": float(log_w.detach().mean(0).sum()),
                 "bound_particles": float(s)}
        if not torch.is_grad_enabled():
            return -bound, stats
        with torch.no_grad():
            # log w_s replaced by the mean of the others' log weights, for each s
            loo_mean = (log_w.sum(0, keepdim=True) - log_w) / (s - 1)
            eye = torch.eye(s, dtype=torch.bool, device=log_w.device).view(s, s, *([1] * (log_w.dim() - 1)))
            swapped = torch.where(eye, loo_mean.unsqueeze(1), log_w.unsqueeze(0))
            signal = per_unit - (torch.logsumexp(swapped, 1) - log_s)  # (S, *unit dims)
        surrogate = bound
        for name in structure.sites:
            surrogate = surrogate + (traces.front(traces.log_q(name, units)) * signal).sum()
        for name in traces.score_sites(set(structure.sites)):
            surrogate = surrogate + (traces.front(traces.log_q(name, units)) * per_unit.detach()).sum()
        return as_loss(bound, surrogate), stats
