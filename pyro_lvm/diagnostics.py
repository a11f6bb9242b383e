"""Posterior-collapse diagnostics for any model/guide pair.

Each function traces the guide on batches of ``data`` (a tensor, tuple of tensors, Dataset or
DataLoader, batched by the convention of :mod:`pyro_lvm.base`), replays the model where the
prior is needed, and reads the latent sites' distributions. Nothing is specific to a model.

* :func:`kl_per_dimension` / :func:`kl_per_site`: ``KL(q(z|x) || p(z))`` averaged over datapoints;
* :func:`active_units`: a unit (one coordinate of a latent site, per datapoint) is active
  when ``Var_x(E_q[z_u | x]) > 0.01`` (He et al. 2019, after Burda et al. 2016);
* :func:`mutual_information`: ``I_q(x; z) = E_x[E_q log q(z|x)] - E_q[log q(z)]`` with the
  aggregate posterior ``q(z) = (1/n) sum_j q(z | x_j)`` estimated on each batch of ``n``
  (He et al.'s ``calc_mi``), averaged over batches weighted by their size;
* :class:`CollapseDiagnostics`: a ``fit()`` callback logging them per epoch;
* :func:`plot_collapse`: curves of KL, MI, active units and the KL weight per epoch.

Which dimension is "the datapoint" is found per site as the one plate whose size is the
batch size (or the plate named ``data_plate``). Every latent site of the guide must sit in it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pyro.poutine as poutine
import torch

from . import validation
from .base import batch_args, batch_plate_frames, batch_size as _batch_size
from .infer.handlers import is_latent_site
from .infer.objectives import site_kl
from .train import Callback, TrainState, evaluation_batches

ACTIVE_THRESHOLD = 0.01


def _data_index(site: dict, n: int, data_plate: str | None) -> int:
    """Index of the datapoint dimension within the site's batch shape."""
    frames = batch_plate_frames(site["cond_indep_stack"], n, data_plate)
    if len(frames) != 1:
        what = f"the plate {data_plate!r}" if data_plate else f"exactly one plate of the batch size {n}"
        raise ValueError(f"latent site {site['name']!r} is not inside {what} (its plates: "
                         f"{[(f.name, f.size) for f in site['cond_indep_stack']]}); collapse diagnostics need "
                         "every latent site in the data plate (pass data_plate='<name>')")
    return len(site["fn"].batch_shape) + frames[0].dim


def _traces(pair: Any, data: Any, batch_size: int, with_model: bool) -> Iterator[tuple[int, Any, Any]]:
    data = validation.inputs(pair, data, batch_size=batch_size)
    for batch in evaluation_batches(pair, data, batch_size):
        args, kwargs = batch_args(batch)
        with torch.no_grad():
            guide_trace = poutine.trace(pair.guide).get_trace(*args, **kwargs)
            model_trace = (poutine.trace(poutine.replay(pair.model, trace=guide_trace)).get_trace(*args, **kwargs)
                           if with_model else None)
        latent = [name for name, s in guide_trace.nodes.items() if is_latent_site(s)]
        if not latent:
            raise ValueError("the guide has no latent sample sites: nothing to diagnose")
        yield _batch_size(batch), guide_trace, model_trace


def _per_datapoint(t: torch.Tensor, idx: int, batch_rank: int) -> torch.Tensor:
    """``(batch_shape + rest)`` -> ``(n, units)`` with the datapoint dim first."""
    t = t.movedim(idx, 0)
    return t.reshape(t.shape[0], -1)


# ----------------------------------------------------------------------------- KL

@torch.no_grad()
def kl_per_dimension(pair: Any, data: Any, batch_size: int = 256, data_plate: str | None = None
                     ) -> dict[str, torch.Tensor]:
    """Mean KL per datapoint of every latent site, per unit: ``{site: (units,)}`` in nats.

    A unit is one coordinate of the site (its event dimensions, and any plate other than the
    data plate). Sites whose KL does not split per dimension (e.g. ``MultivariateNormal``)
    get one entry, their whole KL. Analytic where PyTorch knows the KL, one-sample Monte
    Carlo otherwise.
    """
    sums: dict[str, torch.Tensor] = {}
    total = 0
    for n, guide_trace, model_trace in _traces(pair, data, batch_size, with_model=True):
        for name, g in guide_trace.nodes.items():
            if not is_latent_site(g):
                continue
            if name not in model_trace.nodes:
                raise ValueError(f"guide site {name!r} is not a site of the model")
            p = model_trace.nodes[name]["fn"]
            idx = _data_index(g, n, data_plate)
            try:
                elem, _ = site_kl(name, g["fn"], p, g["value"], per_dimension=True)
            except ValueError:
                elem, _ = site_kl(name, g["fn"], p, g["value"], per_dimension=False)
            part = _per_datapoint(elem, idx, len(g["fn"].batch_shape)).sum(0)
            sums[name] = sums[name] + part if name in sums else part
        total += n
    return {k: v / total for k, v in sums.items()}


def kl_per_site(pair: Any, data: Any, batch_size: int = 256, data_plate: str | None = None) -> dict[str, float]:
    """Mean KL per datapoint of each latent site (nats): ``{site: float}``."""
    return {k: float(v.sum()) for k, v in kl_per_dimension(pair, data, batch_size, data_plate).items()}


# ----------------------------------------------------------------------------- active units

@torch.no_grad()
def posterior_means(pair: Any, data: Any, batch_size: int = 256, data_plate: str | None = None,
                    num_samples: int = 100) -> dict[str, torch.Tensor]:
    """``E_q[z | x]`` of every latent site for every datapoint: ``{site: (N, units)}``.

    Uses the guide distribution's ``.mean``; where that is not implemented, the average of
    ``num_samples`` draws.
    """
    out: dict[str, list[torch.Tensor]] = {}
    for n, guide_trace, _ in _traces(pair, data, batch_size, with_model=False):
        for name, g in guide_trace.nodes.items():
            if not is_latent_site(g):
                continue
            fn = g["fn"]
            try:
                mean = fn.mean
            except NotImplementedError:
                with torch.no_grad():
                    mean = fn.sample((num_samples,)).float().mean(0)
            mean = mean.expand(fn.batch_shape + fn.event_shape)
            out.setdefault(name, []).append(_per_datapoint(mean, _data_index(g, n, data_plate), len(fn.batch_shape)))
    return {k: torch.cat(v) for k, v in out.items()}


def unit_activity(pair: Any, data: Any, batch_size: int = 256, data_plate: str | None = None) -> dict[str, torch.Tensor]:
    """``Var_x(E_q[z_u | x])`` per unit of each latent site: ``{site: (units,)}`` (unbiased variance)."""
    means = posterior_means(pair, data, batch_size, data_plate)
    for name, m in means.items():
        if m.shape[0] < 2:
            raise ValueError(f"active units need at least 2 datapoints, got {m.shape[0]}")
    return {name: m.double().var(dim=0) for name, m in means.items()}


def active_units(pair: Any, data: Any, threshold: float = ACTIVE_THRESHOLD, batch_size: int = 256,
                 data_plate: str | None = None, per_site: bool = False) -> int | dict[str, int]:
    """Number of units with ``Var_x(E_q[z_u | x]) > threshold`` (He et al. 2019), summed over
    latent sites (``per_site=True``: ``{site: count}``)."""
    validation.check(threshold=threshold)
    counts = {name: int((v > threshold).sum()) for name, v in unit_activity(pair, data, batch_size, data_plate).items()}
    return counts if per_site else sum(counts.values())


# ----------------------------------------------------------------------------- mutual information

def _cross_log_q(g: dict, idx: int) -> torch.Tensor:
    """``log q(z_i | x_j)`` for all pairs of datapoints of one site: ``(n_i, n_j)``."""
    fn, z = g["fn"], g["value"]
    b = len(fn.batch_shape)
    z = z.expand(fn.batch_shape + fn.event_shape)
    # Put the samples' datapoint dim first and a size-1 dim where q's datapoint dim is, so that
    # log_prob broadcasts every sample z_i against every datapoint's q(. | x_j).
    z_cross = z.movedim(idx, 0).unsqueeze(idx + 1)
    lp = fn.log_prob(z_cross)                          # (n_i, *batch_shape) with n_j at idx + 1
    lp = lp.movedim(idx + 1, 1)
    return lp.reshape(lp.shape[0], lp.shape[1], -1).sum(-1) if b > 1 else lp


@torch.no_grad()
def mutual_information(pair: Any, data: Any, batch_size: int = 500, data_plate: str | None = None,
                       entropy: str = "sample") -> float:
    """He et al.'s estimate of ``I_q(x; z)`` in nats (all latent sites jointly).

    For a batch of ``n`` datapoints, with one sample ``z_i ~ q(z | x_i)`` each::

        MI = mean_i log q(z_i | x_i) - mean_i log (1/n) sum_j q(z_i | x_j)

    ``entropy="analytic"`` replaces the first term by ``-H[q(z | x_i)]`` in closed form, as in
    He et al.'s ``calc_mi``; the default uses the same samples in both terms, so a guide that
    ignores ``x`` gets exactly 0. The estimate is at most ``log n``: use large batches.
    Batches are combined weighted by their size. The joint ``log q`` is the sum over sites, which
    is exact for guides whose sites are conditionally independent given ``x``.
    """
    if entropy not in ("sample", "analytic"):
        raise ValueError(f"entropy must be 'sample' or 'analytic', got {entropy!r}")
    total, count = 0.0, 0
    for n, guide_trace, _ in _traces(pair, data, batch_size, with_model=False):
        cross = torch.zeros(n, n, dtype=torch.float64)
        neg_entropy = torch.zeros(n, dtype=torch.float64)
        for name, g in guide_trace.nodes.items():
            if not is_latent_site(g):
                continue
            idx = _data_index(g, n, data_plate)
            c = _cross_log_q(g, idx).double()
            cross, neg_entropy = cross.to(c.device), neg_entropy.to(c.device)  # follow the guide's device
            cross = cross + c
            if entropy == "analytic":
                h = g["fn"].entropy().expand(g["fn"].batch_shape)
                neg_entropy = neg_entropy - _per_datapoint(h, idx, len(g["fn"].batch_shape)).sum(1).double()
            else:
                neg_entropy = neg_entropy + c.diagonal()
        log_qz = torch.logsumexp(cross, dim=1) - math.log(n)
        total += float(neg_entropy.mean() - log_qz.mean()) * n
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


def plot_collapse(histories: Mapping[str, Any], path: str | Path, title: str | None = None,
                  keys: Sequence[str] = ("kl", "mi", "active_units", "kl_weight")) -> Path:
    """One panel per key (those logged by :class:`CollapseDiagnostics` and ``KLAnnealing``),
    one line per run: ``histories`` maps a label to a ``History`` or a list of epoch dicts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def epochs_of(h: Any) -> list[dict]:
        return list(h.epochs) if hasattr(h, "epochs") else list(h)

    present = [k for k in keys if any(k in e for h in histories.values() for e in epochs_of(h))]
    if not present:
        raise ValueError(f"none of {list(keys)} was logged in these histories (add CollapseDiagnostics to fit())")
    fig, axes = plt.subplots(1, len(present), figsize=(3.6 * len(present), 3.0), squeeze=False)
    for ax, key in zip(axes[0], present):
        for label, h in histories.items():
            pts = [(e["epoch"] + 1, e[key]) for e in epochs_of(h) if key in e]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=label)
        ax.set_xlabel("epoch")
        ax.set_title(key)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
