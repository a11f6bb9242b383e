"""Posterior collapse on synthetic LSTM sequences: the plain VAE against each remedy, several
seeds. The code of ``benchmarks/collapse_synthetic.py`` and of ``pyro-lvm reproduce
collapse-synthetic`` / ``collapse-he``.

Runs the ``collapse`` task (:mod:`pyro_lvm.tasks.collapse`) once per seed (each seed draws
its own random LSTM, data and initialisation) and summarises the per-seed test metrics
(ELBO, NLL by importance sampling, KL, MI in nats per sequence, active units) by their mean
and standard deviation per method.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time

import torch

from ..tasks import collapse
from . import Budget, Reproduction

KEYS = ("elbo", "nll", "kl", "mi", "active_units", "train_seconds")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--vocab", type=int, default=50, help="token types (He et al.'s synthetic data use 1000)")
    p.add_argument("--n-train", type=int, default=2000, help="training sequences (He et al.: 20,000)")
    p.add_argument("--n-valid", type=int, default=500)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--warmup-epochs", type=float, default=10, help="length of the anneal/sigmoid warm-up")
    p.add_argument("--methods", nargs="+", default=list(collapse.METHODS), choices=collapse.METHODS)
    p.add_argument("--out", default="benchmarks/results/collapse_synthetic.json")
    return p


def run(a: argparse.Namespace) -> dict:
    """Every seed's ``collapse`` run and the summary over seeds (the benchmark's result, less its command)."""
    torch.set_num_threads(1)
    per_seed, information = {}, {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in a.seeds:
            task_parser = argparse.ArgumentParser()
            collapse.add_arguments(task_parser)
            args = task_parser.parse_args(["--seed", str(seed), "--epochs", str(a.epochs), "--samples", str(a.samples),
                                           "--vocab", str(a.vocab), "--n-train", str(a.n_train),
                                           "--n-valid", str(a.n_valid), "--n-test", str(a.n_test),
                                           "--warmup-epochs", str(a.warmup_epochs), "--methods", *a.methods,
                                           "--no-figures", "--out", f"{tmp}/seed{seed}"])
            result = collapse.main(args)
            per_seed[seed] = result["methods"]
            information[seed] = result["data"]["information_nats"]
            print(f"seed {seed} done after {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    methods = list(per_seed[a.seeds[0]])
    summary = {}
    for m in methods:
        row = {}
        for k in KEYS:
            vals = [float(per_seed[s][m][k]) for s in a.seeds]
            row[k] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
        row["aggressive_epochs"] = [per_seed[s][m].get("aggressive_epochs") for s in a.seeds] if m == "aggressive" else None
        summary[m] = row
    return {
        "benchmark": "collapse_synthetic",
        "setup": f"random-LSTM sequences (vocab {a.vocab}, length 10) from a 1-d latent (mixture of 8 Gaussians); "
                 f"LSTM VAE, hidden 64, z_dim 1; {a.n_train}/{a.n_valid}/{a.n_test} train/valid/test; Adam 1e-3, batch 50; "
                 f"warm-up {a.warmup_epochs:g} epochs; "
                 "TraceMeanField_ELBO; metrics on test, nats per sequence; NLL by importance sampling",
        "epochs": a.epochs, "iwae_samples": a.samples, "seeds": a.seeds,
        "summary": summary, "per_seed": {str(s): v for s, v in per_seed.items()},
        "data_information_nats": {str(s): v for s, v in information.items()},
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": 1},
    }


def lowest_remedy_kl(r: dict) -> float:
    """The smallest test KL of any remedy (not the plain VAE) in any seed."""
    return min(v["kl"] for seed in r["per_seed"].values() for m, v in seed.items() if m != "vae")


HE_ANCHOR = ("He et al. 2019 (ICLR), Sec. 6.1, synthetic data (1,000 token types, 20,000 training sequences, "
             "1-d latent): the basic VAE's posterior collapses (posterior means at the prior's), aggressive "
             "training keeps a code; on Yahoo and Yelp the plain VAE's KL is 0.0")
TARGET = "plain ~0, remedies clearly > 0"

SMALL = Reproduction(
    name="collapse-synthetic",
    title="synthetic collapse (50 token types, 2,000 sequences): plain VAE KL vs linear annealing KL",
    anchor=HE_ANCHOR, target=TARGET,
    script="benchmarks/collapse_synthetic.py", parser=parser, run=run,
    ours=lambda r: (f"plain VAE KL {r['summary']['vae']['kl']['mean']:.2f} vs annealing KL "
                    f"{r['summary']['anneal']['kl']['mean']:.2f} nats ({len(r['seeds'])} seed(s))"),
    budgets={"quick": Budget(["--seeds", "0", "--epochs", "8", "--warmup-epochs", "3", "--methods", "vae", "anneal",
                              "--samples", "50"], 0.2),
             "standard": Budget(["--seeds", "0", "1", "2", "--methods", "vae", "anneal"], 2.2),
             "full": Budget([], 7.5)},
    notes="a smaller task than He et al.'s (vocabulary 50, 2,000 sequences); the data are generated, so every "
          "budget runs without --data",
)

HE = Reproduction(
    name="collapse-he",
    title="synthetic collapse at He et al.'s size: plain VAE KL vs the lowest remedy KL in any seed",
    anchor=HE_ANCHOR, target=TARGET,
    script="benchmarks/collapse_synthetic.py", parser=parser, run=run,
    ours=lambda r: (f"plain VAE KL {r['summary']['vae']['kl']['mean']:.4f} vs lowest remedy KL "
                    f"{lowest_remedy_kl(r):.2f} nats ({len(r['seeds'])} seed(s), {', '.join(r['summary'])})"),
    fixed=["--vocab", "1000", "--n-train", "20000", "--n-valid", "2000", "--n-test", "1000"],
    budgets={"quick": Budget(["--seeds", "0", "--epochs", "3", "--methods", "vae", "free-bits", "--samples", "50"], 1.6),
             "standard": Budget(["--seeds", "0", "--epochs", "15", "--warmup-epochs", "5",
                                 "--methods", "vae", "anneal", "free-bits"], 7.2),
             "full": Budget(["--epochs", "15", "--warmup-epochs", "5", "--methods", "vae", "anneal", "sigmoid",
                             "cyclical", "beta", "free-bits", "--out", "benchmarks/results/collapse_synthetic_he.json"],
                            27.0)},
    notes="quick trains for 3 epochs, plain VAE and free bits only; He et al.'s LSTM sizes and training length differ "
          "from ours (hidden 64, 15 epochs); the aggressive rows of the full table are separate runs "
          "(docs/posterior_collapse.md)",
)
