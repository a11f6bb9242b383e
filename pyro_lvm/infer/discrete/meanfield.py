"""``TraceMeanField_ELBO`` without the log-densities its loss never reads (the relaxed estimators' ELBO).

Pyro's ``TraceMeanField_ELBO`` computes ``log_prob`` at every model site and the score parts
at every guide site before it builds the loss, then replaces the latent sites' terms by their
closed-form KL. For the relaxed estimators ("gumbel", "straight-through", "gumbel-rao") every
latent site has one (Bernoulli and categorical pairs), so those log-densities, a relaxed
sample's included, are computed and dropped at every step. :class:`MeanFieldELBO` computes a
site's log-density only where the loss reads it: observed sites always, a latent site only when
its KL is not available (the sampled fallback), a guide-only (auxiliary) site for its entropy
term. Loss and gradient are the same numbers, summed in the same order. With Pyro's validation
enabled it is ``TraceMeanField_ELBO`` unchanged (whose checks read every site's log-density).
"""

from __future__ import annotations

from typing import Any, Callable

import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import TraceMeanField_ELBO
from pyro.infer.util import is_validation_enabled, torch_item
from torch.distributions import kl_divergence

from ...traces import is_subsample

__all__ = ["MeanFieldELBO"]


def _only(name: str) -> Callable[[str, Any], bool]:
    return lambda n, site: n == name


class MeanFieldELBO(TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` that computes only the log-densities its loss uses (same loss, same gradient)."""

    def _get_trace(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple[Any, Any]:
        if is_validation_enabled() or isinstance(poutine.unwrap(guide), poutine.messenger.Messenger):
            return super()._get_trace(model, guide, args, kwargs)
        guide_trace = poutine.trace(guide, graph_type="flat").get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace), graph_type="flat").get_trace(
            *args, **kwargs)
        # the plates' subsample sites stay in the traces (no pruned copies): the loss skips them
        model_trace.compute_log_prob(site_filter=lambda name, site: site["is_observed"] and not is_subsample(site))
        return model_trace, guide_trace

    def _differentiable_loss_particle(self, model_trace: Any, guide_trace: Any) -> tuple[Any, Any]:
        if is_validation_enabled():
            return super()._differentiable_loss_particle(model_trace, guide_trace)
        elbo_particle: Any = 0
        for name, model_site in model_trace.nodes.items():
            if model_site["type"] != "sample" or is_subsample(model_site):
                continue
            if model_site["is_observed"]:
                elbo_particle = elbo_particle + model_site["log_prob_sum"]
                continue
            guide_site = guide_trace.nodes[name]
            try:
                kl_qp = scale_and_mask(kl_divergence(guide_site["fn"], model_site["fn"]), scale=guide_site["scale"],
                                       mask=guide_site["mask"])
                kl_qp_sum = (kl_qp.sum() if torch.is_tensor(kl_qp)
                             else kl_qp * torch.Size(guide_site["fn"].batch_shape).numel())
                elbo_particle = elbo_particle - kl_qp_sum
            except NotImplementedError:  # no closed form: the sampled term, as Pyro's fallback
                model_trace.compute_log_prob(site_filter=_only(name))
                guide_trace.compute_score_parts()
                elbo_particle = elbo_particle + model_site["log_prob_sum"] - guide_site["score_parts"].entropy_term.sum()
        for name, guide_site in guide_trace.nodes.items():  # auxiliary guide sites
            if guide_site["type"] == "sample" and name not in model_trace.nodes and not is_subsample(guide_site):
                guide_trace.compute_score_parts()
                elbo_particle = elbo_particle - guide_site["score_parts"].entropy_term.sum()
        loss = -(elbo_particle.detach() if torch._C._get_tracing_state() else torch_item(elbo_particle))
        return loss, -elbo_particle
