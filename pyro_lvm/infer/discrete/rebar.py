"""REBAR and RELAX for any pair: unbiased estimators with a control variate from the relaxation.

For a Bernoulli or one-hot site with logits ``a``: noise ``z = a + L`` (logistic, or Gumbel
for a categorical), the discrete value ``b = H(z)``, and ``z~ ~ p(z | b)`` drawn given it
(:func:`~pyro_lvm.infer.discrete.relaxed.conditional_logistic`, ``conditional_gumbel``). With ``f``
the site's cost and ``c`` a control variate that is a smooth function of the noise::

    g_a = [f(b) - c(z~)] d/da log q(b) + d/da c(z) - d/da c(z~)        (unbiased for d/da E f)

* **REBAR** (Tucker et al. 2017): ``c(z) = eta * f(sigma_lambda(z))``, the same cost evaluated
  at the relaxed value ``sigmoid(z / lambda)`` (or ``softmax``), with the scale ``eta`` and the
  temperature ``lambda`` of each site trained to minimise the estimator's variance.
* **RELAX** (Grathwohl et al. 2018): ``c(z) = eta * f(sigma_lambda(z)) + r_psi(z)``, with a
  surrogate network ``r_psi`` (input ``[z, a]`` flattened over the site's event, output one
  number per datapoint; default one hidden layer of 137 leaky-ReLU units, as in Dong et al.'s
  RELAX baseline) trained jointly with ``eta`` and ``lambda``.

The three evaluations run in one vectorised pass: particle 0 is the discrete sample, 1 and 2
the relaxed ones; model and guide see the relaxed values there (their discrete sites'
log-probabilities extend to relaxed values, ``v log p + (1 - v) log(1 - p)``), so a model
that can take a point of [0, 1] or of the simplex is all REBAR needs. Sites sampled before
the first relaxed one are shared by the three; a relaxed site whose logits differ between
them (its distribution depends on an earlier latent's value) is refused.

Variance: the control-variate parameters follow the gradient of ``sum g_a^2`` (a one-sample
estimate of the variance of the logits' gradient plus a constant), computed inside the loss
by double backpropagation and handed to the optimiser with the rest of the gradient
(:func:`~pyro_lvm.infer.discrete.particles.delivers`). Dong et al. and Grathwohl et al. minimise the
variance of the encoder parameters' gradient instead; the logits' is the same signal one
Jacobian earlier and needs no knowledge of which parameters the encoder has.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Callable

import pyro
import torch
from pyro.poutine.messenger import Messenger
from torch import nn

from ...traces import unwrap_independent
from .particles import (ParticleEstimator, ParticleSampler, ParticleTraces, Structure, StructureChanged, as_loss, delivers,
                        event_view, logit_event_dims, model_site_refusal, regroup, share, ungroup)
from .relaxed import (SoftBernoulli, SoftOneHotCategorical, check_temperature, conditional_gumbel,
                      conditional_logistic, gumbel_noise, logistic_noise)

CV_PREFIX = "__cv__"


def soft_version(fn: Any, family: str) -> Any:
    """The same distribution with a ``log_prob`` defined at relaxed values."""
    base, ndims = unwrap_independent(fn)
    soft = SoftBernoulli(base.logits) if family == "bernoulli" else SoftOneHotCategorical(base.logits)
    return soft.to_event(ndims) if ndims else soft


class _SoftModelSites(Messenger):
    """Model side: the handled discrete sites' priors take relaxed values."""

    def __init__(self, families: dict[str, str], estimator: str):
        super().__init__()
        self.families, self.estimator = families, estimator

    def _pyro_sample(self, msg: dict) -> None:
        if not msg["is_observed"] and msg["name"] in self.families:
            refusal = model_site_refusal(self.estimator, msg["name"], msg["fn"])
            if refusal:
                raise ValueError(refusal)
            msg["fn"] = soft_version(msg["fn"], self.families[msg["name"]])


class RebarSampler(ParticleSampler):
    """Guide values for ``groups`` triples: ``(H(z), sigma(z / lambda), sigma(z~ / lambda))``."""

    def __init__(self, structure: Structure, groups: int,
                 temperature: Callable[[str, torch.Tensor], torch.Tensor]):
        super().__init__(structure.max_plate_nesting)
        self.structure = structure
        self.groups = groups
        self.temperature = temperature  # (site, logits) -> lambda, a parameter of the objective
        self.seen = 0
        # site -> (logits (groups, ...), z, z~, b, event dims of the logits)
        self.records: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]] = {}

    def sample_site(self, msg: dict, axis: int) -> None:
        name, fn = msg["name"], msg["fn"]
        j = self.structure.check(name, fn, self.seen)
        if j is None:
            value = self.draw(fn)
            msg["value"] = share(value, axis, self.groups) if self.seen == 0 else value
            return
        self.seen += 1
        family = self.structure.families[name]
        base, _ = unwrap_independent(fn)
        grouped = regroup(base.logits, axis, self.groups)
        if not (torch.equal(grouped[:, 0], grouped[:, 1]) and torch.equal(grouped[:, 0], grouped[:, 2])):
            earlier = [n for n in self.structure.sites[:j]] or ["a latent sampled before it"]
            raise ValueError(
                f"site {name!r}: its distribution depends on the value of {', '.join(map(repr, earlier))}, "
                "which differs between REBAR/RELAX's discrete and relaxed evaluations, so its control variate "
                "would be biased. REBAR/RELAX need the guide's relaxed sites independent of each other's values "
                "(sample them first, or from the same inputs); 'disarm', 'arm' and 'rloo' handle dependent sites")
        logits = grouped[:, 0]
        lam = self.temperature(name, logits)
        with torch.no_grad():
            noise = (logistic_noise if family == "bernoulli" else gumbel_noise)(logits.shape, logits)
        z = logits + noise
        if family == "bernoulli":
            b = (z.detach() > 0).to(z.dtype)
            z_cond = conditional_logistic(logits, b)
            relaxed, relaxed_cond = torch.sigmoid(z / lam), torch.sigmoid(z_cond / lam)
        else:
            b = torch.nn.functional.one_hot(z.detach().argmax(-1), z.shape[-1]).to(z.dtype)
            z_cond = conditional_gumbel(logits, b)
            relaxed, relaxed_cond = torch.softmax(z / lam, -1), torch.softmax(z_cond / lam, -1)
        self.records[name] = (logits, z, z_cond, b, logit_event_dims(fn, family))
        msg["value"] = ungroup(torch.stack([b, relaxed, relaxed_cond], 1), axis)
        msg["fn"] = soft_version(fn, family)


def default_surrogate(event_size: int, hidden: int = 137) -> nn.Module:
    """RELAX's ``r_psi``: ``[z, logits]`` (``2 * event_size``) -> hidden leaky ReLU -> 1."""
    return nn.Sequential(nn.Linear(2 * event_size, hidden), nn.LeakyReLU(0.3), nn.Linear(hidden, 1))


class Rebar(ParticleEstimator):
    """REBAR (``relax=False``) or RELAX over ``num_particles`` independent triples.

    Args:
        relax: add the surrogate network ``r_psi``.
        temperature: initial ``lambda`` of every site.
        num_particles: independent estimates averaged (each costs three model evaluations).
        control_variate: RELAX's network: an ``nn.Module`` (one handled site) or
            ``{site: nn.Module}``; it maps ``(..., 2 * E)`` to ``(..., 1)`` or ``(...)`` with
            ``E`` the number of logits in one datapoint's draw of the site. Default:
            :func:`default_surrogate`, built at the first call.
    """

    def __init__(self, relax: bool, temperature: float = 0.5, num_particles: int = 1,
                 control_variate: nn.Module | dict[str, nn.Module] | None = None):
        super().__init__(num_particles)
        if control_variate is not None and not relax:
            raise ValueError("control_variate= is RELAX's surrogate network; 'rebar' learns only a scale and a "
                             "temperature (use estimator 'relax')")
        if control_variate is not None and not isinstance(control_variate, (nn.Module, dict)):
            raise TypeError(f"control_variate must be an nn.Module or a dict {{site: nn.Module}}, "
                            f"got {type(control_variate).__name__}")
        self.relax = relax
        self.name = "relax" if relax else "rebar"
        self.initial_temperature = check_temperature(temperature)
        self.control_variate = control_variate
        self.networks: dict[str, nn.Module] = {}

    @property
    def model_evaluations(self) -> int:
        return 3 * self.num_particles

    # ------------------------------------------------------------------ the control variate's parameters

    def _param(self, site: str, what: str, init: float, like: torch.Tensor) -> torch.Tensor:
        return pyro.param(f"{CV_PREFIX}{self.name}.{site}.{what}",
                          lambda: torch.tensor(init, dtype=like.dtype, device=like.device))

    def learned(self) -> dict[str, dict[str, float]]:
        """``{site: {"eta": ..., "temperature": ...}}`` as they are now in the param store."""
        store = pyro.get_param_store()
        out: dict[str, dict[str, float]] = {}
        for key in store.keys():
            prefix = f"{CV_PREFIX}{self.name}."
            if key.startswith(prefix) and key.endswith((".eta", ".log_temperature")):
                site, what = key[len(prefix):].rsplit(".", 1)
                value = float(store[key].detach())
                out.setdefault(site, {})["eta" if what == "eta" else "temperature"] = (
                    value if what == "eta" else math.exp(value))
        return out

    def _network(self, site: str, event_size: int, like: torch.Tensor) -> nn.Module:
        if site not in self.networks:
            cv = self.control_variate
            if isinstance(cv, dict):
                if site not in cv:
                    raise ValueError(f"control_variate has no network for site {site!r} (it names {sorted(cv)})")
                net = cv[site]
            elif cv is not None:
                net = cv
            else:
                # built on the side: its initialisation must not shift the global random stream
                # (a resumed run builds it at another point of the stream than the original)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(zlib.crc32(site.encode()))
                    net = default_surrogate(event_size)
            self.networks[site] = net.to(device=like.device, dtype=like.dtype)
            name = f"{CV_PREFIX}{self.name}.{site}.net"
            store = pyro.get_param_store()
            shapes = {f"{name}$$${n}": p.shape for n, p in net.named_parameters()}
            stale = [k for k in store.keys() if k.startswith(name + "$$$")
                     and (k not in shapes or store[k].shape != shapes[k])]
            for k in stale:  # another network's values under the same name: not this one's state
                del store[k]
        # update_module_params: after a resume the param store holds the trained values
        return pyro.module(f"{CV_PREFIX}{self.name}.{site}.net", self.networks[site], update_module_params=True)

    def _surrogate(self, site: str, z: torch.Tensor, logits: torch.Tensor, event_dims: int,
                   net: nn.Module | None = None) -> torch.Tensor:
        """``r_psi([z, logits])`` per datapoint: shape of ``z`` without its ``event_dims`` trailing dims.
        ``net``: the site's network when the caller already has it (this step's :meth:`_network`)."""
        batch = z.shape[:z.dim() - event_dims]
        event_size = int(torch.Size(z.shape[z.dim() - event_dims:]).numel())
        net = net if net is not None else self._network(site, event_size, z)
        inputs = torch.cat([z.reshape(*batch, event_size), logits.detach().reshape(*batch, event_size)], -1)
        try:
            out = net(inputs)
        except RuntimeError as e:
            raise ValueError(f"the RELAX control-variate network for site {site!r} must map inputs of shape "
                             f"(..., {2 * event_size}) ([z, logits] of one datapoint's draw, flattened) to "
                             f"(..., 1); calling it on {tuple(inputs.shape)} failed: {e}") from None
        if out.shape == batch + (1,):
            out = out.squeeze(-1)
        if out.shape != batch:
            raise ValueError(f"the RELAX control-variate network for site {site!r} returned shape "
                             f"{tuple(out.shape)} for inputs {tuple(inputs.shape)}; it must return one number "
                             f"per datapoint: {tuple(batch) + (1,)} or {tuple(batch)}")
        return out

    # ------------------------------------------------------------------ the estimator

    def loss(self, model: Callable, guide: Callable, args: tuple, kwargs: dict, structure: Structure
             ) -> tuple[torch.Tensor, dict[str, float]]:
        groups = self.num_particles
        sampler, traces, log_temps = self._triples(model, guide, args, kwargs, structure)
        weights = torch.zeros(traces.num_particles)
        weights.view(groups, 3)[:, 0] = 1.0 / groups                     # particle 0 of each triple is q's draw
        costs, value, stats = self.elbo(traces, structure.sites, weights.to(traces.total()))
        totals = regroup(traces.total(), 0, groups)                     # (groups, 3)
        if not torch.is_grad_enabled():
            return -value, stats
        names = structure.sites
        logits = [sampler.records[n][0] for n in names]
        # d/da [f(sigma(z)) - f(sigma(z~))] for every site at once (total derivative, all terms)
        relaxed_gap = (totals[:, 1] - totals[:, 2]).sum()
        d_relaxed = torch.autograd.grad(relaxed_gap, logits, retain_graph=True, create_graph=True)
        d_hard = torch.autograd.grad(totals[:, 0].sum(), logits, retain_graph=True)
        surrogate = value
        variance = None
        cv_params: list[torch.Tensor] = []
        for name, a, dr, dh in zip(names, logits, d_relaxed, d_hard):
            correction, estimate, params = self._site_gradient(name, a, dr, dh, sampler, traces, costs, log_temps,
                                                               structure)
            cv_params += params
            surrogate = surrogate + (a * correction.detach()).sum() / groups
            variance = estimate.pow(2).sum() if variance is None else variance + estimate.pow(2).sum()
        loss = as_loss(value, surrogate)
        if variance is not None:
            grads = torch.autograd.grad(variance, cv_params, retain_graph=True, allow_unused=True)
            loss = loss + delivers(cv_params, list(grads)).to(loss.device)
        others = traces.score_sites(set(names))
        if others:
            plain = traces.plain_score(others, weights.to(value))
            loss = loss - (plain - plain.detach())
        return loss, stats

    def _triples(self, model: Callable, guide: Callable, args: tuple, kwargs: dict, structure: Structure
                 ) -> tuple[RebarSampler, ParticleTraces, dict[str, torch.Tensor]]:
        """``num_particles`` triples of traces (q's hard draw, its relaxation, the conditional
        relaxation), each handled site's log-temperature parameter by name."""
        log_temps: dict[str, torch.Tensor] = {}

        def temperature(site: str, like: torch.Tensor) -> torch.Tensor:
            log_temps[site] = self._param(site, "log_temperature", math.log(self.initial_temperature), like)
            return log_temps[site].exp()

        sampler = RebarSampler(structure, self.num_particles, temperature)
        traces = ParticleTraces(model, guide, args, kwargs, num_particles=3 * self.num_particles,
                                max_plate_nesting=structure.max_plate_nesting, sampler=sampler,
                                model_handler=_SoftModelSites({n: structure.families[n] for n in structure.sites},
                                                               "relax" if self.relax else "rebar"))
        if sampler.seen != len(structure.sites):
            raise StructureChanged("a handled site did not appear")
        return sampler, traces, log_temps

    def _site_gradient(self, name: str, a: torch.Tensor, dr: torch.Tensor, dh: torch.Tensor, sampler: RebarSampler,
                       traces: ParticleTraces, costs: dict[str, torch.Tensor], log_temps: dict[str, torch.Tensor],
                       structure: Structure) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """For one site with logits ``a``: ``(correction, estimate, control-variate parameters)``,
        where ``correction`` is the REBAR/RELAX gradient term beyond the hard pass's own path
        (``dh``; ``dr`` is the relaxed gap's derivative) and ``estimate`` this step's gradient
        with respect to ``a``, whose squared norm the control variates minimise."""
        groups = self.num_particles
        _, z, z_cond, b, event_dims = sampler.records[name]
        eta = self._param(name, "eta", 1.0, a)
        cv_params = [eta, log_temps[name]]
        cost = regroup(traces.front(costs[name]), 0, groups)   # (groups, 3, *plates)
        hard_cost, cond_cost = cost[:, 0].detach(), cost[:, 2]
        control_cond = eta * cond_cost
        cv_grad = eta * dr
        if self.relax:
            r_z = self._surrogate(name, z, a, event_dims)
            # the same network: pyro.module's registration (and update from the store) once per step
            r_cond = self._surrogate(name, z_cond, a, event_dims, self.networks[name])
            control_cond = control_cond + r_cond.reshape(cond_cost.shape)
            (dr_net,) = torch.autograd.grad((r_z - r_cond).sum(), a, retain_graph=True, create_graph=True)
            cv_grad = cv_grad + dr_net
            cv_params += list(self.networks[name].parameters())
        signal = event_view(hard_cost - control_cond, event_dims)
        dlog_q = b - (torch.sigmoid(a) if structure.families[name] == "bernoulli" else torch.softmax(a, -1))
        dlog_q = dlog_q.detach()
        correction = signal * dlog_q + cv_grad                      # all but the hard pass's own path
        estimate = (dh + correction) / groups                       # this step's gradient w.r.t. a
        if structure.families[name] != "bernoulli":  # w.r.t. the unnormalised logits
            estimate = estimate - torch.softmax(a, -1).detach() * estimate.sum(-1, keepdim=True)
        return correction, estimate, cv_params
