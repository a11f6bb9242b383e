"""Latent symbol sequences on MASC (or PTB, or the embedded Wikipedia sentences): what L symbols
from an alphabet of K carry, and how the discrete estimators train and compare on this
structured latent (issue 18).

Parts (each writes into one JSON, ``--out``; figures next to it in ``--figures``):

1. **grid**: the autoencoder trained with ``--estimator`` for every (L, K) of ``--symbols`` x
   ``--alphabets``; test NLL (exact sum over the codes where there are at most
   ``--exact-codes``, else importance sampling), -ELBO, KL, reconstruction accuracy (teacher
   forcing from the most probable code), exact greedy reconstructions, and the mutual
   information between the symbol at each code position and the POS tag at each word position
   (MASC's Penn tags) above its chance level (codes shuffled across sentences), left out on a
   corpus without tags; the words most associated with each symbol of ``--figure-code`` on every
   corpus. An LSTM language model of the same size (no code) gives the accuracy a decoder
   reaches without one.
2. **estimators**: the pair with a small code (``--compare-code``, enumerable) trained with
   every estimator of the registry (:data:`pyro_lvm.infer.discrete.estimators.ESTIMATORS`), same
   budget; validation loss against wall time; test NLL (exact).
3. **harness**: :func:`pyro_lvm.infer.compare_estimators` at the trained small-code pair on a
   batch of test sentences: ELBO, gradient variance, bias against the exact (enumerated)
   gradient, time; its two figures.
4. **speed**: one straight-through training step through ``DiscreteELBO`` against the same
   step written by hand in PyTorch (same modules), interleaved rounds; the ratio.

    python benchmarks/symbol_sequences.py --data DATA/masc_tagged.zip     # the docs' numbers
    python benchmarks/symbol_sequences.py --data DATA/ptb.zip --parts grid   # or --data embedded (offline)
    python benchmarks/symbol_sequences.py --data DATA/masc_tagged.zip --subset 300 --eval-subset 50 \\
        --symbols 1 2 --alphabets 2 4 --epochs 1 --repeats 5 --out /tmp/sym_smoke.json --figures /tmp/sym_smoke
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import pyro
import torch

from pyro_lvm import set_seed
from pyro_lvm.data.text import bucket_loader
from pyro_lvm.infer.discrete.estimators import ESTIMATORS, DiscreteELBO, gumbel_softmax_log
from pyro_lvm.infer.discrete.comparison import compare_estimators
from pyro_lvm.models.text.sentence_vae import LSTMLanguageModel, WordCategorical
from pyro_lvm.models.text.symbol_sequences import symbol_tag_information, symbol_word_associations
from pyro_lvm.reproduce import data_path
from pyro_lvm.tasks import symbol_sequences as task
from pyro_lvm.training.loop import Callback, fit


def train_pair(args, data, vocab_size, L, K, estimator):
    row_args = argparse.Namespace(**{**vars(args), "symbols": L, "alphabet": K, "estimator": estimator})
    set_seed(args.seed)
    pyro.clear_param_store()
    model = task.build(row_args, vocab_size)
    elbo, callbacks = task.objective(row_args)
    loader = bucket_loader(data["train"], args.batch_size, seed=args.seed)
    clock = Clock()
    history = fit(model, loader, bucket_loader(data["valid"], 100, shuffle=False), elbo=elbo, epochs=args.epochs,
                  lr=args.lr, clip_norm=args.clip_norm, seed=args.seed, restore_best=True,
                  callbacks=[*callbacks, clock])
    seconds = time.perf_counter() - clock.start
    model.eval()
    return model, history, seconds


class Clock(Callback):
    """Logs the wall seconds since training began at each epoch's end (``wall_seconds``)."""

    def on_train_begin(self, state) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, state) -> None:
        state.logs["wall_seconds"] = time.perf_counter() - self.start


def lm_accuracy(args, data, vocab_size) -> dict:
    """Next-word accuracy and NLL of an LSTM LM of the same size: what a decoder gets without a code."""
    set_seed(args.seed)
    lm = LSTMLanguageModel(vocab_size, args.embed_dim, args.hidden_dim, max_len=args.max_len)
    loader = bucket_loader(data["train"], args.batch_size, seed=args.seed)
    t0 = time.perf_counter()
    fit(lm, loader, bucket_loader(data["valid"], 100, shuffle=False), elbo=pyro.infer.Trace_ELBO(),
        epochs=args.epochs, lr=args.lr, clip_norm=args.clip_norm, seed=args.seed, restore_best=True)
    lm.eval()
    right = total = 0
    nll = 0.0
    with torch.no_grad():
        for b in bucket_loader(data["test"], 100, shuffle=False):
            inputs, targets, mask = lm.split(b)
            logits = lm.decoder_logits(inputs, None)
            right += int(((logits.argmax(-1) == targets) & mask).sum())
            total += int(mask.sum())
            nll += float(-WordCategorical(logits).mask(mask).to_event(1).log_prob(targets).sum())
    return {"reconstruction_accuracy": right / total, "nll": nll / len(data["test"]),
            "train_seconds": round(time.perf_counter() - t0, 1)}


def grid(args, data, tags, vocab, corpus) -> list[dict]:
    rows = []
    for L in args.symbols:
        for K in args.alphabets:
            model, history, seconds = train_pair(args, data, len(vocab), L, K, args.estimator)
            test = task.evaluate_model(model, data["test"], args.samples, exact_codes=args.exact_codes)
            test["exact_reconstructions"], _ = task.exact_reconstructions(model, vocab, data["test"][:300])
            symbols = model.symbols(data["test"])
            row = {"L": L, "K": K, "bits": L * math.log2(K), "estimator": args.estimator, "kl_weight": args.kl_weight,
                   "epochs": len(history), "train_seconds": round(seconds, 1), "test": test,
                   "symbols_used": [len(set(symbols[:, p].tolist())) for p in range(L)]}
            if tags is not None:  # the alignment with POS tags needs a tagged corpus (MASC)
                info = symbol_tag_information(symbols, tags["test"], positions=args.positions)
                above = (torch.tensor(info["mi"]) - torch.tensor(info["chance"]))
                row.update(tag_information=info, max_mi_above_chance=float(above.max()),
                           mean_diagonal_mi_above_chance=float(torch.stack([above[i, i] for i in range(min(above.shape))]).mean()))
                if (L, K) == tuple(args.figure_code):
                    _heatmap(above, Path(args.figures) / "symbol_tag_information.png", L, K, args.estimator)
            print(f"[grid L={L} K={K}] {json.dumps({k: v for k, v in row.items() if k != 'tag_information'})}",
                  flush=True)
            rows.append(row)
            if (L, K) == tuple(args.figure_code):
                row["word_associations"] = symbol_word_associations(symbols, corpus.test, min_count=3)
    return rows


def estimators(args, data, vocab) -> tuple[dict, object]:
    L, K = args.compare_code
    out, kept = {}, None
    for name in ESTIMATORS:
        model, history, seconds = train_pair(args, data, len(vocab), L, K, name)
        test = task.evaluate_model(model, data["test"], args.samples)
        out[name] = {"train_seconds": round(seconds, 1), "test": test,
                     "curve": [{"epoch": e["epoch"], "wall_seconds": e["wall_seconds"], "valid_loss": e["valid_loss"]}
                               for e in history.epochs]}
        print(f"[estimator {name}] {json.dumps({k: v for k, v in out[name].items() if k != 'curve'})}", flush=True)
        if name == args.estimator:
            kept = model
    _curves(out, Path(args.figures) / "symbol_estimators_training.png", L, K)
    return out, kept


def harness(args, model, data) -> dict:
    batch = data["test"][:args.compare_batch]
    names = task.comparable_estimators(model, batch)
    cmp = compare_estimators(model, batch, names, temperatures=args.temperatures, repeats=args.repeats,
                             curve_steps=args.curve_steps, curve_every=max(args.curve_steps // 10, 1), seed=args.seed)
    folder = Path(args.figures) / "harness"
    figures = [str(p) for p in cmp.plot(folder)]
    print(cmp.to_markdown(), flush=True)
    return {**cmp.to_dict(), "markdown": cmp.to_markdown(), "figures": figures, "batch": len(batch)}


def handwritten_st_loss(model, tokens: torch.Tensor, tau: float) -> torch.Tensor:
    """Straight-through Gumbel-softmax negative ELBO, summed over the batch, in plain PyTorch."""
    logits = model.code_logits(tokens).log_softmax(-1)
    soft = gumbel_softmax_log(logits, tau).exp()
    hard = torch.nn.functional.one_hot(soft.argmax(-1), model.alphabet).to(soft) + soft - soft.detach()
    inputs, targets, mask = model.split(tokens)
    out = model.decoder_logits(inputs, hard.flatten(-2)).log_softmax(-1)
    rec = (out.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask).sum()
    kl = (logits.exp() * (logits + math.log(model.alphabet))).sum()
    return kl - rec


def speed(args, data, vocab) -> dict:
    L, K = args.speed_code
    row_args = argparse.Namespace(**{**vars(args), "symbols": L, "alphabet": K})
    set_seed(args.seed)
    model = task.build(row_args, len(vocab))
    batches = list(bucket_loader(data["train"], args.batch_size, seed=args.seed))[:args.speed_batches]
    elbo = DiscreteELBO("straight-through", 1.0, max_plate_nesting=1)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    pyro.enable_validation(False)

    def run(fn):
        t = time.process_time()
        for b in batches:
            loss = fn(b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.process_time() - t

    variants = {"pyro_lvm DiscreteELBO('straight-through')": lambda b: elbo.differentiable_loss(model.model, model.guide, b),
                "hand-written PyTorch": lambda b: handwritten_st_loss(model, b, 1.0)}
    # Same estimator: at equal random numbers the two losses agree (checked on one batch).
    pyro.set_rng_seed(0)
    a = float(variants["pyro_lvm DiscreteELBO('straight-through')"](batches[0]).detach())
    pyro.set_rng_seed(0)
    b = float(variants["hand-written PyTorch"](batches[0]).detach())
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.speed_rounds):
        for name, fn in variants.items():
            times[name].append(run(fn))
    tokens = sum(int((bb[:, 1:] != 0).sum()) for bb in batches)
    pyro_t, hand_t = times["pyro_lvm DiscreteELBO('straight-through')"], times["hand-written PyTorch"]
    return {"code": [L, K], "batches": len(batches), "tokens_per_round": tokens, "rounds": args.speed_rounds,
            "cpu_seconds": times, "loss_check": {"pyro_lvm": a, "hand_written": b},
            "tokens_per_cpu_second": {k: tokens / statistics.median(v) for k, v in times.items()},
            "ratio_median": statistics.median(h / p for h, p in zip(hand_t, pyro_t))}


def _heatmap(above: torch.Tensor, path: Path, L: int, K: int, estimator: str) -> None:
    from pyro_lvm.plots import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(6.5, 1.2 + 0.45 * L))
    image = ax.imshow(above.numpy(), cmap="viridis", aspect="auto")
    ax.set(xlabel="word position", ylabel="code position", xticks=range(above.shape[1]),
           xticklabels=[str(j + 1) for j in range(above.shape[1])], yticks=range(L),
           yticklabels=[str(i + 1) for i in range(L)],
           title=f"I(symbol; POS tag) - chance, nats (L={L}, K={K}, {estimator})")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    save_figure(fig, path)


def _curves(results: dict, path: Path, L: int, K: int) -> None:
    from pyro_lvm.plots import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(7, 3.8))
    for name, r in results.items():
        ax.plot([c["wall_seconds"] for c in r["curve"]], [c["valid_loss"] for c in r["curve"]], "o-", label=name)
    ax.set(xlabel="training wall time (s)", ylabel="validation loss (nats/sentence)",
           title=f"L={L}, K={K}: training by estimator")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    source = data_path(args, "your copy of masc_tagged.zip or ptb.zip, or --data embedded")
    data_args = argparse.Namespace(corpus=str(source), subset=args.subset, eval_subset=args.eval_subset, seed=args.seed,
                                   max_vocab=args.max_vocab, max_len=args.max_len)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        corpus, tags, vocab, data = task.prepare_data(data_args)
    result: dict = {"benchmark": "symbol_sequences", "command": "python " + " ".join(sys.argv),
                    "data": corpus.summary(), "vocab_size": len(vocab), "data_warnings": [str(w.message) for w in caught],
                    "setup": {k: v for k, v in vars(args).items() if k not in ("out", "figures")}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        result.update(wall_seconds=round(time.perf_counter() - t0, 1), cpu_seconds=round(time.process_time() - c0, 1),
                      load_average_1min=[round(load_before[0], 2), round(os.getloadavg()[0], 2)],
                      torch=torch.__version__, pyro=pyro.__version__, python=platform.python_version())
        out.write_text(json.dumps(result, indent=2, default=float) + "\n")

    if "grid" in args.parts:
        result["lm_baseline"] = lm_accuracy(args, data, len(vocab))
        result["grid"] = grid(args, data, tags, vocab, corpus)
        save()
    if "estimators" in args.parts or "harness" in args.parts:
        result["estimators"], model = estimators(args, data, vocab)
        save()
        if "harness" in args.parts:
            result["harness"] = harness(args, model, data)
            save()
    if "speed" in args.parts:
        result["speed"] = speed(args, data, vocab)
        save()
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None,
                   help="your copy of NLTK's masc_tagged.zip or of ptb.zip (docs/data.md), or embedded (offline)")
    p.add_argument("--parts", nargs="+", default=["grid", "estimators", "harness", "speed"],
                   choices=["grid", "estimators", "harness", "speed"])
    p.add_argument("--subset", type=int, default=8000, help="first N training sentences")
    p.add_argument("--eval-subset", type=int, default=1000, help="first N valid/test sentences")
    p.add_argument("--max-vocab", type=int, default=5000)
    p.add_argument("--max-len", type=int, default=30)
    p.add_argument("--symbols", type=int, nargs="+", default=[1, 2, 4, 8], help="L values of the grid")
    p.add_argument("--alphabets", type=int, nargs="+", default=[2, 16, 64], help="K values of the grid")
    p.add_argument("--figure-code", type=int, nargs=2, default=[8, 16], help="(L, K) of the alignment heatmap")
    p.add_argument("--positions", type=int, default=8, help="word positions of the alignment")
    p.add_argument("--compare-code", type=int, nargs=2, default=[2, 4], help="(L, K) of the estimator parts (enumerable)")
    p.add_argument("--speed-code", type=int, nargs=2, default=[4, 16])
    p.add_argument("--estimator", default="straight-through", choices=list(ESTIMATORS))
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--hidden-dim", type=int, default=128)
    p.add_argument("--symbol-dim", type=int, default=32)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--clip-norm", type=float, default=5.0)
    p.add_argument("--kl-weight", type=float, default=1.0, help="KL weight in training (0: autoencoder)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--anneal-rate", type=float, default=1e-4)
    p.add_argument("--min-temperature", type=float, default=0.5)
    p.add_argument("--samples", type=int, default=100, help="importance samples where the codes are too many to sum")
    p.add_argument("--exact-codes", type=int, default=256,
                   help="sum the test NLL exactly up to this many codes (K**L decoder passes per sentence)")
    p.add_argument("--compare-batch", type=int, default=32)
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.5, 0.1])
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--curve-steps", type=int, default=60)
    p.add_argument("--speed-batches", type=int, default=10)
    p.add_argument("--speed-rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/symbol_sequences.json")
    p.add_argument("--figures", default="benchmarks/results/symbol_sequences")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
