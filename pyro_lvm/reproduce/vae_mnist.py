"""Gaussian VAE (784-400-20, Bernoulli) on statically binarized MNIST: importance-sampled
log-likelihood. The code of ``benchmarks/vae_mnist_quality.py`` and ``pyro-lvm reproduce vae-mnist``.

Trains with ``fit()`` for a CPU-time budget, keeps the epoch with the best validation ELBO,
then estimates log p(x) on the validation split by importance sampling with K samples (the
IWAE bound; K = 5000 by default).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from ..checkpoint import set_seed
from ..data import load_binarized_mnist, load_digits_data
from ..evaluation.metrics import log_likelihood
from ..models import VAE
from ..training.loop import TimeLimit, fit
from . import Budget, Reproduction, data_path

ANCHORS = {"Rezende & Mohamed 2015 (1-layer VAE)": -89.9, "Burda et al. 2016 VAE k=1 (dynamic binarization)": -86.76}
TARGET = -95.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="your binarized_mnist folder with train.amat and valid.amat (docs/data.md)")
    p.add_argument("--dataset", default="binarized-mnist", choices=["binarized-mnist", "digits"],
                   help="digits: scikit-learn's 8x8 digits instead (ships with scikit-learn; a smoke run)")
    p.add_argument("--budget-minutes", type=float, default=30.0, help="CPU-time budget for training")
    p.add_argument("--max-epochs", type=int, default=1000)
    p.add_argument("--patience", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--samples", type=int, default=5000)
    p.add_argument("--eval-size", type=int, default=0, help="evaluate only the first N validation images (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--out", default="benchmarks/results/vae_mnist_quality.json")
    return p


def run(args: argparse.Namespace) -> dict:
    """Train and evaluate; returns the result (the benchmark writes it to ``args.out``)."""
    torch.set_num_threads(args.threads)
    data = load_binarized_mnist(data_path(args, "your copy of binarized_mnist/ (train.amat, valid.amat)")) if args.dataset == "binarized-mnist" else load_digits_data()
    set_seed(args.seed)
    vae = VAE(data.x_dim, 20, (400,))
    t0 = time.process_time()
    history = fit(vae, data.train, data.valid, epochs=args.max_epochs, batch_size=args.batch_size, lr=args.lr,
                  seed=args.seed, restore_best=True, patience=args.patience,
                  callbacks=[TimeLimit(args.budget_minutes * 60)], checkpoint_dir=args.checkpoint_dir,
                  resume=args.checkpoint_dir is not None, progress=False)
    train_cpu = time.process_time() - t0
    valid = data.valid[: args.eval_size] if args.eval_size else data.valid
    t1 = time.process_time()
    with torch.no_grad():
        ll = log_likelihood(vae, valid, num_samples=args.samples, batch_size=50)
    return {
        "benchmark": "vae_mnist_quality",
        "model": f"VAE {data.x_dim}-400-20, Bernoulli likelihood, Trace_ELBO, Adam",
        "data": data.name, "split_evaluated": "valid", "num_evaluated": int(len(valid)),
        "iwae_samples": args.samples,
        "valid_log_likelihood": float(ll.mean()),
        "valid_log_likelihood_stderr": float(ll.std() / len(ll) ** 0.5),
        "best_valid_elbo": -min(history["valid_loss"]),
        "epochs_trained": len(history),
        "train_cpu_seconds": train_cpu, "eval_cpu_seconds": time.process_time() - t1,
        "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "threads": args.threads,
        "torch": torch.__version__, "python": platform.python_version(),
        "curve": [{k: e[k] for k in ("epoch", "train_loss", "valid_loss", "cpu_seconds") if k in e} for e in history.epochs],
        "anchors": ANCHORS,
        "target": TARGET,
    }


REPRODUCTION = Reproduction(
    name="vae-mnist",
    title="VAE 784-400-20 on binarized MNIST: valid log p(x) (importance sampling)",
    anchor=f"{ANCHORS['Burda et al. 2016 VAE k=1 (dynamic binarization)']} nats: Burda et al. 2016 (IWAE), Table 1, "
           "VAE with 1 stochastic layer, k = 1, MNIST test set, dynamic binarization, 3,280 passes; "
           f"{ANCHORS['Rezende & Mohamed 2015 (1-layer VAE)']} for a 1-layer VAE (Rezende & Mohamed 2015)",
    target=f">= {TARGET:g} nats",
    script="benchmarks/vae_mnist_quality.py",
    parser=parser, run=run,
    ours=lambda r: (f"{r['valid_log_likelihood']:.2f} ± {r['valid_log_likelihood_stderr']:.2f} nats "
                    f"({r['data']}, K = {r['iwae_samples']}, {r['num_evaluated']} images, {r['epochs_trained']} epochs)"),
    budgets={"quick": Budget(["--budget-minutes", "1", "--samples", "100", "--eval-size", "1000"], 1.2),
             "standard": Budget(["--budget-minutes", "3", "--samples", "500", "--eval-size", "1000"], 3.3),
             "full": Budget(["--budget-minutes", "25", "--checkpoint-dir", "runs/mnist_quality"], 23.0)},
    data=("binarized_mnist", "--data"),
    embedded=["--dataset", "digits"],
    get_data="the statically binarized MNIST of Larochelle & Murray, train.amat and valid.amat",
    notes="ours is on the validation split (static binarization, no test file) and trained for a CPU-time budget; "
          "the anchors are test-set figures of far longer training",
)
