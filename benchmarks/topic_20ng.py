"""20 Newsgroups topic models at K = 50: ProdLDA, LDA (enumerated and collapsed) and
scikit-learn's LatentDirichletAllocation in one run, on one vocabulary and split.

    python benchmarks/topic_20ng.py --data DATA/20ng.zip

Data: the NVDM bag of words (11,268 train / 7,505 test documents, 2,000 words) with
scikit-learn's English stop words removed from the vocabulary (1,802 words left; the NVDM
vocabulary keeps them, and topics of "which/their/were" would measure nothing). Reported per
model: NPMI of each topic's top 10 words from document co-occurrence in the *test* documents
(and in all documents), topic diversity (unique share of the top 25), held-out perplexity
and training wall time (one thread). Enumerated LDA runs on a subsample of the training
documents (``--enum-docs``) because it touches a (K x B x L) tensor per batch; on that same
subsample, collapsed LDA trained from the same seed with the same Monte Carlo objective
follows the same path, and the two objectives are compared on identical parameters.
ProdLDA and scikit-learn's LDA run once per seed of ``--prodlda-seeds`` (default 5: the
published ProdLDA NPMI is a range over runs); their rows give the first seed's full report,
each seed's NPMI and the mean and standard deviation over seeds (the code of those two rows
is pyro_lvm.reproduce.topic_20ng, shared with `pyro-lvm reproduce prodlda-20ng`).
Also: one ProdLDA training step through ``fit()`` against a hand-written PyTorch step and a
stock Pyro SVI step (interleaved rounds, process CPU time, medians). Writes
benchmarks/results/topic_20ng.json; ``--speed-only`` runs only that timing (about a minute):

    python benchmarks/topic_20ng.py --data DATA/20ng.zip --speed-only   # -> results/topic_20ng_speed.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch

torch.set_num_threads(1)

from pyro_lvm import fit, set_seed  # noqa: E402
from pyro_lvm.models.topic import LDA, ProdLDA  # noqa: E402
from pyro_lvm.infer.scaling import full_data_elbo  # noqa: E402
from pyro_lvm.reproduce import interleaved_cpu_ms  # noqa: E402
from pyro_lvm.reproduce.topic_20ng import (add_arguments, evaluate, load_data, prodlda_row, sklearn_row,  # noqa: E402
                                           train_pyro)

ROOT = Path(__file__).resolve().parents[1]


def hand_written_prodlda_step_ratio(train, k, steps=40, batch=200, rounds=7):
    """Process CPU ms per step of ProdLDA trained three ways on the same batch: fit() (its
    TraceMeanField_ELBO, fused Adam), the same network and loss hand-written in PyTorch (fused
    Adam), and stock Pyro SVI (pyro.module, Pyro's per-parameter Adam). Each round runs
    ``steps`` steps of each in turn (interleaved, so machine noise hits all alike); the medians
    over ``rounds`` rounds and their ratios are reported."""
    v = len(train.vocab)
    x = train.counts[:batch]
    set_seed(0)
    model = ProdLDA(v, k)
    elbo = pyro.infer.TraceMeanField_ELBO()
    fit(model, x, elbo=elbo, epochs=3, batch_size=batch, progress=False)          # warm-up, validated once

    def fit_steps():
        fit(model, x, elbo=elbo, epochs=steps, batch_size=batch, progress=False, validate="never")

    set_seed(0)
    net = ProdLDA(v, k)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
    loc0, scale0 = net.prior_loc, net.prior_scale

    def step():
        a, b = net.encoder(x)
        scale = (0.5 * b).exp()
        z = a + scale * torch.randn_like(a)
        log_p = net.word_log_probs(z.softmax(-1))
        rec = (x * log_p).sum()
        kl = (torch.log(scale0 / scale) + (scale ** 2 + (a - loc0) ** 2) / (2 * scale0 ** 2) - 0.5).sum()
        loss = kl - rec
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def hand_steps():
        for _ in range(steps):
            step()

    set_seed(0)
    stock = ProdLDA(v, k)
    stock.train()

    def svi_model(counts):
        pyro.module("prodlda", stock)
        stock.model(counts)

    def svi_guide(counts):
        pyro.module("prodlda", stock)
        stock.guide(counts)
    svi = pyro.infer.SVI(svi_model, svi_guide, pyro.optim.Adam({"lr": 1e-3}), pyro.infer.TraceMeanField_ELBO())

    def svi_steps():
        with pyro.validation_enabled(False):
            for _ in range(steps):
                svi.step(x)

    times = interleaved_cpu_ms({"fit": fit_steps, "hand": hand_steps, "svi": svi_steps}, rounds, repeats=1, warmup=1)
    ms = {name: statistics.median(t) / steps for name, t in times.items()}
    return {"fit_step_ms": round(ms["fit"], 2), "hand_written_torch_step_ms": round(ms["hand"], 2),
            "pyro_svi_step_ms": round(ms["svi"], 2), "ratio": round(ms["fit"] / ms["hand"], 2),
            "pyro_svi_ratio": round(ms["svi"] / ms["hand"], 2),
            "ratio_per_round": [round(f / h, 2) for f, h in zip(times["fit"], times["hand"])],
            "batch": batch, "steps_per_round": steps, "rounds": rounds,
            "timing": "process CPU time, one thread, interleaved rounds, medians"}


def enum_vs_collapsed_same_parameters(model_collapsed, counts, k, v, num_docs, particles=200, seed=0):
    """Both objectives on the *same* parameters and the same guide draws, and their Monte Carlo spread."""
    enum = LDA(v, k, assignments="enumerated")
    enum.load_state_dict(model_collapsed.state_dict())
    enum.eval()
    model_collapsed.eval()
    out = {}
    for name, model, elbo in (("enumerated", enum, pyro.infer.TraceEnum_ELBO(max_plate_nesting=2)),
                              ("collapsed", model_collapsed, pyro.infer.Trace_ELBO())):
        elbo = full_data_elbo(elbo, num_docs, data_plate="documents")
        pyro.set_rng_seed(seed)
        with torch.no_grad():
            vals = torch.tensor([elbo.loss(model.model, model.guide, counts) for _ in range(particles)])
        out[name] = vals
    diff = (out["enumerated"] - out["collapsed"]).abs().max()
    mean_e, mean_c = float(out["enumerated"].mean()), float(out["collapsed"].mean())
    se = float(out["collapsed"].std() / math.sqrt(particles))
    return {"documents": int(counts.shape[0]), "particles": particles,
            "neg_elbo_enumerated": round(mean_e, 3), "neg_elbo_collapsed": round(mean_c, 3),
            "monte_carlo_standard_error": round(se, 3),
            "max_abs_difference_same_draws": float(diff), "max_relative_difference": float(diff / abs(mean_c)),
            "note": "same guide draws (same seed) for both objectives: the difference is float rounding; "
                    "the standard error is the Monte Carlo spread of either estimate"}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)  # the options of the ProdLDA and scikit-learn rows (pyro_lvm.reproduce.topic_20ng)
    p.add_argument("--lda-epochs", type=int, default=60)
    p.add_argument("--enum-docs", type=int, default=2000)
    p.add_argument("--enum-epochs", type=int, default=40)
    p.add_argument("--lda-alpha", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0, help="seed of the LDA runs and the subsample")
    p.add_argument("--speed-only", action="store_true",
                   help="only the ProdLDA step timing (fit vs hand-written vs Pyro SVI), a minute of CPU; "
                        "written to benchmarks/results/topic_20ng_speed.json unless --out")
    p.add_argument("--out", default=None, help="default: benchmarks/results/topic_20ng.json (topic_20ng_speed.json "
                                               "with --speed-only)")
    args = p.parse_args()
    if args.out is None:
        args.out = str(ROOT / "benchmarks" / "results" / ("topic_20ng_speed.json" if args.speed_only else "topic_20ng.json"))
    wall0 = time.perf_counter()

    train, test = load_data(args)
    k, v = args.topics, len(train.vocab)
    print(train.summary(), test.summary(), flush=True)
    if args.speed_only:
        speed = hand_written_prodlda_step_ratio(train, k)
        print(speed, flush=True)
        return write(args, {"benchmark": "topic_20ng (speed only)", "command": "python " + " ".join(sys.argv),
                            "data": {"train": train.summary()}, "topics": k,
                            "prodlda_step_vs_hand_written_pytorch": speed, "machine": machine()}, wall0)
    rows = [prodlda_row(args, train, test)]

    # Collapsed LDA, full training set
    set_seed(args.seed)
    model_c = LDA(v, k, assignments="collapsed", alpha=args.lda_alpha, eta=0.1)
    secs, hist = train_pyro(model_c, train.counts, model_c.objective(num_datapoints=len(train)), args.lda_epochs, args.batch_size, 1e-2, args.seed)
    rows.append(evaluate("LDA, collapsed z (TraceMeanField_ELBO)", model_c.topic_word_probs(), train, test, secs,
                         {"epochs": args.lda_epochs, "lr": 1e-2, "alpha": args.lda_alpha, "eta": 0.1}, model_c,
                         args.samples))
    agreement = enum_vs_collapsed_same_parameters(model_c, test.counts[:200], k, v, len(train))
    print(agreement, flush=True)

    # Enumerated LDA on a subsample, and collapsed LDA with the same Monte Carlo objective on it
    sub = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))[:args.enum_docs],
                       "20ng/train-subsample")
    same_path = {}
    for assignments, elbo in (("enumerated", pyro.infer.TraceEnum_ELBO(max_plate_nesting=2)),
                              ("collapsed", pyro.infer.Trace_ELBO())):
        set_seed(args.seed)  # both start from the same parameters
        m = LDA(v, k, assignments=assignments, alpha=args.lda_alpha, eta=0.1)
        secs, hist = train_pyro(m, sub.counts, full_data_elbo(elbo, len(sub), data_plate="documents"),
                                args.enum_epochs, args.batch_size, 1e-2, args.seed)
        same_path[assignments] = hist["train_loss"]
        rows.append(evaluate(f"LDA, {assignments} z ({type(elbo).__name__}), {len(sub)}-document subsample",
                             m.topic_word_probs(), train, test, secs,
                             {"epochs": args.enum_epochs, "lr": 1e-2, "alpha": args.lda_alpha, "eta": 0.1,
                              "train_documents": len(sub), "final_train_loss": hist["train_loss"][-1]}, m, args.samples))

    # scikit-learn online variational Bayes on the same counts
    rows.append(sklearn_row(args, train, test))

    speed = hand_written_prodlda_step_ratio(train, k)
    print(speed, flush=True)
    result = {
        "benchmark": "topic_20ng", "command": "python " + " ".join(sys.argv),
        "args": vars(args), "data": {"train": train.summary(), "test": test.summary(),
                                     "stop_words_removed": not args.keep_stop_words},
        "topics": k, "rows": rows,
        "enumerated_vs_collapsed_same_parameters": agreement,
        "enumerated_vs_collapsed_same_seed_train_loss": {
            "enumerated": [round(x, 3) for x in same_path["enumerated"]],
            "collapsed": [round(x, 3) for x in same_path["collapsed"]],
            "max_relative_difference": max(abs(a - b) / abs(b) for a, b in zip(same_path["enumerated"],
                                                                                same_path["collapsed"]))},
        "prodlda_step_vs_hand_written_pytorch": speed,
        "anchors": {"prodlda_npmi_published_k50": "0.231-0.251 (mean ~0.244), Srivastava & Sutton's released code"},
        "prodlda_npmi_all_docs_over_seeds": {"mean": rows[0]["npmi_all_docs_mean"], "std": rows[0]["npmi_all_docs_std"],
                                             "seeds": args.prodlda_seeds},
        "machine": machine(),
    }
    write(args, result, wall0)


def machine() -> dict:
    return {"platform": platform.platform(), "torch": torch.__version__, "pyro": pyro.__version__,
            "threads": torch.get_num_threads()}


def write(args, result: dict, wall0: float) -> None:
    result["total_wall_seconds"] = round(time.perf_counter() - wall0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} in {result['total_wall_seconds']} s")


if __name__ == "__main__":
    main()
