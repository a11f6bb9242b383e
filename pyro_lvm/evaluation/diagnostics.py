"""Posterior-collapse diagnostics for any model/guide pair.

Each function traces the guide on batches of ``data`` (a tensor, tuple of tensors, Dataset or
DataLoader, batched by the convention of :mod:`pyro_lvm.base`), replays the model where the
prior is needed, and reads the latent sites' distributions. Nothing is specific to a model.

* :func:`kl_per_dimension` / :func:`kl_per_site`: ``KL(q(z|x) || p(z))`` averaged over datapoints;
* :func:`active_units`: a unit (one coordinate of a latent site, per datapoint) is active
  when ``Var_x(E_q[z_u | x]) > 0.01`` (He et al. 2019, after Burda et al. 2016); a
  ``Categorical`` index site has one unit per class, ``q(y = k | x)``;
* :func:`mutual_information`: ``I_q(x; z)`` under the aggregate posterior
  ``q(z) = (1/n) sum_j q(z | x_j)`` of each batch of ``n``, computed from the *joint* guide
  ``q(z | x)`` over all local sites, averaged over batches weighted by their size;
* :class:`CollapseDiagnostics`: a ``fit()`` callback logging them per epoch;
* :func:`plot_collapse`: curves of KL, MI, active units and the KL weight per epoch.

The diagnostics concern the *local* latent sites: those inside the data plate (the one plate
whose size is the batch size, or the plate named ``data_plate``). Global sites (a Bayesian
decoder's weights, topics) are shared by every datapoint and carry no per-datapoint code;
they are left out (the local sites are read given the guide's draw of them). Positions a
site masks (``poutine.mask``, e.g. padding) count neither in KLs nor in activity.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pyro
import pyro.poutine as poutine
import torch

from .. import validation
from ..base import batch_args, batch_size as _batch_size
from ..traces import (base_distribution, data_plate_frame, guide_and_model_traces, is_auxiliary, is_categorical_index,
                      is_point_mass, is_random, local_and_global, max_plate_nesting, site_kl)
from ..training.batching import evaluation_batches
from ..training.callbacks import Callback, TrainState

ACTIVE_THRESHOLD = 0.01
_DRAWS = "_lvm_draws"


def _data_index(site: dict, n: int, data_plate: str | None) -> int | None:
    """Index of the datapoint dimension within the site's batch shape; None for a global site."""
    frame = data_plate_frame(site, n, data_plate, exclude=(_DRAWS,))
    return None if frame is None else len(site["fn"].batch_shape) + frame.dim


def _local_sites(guide_trace: Any, n: int, data_plate: str | None, auxiliary: bool = False
                 ) -> list[tuple[str, dict, int]]:
    """``(name, site, data index)`` of the guide's local latent sites (and auxiliary ones if asked)."""
    local, global_ = local_and_global(guide_trace, n, data_plate, auxiliary, exclude=(_DRAWS,))
    if not local:
        raise no_local_sites(global_, n, data_plate, "collapse diagnostics")
    return [(name, guide_trace.nodes[name], _data_index(guide_trace.nodes[name], n, data_plate)) for name in local]


def no_local_sites(global_: list[str], n: int, data_plate: str | None, what: str, advice: str = "") -> ValueError:
    """The refusal of a per-datapoint diagnostic (or a remedy built on one) for a guide with no local latents."""
    where = f"the plate {data_plate!r}" if data_plate else f"a plate of the batch size {n}"
    if not global_:
        return ValueError(f"{what}: the guide has no latent sample sites at all; give it the model's latent sites")
    return ValueError(f"{what} need per-datapoint (local) latent sites, inside {where}, and this guide has none: "
                      f"latent site(s) {global_} are global, shared by every datapoint, so they carry no "
                      f"per-datapoint code. {advice}Put per-datapoint latents in pyro.plate over the batch, or pass "
                      "data_plate='<name>' if the plate is there")


def _traces(pair: Any, data: Any, batch_size: int, with_model: bool) -> Iterator[tuple[int, Any, Any, Any]]:
    """``(n, guide trace, model trace or None, batch)`` per batch (no gradients)."""
    data = validation.inputs(pair, data, batch_size=batch_size)
    for batch in evaluation_batches(pair, data, batch_size):
        args, kwargs = batch_args(batch)
        if with_model:
            guide_trace, model_trace = guide_and_model_traces(pair.model, pair.guide, args, kwargs)
        else:
            with torch.no_grad():
                guide_trace, model_trace = poutine.trace(pair.guide).get_trace(*args, **kwargs), None
        yield _batch_size(batch), guide_trace, model_trace, batch


def _per_datapoint(t: torch.Tensor, idx: int) -> torch.Tensor:
    """``(batch_shape + rest)`` -> ``(n, units)`` with the datapoint dim first."""
    t = t.movedim(idx, 0)
    return t.reshape(t.shape[0], -1)


def _mask(site: dict, shape: torch.Size) -> torch.Tensor:
    """The site's mask as a bool tensor of ``shape`` (its batch shape; all True when unmasked)."""
    mask = site.get("mask")
    if mask is None or mask is True:
        return torch.ones(shape, dtype=torch.bool)
    if mask is False:
        return torch.zeros(shape, dtype=torch.bool)
    return mask.bool().expand(shape).cpu()


def _refuse_point_mass(name: str, g: dict, guide_trace: Any) -> None:
    if is_point_mass(g["fn"]):
        aux = [n for n, s in guide_trace.nodes.items() if is_random(s) and is_auxiliary(s)]
        why = (f"drawn through the auxiliary site(s) {aux} (an autoguide), so it has no distribution of its own"
               if aux else "a point mass (a MAP guide), which has no KL or spread")
        raise ValueError(f"collapse diagnostics of latent site {name!r}: it is {why}. Diagnose a pair whose guide "
                         "gives each local latent its own distribution (a hand-written guide)")


# ----------------------------------------------------------------------------- KL

@torch.no_grad()
def kl_per_dimension(pair: Any, data: Any, batch_size: int = 256, data_plate: str | None = None
                     ) -> dict[str, torch.Tensor]:
    """Mean KL per datapoint of every local latent site, per unit: ``{site: (units,)}`` in nats.

    A unit is one coordinate of the site (its event dimensions, and any plate other than the
    data plate). Sites whose KL does not split per dimension (e.g. ``MultivariateNormal``)
    get one entry, their whole KL. Analytic where PyTorch knows the KL, one-sample Monte
    Carlo otherwise (a site whose prior or guide depends on another latent: at the guide's
    draw of it, an unbiased estimate of the expected KL). Masked positions add nothing.
    """
    sums: dict[str, torch.Tensor] = {}
    total = 0
    for n, guide_trace, model_trace, _ in _traces(pair, data, batch_size, with_model=True):
        for name, g, idx in _local_sites(guide_trace, n, data_plate):
            if name not in model_trace.nodes:
                raise ValueError(f"guide site {name!r} is not a site of the model")
            _refuse_point_mass(name, g, guide_trace)
            p = model_trace.nodes[name]["fn"]
            elem, _ = site_kl(name, g["fn"], p, g["value"], per_dimension=True)
            batch_shape = g["fn"].batch_shape
            mask = _mask(g, batch_shape).to(elem.device)
            elem = torch.where(mask.reshape(mask.shape + (1,) * (elem.dim() - mask.dim())), elem,
                               torch.zeros((), dtype=elem.dtype, device=elem.device))
            part = _per_datapoint(elem, idx).sum(0)
            sums[name] = sums[name] + part if name in sums else part
        total += n
    return {k: v / total for k, v in sums.items()}


def kl_per_site(pair: Any, data: Any, batch_size: int = 256, data_plate: str | None = None) -> dict[str, float]:
    """Mean KL per datapoint of each local latent site (nats): ``{site: float}``."""
    return {k: float(v.sum()) for k, v in kl_per_dimension(pair, data, batch_size, data_plate).items()}


# ----------------------------------------------------------------------------- active units

def _site_mean(fn: Any, num_samples: int) -> torch.Tensor:
    """``E_q[z]`` of one site's distribution, ``batch_shape + units``: the class probabilities of
    a ``Categorical`` index (its mean as a number means nothing), ``.mean`` where implemented,
    else the average of ``num_samples`` draws."""
    if is_categorical_index(fn):
        probs = base_distribution(fn).probs
        return probs.expand(fn.batch_shape + probs.shape[-1:])
    try:
        mean = fn.mean
    except NotImplementedError:
        mean = fn.sample((num_samples,)).float().mean(0)
    return mean.expand(fn.batch_shape + fn.event_shape)


def _draws(guide: Any, num_draws: int, nesting: int) -> Any:
    """``guide`` run under a plate of ``num_draws`` independent draws, left of its own ``nesting`` plates."""
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with pyro.plate(_DRAWS, num_draws, dim=-(nesting + 1)):
            return guide(*args, **kwargs)
    return wrapped


@torch.no_grad()
def posterior_means(pair: Any, data: Any, batch_size: int = 256, data_plate: str | None = None,
                    num_samples: int = 100) -> dict[str, torch.Tensor]:
    """``E_q[z | x]`` of every local latent site for every datapoint: ``{site: (N, units)}``.

    Uses the guide distribution's ``.mean`` (``Categorical`` index sites: the class
    probabilities, one unit per class); where that is not implemented, the average of
    ``num_samples`` draws. When the guide has several local sites (one may depend on
    another's draw, as ``q(z | x, y)``), each site's conditional mean is averaged over
    ``num_samples`` joint draws of the guide, an estimate of ``E_q[z | x]`` itself. Masked
    entries (``poutine.mask``) are NaN.
    """
    return {k: torch.where(mask, mean, torch.full((), math.nan, dtype=mean.dtype))
            for k, (mean, mask) in _posterior_means(pair, data, batch_size, data_plate, num_samples).items()}


@torch.no_grad()
def _posterior_means(pair: Any, data: Any, batch_size: int, data_plate: str | None, num_samples: int
                     ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    out: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for n, guide_trace, _, batch in _traces(pair, data, batch_size, with_model=False):
        local = _local_sites(guide_trace, n, data_plate)
        for name, g, _ in local:
            _refuse_point_mass(name, g, guide_trace)
        if len(local) > 1:  # conditional means depend on the other sites' draws: average over joint draws
            args, kwargs = batch_args(batch)
            drawn = poutine.trace(_draws(pair.guide, num_samples, max_plate_nesting(guide_trace))).get_trace(*args, **kwargs)
        for name, g, idx in local:
            fn = g["fn"]
            if len(local) > 1:
                d = drawn.nodes[name]["fn"]                     # batch (draws, 1.., *fn.batch_shape)
                mean = _site_mean(d, num_samples)
                units = mean.shape[len(d.batch_shape):]
                mean = mean.reshape((num_samples,) + tuple(fn.batch_shape) + tuple(units)).mean(0)
            else:
                mean = _site_mean(fn, num_samples)
            units = mean.shape[len(fn.batch_shape):]
            mask = _mask(g, fn.batch_shape).reshape(fn.batch_shape + (1,) * len(units)).expand(mean.shape)
            out.setdefault(name, []).append((_per_datapoint(mean, idx).cpu(), _per_datapoint(mask, idx)))
    return {k: (torch.cat([m for m, _ in v]), torch.cat([k_ for _, k_ in v])) for k, v in out.items()}


@torch.no_grad()
def unit_activity(pair: Any, data: Any, batch_size: int = 256, data_plate: str | None = None) -> dict[str, torch.Tensor]:
    """``Var_x(E_q[z_u | x])`` per unit of each local latent site: ``{site: (units,)}`` (unbiased
    variance over the datapoints where the unit is not masked)."""
    out = {}
    for name, (m, mask) in _posterior_means(pair, data, batch_size, data_plate, num_samples=100).items():
        if m.shape[0] < 2:
            raise ValueError(f"active units need at least 2 datapoints, got {m.shape[0]}")
        m, w = m.double(), mask.double()
        count = w.sum(0)
        mean = (m * w).sum(0) / count.clamp(min=1)
        out[name] = (((m - mean) ** 2) * w).sum(0) / (count - 1).clamp(min=1)
    return out


def active_units(pair: Any, data: Any, threshold: float = ACTIVE_THRESHOLD, batch_size: int = 256,
                 data_plate: str | None = None, per_site: bool = False) -> int | dict[str, int]:
    """Number of units with ``Var_x(E_q[z_u | x]) > threshold`` (He et al. 2019), summed over
    local latent sites (``per_site=True``: ``{site: count}``)."""
    validation.check(threshold=threshold)
    counts = {name: int((v > threshold).sum()) for name, v in unit_activity(pair, data, batch_size, data_plate).items()}
    return counts if per_site else sum(counts.values())


# ----------------------------------------------------------------------------- mutual information

def _cross_log_q(g: dict, idx: int) -> torch.Tensor:
    """``log q(z_i | x_j)`` for all pairs of datapoints of one site: ``(n_i, n_j)`` (positions the
    site masks for datapoint i add nothing)."""
    fn, z = g["fn"], g["value"]
    z = z.expand(fn.batch_shape + fn.event_shape)
    # Put the samples' datapoint dim first and a size-1 dim where q's datapoint dim is, so that
    # log_prob broadcasts every sample z_i against every datapoint's q(. | x_j).
    z_cross = z.movedim(idx, 0).unsqueeze(idx + 1)
    lp = fn.log_prob(z_cross)                          # (n_i, *batch_shape) with n_j at idx + 1
    mask = _mask(g, fn.batch_shape).to(lp.device).movedim(idx, 0).unsqueeze(idx + 1)
    lp = torch.where(mask, lp, torch.zeros((), dtype=lp.dtype, device=lp.device))
    lp = lp.movedim(idx + 1, 1)
    return lp.reshape(lp.shape[0], lp.shape[1], -1).sum(-1)


def _tile_batch(batch: Any, index: torch.Tensor, n: int) -> Any:
    """The batch with every per-datapoint tensor (leading dim ``n``) indexed by ``index``."""
    args, kwargs = batch_args(batch)
    pick = lambda v: v[index.to(v.device)] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n else v  # noqa: E731
    if isinstance(batch, dict):
        return {k: pick(v) for k, v in kwargs.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(pick(v) for v in args)
    return pick(batch)


def _joint_cross_log_q(pair: Any, batch: Any, guide_trace: Any, local: list[tuple[str, dict, int]], n: int,
                       data_plate: str | None) -> torch.Tensor:
    """``log q(s_i | x_j)`` of the *joint* guide over all local sites ``s = (y, z, ...)``: ``(n_i, n_j)``.

    The guide is run on ``x_j`` with its sites set to ``s_i`` (and its global sites to their
    draw), for every pair at once in chunks of a tiled batch, so dependencies between sites
    (``q(z | x, y)``) are those of the guide itself.
    """
    fixed_global = {name: s["value"] for name, s in guide_trace.nodes.items()
                    if is_random(s) and not s["is_observed"] and _data_index(s, n, data_plate) is None}
    per = max(1, int(sum(s["value"][0].numel() if s["value"].dim() else 1 for _, s, _ in local)))
    chunk = max(1, min(n, 2 ** 22 // max(1, n * per)))
    cross = torch.empty(n, n, dtype=torch.float64)
    for start in range(0, n, chunk):
        js = torch.arange(start, min(n, start + chunk))
        c = len(js)
        tiled = _tile_batch(batch, js.repeat_interleave(n), n)       # datapoint j, n times, for each j
        values = {}
        for name, g, idx in local:
            v = g["value"].expand(g["fn"].batch_shape + g["fn"].event_shape)
            reps = [1] * v.dim()
            reps[idx] = c
            values[name] = v.repeat(*reps)                              # sample i at every (j, i)
        args, kwargs = batch_args(tiled)
        tr = poutine.trace(poutine.condition(pair.guide, data={**fixed_global, **values})).get_trace(*args, **kwargs)
        total = torch.zeros(c, n, dtype=torch.float64)
        for name, g, idx in local:
            site = tr.nodes[name]
            lp = site["fn"].log_prob(site["value"])                     # batch shape with n * c at idx
            lp = lp.movedim(idx, 0)
            lp = lp.reshape(c, n, *lp.shape[1:])
            mask = _mask(g, g["fn"].batch_shape).to(lp.device).movedim(idx, 0).unsqueeze(0)
            lp = torch.where(mask, lp, torch.zeros((), dtype=lp.dtype, device=lp.device))
            total = total.to(lp.device) + lp.reshape(c, n, -1).sum(-1).double()
        cross = cross.to(total.device)
        cross[:, start:start + c] = total.T
    return cross


@torch.no_grad()
def mutual_information(pair: Any, data: Any, batch_size: int = 500, data_plate: str | None = None,
                       entropy: str = "sample") -> float:
    """``I_q(x; z)`` in nats, of all local latent sites jointly, under each batch's aggregate posterior.

    For a batch of ``n`` datapoints with one joint draw ``s_i ~ q(s | x_i)`` each, let
    ``p(j | s_i) = q(s_i | x_j) / sum_l q(s_i | x_l)``: which datapoint a draw came from.
    With ``x`` uniform over the batch, ``I = H(x) - H(x | s) = log n - E_s H(p(. | s))``::

        MI = log n - mean_i H(p(. | s_i))                          (entropy="sample", default)

    This is He et al.'s estimate ``mean_i log q(s_i | x_i) - mean_i log (1/n) sum_j q(s_i | x_j)``
    (which replaces ``H(p(. | s_i))`` by the one draw ``-log p(i | s_i)``) Rao-Blackwellised: the
    same expectation, less variance, and always in ``[0, log n]``. A guide that ignores ``x``
    gets exactly 0.

    ``entropy="analytic"`` is He et al.'s ``calc_mi``: ``-H[q(s | x_i)]`` in closed form in place
    of ``log q(s_i | x_i)``. It pairs an exact term with a one-draw term, so its noise does not
    cancel and near 0 it falls below 0 about half the time; a negative value is noise, and
    is returned as 0. It needs a guide whose local sites are independent given ``x``.

    ``q(s | x_j)`` is the joint guide over all local sites, auxiliary ones included: with one
    local site it is evaluated by broadcasting; with several (``q(y | x) q(z | x, y)``), by
    running the guide on ``x_j`` with its sites set to ``s_i``, for all pairs ``(i, j)``
    (``n`` times the guide's cost on a batch). The estimate is at most ``log n``: use large
    batches. Batches are combined weighted by their size.
    """
    if entropy not in ("sample", "analytic"):
        raise ValueError(f"entropy must be 'sample' or 'analytic', got {entropy!r}")
    total, count = 0.0, 0
    for n, guide_trace, _, batch in _traces(pair, data, batch_size, with_model=False):
        local = _local_sites(guide_trace, n, data_plate, auxiliary=True)
        if not any(is_auxiliary(g) for _, g, _ in local):
            for name, g, _ in local:
                _refuse_point_mass(name, g, guide_trace)
        if len(local) == 1:
            name, g, idx = local[0]
            cross = _cross_log_q(g, idx).double()
        else:
            if entropy == "analytic":
                raise ValueError(f"entropy='analytic' needs one local latent site, the guide has {[s for s, _, _ in local]} "
                                 "(their joint entropy has no closed form); use entropy='sample'")
            cross = _joint_cross_log_q(pair, batch, guide_trace, local, n, data_plate)
        log_norm = torch.logsumexp(cross, dim=1, keepdim=True)
        if entropy == "sample":
            post = (cross - log_norm).exp()                               # p(j | s_i), rows sum to 1
            h = -(post * (cross - log_norm)).nan_to_num().sum(1)           # 0 log 0 = 0
            value = float(math.log(n) - h.mean())
        else:
            name, g, idx = local[0]
            ent = g["fn"].entropy().expand(g["fn"].batch_shape)
            mask = _mask(g, g["fn"].batch_shape).to(ent.device)
            ent = torch.where(mask, ent, torch.zeros((), dtype=ent.dtype, device=ent.device))
            neg_entropy = -_per_datapoint(ent, idx).sum(1).double()
            value = float(neg_entropy.mean() - (log_norm.squeeze(1) - math.log(n)).mean())
        total += max(0.0, min(value, math.log(n))) * n if entropy == "sample" else max(0.0, value) * n
        count += n
    return total / count


# ----------------------------------------------------------------------------- reporting

def collapse_report(pair: Any, data: Any, batch_size: int = 500, threshold: float = ACTIVE_THRESHOLD,
                    data_plate: str | None = None) -> dict[str, Any]:
    """``{"kl", "kl_per_site", "kl_per_dimension", "mi", "active_units", "units"}`` in one dict
    (floats and lists: JSON-ready)."""
    kl = kl_per_dimension(pair, data, batch_size, data_plate)
    activity = unit_activity(pair, data, batch_size, data_plate)
    return {
        "kl": float(sum(v.sum() for v in kl.values())),
        "kl_per_site": {k: float(v.sum()) for k, v in kl.items()},
        "kl_per_dimension": {k: [round(float(x), 6) for x in v] for k, v in kl.items()},
        "mi": mutual_information(pair, data, batch_size, data_plate),
        "active_units": int(sum(int((v > threshold).sum()) for v in activity.values())),
        "units": int(sum(v.numel() for v in activity.values())),
    }


class CollapseDiagnostics(Callback):
    """Log KL (total, per site, per dimension), MI and active units at the end of every
    ``every``-th epoch, computed on ``data`` (usually the validation set).

    Keys in the history: ``"kl"``, ``"kl/<site>"``, ``"kl_per_dim/<site>"`` (a list),
    ``"mi"``, ``"active_units"``.
    """

    def __init__(self, data: Any, every: int = 1, batch_size: int = 500, threshold: float = ACTIVE_THRESHOLD,
                 data_plate: str | None = None, per_dimension: bool = True):
        if data is None:
            raise ValueError("CollapseDiagnostics needs data to evaluate on (e.g. the validation set)")
        validation.check(every=every)
        self.data, self.every, self.batch_size = data, every, batch_size
        self.threshold, self.data_plate, self.per_dimension = threshold, data_plate, per_dimension

    def on_epoch_end(self, state: TrainState) -> None:
        if (state.epoch + 1) % self.every:
            return
        report = collapse_report(state.pair, self.data, self.batch_size, self.threshold, self.data_plate)
        state.logs["kl"] = report["kl"]
        for site, value in report["kl_per_site"].items():
            state.logs[f"kl/{site}"] = value
        if self.per_dimension:
            for site, values in report["kl_per_dimension"].items():
                state.logs[f"kl_per_dim/{site}"] = values
        state.logs["mi"] = report["mi"]
        state.logs["active_units"] = report["active_units"]


@torch.no_grad()
def collapse_summary(pair: Any, data: Any, num_samples: int = 200) -> dict[str, float]:
    """One row of a posterior-collapse table, means over ``data`` in nats per datapoint:
    ``elbo``, ``nll`` (importance-sampled with ``num_samples``), ``kl``, ``mi``, and the
    ``active_units`` of all ``units`` of the local latent sites."""
    from .metrics import elbo_terms, log_likelihood

    terms = elbo_terms(pair, data, batch_size=250)
    nll = -log_likelihood(pair, data, num_samples=num_samples, batch_size=100)
    row = {"elbo": float(terms["elbo"].mean()), "nll": float(nll.mean()),
           "kl": sum(kl_per_site(pair, data).values()), "mi": mutual_information(pair, data, batch_size=500)}
    activity = unit_activity(pair, data)
    row["active_units"] = sum(int((v > ACTIVE_THRESHOLD).sum()) for v in activity.values())
    row["units"] = sum(v.numel() for v in activity.values())
    return row


def plot_collapse(histories: Mapping[str, Any], path: str | Path, title: str | None = None,
                  keys: Sequence[str] = ("kl", "mi", "active_units", "kl_weight")) -> Path:
    """One panel per key (those logged by :class:`CollapseDiagnostics` and ``KLAnnealing``),
    one line per run: ``histories`` maps a label to a ``History`` or a list of epoch dicts."""
    from ..plots import epoch_curves, pyplot, save_figure

    def epochs_of(h: Any) -> list[dict]:
        return list(h.epochs) if hasattr(h, "epochs") else list(h)

    present = [k for k in keys if any(k in e for h in histories.values() for e in epochs_of(h))]
    if not present:
        raise ValueError(f"none of {list(keys)} was logged in these histories (add CollapseDiagnostics to fit())")
    fig, axes = pyplot().subplots(1, len(present), figsize=(3.6 * len(present), 3.0), squeeze=False)
    for ax, key in zip(axes[0], present):
        epoch_curves(ax, histories, key, marker=".")
        ax.set_xlabel("epoch")
        ax.set_title(key)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
