"""``pyro-lvm compare RUN [RUN ...]``: run folders side by side.

Prints one table: the configuration keys (``RUN/config.json``) whose values differ between
the runs, then their final metrics (the numbers in ``RUN/metrics.json``, and the last epoch
of every ``history.json`` under ``RUN``) that differ; ``--all`` keeps equal rows too.
Draws one figure of every run's learning curves on shared axes (``--figure``).

    pyro-lvm compare runs/vae_z8 runs/vae_z16 --format md --figure runs/compare.png
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..training.tracking import flatten, is_number
from ..training.callbacks import History

FORMATS = ("md", "csv", "json")
MISSING = "–"


@dataclass
class Run:
    """What ``compare`` reads from one run folder (JSON only: nothing is executed)."""

    label: str
    config: dict[str, Any]
    metrics: dict[str, float]
    histories: dict[str, History] = field(default_factory=dict)  # sub-folder ("." for the run itself) -> history


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def load_run(folder: str | Path, label: str | None = None) -> Run:
    """Read ``config.json``, ``metrics.json`` and every ``history.json`` under ``folder``.

    Raises ``FileNotFoundError`` when the folder has none of them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such run folder")
    config_path, metrics_path = folder / "config.json", folder / "metrics.json"
    history_paths = sorted(folder.rglob("history.json"))
    if not (config_path.is_file() or metrics_path.is_file() or history_paths):
        raise FileNotFoundError(f"{folder} has no config.json, metrics.json or history.json: "
                                "RUN must be a folder written by 'pyro-lvm train'")
    config = flatten(_read_json(config_path), lists=False) if config_path.is_file() else {}
    metrics = {k: float(v) for k, v in flatten(_read_json(metrics_path)).items()
               if is_number(v)} if metrics_path.is_file() else {}
    histories = {}
    for path in history_paths:
        sub = path.parent.relative_to(folder).as_posix()
        records = _read_json(path)
        histories[sub] = History(list(records.get("epochs", [])) if isinstance(records, dict) else [])
        last = histories[sub].last()
        prefix = "" if sub == "." else f"{sub}/"
        metrics[f"{prefix}epochs"] = float(len(histories[sub]))
        metrics.update({f"{prefix}last/{k}": float(v) for k, v in flatten(last).items()
                        if is_number(v) and k not in ("epoch", "step")})
    return Run(label or str(folder), config, metrics, histories)


def _differing(values: Sequence[dict[str, Any]], keep_equal: bool) -> dict[str, list[Any]]:
    keys = sorted({k for v in values for k in v})
    rows = {k: [v.get(k, MISSING) for v in values] for k in keys}
    if keep_equal:
        return rows
    return {k: row for k, row in rows.items() if any(json.dumps(x, default=str) != json.dumps(row[0], default=str)
                                                     for x in row)}


def comparison(runs: Sequence[Run], keep_equal: bool = False) -> dict[str, Any]:
    """``{"runs": labels, "config": {key: [value per run]}, "metrics": {key: [value per run]}}``,
    keeping only the keys whose values differ unless ``keep_equal``; a run without a key has
    ``"–"`` there."""
    return {"runs": [r.label for r in runs], "config": _differing([r.config for r in runs], keep_equal),
            "metrics": _differing([r.metrics for r in runs], keep_equal)}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def render(table: dict[str, Any], fmt: str) -> str:
    """The table of :func:`comparison` as Markdown (``md``), CSV or JSON."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(table, indent=2, default=str)
    sections = [("config", table["config"]), ("final metrics", table["metrics"])]
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["section", "key", *table["runs"]])
        for section, rows in sections:
            for key, row in rows.items():
                writer.writerow([section, key, *map(_cell, row)])
        return buffer.getvalue().rstrip("\n")
    width = len(table["runs"])
    lines = ["| | " + " | ".join(table["runs"]) + " |", "|---" * (width + 1) + "|"]
    for section, rows in sections:
        lines.append(f"| **{section}** |" + " |" * width)
        if not rows:
            lines.append("| (no differences) |" + " |" * width)
        lines += [f"| {key} | " + " | ".join(_cell(v).replace("|", "/") for v in row) + " |" for key, row in rows.items()]
    return "\n".join(lines)


def learning_curves(runs: Sequence[Run], path: str | Path, keys: Sequence[str] = ("train_loss", "valid_loss")) -> Path:
    """One figure with every history of every run (``keys`` per epoch) on shared axes."""
    from ..plots import training_curves

    histories = {(run.label if sub == "." else f"{run.label} {sub}"): history
                 for run in runs for sub, history in run.histories.items()}
    if not any(history[key] for history in histories.values() for key in keys):
        raise ValueError(f"none of the runs logged {', '.join(keys)} in a history.json; nothing to plot "
                         "(choose other --curves keys, or pass --no-figure)")
    return training_curves(histories, path, keys, ylabel=" / ".join(keys))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by 'pyro-lvm train'")
    p.add_argument("--format", default="md", choices=FORMATS, help="table format")
    p.add_argument("--all", action="store_true", help="keep the rows whose values are equal in every run")
    p.add_argument("--figure", default="compare_curves.png", help="PNG path of the learning-curve figure")
    p.add_argument("--curves", nargs="+", default=["train_loss", "valid_loss"], metavar="KEY",
                   help="history keys to plot per epoch")
    p.add_argument("--no-figure", action="store_true", help="print the table only")


def run(args: argparse.Namespace) -> str:
    runs = [load_run(folder) for folder in args.runs]
    table = comparison(runs, keep_equal=args.all)
    if not args.no_figure:
        table["figure"] = str(learning_curves(runs, args.figure, args.curves))
    text = render(table, args.format)
    if "figure" in table and args.format == "md":
        text += f"\n\nlearning curves: {table['figure']}"
    return text
