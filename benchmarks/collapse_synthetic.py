"""Posterior collapse on synthetic LSTM sequences: plain VAE vs each remedy, several seeds.

Runs the ``collapse`` task (pyro_lvm/tasks/collapse.py) once per seed (each seed draws its
own random LSTM, data and initialisation) and writes the per-seed test metrics and their
means/standard deviations to benchmarks/results/collapse_synthetic.json:
ELBO, NLL (importance sampled), KL, MI (nats per sequence) and active units per method.

    python benchmarks/collapse_synthetic.py                    # 3 seeds, ~10 minutes on one core
    python benchmarks/collapse_synthetic.py --seeds 0 --epochs 5

Expected: the plain VAE collapses (KL and MI near 0, no active unit); every remedy keeps KL
and MI clearly above 0.
"""

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from pyro_lvm.tasks import collapse

KEYS = ("elbo", "nll", "kl", "mi", "active_units", "train_seconds")


def main(argv=None) -> dict:
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
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "collapse_synthetic.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    per_seed, information = {}, {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in a.seeds:
            parser = argparse.ArgumentParser()
            collapse.add_arguments(parser)
            args = parser.parse_args(["--seed", str(seed), "--epochs", str(a.epochs), "--samples", str(a.samples),
                                      "--vocab", str(a.vocab), "--n-train", str(a.n_train),
                                      "--n-valid", str(a.n_valid), "--n-test", str(a.n_test),
                                      "--warmup-epochs", str(a.warmup_epochs), "--methods", *a.methods,
                                      "--no-figures", "--out", f"{tmp}/seed{seed}"])
            run = collapse.main(args)
            per_seed[seed] = run["methods"]
            information[seed] = run["data"]["information_nats"]
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
    result = {
        "benchmark": "collapse_synthetic",
        "command": "python benchmarks/collapse_synthetic.py " + " ".join(argv if argv is not None else sys.argv[1:]),
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
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    for m in methods:
        s = summary[m]
        print(f"{m:11s} " + "  ".join(f"{k} {s[k]['mean']:.3f}±{s[k]['std']:.3f}" for k in KEYS))
    return result


if __name__ == "__main__":
    main()
