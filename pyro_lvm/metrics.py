"""Evaluation of any model/guide pair, per datapoint.

For a batch ``x`` of ``n`` datapoints, draw ``z_k ~ q(z | x)`` (k = 1..K) from the guide,
replay the model on them, and compute the log importance weights

    log w_k = log p(x, z_k) - log q(z_k | x)                      shape (K, n)

From these: the ELBO ``mean_k log w_k``, its reconstruction term ``mean_k log p(x | z_k)``
and KL term (analytic when PyTorch knows it for every latent site, Monte Carlo otherwise),
and the importance-sampled log-likelihood (the IWAE bound of Burda et al. 2016)

    log p(x) ~= logsumexp_k(log w_k) - log K,

which is <= log p(x) in expectation and tends to it as K grows. Samples are drawn in
vectorised chunks (a plate of particles to the left of the model's own plates), with a
running logsumexp, so K = 5000 needs no more memory than the chunk.

Which dimension is "the datapoint" is found per site: the plate whose size equals the
batch size (pass ``data_plate=`` to name it when that is ambiguous). Sites outside any
such plate are global and have no per-datapoint value: they raise ``ValueError``.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.subsample_messenger import _Subsample

from . import validation
from .base import batch_args, batch_plate_frames, batch_size as _batch_size, check_pair
from .train import evaluation_batches

_PARTICLES = "_lvm_particles"


def _is_random_site(site: dict) -> bool:
    """A sample site that is a random variable (plates record themselves as sample sites too)."""
    return site["type"] == "sample" and not isinstance(site["fn"], _Subsample) and site["name"] != _PARTICLES


def _site_log_prob(site: dict) -> torch.Tensor:
    # Unscaled (subsampling scales are a training device, not part of log p) but masked.
    lp = site["fn"].log_prob(site["value"])
    mask = site.get("mask")
    if mask is not None and mask is not True:
        lp = lp.masked_fill(~mask, 0.0) if isinstance(mask, torch.Tensor) else lp * float(mask)
    return lp


def _max_plate_nesting(pair: Any, args: tuple, kwargs: dict) -> int:
    with torch.no_grad():
        guide_trace = poutine.trace(pair.guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(pair.model, trace=guide_trace)).get_trace(*args, **kwargs)
    dims = [-f.dim for tr in (guide_trace, model_trace) for s in tr.nodes.values()
            if _is_random_site(s) for f in s["cond_indep_stack"] if f.vectorized and f.dim is not None]
    return max(dims, default=0)


def _data_dim(site: dict, n: int, data_plate: str | None) -> int:
    frames = batch_plate_frames(site["cond_indep_stack"], n, data_plate, exclude=(_PARTICLES,))
    if len(frames) != 1:
        what = f"a plate named {data_plate!r}" if data_plate else f"exactly one plate of the batch size {n}"
        raise ValueError(
            f"site {site['name']!r} is not inside {what} (its plates: "
            f"{[(f.name, f.size) for f in site['cond_indep_stack']]}); per-datapoint evaluation needs every "
            "sample site inside the data plate. Pass data_plate='<name>' if the plate is there."
        )
    return frames[0].dim


def _per_datapoint(lp: torch.Tensor, particle_dim: int, data_dim: int, c: int, n: int) -> torch.Tensor:
    """Sum a site's log density over everything but the particle and data dims: -> (c, n)."""
    width = max(-particle_dim, lp.dim())
    lp = lp.reshape((1,) * (width - lp.dim()) + tuple(lp.shape))
    other = [d for d in range(-width, 0) if d not in (particle_dim, data_dim)]
    if other:
        lp = lp.sum(dim=other, keepdim=True)
    return lp.reshape(lp.shape[particle_dim], lp.shape[data_dim]).expand(c, n)


def _check_proper(model_trace: Any, guide_trace: Any) -> None:
    for name, site in model_trace.nodes.items():
        if not _is_random_site(site) or site["is_observed"]:
            continue
        if isinstance(site["fn"], dist.ImproperUniform):
            raise ValueError(
                f"latent site {name!r} has an improper prior (ImproperUniform), so log p(x) is undefined: "
                "an autoencoder is not a generative model and has no likelihood to evaluate"
            )
        if name not in guide_trace.nodes:
            raise ValueError(f"latent site {name!r} of the model is not sampled by the guide")
        base = guide_trace.nodes[name]["fn"]
        while isinstance(base, dist.Independent):
            base = base.base_dist
        if isinstance(base, dist.Delta):
            raise ValueError(f"guide site {name!r} is a point mass (Delta): q has no density, so importance weights are undefined")


def log_weight_terms(pair: Any, batch: Any, num_samples: int, data_plate: str | None = None,
                     max_plate_nesting: int | None = None) -> dict[str, Any]:
    """Per-sample, per-datapoint log densities for one batch, without gradients.

    Returns a dict with ``"log_lik"`` (observed sites), ``"log_prior"`` (latent sites in
    the model) and ``"log_q"`` (guide), each ``(num_samples, n)``, plus ``"kl"``: a dict of
    analytic ``KL(q || p)`` per latent site, ``(n, *event_shape_reduced)`` summed to ``(n,)``,
    for sites where PyTorch knows the KL and the prior does not depend on other latents.
    """
    check_pair(pair)
    args, kwargs = batch_args(batch)
    n = _batch_size(batch)
    nesting = _max_plate_nesting(pair, args, kwargs) if max_plate_nesting is None else max_plate_nesting
    particle_dim = -(nesting + 1)

    def vectorized(fn):
        def wrapped(*a, **k):
            with pyro.plate(_PARTICLES, num_samples, dim=particle_dim):
                return fn(*a, **k)
        return wrapped

    with torch.no_grad():
        guide_trace = poutine.trace(vectorized(pair.guide)).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(vectorized(pair.model), trace=guide_trace)).get_trace(*args, **kwargs)
        _check_proper(model_trace, guide_trace)
        out = {k: torch.zeros(num_samples, n) for k in ("log_lik", "log_prior", "log_q")}
        kl: dict[str, torch.Tensor] = {}
        for tr, role in ((model_trace, "model"), (guide_trace, "guide")):
            for name, site in tr.nodes.items():
                if not _is_random_site(site):
                    continue
                if role == "guide" and site["is_observed"]:
                    continue
                lp = _per_datapoint(_site_log_prob(site), particle_dim, _data_dim(site, n, data_plate), num_samples, n)
                key = "log_q" if role == "guide" else ("log_lik" if site["is_observed"] else "log_prior")
                out[key] = out[key].to(lp) + lp
                if role == "model" and not site["is_observed"]:
                    try:
                        site_kl = torch.distributions.kl_divergence(guide_trace.nodes[name]["fn"], site["fn"])
                    except NotImplementedError:
                        continue
                    # Only valid as "the" KL when it does not vary across particles.
                    per = _per_datapoint(site_kl, particle_dim, _data_dim(site, n, data_plate), num_samples, n)
                    if bool(torch.allclose(per, per[:1].expand_as(per))):
                        kl[name] = per[0]
        out["kl"] = kl
        out["latent_sites"] = [name for name, s in model_trace.nodes.items()
                               if _is_random_site(s) and not s["is_observed"]]
    return out


def _chunk_size(num_samples: int, n: int, per_point: int) -> int:
    # Keep the largest per-chunk tensor near 2**24 elements (64 MB in float32).
    return int(max(1, min(num_samples, 2 ** 24 // max(1, n * per_point))))


def log_likelihood(pair: Any, data: Any, num_samples: int = 1000, batch_size: int = 100,
                   chunk_size: int | None = None, data_plate: str | None = None) -> torch.Tensor:
    """Importance-sampled ``log p(x)`` for every datapoint of ``data``: ``(N,)``.

    ``num_samples`` (K) proposals per datapoint from the guide; an estimate whose bias
    shrinks as K grows (it is the IWAE bound). ``data`` is a tensor, a tuple of tensors, a
    Dataset or a DataLoader, batched by the convention of :mod:`pyro_lvm.base`.
    """
    data = validation.inputs(pair, data, num_samples=num_samples, batch_size=batch_size, chunk_size=chunk_size,
                             data_plate=data_plate)
    results = []
    for batch in evaluation_batches(pair, data, batch_size):
        n = _batch_size(batch)
        per_point = _observed_size(batch)
        c = chunk_size or _chunk_size(num_samples, n, per_point)
        nesting = _max_plate_nesting(pair, *batch_args(batch))
        running = None
        done = 0
        while done < num_samples:
            k = min(c, num_samples - done)
            t = log_weight_terms(pair, batch, k, data_plate=data_plate, max_plate_nesting=nesting)
            lse = torch.logsumexp(t["log_lik"] + t["log_prior"] - t["log_q"], dim=0)
            running = lse if running is None else torch.logaddexp(running, lse)
            done += k
        results.append(running - math.log(num_samples))
    return torch.cat(results)


def _observed_size(batch: Any) -> int:
    args, kwargs = batch_args(batch)
    sizes = [v[0].numel() for v in list(args) + list(kwargs.values()) if isinstance(v, torch.Tensor) and v.dim() > 0]
    return max(sizes, default=1) * 4  # generous: hidden layers are often wider than the input


def elbo_terms(pair: Any, data: Any, num_samples: int = 1, batch_size: int = 256,
               data_plate: str | None = None) -> dict[str, torch.Tensor]:
    """Per-datapoint ELBO and its parts, each ``(N,)``.

    ``"elbo"`` = ``"reconstruction"`` - ``"kl"``, where reconstruction is
    ``E_q[log p(x | z)]`` and kl is ``KL(q(z|x) || p(z))``, analytic when every latent site
    allows it (then ``"kl_analytic"`` is 1), Monte Carlo over ``num_samples`` otherwise.
    """
    data = validation.inputs(pair, data, num_samples=num_samples, batch_size=batch_size, data_plate=data_plate)
    parts: dict[str, list[torch.Tensor]] = {"elbo": [], "reconstruction": [], "kl": []}
    analytic = True
    for batch in evaluation_batches(pair, data, batch_size):
        t = log_weight_terms(pair, batch, num_samples, data_plate=data_plate)
        rec = t["log_lik"].mean(0)
        if t["latent_sites"] and set(t["kl"]) == set(t["latent_sites"]):
            kl = sum(t["kl"].values())
        else:
            analytic = False
            kl = (t["log_q"] - t["log_prior"]).mean(0)
        parts["reconstruction"].append(rec)
        parts["kl"].append(kl)
        parts["elbo"].append(rec - kl)
    out = {k: torch.cat(v) for k, v in parts.items()}
    out["kl_analytic"] = torch.tensor(float(analytic))
    return out


def evaluation_report(pair: Any, data: Any, num_samples: int = 1000, batch_size: int = 100,
                      psis_samples: int | None = 500) -> dict[str, Any]:
    """Means over ``data`` of ELBO, reconstruction, KL and the IS log-likelihood (nats per
    datapoint), plus the PSIS guide-quality check (Pareto k-hat of the importance weights,
    Vehtari et al.; ``psis_samples=None`` skips it)."""
    from .psis import psis_report  # psis imports this module

    data = validation.inputs(pair, data, num_samples=num_samples, batch_size=batch_size, psis_samples=psis_samples)
    terms = elbo_terms(pair, data, batch_size=batch_size)
    ll = log_likelihood(pair, data, num_samples=num_samples, batch_size=batch_size)
    report: dict[str, Any] = {
        "elbo": float(terms["elbo"].mean()),
        "elbo_samples": 1,  # one draw from q per datapoint (the KL is analytic where kl_analytic)
        "reconstruction": float(terms["reconstruction"].mean()),
        "kl": float(terms["kl"].mean()),
        "log_likelihood": float(ll.mean()),
        "log_likelihood_samples": num_samples,
        "num_datapoints": int(ll.numel()),
    }
    if psis_samples:
        report["psis"] = psis_report(pair, data, num_samples=max(10, min(psis_samples, num_samples)), batch_size=batch_size)
    return report
