"""Gradient estimators for discrete latent sites, applied to any model/guide pair by name.

A pair is written once, in plain discrete Pyro (``OneHotCategorical`` or ``Categorical``
sample sites). :class:`DiscreteELBO` turns it into one of these objectives:

==========================  ====================================================================
``"enumerate"``             sum over the guide's discrete values exactly (``TraceEnum_ELBO``);
                            Independent one-hot sites are enumerated as a cartesian product
``"score-function"``        sample the discrete value, REINFORCE gradient (``Trace_ELBO``)
``"score-function-baseline"``  the same with Rao-Blackwellisation and a decaying-average baseline
                            (``TraceGraph_ELBO``); a ``nn_baseline`` the guide declares is kept
``"gumbel"``                Jang et al. (2017): a Gumbel-softmax (relaxed) sample goes into the
                            likelihood; the KL is the *exact* categorical KL(q || p)
``"gumbel-concrete"``       Maddison et al. (2017): relaxed (Concrete) densities in both model
                            and guide; the KL term is the Concrete density ratio at the sample
``"straight-through"``      exactly one-hot forward values, the relaxed sample's gradient
                            backward (Bengio et al. 2013; Jang et al.), exact categorical KL
==========================  ====================================================================

Why "gumbel" is the default relaxation: the Concrete density ratio's gradient is biased
by an amount that does not shrink as the temperature falls (``/work/shared/BASELINES.md``;
``benchmarks/estimator_variance.py`` measures it), while with the exact categorical KL only the
likelihood term is relaxed and its bias vanishes as ``tau -> 0``.

Numerical care (both failures are real with stock Pyro in float32):

* Relaxed samples are drawn in log space (``log_softmax``) and the Concrete density is
  evaluated from the clamped log of the value, so the loss stays finite at ``tau = 0.1``
  where ``RelaxedOneHotCategorical``'s values underflow and its ``log_prob`` returns NaN.
* The straight-through value is exactly one-hot and its ``log_prob`` needs nothing but the
  value, unlike ``RelaxedOneHotCategoricalStraightThrough`` whose ``log_prob`` reads an
  attribute that a cloned value loses (NaN).
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Callable, Iterable

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger
from torch.distributions import constraints
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

from ..callbacks import Callback

ESTIMATORS: dict[str, str] = {
    "enumerate": "exact sum over the guide's discrete values (TraceEnum_ELBO)",
    "score-function": "sampled discrete values, score-function (REINFORCE) gradient (Trace_ELBO)",
    "score-function-baseline": "score function with Rao-Blackwellisation and baselines (TraceGraph_ELBO)",
    "gumbel": "Gumbel-softmax sample in the likelihood, exact categorical KL (Jang et al. 2017)",
    "gumbel-concrete": "relaxed Concrete densities in model and guide (Maddison et al. 2017)",
    "straight-through": "one-hot forward, Gumbel-softmax gradient backward, exact categorical KL",
}
RELAXED = ("gumbel", "gumbel-concrete", "straight-through")

# float32 has no positive number below this; log() of the clamped value stays finite (-87.3).
_TINY = torch.finfo(torch.float32).tiny
# log(z) of Concrete samples, keyed by the sample tensor itself (weakly: entries vanish with
# the sample). At low temperature components of z underflow (log z ~ -1000 is not
# representable as z in float32): recomputing log(z) from z would be wrong there, and its
# gradient 1/z overflows to inf in the backward pass. A value not found here (a copy) falls
# back to log(max(z, tiny)).
_LOG_VALUES: dict[int, tuple[weakref.ref, torch.Tensor]] = {}


def _remember_log(value: torch.Tensor, log_value: torch.Tensor) -> None:
    key = id(value)
    _LOG_VALUES[key] = (weakref.ref(value, lambda _: _LOG_VALUES.pop(key, None)), log_value)


def _recall_log(value: torch.Tensor) -> torch.Tensor | None:
    entry = _LOG_VALUES.get(id(value))
    return entry[1] if entry is not None and entry[0]() is value else None


def check_estimator(name: str) -> str:
    """Return ``name`` if it is a known estimator, else raise ``ValueError`` listing them."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    return name


def check_temperature(tau: float) -> float:
    """Return ``float(tau)`` if it is a positive finite number, else raise ``ValueError``."""
    try:
        value = float(tau)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a positive number, got {tau!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"temperature must be positive and finite, got {tau!r}")
    return value


def check_num_classes(k: int, what: str = "number of classes K") -> int:
    """A categorical needs at least two classes; raise ``ValueError`` otherwise."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise ValueError(f"{what} must be an int >= 2, got {k!r}")
    return k


# ----------------------------------------------------------------------------- distributions

def gumbel_softmax_log(logits: torch.Tensor, tau: float, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
    """Log of a Gumbel-softmax sample: ``log_softmax((logits + G) / tau)``, shape ``sample_shape + logits.shape``.

    Computed in log space so that no component underflows to ``log 0``.
    """
    shape = torch.Size(sample_shape) + logits.shape
    u = torch.rand(shape, dtype=logits.dtype, device=logits.device)
    eps = torch.finfo(logits.dtype).eps
    gumbel = -torch.log(-torch.log(u.clamp(eps, 1 - eps)))
    return torch.log_softmax((logits + gumbel) / tau, dim=-1)


class _StraightThrough(torch.autograd.Function):
    """Forward: the exact one-hot vector of the argmax. Backward: the identity."""

    @staticmethod
    def forward(ctx, soft: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        index = soft.argmax(-1, keepdim=True)
        return torch.zeros_like(soft).scatter_(-1, index, 1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


class SoftOneHotCategorical(dist.OneHotCategorical):
    """``OneHotCategorical`` whose ``log_prob`` is ``sum_k value_k log p_k`` for any value.

    Equal to the categorical log-probability for one-hot values; finite (a cross-entropy)
    for relaxed values. Used for the model's prior under the "gumbel" estimator, where the
    ELBO takes the exact KL instead and this ``log_prob`` only keeps traces well defined.
    """

    arg_constraints = {"logits": constraints.real_vector}

    def __init__(self, logits: torch.Tensor, validate_args: bool | None = None):
        super().__init__(logits=logits, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return (value * self.logits).sum(-1)

    def expand(self, batch_shape, _instance=None):
        return type(self)(self.logits.expand(torch.Size(batch_shape) + self.event_shape))


class GumbelSoftmaxCategorical(SoftOneHotCategorical):
    """The categorical ``q(z) = Cat(softmax(logits))``, sampled through its relaxation.

    ``rsample`` returns a Gumbel-softmax sample at ``temperature`` (on the simplex), or with
    ``hard=True`` its exactly one-hot argmax with the relaxed sample's gradient
    (straight-through). Being a ``OneHotCategorical``, its KL to a ``OneHotCategorical``
    prior is the exact categorical KL (torch's registered ``kl_divergence``).

    Shapes: ``logits (..., K)``; samples ``sample_shape + (..., K)``.
    """

    has_rsample = True

    def __init__(self, logits: torch.Tensor, temperature: float, hard: bool = False, validate_args: bool | None = None):
        super().__init__(logits)
        self.temperature = check_temperature(temperature)
        self.hard = hard

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        soft = gumbel_softmax_log(self.logits, self.temperature, sample_shape).exp()
        return _StraightThrough.apply(soft) if self.hard else soft

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def expand(self, batch_shape, _instance=None):
        logits = self.logits.expand(torch.Size(batch_shape) + self.event_shape)
        return type(self)(logits, self.temperature, self.hard)


class ConcreteCategorical(dist.TorchDistribution):
    """Concrete / Gumbel-softmax density on the simplex (Maddison et al. 2017; Jang et al. 2017).

    Like ``RelaxedOneHotCategorical`` but NaN-free in float32: samples are drawn in log space
    and ``log_prob`` evaluates the ExpConcrete density at the sample's exact log (remembered
    from ``rsample``; ``log(max(value, tiny))`` for other values) minus the log-Jacobian of
    ``exp``: the same density as ``RelaxedOneHotCategorical``, without its ``log(0)``.
    ``logits (..., K)``; values ``(..., K)`` on the simplex.
    """

    arg_constraints = {"logits": constraints.real_vector}
    support = constraints.simplex
    has_rsample = True

    def __init__(self, logits: torch.Tensor, temperature: float, validate_args: bool | None = None):
        self.logits = logits - logits.logsumexp(-1, keepdim=True)
        self.temperature = check_temperature(temperature)
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=False)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        log_value = gumbel_softmax_log(self.logits, self.temperature, sample_shape)
        value = log_value.exp()
        _remember_log(value, log_value)
        return value

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        log_value = _recall_log(value)
        if log_value is None:
            log_value = value.clamp_min(_TINY).log()
        exp_concrete = ExpRelaxedCategorical(
            torch.tensor(self.temperature, dtype=self.logits.dtype, device=self.logits.device),
            logits=self.logits, validate_args=False)
        return exp_concrete.log_prob(log_value) - log_value.sum(-1)

    def expand(self, batch_shape, _instance=None):
        logits = self.logits.expand(torch.Size(batch_shape) + self.event_shape)
        return type(self)(logits, self.temperature)


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


# ----------------------------------------------------------------------------- site inspection

def unwrap(fn: Any) -> tuple[Any, int]:
    """``(base distribution, number of batch dims reinterpreted as event)`` through ``Independent``."""
    ndims = 0
    while isinstance(fn, torch.distributions.Independent):
        ndims += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    return fn, ndims


def is_discrete(fn: Any) -> bool:
    """True for sites a discrete estimator applies to: enumerable, not reparameterisable."""
    base, _ = unwrap(fn)
    return bool(getattr(base, "has_enumerate_support", False)) and not getattr(base, "has_rsample", False)


def support_size(fn: Any) -> float:
    """Number of joint values of one datapoint's draw from a discrete site (``K ** m``).

    ``K`` is the base distribution's support size, ``m`` the number of variables folded into
    the event by ``Independent``. Returned as a float so that sizes like ``10 ** 20`` print.
    """
    base, ndims = unwrap(fn)
    k = int(base.enumerate_support(expand=False).shape[0])
    m = int(torch.Size(base.batch_shape[len(base.batch_shape) - ndims:]).numel()) if ndims else 1
    return float(k) ** m


def _is_one_hot(base: Any) -> bool:
    return isinstance(base, torch.distributions.OneHotCategorical)


# ----------------------------------------------------------------------------- the handler

class DiscreteSites(Messenger):
    """Rewrites the discrete sample sites of a model or guide for one estimator.

    Args:
        estimator: a name from :data:`ESTIMATORS`.
        temperature: relaxation temperature (relaxed estimators).
        role: ``"model"`` or ``"guide"``.
        sites: names of the sites to treat (default: every unobserved discrete site).
        max_enum_size: refuse enumeration when the joint number of values exceeds this.
        baseline_beta: decay of the average baseline (``"score-function-baseline"``).
    """

    def __init__(self, estimator: str, temperature: float = 1.0, role: str = "guide",
                 sites: Iterable[str] | None = None, max_enum_size: float = 1e5, baseline_beta: float = 0.9):
        super().__init__()
        self.estimator = check_estimator(estimator)
        self.temperature = check_temperature(temperature)
        if role not in ("model", "guide"):
            raise ValueError(f"role must be 'model' or 'guide', got {role!r}")
        self.role = role
        self.sites = set(sites) if sites is not None else None
        self.max_enum_size = max_enum_size
        self.baseline_beta = baseline_beta
        self.enum_size = 1.0

    def _pyro_sample(self, msg: dict) -> None:
        if msg["is_observed"] or type(msg["fn"]).__name__ == "_Subsample":
            return
        named = self.sites is not None and msg["name"] in self.sites
        if self.sites is not None and not named:
            return
        fn = msg["fn"]
        if not is_discrete(fn):
            if named and self.role == "guide":
                raise ValueError(
                    f"site {msg['name']!r} is not discrete ({type(unwrap(fn)[0]).__name__}): the "
                    f"{self.estimator!r} estimator applies to discrete (enumerable) sites only")
            return
        if self.estimator in RELAXED:
            msg["fn"] = self._relaxed(msg["name"], fn)
        elif self.role == "guide" and self.estimator == "enumerate":
            self._enumerate(msg)
        elif self.role == "guide" and self.estimator == "score-function-baseline":
            self._baseline(msg)

    def _relaxed(self, name: str, fn: Any) -> Any:
        base, ndims = unwrap(fn)
        if not _is_one_hot(base):
            raise ValueError(
                f"site {name!r} is {type(base).__name__}: the {self.estimator!r} estimator needs "
                "OneHotCategorical sites (a relaxed sample is a point on the simplex, not an index)")
        logits = base.logits
        if self.estimator == "gumbel-concrete":
            new: Any = ConcreteCategorical(logits, self.temperature)
        elif self.role == "model":
            new = SoftOneHotCategorical(logits)
        else:
            new = GumbelSoftmaxCategorical(logits, self.temperature, hard=self.estimator == "straight-through")
        return new.to_event(ndims) if ndims else new

    def _enumerate(self, msg: dict) -> None:
        self.enum_size *= support_size(msg["fn"])
        if self.enum_size > self.max_enum_size:
            raise ValueError(
                f"enumeration refused: the guide's discrete sites up to {msg['name']!r} have "
                f"{self.enum_size:.3g} joint values per datapoint (limit max_enum_size="
                f"{self.max_enum_size:.3g}); use a sampling or relaxed estimator instead")
        base, ndims = unwrap(msg["fn"])
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

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with DiscreteSites(**handler_args):
            return fn(*args, **kwargs)

    return wrapped


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
    :class:`TemperatureAnnealing`).

    Args:
        estimator: a name from :data:`ESTIMATORS`.
        temperature: Gumbel-softmax temperature (used by the relaxed estimators).
        num_particles: samples per loss evaluation.
        max_plate_nesting: passed to the Pyro ELBO (enumeration needs it; guessed if None).
        max_enum_size: enumeration refuses latent spaces larger than this (per datapoint).
        sites: restrict the estimator to these guide site names (default: all discrete sites).
        baseline_beta: decay of the running-average baseline.
    """

    def __init__(self, estimator: str = "gumbel", temperature: float = 1.0, num_particles: int = 1,
                 max_plate_nesting: int | None = None, max_enum_size: float = 1e5,
                 sites: Iterable[str] | None = None, baseline_beta: float = 0.9):
        self.estimator = check_estimator(estimator)
        self.temperature = temperature
        if not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
        self.num_particles = num_particles
        self.max_plate_nesting = max_plate_nesting
        self.max_enum_size = max_enum_size
        self.sites = list(sites) if sites is not None else None
        self.baseline_beta = baseline_beta
        self.inner = self._make_inner()

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature = check_temperature(value)

    def _make_inner(self) -> Any:
        kw: dict[str, Any] = {"num_particles": self.num_particles}
        if self.max_plate_nesting is not None:
            kw["max_plate_nesting"] = self.max_plate_nesting
        if self.estimator == "enumerate":
            return TraceEnum_ELBO(**kw)
        if self.estimator == "score-function-baseline":
            return GraphELBO(**kw)
        if self.estimator in ("gumbel", "straight-through"):
            # analytic KL between guide and prior sites (exact for categorical pairs)
            return TraceMeanField_ELBO(**kw)
        return Trace_ELBO(**kw)

    def wrap(self, model: Callable, guide: Callable) -> tuple[Callable, Callable]:
        """``(model, guide)`` with their discrete sites rewritten for this estimator."""
        common = {"estimator": self.estimator, "temperature": self.temperature, "sites": self.sites,
                  "max_enum_size": self.max_enum_size, "baseline_beta": self.baseline_beta}
        return with_estimator(model, {**common, "role": "model"}), with_estimator(guide, {**common, "role": "guide"})

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Differentiable negative ELBO (or its estimator's surrogate), summed over the batch."""
        model, guide = self.wrap(model, guide)
        if self.estimator == "enumerate" and not torch.is_grad_enabled():
            # TraceEnum_ELBO refuses to build a loss that does not require grad (evaluation).
            return torch.as_tensor(self.inner.loss(model, guide, *args, **kwargs))
        return self.inner.differentiable_loss(model, guide, *args, **kwargs)

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """Negative ELBO estimate as a float."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def __repr__(self) -> str:
        return f"DiscreteELBO({self.estimator!r}, temperature={self.temperature:g})"


class TemperatureAnnealing(Callback):
    """``fit`` callback: ``tau = max(min_temperature, tau0 * exp(-rate * step))`` (Jang et al. 2017).

    Sets ``state.elbo.temperature`` before each step (every ``every`` steps, as Jang et al.
    update it every N steps) and logs the last value as ``temperature`` in the history.
    """

    def __init__(self, rate: float = 1e-4, min_temperature: float = 0.5, tau0: float = 1.0, every: int = 1):
        if not rate >= 0:
            raise ValueError(f"rate must be >= 0, got {rate!r}")
        self.rate, self.every = float(rate), int(every)
        self.min_temperature = check_temperature(min_temperature)
        self.tau0 = check_temperature(tau0)

    def temperature(self, step: int) -> float:
        step = (step // self.every) * self.every
        return max(self.min_temperature, self.tau0 * math.exp(-self.rate * step))

    def on_step_begin(self, state: Any, batch: Any) -> None:
        if not hasattr(state.elbo, "temperature"):
            raise TypeError(f"TemperatureAnnealing needs an objective with a temperature (DiscreteELBO), got {type(state.elbo).__name__}")
        state.elbo.temperature = self.temperature(state.step)

    def on_epoch_end(self, state: Any) -> None:
        state.logs["temperature"] = self.temperature(max(state.step - 1, 0))
