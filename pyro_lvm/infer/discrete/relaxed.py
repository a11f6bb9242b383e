"""Relaxations of discrete distributions, and the noise that drives them.

Two families, each with the same three uses:

* categorical (``OneHotCategorical``): Gumbel-softmax / Concrete (Jang et al. 2017; Maddison
  et al. 2017) on the simplex;
* Bernoulli: the binary Concrete (``RelaxedBernoulli``), ``sigmoid((logits + L) / tau)`` with
  logistic noise ``L``, on [0, 1].

For each: a ``Soft*`` distribution whose ``log_prob`` extends the discrete one to relaxed
values (``sum_k v_k log p_k``, ``v log p + (1 - v) log(1 - p)``); a ``GumbelSoftmax*``
distribution that samples the relaxation (``hard=True``: the exact discrete value forward,
the relaxed sample's gradient backward; ``rao_samples=K``: Gumbel-Rao, the straight-through
gradient averaged over K noise draws *given* the discrete value, Paulus et al. 2021; same mean
as straight-through, less variance) and keeps the
discrete distribution's exact KL; a ``Concrete*`` density on the relaxed values.

Also the conditional noise REBAR/RELAX and Gumbel-Rao need: noise ``z`` drawn given the
discrete value ``H(z)`` it must produce (Tucker et al. 2017, appendix).

Numerical care in float32: relaxed samples are drawn in log (or logit) space and the Concrete
densities are evaluated at the sample's exact log/logit, remembered from ``rsample``
(``log(max(value, tiny))`` for other values), so nothing takes ``log 0``.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import pyro.distributions as dist
import torch
from torch.distributions import constraints
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical
from torch.nn import functional as F

from ... import validation

# float32 has no positive number below this; log() of the clamped value stays finite (-87.3).
_TINY = torch.finfo(torch.float32).tiny
# log(z) (categorical) or logit(z) (Bernoulli) of Concrete samples, keyed by the sample tensor
# itself (weakly: entries vanish with the sample). At low temperature components of z
# underflow (log z ~ -1000 is not representable as z in float32): recomputing them from z
# would be wrong there, and the gradient 1/z overflows to inf in the backward pass.
_LOG_VALUES: dict[int, tuple[weakref.ref, torch.Tensor]] = {}


def _remember_log(value: torch.Tensor, log_value: torch.Tensor) -> None:
    key = id(value)
    _LOG_VALUES[key] = (weakref.ref(value, lambda _: _LOG_VALUES.pop(key, None)), log_value)


def _recall_log(value: torch.Tensor) -> torch.Tensor | None:
    entry = _LOG_VALUES.get(id(value))
    return entry[1] if entry is not None and entry[0]() is value else None


def check_temperature(tau: Any) -> float:
    """Return ``float(tau)`` if it is a positive finite number (a one-element tensor counts), else
    raise :class:`~pyro_lvm.validation.InvalidArgumentError`."""
    if isinstance(tau, torch.Tensor) and tau.numel() == 1:
        tau = tau.item()
    return validation.positive_number("temperature", tau)


def check_rao_samples(k: Any) -> int:
    """Relaxed samples per discrete one for Gumbel-Rao (0: plain straight-through)."""
    return validation.non_negative_int("rao_samples", k)


# ----------------------------------------------------------------------------- noise

def _uniform(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    eps = torch.finfo(like.dtype).eps
    return torch.rand(shape, dtype=like.dtype, device=like.device).clamp(eps, 1 - eps)


def gumbel_noise(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log U)`` of ``shape``, dtype/device of ``like``."""
    return -torch.log(-torch.log(_uniform(shape, like)))


def logistic_noise(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """Standard logistic noise ``logit(U)`` of ``shape``, dtype/device of ``like``."""
    u = _uniform(shape, like)
    return torch.log(u) - torch.log1p(-u)


def gumbel_softmax_log(logits: torch.Tensor, tau: float, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
    """Log of a Gumbel-softmax sample: ``log_softmax((logits + G) / tau)``, shape ``sample_shape + logits.shape``.

    Computed in log space so that no component underflows to ``log 0``.
    """
    noise = gumbel_noise(torch.Size(sample_shape) + logits.shape, logits)
    return torch.log_softmax((logits + noise) / tau, dim=-1)


def conditional_gumbel(logits: torch.Tensor, one_hot: torch.Tensor, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
    """``z ~ p(logits + G | argmax = one_hot)``: Gumbel-perturbed logits given their argmax.

    The maximum of ``logits + G`` is ``Gumbel(logsumexp(logits))`` whatever the argmax; the
    other coordinates are Gumbels truncated below it. Differentiable in ``logits``.
    Shapes: ``logits`` and ``one_hot`` ``(..., K)``; result ``sample_shape + (..., K)``.
    """
    shape = torch.Size(sample_shape) + logits.shape
    exp_noise = -torch.log(_uniform(shape, logits))  # Exponential(1)
    top = logits.logsumexp(-1, keepdim=True) - torch.log(exp_noise)
    top_value = (top * one_hot).sum(-1, keepdim=True)
    others = -torch.logaddexp(torch.log(exp_noise) - logits, -top_value)
    return torch.where(one_hot.bool(), top_value.expand(shape), others)


def conditional_logistic(logits: torch.Tensor, value: torch.Tensor, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
    """``z ~ p(logits + L | 1[z > 0] = value)``: logistic-perturbed logits given their sign.

    With ``p = sigmoid(logits)``, the uniform behind ``L`` lies in ``(1 - p, 1)`` when the value
    is 1 and in ``(0, 1 - p)`` when it is 0. Differentiable in ``logits``.
    """
    shape = torch.Size(sample_shape) + logits.shape
    v = _uniform(shape, logits)
    p = torch.sigmoid(logits)
    u = torch.where(value.bool(), 1 - p + v * p, v * (1 - p))
    eps = torch.finfo(logits.dtype).eps
    u = u.clamp(eps, 1 - eps)
    return logits + torch.log(u) - torch.log1p(-u)


class _StraightThrough(torch.autograd.Function):
    """Forward: the exact one-hot vector of the argmax. Backward: the identity."""

    @staticmethod
    def forward(ctx, soft: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        index = soft.argmax(-1, keepdim=True)
        return torch.zeros_like(soft).scatter_(-1, index, 1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """``hard`` forward, ``soft``'s gradient backward: ``hard + soft - soft.detach()`` (exact forward)."""
    return hard.detach() + (soft - soft.detach())


class _RelaxedSampling:
    """What the two ``GumbelSoftmax*`` distributions share: temperature, straight-through and
    Gumbel-Rao options, ``sample`` as a detached ``rsample``, and ``expand``."""

    has_rsample = True

    def _relaxation(self, temperature: float, hard: bool, rao_samples: int) -> None:
        self.temperature = check_temperature(temperature)
        self.rao_samples = check_rao_samples(rao_samples)
        self.hard = hard or self.rao_samples > 0

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def expand(self, batch_shape, _instance=None):
        logits = self.logits.expand(torch.Size(batch_shape) + self.event_shape)
        return type(self)(logits, self.temperature, self.hard, self.rao_samples)


# ----------------------------------------------------------------------------- categorical

class SoftOneHotCategorical(dist.OneHotCategorical):
    """``OneHotCategorical`` whose ``log_prob`` is ``sum_k value_k log p_k`` for any value.

    Equal to the categorical log-probability for one-hot values; finite (a cross-entropy)
    for relaxed values. Used for the model's prior under the relaxed estimators, where the
    ELBO takes the exact KL instead (or, under REBAR/RELAX, where the control variate
    evaluates the ELBO at relaxed values).
    """

    arg_constraints = {"logits": constraints.real_vector}

    def __init__(self, logits: torch.Tensor, validate_args: bool | None = None):
        super().__init__(logits=logits, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return (value * self.logits).sum(-1)

    def expand(self, batch_shape, _instance=None):
        return type(self)(self.logits.expand(torch.Size(batch_shape) + self.event_shape))


class GumbelSoftmaxCategorical(_RelaxedSampling, SoftOneHotCategorical):
    """The categorical ``q(z) = Cat(softmax(logits))``, sampled through its relaxation.

    ``rsample`` returns a Gumbel-softmax sample at ``temperature`` (on the simplex); with
    ``hard=True`` its exactly one-hot argmax with the relaxed sample's gradient
    (straight-through); with ``rao_samples=K > 0`` the one-hot sample with the gradient of
    the mean of K relaxed samples drawn given it (Gumbel-Rao). Being a ``OneHotCategorical``,
    its KL to a ``OneHotCategorical`` prior is the exact categorical KL.

    Shapes: ``logits (..., K)``; samples ``sample_shape + (..., K)``.
    """

    def __init__(self, logits: torch.Tensor, temperature: float, hard: bool = False, rao_samples: int = 0,
                 validate_args: bool | None = None):
        super().__init__(logits)
        self._relaxation(temperature, hard, rao_samples)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        if self.rao_samples:
            shape = torch.Size(sample_shape) + self.logits.shape
            with torch.no_grad():
                index = (self.logits + gumbel_noise(shape, self.logits)).argmax(-1, keepdim=True)
                hard = torch.zeros(shape, dtype=self.logits.dtype, device=self.logits.device).scatter_(-1, index, 1.0)
            # the *noise* given the discrete value, with the unconditional path's Jacobian dz/dlogits = I
            # (Paulus et al.: E[d softmax((logits + G) / tau) / d logits | D]), not the conditional's
            noise = (conditional_gumbel(self.logits, hard, torch.Size([self.rao_samples])) - self.logits).detach()
            return straight_through(hard, torch.softmax((self.logits + noise) / self.temperature, -1).mean(0))
        soft = gumbel_softmax_log(self.logits, self.temperature, sample_shape).exp()
        return _StraightThrough.apply(soft) if self.hard else soft


class ConcreteCategorical(dist.TorchDistribution):
    """Concrete / Gumbel-softmax density on the simplex (Maddison et al. 2017; Jang et al. 2017).

    Like ``RelaxedOneHotCategorical`` but NaN-free in float32: samples are drawn in log space
    and ``log_prob`` evaluates the ExpConcrete density at the sample's exact log (remembered
    from ``rsample``; ``log(max(value, tiny))`` for other values) minus the log-Jacobian of
    ``exp``. ``logits (..., K)``; values ``(..., K)`` on the simplex.
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


# ----------------------------------------------------------------------------- Bernoulli

class SoftBernoulli(dist.Bernoulli):
    """``Bernoulli`` whose ``log_prob`` is ``v log p + (1 - v) log(1 - p)`` for any ``v`` in [0, 1].

    Equal to the Bernoulli log-probability at 0 and 1; the binary cross-entropy for relaxed
    values. ``logits (...)``; values ``(...)``.
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.unit_interval

    def __init__(self, logits: torch.Tensor, validate_args: bool | None = None):
        super().__init__(logits=logits, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return value * self.logits - F.softplus(self.logits)

    def expand(self, batch_shape, _instance=None):
        return type(self)(self.logits.expand(batch_shape))


class GumbelSoftmaxBernoulli(_RelaxedSampling, SoftBernoulli):
    """The Bernoulli ``q(b) = Bern(sigmoid(logits))``, sampled through its binary Concrete relaxation.

    ``rsample`` returns ``sigmoid((logits + L) / temperature)`` (logistic ``L``), in [0, 1];
    ``hard=True``: exactly 0/1 (``logits + L > 0``) with the relaxed sample's gradient
    (straight-through); ``rao_samples=K > 0``: the 0/1 sample with the gradient of the mean
    of K relaxed samples drawn given it (Gumbel-Rao). Being a ``Bernoulli``, its KL to a
    ``Bernoulli`` prior is the exact Bernoulli KL (Jang et al.'s formulation).
    """

    def __init__(self, logits: torch.Tensor, temperature: float, hard: bool = False, rao_samples: int = 0,
                 validate_args: bool | None = None):
        super().__init__(logits)
        self._relaxation(temperature, hard, rao_samples)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.logits.shape
        if self.rao_samples:
            with torch.no_grad():
                hard = (self.logits + logistic_noise(shape, self.logits) > 0).to(self.logits.dtype)
            noise = (conditional_logistic(self.logits, hard, torch.Size([self.rao_samples])) - self.logits).detach()
            return straight_through(hard, torch.sigmoid((self.logits + noise) / self.temperature).mean(0))
        z = self.logits + logistic_noise(shape, self.logits)
        soft = torch.sigmoid(z / self.temperature)
        return straight_through((z > 0).to(soft.dtype), soft) if self.hard else soft


class ConcreteBernoulli(dist.TorchDistribution):
    """Binary Concrete density on [0, 1] (``RelaxedBernoulli``; Maddison et al. 2017), NaN-free.

    Samples are ``sigmoid(y)`` with ``y = (logits + L) / tau``; ``log_prob`` is the
    ``LogitRelaxedBernoulli`` density of ``y`` (remembered from ``rsample``; the clamped
    logit of other values) minus the log-Jacobian ``log sigmoid(y) + log sigmoid(-y)``.
    ``logits (...)``; values ``(...)``.
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, logits: torch.Tensor, temperature: float, validate_args: bool | None = None):
        self.logits = logits
        self.temperature = check_temperature(temperature)
        super().__init__(logits.shape, torch.Size(), validate_args=False)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        y = (self.logits + logistic_noise(torch.Size(sample_shape) + self.logits.shape, self.logits)) / self.temperature
        value = torch.sigmoid(y)
        _remember_log(value, y)
        return value

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        y = _recall_log(value)
        if y is None:
            v = value.clamp(_TINY, 1 - torch.finfo(value.dtype).eps)
            y = torch.log(v) - torch.log1p(-v)
        diff = self.logits - self.temperature * y
        log_density_y = math.log(self.temperature) + diff - 2 * F.softplus(diff)
        return log_density_y - F.logsigmoid(y) - F.logsigmoid(-y)

    def expand(self, batch_shape, _instance=None):
        return type(self)(self.logits.expand(batch_shape), self.temperature)
