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
batch size (pass ``data_plate=`` to name it when that is ambiguous). Latent sites inside it
are *local* (one per datapoint); latent sites outside any such plate are *global* (shared
by every datapoint: a Bayesian decoder's weights, topics, an autoguide's global latent).
With global latents (definitions in ``docs/concepts.md``):

* the log-likelihood of a held-out set draws the global latents ``beta_s ~ q(beta)``
  (s = 1..S), shares each draw across the whole set, estimates each datapoint's
  ``log p(x_i | beta_s)`` by importance sampling its local latents, and combines the draws:
  per datapoint ``log mean_s p(x_i | beta_s)`` (:func:`log_likelihood`) and for the set
  ``log mean_s prod_i p(x_i | beta_s)`` with its standard error (:func:`set_log_likelihood`);
* the ELBO's KL splits into a per-datapoint part (local sites) and ``kl_global``, the
  KL of the global sites, charged once per data set (:func:`elbo_terms`).

Autoguides are read as Pyro's ELBOs read them: an auxiliary site (``is_auxiliary``) is part
of ``q``, and a ``Delta`` site fed by it carries the transform's log-Jacobian. A point mass
with no auxiliary draw behind it (``AutoDelta``, a MAP guide) has no density: refused.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.poutine as poutine
import pyro.distributions as dist
import torch

from .. import validation
from ..base import batch_args, batch_size as _batch_size, check_pair
from ..traces import (base_distribution, data_plate_frame, guide_and_model_traces, is_auxiliary, is_deterministic,
                      is_point_mass, is_random, local_and_global, max_plate_nesting)
from ..training.batching import evaluation_batches

_PARTICLES = "_lvm_particles"
GLOBAL_KL_SAMPLES = 256  # draws of a Monte Carlo KL of the global latents (at least)

MAP_GUIDE = ("MAP guide (a point mass, e.g. AutoDelta): no importance weights, since q has no density, and so "
             "no ELBO and no KL. What still applies: fit() (MAP training), log_likelihood() when the point masses "
             "are global latents (the plug-in log p(x | point estimate)), inspection, ArviZ export of the point "
             "estimate. For the rest, train a guide with a density (AutoNormal, AutoDiagonalNormal, a hand-written "
             "guide)")


def _site_log_prob(site: dict) -> torch.Tensor:
    # Unscaled (subsampling scales are a training device, not part of log p) but masked.
    return _masked(site["fn"].log_prob(site["value"]), site)


def _masked(value: torch.Tensor, site: dict) -> torch.Tensor:
    """``value`` with the site's ``poutine.mask`` applied (0 where masked; a masked -inf stays 0)."""
    mask = site.get("mask")
    if mask is None or mask is True:
        return value
    if isinstance(mask, torch.Tensor):
        return torch.where(mask.bool(), value, torch.zeros((), dtype=value.dtype, device=value.device))
    return value * float(mask)


def _is_local(site: dict, n: int, data_plate: str | None) -> bool:
    """Inside the data plate (per datapoint) or outside it (global)."""
    return data_plate_frame(site, n, data_plate, exclude=(_PARTICLES,)) is not None


def _data_dim(site: dict, n: int, data_plate: str | None) -> int:
    return data_plate_frame(site, n, data_plate, exclude=(_PARTICLES,)).dim


def _per_datapoint(lp: torch.Tensor, particle_dim: int, data_dim: int | None, c: int, n: int) -> torch.Tensor:
    """Sum a site's log density over everything but the particle and data dims: -> (c, n)
    (a global site, ``data_dim=None``: -> (c,))."""
    width = max(-particle_dim, lp.dim())
    lp = lp.reshape((1,) * (width - lp.dim()) + tuple(lp.shape))
    keep = (particle_dim,) if data_dim is None else (particle_dim, data_dim)
    other = [d for d in range(-width, 0) if d not in keep]
    if other:
        lp = lp.sum(dim=other, keepdim=True)
    if data_dim is None:
        return lp.reshape(lp.shape[particle_dim]).expand(c)
    return lp.reshape(lp.shape[particle_dim], lp.shape[data_dim]).expand(c, n)


def _check_proper(model_trace: Any, guide_trace: Any, skip: frozenset = frozenset()) -> None:
    has_auxiliary = any(is_random(s) and is_auxiliary(s) and not s["is_observed"] for s in guide_trace.nodes.values())
    for name, site in model_trace.nodes.items():
        if not is_random(site) or site["is_observed"] or name in skip:
            continue
        if isinstance(site["fn"], dist.ImproperUniform):
            raise ValueError(
                f"latent site {name!r} has an improper prior (ImproperUniform), so log p(x) is undefined: "
                "an autoencoder is not a generative model and has no likelihood to evaluate"
            )
        if name not in guide_trace.nodes:
            raise ValueError(f"latent site {name!r} of the model is not sampled by the guide; give the guide a "
                             f"pyro.sample({name!r}, ...) (evaluation draws every latent from the guide)")
        if is_point_mass(guide_trace.nodes[name]["fn"]) and not has_auxiliary:
            raise ValueError(f"guide site {name!r} is a point mass (Delta) with no auxiliary draw behind it: {MAP_GUIDE}")


def plate_nesting(pair: Any, batch: Any) -> int:
    """The pair's plate nesting on ``batch`` (the one rule of :func:`pyro_lvm.traces.max_plate_nesting`)."""
    args, kwargs = batch_args(batch)
    return max_plate_nesting(*guide_and_model_traces(pair.model, pair.guide, args, kwargs))


def _conditioned(fn: Any, given: dict[str, torch.Tensor] | None) -> Any:
    return fn if not given else poutine.condition(fn, data=given)


def log_weight_terms(pair: Any, batch: Any, num_samples: int, data_plate: str | None = None,
                     max_plate_nesting: int | None = None, given: dict[str, torch.Tensor] | None = None
                     ) -> dict[str, Any]:
    """Per-sample, per-datapoint log densities for one batch, without gradients.

    Returns a dict with ``"log_lik"`` (observed sites), ``"log_prior"`` (local latent sites in
    the model) and ``"log_q"`` (local guide sites, auxiliary ones included), each
    ``(num_samples, n)``; ``"kl"``: analytic ``KL(q || p)`` ``(n,)`` per local site where
    PyTorch knows it and it does not vary across samples; ``"latent_sites"`` (local);
    and the global part: ``"global_sites"``, ``"global_log_prior"``, ``"global_log_q"``
    ``(num_samples,)`` and ``"global_kl"`` (analytic, per global site, scalars).

    ``given``: values for global sites (guide and model are conditioned on them; their terms
    are left out), as :func:`log_likelihood` uses to share one global draw across a set.
    """
    check_pair(pair)
    args, kwargs = batch_args(batch)
    n = _batch_size(batch)
    nesting = plate_nesting(pair, batch) if max_plate_nesting is None else max_plate_nesting
    particle_dim = -(nesting + 1)
    skip = frozenset(given or ())

    def vectorized(fn):
        def wrapped(*a, **k):
            with pyro.plate(_PARTICLES, num_samples, dim=particle_dim):
                return fn(*a, **k)
        return wrapped

    guide_trace, model_trace = guide_and_model_traces(vectorized(_conditioned(pair.model, given)),
                                                      vectorized(_conditioned(pair.guide, given)), args, kwargs)
    with torch.no_grad():
        _check_proper(model_trace, guide_trace, skip)
        out: dict[str, Any] = {k: torch.zeros(num_samples, n) for k in ("log_lik", "log_prior", "log_q")}
        out.update(global_log_prior=torch.zeros(num_samples), global_log_q=torch.zeros(num_samples))
        kl: dict[str, torch.Tensor] = {}
        global_kl: dict[str, torch.Tensor] = {}
        local, global_sites = [], []
        for tr, role in ((model_trace, "model"), (guide_trace, "guide")):
            for name, site in tr.nodes.items():
                if not is_random(site) or name == _PARTICLES or name in skip or is_deterministic(site):
                    continue
                if role == "guide" and site["is_observed"]:
                    continue
                is_local = _is_local(site, n, data_plate)
                factor = isinstance(base_distribution(site["fn"]), dist.Unit)  # pyro.factor: a log-density term
                if site["is_observed"] and not is_local and not factor:
                    subsampled = [f for f in site["cond_indep_stack"] if f.vectorized and f.full_size == n != f.size]
                    if subsampled:
                        f = subsampled[0]
                        raise ValueError(
                            f"observed site {name!r} sits in the plate {f.name!r}, which subsamples {f.size} of the "
                            f"batch's {n} datapoints: per-datapoint evaluation scores every datapoint of the batch. "
                            "Let the plate take the whole batch when evaluating (subsample_size=None), and leave "
                            "mini-batching to the data loader (fit and the evaluation functions batch for you)")
                    raise ValueError(
                        f"observed site {name!r} is not inside {'the plate ' + repr(data_plate) if data_plate else f'a plate of the batch size {n}'} "
                        f"(its plates: {[(f.name, f.size) for f in site['cond_indep_stack']]}); per-datapoint evaluation "
                        "needs the observations inside the data plate. Wrap them in pyro.plate over the batch, or pass "
                        "data_plate='<name>' if the plate is there.")
                data_dim = _data_dim(site, n, data_plate) if is_local else None
                lp = _per_datapoint(_site_log_prob(site), particle_dim, data_dim, num_samples, n)
                if is_local:
                    key = "log_q" if role == "guide" else ("log_lik" if site["is_observed"] else "log_prior")
                else:
                    key = "global_log_q" if role == "guide" else "global_log_prior"
                out[key] = out[key].to(lp) + lp
                if role == "model" and not site["is_observed"]:
                    (local if is_local else global_sites).append(name)
                    try:
                        site_kl = torch.distributions.kl_divergence(guide_trace.nodes[name]["fn"], site["fn"])
                    except NotImplementedError:
                        continue
                    # Only valid as "the" KL when it does not vary across particles.
                    per = _per_datapoint(_masked(site_kl, guide_trace.nodes[name]), particle_dim, data_dim,
                                         num_samples, n)
                    if bool(torch.allclose(per, per[:1].expand_as(per))):
                        (kl if is_local else global_kl)[name] = per[0]
        out.update(kl=kl, latent_sites=local, global_sites=global_sites, global_kl=global_kl)
    return out


CHUNK_ELEMENTS = 2 ** 24  # the largest tensor one chunk of an evaluation may make: 64 MB in float32


def _chunk_size(num_samples: int, n: int, per_point: int) -> int:
    return int(max(1, min(num_samples, CHUNK_ELEMENTS // max(1, n * per_point))))


def _observed_size(batch: Any) -> int:
    args, kwargs = batch_args(batch)
    sizes = [v[0].numel() for v in list(args) + list(kwargs.values()) if isinstance(v, torch.Tensor) and v.dim() > 0]
    return max(sizes, default=1) * 4  # generous: hidden layers are often wider than the input


def global_sites(pair: Any, batch: Any, data_plate: str | None = None) -> list[str]:
    """Names of the guide's random sites outside the data plate (global latents and their
    auxiliary draws), in trace order."""
    args, kwargs = batch_args(batch)
    guide_trace, _ = guide_and_model_traces(pair.model, pair.guide, args, kwargs)
    return local_and_global(guide_trace, _batch_size(batch), data_plate, auxiliary=True)[1]


def _global_draws(pair: Any, batch: Any, names: list[str], count: int) -> list[dict[str, torch.Tensor]]:
    """``count`` independent draws of the global sites from the guide (one guide run each)."""
    args, kwargs = batch_args(batch)
    draws = []
    with torch.no_grad():
        for s in range(count):
            with pyro.validation_enabled(pyro.poutine.util.is_validation_enabled() and s == 0):
                tr = poutine.trace(pair.guide).get_trace(*args, **kwargs)
            draws.append({name: tr.nodes[name]["value"] for name in names})
    return draws


def _local_log_likelihood(pair: Any, batch: Any, num_samples: int, chunk_size: int | None, data_plate: str | None,
                          nesting: int, given: dict[str, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log mean_k w_k, its delta-method standard error)`` per datapoint of one batch, ``(n,)`` each."""
    n = _batch_size(batch)
    c = chunk_size or _chunk_size(num_samples, n, _observed_size(batch))
    lse = lse2 = None
    done = 0
    while done < num_samples:
        k = min(c, num_samples - done)
        t = log_weight_terms(pair, batch, k, data_plate=data_plate, max_plate_nesting=nesting, given=given)
        log_w = t["log_lik"] + t["log_prior"] - t["log_q"]
        a, b = torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0)
        lse, lse2 = (a, b) if lse is None else (torch.logaddexp(lse, a), torch.logaddexp(lse2, b))
        done += k
    log_mean = lse - math.log(num_samples)
    return log_mean, _log_mean_se(lse, lse2, num_samples)


def _log_mean_se(lse: torch.Tensor, lse2: torch.Tensor, count: int) -> torch.Tensor:
    """Delta-method standard error of ``log mean(w)`` from ``logsumexp(log w)`` and ``logsumexp(2 log w)``:
    ``sd(w) / (sqrt(count) mean(w))``."""
    if count < 2:
        return torch.full_like(lse, math.nan)
    ratio = torch.exp(lse2 - 2 * lse) * count  # mean(w^2) / mean(w)^2
    return ((ratio - 1).clamp(min=0) * count / (count - 1)).sqrt() / math.sqrt(count)


def _set_terms(pair: Any, data: Any, num_samples: int, batch_size: int, chunk_size: int | None,
               data_plate: str | None, global_samples: int) -> dict[str, Any]:
    """``L[s, i] = log p^(x_i | beta_s)`` for every global draw and datapoint (``(S, N)``; S = 1 and
    no draw for a pair without global latents), plus the local standard errors ``(N,)``."""
    rows: list[torch.Tensor] = []
    local_se: list[torch.Tensor] = []
    draws: list[dict[str, torch.Tensor]] | None = None
    names: list[str] = []
    for batch in evaluation_batches(pair, data, batch_size):
        nesting = plate_nesting(pair, batch)
        if draws is None:
            names = global_sites(pair, batch, data_plate)
            draws = _global_draws(pair, batch, names, global_samples) if names else [None]  # type: ignore[list-item]
        per_draw = []
        for s, given in enumerate(draws):
            # Argument checks ran on the first draw; the others only repeat them (they cost most of a draw).
            with pyro.validation_enabled(pyro.poutine.util.is_validation_enabled() and s == 0):
                per_draw.append(_local_log_likelihood(pair, batch, num_samples, chunk_size, data_plate, nesting, given))
        rows.append(torch.stack([ll for ll, _ in per_draw]))
        local_se.append(torch.stack([se for _, se in per_draw]).mean(0))
    return {"L": torch.cat(rows, dim=1), "local_se": torch.cat(local_se), "global_sites": names}


def log_likelihood(pair: Any, data: Any, num_samples: int = 1000, batch_size: int = 100,
                   chunk_size: int | None = None, data_plate: str | None = None,
                   global_samples: int = 100) -> torch.Tensor:
    """Importance-sampled ``log p(x)`` for every datapoint of ``data``: ``(N,)``.

    ``num_samples`` (K) proposals per datapoint from the guide; an estimate whose bias
    shrinks as K grows (it is the IWAE bound). ``data`` is a tensor, a tuple of tensors, a
    Dataset or a DataLoader, batched by the convention of :mod:`pyro_lvm.base`.

    A pair with global latents: ``global_samples`` (S) draws ``beta_s ~ q(beta)`` shared by
    every datapoint, and each datapoint gets ``log (1/S) sum_s p^(x_i | beta_s)`` with its
    local latents importance-sampled given each draw (the pointwise predictive; the whole
    set's value, which is not a sum of these, is :func:`set_log_likelihood`).
    """
    data = validation.inputs(pair, data, num_samples=num_samples, batch_size=batch_size, chunk_size=chunk_size,
                             data_plate=data_plate, global_samples=global_samples)
    L = _set_terms(pair, data, num_samples, batch_size, chunk_size, data_plate, global_samples)["L"]
    return torch.logsumexp(L, 0) - math.log(L.shape[0])


def set_log_likelihood(pair: Any, data: Any, num_samples: int = 1000, batch_size: int = 100,
                       chunk_size: int | None = None, data_plate: str | None = None,
                       global_samples: int = 100) -> dict[str, Any]:
    """Importance-sampled log-likelihood of the whole data set, with its standard error.

    ``log p(X) ~= log (1/S) sum_s prod_i p^(x_i | beta_s)``: one draw of the global latents
    ``beta_s ~ q(beta)`` is shared by every datapoint of the set, and ``p^(x_i | beta_s)`` is the
    local importance-sampled estimate (K = ``num_samples`` local draws). For a pair without
    global latents this is the sum of :func:`log_likelihood`.

    Returns ``{"total": float, "per_datapoint": total / N, "se": float (of total),
    "pointwise": (N,) tensor (= log_likelihood), "num_datapoints", "global_sites",
    "global_samples", "effective_global_samples"}``. ``se`` is the delta-method standard
    error over the global draws (over the local draws when there are none); the effective
    number of global draws ``1 / sum_s w_s^2`` (normalised weights) below ~10 means the
    estimate is dominated by a few draws: raise ``global_samples``. Each global draw is one
    pass over ``data`` (its K local draws vectorised), so the cost is S times that of a pair
    without global latents.
    """
    data = validation.inputs(pair, data, num_samples=num_samples, batch_size=batch_size, chunk_size=chunk_size,
                             data_plate=data_plate, global_samples=global_samples)
    terms = _set_terms(pair, data, num_samples, batch_size, chunk_size, data_plate, global_samples)
    L = terms["L"].double()
    S, N = L.shape
    pointwise = torch.logsumexp(L, 0) - math.log(S)
    if terms["global_sites"]:
        T = L.sum(1)
        total = float(torch.logsumexp(T, 0) - math.log(S))
        se = float(_log_mean_se(torch.logsumexp(T, 0), torch.logsumexp(2 * T, 0), S))
        w = torch.softmax(T, 0)
        ess = float(1.0 / (w ** 2).sum())
    else:
        total = float(pointwise.sum())
        se = float(terms["local_se"].double().pow(2).sum().sqrt())
        ess = math.nan
    return {"total": total, "per_datapoint": total / N, "se": se, "pointwise": pointwise.float(),
            "num_datapoints": N, "global_sites": terms["global_sites"],
            "global_samples": S if terms["global_sites"] else 0, "effective_global_samples": ess}


def elbo_terms(pair: Any, data: Any, num_samples: int = 1, batch_size: int = 256,
               data_plate: str | None = None) -> dict[str, torch.Tensor]:
    """Per-datapoint ELBO and its parts, each ``(N,)``, plus the global KL.

    ``"elbo"`` = ``"reconstruction"`` - ``"kl"``, where reconstruction is
    ``E_q[log p(x | z)]`` and kl is ``KL(q(z|x) || p(z))`` of the local (per-datapoint)
    latents, analytic when every latent site allows it (then ``"kl_analytic"`` is 1), Monte
    Carlo over ``num_samples`` otherwise. With global latents ``beta`` every expectation is
    also over ``q(beta)``, and ``"kl_global"`` (a scalar) is ``KL(q(beta) || p(beta))``, the
    part of the data set's ELBO charged once for the whole set (not per datapoint):
    ``ELBO(X) = sum_i elbo_i - kl_global``. A Monte Carlo ``kl_global`` uses at least
    ``GLOBAL_KL_SAMPLES`` draws.
    """
    data = validation.inputs(pair, data, num_samples=num_samples, batch_size=batch_size, data_plate=data_plate)
    parts: dict[str, list[torch.Tensor]] = {"elbo": [], "reconstruction": [], "kl": []}
    analytic = True
    kl_global = None
    for batch in evaluation_batches(pair, data, batch_size):
        t = log_weight_terms(pair, batch, num_samples, data_plate=data_plate)
        rec = t["log_lik"].mean(0)
        if set(t["kl"]) == set(t["latent_sites"]):
            kl = sum(t["kl"].values()) if t["kl"] else torch.zeros_like(rec)
        else:
            analytic = False
            kl = (t["log_q"] - t["log_prior"]).mean(0)
        if t["global_sites"] and kl_global is None:  # one value for the set: from the first batch's draws
            if set(t["global_kl"]) == set(t["global_sites"]):
                kl_global = sum(t["global_kl"].values())
            else:  # one number for the whole set: worth more draws than a per-datapoint mean needs
                analytic = False
                g = t if num_samples >= GLOBAL_KL_SAMPLES else log_weight_terms(pair, batch, GLOBAL_KL_SAMPLES,
                                                                                data_plate=data_plate)
                kl_global = (g["global_log_q"] - g["global_log_prior"]).mean(0)
        parts["reconstruction"].append(rec)
        parts["kl"].append(kl)
        parts["elbo"].append(rec - kl)
    out = {k: torch.cat(v) for k, v in parts.items()}
    out["kl_global"] = torch.as_tensor(0.0 if kl_global is None else float(kl_global))
    out["kl_analytic"] = torch.tensor(float(analytic))
    return out
