"""See what Pyro sees: one row per site of a model (and its guide), with the type of each variable.

    report = inspect_pair(VAE(x_dim=64, z_dim=2), torch.rand(3, 64))
    print(report)                 # a text table
    report["z"].guide             # 'reparameterised'
    report.to_markdown()          # the same table for docs
    report.to_dicts()             # plain data

For every site the table says

* **observed or latent**: an observed sample site (``obs=``) or a model input that no site
  generates is *observed*; everything else (latent sample sites, ``pyro.deterministic``
  values computed inside the model) is *latent*. Parameters (``pyro.param``) are neither:
  they are the model's unknown constants, learned by point estimation.
* **random or deterministic**: a sample site has a distribution; a ``pyro.deterministic``
  site is a function of other variables; model inputs are *given* (conditioned on, not
  generated: a discriminative model's inputs).
* **support**: discrete (``fn.support.is_discrete``) or continuous.
* **guide**: how the ELBO gets a gradient through a latent site: ``reparameterised``
  (``rsample``), ``enumerated`` (``infer={"enumerate": ...}`` in the guide, or in the model
  for a site the guide leaves to ``TraceEnum_ELBO``), ``score-function`` (sampled without a
  reparameterisation), ``point mass`` (a ``Delta`` guide), or ``MISSING`` when the guide
  does not cover a latent site it must.
* **batch / event shape** of the site's distribution in the model, the **value shape**,
  and the enclosing **plates** (outermost first, ``name[size]``).

The model is traced as it would be in training: when a guide is given, it runs first and
the model is replayed on its samples, so a guide site the model lacks is an error (unless it
is marked ``infer={"is_auxiliary": True}``). Enumeration is read from the sites' ``infer``
dicts (what ``config_enumerate`` and ``infer={"enumerate": "parallel"}`` set); the trace
itself samples every site, so the shapes shown are those of one draw, not of the
enumerated tensors ``TraceEnum_ELBO`` would build.
"""

from __future__ import annotations

import inspect as _pyinspect
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger

from .base import batch_args, check_pair
from .traces import base_distribution, is_deterministic, is_random, is_point_mass, replay_model

__all__ = ["InspectionError", "SiteRow", "InspectionReport", "inspect_model", "inspect_pair", "render"]

COLUMNS = ("site", "observed", "random", "support", "distribution", "guide", "plates", "batch", "event", "value")


class InspectionError(ValueError):
    """Tracing a model or guide failed, or the guide has sites the model lacks."""


@dataclass(frozen=True)
class SiteRow:
    """One variable of a model/guide pair as Pyro sees it.

    ``kind`` is ``"sample"``, ``"deterministic"``, ``"param"``, ``"factor"`` (``pyro.factor``)
    or ``"input"``; ``observed``
    and ``random`` are the lecture's two questions (see the module docstring); ``support`` is
    ``"discrete"``, ``"continuous"`` or ``""`` (not a random variable); ``guide`` is
    ``""`` for sites the guide does not concern (observed, deterministic, parameters).
    Shapes are tuples; ``batch_shape``/``event_shape`` are ``None`` for non-random sites.
    """

    name: str
    kind: str
    observed: bool
    random: bool
    support: str
    distribution: str
    guide: str
    guide_distribution: str
    plates: tuple[str, ...]
    batch_shape: tuple[int, ...] | None
    event_shape: tuple[int, ...] | None
    value_shape: tuple[int, ...]
    in_model: bool
    in_guide: bool
    enumerate: str | None = None

    @property
    def latent(self) -> bool:
        return not self.observed and self.kind not in ("param", "factor")

    def cells(self) -> dict[str, str]:
        """The row as display strings keyed by :data:`COLUMNS`."""
        random = {"sample": "random", "deterministic": "deterministic", "param": "parameter", "input": "given",
                  "factor": "log-density term"}
        observed = {"param": "parameter", "factor": "-"}.get(self.kind, "observed" if self.observed else "latent")
        guide = self.guide + (f" ({self.guide_distribution})" if self.guide_distribution else "")
        return {
            "site": self.name + ("" if self.in_model else " [guide only]"),
            "observed": observed,
            "random": random[self.kind],
            "support": self.support or "-",
            "distribution": self.distribution or "-",
            "guide": guide or "-",
            "plates": ", ".join(self.plates) or "-",
            "batch": _shape(self.batch_shape),
            "event": _shape(self.event_shape),
            "value": _shape(self.value_shape),
        }


def _shape(shape: tuple[int, ...] | None) -> str:
    return "-" if shape is None else str(tuple(shape))


@dataclass
class InspectionReport:
    """Rows for every site, plus the guide's coverage of the model's latent sites.

    ``missing_in_guide`` lists latent sample sites of the model that the guide neither
    samples nor leaves to enumeration; ``guided`` is False when no guide was inspected.
    """

    rows: list[SiteRow]
    missing_in_guide: list[str] = field(default_factory=list)
    guided: bool = False

    def __iter__(self) -> Iterator[SiteRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, name: str) -> SiteRow:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no site named {name!r}; sites: {[r.name for r in self.rows]}")

    def grouped(self) -> "InspectionReport":
        """Merge runs of sites named ``prefix_<t>`` (``pyro.markov`` loops) whose rows agree in
        everything but the name into one row named ``prefix_{first..last}``.

        A chain of 100 steps then takes two rows (states, emissions) instead of 200. Sites are
        merged only when their rows are identical apart from the index, so nothing is hidden.
        """
        groups: dict[tuple, list[tuple[int, SiteRow]]] = {}
        order: list[tuple] = []
        for i, row in enumerate(self.rows):
            prefix, sep, index = row.name.rpartition("_")
            if sep and index.isdigit():
                key = (prefix, tuple((k, v) for k, v in asdict(row).items() if k != "name"))
            else:
                key = ("", (("row", i),))
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append((int(index) if sep and index.isdigit() else -1, row))
        rows = []
        for key in order:
            members = groups[key]
            if len(members) == 1:
                rows.append(members[0][1])
                continue
            first, last = members[0][0], members[-1][0]
            rows.append(SiteRow(**{**asdict(members[0][1]), "name": f"{key[0]}_{{{first}..{last}}}"}))
        return InspectionReport(rows=rows, missing_in_guide=list(self.missing_in_guide), guided=self.guided)

    def to_dicts(self) -> list[dict[str, Any]]:
        """Every row as a plain dict (the dataclass fields)."""
        return [asdict(r) for r in self.rows]

    def _table(self) -> tuple[list[str], list[list[str]]]:
        cells = [r.cells() for r in self.rows]
        # Drop columns that say nothing for this report (e.g. "guide" without a guide).
        cols = [c for c in COLUMNS if c == "site" or any(row[c] != "-" for row in cells)]
        return cols, [[row[c] for c in cols] for row in cells]

    def _coverage(self) -> str:
        if not self.guided:
            return "no guide inspected"
        if self.missing_in_guide:
            return f"the guide MISSES latent site(s): {', '.join(self.missing_in_guide)}"
        return "the guide covers every latent site of the model"

    def to_markdown(self) -> str:
        """A GitHub-flavoured markdown table, followed by the guide-coverage line."""
        cols, body = self._table()
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
        return "\n".join(lines) + f"\n\n*Coverage: {self._coverage()}.*\n"

    def __str__(self) -> str:
        cols, body = self._table()
        widths = [max(len(c), *(len(r[i]) for r in body)) if body else len(c) for i, c in enumerate(cols)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [fmt.format(*cols), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in body]
        return "\n".join(line.rstrip() for line in lines) + f"\ncoverage: {self._coverage()}"


class _SiteRecorder(Messenger):
    """Remembers the site being traced and the last one finished, to name them in errors."""

    def __init__(self) -> None:
        super().__init__()
        self.current: dict | None = None
        self.last: dict | None = None

    def _pyro_sample(self, msg: dict) -> None:
        self.current = msg

    def _pyro_post_sample(self, msg: dict) -> None:
        self.current, self.last = None, msg


def _describe(msg: dict) -> str:
    fn, value = msg.get("fn"), msg.get("value")
    parts = []
    if fn is not None and hasattr(fn, "batch_shape"):
        parts.append(f"{_dist_name(fn)} with batch_shape {tuple(fn.batch_shape)}, event_shape {tuple(fn.event_shape)}")
    if isinstance(value, torch.Tensor):
        parts.append(f"value shape {tuple(value.shape)}")
    plates = _plates(msg)
    if plates:
        parts.append(f"plates {', '.join(plates)}")
    return f"site {msg['name']!r} (" + "; ".join(parts) + ")"


def _trace(fn: Callable, args: tuple, kwargs: dict, role: str, replay: Any = None) -> Any:
    recorder = _SiteRecorder()
    try:
        with torch.no_grad(), recorder:
            tr = (poutine.trace(fn).get_trace(*args, **kwargs) if replay is None
                  else replay_model(fn, replay, args, kwargs))
    except Exception as e:
        if recorder.current is not None:
            where = f"at {_describe(recorder.current)}"
        elif recorder.last is not None:
            where = f"after {_describe(recorder.last)}, before the next site"
        else:
            where = "before its first sample site"
        raise InspectionError(f"tracing the {role} failed {where}: {type(e).__name__}: {e}") from e
    # Densities are where an observed value of the wrong shape shows up: check each site.
    for name, site in tr.nodes.items():
        if not is_random(site):
            continue
        try:
            site["fn"].log_prob(site["value"])
        except Exception as e:
            raise InspectionError(
                f"the {role}'s log density fails at {_describe(site)}: {type(e).__name__}: {e}"
            ) from e
    return tr


def _dist_name(fn: Any) -> str:
    return type(base_distribution(fn)).__name__


def _plates(site: dict) -> tuple[str, ...]:
    # Pyro builds cond_indep_stack outermost plate first (each plate prepends its frame).
    return tuple(f"{f.name}[{f.size}]" + ("" if f.vectorized else " (sequential)") for f in site["cond_indep_stack"])


def _support(fn: Any) -> str:
    return "discrete" if getattr(fn.support, "is_discrete", False) else "continuous"


def _guide_estimator(site: dict) -> str:
    fn = site["fn"]
    if site["infer"].get("enumerate") and getattr(fn.support, "is_discrete", False):
        return "enumerated"
    if is_point_mass(fn):
        return "point mass"
    return "reparameterised" if fn.has_rsample else "score-function"


def _input_rows(fn: Callable, args: tuple, kwargs: dict, model_trace: Any) -> list[SiteRow]:
    """Tensor arguments of the model that no site uses as its observed value: given inputs."""
    try:
        bound = _pyinspect.signature(fn).bind(*args, **kwargs)
        named = list(bound.arguments.items())
    except (TypeError, ValueError):
        named = [(f"arg{i}", a) for i, a in enumerate(args)] + list(kwargs.items())
    # An input is observed data of some site when that site's value is it or a view of it
    # (models often observe slices such as x[:, t]); such inputs get no row of their own.
    used = {_storage(s["value"]) for s in model_trace.nodes.values()
            if is_random(s) and s["is_observed"] and not is_deterministic(s)}
    rows = []
    for name, value in named:
        site = model_trace.nodes.get(name)
        if (not isinstance(value, torch.Tensor) or _storage(value) in used
                or (site is not None and is_random(site) and site["is_observed"])):
            continue  # observed through a site (of the same name, or sharing its memory)
        rows.append(SiteRow(name=name, kind="input", observed=True, random=False, support="", distribution="",
                            guide="", guide_distribution="", plates=(), batch_shape=None, event_shape=None,
                            value_shape=tuple(value.shape), in_model=True, in_guide=False))
    return rows


def _storage(value: Any) -> int | None:
    if not isinstance(value, torch.Tensor):
        return None
    try:
        return value.untyped_storage().data_ptr()
    except RuntimeError:  # tensors without storage (e.g. some subclasses)
        return id(value)


def _row(name: str, site: dict, guide_site: dict | None, in_model: bool) -> SiteRow:
    value = site["value"]
    value_shape = tuple(value.shape) if isinstance(value, torch.Tensor) else ()
    if site["type"] == "param":
        return SiteRow(name=name, kind="param", observed=False, random=False, support="", distribution="",
                       guide="", guide_distribution="", plates=(), batch_shape=None, event_shape=None,
                       value_shape=value_shape, in_model=in_model, in_guide=guide_site is not None)
    fn = site["fn"]
    if isinstance(base_distribution(fn), dist.Unit):
        # pyro.factor: a log-density term, not a variable.
        return SiteRow(name=name, kind="factor", observed=False, random=False, support="", distribution="",
                       guide="", guide_distribution="", plates=_plates(site), batch_shape=tuple(fn.batch_shape),
                       event_shape=None, value_shape=value_shape, in_model=in_model, in_guide=guide_site is not None)
    if is_deterministic(site):
        # Pyro records pyro.deterministic as an observed Delta; it is a computed latent value.
        return SiteRow(name=name, kind="deterministic", observed=False, random=False, support="", distribution="",
                       guide="", guide_distribution="", plates=_plates(site), batch_shape=None, event_shape=None,
                       value_shape=value_shape, in_model=in_model, in_guide=guide_site is not None)
    observed = bool(site["is_observed"]) and in_model
    enum = site["infer"].get("enumerate")
    guide, guide_dist = "", ""
    if guide_site is not None and not observed:
        guide, guide_dist = _guide_estimator(guide_site), _dist_name(guide_site["fn"])
        enum = guide_site["infer"].get("enumerate") or None
    elif not observed and enum and getattr(fn.support, "is_discrete", False):
        guide = "enumerated"  # left to TraceEnum_ELBO: summed out in the model
    return SiteRow(name=name, kind="sample", observed=observed, random=True, support=_support(fn),
                   distribution=_dist_name(fn) if in_model else "", guide=guide, guide_distribution=guide_dist,
                   plates=_plates(site), batch_shape=tuple(fn.batch_shape), event_shape=tuple(fn.event_shape),
                   value_shape=value_shape, in_model=in_model, in_guide=guide_site is not None, enumerate=enum)


def inspect_model(model: Callable, args: tuple = (), kwargs: dict | None = None, *, guide: Callable | None = None,
                  params: bool = True, inputs: bool = True, enumerate_guide: str | None = None) -> InspectionReport:
    """Trace ``model(*args, **kwargs)`` (replayed on ``guide`` when given) and tabulate its sites.

    Args:
        model: a Pyro callable.
        args: example positional arguments (a small batch is enough).
        kwargs: example keyword arguments.
        guide: a Pyro callable taking the same arguments as the model, or None.
        params: include ``pyro.param`` sites (``pyro.module`` registers one per tensor).
        inputs: include tensor arguments that no site observes as they are (inputs a model
            conditions on; a model that observes a copy of an argument also lists it).
        enumerate_guide: ``"parallel"`` or ``"sequential"`` to apply ``config_enumerate`` to the
            guide first, as a ``TraceEnum_ELBO`` user would (enumeration chosen by the objective
            rather than written in the guide's ``infer`` dicts).

    Raises:
        InspectionError: tracing failed (the message names the site and its shapes), or the
            guide samples a site the model does not have.
    """
    if not isinstance(args, (tuple, list)):
        raise TypeError(f"args must be a tuple of example arguments, got {type(args).__name__}; "
                        "for one tensor x write args=(x,)")
    if not callable(model) or (guide is not None and not callable(guide)):
        raise TypeError(f"model and guide must be callables, got {type(model).__name__} and {type(guide).__name__}")
    args, kwargs = tuple(args), dict(kwargs or {})
    if enumerate_guide is not None:
        if enumerate_guide not in ("parallel", "sequential"):
            raise ValueError(f"enumerate_guide must be 'parallel', 'sequential' or None, got {enumerate_guide!r}")
        if guide is None:
            raise ValueError("enumerate_guide needs a guide")
        guide = pyro.infer.config_enumerate(guide, default=enumerate_guide)
    guide_trace = _trace(guide, args, kwargs, "guide") if guide is not None else None
    model_trace = _trace(model, args, kwargs, "model", replay=guide_trace)

    rows: list[SiteRow] = _input_rows(model, args, kwargs, model_trace) if inputs else []
    missing: list[str] = []
    guide_nodes = guide_trace.nodes if guide_trace is not None else {}
    for name, site in model_trace.nodes.items():
        if site["type"] == "param" and not params:
            continue
        if site["type"] not in ("sample", "param") or (site["type"] == "sample" and not is_random(site)):
            continue
        g = guide_nodes.get(name)
        g = g if g is not None and (g["type"] == "param" or is_random(g)) else None
        row = _row(name, site, g, in_model=True)
        if (guide_trace is not None and row.kind == "sample" and not row.observed and g is None
                and row.guide != "enumerated"):
            missing.append(name)
            row = SiteRow(**{**asdict(row), "guide": "MISSING"})
        rows.append(row)

    if guide_trace is not None:
        extra = [name for name, s in guide_nodes.items()
                 if is_random(s) and name not in model_trace.nodes and not s["infer"].get("is_auxiliary")]
        if extra:
            raise InspectionError(
                f"guide site(s) {extra} do not appear in the model (model sites: "
                f"{[n for n, s in model_trace.nodes.items() if is_random(s)]}); every guide sample site must "
                "match a latent site of the model by name, or be marked infer={'is_auxiliary': True}"
            )
        for name, s in guide_nodes.items():  # guide-only params and auxiliary sites
            if name in model_trace.nodes or not (s["type"] == "param" and params or is_random(s)):
                continue
            rows.append(_row(name, s, s, in_model=False))
    return InspectionReport(rows=rows, missing_in_guide=missing, guided=guide is not None)


def inspect_pair(pair: Any, batch: Any, **options: Any) -> InspectionReport:
    """:func:`inspect_model` for a model/guide pair and one batch (unpacked as in :mod:`pyro_lvm.base`)."""
    check_pair(pair)
    args, kwargs = batch_args(batch)
    return inspect_model(pair.model, args, kwargs, guide=pair.guide, **options)


def render(model: Callable, args: tuple = (), filename: str | None = None, kwargs: dict | None = None,
           render_distributions: bool = True) -> Any:
    """Draw the model's graph with ``pyro.render_model`` (a ``graphviz.Digraph``; saved when ``filename``).

    Raises ``ImportError`` with installation advice when the ``graphviz`` Python package or
    the Graphviz ``dot`` program is missing.
    """
    try:
        import graphviz
    except ImportError as e:
        raise ImportError(
            "drawing the model graph needs the 'graphviz' Python package and the Graphviz 'dot' program: "
            "pip install graphviz, and apt-get install graphviz (or brew install graphviz). "
            "The inspection table (pyro_lvm.inspection.inspect_model) needs neither."
        ) from e
    graph = pyro.render_model(model, model_args=tuple(args), model_kwargs=kwargs or {},
                              render_distributions=render_distributions)
    if filename is not None:
        try:
            graph.render(outfile=filename, cleanup=True)
        except graphviz.ExecutableNotFound as e:
            raise ImportError(
                f"cannot write {filename}: the Graphviz 'dot' program is not on PATH "
                "(apt-get install graphviz, or brew install graphviz)"
            ) from e
    return graph
