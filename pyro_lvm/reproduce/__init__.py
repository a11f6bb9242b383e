"""``pyro-lvm reproduce NAME``: re-run a published figure that pyro_lvm tracks, with one command.

    pyro-lvm reproduce --list                                  every entry, expected wall time per budget
    pyro-lvm reproduce vae-mnist --budget quick                minutes on a laptop CPU (embedded data if no --data)
    pyro-lvm reproduce ptb-table --budget full --data DIR      the benchmark's committed command
    pyro-lvm reproduce collapse-he --options --seeds 3         the rest of the line goes to the benchmark

Each entry is the code of one script in ``benchmarks/``: the script and ``reproduce`` call the
same ``parser()`` and ``run(args)`` from a module of this package, and a budget is a list of
that parser's options (``full`` is the command whose results ``benchmarks/results/`` holds).
``--data DIR`` is a folder with your copies of the standard data sets (``binarized_mnist/``,
``ptb.zip``, ``20ng.zip``, ``masc_tagged.zip``, ...; an entry reads the ones ``--list`` names
for it, ``pos-masc`` two of them); without it ``quick`` runs on data that ships with the
dependencies (scikit-learn's digits, gensim's Wikipedia sample and Lee corpus, music21's
chorales, the POS task's synthetic corpus), which says that the code path works but is not
comparable with the published number.

Adding an entry: a module defining ``parser()``, ``run(args) -> dict`` and ``REPRODUCTION``
(a :class:`Reproduction`), and one line in :data:`ENTRIES`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..checkpoint import atomic_json_save

BUDGETS = ("quick", "standard", "full")

# name -> module defining REPRODUCTION (imported when the entry is used).
ENTRIES: dict[str, str] = {
    "vae-mnist": "pyro_lvm.reproduce.vae_mnist",
    "gumbel-mnist": "pyro_lvm.reproduce.discrete_mnist",
    "collapse-synthetic": "pyro_lvm.reproduce.collapse_synthetic:SMALL",
    "collapse-he": "pyro_lvm.reproduce.collapse_synthetic:HE",
    "ptb-table": "pyro_lvm.reproduce.sentence_vae_ptb",
    "prodlda-20ng": "pyro_lvm.reproduce.topic_20ng",
    "vae-overhead": "pyro_lvm.reproduce.vae_overhead",
    "hmm-speed": "pyro_lvm.reproduce.hmm_speed",
    "jsb-used-keys": "pyro_lvm.reproduce.jsb_family:USED_KEYS",
    "jsb-all-keys": "pyro_lvm.reproduce.jsb_family:ALL_KEYS",
    "pos-masc": "pyro_lvm.reproduce.pos_masc",
    "sentence-vae-speed": "pyro_lvm.reproduce.sentence_vae_speed",
    "ddp-throughput": "pyro_lvm.reproduce.ddp_throughput",
    "estimator-variance": "pyro_lvm.reproduce.estimator_variance",
}
CLOCKS = ("cpu", "wall")


@dataclass(frozen=True)
class Budget:
    """One budget of an entry: the benchmark options it adds, and how long it takes.

    ``minutes``: measured, with one torch thread per process. Quick and standard: the CPU
    time of ``pyro-lvm reproduce`` (``benchmarks/results/reproduce/``; wall time is longer on a
    busy machine), or its wall time for an entry whose ``clock`` is ``"wall"`` (one that runs
    processes side by side, whose CPU times add up to more than the time it takes); full: the
    time the benchmark's committed results record. ``None``: not measured yet.
    """

    options: Sequence[str]
    minutes: float | None


@dataclass(frozen=True)
class Reproduction:
    """A published figure and how to reproduce it.

    Args:
        name: the command-line name.
        title: what is measured.
        anchor: the published number(s) with the citation (paper, table, setting).
        target: what our number should reach.
        script: the benchmark script in ``benchmarks/`` that shares the code.
        parser: the script's option parser (from the shared module).
        run: ``run(args) -> result dict``, the script's work.
        ours: the headline number of a result, as text.
        budgets: ``quick``, ``standard``, ``full`` -> :class:`Budget`.
        data: the file or folder under ``--data DIR`` and the option that takes its path, or
            a tuple of the files that must be in ``DIR`` and the option that takes ``DIR``
            itself (an entry that reads several; ``None``: the entry makes its own data).
        embedded: the options that replace the data option for ``quick`` without ``--data``.
        get_data: where to get the data set, for the error without ``--data``.
        notes: how our set-up differs from the paper's.
        own_data: what the entry runs on when ``data`` is ``None``.
        clock: ``"cpu"`` or ``"wall"``, the time its budgets' minutes are.
        fixed: options every budget shares (e.g. the row set).
    """

    name: str
    title: str
    anchor: str
    target: str
    script: str
    parser: Callable[[], argparse.ArgumentParser]
    run: Callable[[argparse.Namespace], dict]
    ours: Callable[[dict], str]
    budgets: Mapping[str, Budget]
    data: tuple[str | tuple[str, ...], str] | None = None
    embedded: Sequence[str] = ()
    get_data: str = ""
    notes: str = ""
    fixed: Sequence[str] = field(default_factory=tuple)
    own_data: str = "generated by the script"
    clock: str = "cpu"

    def __post_init__(self):
        if self.clock not in CLOCKS:
            raise ValueError(f"{self.name}: clock must be one of {', '.join(CLOCKS)}, not {self.clock!r}")

    @property
    def data_files(self) -> tuple[str, ...]:
        """The files or folders the entry reads under ``--data DIR`` (none: it makes its own)."""
        if self.data is None:
            return ()
        return self.data[0] if isinstance(self.data[0], tuple) else (self.data[0],)

    def _data_option(self, folder: str | os.PathLike) -> list[str]:
        """The data option with its path: ``DIR/<name>``, or ``DIR`` for an entry reading several."""
        name, option = self.data
        return [option, str(folder if isinstance(name, tuple) else Path(folder) / name)]

    def options(self, budget: str, data: str | os.PathLike | None) -> tuple[list[str], str]:
        """``(options for the script's parser, a description of the data used)``."""
        if budget not in BUDGETS:
            raise ValueError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
        options = [*self.fixed, *self.budgets[budget].options]
        if self.data is None:
            return options, self.own_data
        names = " and ".join(self.data_files)
        if data is not None:
            for name in self.data_files:
                path = Path(data) / name
                if not path.exists():
                    raise FileNotFoundError(f"{path} not found: --data DIR must hold your copy of {names} "
                                            f"({self.get_data})")
            return [*options, *self._data_option(data)], f"your copy of {names}"
        if budget == "quick" and self.embedded:
            return [*options, *self.embedded], "embedded data (not comparable with the anchor)"
        raise FileNotFoundError(f"the {budget} budget of {self.name} needs your copy of {names} ({self.get_data}): "
                                f"pass --data DIR with " + " and ".join(f"DIR/{n}" for n in self.data_files)
                                + (" (--budget quick runs without it)" if self.embedded else ""))

    def command(self, budget: str = "full", data: str = "DIR") -> str:
        """The benchmark command a budget corresponds to."""
        options = [*self.fixed, *self.budgets[budget].options]
        if self.data is not None:
            options += self._data_option(data)
        return " ".join(["python", self.script, *options])


def data_path(args: argparse.Namespace, what: str) -> Path:
    """``args.data`` as a path. The benchmarks have no default data path (your copies live
    where you keep them): without ``--data``, an error saying what to pass."""
    if args.data is None:
        raise ValueError(f"--data is missing: pass the path of {what} "
                         "(docs/data.md says where to get each data set)")
    return Path(args.data)


def interleaved_cpu_ms(steps: Mapping[str, Callable[[], None]], rounds: int, repeats: int,
                       warmup: int) -> dict[str, list[float]]:
    """Process CPU milliseconds per call of every function of ``steps``: ``warmup`` calls each
    first, then ``rounds`` rounds in which each runs ``repeats`` times in turn (interleaved, so
    that machine noise hits them alike). Returns name -> one mean per round."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            t = time.process_time()
            for _ in range(repeats):
                step()
            times[name].append((time.process_time() - t) / repeats * 1000)
    return times


def load(name: str) -> Reproduction:
    """The entry called ``name`` (``ValueError`` listing the known names otherwise)."""
    if name not in ENTRIES:
        raise ValueError(f"unknown reproduction {name!r}; known: {', '.join(ENTRIES)} (pyro-lvm reproduce --list)")
    module, _, attr = ENTRIES[name].partition(":")
    return getattr(importlib.import_module(module), attr or "REPRODUCTION")


def reproduce(name: str, budget: str = "quick", data: str | os.PathLike | None = None,
              extra: Sequence[str] = (), out: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run entry ``name`` at ``budget``; ``extra`` options go to the benchmark's parser after
    the budget's (so they win). Returns the row of the printed table with the benchmark's
    full result under ``"result"``, and writes it as JSON to ``out`` when given."""
    entry = load(name)
    options, used = entry.options(budget, data)
    args = _parse(entry, [*options, *extra])
    start, cpu, child_cpu = time.perf_counter(), time.process_time(), _children_cpu_seconds()
    result = entry.run(args)
    child_cpu = _children_cpu_seconds() - child_cpu
    row = {"name": entry.name, "title": entry.title, "budget": budget, "data": used,
           "ours": entry.ours(result), "anchor": entry.anchor, "target": entry.target,
           "full_command": entry.command("full"), "notes": entry.notes,
           "options": [*options, *extra], "wall_seconds": round(time.perf_counter() - start, 1),
           "cpu_seconds": round(time.process_time() - cpu + child_cpu, 1), "child_cpu_seconds": round(child_cpu, 1),
           "expected_minutes": entry.budgets[budget].minutes, "result": result}
    if out is not None:
        atomic_json_save(row, out)
    return row


def _children_cpu_seconds() -> float:
    """CPU time of this process's child processes that have ended and been waited for (the
    training processes of ``strategy="ddp"``, which ``process_time`` does not count); 0 where
    the platform does not report it."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _parse(entry: Reproduction, options: Sequence[str]) -> argparse.Namespace:
    parser = entry.parser()
    parser.prog = f"pyro-lvm reproduce {entry.name} --options"
    try:
        return parser.parse_args(list(options))
    except SystemExit:  # argparse already printed its message
        raise ValueError(f"bad benchmark options for {entry.name}: {' '.join(options)}") from None


def _minutes(m: float | None, clock: str = "cpu") -> str:
    if m is None:
        return "not measured"
    return (f"{m:.0f} min" if m >= 10 else f"{m:.1f} min") + (" (wall)" if clock == "wall" else "")


def listing() -> str:
    """The ``--list`` table: every entry with its expected wall time at each budget."""
    lines = ["| name | what | data (under --data) | quick | standard | full |", "|---|---|---|---|---|---|"]
    for name in ENTRIES:
        e = load(name)
        data = " + ".join(e.data_files) if e.data else f"({e.own_data})"
        if e.embedded:
            data += " (quick: embedded if absent)"
        lines.append(f"| {name} | {e.title} | {data} | " + " | ".join(_minutes(e.budgets[b].minutes, e.clock) for b in BUDGETS) + " |")
    return "\n".join(lines + ["", "Expected time with one torch thread per process: quick and standard are the CPU "
                                  "time of this command, its processes included (wall time is longer on a busy "
                                  "machine), or its wall time where marked (entries that run processes side by side); "
                                  "full is the time the benchmark's results record."])


def table(row: Mapping[str, Any]) -> str:
    """The printed result of one reproduction."""
    cell = lambda s: str(s).replace("|", "/")  # noqa: E731
    return "\n".join([
        "| reproduction | budget | data | ours | published | target |", "|---|---|---|---|---|---|",
        f"| {row['title']} | {row['budget']} ({row['wall_seconds']:.0f} s) | {row['data']} | **{cell(row['ours'])}** | "
        f"{cell(row['anchor'])} | {cell(row['target'])} |",
        "", f"Full budget: `{row['full_command']}`", *([f"Notes: {row['notes']}"] if row["notes"] else []),
    ])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="the entry (pyro-lvm reproduce --list)")
    p.add_argument("--list", action="store_true", help="list the entries with their expected wall time per budget")
    p.add_argument("--budget", default="quick", choices=BUDGETS)
    p.add_argument("--data", default=None, metavar="DIR",
                   help="folder with your copies of the standard data sets (binarized_mnist/, ptb.zip, 20ng.zip, "
                        "masc_tagged.zip, ...: --list says which an entry reads; docs/data.md where to get them)")
    p.add_argument("--out", default=None, help="JSON file for the row and the full result "
                                               "(default runs/reproduce/NAME_BUDGET.json)")
    p.add_argument("--format", default="md", choices=["md", "json"], help="how to print the row")
    p.add_argument("--options", nargs=argparse.REMAINDER, default=[], metavar="OPTION",
                   help="last: the rest of the line goes to the benchmark's parser, after the budget's "
                        "options (e.g. --options --seed 1)")


def run(args: argparse.Namespace) -> str:
    if args.list:
        return listing()
    if args.name is None:
        raise ValueError("name a reproduction, or pass --list to see them")
    out = args.out or Path("runs") / "reproduce" / f"{args.name}_{args.budget}.json"
    row = reproduce(args.name, args.budget, args.data, args.options, out)
    print(f"wrote {out}", file=sys.stderr)
    if args.format == "json":
        return json.dumps({k: v for k, v in row.items() if k != "result"}, indent=2)
    return table(row)
