"""Compare gradient estimators for discrete latents on any model/guide pair.

:func:`compare_estimators` takes a pair (plain Pyro, discrete sites written as
``OneHotCategorical``/``Categorical``), one batch of data and a list of estimator names
(:data:`~pyro_lvm.infer.discrete.ESTIMATORS`), and measures at the pair's current
parameters, for each estimator (and each temperature of the relaxed ones):

* the objective: mean ELBO estimate over ``repeats`` evaluations and its standard error;
* the gradient over ``repeats`` draws: its mean, the trace of its covariance (total and per
  parameter group);
* the bias of the mean gradient against the exact gradient from enumeration, when the
  guide's latent space can be enumerated (:func:`enumeration_size`), with a 95%
  interval on its norm and the largest per-coordinate z-score;
* CPU and wall time per loss-and-gradient evaluation and memory per step (bytes saved for backward
  on CPU; peak allocated memory on CUDA);
* optionally, training curves (exact or Monte Carlo ELBO against wall time) from the same
  starting parameters.

The result (:class:`Comparison`) writes a markdown/CSV/JSON table and plots (variance and
bias against temperature, ELBO against time).

Example::

    from pyro_lvm.models.mixture import CategoricalMixture
    from pyro_lvm.infer.estimators import compare_estimators

    x = CategoricalMixture.simulate(200, n_classes=10)
    cmp = compare_estimators(CategoricalMixture(10), x, repeats=100, temperatures=[1.0, 0.5])
    print(cmp.to_markdown())
"""

from __future__ import annotations

import copy
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
import pyro.poutine as poutine
import torch
from torch import nn

from .. import validation
from ..base import batch_args, check_pair
from .discrete import RELAXED, DiscreteELBO, check_estimator, check_temperature, is_discrete, support_size

DEFAULT_ESTIMATORS = ("enumerate", "score-function", "score-function-baseline", "gumbel", "straight-through")


# ----------------------------------------------------------------------------- feasibility

def _guide_trace(pair: Any, batch: Any) -> Any:
    args, kwargs = batch_args(batch)
    with torch.no_grad():
        return poutine.trace(pair.guide).get_trace(*args, **kwargs)


def enumeration_size(pair: Any, batch: Any) -> tuple[float, list[str]]:
    """``(joint number of discrete values per datapoint, names of continuous latent sites)``.

    Traces the guide once and multiplies the support sizes of its unobserved discrete sites
    (``K ** m`` for ``m`` categorical variables folded into one site's event).
    """
    size, continuous = 1.0, []
    for name, site in _guide_trace(pair, batch).nodes.items():
        if site["type"] != "sample" or site["is_observed"] or type(site["fn"]).__name__ == "_Subsample":
            continue
        if is_discrete(site["fn"]):
            size *= support_size(site["fn"])
        else:
            continuous.append(name)
    return size, continuous


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


# ----------------------------------------------------------------------------- parameters

def _parameters(pair: Any, batch: Any, objective: Any) -> dict[str, torch.Tensor]:
    """Named trainable parameters: the module's, then any ``pyro.param`` sites (run once to create them)."""
    args, kwargs = batch_args(batch)
    with poutine.trace(param_only=True) as capture:
        objective.differentiable_loss(pair.model, pair.guide, *args, **kwargs)
    named: dict[str, torch.Tensor] = {}
    if isinstance(pair, nn.Module):
        named.update({n: p for n, p in pair.named_parameters() if p.requires_grad})
    for site in capture.trace.nodes.values():
        if site["name"].startswith("__baseline"):
            continue  # the running-average baseline is estimator state, not a model parameter
        p = site["value"].unconstrained()
        if p.requires_grad and all(p is not q for q in named.values()):
            named[site["name"]] = p
    return named


def default_groups(names: Iterable[str]) -> dict[str, list[str]]:
    """Group parameters by the first component of their name (``encoder.0.weight`` -> ``encoder``)."""
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(n.split(".")[0], []).append(n)
    return groups


def _is_baseline_param(name: str) -> bool:
    return "baseline" in name


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


# ----------------------------------------------------------------------------- results

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
    bias_norm: float = math.nan       # debiased: |E g - g*| with the noise of the mean removed
    relative_bias: float = math.nan
    bias_ci: tuple[float, float] = (math.nan, math.nan)
    noise_floor: float = math.nan
    max_abs_z: float = math.nan
    ms_per_step: float = math.nan     # process CPU time per loss-and-gradient (median)
    wall_ms_per_step: float = math.nan
    memory_mb: float = math.nan
    curve: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Comparison:
    """Results of :func:`compare_estimators` plus what they were measured on."""

    rows: list[EstimatorResult]
    repeats: int
    latent_size: float
    exact_available: bool
    exact_grad_norm: float
    exact_elbo: float
    groups: dict[str, list[str]]
    reason_no_exact: str = ""

    def row(self, estimator: str, temperature: float | None = None) -> EstimatorResult:
        """The row of one estimator (and temperature, for the relaxed ones)."""
        for r in self.rows:
            if r.estimator == estimator and (temperature is None or r.temperature == temperature):
                return r
        raise KeyError(f"no row for estimator {estimator!r} at temperature {temperature!r}")

    def table(self) -> list[dict[str, Any]]:
        """Flat rows for CSV/markdown (curves left out)."""
        out = []
        for r in self.rows:
            d = {k: v for k, v in asdict(r).items() if k not in ("curve", "trace_cov_groups", "bias_ci")}
            d["bias_ci_low"], d["bias_ci_high"] = r.bias_ci
            for g, v in r.trace_cov_groups.items():
                d[f"trace_cov[{g}]"] = v
            out.append(d)
        return out

    def to_markdown(self) -> str:
        head = "| estimator | tau | ELBO ± SE | tr Cov | relative bias [95% CI] | max abs z | CPU ms/step | memory MB |"
        lines = [head, "|" + "---|" * 8]
        for r in self.rows:
            tau = f"{r.temperature:g}" if r.estimator in RELAXED else "–"
            if self.exact_available:
                gn = self.exact_grad_norm or 1.0
                bias = f"{r.relative_bias:.3f} [{r.bias_ci[0] / gn:.3f}, {r.bias_ci[1] / gn:.3f}]"
                z = f"{r.max_abs_z:.1f}" if math.isfinite(r.max_abs_z) else "–"
            else:
                bias, z = "n/a", "n/a"
            lines.append(f"| {r.estimator} | {tau} | {r.elbo:.3f} ± {r.elbo_se:.3f} | {r.trace_cov:.4g} | {bias} | {z} "
                         f"| {r.ms_per_step:.2f} | {r.memory_mb:.3g} |")
        note = (f"exact ELBO {self.exact_elbo:.3f}, exact gradient norm {self.exact_grad_norm:.4g}; "
                if self.exact_available else f"no exact gradient ({self.reason_no_exact}); ")
        lines.append("")
        lines.append(f"{self.repeats} repeats; {note}latent space {self.latent_size:.3g} values per datapoint.")
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
        from ..checkpoint import atomic_json_save

        atomic_json_save(self.to_dict(), path)

    def plot(self, out_dir: str | Path) -> list[Path]:
        """Save ``variance_vs_temperature.png`` (relaxed rows) and ``elbo_vs_time.png`` (curves)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        saved = []
        relaxed = [r for r in self.rows if r.estimator in RELAXED]
        if relaxed:
            fig, axes = plt.subplots(1, 2 if self.exact_available else 1, figsize=(10 if self.exact_available else 5, 3.6),
                                     squeeze=False)
            for name in dict.fromkeys(r.estimator for r in relaxed):
                rs = sorted((r for r in relaxed if r.estimator == name), key=lambda r: r.temperature)
                axes[0, 0].plot([r.temperature for r in rs], [r.trace_cov for r in rs], "o-", label=name)
                if self.exact_available:
                    axes[0, 1].plot([r.temperature for r in rs], [r.relative_bias for r in rs], "o-", label=name)
            for r in self.rows:
                if r.estimator not in RELAXED and r.trace_cov > 0:
                    axes[0, 0].axhline(r.trace_cov, ls="--", lw=1, color="gray")
                    axes[0, 0].annotate(r.estimator, (axes[0, 0].get_xlim()[0], r.trace_cov), fontsize=7)
            axes[0, 0].set(xlabel="temperature", ylabel="trace of gradient covariance", yscale="log")
            axes[0, 0].legend(fontsize=8)
            if self.exact_available:
                axes[0, 1].set(xlabel="temperature", ylabel="relative bias |E g - g*| / |g*|")
                axes[0, 1].legend(fontsize=8)
            fig.tight_layout()
            saved.append(out_dir / "variance_vs_temperature.png")
            fig.savefig(saved[-1], dpi=110)
            plt.close(fig)
        curves = [r for r in self.rows if r.curve]
        if curves:
            fig, ax = plt.subplots(figsize=(7.5, 3.8))
            ax.set_prop_cycle(color=plt.cm.tab20.colors)  # many curves: 20 distinct colours
            for r in curves:
                label = r.estimator + (f" tau={r.temperature:g}" if r.estimator in RELAXED else "")
                ax.plot([c["time_s"] for c in r.curve], [c["elbo"] for c in r.curve], label=label)
            ax.set(xlabel="training time (s)", ylabel="ELBO" + (" (exact)" if self.exact_available else " (MC)"))
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
            fig.tight_layout()
            saved.append(out_dir / "elbo_vs_time.png")
            fig.savefig(saved[-1], dpi=110)
            plt.close(fig)
        return saved


# ----------------------------------------------------------------------------- the harness

def _snapshot(pair: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    state = copy.deepcopy(pair.state_dict()) if isinstance(pair, nn.Module) else None
    store = {n: t.detach().clone() for n, t in pyro.get_param_store().get_state()["params"].items()}
    return state, store


def _restore(pair: Any, snap: tuple[Any, dict[str, torch.Tensor]]) -> None:
    """Copy saved values back *in place*, so tensors held elsewhere (the gradient list) stay valid."""
    if isinstance(pair, nn.Module):
        pair.load_state_dict(snap[0])
    store = pyro.get_param_store()
    for name, tensor in list(store.get_state()["params"].items()):
        if name in snap[1]:
            with torch.no_grad():
                tensor.copy_(snap[1][name])
        else:
            del store[name]  # state an estimator created (running-average baselines)


def bias_interval(grads: torch.Tensor, exact: torch.Tensor, z: float = 1.96) -> tuple[float, float, float]:
    """Estimate of ``|E g - g*|`` from draws ``grads (R, P)``, with a normal-theory 95% interval.

    The mean of R draws is ``d ~ N(b, S/R)``, so ``T = |d|^2 - tr(S)/R`` estimates ``|b|^2``
    without the noise floor (an unbiased estimator scores near 0, not near ``sqrt(tr S / R)``),
    with variance ``2 |S|_F^2 / R^2 + 4 d'Sd / R``. Returns ``(sqrt(T), sqrt(T - z sd),
    sqrt(T + z sd))``, each clipped at 0. Uses only R x R products (works for large P).
    """
    r = grads.shape[0]
    mean = grads.mean(0)
    centred = grads - mean
    d = mean - exact
    tr = float(centred.pow(2).sum()) / (r - 1)
    t = float(d.pow(2).sum()) - tr / r
    frob2 = float((centred @ centred.T).pow(2).sum()) / (r - 1) ** 2
    dsd = float((centred @ d).pow(2).sum()) / (r - 1)
    sd = math.sqrt(max(2 * frob2 / r ** 2 + 4 * dsd / r, 0.0))
    root = lambda v: math.sqrt(max(v, 0.0))  # noqa: E731
    return root(t), root(t - z * sd), root(t + z * sd)


def _max_plate_nesting(pair: Any, batch: Any) -> int:
    """Deepest plate nesting of any site in a model trace (what enumeration must stay left of)."""
    args, kwargs = batch_args(batch)
    with torch.no_grad():
        guide = poutine.trace(pair.guide).get_trace(*args, **kwargs)
        model = poutine.trace(poutine.replay(pair.model, trace=guide)).get_trace(*args, **kwargs)
    depth = [sum(1 for f in site["cond_indep_stack"] if f.vectorized)
             for tr in (model, guide) for site in tr.nodes.values() if site["type"] == "sample"]
    return max(depth, default=0)


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
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        elapsed += time.perf_counter() - t
        if step % every == 0 or step == steps:
            curve.append({"step": step, "time_s": elapsed, "elbo": evaluate()})
    return curve


def _warm_up_baselines(pair: Any, objective: Any, baseline_params: list[torch.Tensor], batch: Any,
                       steps: int) -> None:
    """Fill the running-average baseline and fit the baseline network (Adam) before measuring."""
    args, kwargs = batch_args(batch)
    opt = torch.optim.Adam(baseline_params, lr=1e-2) if baseline_params else None
    for _ in range(steps):
        loss = objective.differentiable_loss(pair.model, pair.guide, *args, **kwargs)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def _draw(pair: Any, objective: Any, params: list[torch.Tensor], batch: Any, repeats: int
          ) -> tuple[torch.Tensor, list[float], tuple[list[float], list[float]], float]:
    """``repeats`` gradients ``(R, P)`` (float64), objective values, (CPU, wall) seconds each, MiB."""
    args, kwargs = batch_args(batch)
    grads, values, times, walls = [], [], [], []
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
        values.append(-float(loss.detach()))
    mem = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else memory.bytes
    return torch.stack(grads).double(), values, (times, walls), mem / 2 ** 20


def _summarise(name: str, tau: float, g: torch.Tensor, values: list[float],
               times: tuple[list[float], list[float]], mem: float,
               groups: dict[str, list[str]], offsets: dict[str, tuple[int, int]],
               exact_grad: torch.Tensor | None) -> EstimatorResult:
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
        memory_mb=mem)
    if exact_grad is not None:
        ref = exact_grad.double()
        diff = mean - ref
        row.bias_norm, low, high = bias_interval(g, ref)
        row.relative_bias = row.bias_norm / max(float(ref.norm()), 1e-30)
        row.bias_ci = (low, high)
        row.noise_floor = math.sqrt(float(var.sum()) / r)
        se = (var / r).sqrt()
        z = diff.abs()[se > 0] / se[se > 0]
        # no variance at all (enumeration): a z-score of 0 if the mean is exact, inf otherwise
        row.max_abs_z = float(z.max()) if z.numel() else (0.0 if float(diff.abs().max()) < 1e-6 else math.inf)
    return row


def compare_estimators(
    pair: Any,
    batch: Any,
    estimators: Sequence[str] = DEFAULT_ESTIMATORS,
    *,
    temperatures: Sequence[float] = (1.0, 0.5),
    repeats: int = 100,
    exact: bool | None = None,
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
        pair: a model/guide pair whose guide has discrete sites.
        batch: one batch (tensor, tuple or dict, as :func:`pyro_lvm.fit` passes it).
        estimators: names from :data:`~pyro_lvm.infer.discrete.ESTIMATORS`.
        temperatures: the relaxed estimators are measured at each of these.
        repeats: R gradient draws per estimator (>= 2).
        exact: compute the exact gradient by enumeration; ``None`` = when feasible,
            ``True`` = required (raises with the latent-space size if not feasible).
        max_enum_size: enumeration limit in joint values per datapoint.
        groups: ``{group: [parameter names]}``; default by the first name component.
        warmup: evaluations before measuring ``score-function-baseline`` (fills the running
            average; parameters named ``*baseline*`` take Adam steps, the rest stay fixed).
        curve_steps: if > 0, also train each estimator for this many Adam steps (lr
            ``curve_lr``) from the same start and record the ELBO every ``curve_every`` steps.
        curve_particles: Monte Carlo particles for the ELBO of a curve when it is not exact.
        seed: seeds Pyro before each estimator, so every one sees the same random stream.

    The pair's parameters and the param store are restored after each estimator.
    """
    check_pair(pair)
    validation.check(repeats=repeats, seed=seed)
    for name in estimators:
        check_estimator(name)
    temperatures = [check_temperature(t) for t in temperatures]
    if not estimators:
        raise ValueError("estimators is empty")
    if "enumerate" in estimators:
        check_enumerable(pair, batch, max_enum_size)
    size, continuous = enumeration_size(pair, batch)
    reason = ""
    if continuous:
        reason = f"continuous latent sites {continuous}"
    elif size > max_enum_size:
        reason = f"{size:.3g} joint values > max_enum_size={max_enum_size:.3g}"
    if exact and reason:
        raise ValueError(f"exact gradient requested but enumeration is infeasible: {reason}")
    use_exact = (exact is None or exact) and not reason

    args, kwargs = batch_args(batch)
    start = _snapshot(pair)
    if max_plate_nesting is None:
        max_plate_nesting = _max_plate_nesting(pair, batch)
    kw = {"max_plate_nesting": max_plate_nesting, "max_enum_size": max_enum_size}
    named = _parameters(pair, batch, DiscreteELBO("score-function", **kw))
    _restore(pair, start)
    measured = {n: p for n, p in named.items() if not _is_baseline_param(n)}
    names, params = list(measured), list(measured.values())
    groups = groups if groups is not None else default_groups(names)
    unknown = {n for g in groups.values() for n in g} - set(names)
    if unknown:
        raise ValueError(f"groups name unknown parameters {sorted(unknown)}; parameters are {names}")
    offsets, o = {}, 0
    for n, p in measured.items():
        offsets[n] = (o, o + p.numel())
        o += p.numel()

    exact_grad, exact_elbo = None, math.nan
    if use_exact:
        enum = DiscreteELBO("enumerate", **kw)
        loss = enum.differentiable_loss(pair.model, pair.guide, *args, **kwargs)
        exact_elbo = -float(loss.detach())
        exact_grad = _flat_grad(loss, params)

    def evaluate() -> float:
        with torch.no_grad():
            if use_exact:
                return -float(DiscreteELBO("enumerate", **kw).loss(pair.model, pair.guide, *args, **kwargs))
            return -float(DiscreteELBO("score-function", num_particles=curve_particles, **kw)
                          .loss(pair.model, pair.guide, *args, **kwargs))

    was_validating = pyro.poutine.util.is_validation_enabled()
    rows = []
    try:
        for name in estimators:
            for tau in (temperatures if name in RELAXED else temperatures[:1] or [1.0]):
                objective = DiscreteELBO(name, tau, **kw)
                pyro.set_rng_seed(seed)
                if name == "score-function-baseline":
                    _warm_up_baselines(pair, objective, [p for n, p in named.items() if _is_baseline_param(n)],
                                       batch, warmup)
                pyro.enable_validation(was_validating)
                g, values, times, mem = _draw(pair, objective, params, batch, repeats)
                row = _summarise(name, tau, g, values, times, mem, groups, offsets, exact_grad)
                if curve_steps > 0:
                    pyro.set_rng_seed(seed)
                    row.curve = _train_curve(pair, batch, objective, evaluate, curve_steps, curve_every, curve_lr,
                                             list(named.values()))
                _restore(pair, start)
                rows.append(row)
    finally:
        pyro.enable_validation(was_validating)
    return Comparison(rows=rows, repeats=repeats, latent_size=size, exact_available=exact_grad is not None,
                      exact_grad_norm=float(exact_grad.norm()) if exact_grad is not None else math.nan,
                      exact_elbo=exact_elbo, groups=groups, reason_no_exact=reason)
