"""Compare gradient estimators for discrete latents on any model/guide pair.

:func:`compare_estimators` takes a pair (plain Pyro, discrete sites written as ``Bernoulli``,
``OneHotCategorical`` or ``Categorical``, continuous sites alongside allowed), one batch of
data and a list of estimator names from :data:`~pyro_lvm.infer.discrete.estimators.ESTIMATORS` (by
default every one that applies to the pair, checked before anything is measured), and
measures at the pair's current parameters, for each estimator (and each temperature of
those that have one):

* the objective: mean ELBO estimate over ``repeats`` evaluations and its standard error
  (and, for ``vimco``, its own S-sample bound);
* the gradient over ``repeats`` draws: its mean, the trace of its covariance (total and per
  parameter group);
* the bias of the mean gradient against a reference, with a 95% interval on its norm and
  the largest per-coordinate z-score. The reference is the *exact* gradient by enumeration
  when every guide latent is discrete and the joint support is small enough; for a guide
  with continuous sites too, the mean of many draws of ``"enumerate"`` (discrete sites summed
  exactly, continuous ones sampled); when the discrete part is too large, the mean of many
  draws of ``"rloo"`` (unbiased). A sampled reference's own noise is removed from the bias
  and widens its interval; the table says which reference was used;
* CPU and wall time per loss-and-gradient evaluation and memory per step (bytes saved for
  backward on CPU; peak allocated memory on CUDA);
* optionally, training curves (ELBO against time) from the same starting parameters.

The result (:class:`Comparison`) writes a markdown/CSV/JSON table and plots (variance per
estimator, variance and bias against temperature, ELBO against time).

Example::

    from pyro_lvm.models.categorical_mixture import CategoricalMixture
    from pyro_lvm.infer.discrete.comparison import compare_estimators

    x = CategoricalMixture.simulate(200, n_classes=10)
    cmp = compare_estimators(CategoricalMixture(10), x, repeats=100, temperatures=[1.0, 0.5])
    print(cmp.to_markdown())
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pyro
import torch

from ... import validation
from ...base import batch_args, check_pair
from ...traces import discover_parameters, guide_and_model_traces, restore, snapshot
from ...traces import max_plate_nesting as plate_nesting_of
from .estimators import (CV_PREFIX, DiscreteELBO, guide_latents, check_temperature, estimator_applicability,
                         support_size)
from .registry import ESTIMATORS, TEMPERATURE, check_estimator
from .particles import side_trace


def default_estimators(pair: Any, batch: Any, max_enum_size: float = 1e5) -> list[str]:
    """The estimators that apply to ``pair``'s guide sites (see :func:`~pyro_lvm.infer.discrete.estimators.estimator_applicability`)."""
    args, kwargs = batch_args(batch)
    return [n for n, why in estimator_applicability(pair.model, pair.guide, *args, max_enum_size=max_enum_size,
                                                    **kwargs).items() if not why]


# ----------------------------------------------------------------------------- feasibility

def enumeration_size(pair: Any, batch: Any) -> tuple[float, list[str]]:
    """``(joint number of discrete values per datapoint, names of continuous latent sites)``.

    Traces the guide once and multiplies the support sizes of its unobserved discrete sites
    (``K ** m`` for ``m`` categorical variables folded into one site's event).
    """
    args, kwargs = batch_args(batch)
    discrete, continuous = guide_latents(pair.guide, args, kwargs)
    return math.prod(support_size(fn) for fn in discrete.values()) if discrete else 1.0, continuous


def check_enumerable(pair: Any, batch: Any, max_enum_size: float = 1e5) -> float:
    """Return the latent-space size if exact enumeration of the guide is possible, else raise.

    Raises ``ValueError`` naming the continuous latent sites (their expectation has no finite
    sum) or the number of joint values when it exceeds ``max_enum_size``.
    """
    size, continuous = enumeration_size(pair, batch)
    if continuous:
        raise ValueError(f"cannot enumerate: latent site(s) {continuous} are continuous; exact "
                         "enumeration needs every guide latent to be discrete")
    if size > max_enum_size:
        raise ValueError(f"cannot enumerate: the guide's discrete latents have {size:.3g} joint values "
                         f"per datapoint, more than max_enum_size={max_enum_size:.3g}")
    return size


# ----------------------------------------------------------------------------- results

def _grouped_refusals(skipped: dict[str, str]) -> dict[str, list[str]]:
    """``{reason: [estimators]}``: the estimators refused for the same reason, named once.

    A refusal names its estimator (``"the 'gumbel' estimator does not apply ..."``); that name
    is taken out so that six relaxations refused at one Categorical site read as one line.
    """
    groups: dict[str, list[str]] = {}
    for name, why in skipped.items():
        groups.setdefault(why.replace(f"the {name!r} estimator", "the estimator"), []).append(name)
    return groups


@dataclass
class EstimatorResult:
    """One row of a comparison; ``nan`` where a quantity does not apply."""

    estimator: str
    temperature: float
    elbo: float
    elbo_se: float
    grad_norm: float
    trace_cov: float
    trace_cov_groups: dict[str, float]
    bias_norm: float = math.nan       # debiased: |E g - g_ref| with the noise of the means removed
    relative_bias: float = math.nan
    bias_ci: tuple[float, float] = (math.nan, math.nan)
    noise_floor: float = math.nan
    max_abs_z: float = math.nan
    ms_per_step: float = math.nan     # process CPU time per loss-and-gradient (median)
    wall_ms_per_step: float = math.nan
    memory_mb: float = math.nan
    curve: list[dict[str, float]] = field(default_factory=list)
    objective: float = math.nan       # the estimator's own objective (the S-sample bound for vimco)
    objective_name: str = "ELBO"
    model_evaluations: int = 1        # model evaluations per datapoint per step
    learned: dict[str, dict[str, float]] = field(default_factory=dict)  # rebar/relax after warm-up
    note: str = ""


@dataclass
class Comparison:
    """Results of :func:`compare_estimators` plus what they were measured on.

    ``reference`` says what the bias is measured against ("exact gradient by enumeration",
    "mean of N draws of 'enumerate' ...", or "" for none); ``skipped`` maps the estimators
    left out of a default list to the reason they do not apply.
    """

    rows: list[EstimatorResult]
    repeats: int
    latent_size: float
    exact_available: bool
    exact_grad_norm: float
    exact_elbo: float
    groups: dict[str, list[str]]
    reason_no_exact: str = ""
    reference: str = ""
    reference_grad_norm: float = math.nan
    reference_elbo: float = math.nan
    skipped: dict[str, str] = field(default_factory=dict)

    def row(self, estimator: str, temperature: float | None = None) -> EstimatorResult:
        """The row of one estimator (and temperature, for those that have one)."""
        for r in self.rows:
            if r.estimator == estimator and (temperature is None or r.temperature == temperature):
                return r
        raise KeyError(f"no row for estimator {estimator!r} at temperature {temperature!r}")

    def table(self) -> list[dict[str, Any]]:
        """Flat rows for CSV/markdown (curves left out)."""
        out = []
        for r in self.rows:
            d = {k: v for k, v in asdict(r).items() if k not in ("curve", "trace_cov_groups", "bias_ci", "learned")}
            d["bias_ci_low"], d["bias_ci_high"] = r.bias_ci
            for g, v in r.trace_cov_groups.items():
                d[f"trace_cov[{g}]"] = v
            for site, values in r.learned.items():
                for k, v in values.items():
                    d[f"learned[{site}].{k}"] = v
            out.append(d)
        return out

    def to_markdown(self) -> str:
        head = ("| estimator | tau | evals | ELBO ± SE | tr Cov | relative bias [95% CI] | max abs z | CPU ms/step "
                "| memory MB |")
        lines = [head, "|" + "---|" * 9]
        notes = []
        for r in self.rows:
            tau = f"{r.temperature:g}" if r.estimator in TEMPERATURE else "–"
            if r.learned:
                tau += " → " + ", ".join(f"{v['temperature']:.3g}" for v in r.learned.values())
            if self.reference and math.isfinite(r.relative_bias):
                gn = self.reference_grad_norm or 1.0
                bias = f"{r.relative_bias:.3f} [{r.bias_ci[0] / gn:.3f}, {r.bias_ci[1] / gn:.3f}]"
                z = f"{r.max_abs_z:.1f}" if math.isfinite(r.max_abs_z) else "–"
            else:
                bias, z = "n/a", "n/a"
            name = r.estimator + (f" ({len(notes) + 1})" if r.note else "")
            if r.note:
                notes.append(r.note)
            elbo = f"{r.elbo:.3f} ± {r.elbo_se:.3f}"
            if r.objective_name != "ELBO":
                elbo += f" (bound {r.objective:.3f})"
            lines.append(f"| {name} | {tau} | {r.model_evaluations} | {elbo} | {r.trace_cov:.4g} | {bias} | {z} "
                         f"| {r.ms_per_step:.2f} | {r.memory_mb:.3g} |")
        lines.append("")
        if self.exact_available:
            ref = (f"bias against the exact gradient by enumeration (exact ELBO {self.exact_elbo:.3f}, gradient "
                   f"norm {self.exact_grad_norm:.4g})")
        elif self.reference:
            ref = f"bias against {self.reference} (its gradient norm {self.reference_grad_norm:.4g})"
        else:
            ref = f"no bias reference ({self.reason_no_exact})"
        lines.append(f"{self.repeats} repeats; {ref}; latent space {self.latent_size:.3g} values per datapoint.")
        for i, note in enumerate(notes, 1):
            lines.append(f"({i}) {note}")
        if self.skipped:
            lines.append("Not applicable here:")
            lines.extend(f"* {', '.join(names)}: {why}" for why, names in _grouped_refusals(self.skipped).items())
        return "\n".join(lines)

    def to_csv(self, path: str | Path | None = None) -> str:
        rows = self.table()
        keys = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        if path is not None:
            Path(path).write_text(buf.getvalue())
        return buf.getvalue()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return json.loads(json.dumps(d, default=float))

    def to_json(self, path: str | Path) -> None:
        from ...checkpoint import atomic_json_save

        atomic_json_save(self.to_dict(), path)

    def plot(self, out_dir: str | Path) -> list[Path]:
        """Save ``variance_by_estimator.png`` (every row, with the bias when there is a reference),
        ``variance_vs_temperature.png`` (rows with a temperature) and ``elbo_vs_time.png`` (curves)."""
        from ...plots import pyplot

        plt = pyplot()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        saved = [self._plot_variance_by_estimator(plt, out_dir / "variance_by_estimator.png")]
        if any(r.estimator in TEMPERATURE for r in self.rows):
            saved.append(self._plot_variance_vs_temperature(plt, out_dir / "variance_vs_temperature.png"))
        if any(r.curve for r in self.rows):
            saved.append(self._plot_elbo_vs_time(plt, out_dir / "elbo_vs_time.png"))
        return saved

    def _has_bias(self) -> bool:
        return bool(self.reference) and any(math.isfinite(r.relative_bias) for r in self.rows)

    @staticmethod
    def _label(r: EstimatorResult) -> str:
        return r.estimator + (f" τ={r.temperature:g}" if r.estimator in TEMPERATURE else "")

    @staticmethod
    def _save(fig: Any, path: Path) -> Path:
        from ...plots import save_figure

        fig.tight_layout()
        return save_figure(fig, path)

    def _plot_variance_by_estimator(self, plt: Any, path: Path) -> Path:
        """Bars: the trace of the gradient covariance per row, and its relative bias (95% CI)."""
        has_bias = self._has_bias()
        fig, axes = plt.subplots(1, 2 if has_bias else 1, figsize=(11 if has_bias else 6, 0.8 + 0.32 * len(self.rows)),
                                 squeeze=False)
        names = [self._label(r) for r in self.rows]
        axes[0, 0].barh(names, [max(r.trace_cov, 1e-30) for r in self.rows], color="tab:blue")
        axes[0, 0].set(xscale="log", xlabel="trace of gradient covariance")
        axes[0, 0].invert_yaxis()
        if has_bias:
            axes[0, 1].barh(names, [r.relative_bias if math.isfinite(r.relative_bias) else 0 for r in self.rows],
                            xerr=[[max(r.relative_bias - r.bias_ci[0] / (self.reference_grad_norm or 1), 0)
                                   if math.isfinite(r.relative_bias) else 0 for r in self.rows],
                                  [max(r.bias_ci[1] / (self.reference_grad_norm or 1) - r.relative_bias, 0)
                                   if math.isfinite(r.relative_bias) else 0 for r in self.rows]],
                            color="tab:orange")
            axes[0, 1].set(xlabel="relative bias |E g - g_ref| / |g_ref| (95% CI)")
            axes[0, 1].invert_yaxis()
        return self._save(fig, path)

    def _plot_variance_vs_temperature(self, plt: Any, path: Path) -> Path:
        """Lines: variance (and bias) of each tempered estimator against its temperature, with
        the untempered estimators' variances as dashed levels."""
        has_bias = self._has_bias()
        tempered = [r for r in self.rows if r.estimator in TEMPERATURE]
        fig, axes = plt.subplots(1, 2 if has_bias else 1, figsize=(10 if has_bias else 5, 3.6), squeeze=False)
        for name in dict.fromkeys(r.estimator for r in tempered):
            rs = sorted((r for r in tempered if r.estimator == name), key=lambda r: r.temperature)
            axes[0, 0].plot([r.temperature for r in rs], [r.trace_cov for r in rs], "o-", label=name)
            if has_bias:
                axes[0, 1].plot([r.temperature for r in rs], [r.relative_bias for r in rs], "o-", label=name)
        for r in self.rows:
            if r.estimator not in TEMPERATURE and r.trace_cov > 0:
                axes[0, 0].axhline(r.trace_cov, ls="--", lw=1, color="gray")
                axes[0, 0].annotate(r.estimator, (axes[0, 0].get_xlim()[0], r.trace_cov), fontsize=7)
        axes[0, 0].set(xlabel="temperature (initial, for rebar/relax)", ylabel="trace of gradient covariance",
                       yscale="log")
        axes[0, 0].legend(fontsize=8)
        if has_bias:
            axes[0, 1].set(xlabel="temperature", ylabel="relative bias |E g - g_ref| / |g_ref|")
            axes[0, 1].legend(fontsize=8)
        return self._save(fig, path)

    def _plot_elbo_vs_time(self, plt: Any, path: Path) -> Path:
        """The training curves: ELBO against training time, one line per row that has one."""
        fig, ax = plt.subplots(figsize=(7.5, 3.8))
        ax.set_prop_cycle(color=plt.cm.tab20.colors)  # many curves: 20 distinct colours
        for r in self.rows:
            if r.curve:
                ax.plot([c["time_s"] for c in r.curve], [c["elbo"] for c in r.curve], label=self._label(r))
        ax.set(xlabel="training time (s)", ylabel="ELBO" + (" (exact)" if self.exact_available else " (MC)"))
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        return self._save(fig, path)


# ----------------------------------------------------------------------------- the harness

def default_groups(names: Iterable[str]) -> dict[str, list[str]]:
    """Group parameters by the first component of their name (``encoder.0.weight`` -> ``encoder``)."""
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(n.split(".")[0], []).append(n)
    return groups


def _is_estimator_state(name: str) -> bool:
    """Parameters an estimator trains for itself (baselines, control variates): not measured."""
    return "baseline" in name or name.startswith(CV_PREFIX)


def _flat_grad(loss: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


class _SavedBytes:
    """Counts the bytes of distinct tensors autograd saves for backward (CPU memory per step)."""

    def __init__(self) -> None:
        self.bytes = 0
        self._seen: set[int] = set()

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        try:
            key = t.untyped_storage().data_ptr()
            if key not in self._seen:
                self._seen.add(key)
                self.bytes += t.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t


def bias_interval(grads: torch.Tensor, exact: torch.Tensor, z: float = 1.96,
                  reference_draws: torch.Tensor | None = None) -> tuple[float, float, float]:
    """Estimate of ``|E g - g_ref|`` from draws ``grads (R, P)``, with a normal-theory 95% interval.

    ``exact`` is the reference gradient ``(P,)``. The mean of R draws is ``d ~ N(b, S/R)``, so
    ``T = |d|^2 - tr(S)/R`` estimates ``|b|^2`` without the noise floor (an unbiased estimator
    scores near 0, not near ``sqrt(tr S / R)``), with variance ``2 |S/R|_F^2 + 4 d'(S/R)d``.
    When the reference is itself the mean of draws ``reference_draws (R', P)`` (passed with
    ``exact`` their mean), its noise ``S'/R'`` is removed and added in the same way. Returns
    ``(sqrt(T), sqrt(T - z sd), sqrt(T + z sd))``, each clipped at 0. Uses only R x R products.
    """
    parts = [grads] if reference_draws is None else [grads, reference_draws]
    centred = [(g - g.mean(0)) / math.sqrt(g.shape[0] * (g.shape[0] - 1)) for g in parts]  # C'C = S / R
    d = grads.mean(0) - exact
    noise = sum(float(c.pow(2).sum()) for c in centred)                       # tr(S/R) (+ tr(S'/R'))
    t = float(d.pow(2).sum()) - noise
    frob2 = sum(float((a @ b.T).pow(2).sum()) for a in centred for b in centred)   # |S/R + S'/R'|_F^2
    dsd = sum(float((c @ d).pow(2).sum()) for c in centred)
    sd = math.sqrt(max(2 * frob2 + 4 * dsd, 0.0))
    root = lambda v: math.sqrt(max(v, 0.0))  # noqa: E731
    return root(t), root(t - z * sd), root(t + z * sd)


def _train_curve(pair: Any, batch: Any, objective: Any, evaluate: Callable[[], float], steps: int, every: int,
                 lr: float, train_params: list[torch.Tensor]) -> list[dict[str, float]]:
    args, kwargs = batch_args(batch)
    opt = torch.optim.Adam(train_params, lr=lr)
    curve = [{"step": 0, "time_s": 0.0, "elbo": evaluate()}]
    elapsed = 0.0
    for step in range(1, steps + 1):
        t = time.perf_counter()
        loss = objective.differentiable_loss(pair.model, pair.guide, *args, **kwargs)
        if not torch.isfinite(loss):
            curve.append({"step": step, "time_s": elapsed, "elbo": math.nan, "diverged": 1.0})
            break
        if step == 1:  # parameters an estimator makes at its first call (control variates) train too
            train_params = train_params + _estimator_state(train_params)
            opt = torch.optim.Adam(train_params, lr=lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        elapsed += time.perf_counter() - t
        if step % every == 0 or step == steps:
            curve.append({"step": step, "time_s": elapsed, "elbo": evaluate()})
    return curve


def _estimator_state(known: list[torch.Tensor]) -> list[torch.Tensor]:
    """Param-store tensors an estimator made for itself (control variates), not yet in ``known``."""
    out = []
    for name in pyro.get_param_store().keys():
        if name.startswith(CV_PREFIX):
            p = pyro.param(name).unconstrained()
            if all(p is not q for q in known):
                out.append(p)
    return out


def _warm_up(pair: Any, objective: Any, state_params: list[torch.Tensor], batch: Any, steps: int) -> None:
    """Fill running-average baselines and fit baseline networks and control variates (Adam)
    before measuring; the pair's own parameters stay fixed."""
    args, kwargs = batch_args(batch)
    opt = None
    for _ in range(steps):
        loss = objective.differentiable_loss(pair.model, pair.guide, *args, **kwargs)
        if opt is None:
            state_params = state_params + _estimator_state(state_params)
            opt = torch.optim.Adam(state_params, lr=1e-2) if state_params else False
        if opt:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def _draw(pair: Any, objective: Any, params: list[torch.Tensor], batch: Any, repeats: int
          ) -> tuple[torch.Tensor, list[float], list[float], tuple[list[float], list[float]], float]:
    """``repeats`` gradients ``(R, P)`` (float64), ELBO and own-objective values, (CPU, wall) seconds, MiB."""
    args, kwargs = batch_args(batch)
    grads, values, own, times, walls = [], [], [], [], []
    memory = _SavedBytes()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    for i in range(repeats):
        if i == 1:
            pyro.enable_validation(False)  # argument checks are slow; the first call made them
        t, w = time.process_time(), time.perf_counter()
        if i == 0:
            with torch.autograd.graph.saved_tensors_hooks(memory.pack, memory.unpack):
                loss = objective.differentiable_loss(pair.model, pair.guide, *args, **kwargs)
        else:
            loss = objective.differentiable_loss(pair.model, pair.guide, *args, **kwargs)
        grads.append(_flat_grad(loss, params))
        times.append(time.process_time() - t)
        walls.append(time.perf_counter() - w)
        own.append(-float(loss.detach()))
        values.append(objective.last_stats.get("elbo", own[-1]) if isinstance(objective, DiscreteELBO) else own[-1])
    mem = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else memory.bytes
    return torch.stack(grads).double(), values, own, (times, walls), mem / 2 ** 20


def _summarise(name: str, tau: float, g: torch.Tensor, values: list[float], own: list[float],
               times: tuple[list[float], list[float]], mem: float,
               groups: dict[str, list[str]], offsets: dict[str, tuple[int, int]],
               reference: torch.Tensor | None, reference_draws: torch.Tensor | None) -> EstimatorResult:
    """One table row from the draws ``g (R, P)``."""
    r = g.shape[0]
    mean, var = g.mean(0), g.var(0)
    row = EstimatorResult(
        estimator=name, temperature=tau,
        elbo=statistics.fmean(values), elbo_se=statistics.stdev(values) / math.sqrt(r),
        grad_norm=float(mean.norm()), trace_cov=float(var.sum()),
        trace_cov_groups={gname: float(sum(var[offsets[n][0]:offsets[n][1]].sum() for n in members))
                          for gname, members in groups.items()},
        ms_per_step=1000 * statistics.median(times[0]), wall_ms_per_step=1000 * statistics.median(times[1]),
        memory_mb=mem, objective=statistics.fmean(own))
    if reference is not None:
        ref = reference.double()
        diff = mean - ref
        row.bias_norm, low, high = bias_interval(g, ref, reference_draws=reference_draws)
        row.relative_bias = row.bias_norm / max(float(ref.norm()), 1e-30)
        row.bias_ci = (low, high)
        se2 = var / r + (reference_draws.var(0) / reference_draws.shape[0] if reference_draws is not None else 0)
        row.noise_floor = math.sqrt(float(se2.sum()))
        se = se2.sqrt() if isinstance(se2, torch.Tensor) else torch.zeros_like(var)
        z = diff.abs()[se > 0] / se[se > 0]
        # no variance at all (enumeration against the exact gradient): 0 if the mean is exact, inf otherwise
        row.max_abs_z = float(z.max()) if z.numel() else (0.0 if float(diff.abs().max()) < 1e-6 else math.inf)
    return row


def _choose_reference(pair: Any, batch: Any, exact: bool | None, size: float, continuous: list[str],
                      max_enum_size: float, applicable: dict[str, str]) -> tuple[str, str]:
    """``(kind, why-not-exact)``: kind is ``"exact"``, ``"enumerate"``, ``"rloo"`` or ``""`` (none)."""
    if size > max_enum_size:
        why = f"{size:.3g} joint values > max_enum_size={max_enum_size:.3g}"
    elif continuous:
        why = f"continuous latent sites {continuous}"
    else:
        why = ""
    if exact and why:
        raise ValueError(f"exact gradient requested but enumeration is infeasible: {why}")
    if exact is False:
        return "", "not requested (exact=False)"
    if not why:
        return "exact", ""
    if size <= max_enum_size and not applicable.get("enumerate"):
        return "enumerate", why
    if not applicable.get("rloo"):
        return "rloo", why
    return "", why


def compare_estimators(
    pair: Any,
    batch: Any,
    estimators: Sequence[str] | None = None,
    *,
    temperatures: Sequence[float] = (1.0, 0.5),
    repeats: int = 100,
    exact: bool | None = None,
    reference_repeats: int | None = None,
    num_particles: int | dict[str, int] | None = None,
    max_enum_size: float = 1e5,
    max_plate_nesting: int | None = None,
    groups: dict[str, list[str]] | None = None,
    warmup: int = 20,
    curve_steps: int = 0,
    curve_every: int = 10,
    curve_lr: float = 1e-2,
    curve_particles: int = 20,
    seed: int = 0,
) -> Comparison:
    """Measure ELBO, gradient variance, bias, time and memory of each estimator on ``pair``.

    Args:
        pair: a model/guide pair whose guide has discrete sites (continuous ones alongside are fine).
        batch: one batch (tensor, tuple or dict, as :func:`pyro_lvm.fit` passes it).
        estimators: names from :data:`~pyro_lvm.infer.discrete.estimators.ESTIMATORS`; default every one that
            applies to the pair (the others are listed in ``Comparison.skipped`` with the reason).
            A name given here that does not apply is refused before anything is measured.
        temperatures: estimators with a temperature are measured at each of these.
        repeats: R gradient draws per estimator (>= 2).
        exact: ``None`` = a bias reference when one can be had (exact enumeration; else the mean
            of ``reference_repeats`` draws of ``"enumerate"`` for a guide with continuous sites,
            or of ``"rloo"`` when the discrete part is too large to enumerate); ``True`` = the
            exact gradient, required (raises with the reason if infeasible); ``False`` = none.
        reference_repeats: draws behind a sampled reference (default ``4 * repeats``).
        num_particles: for every estimator, or ``{name: n}``; default each estimator's own.
        max_enum_size: enumeration limit in joint values per datapoint.
        groups: ``{group: [parameter names]}``; default by the first name component.
        warmup: steps before measuring ``score-function-baseline``, ``rebar`` and ``relax``: their
            baselines and control variates take Adam steps (the pair's parameters stay fixed).
        curve_steps: if > 0, also train each estimator for this many Adam steps (lr
            ``curve_lr``) from the same start and record the ELBO every ``curve_every`` steps.
        curve_particles: Monte Carlo particles for the ELBO of a curve when it is not exact.
        seed: seeds Pyro before each estimator, so every one sees the same random stream.

    The pair's parameters and the param store are restored after each estimator.
    """
    check_pair(pair)
    validation.check(repeats=repeats, seed=seed)
    temperatures = [check_temperature(t) for t in temperatures]
    if reference_repeats is None:
        reference_repeats = 4 * repeats
    validation.Integer(2)("reference_repeats", reference_repeats)
    args, kwargs = batch_args(batch)
    applicable = estimator_applicability(pair.model, pair.guide, *args, max_enum_size=max_enum_size, **kwargs)
    explicit = estimators is not None
    estimators, skipped = _chosen_estimators(estimators, applicable)
    size, continuous = enumeration_size(pair, batch)
    kind, reason = _choose_reference(pair, batch, exact, size, continuous, max_enum_size, applicable)
    with side_trace():
        # One look before the snapshot: every pyro.param site exists then, the model's too. One
        # created after it would be dropped at each restore and drawn anew (pyro.param("w",
        # torch.randn(...))), so each estimator would be measured at other parameter values.
        traces = guide_and_model_traces(pair.model, pair.guide, args, kwargs)
    if max_plate_nesting is None:
        max_plate_nesting = plate_nesting_of(*traces)
    start = snapshot(pair)
    bench = _Bench(pair, batch, args, kwargs, {"max_plate_nesting": max_plate_nesting, "max_enum_size": max_enum_size},
                   num_particles, seed, start, pyro.poutine.util.is_validation_enabled())
    named, groups, offsets = _measured_parameters(bench, groups)
    params = [p for n, p in named.items() if not _is_estimator_state(n)]
    plan = _runnable_plan(bench, estimators, temperatures, explicit, skipped)
    ref = _reference(bench, kind, params, reference_repeats)
    curve = (curve_steps, curve_every, curve_lr, curve_particles)
    rows = []
    try:
        for name, tau in plan:
            rows.append(_measure(bench, name, tau, named, params, groups, offsets, ref, repeats, warmup, size, curve))
    finally:
        pyro.enable_validation(bench.was_validating)
        bench.restore()
    return Comparison(rows=rows, repeats=repeats, latent_size=size, exact_available=kind == "exact",
                      exact_grad_norm=float(ref.grad.norm()) if kind == "exact" else math.nan,
                      exact_elbo=ref.exact_elbo, groups=groups, reason_no_exact=reason, reference=ref.described,
                      reference_grad_norm=float(ref.grad.norm()) if ref.grad is not None else math.nan,
                      reference_elbo=ref.elbo, skipped=skipped)


@dataclass
class _Bench:
    """What each stage of :func:`compare_estimators` works on: the pair, its batch (also split
    into ``args``/``kwargs``), the settings every :class:`DiscreteELBO` gets, and the pair's
    starting state, put back after each estimator."""

    pair: Any
    batch: Any
    args: tuple
    kwargs: dict
    kw: dict  # max_plate_nesting, max_enum_size
    num_particles: int | dict[str, int] | None
    seed: int
    start: dict
    was_validating: bool

    def objective(self, name: str, tau: float) -> DiscreteELBO:
        n = self.num_particles.get(name) if isinstance(self.num_particles, dict) else self.num_particles
        return DiscreteELBO(name, tau, num_particles=n, **self.kw)

    def loss(self, objective: Any) -> torch.Tensor:
        return objective.differentiable_loss(self.pair.model, self.pair.guide, *self.args, **self.kwargs)

    def restore(self) -> None:
        restore(self.pair, self.start)


@dataclass
class _Reference:
    """The gradient biases are measured against: ``kind`` ``"exact"``, a sampled one (the mean
    of ``draws``), or none (``grad`` None); the ELBO there, and a sentence saying which."""

    kind: str
    grad: torch.Tensor | None = None
    draws: torch.Tensor | None = None
    exact_elbo: float = math.nan
    elbo: float = math.nan
    described: str = ""


def _chosen_estimators(estimators: Sequence[str] | None, applicable: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """``(estimators to measure, {skipped name: why})``: the names given, each refused with its
    reason if it does not apply; else every one that applies (the rest are skipped)."""
    if estimators is not None:
        estimators = [check_estimator(name) for name in estimators]
        if not estimators:
            raise ValueError("estimators is empty")
        for name in estimators:
            if applicable[name]:
                raise ValueError(applicable[name])
        return estimators, {}
    estimators = [name for name, why in applicable.items() if not why]
    if not estimators:
        raise ValueError(next(iter(applicable.values())))
    return estimators, {name: why for name, why in applicable.items() if why}


def _measured_parameters(bench: _Bench, groups: dict[str, list[str]] | None
                         ) -> tuple[dict[str, torch.Tensor], dict[str, list[str]], dict[str, tuple[int, int]]]:
    """``(every parameter by name, groups, {name: its slice of the flat gradient})``: one run
    creates every ``pyro.param`` site; the groups must name the pair's parameters."""
    probe = DiscreteELBO("score-function", **bench.kw)
    named, _ = discover_parameters(bench.pair, lambda: bench.loss(probe))
    bench.restore()
    measured = {n: p for n, p in named.items() if not _is_estimator_state(n)}
    groups = groups if groups is not None else default_groups(measured)
    unknown = {n for g in groups.values() for n in g} - set(measured)
    if unknown:
        raise ValueError(f"groups name unknown parameters {sorted(unknown)}; parameters are {list(measured)}")
    offsets, o = {}, 0
    for n, p in measured.items():
        offsets[n] = (o, o + p.numel())
        o += p.numel()
    return named, groups, offsets


def _runnable_plan(bench: _Bench, estimators: list[str], temperatures: list[float], explicit: bool,
                   skipped: dict[str, str]) -> list[tuple[str, float]]:
    """Every ``(estimator, temperature)`` to measure, each run once first: what only running the
    pair can reveal (a model that cannot take a relaxed value, ...) is refused now (a name the
    caller gave) or skipped with the reason, not found mid-way."""
    plan = [(name, tau) for name in estimators
            for tau in (temperatures if ESTIMATORS[name].temperature else temperatures[:1] or [1.0])]
    for name, tau in list(plan):
        try:
            pyro.set_rng_seed(bench.seed)
            bench.loss(bench.objective(name, tau))
        except ValueError as e:
            if explicit:
                bench.restore()
                raise ValueError(f"{name!r} cannot run on this pair: {e}") from e
            skipped[name] = str(e)
            plan = [(n, t) for n, t in plan if n != name]
        finally:
            bench.restore()
    if not plan:
        raise ValueError("no estimator can run on this pair: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return plan


def _reference(bench: _Bench, kind: str, params: list[torch.Tensor], repeats: int) -> _Reference:
    """The exact gradient by enumeration, or the mean of ``repeats`` draws of ``kind``."""
    if kind == "exact":
        loss = bench.loss(DiscreteELBO("enumerate", **bench.kw))
        elbo = -float(loss.detach())
        return _Reference(kind, _flat_grad(loss, params).double(), exact_elbo=elbo, elbo=elbo,
                          described="the exact gradient by enumeration")
    if not kind:
        return _Reference(kind)
    pyro.set_rng_seed(bench.seed + 1)
    objective = bench.objective(kind, 1.0)
    draws, values, _, _, _ = _draw(bench.pair, objective, params, bench.batch, repeats)
    pyro.enable_validation(bench.was_validating)
    bench.restore()
    return _Reference(kind, draws.mean(0), draws, elbo=statistics.fmean(values),
                      described=(f"the mean of {repeats} draws of {kind!r} ("
                                 + ("discrete sites summed exactly, continuous sites sampled" if kind == "enumerate"
                                    else f"unbiased, S={objective.num_particles}")
                                 + "; its own noise is removed from the bias and widens the interval)"))


def _measure(bench: _Bench, name: str, tau: float, named: dict[str, torch.Tensor], params: list[torch.Tensor],
             groups: dict[str, list[str]], offsets: dict[str, tuple[int, int]], ref: _Reference, repeats: int,
             warmup: int, size: float, curve: tuple[int, int, float, int]) -> EstimatorResult:
    """One row: warm up what the estimator learns, draw ``repeats`` gradients, summarise them
    against the reference, and train a curve when ``curve``'s step count is > 0."""
    objective = bench.objective(name, tau)
    pyro.set_rng_seed(bench.seed)
    if name in ("score-function-baseline", "rebar", "relax"):
        _warm_up(bench.pair, objective, [p for n, p in named.items() if _is_estimator_state(n)],
                 bench.batch, warmup)
    pyro.enable_validation(bench.was_validating)
    g, values, own, times, mem = _draw(bench.pair, objective, params, bench.batch, repeats)
    row = _summarise(name, tau, g, values, own, times, mem, groups, offsets, ref.grad, ref.draws)
    row.objective_name = objective.objective_name
    row.model_evaluations = int(size) if name == "enumerate" else objective.model_evaluations
    if name in ("rebar", "relax"):
        row.learned = objective.inner.learned()
    if name == "vimco" and ref.grad is not None:
        row.note = (f"vimco follows the gradient of its {objective.objective_name}, not the ELBO's: its bias "
                    "here is measured against the ELBO's reference and is expected not to be zero")
    steps, every, lr, particles = curve
    if steps > 0:
        pyro.set_rng_seed(bench.seed)
        row.curve = _train_curve(bench.pair, bench.batch, objective,
                                 lambda: _curve_elbo(bench, ref.kind, particles), steps, every, lr, list(named.values()))
    bench.restore()
    return row


def _curve_elbo(bench: _Bench, kind: str, particles: int) -> float:
    """The ELBO a training curve records: exact where enumeration is, else ``particles`` draws."""
    with torch.no_grad():
        if kind == "exact":
            return -float(DiscreteELBO("enumerate", **bench.kw).loss(bench.pair.model, bench.pair.guide,
                                                                     *bench.args, **bench.kwargs))
        return -float(DiscreteELBO("score-function", num_particles=particles, **bench.kw)
                      .loss(bench.pair.model, bench.pair.guide, *bench.args, **bench.kwargs))
