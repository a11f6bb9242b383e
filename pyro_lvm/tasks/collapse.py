"""Task ``collapse``: posterior collapse and its remedies on a synthetic task where it happens for sure.

Sequences from a random LSTM driven by a 1-d latent (:mod:`pyro_lvm.models.collapse_toy`);
an LSTM VAE with a 1-d latent is trained with the plain ELBO and with each remedy of
:mod:`pyro_lvm.infer`, and evaluated on the test split: ELBO, importance-sampled NLL, KL,
mutual information ``I_q(x; z)`` and active units (:mod:`pyro_lvm.evaluation.diagnostics`).

Outputs under ``--out``: ``metrics.json`` (one entry per method), ``<method>/history.json``
and checkpoints, and ``collapse_curves.png`` (KL, MI, active units, KL weight per epoch).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pyro

from .. import validation as V
from ..training import runs
from ..checkpoint import atomic_json_save, load_best_or_last, load_module_state, set_seed
from ..evaluation.diagnostics import CollapseDiagnostics, collapse_summary, plot_collapse
from ..infer import AggressiveTraining, FreeBitsELBO, KLAnnealing
from ..models.collapse_toy import SequenceVAE, toy_splits
from ..training.loop import fit

from . import begin, run_folder

METHODS = ("vae", "anneal", "sigmoid", "cyclical", "beta", "free-bits", "aggressive")
NOT_APPLICABLE = {"sample": "the run compares KL remedies on synthetic sequences; evaluate re-scores each of them",
                  "interpolate": "the run compares KL remedies on synthetic sequences (a 1-d code, no inputs to show)"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                   help="vae: plain ELBO; anneal: linear KL warm-up 0.1 -> 1 (He et al.); sigmoid (Bowman et al.); "
                        "cyclical (Fu et al.); beta: constant KL weight --beta; free-bits: lambda per dimension; "
                        "aggressive: He et al.'s encoder inner loop")
    p.add_argument("--n-train", type=V.Integer(2).cli, default=2000)
    p.add_argument("--n-valid", type=V.Integer(2).cli, default=500)
    p.add_argument("--n-test", type=V.Integer(2).cli, default=500)
    p.add_argument("--vocab", type=V.Integer(2).cli, default=50)
    p.add_argument("--length", type=V.positive_int.cli, default=10)
    p.add_argument("--hidden", type=V.positive_int.cli, default=64, help="LSTM size of the VAE")
    p.add_argument("--epochs", type=V.non_negative_int.cli, default=30)
    p.add_argument("--batch-size", type=V.positive_int.cli, default=50)
    p.add_argument("--lr", type=V.positive_number.cli, default=1e-3)
    p.add_argument("--warmup-epochs", type=V.positive_number.cli, default=10, help="length of the anneal/sigmoid warm-up")
    p.add_argument("--cycles", type=V.positive_int.cli, default=4, help="cycles of the cyclical schedule over training")
    p.add_argument("--beta", type=V.non_negative_number.cli, default=0.5, help="KL weight of the 'beta' method")
    p.add_argument("--free-bits", type=V.non_negative_number.cli, default=0.5, help="lambda, nats per latent dimension")
    p.add_argument("--samples", type=V.positive_int.cli, default=200, help="importance samples for the test NLL")
    p.add_argument("--seed", type=V.seed_rule.cli, default=0, help="seed of the data (the LSTM) and of training")
    p.add_argument("--device", default="cpu", type=V.device_rule.cli, help="cpu, cuda or cuda:N")
    runs.add_run_arguments(p, resume=False)
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--out", default="runs/collapse")


def remedy(method: str, args: argparse.Namespace, steps_per_epoch: int, data: dict) -> tuple[Any, list]:
    """``(elbo, callbacks)`` of one method; every remedy is applied to the unchanged pair."""
    base = pyro.infer.TraceMeanField_ELBO()
    warmup = max(1, int(round(args.warmup_epochs * steps_per_epoch)))
    if method == "vae":
        return base, []
    if method == "anneal":
        return base, [KLAnnealing("linear", start=0.1, steps=warmup)]
    if method == "sigmoid":
        return base, [KLAnnealing("sigmoid", steps=warmup)]
    if method == "cyclical":
        period = max(1, (args.epochs * steps_per_epoch) // (args.cycles + 1))  # last stretch at weight 1
        return base, [KLAnnealing("cyclical", period=period, cycles=args.cycles, ratio=0.5)]
    if method == "beta":
        return base, [KLAnnealing("constant", value=args.beta)]
    if method == "free-bits":
        return FreeBitsELBO(args.free_bits), []
    if method == "aggressive":
        return base, [AggressiveTraining(data=data["train"], valid_data=data["valid"])]
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def _data(config: dict) -> dict:
    return toy_splits(config["n_train"], config["n_valid"], config["n_test"], seed=config["seed"],
                      vocab=config["vocab"], length=config["length"])


def main(args: argparse.Namespace) -> dict[str, Any]:
    config = begin(args, "collapse")
    data = _data(config)
    SequenceVAE(vocab=args.vocab, z_dim=1, hidden=args.hidden)  # refuses bad sizes before anything is written
    with run_folder(args, config) as out:
        return _train(args, out, data)


def _train(args: argparse.Namespace, out: Path, data: dict) -> dict[str, Any]:
    steps_per_epoch = -(-args.n_train // args.batch_size)
    metrics: dict[str, Any] = {"task": "collapse", "seed": args.seed, "epochs": args.epochs,
                               "data": {"train": args.n_train, "valid": args.n_valid, "test": args.n_test,
                                        "vocab": args.vocab, "length": args.length, "latent_dim": 1,
                                        # What a perfect code could hold: the generator's I(x; z), on test pairs.
                                        "information_nats": round(data["source"].mutual_information(
                                            data["test"][:500], data["z_test"][:500], grid=200), 3)},
                               "methods": {}}
    histories = {}
    for method in args.methods:
        set_seed(args.seed)
        pair = SequenceVAE(vocab=args.vocab, z_dim=1, hidden=args.hidden)
        elbo, callbacks = remedy(method, args, steps_per_epoch, data)
        t0 = time.perf_counter()
        history = fit(pair, data["train"], data["valid"], elbo=elbo, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, seed=args.seed, device=args.device, checkpoint_dir=out / method,
                      callbacks=[*callbacks, CollapseDiagnostics(data["valid"], batch_size=500, per_dimension=False)])
        seconds = time.perf_counter() - t0
        histories[method] = history
        result = collapse_summary(pair.eval(), data["test"], args.samples)
        result["train_seconds"] = round(seconds, 1)
        if method == "aggressive":
            result["aggressive_epochs"] = int(sum(history["aggressive"]))
        metrics["methods"][method] = result
        atomic_json_save(metrics, out / "metrics.json")
    if not args.no_figures:
        metrics["figure"] = str(plot_collapse(histories, out / "collapse_curves.png",
                                              title="validation KL, MI, active units; KL weight"))
    atomic_json_save(metrics, out / "metrics.json")
    return metrics


# ----------------------------------------------------------------------------- CLI verbs on a run folder

def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Each trained method's metrics (:func:`~pyro_lvm.evaluation.diagnostics.collapse_summary`) on ``--split``, data rebuilt from ``config.json``."""
    run = Path(args.run)
    config = runs.read_config(run)
    data = _data(config)
    x = data[args.split]
    report: dict[str, Any] = {"split": args.split, "samples": args.samples, "seed": args.seed, "methods": {}}
    for method in config["methods"]:
        if not (run / method).is_dir():
            continue
        pair = SequenceVAE(vocab=config["vocab"], z_dim=1, hidden=config["hidden"])
        ckpt, path = load_best_or_last(run / method)
        load_module_state(pair, ckpt, path)
        report["methods"][method] = collapse_summary(pair.eval(), x, args.samples)
    if not report["methods"]:
        raise FileNotFoundError(f"{run} holds no trained method folder (expected one of {config['methods']})")
    return report
