"""PSIS diagnostic of a guide: the Pareto k-hat of its importance weights, per datapoint.

For datapoint ``x`` draw ``z_1..z_K ~ q(z | x)`` and form ``log w_k = log p(x, z_k) - log q(z_k | x)``.
Fitting a generalised Pareto distribution to the largest weights gives the shape ``k-hat``
(Vehtari, Simpson, Gelman, Yao & Gabry 2024, "Pareto smoothed importance sampling", JMLR 25(72);
used as a check of variational approximations by Yao, Vehtari, Simpson & Gelman 2018, "Yes, but
did it work?: evaluating variational inference", ICML). Their thresholds:

* ``k-hat < 0.5``: the weights have finite variance; q is a good proposal for p(z | x);
* ``0.5 <= k-hat < 0.7``: usable, importance-sampled estimates converge slowly;
* ``k-hat >= 0.7``: q misses mass of the posterior; importance-sampled quantities
  (including the IWAE log-likelihood of :mod:`pyro_lvm.evaluation.metrics`) cannot be trusted.

The weights come from :func:`pyro_lvm.evaluation.metrics.log_weight_terms`; the fit is ArviZ's
``psislw`` (a one-datapoint k-hat over the joint, as Pyro's ``psis_diagnostic``
computes, hides which datapoints are badly served).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from .. import validation
from ..base import batch_size as _batch_size
from .metrics import log_weight_terms
from ..training.batching import evaluation_batches

__all__ = ["pareto_khat", "psis_khat", "psis_summary", "psis_report", "THRESHOLDS"]

THRESHOLDS = (0.5, 0.7)


def _psislw():
    with warnings.catch_warnings():  # ArviZ announces its refactor on import
        warnings.simplefilter("ignore", FutureWarning)
        import arviz
    return arviz.psislw


def pareto_khat(log_weights: torch.Tensor) -> torch.Tensor:
    """k-hat for each column of ``log_weights (K, n)`` (K samples per datapoint): ``(n,)`` float64.

    Columns whose weights are all equal up to round-off get ``-inf`` (bounded weights).

    Needs K >= 10 finite values per column (the tail fit uses about ``3 sqrt(K)`` of them).
    """
    if not isinstance(log_weights, torch.Tensor) or log_weights.dim() != 2:
        raise ValueError(f"log_weights must be a (K, n) tensor, got {getattr(log_weights, 'shape', log_weights)!r}")
    if log_weights.shape[0] < 10:
        raise ValueError(f"need at least 10 samples per datapoint for a tail fit, got K={log_weights.shape[0]}")
    if not bool(torch.isfinite(log_weights).all()):
        bad = torch.nonzero(~torch.isfinite(log_weights).all(0)).flatten().tolist()
        raise ValueError(f"log_weights has non-finite values in datapoint column(s) {bad[:10]}")
    # Weights equal up to floating-point round-off (an exact-posterior guide) have no tail to
    # fit: the GPD fit would see only rounding noise, so they get k-hat = -inf (bounded weights).
    lw = log_weights.detach()
    tol = 64 * torch.finfo(lw.dtype).eps * lw.abs().amax(0).clamp(min=1.0)
    constant = (lw.amax(0) - lw.amin(0)) <= tol
    khat = torch.full((lw.shape[1],), float("-inf"), dtype=torch.float64)
    if not bool(constant.all()):
        with warnings.catch_warnings():
            # ArviZ warns for each k-hat above 0.7; the caller gets the numbers instead.
            warnings.simplefilter("ignore")
            _, k = _psislw()(lw[:, ~constant].double().T.cpu().numpy(), reff=1.0)  # samples last
        khat[~constant] = torch.as_tensor(np.asarray(k, dtype=np.float64)).reshape(-1)
    return khat


def psis_khat(pair: Any, data: Any, num_samples: int = 1000, batch_size: int = 100,
              data_plate: str | None = None) -> torch.Tensor:
    """Pareto k-hat of the guide's importance weights for every datapoint of ``data``: ``(N,)``.

    ``data`` is batched as in :func:`pyro_lvm.evaluation.metrics.log_likelihood`; ``num_samples`` (K)
    draws per datapoint (Vehtari et al. recommend K >= 100; 1000 gives stable k-hats).
    """
    data = validation.inputs(pair, data, batch_size=batch_size, data_plate=data_plate)
    validation.Integer(10)("num_samples", num_samples)  # a tail fit needs at least 10 weights
    out = []
    for batch in evaluation_batches(pair, data, batch_size):
        _batch_size(batch)  # refuses batches without a datapoint dimension
        t = log_weight_terms(pair, batch, num_samples, data_plate=data_plate)
        out.append(pareto_khat(t["log_lik"] + t["log_prior"] - t["log_q"]))
    return torch.cat(out)


def psis_summary(khat: torch.Tensor) -> dict[str, float]:
    """Shares of datapoints in the three k-hat ranges, plus the median and maximum k-hat."""
    khat = torch.as_tensor(khat, dtype=torch.float64).reshape(-1)
    if khat.numel() == 0:
        raise ValueError("khat is empty")
    good, bad = THRESHOLDS
    return {
        "khat_median": float(khat.median()),
        "khat_max": float(khat.max()),
        "share_khat_below_0.5": float((khat < good).double().mean()),
        "share_khat_0.5_to_0.7": float(((khat >= good) & (khat < bad)).double().mean()),
        "share_khat_above_0.7": float((khat >= bad).double().mean()),
        "num_datapoints": int(khat.numel()),
    }


def psis_report(pair: Any, data: Any, num_samples: int = 1000, batch_size: int = 100,
                data_plate: str | None = None) -> dict[str, float]:
    """:func:`psis_summary` of :func:`psis_khat`: the guide-quality lines of an evaluation report."""
    return psis_summary(psis_khat(pair, data, num_samples=num_samples, batch_size=batch_size, data_plate=data_plate))
