"""``KLAnnealing``: a :class:`~pyro_lvm.training.loop.Callback` that drives the KL weight of ``fit()``.

At the start of training it wraps the training objective in :class:`KLScaledELBO` (the
validation loss that ``fit`` logs stays the unscaled ELBO), sets ``beta = schedule(step)``
before every step, and logs per epoch the weight of its last step as ``"kl_weight"`` and
the smallest and largest weight of its steps as ``"kl_weight_min"`` and ``"kl_weight_max"``
(a cyclical schedule rises and falls within an epoch; the last value alone hides it).
The weight depends only on the global step, so a resumed run continues the schedule.
"""

from __future__ import annotations

import math
from typing import Any

from ..training.callbacks import Callback, TrainState
from .handlers import KLScaledELBO, check_beta
from .schedules import make_schedule


class KLAnnealing(Callback):
    """KL weight ``beta = schedule(step)`` for any pair and any supported ELBO.

    Args:
        schedule: ``"constant"``, ``"linear"``, ``"sigmoid"``, ``"cyclical"`` (then ``kwargs``
            are the schedule's arguments, e.g. ``start=0.1, steps=1000``), a number (constant)
            or any callable ``step -> weight``.
        sites: which latent sites to scale (default all; see :func:`~pyro_lvm.infer.kl_scale`).

    Example: ``fit(pair, x, elbo=TraceMeanField_ELBO(), callbacks=[KLAnnealing("linear", start=0.1, steps=1000)])``.
    """

    def __init__(self, schedule: Any = "linear", sites: Any = None, **kwargs: Any):
        self.schedule = make_schedule(schedule, **kwargs)
        self.sites = sites
        self.beta: float | None = None
        self._epoch_weights: list[float] = []
        self._wrapped: KLScaledELBO | None = None
        self._original: Any = None

    def weight(self, step: int) -> float:
        value = self.schedule(step)
        try:
            return check_beta(value, what="KL weight")
        except ValueError:
            raise ValueError(f"the KL schedule {self.schedule!r} returned {value!r} at step {step}; "
                             "a KL weight must be a finite number >= 0") from None

    def on_train_begin(self, state: TrainState) -> None:
        self._original = state.elbo
        self.beta = self.weight(state.step)
        self._wrapped = KLScaledELBO(state.elbo, beta=self.beta, sites=self.sites)
        state.elbo = self._wrapped

    def on_epoch_begin(self, state: TrainState) -> None:
        self._epoch_weights = []

    def on_step_begin(self, state: TrainState, batch: Any) -> None:
        self.beta = self.weight(state.step)
        self._epoch_weights.append(self.beta)
        assert self._wrapped is not None
        self._wrapped.beta = self.beta

    def on_epoch_end(self, state: TrainState) -> None:
        if self.beta is not None and math.isfinite(self.beta):
            state.logs["kl_weight"] = self.beta
        if self._epoch_weights:
            state.logs["kl_weight_min"] = min(self._epoch_weights)
            state.logs["kl_weight_max"] = max(self._epoch_weights)

    def on_train_end(self, state: TrainState) -> None:
        if self._original is not None:
            state.elbo = self._original
