"""Task ``compare_estimators``: gradient variance, bias, time and memory of discrete-latent estimators.

Runs :func:`pyro_lvm.infer.discrete.comparison.compare_estimators` on a built-in pair (the toy
categorical mixture, where the exact gradient is available, or the categorical VAE on
digits) or on your own pair: ``--pair my_file.py:make`` where ``make()`` returns
``(pair, batch)``. Writes ``table.md``, ``table.csv``, ``comparison.json``, ``metrics.json``
and plots (variance and bias against temperature, ELBO against time) under ``--out``.

    pyro-lvm compare-estimators --model categorical-mixture --classes 10 --repeats 200
    pyro-lvm compare-estimators --pair my_pair.py:make --estimators rloo disarm gumbel
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pyro
import torch

from ..base import batch_to
from .. import validation as V
from ..training import runs
from ..checkpoint import atomic_json_save
from ..infer.discrete.estimators import ESTIMATORS
from ..infer.discrete.comparison import compare_estimators
from ..training.loop import resolve_device
from .user_pair import SPEC_HELP, load_user_pair

from . import begin, canonical, run_folder

MODELS = ("categorical_mixture", "categorical_vae")  # registry names (pyro_lvm.tasks.REGISTRY)
_RESULTS = "it measures gradient estimators and trains no model to reuse; its results are table.md and comparison.json"
NOT_APPLICABLE = {"evaluate": _RESULTS, "sample": _RESULTS, "interpolate": _RESULTS}


def add_compare_estimators_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="categorical_mixture", type=canonical, choices=MODELS,
                   help="built-in pair to compare on")
    p.add_argument("--pair", default=None, metavar="FILE.py:FUNCTION",
                   help=f"{SPEC_HELP}; overrides --model")
    p.add_argument("--estimators", nargs="+", default=None, choices=list(ESTIMATORS),
                   help="default: every estimator that applies to the pair (the others are listed with the reason)")
    p.add_argument("--num-particles", type=V.Integer(1, optional=True).cli, default=None,
                   help="particles per estimate for every estimator (default: each estimator's own)")
    p.add_argument("--reference-repeats", type=V.Integer(2, optional=True).cli, default=None,
                   help="draws behind a sampled bias reference (mixed or large latent spaces; default 4 x repeats)")
    p.add_argument("--temperatures", type=V.positive_number.cli, nargs="+", default=[1.0, 0.5, 0.1])
    p.add_argument("--repeats", type=V.Integer(2).cli, default=200, help="gradient draws per estimator")
    p.add_argument("--classes", type=V.Integer(2).cli, default=10, help="K: mixture components or classes per VAE latent")
    p.add_argument("--latents", type=V.positive_int.cli, default=2, help="N categorical latents of the VAE")
    p.add_argument("--n", type=V.positive_int.cli, default=100, help="datapoints in the batch")
    p.add_argument("--max-enum-size", type=V.positive_number.cli, default=1e5)
    p.add_argument("--device", default="cpu", type=V.device_rule.cli, help="cpu, cuda or cuda:N (memory is then CUDA peak allocation)")
    p.add_argument("--curve-steps", type=V.non_negative_int.cli, default=0, help="also train each estimator this many steps (ELBO vs time)")
    p.add_argument("--curve-lr", type=V.positive_number.cli, default=1e-2)
    p.add_argument("--seed", type=V.seed_rule.cli, default=0)
    runs.add_run_arguments(p, resume=False)
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--out", default="runs/compare_estimators")


add_arguments = add_compare_estimators_arguments


def build(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """``(pair, batch, description)`` for the arguments."""
    if args.pair:
        pair, batch = load_user_pair(args.pair)
        return pair, batch, args.pair
    if args.model == "categorical_mixture":
        from ..models.categorical_mixture import CategoricalMixture

        return (CategoricalMixture(args.classes), CategoricalMixture.simulate(args.n, args.classes, seed=args.seed),
                f"categorical mixture, K={args.classes}, {args.n} points")
    from ..data import load_digits_data
    from ..models.categorical_vae import CategoricalVAE

    data = load_digits_data(binarize=True, seed=args.seed)
    pair = CategoricalVAE(data.x_dim, args.latents, args.classes, hidden=(64,), max_enum_size=args.max_enum_size)
    return pair, data.train[: args.n], f"categorical VAE {args.latents}x{args.classes} on {args.n} digits"


def main(args: argparse.Namespace) -> dict[str, Any]:
    config = begin(args, "compare_estimators")
    pyro.clear_param_store()
    device = resolve_device(args.device)
    pair, batch, what = build(args)
    with run_folder(args, config) as out:
        return _compare(args, out, pair, batch, what, device)


def _compare(args: argparse.Namespace, out: Path, pair: Any, batch: Any, what: str, device: torch.device
             ) -> dict[str, Any]:
    if isinstance(pair, torch.nn.Module):
        pair.to(device)
    batch = batch_to(batch, device)
    cmp = compare_estimators(pair, batch, args.estimators, temperatures=args.temperatures, repeats=args.repeats,
                             max_enum_size=args.max_enum_size, curve_steps=args.curve_steps, curve_lr=args.curve_lr,
                             num_particles=args.num_particles, reference_repeats=args.reference_repeats,
                             seed=args.seed)
    markdown = f"Estimators on {what}\n\n{cmp.to_markdown()}\n"
    (out / "table.md").write_text(markdown)
    cmp.to_csv(out / "table.csv")
    cmp.to_json(out / "comparison.json")
    figures = [] if args.no_figures else [str(p) for p in cmp.plot(out)]
    metrics = {"pair": what, "exact_available": cmp.exact_available, "reference": cmp.reference,
               "latent_size": cmp.latent_size, "rows": cmp.table(), "skipped": cmp.skipped, "figures": figures,
               "table": str(out / "table.md")}
    atomic_json_save(metrics, out / "metrics.json")
    return metrics


def cli_compare_estimators(args: argparse.Namespace) -> dict[str, Any]:
    """``pyro-lvm compare-estimators``: prints the markdown table, returns a short summary."""
    metrics = main(args)
    print(Path(metrics["table"]).read_text())
    return {"table": metrics["table"], "figures": metrics["figures"], "exact_available": metrics["exact_available"]}
