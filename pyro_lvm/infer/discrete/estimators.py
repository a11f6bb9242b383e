"""Gradient estimators for discrete latent sites, applied to any model/guide pair by name.

A pair is written once, in plain discrete Pyro (``Bernoulli``, ``OneHotCategorical`` or
``Categorical`` sample sites). :class:`DiscreteELBO` turns it into the objective of one of
the estimators in :data:`~pyro_lvm.infer.discrete.registry.ESTIMATORS`, the one registry of names that the objective, the
comparison harness (:func:`~pyro_lvm.infer.discrete.comparison.compare_estimators`) and the
``pyro-lvm`` command use. :func:`estimator_applicability` says which of them apply to a
pair's guide sites, and why not for the rest.

Two kinds of machinery carry them out:

* the enumerated, score-function and relaxed estimators rewrite the pair's discrete sites
  with a poutine handler (:class:`DiscreteSites`) and call Pyro's own ELBOs
  (``TraceEnum_ELBO``, ``Trace_ELBO``, ``TraceGraph_ELBO``, and ``TraceMeanField_ELBO`` as
  :class:`~pyro_lvm.infer.discrete.meanfield.MeanFieldELBO`, which skips the log-densities it does not use);
* RLOO, VIMCO, ARM/DisARM and REBAR/RELAX need several correlated evaluations of each
  datapoint: they run the pair once over a plate of particles
  (:mod:`pyro_lvm.infer.discrete.particles`; :mod:`~pyro_lvm.infer.discrete.multisample`,
  :mod:`~pyro_lvm.infer.discrete.antithetic`, :mod:`~pyro_lvm.infer.discrete.rebar`).

Why "gumbel" is the default relaxation: the Concrete density ratio's gradient is biased
by an amount that does not shrink as the temperature falls (``benchmarks/estimator_variance.py``
measures it), while with the exact KL only the likelihood term is relaxed and its bias
vanishes as ``tau -> 0``. Relaxed samples are drawn in log space (:mod:`~pyro_lvm.infer.discrete.relaxed`),
so losses stay finite at ``tau = 0.1`` where torch's relaxed distributions return NaN.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO
from pyro.poutine.messenger import Messenger
from torch import nn

from ... import validation
from ...training.callbacks import Callback
from ...traces import enumeration_mark, is_subsample, pair_plate_nesting, unwrap_independent
from .antithetic import Antithetic
from .meanfield import MeanFieldELBO
from ..handlers import handled
from .multisample import RLOO, VIMCO
from .particles import Structure, StructureChanged, latent_sites, model_site_refusal, side_trace, site_family
from .rebar import CV_PREFIX, Rebar
from .registry import ESTIMATORS, PARTICLE_ESTIMATORS, RELAXABLE, RELAXED, Estimator, check_estimator
from .relaxed import (ConcreteBernoulli, ConcreteCategorical, GumbelSoftmaxBernoulli, GumbelSoftmaxCategorical,
                      SoftBernoulli, SoftOneHotCategorical, check_rao_samples, check_temperature,
                      gumbel_softmax_log)

__all__ = ["ESTIMATORS", "Estimator", "DiscreteELBO", "DiscreteSites", "TemperatureAnnealing", "GraphELBO",
           "CartesianIndependent", "estimator_applicability", "applicable_estimators", "check_estimator",
           "check_temperature", "check_num_classes", "is_discrete", "support_size", "site_family",
           "ConcreteBernoulli", "ConcreteCategorical", "GumbelSoftmaxBernoulli", "GumbelSoftmaxCategorical",
           "SoftBernoulli", "SoftOneHotCategorical", "gumbel_softmax_log", "CV_PREFIX"]

INDEX_ADVICE = (
    "a relaxed value is a point on the simplex, which a model that indexes with an integer cannot take. "
    "Write the site as OneHotCategorical: pyro.sample(name, dist.OneHotCategorical(logits=...)) and use the "
    "one-hot vector arithmetically (value @ table instead of table[value])")


def check_num_classes(k: int, what: str = "number of classes K") -> int:
    """A categorical needs at least two classes; raise ``ValueError`` otherwise."""
    return validation.Integer(2)(what, k)


def estimators_for(family: str) -> list[str]:
    """The estimators that apply to a guide site of this :func:`site_family`."""
    return [name for name, e in ESTIMATORS.items() if family in e.families]


def site_refusal(estimator: str, name: str, fn: Any) -> str:
    """Why ``estimator`` cannot handle guide site ``name`` (distribution ``fn``); ``""`` if it can."""
    family = site_family(fn)
    if family is None or family in ESTIMATORS[estimator].families:
        return ""
    dist_name = type(unwrap_independent(fn)[0]).__name__
    if family == "categorical" and ESTIMATORS[estimator].families == RELAXABLE:
        why = f"it is a Categorical (integer index) site: {INDEX_ADVICE}"
    elif estimator in ("arm", "disarm"):
        why = f"it is {dist_name}: ARM/DisARM need Bernoulli or categorical sites (a binary representation)"
    else:
        why = f"no relaxation of {dist_name} is implemented (Bernoulli and OneHotCategorical have one)"
    return (f"the {estimator!r} estimator does not apply to site {name!r}: {why}. Estimators that apply to "
            f"{name!r}: {', '.join(estimators_for(family))}")


def is_discrete(fn: Any) -> bool:
    """True for sites a discrete estimator applies to: enumerable, not reparameterisable."""
    return site_family(fn) is not None


def support_size(fn: Any) -> float:
    """Number of joint values of one datapoint's draw from a discrete site (``K ** m``).

    ``K`` is the base distribution's support size, ``m`` the number of variables folded into
    the event by ``Independent``. Returned as a float so that sizes like ``10 ** 20`` print.
    """
    base, ndims = unwrap_independent(fn)
    k = int(base.enumerate_support(expand=False).shape[0])
    m = int(torch.Size(base.batch_shape[len(base.batch_shape) - ndims:]).numel()) if ndims else 1
    return float(k) ** m


def _guide_trace(guide: Callable, args: tuple, kwargs: dict) -> Any:
    """One run of the guide that leaves no trace (see :func:`side_trace`)."""
    with side_trace():
        return poutine.trace(guide).get_trace(*args, **kwargs)


def guide_latents(guide: Callable, args: tuple, kwargs: dict, trace: Any = None) -> tuple[dict[str, Any], list[str]]:
    """``({discrete site: fn} in guide order, [continuous latent sites])`` from one guide run
    (``trace``, when the caller has one)."""
    trace = trace if trace is not None else _guide_trace(guide, args, kwargs)
    discrete, continuous = {}, []
    for name, site in latent_sites(trace):
        if site_family(site["fn"]) is not None:
            discrete[name] = site["fn"]
        else:
            continuous.append(name)
    return discrete, continuous


def estimator_applicability(model: Callable, guide: Callable, *args: Any, max_enum_size: float = 1e5,
                            estimators: Iterable[str] | None = None, **kwargs: Any) -> dict[str, str]:
    """``{estimator: ""}`` for the estimators that apply to this pair, ``{estimator: reason}`` for the rest.

    Traces the guide once (no gradients) and checks every discrete site against every
    estimator's site families; ``"enumerate"`` also against ``max_enum_size`` joint values per
    datapoint. What only running the pair can tell (a model that cannot take a relaxed value,
    REBAR on sites whose distributions depend on each other) is found by the estimator's
    first evaluation, which refuses with the same kind of message.
    """
    names = list(ESTIMATORS) if estimators is None else [check_estimator(e) for e in estimators]
    discrete, continuous = guide_latents(guide, args, kwargs)
    if not discrete:
        why = ("the guide has no discrete latent site" + (f" (its latent sites {continuous} are continuous)"
                                                          if continuous else " (it has no latent site at all)")
               + ": there is nothing for a discrete-latent estimator to do; train it with Trace_ELBO")
        return {name: why for name in names}
    out = {}
    for name in names:
        reason = next((r for r in (site_refusal(name, site, fn) for site, fn in discrete.items()) if r), "")
        if not reason and name == "enumerate":
            size = math.prod(support_size(fn) for fn in discrete.values())
            if size > max_enum_size:
                reason = (f"enumeration: the guide's discrete sites have {size:.3g} joint values per datapoint "
                          f"(limit max_enum_size={max_enum_size:.3g}); use a sampling or relaxed estimator")
        out[name] = reason
    return out


def applicable_estimators(model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> list[str]:
    """The names in :data:`ESTIMATORS` that apply to this pair (see :func:`estimator_applicability`)."""
    return [name for name, why in estimator_applicability(model, guide, *args, **kwargs).items() if not why]


class CartesianIndependent(dist.Independent):
    """``Independent(OneHotCategorical | Categorical | Bernoulli)`` that Pyro can enumerate.

    Pyro refuses to enumerate a site whose event holds several discrete variables (the
    support is their cartesian product). This class enumerates that product: for ``m``
    reinterpreted variables of ``K`` values it returns ``K**m`` joint values, shape
    ``(K**m,) + (1,) * len(batch_shape) + event_shape`` (or expanded).
    """

    @property
    def has_enumerate_support(self) -> bool:
        return True

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        base = self.base_dist
        n = self.reinterpreted_batch_ndims
        var_shape = base.batch_shape[len(base.batch_shape) - n:]
        m = int(torch.Size(var_shape).numel())
        single = base.enumerate_support(expand=False)  # (K,) + (1,)*base_batch + base_event
        values = single.reshape(single.shape[0], *base.event_shape)  # (K, *base_event)
        k = values.shape[0]
        grid = torch.cartesian_prod(*[torch.arange(k, device=values.device)] * m).reshape(k ** m, m)
        joint = values[grid].reshape((k ** m,) + tuple(var_shape) + tuple(base.event_shape))
        joint = joint.reshape((k ** m,) + (1,) * len(self.batch_shape) + tuple(self.event_shape))
        if expand:
            joint = joint.expand((k ** m,) + tuple(self.batch_shape) + tuple(self.event_shape))
        return joint


# ----------------------------------------------------------------------------- the handler

class DiscreteSites(Messenger):
    """Rewrites the discrete sample sites of a model or guide for one of the estimators that
    run on a Pyro ELBO (``enumerate``, the score-function ones and the relaxations).

    Args:
        estimator: a name from :data:`ESTIMATORS` (not one of :data:`PARTICLE_ESTIMATORS`).
        temperature: relaxation temperature (relaxed estimators).
        role: ``"model"`` or ``"guide"``.
        sites: names of the sites to treat (default: every unobserved discrete site).
        max_enum_size: refuse enumeration when the joint number of values exceeds this.
        baseline_beta: decay of the average baseline (``"score-function-baseline"``).
        rao_samples: relaxed samples per discrete one for ``"gumbel-rao"``.
        guide_sites: ``role="model"``: the guide's discrete sites the estimator handles; the model's
            distributions there are checked (:func:`~pyro_lvm.infer.discrete.particles.model_site_refusal`).
    """

    def __init__(self, estimator: str, temperature: float = 1.0, role: str = "guide",
                 sites: Iterable[str] | None = None, max_enum_size: float = 1e5, baseline_beta: float = 0.9,
                 rao_samples: int = 10, guide_sites: Iterable[str] = ()):
        super().__init__()
        self.estimator = check_estimator(estimator)
        if estimator in PARTICLE_ESTIMATORS:
            raise ValueError(f"{estimator!r} runs over a plate of particles, not by rewriting sites: use "
                             f"DiscreteELBO({estimator!r})")
        self.temperature = check_temperature(temperature)
        if role not in ("model", "guide"):
            raise ValueError(f"role must be 'model' or 'guide', got {role!r}")
        self.role = role
        self.sites = set(sites) if sites is not None else None
        self.max_enum_size = max_enum_size
        self.baseline_beta = baseline_beta
        self.rao_samples = check_rao_samples(rao_samples)
        self.guide_sites = frozenset(guide_sites)
        self.enum_size = 1.0

    def _pyro_sample(self, msg: dict) -> None:
        if msg["is_observed"] or is_subsample(msg):
            return
        named = self.sites is not None and msg["name"] in self.sites
        if self.sites is not None and not named:
            return
        fn = msg["fn"]
        if self.role == "model" and msg["name"] in self.guide_sites:
            refusal = model_site_refusal(self.estimator, msg["name"], fn)
            if refusal:
                raise ValueError(refusal)
        if not is_discrete(fn):
            if named and self.role == "guide":
                raise ValueError(
                    f"site {msg['name']!r} is not discrete ({type(unwrap_independent(fn)[0]).__name__}): the "
                    f"{self.estimator!r} estimator applies to discrete (enumerable) sites only")
            return
        if self.role == "guide" and self.estimator != "enumerate" and msg["infer"].get("enumerate"):
            # This estimator samples the site: drop the guide's enumeration mark (config_enumerate),
            # with which Pyro's sampling ELBOs would warn, in their words, and sample it anyway.
            msg["infer"] = {k: v for k, v in msg["infer"].items() if k != "enumerate"}
        if self.estimator in RELAXED:
            msg["fn"] = self._relaxed(msg["name"], fn)
        elif self.role == "guide" and self.estimator == "enumerate":
            self._enumerate(msg)
        elif self.role == "guide" and self.estimator == "score-function-baseline":
            self._baseline(msg)

    def _relaxed(self, name: str, fn: Any) -> Any:
        refusal = site_refusal(self.estimator, name, fn)
        if refusal:
            raise ValueError(refusal)
        base, ndims = unwrap_independent(fn)
        bernoulli = site_family(fn) == "bernoulli"
        logits, tau = base.logits, self.temperature
        if self.estimator == "gumbel-concrete":
            new: Any = ConcreteBernoulli(logits, tau) if bernoulli else ConcreteCategorical(logits, tau)
        elif self.role == "model":
            new = SoftBernoulli(logits) if bernoulli else SoftOneHotCategorical(logits)
        else:
            hard = self.estimator != "gumbel"
            rao = self.rao_samples if self.estimator == "gumbel-rao" else 0
            relaxed = GumbelSoftmaxBernoulli if bernoulli else GumbelSoftmaxCategorical
            new = relaxed(logits, tau, hard=hard, rao_samples=rao)
        return new.to_event(ndims) if ndims else new

    def _enumerate(self, msg: dict) -> None:
        self.enum_size *= support_size(msg["fn"])
        if self.enum_size > self.max_enum_size:
            raise ValueError(
                f"enumeration refused: the guide's discrete sites up to {msg['name']!r} have "
                f"{self.enum_size:.3g} joint values per datapoint (limit max_enum_size="
                f"{self.max_enum_size:.3g}); use a sampling or relaxed estimator instead")
        base, ndims = unwrap_independent(msg["fn"])
        if ndims:
            msg["fn"] = CartesianIndependent(base, ndims)
        msg["infer"] = {**msg["infer"], "enumerate": "parallel"}

    def _baseline(self, msg: dict) -> None:
        options = dict(msg["infer"].get("baseline", {}))
        options.setdefault("use_decaying_avg_baseline", True)
        options.setdefault("baseline_beta", self.baseline_beta)
        msg["infer"] = {**msg["infer"], "baseline": options}
        # Pyro keeps one running average per batch position; a batch of another size (the
        # last batch of an epoch) would not broadcast, so restart it from its mean.
        store = pyro.get_param_store()
        key = "__baseline_avg_downstream_cost_" + msg["name"]
        if key in store:
            old = store[key]
            if old.shape != msg["fn"].batch_shape:
                store[key] = old.detach().mean().expand(msg["fn"].batch_shape).clone()


def with_estimator(fn: Callable, handler_args: dict) -> Callable:
    """``fn`` run under a fresh :class:`DiscreteSites` handler built from ``handler_args``."""
    return handled(fn, lambda: DiscreteSites(**handler_args))


# ----------------------------------------------------------------------------- objectives

class GraphELBO(TraceGraph_ELBO):
    """``TraceGraph_ELBO`` with the ``differentiable_loss`` that :func:`pyro_lvm.fit` needs.

    Returns a tensor whose *value* is the negative ELBO estimate and whose *gradient* is
    TraceGraph's baseline-corrected score-function surrogate gradient (plus the baseline
    network's squared-error loss gradient): ``loss.detach() + (s - s.detach())``.
    """

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        elbo, surrogate = self._loss_and_surrogate_loss(model, guide, args, kwargs)
        loss = -torch.as_tensor(elbo, dtype=surrogate.dtype).detach()
        return loss + (surrogate - surrogate.detach())


class DiscreteELBO:
    """An ELBO objective for pairs with discrete latents, chosen by estimator name.

    Has ``differentiable_loss(model, guide, *args)`` and ``loss(...)`` like Pyro's ELBOs, so
    it plugs into :func:`pyro_lvm.fit`; ``temperature`` may be changed between steps (see
    :class:`TemperatureAnnealing`). At its first call it checks the guide's discrete sites
    against the estimator and refuses, naming the site, the reason and the estimators that
    do apply to it, before any gradient is computed.

    Args:
        estimator: a name from :data:`ESTIMATORS`.
        temperature: relaxation temperature (the initial one for ``rebar``/``relax``, which learn it).
        num_particles: samples per loss evaluation; what they are depends on the estimator
            (``ESTIMATORS[name].particles``: ``S >= 2`` samples for ``rloo``/``vimco``, antithetic
            pairs for ``arm``/``disarm``). Default: ``ESTIMATORS[name].default_particles``.
        max_plate_nesting: plate dimensions the pair uses (guessed from one trace if None).
        max_enum_size: enumeration refuses latent spaces larger than this (per datapoint).
        sites: restrict the estimator to these guide site names (default: all discrete sites);
            other non-reparameterised sites get the plain score-function gradient.
        baseline_beta: decay of the running-average baseline (``score-function-baseline``).
        rao_samples: relaxed samples per discrete sample (``gumbel-rao``).
        control_variate: RELAX's surrogate network (see :class:`~pyro_lvm.infer.discrete.rebar.Rebar`).

    After each call, ``last_stats`` holds what the particle estimators measured on the way
    (``elbo``; ``bound`` for ``vimco``).
    """

    def __init__(self, estimator: str = "gumbel", temperature: float = 1.0, num_particles: int | None = None,
                 max_plate_nesting: int | None = None, max_enum_size: float = 1e5,
                 sites: Iterable[str] | None = None, baseline_beta: float = 0.9, rao_samples: int = 10,
                 control_variate: nn.Module | dict[str, nn.Module] | None = None):
        self.estimator = check_estimator(estimator)
        self.info = ESTIMATORS[estimator]
        self.temperature = temperature
        if num_particles is None:
            num_particles = self.info.default_particles
        self.num_particles = validation.positive_int("num_particles", num_particles)
        validation.Integer(0, optional=True)("max_plate_nesting", max_plate_nesting)
        self.max_plate_nesting = max_plate_nesting
        self.max_enum_size = max_enum_size
        self.sites = list(sites) if sites is not None else None
        self.baseline_beta = baseline_beta
        self.rao_samples = check_rao_samples(rao_samples)
        if control_variate is not None and estimator != "relax":
            raise ValueError(f"control_variate= is the surrogate network of 'relax'; {estimator!r} takes none")
        self.control_variate = control_variate
        self.inner = self._make_inner()
        self._structure: Structure | None = None
        self._checked, self._rewrite, self._handled = False, True, ()
        self.last_stats: dict[str, float] = {}

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature = check_temperature(value)
        if isinstance(getattr(self, "inner", None), Rebar):
            self.inner.initial_temperature = self._temperature

    @property
    def learns_temperature(self) -> bool:
        return self.estimator in ("rebar", "relax")

    @property
    def model_evaluations(self) -> int:
        """Model evaluations per datapoint in one loss evaluation."""
        if self.estimator == "gumbel-rao":
            return self.num_particles
        return getattr(self.inner, "model_evaluations", self.num_particles)

    @property
    def objective_name(self) -> str:
        """What ``loss`` estimates: ``"ELBO"``, or the ``S``-sample bound for ``vimco``."""
        return f"{self.num_particles}-sample bound" if self.estimator == "vimco" else "ELBO"

    def _make_inner(self) -> Any:
        if self.estimator in ("rloo", "vimco"):
            return (RLOO if self.estimator == "rloo" else VIMCO)(self.num_particles)
        if self.estimator in ("arm", "disarm"):
            return Antithetic(self.estimator == "disarm", self.num_particles)
        if self.estimator in ("rebar", "relax"):
            return Rebar(self.estimator == "relax", self.temperature, self.num_particles, self.control_variate)
        kw: dict[str, Any] = {"num_particles": self.num_particles}
        if self.max_plate_nesting is not None:
            kw["max_plate_nesting"] = self.max_plate_nesting
        if self.estimator == "enumerate":
            return TraceEnum_ELBO(**kw)
        if self.estimator == "score-function-baseline":
            return GraphELBO(**kw)
        if self.estimator in ("gumbel", "straight-through", "gumbel-rao"):
            # analytic KL between guide and prior sites (exact for Bernoulli and categorical pairs)
            return MeanFieldELBO(**kw)
        return Trace_ELBO(**kw)

    def _handles(self, name: str, fn: Any) -> bool:
        return (self.sites is None or name in self.sites) and site_family(fn) in self.info.families

    def _check_sites(self, model: Callable, guide: Callable, args: tuple, kwargs: dict, trace: Any = None
                     ) -> tuple[list[str], dict[str, Any]]:
        """``(the guide's discrete sites this estimator handles, in order, {discrete site: fn})``;
        refuses the sites it cannot handle. ``trace``: a guide trace the caller already has."""
        discrete, continuous = guide_latents(guide, args, kwargs, trace)
        for name in self.sites or []:
            if name in continuous:
                raise ValueError(f"site {name!r} is not discrete: the {self.estimator!r} estimator applies to "
                                 f"discrete (enumerable) sites only; the guide's discrete sites are {list(discrete)}")
            if name not in discrete:
                raise ValueError(f"sites= names {name!r}, which is not a latent site of the guide; its discrete "
                                 f"sites are {list(discrete)}")
        handled = []
        for name, fn in discrete.items():
            if self.sites is not None and name not in self.sites:
                continue
            refusal = site_refusal(self.estimator, name, fn)
            if refusal:
                raise ValueError(refusal)
            handled.append(name)
        if not discrete:
            raise ValueError(next(iter(estimator_applicability(model, guide, *args, estimators=[self.estimator],
                                                               **kwargs).values())))
        return handled, discrete

    def structure(self, model: Callable, guide: Callable, args: tuple, kwargs: dict, refresh: bool = False
                  ) -> Structure:
        """What a particle estimator needs (handled sites, plate nesting), found at the first call."""
        if self._structure is None or refresh:
            sites, discrete = self._check_sites(model, guide, args, kwargs)
            families = {n: site_family(discrete[n]) for n in sites}
            depth = self.max_plate_nesting
            if depth is None:
                with side_trace():
                    depth = pair_plate_nesting(model, guide, args, kwargs)
            self._structure = Structure(depth, sites, families, self._handles)
        return self._structure

    def wrap(self, model: Callable, guide: Callable) -> tuple[Callable, Callable]:
        """``(model, guide)`` with their discrete sites rewritten for this estimator (site-rewriting estimators)."""
        common = {"estimator": self.estimator, "temperature": self.temperature, "sites": self.sites,
                  "max_enum_size": self.max_enum_size, "baseline_beta": self.baseline_beta,
                  "rao_samples": self.rao_samples}
        return (with_estimator(model, {**common, "role": "model", "guide_sites": self._handled}),
                with_estimator(guide, {**common, "role": "guide"}))

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Differentiable negative objective (or its estimator's surrogate), summed over the batch."""
        if self.estimator in PARTICLE_ESTIMATORS:
            for attempt in range(2):
                structure = self.structure(model, guide, args, kwargs, refresh=attempt > 0)
                try:
                    loss, self.last_stats = self.inner.loss(model, guide, args, kwargs, structure)
                    return loss
                except StructureChanged as e:
                    if attempt:
                        raise ValueError(f"the guide's discrete sites change from one call to the next (site {e}); "
                                         f"{self.estimator!r} needs the same discrete sites in every run") from None
        if not self._checked:
            trace = _guide_trace(guide, args, kwargs)
            self._handled = tuple(self._check_sites(model, guide, args, kwargs, trace)[0])
            # The plain score function rewrites nothing, unless the guide marks sites for enumeration.
            self._rewrite = (self.estimator != "score-function"
                             or any(enumeration_mark(site) for site in trace.nodes.values()))
            self._checked = True
        if self._rewrite:
            model, guide = self.wrap(model, guide)
        if self.estimator == "enumerate" and not torch.is_grad_enabled():
            # TraceEnum_ELBO refuses to build a loss that does not require grad (evaluation).
            return torch.as_tensor(self.inner.loss(model, guide, *args, **kwargs))
        return self.inner.differentiable_loss(model, guide, *args, **kwargs)

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """Negative objective estimate (the ELBO's; the ``S``-sample bound's for ``vimco``) as a float."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def __repr__(self) -> str:
        return (f"DiscreteELBO({self.estimator!r}, temperature={self.temperature:g}, "
                f"num_particles={self.num_particles})")


class TemperatureAnnealing(Callback):
    """``fit`` callback: ``tau = max(min_temperature, tau0 * exp(-rate * step))`` (Jang et al. 2017).

    Sets ``state.elbo.temperature`` before each step (every ``every`` steps, as Jang et al.
    update it every N steps) and logs the last value as ``temperature`` in the history.
    """

    def __init__(self, rate: float = 1e-4, min_temperature: float = 0.5, tau0: float = 1.0, every: int = 1):
        validation.non_negative_number("rate", rate)
        self.rate, self.every = float(rate), int(every)
        self.min_temperature = check_temperature(min_temperature)
        self.tau0 = check_temperature(tau0)

    def temperature(self, step: int) -> float:
        step = (step // self.every) * self.every
        return max(self.min_temperature, self.tau0 * math.exp(-self.rate * step))

    def on_step_begin(self, state: Any, batch: Any) -> None:
        if not hasattr(state.elbo, "temperature"):
            raise TypeError(f"TemperatureAnnealing needs an objective with a temperature (DiscreteELBO), got {type(state.elbo).__name__}")
        if getattr(state.elbo, "learns_temperature", False):
            raise ValueError(f"{state.elbo!r} learns its temperature (to minimise the gradient's variance); "
                             "TemperatureAnnealing does not apply to it")
        state.elbo.temperature = self.temperature(state.step)

    def on_epoch_end(self, state: Any) -> None:
        state.logs["temperature"] = self.temperature(max(state.step - 1, 0))
