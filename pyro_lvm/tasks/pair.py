"""Task ``pair``: train your own model/guide pair from the command line, then evaluate it.

    pyro-lvm train my_pair.py:make --epochs 20 --out runs/mine
    pyro-lvm train pair --pair my_pair.py:make --estimator rloo      # the same, spelled out
    pyro-lvm evaluate runs/mine          # the held-out part (--split train: the rest)

``make()`` in ``my_pair.py`` returns ``(pair, data)``, as for ``inspect --pair`` and
``compare-estimators --pair``; here ``data`` is the whole training set (a tensor ``(N, ...)`` or
a tuple of tensors with a common ``N``), of which ``--valid-fraction`` is held out for
validation, early stopping and the final report. Training is :func:`pyro_lvm.fit` with its
default objective (your pair's ``objective()`` if it has that method, else ``Trace_ELBO``, or
``TraceEnum_ELBO`` where the guide marks sites for enumeration), or a discrete estimator by
name (``--estimator``).

Outputs under ``--out``: ``config.json``, ``pair/`` (``last.pt``, ``best.pt``, ``history.json``)
and ``metrics.json`` (the evaluation report on the held-out part). ``evaluate RUN`` runs
``FUNCTION()`` from your file again to rebuild the pair, then loads the checkpoint (which runs no
code) into it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from .. import validation as V
from ..training import runs
from ..checkpoint import atomic_json_save, set_seed
from ..infer.discrete.estimators import ESTIMATORS, DiscreteELBO
from ..evaluation.report import evaluation_report
from ..training.loop import fit, load_trained
from .user_pair import SPEC_HELP, load_user_pair
from . import begin, run_folder

NOT_APPLICABLE = {
    "sample": "a pair of your own has no agreed way to run its model without data; "
              "use pyro.infer.Predictive(pair.model, guide=pair.guide, num_samples=N) on it",
    "interpolate": "interpolation needs to know how your pair encodes and decodes; write it with pair.guide and pair.model",
}

HELD_OUT_SPLIT = "valid"  # what `evaluate RUN` reads by default
valid_fraction = V.Number(0.0, strict=False, maximum=0.5)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pair", required=True, metavar="FILE.py:FUNCTION", help=SPEC_HELP + " (data: the whole training set)")
    p.add_argument("--estimator", default=None, choices=list(ESTIMATORS),
                   help="train with this discrete estimator (DiscreteELBO); default: fit's default objective")
    p.add_argument("--temperature", type=V.positive_number.cli, default=1.0, help="relaxation temperature (relaxed estimators)")
    p.add_argument("--valid-fraction", type=valid_fraction.cli, default=0.1,
                   help="part of the data held out for validation and the report (0: none)")
    p.add_argument("--epochs", type=V.non_negative_int.cli, default=10)
    p.add_argument("--batch-size", type=V.positive_int.cli, default=64)
    p.add_argument("--lr", type=V.positive_number.cli, default=1e-3)
    p.add_argument("--patience", type=V.positive_int.cli, default=None, help="early stopping on the validation loss")
    p.add_argument("--samples", type=V.positive_int.cli, default=100,
                   help="importance samples per datapoint for the held-out log-likelihood")
    p.add_argument("--seed", type=V.seed_rule.cli, default=0)
    runs.add_run_arguments(p, resume=True)
    p.add_argument("--progress", action="store_true", help="show a progress bar per epoch")
    p.add_argument("--out", default="runs/pair")


def split(data: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """``(train, valid)``: a random ``fraction`` of the datapoints held out (``valid`` is ``None``
    for 0). ``data`` is a tensor ``(N, ...)`` or a tuple/list of tensors sharing ``N`` (checked by
    :func:`pyro_lvm.validation.data`)."""
    parts = V.as_tensors(data)
    if parts is None:
        raise V.InvalidArgumentError(
            "the data your FUNCTION returned must be a tensor (N, ...) or a tuple of tensors with a common N, "
            f"got {type(data).__name__}")
    n = parts[0].shape[0]
    n_valid = round(fraction * n)
    if fraction > 0 and not 0 < n_valid < n:
        raise V.InvalidArgumentError(f"--valid-fraction {fraction:g} of {n} datapoints leaves no train or valid part: "
                                     "pass more data or another fraction (0 for no validation)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    pick = (lambda idx: tuple(t[idx] for t in parts) if isinstance(data, (tuple, list)) else parts[0][idx])
    return pick(order[n_valid:]), (pick(order[:n_valid]) if n_valid else None)


def _load(spec: str) -> tuple[Any, Any]:
    """The user's ``(pair, data)``, the data checked (finite, non-empty, the pair's dtype) as every public function does."""
    pair, data = load_user_pair(spec)
    return pair, V.data(data, f"the data {spec}() returned", pair)


def _resolved(spec: str) -> str:
    """``FILE.py:FUNCTION`` with the file's absolute path, so ``evaluate RUN`` finds it from anywhere."""
    path, _, name = spec.rpartition(":")
    return f"{Path(path).resolve()}:{name}"


def _objective(estimator: str | None, temperature: float) -> Any:
    return None if estimator is None else DiscreteELBO(estimator, temperature)


def main(args: argparse.Namespace) -> dict[str, Any]:
    # Everything is checked and built before the first write (runs.start_run); the seed comes
    # first and Pyro's parameters start afresh, so that FUNCTION's initial weights (and any data
    # it draws) follow --seed, as in a new process.
    config = begin(args, "pair", {"pair": _resolved(args.pair), "seed": args.seed, "valid_fraction": args.valid_fraction,
                                  "estimator": args.estimator, "temperature": args.temperature})
    pyro.clear_param_store()
    pair, data = _load(args.pair)
    train, valid = split(data, args.valid_fraction, args.seed)
    with run_folder(args, config) as out:
        t0 = time.perf_counter()
        history = fit(pair, train, valid, elbo=_objective(args.estimator, args.temperature), epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, seed=args.seed, patience=args.patience,
                      restore_best=valid is not None, checkpoint_dir=out / "pair", resume=args.resume,
                      progress=args.progress)
        metrics: dict[str, Any] = {"pair": args.pair, "epochs": len(history),
                                   "train_seconds": round(time.perf_counter() - t0, 2),
                                   "final": history.last()}
        if valid is not None:
            metrics["valid"] = _report(pair, valid, args.samples)
        atomic_json_save(metrics, out / "metrics.json")
        return metrics


def _report(pair: Any, data: Any, samples: int) -> dict[str, Any]:
    """The evaluation report, or the reason it does not apply to this pair (training is kept)."""
    try:
        return evaluation_report(pair, data, num_samples=samples)
    except (ValueError, NotImplementedError) as e:
        return {"refused": str(e)}


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    run = Path(args.run)
    config = runs.read_config(run)
    if args.split == "test":
        raise V.InvalidArgumentError(f"{run} was trained on your FUNCTION's data split into train and valid "
                                     f"(--valid-fraction {config['valid_fraction']:g}): choose --split train or valid")
    pair, data = _load(config["pair"])
    train, valid = split(data, config["valid_fraction"], config["seed"])
    part = train if args.split == "train" else valid
    if part is None:
        raise V.InvalidArgumentError(f"{run} holds no validation part (--valid-fraction 0): choose --split train")
    first = tuple(t[:2] for t in part) if isinstance(part, tuple) else part[:2]
    path = load_trained(pair, first, run / "pair")
    set_seed(args.seed)  # the evaluation's draws depend on --seed, not on what FUNCTION drew
    report = evaluation_report(pair, part, num_samples=args.samples)
    report.update(split=args.split, seed=args.seed, checkpoint=path.name)
    return report
