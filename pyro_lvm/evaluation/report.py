"""The evaluation report of a pair: the ELBO's terms, the importance-sampled log-likelihood
and the PSIS check of the guide, in one dict (what ``pyro-lvm evaluate`` prints).

It sits above :mod:`pyro_lvm.evaluation.metrics` and :mod:`pyro_lvm.evaluation.psis`, which it combines.
"""

from __future__ import annotations

from typing import Any

from .. import validation
from .metrics import elbo_terms, set_log_likelihood
from .psis import psis_report


def evaluation_report(pair: Any, data: Any, num_samples: int = 1000, batch_size: int = 100,
                      psis_samples: int | None = 500, global_samples: int = 100) -> dict[str, Any]:
    """Means over ``data`` of ELBO, reconstruction, KL and the IS log-likelihood (nats per
    datapoint), plus the PSIS guide-quality check (Pareto k-hat of the importance weights,
    Vehtari et al.; ``psis_samples=None`` skips it).

    With global latents also ``"kl_global"`` and the set's log-likelihood per datapoint
    (``"log_likelihood_set"``, with ``"log_likelihood_set_se"``; see :func:`pyro_lvm.evaluation.metrics.set_log_likelihood`).
    """
    data = validation.inputs(pair, data, num_samples=num_samples, batch_size=batch_size, psis_samples=psis_samples)
    terms = elbo_terms(pair, data, batch_size=batch_size)
    held = set_log_likelihood(pair, data, num_samples=num_samples, batch_size=batch_size,
                              global_samples=global_samples)
    ll = held["pointwise"]
    report: dict[str, Any] = {
        "elbo": float(terms["elbo"].mean()),
        "elbo_samples": 1,  # one draw from q per datapoint (the KL is analytic where kl_analytic)
        "reconstruction": float(terms["reconstruction"].mean()),
        "kl": float(terms["kl"].mean()),
        "log_likelihood": float(ll.mean()),
        "log_likelihood_samples": num_samples,
        "num_datapoints": int(ll.numel()),
    }
    if held["global_sites"]:
        report.update(kl_global=float(terms["kl_global"]), log_likelihood_set=held["per_datapoint"],
                      log_likelihood_set_se=held["se"] / held["num_datapoints"],
                      global_samples=held["global_samples"],
                      effective_global_samples=held["effective_global_samples"])
    if psis_samples:
        report["psis"] = psis_report(pair, data, num_samples=max(10, min(psis_samples, num_samples)), batch_size=batch_size)
    return report
