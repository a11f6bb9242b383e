"""``GradientVariance``: a :func:`~pyro_lvm.fit` callback logging the variance of the guide's gradient.

Every ``every`` steps it draws ``draws`` gradients of the training objective (whatever
estimator ``fit`` was given) on the step's batch, at the current parameters, and logs the
trace of their covariance over the guide's parameters, ``sum_i Var[g_i]``: the quantity the
reference implementations of DisARM, REBAR and RELAX log during training, so a training
curve shows the estimator's variance over time.

The draws run on forked random-number generators: training with the callback takes exactly
the same steps as training without it.
"""

from __future__ import annotations

from typing import Any, Callable

import pyro
import pyro.poutine as poutine
import torch

from ...base import batch_args
from ...training.callbacks import Callback, TrainState
from ...checkpoint import rng_state, set_rng_state
from ...validation import Integer, positive_int


def guide_parameters(state: TrainState, batch: Any) -> list[torch.Tensor]:
    """The trained parameters the guide's log-density depends on (found by one backward pass)."""
    args, kwargs = batch_args(batch)
    with poutine.block():
        trace = poutine.trace(state.pair.guide).get_trace(*args, **kwargs)
    trace.compute_log_prob()
    log_q = sum(site["log_prob_sum"] for site in trace.nodes.values() if site["type"] == "sample"
                and "log_prob_sum" in site and not site["is_observed"])
    if not isinstance(log_q, torch.Tensor) or not log_q.requires_grad:
        return []
    grads = torch.autograd.grad(log_q, state.params, allow_unused=True)
    return [p for p, g in zip(state.params, grads) if g is not None]


class GradientVariance(Callback):
    """Log ``tr Cov[g]`` of the guide parameters' gradient every ``every`` steps.

    Args:
        every: measure after steps ``1, every, 2 * every, ...`` (counting completed steps).
        draws: gradient draws per measurement (>= 2).
        params: ``None`` (the guide's parameters, see :func:`guide_parameters`) or a callable
            ``state -> list of tensors``.

    Each measurement is appended to ``records`` and to the epoch's history entry under
    ``"grad_variance"`` as ``{"step", "trace_cov", "mean_grad_norm", "draws", "params"}``.
    """

    def __init__(self, every: int = 100, draws: int = 10, params: Callable[[TrainState], list] | None = None):
        positive_int("every", every)
        Integer(2)("draws", draws)  # a variance needs two
        if params is not None and not callable(params):
            raise TypeError(f"params must be None or a callable state -> list of tensors, got {type(params).__name__}")
        self.every, self.draws, self.params = every, draws, params
        self.records: list[dict[str, float]] = []
        self._measured: list[torch.Tensor] | None = None

    def measure(self, state: TrainState, batch: Any) -> dict[str, float]:
        """Draw the gradients now and return the record (no logging, random state untouched)."""
        saved = rng_state()
        was_validating = pyro.poutine.util.is_validation_enabled()
        pyro.enable_validation(False)
        try:
            if self._measured is None:
                self._measured = self.params(state) if self.params is not None else guide_parameters(state, batch)
                if not self._measured:
                    raise ValueError("GradientVariance: the guide's log-density depends on none of the trained "
                                     "parameters; pass params=lambda state: [...] to say which to measure")
            draws = []
            for _ in range(self.draws):
                loss = state.loss(batch)
                grads = torch.autograd.grad(loss, self._measured, allow_unused=True)
                draws.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).double()
                                        for g, p in zip(grads, self._measured)]))
            g = torch.stack(draws)
        finally:
            set_rng_state(saved)
            pyro.enable_validation(was_validating)
        return {"step": state.step, "trace_cov": float(g.var(0).sum()), "mean_grad_norm": float(g.mean(0).norm()),
                "draws": self.draws, "params": int(g.shape[1])}

    def on_step_end(self, state: TrainState, batch: Any, loss: float) -> None:
        if state.step == 1 or state.step % self.every == 0:
            record = self.measure(state, batch)
            self.records.append(record)
            state.logs.setdefault("grad_variance", []).append(record)

    def state_dict(self) -> dict[str, Any]:
        return {"records": list(self.records)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = list(state["records"])
