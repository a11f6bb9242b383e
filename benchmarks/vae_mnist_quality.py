"""Quality benchmark: Gaussian VAE (784-400-20, Bernoulli) on statically binarized MNIST.

Trains with fit() for a CPU-time budget, keeps the epoch with the best validation ELBO, then
estimates log p(x) on the validation split by importance sampling with K samples (the IWAE
bound; K=5000 by default). Writes benchmarks/results/vae_mnist_quality.json with the curve.

    python benchmarks/vae_mnist_quality.py --data /work/shared/data/binarized_mnist --budget-minutes 30

Published anchors (test split): about -89.9 nats for a 1-layer VAE (Rezende & Mohamed 2015,
as cited by Pythae); -86.76 (Burda et al. 2016, dynamically binarized, 3280 epochs).
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from pyro_lvm import fit, log_likelihood, set_seed
from pyro_lvm.data import load_binarized_mnist
from pyro_lvm.models import VAE
from pyro_lvm.train import TimeLimit


def main(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    data = load_binarized_mnist(args.data)
    set_seed(args.seed)
    vae = VAE(784, 20, (400,))
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
    result = {
        "benchmark": "vae_mnist_quality",
        "command": "python " + " ".join(sys.argv),
        "model": "VAE 784-400-20, Bernoulli likelihood, Trace_ELBO, Adam",
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
        "anchors": {"Rezende & Mohamed 2015 (1-layer VAE)": -89.9, "Burda et al. 2016 VAE k=1 (dynamic binarization)": -86.76},
        "target": -95.0,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=2))
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/binarized_mnist")
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


if __name__ == "__main__":
    main(parser().parse_args())
