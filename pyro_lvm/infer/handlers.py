"""Effects on a pair as Pyro handlers, and KL control as one: scale the latent sites of a model *and* its guide.

Every effect pyro_lvm puts on a pair (KL scaling, full-data and data-parallel scaling, the
discrete estimators' site rewriting) is a poutine messenger stacked on the model and guide,
and the objective stays the ELBO it is given: :func:`handled` wraps one program in a fresh
handler per call, :class:`HandledELBO` runs an ELBO on the programs a subclass's
``programs`` method returns (``loss``, ``differentiable_loss``, ``loss_and_grads`` and every
other attribute are the wrapped ELBO's).

The ELBO of a pair is ``E_q[log p(x | z)] + E_q[log p(z) - log q(z | x)]``. Multiplying the
log-density of a latent site by ``beta`` in **both** the model (``log p(z)``) and the guide
(``log q(z | x)``) leaves the likelihood term alone and turns the second term into
``-beta * KL``: the beta-VAE / KL-annealing objective, for any pair, by site name.

Why not ``poutine.scale``: it scales every site under it (observations included) and
rejects ``scale = 0``, which is where KL annealing starts.

What each Pyro objective makes of it:

* ``Trace_ELBO``: the loss is ``-rec + beta * KL`` (Monte Carlo KL). Gradients are right for
  reparameterised *and* score-function sites: Pyro never scales the score-function factor,
  only the cost it multiplies.
* ``TraceMeanField_ELBO``: the closed-form KL is multiplied by the *guide* site's scale only;
  since both sides carry ``beta`` this is the same objective.
* ``TraceEnum_ELBO``: guide-side enumerated (or sampled) latent sites can be scaled. Sites
  enumerated in the *model* only are not KL terms and are never selected; a scaled site
  whose prior depends on a model-enumerated variable breaks Pyro's rule that all
  enumerated factors share one scale, and :class:`KLScaledELBO` raises a ``ValueError``
  naming the scaled sites.
* Jit-compiled ELBOs bake the scale into the compiled graph: refused with a ``TypeError``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from pyro.poutine.messenger import Messenger

from ..traces import is_latent_site


def handled(fn: Callable, make_handler: Callable[[], Messenger]) -> Callable:
    """``fn`` run under a fresh handler ``make_handler()`` at every call (a handler may keep
    state for one run, so one instance is never shared between runs)."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with make_handler():
            return fn(*args, **kwargs)

    return wrapped


class HandledELBO:
    """An ELBO run on a model and guide with handlers stacked on them.

    Subclasses override :meth:`programs`; ``differentiable_loss``, ``loss`` and
    ``loss_and_grads`` call the wrapped ELBO's on what it returns, and every other attribute
    (``num_particles``, ``max_plate_nesting``, ...) is the wrapped ELBO's.
    """

    def __init__(self, elbo: Any):
        self.elbo = elbo

    def programs(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple[Callable, Callable]:
        """``(model, guide)`` under this objective's handlers, for a call with ``args``/``kwargs``."""
        return model, guide

    def _run(self, method: str, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> Any:
        m, g = self.programs(model, guide, args, kwargs)
        return getattr(self.elbo, method)(m, g, *args, **kwargs)

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._run("differentiable_loss", model, guide, *args, **kwargs)

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        return self._run("loss", model, guide, *args, **kwargs)

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        return self._run("loss_and_grads", model, guide, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # num_particles, max_plate_nesting, ... of the wrapped ELBO
        if name == "elbo":
            raise AttributeError(name)
        return getattr(self.elbo, name)


def check_beta(beta: Any, what: str = "beta") -> float:
    """Return ``beta`` as a float, or raise ``ValueError`` unless it is finite and >= 0."""
    try:
        value = float(beta)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a non-negative number, got {beta!r}") from None
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return value


def _selector(sites: Any) -> tuple[Callable[[str], bool], frozenset[str] | None]:
    """``(predicate on names, the explicit names or None)`` for a site specification."""
    if sites is None:
        return (lambda name: True), None
    if isinstance(sites, str):
        sites = [sites]
    if callable(sites):
        return sites, None
    names = frozenset(sites)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"sites must be None, a site name, a non-empty list of names or a predicate; got {sites!r}")
    return names.__contains__, names


class KLScaleMessenger(Messenger):
    """Multiply ``msg["scale"]`` of selected latent sample sites by ``beta``.

    Use it through :func:`kl_scale` (which applies it to model and guide consistently);
    on its own it scales one function's sites.

    Args:
        beta: a number >= 0, or a zero-argument callable returning one (read at every site,
            so a schedule can change it between steps).
        sites: ``None`` (every latent site), a name, a list of names, or a predicate
            ``name -> bool``.
        only: when given, a set that restricts scaling to these names (the guide's latent
            sites, recorded by the guide-side handler); ``record``: a set the handler adds the
            names it scaled to.
    """

    def __init__(self, beta: Any = 1.0, sites: Any = None, only: set[str] | None = None,
                 record: set[str] | None = None):
        super().__init__()
        if not callable(beta):
            check_beta(beta)
        self.beta = beta
        self.select, self.names = _selector(sites)
        self.only = only
        self.record = record
        self.seen: set[str] = set()

    def current_beta(self) -> float:
        return check_beta(self.beta() if callable(self.beta) else self.beta)

    def __enter__(self):
        self.seen = set()
        return super().__enter__()

    def _process_message(self, msg: dict) -> None:
        if not is_latent_site(msg):
            return
        name = msg["name"]
        if self.only is not None:
            if name not in self.only:
                return
        elif not self.select(name):
            return
        self.seen.add(name)
        if self.record is not None:
            self.record.add(name)
        beta = self.current_beta()
        if beta != 1.0:  # keep scale exactly as it was at beta = 1 (same graph, same numbers)
            msg["scale"] = msg["scale"] * beta


def kl_scale(model: Callable, guide: Callable, beta: Any = 1.0, sites: Any = None) -> tuple[Callable, Callable]:
    """Return ``(scaled_model, scaled_guide)``: the same programs with the selected latent
    sites' log-densities multiplied by ``beta`` on both sides, i.e. the KL term scaled.

    The guide decides which sites are scaled (Pyro's ELBOs run the guide first): the model
    scales exactly the sites the guide scaled in its latest run, so model-only sites (for
    example sites enumerated out in the model) are left alone.

    Raises ``ValueError`` for a negative or non-finite ``beta``, or, when the programs run,
    for a site name that is not a latent site of the guide or of the model.
    """
    if not callable(beta):
        check_beta(beta)
    record: set[str] = set()

    def scaled_guide(*args, **kwargs):
        record.clear()
        handler = KLScaleMessenger(beta, sites, record=record)
        with handler:
            out = guide(*args, **kwargs)
        if handler.names is not None and handler.names - handler.seen:
            raise ValueError(
                f"unknown latent site(s) {sorted(handler.names - handler.seen)} for KL scaling: the guide's "
                f"scaled latent sites were {sorted(handler.seen)}")
        return out

    def scaled_model(*args, **kwargs):
        only = set(record)
        handler = KLScaleMessenger(beta, sites, only=only)
        with handler:
            out = model(*args, **kwargs)
        if only - handler.seen:
            raise ValueError(f"site(s) {sorted(only - handler.seen)} are latent in the guide but not latent sites "
                             "of the model, so they have no KL term to scale")
        return out

    return scaled_model, scaled_guide


class KLScaledELBO(HandledELBO):
    """Wrap a Pyro ELBO so that its KL term is multiplied by ``beta``.

    ``loss = -E_q[log p(x|z)] + beta * KL(q || p)`` (summed over datapoints, like the ELBO it
    wraps). ``beta`` is an attribute: a schedule callback sets it between steps. At
    ``beta = 1`` the loss and gradients are exactly those of the wrapped ELBO.

    Args:
        elbo: ``Trace_ELBO`` (default), ``TraceMeanField_ELBO``, ``TraceEnum_ELBO``, ... (any
            object with ``differentiable_loss``; not a Jit ELBO).
        beta: weight >= 0.
        sites: which latent sites (see :func:`kl_scale`); default all.
    """

    def __init__(self, elbo: Any = None, beta: float = 1.0, sites: Any = None):
        import pyro

        elbo = elbo if elbo is not None else pyro.infer.Trace_ELBO()
        if type(elbo).__name__.startswith("Jit"):
            raise TypeError(f"{type(elbo).__name__} compiles the scale into its graph, so a changing beta would be "
                            "ignored; use the non-jit ELBO with KL scaling")
        if isinstance(elbo, KLScaledELBO):
            elbo = elbo.elbo
        super().__init__(elbo)
        self.beta = check_beta(beta)
        _selector(sites)  # validate now, not at the first step
        self.sites = sites

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "beta":
            value = check_beta(value)
        super().__setattr__(key, value)

    def programs(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple[Callable, Callable]:
        return kl_scale(model, guide, lambda: self.beta, self.sites)

    def _run(self, method: str, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> Any:
        try:
            return super()._run(method, model, guide, *args, **kwargs)
        except ValueError as e:
            if "share a common poutine.scale" in str(e):
                raise ValueError(
                    f"TraceEnum_ELBO cannot scale the KL of these sites by beta={self.beta}: a scaled site's prior "
                    "depends on a variable enumerated in the model, and enumerated factors must share one scale. "
                    "Select only sites independent of model-enumerated variables with sites=[...]. "
                    f"(Pyro: {e})") from e
            raise

    def __repr__(self) -> str:
        return f"KLScaledELBO({type(self.elbo).__name__}, beta={self.beta}, sites={self.sites!r})"
