"""Task ``gumbel_vae``: train the categorical VAE (N x K categorical latents) with a chosen estimator.

Trains :class:`~pyro_lvm.models.discrete_vae.CategoricalVAE` with the objective of
``--estimator`` (Gumbel-softmax with the exact categorical KL by default) and Jang et al.'s
temperature annealing ``tau = max(min, exp(-rate * step))``; evaluates the discrete model's
-ELBO on the validation and test sets and an importance-sampled test log-likelihood.

Outputs under ``--out``: ``metrics.json``, ``config.json``, checkpoints, ``history.json`` and
PNG figures (reconstructions, prior samples, training curves).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from .. import plots
from ..checkpoint import atomic_json_save, set_seed
from ..data import load_images
from ..infer.discrete import ESTIMATORS, TemperatureAnnealing
from ..metrics import log_likelihood
from ..models.discrete_vae import CategoricalVAE
from ..train import fit


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", choices=["digits", "binarized-mnist", "mnist"],
                   help="digits ships with scikit-learn (offline); the others need --data-path")
    p.add_argument("--data-path", default=None, help="folder with the data files for binarized-mnist/mnist")
    p.add_argument("--estimator", default="gumbel", choices=list(ESTIMATORS))
    p.add_argument("--latents", type=int, default=20, help="N categorical latents")
    p.add_argument("--classes", type=int, default=10, help="K classes per latent")
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 128], help="encoder widths (Jang et al.: 512 256)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--temperature", type=float, default=1.0, help="initial temperature tau0")
    p.add_argument("--anneal-rate", type=float, default=1e-3, help="tau = max(min, tau0 exp(-rate * step))")
    p.add_argument("--min-temperature", type=float, default=0.5)
    p.add_argument("--eval-samples", type=int, default=10, help="one-hot samples per -ELBO evaluation")
    p.add_argument("--samples", type=int, default=100, help="importance samples for the test log-likelihood (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", default="runs/gumbel_vae")


def _neg_elbo(pair: CategoricalVAE, x: torch.Tensor, samples: int) -> float:
    return float(torch.cat([pair.negative_elbo(b, samples) for b in x.split(1000)]).mean())


def main(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(args.seed)
    pyro.clear_param_store()
    data = load_images(args.dataset, args.data_path, binarize=True, seed=args.seed)
    pair = CategoricalVAE(data.x_dim, args.latents, args.classes, hidden=tuple(args.hidden),
                          estimator=args.estimator, temperature=args.temperature)
    config = {"task": "gumbel_vae", **{k: v for k, v in vars(args).items() if k not in ("func",)}}
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    objective = pair.objective()
    # annealed: the relaxations' temperature (REBAR/RELAX learn theirs; the others have none)
    anneal = ([TemperatureAnnealing(args.anneal_rate, args.min_temperature, tau0=args.temperature)]
              if ESTIMATORS[args.estimator].temperature and not objective.learns_temperature else [])
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
        shape = data.image_shape
        test = data.test[:10]
        metrics["figures"] = [str(p) for p in (
            plots.image_rows({"input": test, "reconstruction": pair.reconstruct(test)}, shape,
                             out / "reconstructions.png", f"categorical VAE ({args.estimator})"),
            plots.image_grid(pair.sample(32), shape, out / "samples.png", title="samples from the prior"),
            plots.training_curves({args.estimator: history}, out / "training_curves.png",
                                  keys=("train_loss", "valid_neg_elbo")),
        )]
    atomic_json_save(metrics, out / "metrics.json")
    return metrics
