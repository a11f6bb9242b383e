"""ProdLDA against scikit-learn's LDA on 20 Newsgroups at K = 50: NPMI over seeds. The code
that ``benchmarks/topic_20ng.py`` (which adds the LDA rows and a speed ratio) and
``pyro-lvm reproduce prodlda-20ng`` share.

Data: the NVDM bag of words (11,268 train / 7,505 test documents, 2,000 words) with
scikit-learn's English stop words removed from the vocabulary (1,802 words left). ProdLDA
(Laplace prior, logistic-normal posterior, the paper's set-up with alpha = 1) and
scikit-learn's online LDA run once per seed; each row gives the first seed's full report
(NPMI of the top 10 words from document co-occurrence in the test documents and in all
documents, diversity, perplexity, wall time), each seed's NPMI and their mean and spread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import pyro
import torch

from ..checkpoint import set_seed
from ..data.bow import BowCorpus
from ..models.topic import ProdLDA
from ..tasks import topic as topic_task
from ..models.topic.metrics import heldout_log_likelihood, perplexity, topic_diversity, topic_report
from ..training.loop import fit
from . import Budget, Reproduction, data_path

ANCHOR = "0.231-0.251 (mean ~0.244), Srivastava & Sutton's released code"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the shared part (the benchmark adds its own)."""
    p.add_argument("--data", default=None, help="your copy of the NVDM 20ng.zip, or its folder (docs/data.md)")
    p.add_argument("--dataset", default="20ng", choices=["20ng", "lee"],
                   help="lee: the Lee news corpus inside gensim's wheel instead (a smoke run)")
    p.add_argument("--topics", type=int, default=50)
    p.add_argument("--prodlda-epochs", type=int, default=150)
    p.add_argument("--prodlda-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                   help="one ProdLDA (and one scikit-learn LDA) run per seed; NPMI reported per seed and as a mean")
    p.add_argument("--sklearn-iter", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--samples", type=int, default=20, help="importance samples per test document")
    p.add_argument("--keep-stop-words", action="store_true")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("--out", default="benchmarks/results/topic_20ng.json")
    return p


def load_data(args: argparse.Namespace) -> tuple[BowCorpus, BowCorpus]:
    """``(train, test)`` on one vocabulary, as ``pyro-lvm train prodlda`` loads them (20NG less
    scikit-learn's stop words, or the embedded Lee corpus with the task's defaults)."""
    task_parser = argparse.ArgumentParser()
    topic_task.add_arguments(task_parser)
    options = ["--dataset", args.dataset, *(["--data-path", str(data_path(args, "your copy of 20ng.zip"))] if args.dataset == "20ng" else []),
               *(["--keep-stop-words"] if args.keep_stop_words else [])]
    return topic_task.load_corpus(task_parser.parse_args(options))


def evaluate(name, topic_word, train, test, seconds, extra=None, model=None, samples=20) -> dict:
    rep = topic_report(topic_word, train.vocab, test.counts)
    everything = torch.cat([train.counts, test.counts])
    row = {"model": name, "npmi_test_docs": round(rep["npmi"], 4),
           "npmi_all_docs": round(topic_report(topic_word, train.vocab, everything)["npmi"], 4),
           "diversity": round(rep["diversity"], 4), "train_seconds": round(seconds, 1),
           "top_words_first_10_topics": [" ".join(w) for w in rep["top_words"][:10]],
           "npmi_per_topic": rep["npmi_per_topic"]}
    if model is not None:
        held = heldout_log_likelihood(model, test.counts, num_samples=samples)
        row["perplexity_elbo"] = round(perplexity(held["elbo"], held["words"]), 1)
        row["perplexity_is"] = round(perplexity(held["log_lik"], held["words"]), 1)
        row["perplexity_note"] = f"ours: held-out ELBO and {samples}-sample importance sampling over theta, topics at their point value"
    row.update(extra or {})
    print(json.dumps({k: v for k, v in row.items() if k not in ("npmi_per_topic",)}, indent=1), flush=True)
    return row


def with_seeds(row: dict, runs: list, train, test) -> dict:
    """Add each seed's NPMI to ``row`` (the first seed's full report) and their mean and spread.

    ``runs``: ``(seed, topic_word (K, V), train seconds)`` per seed, the first being ``row``'s.
    """
    everything = torch.cat([train.counts, test.counts])
    by_seed = [{"seed": seed, "npmi_test_docs": round(topic_report(tw, train.vocab, test.counts)["npmi"], 4),
                "npmi_all_docs": round(topic_report(tw, train.vocab, everything)["npmi"], 4),
                "diversity": round(topic_diversity(tw, 25), 4), "train_seconds": round(secs, 1)}
               for seed, tw, secs in runs]
    row["by_seed"] = by_seed
    for key in ("npmi_test_docs", "npmi_all_docs", "diversity"):
        vals = [r[key] for r in by_seed]
        row[f"{key}_mean"] = round(statistics.fmean(vals), 4)
        row[f"{key}_std"] = round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0
    print(json.dumps({"model": row["model"], "by_seed": by_seed}), flush=True)
    return row


def train_pyro(model, train_counts, elbo, epochs, batch_size, lr, seed):
    set_seed(seed)
    t0 = time.perf_counter()
    history = fit(model, train_counts, elbo=elbo, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                  progress=False)
    return time.perf_counter() - t0, history


def prodlda_row(args: argparse.Namespace, train: BowCorpus, test: BowCorpus) -> dict:
    """ProdLDA (Laplace prior, logistic-normal posterior): the paper's set-up, alpha = 1, one
    run per seed (the published NPMI is a range over runs); the first seed's run is reported
    in full, the others by their coherence."""
    k, v = args.topics, len(train.vocab)
    runs = []
    for seed in args.prodlda_seeds:
        set_seed(seed)  # the initial weights too: each seed's run is the same in every process
        model = ProdLDA(v, k, hidden=100, dropout=0.2, alpha=1.0)
        secs, hist = train_pyro(model, train.counts, pyro.infer.TraceMeanField_ELBO(), args.prodlda_epochs,
                                args.batch_size, 2e-3, seed)
        runs.append((seed, model, secs, hist))
    seed, model, secs, hist = runs[0]
    row = evaluate("ProdLDA (logistic-normal, Laplace prior)", model.topic_word_logits(), train, test, secs,
                   {"epochs": args.prodlda_epochs, "lr": 2e-3, "final_train_loss": hist["train_loss"][-1]},
                   model, args.samples)
    return with_seeds(row, [(s_, m.topic_word_logits(), t) for s_, m, t, _ in runs], train, test)


def sklearn_row(args: argparse.Namespace, train: BowCorpus, test: BowCorpus) -> dict:
    """scikit-learn's online variational Bayes LDA on the same counts, one run per seed of ProdLDA's."""
    from sklearn.decomposition import LatentDirichletAllocation

    runs = []
    for seed in args.prodlda_seeds:
        t0 = time.perf_counter()
        sk = LatentDirichletAllocation(n_components=args.topics, learning_method="online", max_iter=args.sklearn_iter,
                                       batch_size=args.batch_size, random_state=seed, n_jobs=1)
        sk.fit(train.sparse())
        runs.append((seed, sk, time.perf_counter() - t0))
    seed, sk, secs = runs[0]
    sk_ppl = float(sk.perplexity(test.sparse()))
    row = evaluate("scikit-learn LatentDirichletAllocation (online VB)", torch.as_tensor(sk.components_),
                   train, test, secs, {"max_iter": args.sklearn_iter, "perplexity_sklearn_bound": round(sk_ppl, 1),
                                       "perplexity_note": "scikit-learn's own variational bound on the test set"})
    return with_seeds(row, [(s_, torch.as_tensor(m.components_), t) for s_, m, t in runs], train, test)


def run(args: argparse.Namespace) -> dict:
    """The ProdLDA and scikit-learn rows (the benchmark's rows 1 and 5, the same numbers)."""
    torch.set_num_threads(1)
    train, test = load_data(args)
    rows = [prodlda_row(args, train, test), sklearn_row(args, train, test)]
    return {"benchmark": "topic_20ng_prodlda", "data": {"train": train.summary(), "test": test.summary()},
            "topics": args.topics, "seeds": args.prodlda_seeds, "rows": rows, "anchor": ANCHOR}


REPRODUCTION = Reproduction(
    name="prodlda-20ng",
    title="ProdLDA NPMI on 20 Newsgroups, K = 50 (all-document reference), against scikit-learn's LDA",
    anchor=f"Srivastava & Sutton 2017 (ICLR), ProdLDA topic coherence on 20 Newsgroups at K = 50: {ANCHOR}",
    target=">= 0.24 and above scikit-learn",
    script="benchmarks/topic_20ng.py", parser=parser, run=run,
    ours=lambda r: (f"ProdLDA NPMI {r['rows'][0]['npmi_all_docs_mean']:.3f} ± {r['rows'][0]['npmi_all_docs_std']:.3f} "
                    f"vs scikit-learn {r['rows'][1]['npmi_all_docs_mean']:.3f} ± {r['rows'][1]['npmi_all_docs_std']:.3f} "
                    f"({len(r['seeds'])} seed(s), K = {r['topics']}, {r['data']['train']['name']})"),
    budgets={"quick": Budget(["--prodlda-seeds", "0", "--prodlda-epochs", "20", "--sklearn-iter", "2",
                              "--samples", "5"], 1.3),
             "standard": Budget(["--prodlda-seeds", "0", "1", "--prodlda-epochs", "100", "--sklearn-iter", "5"], 6.7),
             "full": Budget([], 21.4)},
    data=("20ng.zip", "--data"),
    embedded=["--dataset", "lee", "--topics", "10"],
    get_data="the NVDM bag-of-words 20 Newsgroups (train.feat, test.feat, vocab.new), e.g. as 20ng.zip",
    notes="the full budget is the ProdLDA and scikit-learn rows of that command (it also trains three LDA variants); "
          "NPMI depends on the reference corpus and preprocessing: ours removes scikit-learn's stop words",
)
