"""Task ``categorical_vae``: train the categorical VAE (N x K categorical latents) with a chosen estimator.

Trains :class:`~pyro_lvm.models.categorical_vae.CategoricalVAE` with the objective of
``--estimator`` (Gumbel-softmax with the exact categorical KL by default) and Jang et al.'s
temperature annealing ``tau = max(min, exp(-rate * step))``; evaluates the discrete model's
-ELBO on the validation and test sets and an importance-sampled test log-likelihood.

Outputs under ``--out``: ``metrics.json``, ``config.json``, checkpoints, ``history.json`` and
PNG figures (reconstructions, prior samples, training curves).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from .. import plots, validation as V
from ..training import runs
from ..checkpoint import atomic_json_save, load_best_or_last, load_module_state
from ..data import load_images
from ..infer.discrete.estimators import ESTIMATORS, TemperatureAnnealing
from ..evaluation.metrics import log_likelihood
from ..models.categorical_vae import CategoricalVAE
from ..training.loop import fit
from . import begin, run_folder

NOT_APPLICABLE = {"interpolate": "its codes are discrete (N x K categorical), with no line between two of them"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", choices=["digits", "binarized-mnist", "mnist"],
                   help="digits ships with scikit-learn (offline); the others need --data-path")
    p.add_argument("--data-path", default=None, help="folder with the data files for binarized-mnist/mnist")
    p.add_argument("--estimator", default="gumbel", choices=list(ESTIMATORS))
    p.add_argument("--latents", type=V.positive_int.cli, default=20, help="N categorical latents")
    p.add_argument("--classes", type=V.Integer(2).cli, default=10, help="K classes per latent")
    p.add_argument("--hidden", type=V.positive_int.cli, nargs="+", default=[256, 128],
                   help="encoder widths (Jang et al.: 512 256)")
    p.add_argument("--epochs", type=V.non_negative_int.cli, default=40)
    p.add_argument("--batch-size", type=V.positive_int.cli, default=100)
    p.add_argument("--lr", type=V.positive_number.cli, default=1e-3)
    p.add_argument("--temperature", type=V.positive_number.cli, default=1.0, help="initial temperature tau0")
    p.add_argument("--anneal-rate", type=V.non_negative_number.cli, default=1e-3,
                   help="tau = max(min, tau0 exp(-rate * step))")
    p.add_argument("--min-temperature", type=V.positive_number.cli, default=0.5)
    p.add_argument("--eval-samples", type=V.positive_int.cli, default=10, help="one-hot samples per -ELBO evaluation")
    p.add_argument("--samples", type=V.non_negative_int.cli, default=100,
                   help="importance samples for the test log-likelihood (0: skip)")
    p.add_argument("--seed", type=V.seed_rule.cli, default=0)
    p.add_argument("--device", default="cpu", type=V.device_rule.cli)
    runs.add_run_arguments(p, resume=False)
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", default="runs/categorical_vae")


def _neg_elbo(pair: CategoricalVAE, x: torch.Tensor, samples: int) -> float:
    return float(torch.cat([pair.negative_elbo(b, samples) for b in x.split(1000)]).mean())


def _build(config: dict, x_dim: int) -> CategoricalVAE:
    return CategoricalVAE(x_dim, config["latents"], config["classes"], hidden=tuple(config["hidden"]),
                          estimator=config["estimator"], temperature=config["temperature"])


def main(args: argparse.Namespace) -> dict[str, Any]:
    config = begin(args, "categorical_vae")
    pyro.clear_param_store()
    data = load_images(args.dataset, args.data_path, binarize=True, seed=args.seed)
    pair = _build(config, data.x_dim)
    objective = pair.objective()
    # annealed: the relaxations' temperature (REBAR/RELAX learn theirs; the others have none)
    anneal = ([TemperatureAnnealing(args.anneal_rate, args.min_temperature, tau0=args.temperature)]
              if ESTIMATORS[args.estimator].temperature and not objective.learns_temperature else [])
    with run_folder(args, config) as out:
        return _train(args, out, data, pair, objective, anneal)


def _train(args: argparse.Namespace, out: Path, data, pair: CategoricalVAE, objective: Any,
           anneal: list) -> dict[str, Any]:
    start = time.perf_counter()
    history = fit(pair, data.train, data.valid, elbo=objective, epochs=args.epochs,
                  batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
                  callbacks=anneal, checkpoint_dir=out, progress=args.progress,
                  metrics={"valid_neg_elbo": lambda p, x: _neg_elbo(p, x, 1)})
    seconds = time.perf_counter() - start
    pair.to("cpu").eval()
    metrics: dict[str, Any] = {
        "dataset": data.name, "estimator": args.estimator, "latents": args.latents, "classes": args.classes,
        "epochs": len(history), "train_seconds": seconds,
        "final_temperature": history.last().get("temperature"),
        "valid_neg_elbo": _neg_elbo(pair, data.valid, args.eval_samples),
        "test_neg_elbo": _neg_elbo(pair, data.test, args.eval_samples),
    }
    if args.samples > 0:
        metrics["test_log_likelihood"] = float(log_likelihood(pair, data.test, num_samples=args.samples).mean())
    if not args.no_figures:
        metrics["figures"] = [str(p) for p in plots.image_model_figures(
            pair, data.test[:10], data.image_shape, {args.estimator: history}, out,
            f"categorical VAE ({args.estimator})", curve_keys=("train_loss", "valid_neg_elbo"))]
    atomic_json_save(metrics, out / "metrics.json")
    return metrics


# ----------------------------------------------------------------------------- CLI verbs on a run folder

def load_run(run: str | Path) -> tuple[CategoricalVAE, Any, dict]:
    """``(pair, data, config)`` of a run folder written by :func:`main`."""
    config = runs.read_config(run)
    data = load_images(config["dataset"], config["data_path"], binarize=True, seed=config["seed"])
    pair = _build(config, data.x_dim)
    ckpt, path = load_best_or_last(run)
    load_module_state(pair, ckpt, path)
    return pair.eval(), data, config


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """-ELBO (``--samples`` one-hot draws per datapoint) and IS log-likelihood on ``--split``."""
    pair, data, _ = load_run(args.run)
    x = getattr(data, args.split)
    return {"split": args.split, "neg_elbo": _neg_elbo(pair, x, args.samples), "elbo_samples": args.samples,
            "log_likelihood": float(log_likelihood(pair, x, num_samples=args.samples).mean()),
            "log_likelihood_samples": args.samples, "seed": args.seed}


def sample(args: argparse.Namespace) -> dict[str, Any]:
    """A PNG grid of ``--num`` images decoded from codes drawn from the prior."""
    pair, data, _ = load_run(args.run)
    path = plots.image_grid(pair.sample(args.num), data.image_shape, args.out or Path(args.run) / "cli_samples.png",
                            title="samples from the prior")
    return {"figure": str(path), "num": args.num}
