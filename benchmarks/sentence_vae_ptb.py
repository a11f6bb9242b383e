"""The posterior-collapse table on Penn Treebank (Bowman et al. 2016; He et al. 2019).

Trains, on ``ptb.train.txt``, an LSTM language model and the sentence VAE with each remedy;
selects every model by its validation loss (best epoch restored, optional early stopping);
reports on ``ptb.test.txt``: NLL per sentence (importance sampling with ``--samples``
proposals, He et al. use 500), perplexity per token (words + <eos>) from that NLL, KL,
mutual information and active units (``pyro_lvm.diagnostics``), reconstruction accuracy,
and wall time per epoch. Rows whose remedy ``pyro_lvm.infer`` does not provide yet are
recorded as "not available yet" instead of being improvised here.

Rows: lm, vae, vae+anneal, vae+anneal+wdrop, vae+free-bits, vae+aggressive.
Targets (issue 4): some VAE within 1 nat of our LM's test NLL with KL >= 3 and AU >= 5;
the plain VAE collapses (KL < 0.5).

    # the table (hours on one CPU core; sizes are arguments)
    python benchmarks/sentence_vae_ptb.py --data ../shared/data/ptb.zip --epochs 30 --patience 3 \\
        --embed-dim 256 --hidden-dim 256 --z-dim 32 --samples 500
    # a smoke run of the whole path (< 2 minutes)
    python benchmarks/sentence_vae_ptb.py --data ../shared/data/ptb.zip --subset 500 --eval-subset 100 \\
        --epochs 1 --embed-dim 32 --hidden-dim 32 --z-dim 8 --samples 5 --out /tmp/ptb_smoke.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import pyro
import torch

from pyro_lvm import fit, set_seed
from pyro_lvm.data.text import bucket_epoch_callback, bucket_loader
from pyro_lvm.tasks import sentence_vae as task
from pyro_lvm.train import TimeLimit

ROWS = {  # name: (model kind, remedy, use word dropout)
    "lm": ("lm", "none", False),
    "vae": ("vae", "none", False),
    "vae+anneal": ("vae", "anneal", False),
    "vae+anneal+wdrop": ("vae", "anneal", True),
    "vae+free-bits": ("vae", "free-bits", False),
    "vae+aggressive": ("vae", "aggressive", False),
}
ANCHORS = {
    "Bowman et al. 2016, PTB (unverified)": {"lm": {"nll": 100, "ppl": 116}, "vae": {"nll": 101, "kl": 2, "ppl": 119}},
    "He et al. 2019, Yahoo/Yelp": "plain VAE KL 0.0; aggressive + annealing KL 5-7 with the best NLL",
}


def run_row(name: str, args: argparse.Namespace, data: dict, vocab_size: int) -> dict:
    kind, remedy, wdrop = ROWS[name]
    row_args = argparse.Namespace(**{**vars(args), "remedy": remedy, "word_keep": args.word_keep if wdrop else 1.0})
    try:
        elbo, callbacks, extra = task.remedy_setup(remedy if kind == "vae" else "none", row_args)
    except NotImplementedError as e:
        print(f"[{name}] skipped: {e}", flush=True)
        return {"status": "not available yet", "reason": str(e)}
    set_seed(args.seed)
    model = task.build(kind, row_args, vocab_size)
    loader = bucket_loader(data["train"], args.batch_size, seed=args.seed)
    limit = [TimeLimit(args.time_limit, clock="wall")] if args.time_limit else []
    t0 = time.perf_counter()
    history = fit(model, loader, task.eval_loader(data["valid"]), elbo=elbo, epochs=args.epochs, lr=args.lr,
                  clip_norm=args.clip_norm, seed=args.seed, patience=args.patience, restore_best=True,
                  progress=args.progress, callbacks=[bucket_epoch_callback(loader), *callbacks, *limit], **extra)
    wall = time.perf_counter() - t0
    model.eval()
    t1 = time.perf_counter()
    test = task.evaluate_model(model, data["test"], args.samples)
    row = {"status": "ok", "config": model.config(), "remedy": remedy, "epochs": len(history),
           "seconds_per_epoch": round(wall / max(len(history), 1), 1), "eval_seconds": round(time.perf_counter() - t1, 1),
           "best_valid_loss": min(history["valid_loss"]), "test": test}
    print(f"[{name}] {json.dumps({k: v for k, v in row.items() if k != 'config'})}", flush=True)
    return row


def targets(rows: dict) -> dict:
    ok = {k: r for k, r in rows.items() if r.get("status") == "ok"}
    out: dict = {}
    if "vae" in ok:
        out["plain_vae_collapses (KL < 0.5)"] = ok["vae"]["test"]["kl"] < 0.5
    if "lm" in ok:
        lm_nll = ok["lm"]["test"]["nll"]
        good = [k for k, r in ok.items() if k != "lm" and r["test"]["nll"] <= lm_nll + 1.0 and r["test"]["kl"] >= 3
                and (r["test"].get("active_units") or 0) >= 5]
        out["vae_within_1_nat_of_lm_with_kl>=3_and_au>=5"] = good
    return out


def markdown(rows: dict) -> str:
    lines = ["| model | test NLL | PPL | KL | MI | AU | rec. acc. | epochs | s/epoch |", "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, p=2: "–" if v is None else f"{v:.{p}f}" if isinstance(v, float) else str(v)  # noqa: E731
    for name, r in rows.items():
        if r.get("status") != "ok":
            lines.append(f"| {name} | {r.get('status')} | | | | | | | |")
            continue
        t = r["test"]
        lines.append(f"| {name} | {fmt(t['nll'])} | {fmt(t['ppl'], 1)} | {fmt(t['kl'])} | {fmt(t.get('mi'))} | "
                     f"{fmt(t.get('active_units'), 0)} | {fmt(t.get('reconstruction_accuracy'), 3)} | {r['epochs']} | "
                     f"{r['seconds_per_epoch']} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        raise ValueError(f"unknown rows {unknown}; choose from {list(ROWS)}")
    data_args = argparse.Namespace(corpus=args.data, subset=args.subset, eval_subset=args.eval_subset, seed=args.seed,
                                   max_vocab=args.max_vocab, min_freq=1, max_len=args.max_len)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        corpus, vocab, data = task.prepare_data(data_args)
    rows = {name: run_row(name, args, data, len(vocab)) for name in args.rows}
    result = {
        "benchmark": "sentence_vae_ptb",
        "command": "python " + " ".join(sys.argv),
        "data": corpus.summary(), "vocab_size": len(vocab), "max_len": args.max_len,
        "data_warnings": [str(w.message) for w in caught],
        "setup": {k: v for k, v in vars(args).items() if k not in ("out", "progress")},
        "rows": rows, "targets": targets(rows), "anchors": ANCHORS,
        "notes": "NLL in nats per sentence; PPL = exp(total NLL / (words + <eos>)); KL analytic, per sentence",
        "torch": torch.__version__, "pyro": pyro.__version__, "python": platform.python_version(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(rows))
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/ptb.zip", help="ptb.zip or a folder with ptb.{train,valid,test}.txt")
    p.add_argument("--rows", nargs="+", default=list(ROWS), help=f"which rows, of {list(ROWS)}")
    p.add_argument("--subset", type=int, default=None, help="first N training sentences only")
    p.add_argument("--eval-subset", type=int, default=None, help="first N valid/test sentences only")
    p.add_argument("--max-vocab", type=int, default=10004)
    p.add_argument("--max-len", type=int, default=60, help="PTB's longest training sentence has 82 words")
    p.add_argument("--embed-dim", type=int, default=256)
    p.add_argument("--hidden-dim", type=int, default=256)
    p.add_argument("--z-dim", type=int, default=32)
    p.add_argument("--encoder", default="lstm", choices=["lstm", "gru"])
    p.add_argument("--conditioning", default="init", choices=["init", "concat", "both"])
    p.add_argument("--word-keep", type=float, default=0.75, help="keep rate of the word-dropout row")
    p.add_argument("--anneal-steps", type=int, default=10000)
    p.add_argument("--free-bits", type=float, default=0.5)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--time-limit", type=float, default=None, help="wall seconds per row (stops after that epoch)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip-norm", type=float, default=5.0)
    p.add_argument("--samples", type=int, default=500, help="importance samples per test sentence")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", default="benchmarks/results/sentence_vae_ptb.json")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
