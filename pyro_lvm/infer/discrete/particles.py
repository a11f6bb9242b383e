"""Multi-particle traces of any model/guide pair: what the estimators that need several
correlated evaluations of one datapoint share (RLOO, VIMCO, ARM/DisARM, REBAR/RELAX).

:class:`ParticleTraces` runs the guide once inside a plate of ``P`` particles placed left of
every plate of the pair, so that every latent gets ``P`` values per datapoint in one
vectorised pass, and replays the model on them. A :class:`ParticleSampler` may decide the
guide's values (antithetic pairs, values shared within a group of particles, relaxed
copies); without one every particle is an independent draw.

Every sample site then contributes a term with known plate dimensions (``+log p`` for model
sites, ``-log q`` for guide sites; Pyro's scales and masks applied). The *cost* of a guide
site is the sum of all terms reduced to that site's plates: for a per-datapoint site, the
datapoint's own ``log p(x, z) - log q(z | x)`` plus the global terms. By Pyro's plate
semantics the terms of other datapoints do not depend on it, so this is the
Rao-Blackwellisation ``Trace_ELBO`` makes too (``log_r.sum_to(site's plates)``).

Particle layout: ``P = groups * members`` along the particle dimension (group-major). The
estimators use groups of 2 (antithetic pairs) or 3 (REBAR's hard and two relaxed copies).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from pyro.distributions.util import scale_and_mask

from ... import validation
from ...traces import is_random, is_subsample, unwrap_independent
from .registry import ESTIMATORS, MODEL_RELAXED

PARTICLES = "estimator_particles"


# ----------------------------------------------------------------------------- sites

def site_family(fn: Any) -> str | None:
    """Kind of discrete distribution of a sample site, or ``None`` for a site no discrete
    estimator applies to (reparameterisable, or without an enumerable support).

    ``"bernoulli"``, ``"one-hot"`` (``OneHotCategorical``), ``"categorical"`` (integer index
    ``Categorical``) or ``"discrete"`` (another enumerable distribution, e.g. ``Binomial``).
    """
    base, _ = unwrap_independent(fn)
    if getattr(base, "has_rsample", False) or not getattr(base, "has_enumerate_support", False):
        return None
    if isinstance(base, torch.distributions.Bernoulli):
        return "bernoulli"
    if isinstance(base, torch.distributions.OneHotCategorical):
        return "one-hot"
    if isinstance(base, torch.distributions.Categorical):
        return "categorical"
    return "discrete"


def model_site_refusal(estimator: str, name: str, fn: Any) -> str:
    """Why ``estimator`` cannot use the *model's* distribution ``fn`` at latent site ``name``; ``""`` if it can.

    The guide's site may be relaxable while the model's prior there is not (e.g. a language
    model over a code of words): the estimators that rewrite the model's site
    (:data:`~pyro_lvm.infer.discrete.registry.MODEL_RELAXED`) need the prior's logits.
    """
    if estimator not in MODEL_RELAXED or site_family(fn) in ("bernoulli", "one-hot"):
        return ""
    dist_name = type(unwrap_independent(fn)[0]).__name__
    others = ", ".join(n for n in ESTIMATORS if n not in MODEL_RELAXED)
    return (f"the {estimator!r} estimator does not apply to site {name!r}: it rewrites the model's distribution there "
            f"from its logits (a relaxed density), and the model's {dist_name} is not a Bernoulli or "
            f"OneHotCategorical. Estimators that only need its log_prob: {others}")


def latent_sites(trace: Any) -> Iterator[tuple[str, dict]]:
    """``(name, site)`` of the unobserved sample sites of a trace (plate subsample sites left out)."""
    for name, site in trace.nodes.items():
        if is_random(site) and not site["is_observed"]:
            yield name, site


def side_trace() -> contextlib.ExitStack:
    """Context for a look at a pair that must leave no trace: no gradients, hidden from outer
    handlers, and the random generators forked, so a resumed run draws the same numbers as an
    uninterrupted one whether or not it looked first."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))))
    stack.enter_context(torch.no_grad())
    stack.enter_context(poutine.block())
    return stack


# ----------------------------------------------------------------------------- groups of particles

def regroup(value: torch.Tensor, axis: int, groups: int) -> torch.Tensor:
    """``value`` with its particle axis moved first and split: ``(groups, members, *rest)``."""
    v = value.movedim(axis, 0)
    return v.reshape(groups, v.shape[0] // groups, *v.shape[1:])


def ungroup(grouped: torch.Tensor, axis: int) -> torch.Tensor:
    """Inverse of :func:`regroup`."""
    return grouped.reshape(-1, *grouped.shape[2:]).movedim(0, axis)


def share(value: torch.Tensor, axis: int, groups: int, which: torch.Tensor | None = None) -> torch.Tensor:
    """Give every member of a group the first member's value (only groups where ``which`` is True).

    The members of a group see the same distribution here (everything they depend on is
    shared too), so the first member's draw is a draw for each of them.
    """
    v = regroup(value, axis, groups)
    first = v[:, :1].expand_as(v)
    if which is not None:
        first = torch.where(which.view(-1, *([1] * (v.dim() - 1))), first, v)
    return ungroup(first, axis)


class ParticleSampler(Messenger):
    """Decides the values of the guide's latent sites in a :class:`ParticleTraces` run.

    Entered outside the particle plate, so a site reaches it already broadcast to all
    particles. :meth:`sample_site` gets the message and the position of the particle axis in
    the site's value and must set ``msg["value"]``; the default draws independently.
    """

    def __init__(self, max_plate_nesting: int):
        super().__init__()
        self.max_plate_nesting = max_plate_nesting

    def _pyro_sample(self, msg: dict) -> None:
        if msg["is_observed"] or msg["value"] is not None or is_subsample(msg):
            return
        fn = msg["fn"]
        axis = len(fn.batch_shape) - (self.max_plate_nesting + 1)
        if axis != 0:
            raise ValueError(f"site {msg['name']!r} has batch shape {tuple(fn.batch_shape)}, more dimensions than "
                             f"its plates and the particle plate at dim {-(self.max_plate_nesting + 1)}: declare "
                             "every batch dimension with pyro.plate (or move it into the event with .to_event), "
                             "or pass a larger max_plate_nesting=")
        self.sample_site(msg, axis)

    @staticmethod
    def draw(fn: Any) -> torch.Tensor:
        """A draw from ``fn``; a Bernoulli by comparing uniforms with its probabilities (half the
        time of ``torch.bernoulli`` on CPU, the same distribution)."""
        if fn.has_rsample:
            return fn.rsample()
        base, _ = unwrap_independent(fn)
        if type(base) in (torch.distributions.Bernoulli, pyro.distributions.Bernoulli):
            shape = fn.batch_shape + fn.event_shape
            probs = base.probs.expand(shape)
            return (torch.rand(shape, dtype=probs.dtype, device=probs.device) < probs.detach()).to(probs.dtype)
        return fn.sample()

    def sample_site(self, msg: dict, axis: int) -> None:
        msg["value"] = self.draw(msg["fn"])


# ----------------------------------------------------------------------------- traces and costs

class ParticleTraces:
    """Guide and model traced with ``num_particles`` values of every latent per datapoint.

    Attributes:
        guide_trace, model_trace: Pyro traces; every ``log_prob`` has the particle dimension
            at ``pdim = -(max_plate_nesting + 1)`` of its batch shape.
        num_particles: ``P``.

    Raises ``ValueError`` for a latent site of the model that the guide does not sample.
    """

    def __init__(self, model: Callable, guide: Callable, args: tuple, kwargs: dict, *, num_particles: int,
                 max_plate_nesting: int, sampler: ParticleSampler | None = None,
                 model_handler: Messenger | None = None):
        self.num_particles = num_particles
        self.max_plate_nesting = max_plate_nesting
        self.ndim = max_plate_nesting + 1
        self.pdim = -self.ndim
        particles = pyro.plate(PARTICLES, num_particles, dim=self.pdim)  # one plate for both runs
        with sampler if sampler is not None else contextlib.nullcontext(), particles:
            self.guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        with model_handler if model_handler is not None else contextlib.nullcontext(), particles:
            self.model_trace = poutine.trace(poutine.replay(model, trace=self.guide_trace)).get_trace(*args, **kwargs)
        unmatched = [name for name, _ in latent_sites(self.model_trace) if name not in self.guide_trace.nodes]
        if unmatched:
            raise ValueError(f"latent site(s) {unmatched} of the model have no site in the guide: these estimators "
                             "need every model latent sampled by the guide (or enumerated out of the model with "
                             "the 'enumerate' estimator)")
        for trace in (self.guide_trace, self.model_trace):
            for site in trace.nodes.values():
                if is_random(site):
                    unscaled = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
                    site["unscaled_log_prob"] = unscaled
                    site["log_prob"] = scale_and_mask(unscaled, site["scale"], site["mask"])
        self._costs: dict[frozenset, torch.Tensor] = {}
        self._terms: list[tuple[torch.Tensor, dict[int, str]]] | None = None

    # Plates are told apart by name: two plates may share a dimension one after the other
    # (a labelled and an unlabelled batch), and a term of one is summed out of the other's cost.

    @staticmethod
    def frames(site: dict) -> dict[int, str]:
        """``{dim: plate name}`` of a site's vectorised plates, the particle plate included."""
        return {f.dim: f.name for f in site["cond_indep_stack"] if f.vectorized}

    def plates(self, site: dict) -> frozenset:
        """Names of a site's plates, the particle plate included."""
        return frozenset(self.frames(site).values())

    def pad(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` with leading singleton dims up to ``max_plate_nesting + 1`` dims."""
        return t.reshape((1,) * (self.ndim - t.dim()) + tuple(t.shape)) if t.dim() < self.ndim else t

    def reduce(self, t: torch.Tensor, frames: dict[int, str], keep: frozenset) -> torch.Tensor:
        """Sum a term ``t`` with plates ``frames`` over every dimension whose plate is not in ``keep``."""
        t = self.pad(t)
        drop = [d for d in range(-t.dim(), 0) if frames.get(d) not in keep and t.shape[d] > 1]
        if drop:
            t = t.sum(drop, keepdim=True)
        return t.reshape(t.shape[-self.ndim:]) if t.dim() > self.ndim else t

    def terms(self) -> list[tuple[torch.Tensor, dict[int, str]]]:
        """``(log-density term, its plates)``: ``+log p`` of model sites, ``-log q`` of guide sites."""
        if self._terms is None:
            out = []
            for sign, trace in ((1.0, self.model_trace), (-1.0, self.guide_trace)):
                for site in trace.nodes.values():
                    if is_random(site):
                        out.append((site["log_prob"] if sign > 0 else -site["log_prob"], self.frames(site)))
            self._terms = out
        return self._terms

    def cost(self, keep: frozenset) -> torch.Tensor:
        """Sum of all terms reduced to the plates named in ``keep`` (``max_plate_nesting + 1`` dims)."""
        if keep not in self._costs:
            total = None
            for t, frames in self.terms():
                r = self.reduce(t, frames, keep)
                total = r if total is None else total + r
            self._costs[keep] = total
        return self._costs[keep]

    def site_cost(self, name: str) -> torch.Tensor:
        """The cost of guide site ``name``: all terms reduced to its plates."""
        return self.cost(self.plates(self.guide_trace.nodes[name]))

    def log_q(self, name: str, keep: frozenset | None = None) -> torch.Tensor:
        """The guide site's *unscaled* log-density (the score function's factor), reduced to ``keep``."""
        site = self.guide_trace.nodes[name]
        return self.reduce(site["unscaled_log_prob"], self.frames(site), self.plates(site) if keep is None else keep)

    def total(self) -> torch.Tensor:
        """``(P,)``: each particle's ``log p(x, z) - log q(z | x)``, summed over the batch."""
        # (not from a site's cost: that one has the terms outside the site's plates broadcast over them)
        cost = self.pad(self.cost(frozenset([PARTICLES])))
        rest = [d for d in range(-self.ndim, 0) if d != self.pdim and cost.shape[d] > 1]
        cost = (cost.sum(rest, keepdim=True) if rest else cost).reshape(-1)
        return cost.expand(self.num_particles) if cost.numel() == 1 else cost

    def front(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` with the particle dimension moved first (the plate dimensions keep their order)."""
        return self.pad(t).movedim(self.pdim, 0)

    def score_sites(self, handled: set[str]) -> list[str]:
        """Guide sites outside ``handled`` that are not reparameterised: they get a plain score-function term."""
        return [name for name, site in latent_sites(self.guide_trace)
                if name not in handled and not getattr(site["fn"], "has_rsample", False)]

    def with_plain_score(self, surrogate: torch.Tensor, handled: list[str]) -> torch.Tensor:
        """``surrogate`` plus the :meth:`plain_score` of the guide sites outside ``handled`` (when there are any)."""
        others = self.score_sites(set(handled))
        return surrogate + self.plain_score(others) if others else surrogate

    def plain_score(self, names: list[str], weights: torch.Tensor | None = None) -> torch.Tensor:
        """Surrogate ``sum_sites sum_p w_p log q(z_p) * cost_p`` (cost detached) for the sites ``names``;
        ``weights (P,)`` default to ``1 / P`` (every particle a draw of the guide)."""
        if weights is None:
            like = self.total()
            weights = torch.full((self.num_particles,), 1.0 / self.num_particles, dtype=like.dtype,
                                 device=like.device)
        out = torch.zeros((), dtype=weights.dtype, device=weights.device)
        shape = (-1,) + (1,) * (self.ndim - 1)
        for name in names:
            out = out + (self.front(self.log_q(name) * self.site_cost(name).detach()) * weights.view(shape)).sum()
        return out


class ParticleEstimator:
    """Base of the estimators that run a pair over a particle plate.

    Subclasses set ``name`` and implement ``loss(model, guide, args, kwargs, structure) ->
    (loss, stats)``; ``num_particles`` is what the estimator's docs say it counts.
    """

    name = ""

    def __init__(self, num_particles: int):
        self.num_particles = validation.positive_int("num_particles", num_particles)

    @property
    def model_evaluations(self) -> int:
        """Model evaluations per datapoint in one loss evaluation."""
        return self.num_particles

    @staticmethod
    def elbo(traces: ParticleTraces, sites: list[str], weights: torch.Tensor | None = None
             ) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, float]]:
        """``(cost of each handled site, the ELBO estimate, stats)``: the estimate is the mean
        over particles (weighted by ``weights (P,)`` when only some are draws of the guide)."""
        costs = {name: traces.site_cost(name) for name in sites}
        total = traces.total()
        value = total.mean() if weights is None else (total * weights).sum()
        return costs, value, {"elbo": float(value.detach())}


def as_loss(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """A loss whose value is ``-value`` and whose gradient is that of ``-surrogate``."""
    return -(value.detach() + (surrogate - surrogate.detach()))


def delivers(params: list[torch.Tensor], grads: list[torch.Tensor | None]) -> torch.Tensor:
    """A zero-valued term whose backward puts ``grads`` into ``params`` (and nothing elsewhere).

    Lets an objective train its own parameters (a control variate's) by a gradient it
    computed itself, within the one ``backward`` that :func:`pyro_lvm.fit` calls.
    """
    term = None
    for p, g in zip(params, grads):
        if g is None:
            continue
        t = (p * g.detach()).sum()
        term = t if term is None else term + t
    return torch.zeros(()) if term is None else term - term.detach()


# ----------------------------------------------------------------------------- what an estimator is told

class StructureChanged(RuntimeError):
    """The guide met discrete sites other than those found when the objective was prepared."""


class Structure:
    """What a particle estimator needs to know about a pair before it runs it.

    Args:
        max_plate_nesting: the particle plate goes at ``dim = -(max_plate_nesting + 1)``.
        sites: the guide's discrete sites the estimator handles, in execution order.
        families: :func:`site_family` of each of them.
        handles: predicate ``(name, fn) -> bool`` telling a handled site when it is met
            (to notice a guide whose discrete sites change from call to call).
    """

    def __init__(self, max_plate_nesting: int, sites: list[str], families: dict[str, str],
                 handles: Callable[[str, Any], bool]):
        self.max_plate_nesting = max_plate_nesting
        self.sites = list(sites)
        self.index = {name: i for i, name in enumerate(self.sites)}
        self.families = dict(families)
        self.handles = handles

    def check(self, name: str, fn: Any, seen: int) -> int | None:
        """Index of handled site ``name`` (raising :class:`StructureChanged` if it comes out of
        order or was not there before), or ``None`` for a site the estimator does not handle."""
        if name in self.index:
            if self.index[name] != seen:
                raise StructureChanged(name)
            return seen
        if self.handles(name, fn):
            raise StructureChanged(name)
        return None


def event_view(t: torch.Tensor, extra_dims: int) -> torch.Tensor:
    """``t`` with ``extra_dims`` trailing singleton dims (a per-datapoint cost against per-variable logits)."""
    return t.reshape(tuple(t.shape) + (1,) * extra_dims)


def logit_event_dims(fn: Any, family: str) -> int:
    """Dims of a site's logits right of its batch dims: the ``Independent`` ones, plus the class dim."""
    _, ndims = unwrap_independent(fn)
    return ndims + (0 if family == "bernoulli" else 1)
