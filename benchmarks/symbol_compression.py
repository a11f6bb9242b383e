"""Miao & Blunsom's compression prior against the K-symbol code at the same L (issue 18).

Runs the task ``symbol_sequences`` (``pyro_lvm.tasks.symbol_sequences.main``, as
``pyro-lvm train symbol-sequences`` does) once per row, same data, sizes, estimator and budget, on
the offline default corpus (the Wikipedia sample in gensim's wheel) or on ``--data``, your copy of
``ptb.zip`` or ``masc_tagged.zip``:

* ``uniform-elbo``: K symbols, uniform prior, the ELBO (``--kl-weight 1``);
* ``uniform-ae``: the same code as an autoencoder (``--kl-weight 0``, Havrylov & Titov's games);
* ``compression``: ``--prior language_model``: L source words chosen by the pointer, scored by an
  LSTM language model trained first on the training sentences (``--prior-epochs``) and kept fixed;
  the ELBO;
* ``compression-ae``: the same latent words without the prior's term (``--kl-weight 0``).

Records each run's test metrics (reconstruction accuracy: the share of target tokens the
decoder's argmax gets right from the most probable code, teacher forcing; exact greedy
reconstructions; -ELBO; NLL by importance sampling), the LM prior's pretraining losses, and a few
test sentences with their codes and greedy reconstructions.

    python benchmarks/symbol_compression.py            # the docs' numbers (about 4 CPU minutes)
    python benchmarks/symbol_compression.py --subset 200 --eval-subset 20 --epochs 1 --out /tmp/c.json
    python benchmarks/symbol_compression.py --data DATA/ptb.zip --out PTB.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pyro
import torch

from pyro_lvm.tasks import symbol_sequences as task

ROWS = {
    "uniform-elbo": ["--prior", "uniform", "--kl-weight", "1"],
    "uniform-ae": ["--prior", "uniform", "--kl-weight", "0", "--anneal-rate", "0"],
    "compression": ["--prior", "language_model", "--kl-weight", "1"],
    "compression-ae": ["--prior", "language_model", "--kl-weight", "0", "--anneal-rate", "0"],
}


def task_args(args, row: str, out: Path) -> list[str]:
    alphabet = [] if row.startswith("compression") else ["--alphabet", str(args.alphabet)]
    return ["--corpus", args.data, "--subset", str(args.subset),
            "--eval-subset", str(args.eval_subset), "--max-vocab", str(args.max_vocab), "--max-len", str(args.max_len),
            "--symbols", str(args.symbols), *alphabet, "--epochs", str(args.epochs), "--batch-size", "64",
            "--embed-dim", str(args.embed_dim), "--hidden-dim", str(args.hidden_dim), "--symbol-dim", "32",
            "--estimator", args.estimator, "--samples", str(args.samples), "--prior-epochs", str(args.prior_epochs),
            "--seed", str(args.seed), "--out", str(out), *ROWS[row]]


def run_row(args, row: str, folder: Path) -> dict:
    argv = task_args(args, row, folder / row)
    p = argparse.ArgumentParser()
    task.add_arguments(p)
    cpu0, t0 = time.process_time(), time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the truncation warnings: counted in the task's data summary
        metrics = task.main(p.parse_args(argv))
    examples = [line for line in (folder / row / "codes.txt").read_text().splitlines()][:2 * args.examples]
    test = metrics["test"]
    shown = [a for i, a in enumerate(argv) if "--out" not in argv[max(i - 1, 0):i + 1]]
    return {"task_args": shown, "test": test, "train_seconds": metrics["train_seconds"],
            "wall_seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": round(time.process_time() - cpu0, 1),
            "vocab_size": metrics["vocab_size"], "alphabet": metrics["config"]["alphabet"],
            "prior_pretraining": metrics.get("prior_pretraining"),
            "symbols_used": metrics["symbols_used"], "examples": examples}


def main(args) -> dict:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    result = {"benchmark": "symbol_compression", "command": " ".join(["python", *sys.argv]), "setup": vars(args),
              "rows": {}, "load_average_1min": [round(os.getloadavg()[0], 2)], "torch": torch.__version__,
              "pyro": pyro.__version__, "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as tmp:
        for row in args.rows:
            result["rows"][row] = run_row(args, row, Path(tmp))
            print(row, {k: result["rows"][row]["test"].get(k) for k in ("reconstruction_accuracy", "exact_reconstructions",
                                                                         "neg_elbo", "nll", "kl")}, flush=True)
    result["load_average_1min"].append(round(os.getloadavg()[0], 2))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="embedded",
                   help="embedded (offline), or your copy of ptb.zip or masc_tagged.zip (docs/data.md)")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--subset", type=int, default=2000, help="first N training sentences")
    p.add_argument("--eval-subset", type=int, default=200, help="first N valid/test sentences")
    p.add_argument("--max-vocab", type=int, default=2000)
    p.add_argument("--max-len", type=int, default=20)
    p.add_argument("--symbols", type=int, default=4, help="L, the same for every row")
    p.add_argument("--alphabet", type=int, default=16, help="K of the uniform rows (the compression rows: the vocabulary)")
    p.add_argument("--estimator", default="straight-through")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--prior-epochs", type=int, default=3)
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--hidden-dim", type=int, default=128)
    p.add_argument("--samples", type=int, default=20, help="importance samples per test sentence for the NLL")
    p.add_argument("--examples", type=int, default=5, help="test sentences shown with their codes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/symbol_sequences_compression.json")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
