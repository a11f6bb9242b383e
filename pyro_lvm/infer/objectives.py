"""Free bits (Kingma et al. 2016), per dimension as in Li et al. (2019), for any pair.

For every latent site ``z`` with a dimension axis (the guide's event dimensions, e.g. a
``Normal(loc, scale).to_event(1)`` over ``(batch, d)``), each dimension's KL, averaged over the
batch, enters the loss as ``max(lambda, KL_d)``::

    loss = -sum_i E_q[log p(x_i | z_i)] + sum_sites sum_d  n * max(lambda, (1/n) sum_i KL(q(z_id|x_i) || p(z_id)))

(``n`` counts every batch element of the site, masked ones excluded). Dimensions that carry
less than ``lambda`` nats get no gradient pushing them towards the prior, so the encoder
cannot gain by collapsing them. The KL is analytic where PyTorch knows it for the guide and
prior distributions, a one-sample Monte-Carlo estimate (``log q(z) - log p(z)`` at the
sample) otherwise. ``lambda = 0`` is the plain ELBO exactly: the hinge is not applied, so it
also equals ``Trace_ELBO`` when the KL is Monte Carlo and an estimate comes out negative.

Requirements: latent guide sites are reparameterised (``has_rsample``); for the per-dimension
variant the guide and prior are factorised over the event dimensions (``Independent`` over
an elementwise distribution). ``per_dimension=False`` applies the hinge to each site's total
KL instead (Kingma et al.'s groups), which works for any distribution.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.util import prune_subsample_sites

from .handlers import _selector, is_latent_site


def _unwrap(d: Any) -> Any:
    while isinstance(d, dist.Independent):
        d = d.base_dist
    return d


def _mask_like(mask: Any, shape: torch.Size, ref: torch.Tensor) -> torch.Tensor:
    """The site's mask as a float tensor of ``shape`` (ones where there is none)."""
    if mask is None or mask is True:
        return torch.ones(shape, dtype=ref.dtype, device=ref.device)
    if mask is False:
        return torch.zeros(shape, dtype=ref.dtype, device=ref.device)
    m = mask.to(ref.dtype)
    m = m.reshape(m.shape + (1,) * (len(shape) - m.dim())) if m.dim() < len(shape) else m
    return m.expand(shape)


def site_kl(name: str, q: Any, p: Any, value: torch.Tensor, per_dimension: bool, analytic: bool = True
            ) -> tuple[torch.Tensor, bool]:
    """KL of one latent site, elementwise: ``(batch_shape + event_shape, analytic?)`` when
    ``per_dimension``, else ``(batch_shape, analytic?)`` (summed over the event)."""
    event = q.event_shape
    if per_dimension:
        if len(event) == 0:
            raise ValueError(f"free bits per dimension: latent site {name!r} has no dimension axis (its guide "
                             f"distribution {type(q).__name__} has event_shape ()); give the site an event dimension "
                             "(e.g. .to_event(1)) or use per_dimension=False")
        qb, pb = _unwrap(q), _unwrap(p)
        if qb.event_shape != () or pb.event_shape != ():
            raise ValueError(f"free bits per dimension: the KL of latent site {name!r} does not split per dimension "
                             f"(guide {type(qb).__name__}, prior {type(pb).__name__} are not elementwise distributions "
                             "made Independent); use per_dimension=False for a site-level hinge")
        full = q.batch_shape + event
        if analytic:
            try:
                return torch.distributions.kl_divergence(qb, pb).expand(full), True
            except NotImplementedError:
                pass
        return (qb.log_prob(value) - pb.log_prob(value)).expand(full), False
    if analytic:
        try:
            return torch.distributions.kl_divergence(q, p).expand(q.batch_shape), True
        except NotImplementedError:
            pass
    return (q.log_prob(value) - p.log_prob(value)).expand(q.batch_shape), False


class FreeBitsELBO:
    """Negative ELBO with the free-bits hinge on the KL (see the module docstring).

    Args:
        lam: lambda, nats per dimension (per site when ``per_dimension=False``); >= 0.
        per_dimension: the Li et al. (2019) variant (default) or one group per site.
        sites: the latent sites the hinge applies to (default all; others keep their plain KL).
        num_particles: samples of ``z`` averaged per step.
        analytic: use closed-form KLs where available (default), else always Monte Carlo.

    Has the ``differentiable_loss(model, guide, *args, **kwargs)`` and ``loss(...)`` methods
    of a Pyro ELBO, so ``fit(pair, data, elbo=FreeBitsELBO(0.5))`` trains with it.
    """

    def __init__(self, lam: float = 0.5, per_dimension: bool = True, sites: Any = None,
                 num_particles: int = 1, analytic: bool = True):
        try:
            lam_f = float(lam)
        except (TypeError, ValueError):
            raise ValueError(f"free bits lambda must be a number >= 0, got {lam!r}") from None
        if not math.isfinite(lam_f) or lam_f < 0:
            raise ValueError(f"free bits lambda must be a finite number >= 0, got {lam!r}")
        if not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
        self.lam = lam_f
        self.per_dimension = bool(per_dimension)
        self.select, self.names = _selector(sites)
        self.sites = sites
        self.num_particles = num_particles
        self.analytic = analytic

    def _traces(self, model: Callable, guide: Callable, args: tuple, kwargs: dict):
        # The same calls, in the same order, as Trace_ELBO: the same random numbers give the same z.
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)

    def terms(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """One particle: ``{"reconstruction": sum log p(x|z), "kl": {site: summed KL},
        "penalty": {site: hinged KL term}}`` (tensors, differentiable)."""
        model_trace, guide_trace = self._traces(model, guide, args, kwargs)
        model_trace.compute_log_prob()
        rec = 0.0
        kl: dict[str, torch.Tensor] = {}
        penalty: dict[str, torch.Tensor] = {}
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                rec = rec + site["log_prob_sum"]
                continue
            if name not in guide_trace.nodes:
                raise ValueError(f"latent site {name!r} of the model is not in the guide (enumerated or unguided "
                                 "latents are not supported by FreeBitsELBO)")
        seen = set()
        for name, g in guide_trace.nodes.items():
            if g["type"] != "sample" or g["is_observed"]:
                continue
            if not is_latent_site(g) or name not in model_trace.nodes:
                raise ValueError(f"guide site {name!r} has no latent counterpart in the model (auxiliary guide "
                                 "sites are not supported by FreeBitsELBO)")
            if not g["fn"].has_rsample or g["infer"].get("enumerate"):
                raise ValueError(f"FreeBitsELBO needs reparameterised guide sites; {name!r} is "
                                 f"{type(_unwrap(g['fn'])).__name__} without rsample (or enumerated)")
            m = model_trace.nodes[name]
            hinge = self.lam > 0 and self.select(name)
            if self.select(name):
                seen.add(name)
            elem, _ = site_kl(name, g["fn"], m["fn"], g["value"], self.per_dimension and hinge, self.analytic)
            batch_shape = g["fn"].batch_shape
            mask = _mask_like(g["mask"], elem.shape[:len(batch_shape)], elem)
            mask_full = mask.reshape(mask.shape + (1,) * (elem.dim() - mask.dim())).expand(elem.shape)
            masked = elem * mask_full
            kl[name] = masked.sum() * g["scale"]
            if not hinge:
                penalty[name] = kl[name]
                continue
            count = mask.sum()
            # Per-dimension batch average: sum over batch dims, divide by the unmasked count.
            per_dim = masked.reshape(masked.shape[:len(batch_shape)].numel(), -1).sum(0) / count.clamp(min=1)
            penalty[name] = count * torch.clamp(per_dim, min=self.lam).sum() * g["scale"]
        if self.names is not None and self.names - seen:
            raise ValueError(f"unknown latent site(s) {sorted(self.names - seen)} for free bits; the guide's latent "
                             f"sites are {sorted(n for n, s in guide_trace.nodes.items() if is_latent_site(s))}")
        return {"reconstruction": rec, "kl": kl, "penalty": penalty}

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        total = 0.0
        for _ in range(self.num_particles):
            t = self.terms(model, guide, *args, **kwargs)
            total = total - t["reconstruction"] + sum(t["penalty"].values())
        loss = total / self.num_particles
        return loss if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def __repr__(self) -> str:
        return f"FreeBitsELBO(lam={self.lam}, per_dimension={self.per_dimension}, sites={self.sites!r})"
