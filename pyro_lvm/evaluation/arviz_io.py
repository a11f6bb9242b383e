"""ArviZ ``InferenceData`` from a trained guide (``az.from_pyro`` only takes MCMC).

:func:`to_inference_data` draws the chosen latent sites from the guide with
:class:`pyro.infer.Predictive` (the model is replayed on each draw, so deterministic sites
such as ProdLDA's ``theta`` are available too), optionally posterior-predictive draws of the
observed sites (the model run *unconditioned* on the guide's draws), and returns an
``arviz.InferenceData`` with named dimensions and coordinates. It works on any model/guide
pair (:mod:`pyro_lvm.base`).

Why a converter: the draws of a variational guide are *independent* samples from ``q``, not
a Markov chain. ArviZ's summaries (means, sds, HDIs), forest plots and posterior-predictive
plots apply; its MCMC convergence diagnostics do not. ``r_hat`` and ``ess`` say nothing
about whether ``q`` is close to the true posterior (there is one "chain" and the draws are
independent by construction, so ESS ~ the number of draws). To judge the guide, use the PSIS
Pareto k-hat of the importance weights (``pyro_lvm.evaluation.psis``) or compare against NUTS.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from torch import nn

from ..base import batch_args, check_pair
from ..traces import is_deterministic, is_random
from ..validation import check


def _model_sites(fn: Any, args: tuple, kwargs: dict) -> tuple[dict[str, bool], dict[str, torch.Size]]:
    """Sample sites of ``fn``: name -> observed? (deterministic sites count as latent), and each value's shape."""
    with torch.no_grad(), poutine.block():
        tr = poutine.trace(fn).get_trace(*args, **kwargs)
    sites = {name: site for name, site in tr.nodes.items() if is_random(site)}
    observed = {name: bool(site["is_observed"]) and not is_deterministic(site) for name, site in sites.items()}
    return observed, {name: site["value"].shape for name, site in sites.items()}


def _fit_dims(name: str, value: np.ndarray, names: Sequence[str] | None) -> np.ndarray:
    """Drop size-1 axes (plate broadcasting leftovers) after the draw axis until the site's
    dims match ``names``."""
    if names is None:
        return value
    extra = value.ndim - 1 - len(names)
    axis = 1
    while extra > 0 and axis < value.ndim:
        if value.shape[axis] == 1:
            value = value.squeeze(axis)
            extra -= 1
        else:
            axis += 1
    if value.ndim - 1 != len(names):
        raise ValueError(f"site {name!r} has per-draw shape {value.shape[1:]}, which does not fit dims {list(names)}")
    return value


def to_inference_data(pair: Any, batch: Any, sites: Sequence[str], num_samples: int = 200,
                      dims: Mapping[str, Sequence[str]] | None = None,
                      coords: Mapping[str, Sequence[Any]] | None = None,
                      posterior_predictive: bool | Sequence[str] = False, seed: int | None = 0,
                      parallel: bool = False) -> Any:
    """Posterior draws of ``sites`` from ``pair.guide`` as an ``arviz.InferenceData``.

    Args:
        pair: a trained model/guide pair (``nn.Module`` pairs are put in eval mode while drawing).
        batch: the data the guide conditions on (passed by the batch convention).
        sites: latent or deterministic site names of the model to keep.
        num_samples: number of independent draws (one chain).
        dims: ``{site: [dim names]}`` for each site's per-draw axes, e.g.
            ``{"theta": ["document", "topic"]}``; size-1 axes left by plates are dropped to fit.
        coords: ``{dim name: labels}``, e.g. ``{"topic": ["t0", ...]}``.
        posterior_predictive: ``True`` for every observed site, or a list of them: draws of
            the data given each posterior draw; the observed values go into ``observed_data``.
        seed: seeds Pyro before drawing (``None`` leaves the RNG alone).
        parallel: vectorise the draws in one plate (needs every batch dim in a plate).

    Returns:
        ``arviz.InferenceData`` with ``posterior`` (chain=1, draw=num_samples, ...) and, when
        asked, ``posterior_predictive`` and ``observed_data``.

    Raises:
        ValueError: a site the model does not have (the message lists those it has), an
            observed site asked as a posterior site, or dims that do not fit.
    """
    import arviz as az

    check_pair(pair)
    if not sites:
        raise ValueError("name at least one latent site to convert")
    num_samples = check(num_samples=num_samples)["num_samples"]
    args, kwargs = batch_args(batch)
    pp_sites, dims, shapes = _checked_sites(pair, args, kwargs, sites, posterior_predictive, dims)
    was_training = isinstance(pair, nn.Module) and pair.training
    if isinstance(pair, nn.Module):
        pair.eval()
    try:
        if seed is not None:
            pyro.set_rng_seed(seed)
        draws, pp_draws = _draw(pair, args, kwargs, sites, pp_sites, num_samples, shapes, parallel)
        observed_values = {}
        if pp_sites:
            with torch.no_grad(), poutine.block():
                tr = poutine.trace(pair.model).get_trace(*args, **kwargs)
            observed_values = {n: tr.nodes[n]["value"].detach().cpu().numpy() for n in pp_sites}
    finally:
        if was_training:
            pair.train()
    kw: dict[str, Any] = {"posterior": _arrays(draws, sites, dims), "dims": dims, "coords": dict(coords or {})}
    if pp_sites:
        kw["posterior_predictive"] = _arrays(pp_draws, pp_sites, dims)
        kw["observed_data"] = {k: _fit_dims(k, v[None], dims.get(k))[0] for k, v in observed_values.items()}
    return az.from_dict(**kw)


def _checked_sites(pair: Any, args: tuple, kwargs: dict, sites: Sequence[str],
                   posterior_predictive: bool | Sequence[str], dims: Mapping[str, Sequence[str]] | None
                   ) -> tuple[list[str], dict[str, list[str]], dict[str, torch.Size]]:
    """``(posterior-predictive sites, dims of the sites kept, every site's shape)``, after
    checking each name against the model's sites (the message lists those it has)."""
    dims = {k: list(v) for k, v in (dims or {}).items()}
    known, shapes = _model_sites(pair.model, args, kwargs)
    for name in sites:
        if name not in known:
            raise ValueError(f"site {name!r} is not in the model; its sites are {sorted(known)}")
        if known[name]:
            raise ValueError(f"site {name!r} is observed; ask for it with posterior_predictive=['{name}']")
    observed = [n for n, obs in known.items() if obs]
    if posterior_predictive is True:
        pp_sites = observed
    elif posterior_predictive:
        pp_sites = list(posterior_predictive)
        bad = [n for n in pp_sites if n not in observed]
        if bad:
            raise ValueError(f"posterior_predictive sites {bad} are not observed sites of the model; those are {observed}")
    else:
        pp_sites = []
    for name in dims:
        if name not in known:
            raise ValueError(f"dims given for {name!r}, which is not a site of the model; its sites are {sorted(known)}")
    return pp_sites, {k: v for k, v in dims.items() if k in sites or k in pp_sites}, shapes


def _draw(pair: Any, args: tuple, kwargs: dict, sites: Sequence[str], pp_sites: list[str], num_samples: int,
          shapes: Mapping[str, torch.Size], parallel: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(draws of sites, posterior-predictive draws of pp_sites)``, each ``(num_samples, ...)``:
    one set of guide draws feeds both; the model is replayed on each."""
    with torch.no_grad():
        guide_draws = pyro.infer.Predictive(pair.guide, num_samples=num_samples, return_sites=None,
                                            parallel=parallel)(*args, **kwargs)
        if not parallel:
            # Predictive pads each draw with size-1 dims up to the plate nesting it guessed;
            # replaying one draw at a time needs the value's own shape.
            with poutine.block():
                guide_trace = poutine.trace(pair.guide).get_trace(*args, **kwargs)
            guide_draws = {k: v.reshape((num_samples,) + guide_trace.nodes[k]["value"].shape)
                           for k, v in guide_draws.items()}
        draws = pyro.infer.Predictive(pair.model, posterior_samples=guide_draws, return_sites=list(sites),
                                      parallel=parallel)(*args, **kwargs)
        pp_draws = {}
        if pp_sites:
            # The unconditioned model resamples its observed sites given each posterior draw.
            pp_draws = pyro.infer.Predictive(poutine.uncondition(pair.model), posterior_samples=guide_draws,
                                             return_sites=pp_sites, parallel=parallel)(*args, **kwargs)
    if not parallel:
        draws = {k: v.reshape((num_samples,) + shapes[k]) for k, v in draws.items()}
        pp_draws = {k: v.reshape((num_samples,) + shapes[k]) for k, v in pp_draws.items()}
    return draws, pp_draws


def _arrays(draws: Mapping[str, torch.Tensor], names: Sequence[str], dims: Mapping[str, list[str]]
            ) -> dict[str, np.ndarray]:
    """``{name: (chain=1, draw, ...) array}`` of the draws of ``names``, fitted to their dims."""
    return {name: _fit_dims(name, draws[name].detach().cpu().numpy(), dims.get(name))[None] for name in names}
