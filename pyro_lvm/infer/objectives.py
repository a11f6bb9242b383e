"""Free bits (Kingma et al. 2016), per dimension as in Li et al. (2019), for any pair.

For every latent site ``z``, each of its dimensions' KL (see :func:`pyro_lvm.traces.kl_units`: the coordinates
of a ``Normal(loc, scale).to_event(1)`` over ``(batch, d)``, the variables of a
``OneHotCategorical(...).to_event(1)``; a scalar site or a ``MultivariateNormal`` is one
dimension), averaged over the batch, enters the loss as ``max(lambda, KL_d)``::

    loss = -sum_i E_q[log p(x_i | z_i)] + sum_sites sum_d  n * max(lambda, (1/n) sum_i KL(q(z_id|x_i) || p(z_id)))

(``n`` counts every batch element of the site, masked ones excluded). Dimensions that carry
less than ``lambda`` nats get no gradient pushing them towards the prior, so the encoder
cannot gain by collapsing them. The KL is analytic where PyTorch knows it for the guide and
prior distributions, a one-sample Monte-Carlo estimate (``log q(z) - log p(z)`` at the
sample) otherwise. ``lambda = 0`` is the plain ELBO exactly: the hinge is not applied, so it
also equals ``Trace_ELBO`` when the KL is Monte Carlo and an estimate comes out negative.

The hinge acts on KL terms, so it needs no ``rsample``: the reconstruction term's gradient
comes from whatever estimator a site uses. Reparameterised sites are differentiated through
their samples; sites without ``rsample`` (``Bernoulli``, ``Categorical``, ...) that are sampled
get a score-function term, each datapoint's site charged that datapoint's loss (the
hinge's floor is a constant); sites marked for parallel enumeration (``config_enumerate``)
are summed out exactly, so their KL and everything downstream is an expectation over them.
An autoguide's auxiliary draws and the point masses they feed enter as one Monte Carlo
term ``log q - log p``, which can be kept but not hinged (it is not a term of one site); a
point mass with no auxiliary draw (a MAP guide) has no KL to hinge either.

``per_dimension=False`` applies the hinge to each site's total KL instead (Kingma et al.'s
groups). Li et al.'s released code hinges every datapoint's ``KL_id`` on its own instead of the
batch mean; the two agree when the datapoints carry equal KL.

:class:`FreeBitsELBO` is a ``pyro.infer.Trace_ELBO`` that overrides how one particle's loss is
made from its traces (``_differentiable_loss_particle``, as Pyro's own ELBOs do), so
``num_particles``, ``vectorize_particles`` and ``max_plate_nesting`` work as in Pyro: each
particle is hinged on its own (the batch average runs over datapoints, never over particles),
so vectorised and sequential particles estimate the same objective.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import pyro.poutine as poutine
import torch
from pyro.infer import Trace_ELBO
from pyro.poutine.util import prune_subsample_sites

from ..base import batch_size as _batch_size
from ..traces import (data_plate_frame, enumeration_mark, is_auxiliary, is_latent_site, is_point_mass, kl_units,
                      pair_plate_nesting, replay_model, site_kl)
from .handlers import _selector
from ..validation import positive_int

PARTICLE_PLATE = "num_particles_vectorized"  # the plate Pyro's ELBO puts around a pair for vectorised particles


def _masked_value(value: torch.Tensor, mask: Any) -> torch.Tensor:
    """``value`` with 0 where a site's mask is False (the mask broadcasts from the right)."""
    if mask is None or mask is True:
        return value
    if mask is False:
        return torch.zeros_like(value)
    return torch.where(mask, value, torch.zeros((), dtype=value.dtype, device=value.device))


def _batch_size_or_none(args: tuple, kwargs: dict) -> int | None:
    try:
        return _batch_size(args[0] if len(args) == 1 and not kwargs else (args if args else kwargs))
    except ValueError:
        return None


def _particle_frame(site: dict) -> Any | None:
    """The frame of the vectorised particle plate ``site`` sits in (None without one)."""
    return next((f for f in site["cond_indep_stack"] if f.name == PARTICLE_PLATE), None)


def _sum_to(t: torch.Tensor, frames: list[Any]) -> torch.Tensor:
    """``t`` (right-aligned with its site's batch dims) summed over every dim but those of
    ``frames``: shape ``(f.size for f in frames)`` (a scalar for no frames)."""
    if not frames:
        return t.sum()
    depth = max(-f.dim for f in frames)
    if t.dim() < depth:
        t = t.reshape((1,) * (depth - t.dim()) + tuple(t.shape))
    t = t.movedim([f.dim for f in frames], list(range(len(frames))))
    return t.reshape(t.shape[:len(frames)] + (-1,)).sum(-1).expand(tuple(f.size for f in frames))


def _mask_like(mask: Any, shape: torch.Size, ref: torch.Tensor) -> torch.Tensor:
    """The site's mask as a float tensor of ``shape`` (ones where there is none)."""
    if mask is None or mask is True:
        return torch.ones(shape, dtype=ref.dtype, device=ref.device)
    if mask is False:
        return torch.zeros(shape, dtype=ref.dtype, device=ref.device)
    m = mask.to(ref.dtype)
    m = m.reshape(m.shape + (1,) * (len(shape) - m.dim())) if m.dim() < len(shape) else m
    return m.expand(shape)


def _log_q(site: dict) -> torch.Tensor:
    """A guide site's masked ``log q`` at its value (unscaled)."""
    return _masked_value(site["fn"].log_prob(site["value"]), site["mask"])


class _Expectation:
    """``E`` over a guide's parallel-enumerated sites of a term whose batch dims are the site's
    (enumerated dims to their left, beyond ``nesting``): a weighted sum over those dims."""

    def __init__(self, guide_trace: Any, nesting: int):
        enumerated = [name for name, g in guide_trace.nodes.items() if is_latent_site(g) and enumeration_mark(g)]
        for name in enumerated:
            if enumeration_mark(guide_trace.nodes[name]) != "parallel":
                raise ValueError(f"guide site {name!r} is marked for sequential enumeration; FreeBitsELBO sums "
                                 "enumerated sites in parallel: mark it infer={'enumerate': 'parallel'}")
        # log q of the enumerated values (unscaled): their weights in every expectation.
        log_w = sum((_log_q(guide_trace.nodes[name]) for name in enumerated), torch.zeros(()))
        self.weights = log_w.exp() if enumerated else None
        self.nesting = nesting

    def __call__(self, t: torch.Tensor, event_ndims: int = 0) -> torch.Tensor:
        if self.weights is None or t.dim() - event_ndims <= self.nesting:
            return t
        prod = self.weights.reshape(self.weights.shape + (1,) * event_ndims) * t
        return prod.sum(dim=tuple(range(prod.dim() - event_ndims - self.nesting)))


def _hinge(masked: torch.Tensor, mask: torch.Tensor, batch_shape: torch.Size, lam: float, particles: Any
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum over particles of count * sum_d max(lam, KL_d), what each element adds to the loss)``
    for one site's masked KL ``(batch_shape + units)``. The batch average of ``KL_d`` runs over
    the unmasked datapoints of each particle (``particles``: the particle plate's frame, or None)."""
    elem = masked.reshape(batch_shape + (-1,))                          # (..., units)
    pos = len(batch_shape) + particles.dim if particles is not None and len(batch_shape) >= -particles.dim else None
    grouped = elem.unsqueeze(0) if pos is None else elem.movedim(pos, 0)
    counts = (mask.unsqueeze(0) if pos is None else mask.movedim(pos, 0)).reshape(grouped.shape[0], -1).sum(-1)
    per_dim = grouped.reshape(grouped.shape[0], -1, grouped.shape[-1]).sum(1) / counts.clamp(min=1)[:, None]
    penalty = (counts * torch.clamp(per_dim, min=lam).sum(-1)).sum()
    # What a datapoint adds to the loss: its KL in dimensions above the floor (the rest is constant).
    shape = [1] * len(batch_shape) + [per_dim.shape[-1]]
    if pos is not None:
        shape[pos] = per_dim.shape[0]
    active = (per_dim > lam).to(elem.dtype).reshape(shape)
    return penalty, (elem * active).sum(-1)


class FreeBitsELBO(Trace_ELBO):
    """Negative ELBO with the free-bits hinge on the KL (see the module docstring).

    Args:
        lam: lambda, nats per dimension (per site when ``per_dimension=False``); >= 0.
        per_dimension: the Li et al. (2019) variant (default) or one group per site.
        sites: the latent sites the hinge applies to (default all; others keep their plain KL).
        num_particles: samples of ``z`` averaged per step (each particle hinged on its own).
        analytic: use closed-form KLs where available (default), else always Monte Carlo.
        data_plate: the plate over datapoints, when its size alone does not tell (score-function costs).
        max_plate_nesting: plate dims of the pair (found from one trace when None).
        vectorize_particles: draw the particles at once, in a plate left of the pair's (as in Pyro).

    A ``pyro.infer.Trace_ELBO``: ``differentiable_loss``, ``loss_and_grads`` and ``loss``, so
    ``fit(pair, data, elbo=FreeBitsELBO(0.5))`` or ``pyro.infer.SVI`` train with it.
    """

    sums_enumerated_sites = True  # a Trace_ELBO that sums parallel-enumerated guide sites out (fit checks it)

    def __init__(self, lam: float = 0.5, per_dimension: bool = True, sites: Any = None,
                 num_particles: int = 1, analytic: bool = True, data_plate: str | None = None,
                 max_plate_nesting: int | None = None, vectorize_particles: bool = False):
        try:
            lam_f = float(lam)
        except (TypeError, ValueError):
            raise ValueError(f"free bits lambda must be a number >= 0, got {lam!r}") from None
        if not math.isfinite(lam_f) or lam_f < 0:
            raise ValueError(f"free bits lambda must be a finite number >= 0, got {lam!r}")
        positive_int("num_particles", num_particles)
        super().__init__(num_particles=num_particles, vectorize_particles=vectorize_particles,
                         max_plate_nesting=math.inf if max_plate_nesting is None else max_plate_nesting)
        self.lam = lam_f
        self.per_dimension = bool(per_dimension)
        self.select, self.names = _selector(sites)
        self.sites = sites
        self.analytic = analytic
        self.data_plate = data_plate
        self._batch: int | None = None

    @property
    def plain_elbo(self) -> "FreeBitsELBO":
        """The objective without the hinge (``lam = 0``): exactly the negative ELBO, with the same
        KL estimators. ``fit`` logs it as ``valid_loss`` and this objective as ``valid_objective``."""
        plain = FreeBitsELBO(0.0, self.per_dimension, self.sites, self.num_particles, self.analytic, self.data_plate,
                             vectorize_particles=self.vectorize_particles)
        plain.max_plate_nesting = self.max_plate_nesting
        return plain

    # ------------------------------------------------------------------ Pyro's ELBO hooks

    def _get_trace(self, model: Callable, guide: Callable, args: tuple, kwargs: dict):
        # The same calls, in the same order, as Trace_ELBO: the same random numbers give the same z.
        # Sites marked for parallel enumeration get their whole support, to the left of the plates.
        if self.max_plate_nesting == math.inf:
            self.max_plate_nesting = pair_plate_nesting(model, guide, args, kwargs)
        self._batch = _batch_size_or_none(args, kwargs)  # tells per-datapoint sites from global ones
        enum_guide = poutine.enum(guide, first_available_dim=-(self.max_plate_nesting + 1))
        guide_trace = poutine.trace(enum_guide).get_trace(*args, **kwargs)
        model_trace = replay_model(model, guide_trace, args, kwargs)
        return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)

    def _differentiable_loss_particle(self, model_trace: Any, guide_trace: Any) -> tuple[float, torch.Tensor]:
        """``(loss, surrogate)`` of one particle: the hinged negative ELBO, and a tensor with its
        gradient (the score-function part added with value 0)."""
        t = self.particle_terms(model_trace, guide_trace)
        loss = -torch.as_tensor(t["reconstruction"]) + sum(t["penalty"].values())
        score = t["score"]
        surrogate = loss + (score - score.detach() if isinstance(score, torch.Tensor) else 0.0)
        return loss.item(), surrogate

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """The hinged negative ELBO (a number, no gradients)."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    # ------------------------------------------------------------------ the terms of one particle

    def terms(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """One particle: ``{"reconstruction": sum log p(x|z), "kl": {site: summed KL},
        "penalty": {site: hinged KL term}, "score": score-function surrogate}`` (tensors,
        differentiable). Enumerated sites are summed out exactly."""
        return self.particle_terms(*self._get_trace(model, guide, args, kwargs))

    def particle_terms(self, model_trace: Any, guide_trace: Any) -> dict[str, Any]:
        """:meth:`terms` from a particle's traces (as :meth:`_get_trace` returns them)."""
        model_trace.compute_log_prob()
        expect = _Expectation(guide_trace, self.max_plate_nesting)
        rec, loss_parts = self._observed(model_trace, guide_trace, expect)
        auxiliary = [name for name, g in guide_trace.nodes.items()
                     if g["type"] == "sample" and not g["is_observed"] and is_auxiliary(g)]
        kl: dict[str, torch.Tensor] = {}
        penalty: dict[str, torch.Tensor] = {}
        if auxiliary:  # an autoguide's draws: part of q's density, summed into one Monte Carlo term
            aux = [(expect(_log_q(guide_trace.nodes[a]) * guide_trace.nodes[a]["scale"]), guide_trace.nodes[a])
                   for a in auxiliary]
            kl["<auxiliary>"] = penalty["<auxiliary>"] = sum(t.sum() for t, _ in aux)
            loss_parts.extend(aux)
        score_sites, seen = [], set()
        for name, g in guide_trace.nodes.items():
            if g["type"] != "sample" or g["is_observed"] or is_auxiliary(g):
                continue
            if name not in model_trace.nodes:
                raise ValueError(f"guide site {name!r} has no latent counterpart in the model; mark a guide-only "
                                 "variable infer={'is_auxiliary': True}")
            if self.select(name):
                seen.add(name)
            if not is_point_mass(g["fn"]) and not g["fn"].has_rsample and not enumeration_mark(g):
                score_sites.append(g)
            kl[name], penalty[name], part = self._site(name, g, model_trace.nodes[name], expect, auxiliary)
            loss_parts.append((part, g))
        if self.names is not None and self.names - seen:
            raise ValueError(f"unknown latent site(s) {sorted(self.names - seen)} for free bits; the guide's latent "
                             f"sites are {sorted(n for n, s in guide_trace.nodes.items() if is_latent_site(s))}")
        score = self._score_surrogate(score_sites, loss_parts)
        return {"reconstruction": rec, "kl": kl, "penalty": penalty, "score": score}

    @staticmethod
    def _observed(model_trace: Any, guide_trace: Any, expect: _Expectation
                  ) -> tuple[torch.Tensor | float, list[tuple[torch.Tensor, dict]]]:
        """``(sum of E log p(x | z), [(-log p per element, site)])`` over the observed sites;
        refuses a latent site of the model that the guide does not draw."""
        rec: torch.Tensor | float = 0.0
        parts = []
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                lp = expect(site["log_prob"])
                rec = rec + lp.sum()
                parts.append((-lp, site))
            elif name not in guide_trace.nodes or guide_trace.nodes[name]["is_observed"]:
                how = "enumerated in the model" if enumeration_mark(site) else "not drawn by the guide"
                raise ValueError(f"latent site {name!r} of the model is {how}: FreeBitsELBO hinges KL terms of guide "
                                 "sites, and this site has none. Draw it in the guide, or train with "
                                 "TraceEnum_ELBO (and KLAnnealing to weigh the KL) instead")
        return rec, parts

    def _site(self, name: str, g: dict, m: dict, expect: _Expectation, auxiliary: list[str]
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(KL, penalty, loss per element)`` of one latent guide site ``g`` with model site ``m``."""
        hinge = self.lam > 0 and self.select(name)
        if is_point_mass(g["fn"]):
            if hinge:
                why = (f"drawn through the auxiliary site(s) {auxiliary} (an autoguide), so its KL is not a term "
                       "of its own" if auxiliary else "a point mass (a MAP guide), which has no KL")
                raise ValueError(f"free bits cannot hinge latent site {name!r}: it is {why}. Hinge other sites "
                                 "with sites=[...], or weigh this KL with KLAnnealing instead")
            # log q of the point (the transform's log-Jacobian when an auxiliary draw feeds it) - log p
            term = _masked_value(expect(g["fn"].log_prob(g["value"]) - m["fn"].log_prob(g["value"])),
                                 g["mask"]) * g["scale"]
            return term.sum(), term.sum(), term
        event_ndims = len(kl_units(g["fn"], m["fn"])) if self.per_dimension and hinge else 0
        elem, _ = site_kl(name, g["fn"], m["fn"], g["value"], self.per_dimension and hinge, self.analytic)
        elem = expect(elem, event_ndims)
        batch_shape = elem.shape[:elem.dim() - event_ndims]
        mask = _mask_like(g["mask"], batch_shape, elem)
        masked = elem * mask.reshape(mask.shape + (1,) * event_ndims).expand(elem.shape)
        kl = masked.sum() * g["scale"]
        if not hinge:
            return kl, kl, (masked.sum(-1) if event_ndims else masked) * g["scale"]
        penalty, part = _hinge(masked, mask, batch_shape, self.lam, _particle_frame(g))
        return kl, penalty * g["scale"], part * g["scale"]

    def _per_datapoint(self, t: torch.Tensor, site: dict) -> torch.Tensor | None:
        """``t`` summed to ``([particles,] datapoints)``; None for a site outside the data plate (a global one)."""
        n = self._batch
        frame = data_plate_frame(site, n, self.data_plate, exclude=(PARTICLE_PLATE,)) if n is not None else None
        if frame is None:
            return None
        particles = _particle_frame(site)
        return _sum_to(t, [particles, frame] if particles is not None else [frame])

    def _score_surrogate(self, score_sites: list[dict], loss_parts: list[tuple[torch.Tensor, dict]]
                         ) -> torch.Tensor | float:
        """``sum_y log q(y) * cost.detach()`` for sampled sites without ``rsample``: the
        score-function part of the gradient (its value is subtracted again, so the loss is unchanged).

        A site inside the data plate is charged its own datapoint's loss (the terms of other
        datapoints do not depend on it), of its own particle; a global site its particle's whole loss.
        """
        if not score_sites:
            return 0.0
        particle_frames = [f for f in [_particle_frame(score_sites[0])] if f is not None]
        total = sum(_sum_to(t, particle_frames) for t, _ in loss_parts).detach()
        parts = [self._per_datapoint(t, site) for t, site in loss_parts]
        per_point = None
        if all(p is not None or t.detach().abs().sum() == 0 for p, (t, _) in zip(parts, loss_parts)):
            per_point = sum(p for p in parts if p is not None).detach()
        surrogate = 0.0
        for g in score_sites:
            local = self._per_datapoint(_log_q(g), g)
            if local is not None and per_point is not None:
                surrogate = surrogate + (local * per_point).sum()
            else:
                surrogate = surrogate + (_sum_to(_log_q(g), particle_frames) * total).sum()
        return surrogate

    def __repr__(self) -> str:
        return (f"FreeBitsELBO(lam={self.lam}, per_dimension={self.per_dimension}, sites={self.sites!r}, "
                f"num_particles={self.num_particles})")
