"""Task ``compare_estimators``: gradient variance, bias, time and memory of discrete-latent estimators.

Runs :func:`pyro_lvm.infer.estimators.compare_estimators` on a built-in pair (the toy
categorical mixture, where the exact gradient is available, or the categorical VAE on
digits) or on your own pair: ``--pair my_file.py:make`` where ``make()`` returns
``(pair, batch)``. Writes ``table.md``, ``table.csv``, ``comparison.json``, ``metrics.json``
and plots (variance and bias against temperature, ELBO against time) under ``--out``.

    pyro-lvm compare-estimators --model mixture --classes 10 --repeats 200
    pyro-lvm compare-estimators --pair my_pair.py:make --estimators rloo disarm gumbel
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

import pyro
import torch

from ..base import batch_to
from ..checkpoint import atomic_json_save, set_seed
from ..infer.discrete import ESTIMATORS
from ..infer.estimators import compare_estimators
from ..train import resolve_device

MODELS = ("mixture", "categorical-vae")


def add_compare_estimators_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="mixture", choices=MODELS, help="built-in pair to compare on")
    p.add_argument("--pair", default=None, metavar="FILE.py:FUNCTION",
                   help="your own pair: FUNCTION() in FILE.py returns (pair, batch); overrides --model")
    p.add_argument("--estimators", nargs="+", default=None, choices=list(ESTIMATORS),
                   help="default: every estimator that applies to the pair (the others are listed with the reason)")
    p.add_argument("--num-particles", type=int, default=None,
                   help="particles per estimate for every estimator (default: each estimator's own)")
    p.add_argument("--reference-repeats", type=int, default=None,
                   help="draws behind a sampled bias reference (mixed or large latent spaces; default 4 x repeats)")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.5, 0.1])
    p.add_argument("--repeats", type=int, default=200, help="gradient draws per estimator")
    p.add_argument("--classes", type=int, default=10, help="K: mixture components or classes per VAE latent")
    p.add_argument("--latents", type=int, default=2, help="N categorical latents of the VAE")
    p.add_argument("--n", type=int, default=100, help="datapoints in the batch")
    p.add_argument("--max-enum-size", type=float, default=1e5)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (memory is then CUDA peak allocation)")
    p.add_argument("--curve-steps", type=int, default=0, help="also train each estimator this many steps (ELBO vs time)")
    p.add_argument("--curve-lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--out", default="runs/compare_estimators")


add_arguments = add_compare_estimators_arguments


def load_user_pair(spec: str) -> tuple[Any, Any]:
    """Call ``FUNCTION()`` from ``FILE.py`` given as ``"FILE.py:FUNCTION"``; it returns ``(pair, batch)``."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise ValueError(f"--pair must look like FILE.py:FUNCTION, got {spec!r}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"--pair file not found: {path}")
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
    module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    if not callable(getattr(module, name, None)):
        raise ValueError(f"{path} defines no function {name!r}")
    result = getattr(module, name)()
    if not (isinstance(result, tuple) and len(result) == 2):
        raise ValueError(f"{spec}() must return (pair, batch), got {type(result).__name__}")
    return result


def build(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """``(pair, batch, description)`` for the arguments."""
    if args.pair:
        pair, batch = load_user_pair(args.pair)
        return pair, batch, args.pair
    if args.model == "mixture":
        from ..models.mixture import CategoricalMixture

        return (CategoricalMixture(args.classes), CategoricalMixture.simulate(args.n, args.classes, seed=args.seed),
                f"categorical mixture, K={args.classes}, {args.n} points")
    from ..data import load_digits_data
    from ..models.discrete_vae import CategoricalVAE

    data = load_digits_data(binarize=True, seed=args.seed)
    pair = CategoricalVAE(data.x_dim, args.latents, args.classes, hidden=(64,), max_enum_size=args.max_enum_size)
    return pair, data.train[: args.n], f"categorical VAE {args.latents}x{args.classes} on {args.n} digits"


def main(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    set_seed(args.seed)
    pyro.clear_param_store()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    pair, batch, what = build(args)
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
