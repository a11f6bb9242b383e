"""Tasks ``prodlda`` and ``lda``: train a topic model on a bag-of-words corpus, print each
topic's top words, evaluate held-out perplexity, NPMI coherence and diversity, and draw the
document-topic posterior as ArviZ ``InferenceData``.

Corpora (``--dataset``): ``lee`` (default, offline: 300 news articles inside gensim's wheel),
``20ng`` (the NVDM ``20ng.zip``; ``--data-path``), ``texts`` (your documents: a file with one
per line or a folder of ``.txt`` files; ``--data-path``).

Outputs under ``--out``: ``metrics.json``, ``config.json``, ``topics.txt`` (top words with
NPMI per topic), ``theta_summary.csv`` (``az.summary`` of test documents' proportions),
checkpoints in ``model/`` and figures ``coherence_per_topic.png``, ``theta_forest.png``,
``training_curves.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from .. import validation as V
from ..training import runs
from ..checkpoint import atomic_json_save, load_best_or_last, load_module_state
from ..data.bow import BowCorpus, load_lee_background, load_nvdm, read_texts, split_texts
from ..models.topic import LDA, ProdLDA
from ..models.topic.metrics import format_topics, heldout_log_likelihood, perplexity, topic_report
from ..training.loop import History, fit

from . import begin, run_folder

MODELS = ("prodlda", "lda")
NOT_APPLICABLE = {"sample": "a topic model's draws are bags of words; its topics (top words) are in topics.txt",
                  "interpolate": "documents have no code to interpolate between"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, choices=MODELS,
                   help="which topic model (default: the task name, prodlda for the example script)")
    p.add_argument("--dataset", default="lee", choices=["lee", "20ng", "texts"],
                   help="lee ships with gensim (offline); 20ng and texts need --data-path")
    p.add_argument("--data-path", default=None, help="20ng.zip (or its folder), or your documents")
    p.add_argument("--keep-stop-words", action="store_true",
                   help="20ng: keep the stop words in the NVDM vocabulary (dropped by default)")
    p.add_argument("--min-df", type=V.positive_int.cli, default=3, help="raw text: keep words in at least this many documents")
    p.add_argument("--max-df", type=V.Number(0.0, maximum=1.0).cli, default=0.3, help="raw text: ... and in at most this share of them")
    p.add_argument("--max-vocab", type=V.positive_int.cli, default=2000)
    p.add_argument("--topics", type=V.Integer(2).cli, default=10, help="number of topics K")
    p.add_argument("--posterior", default="logistic-normal", choices=list(ProdLDA.POSTERIORS),
                   help="prodlda: Laplace-approximated prior with a Normal posterior, or a Dirichlet posterior")
    p.add_argument("--assignments", default="collapsed", choices=list(LDA.ASSIGNMENTS),
                   help="lda: sum the word-topic assignments by enumeration or analytically")
    p.add_argument("--alpha", type=V.positive_number.cli, default=1.0, help="Dirichlet prior on document proportions")
    p.add_argument("--eta", type=V.positive_number.cli, default=0.1, help="lda: Dirichlet prior on topic-word distributions")
    p.add_argument("--hidden", type=V.positive_int.cli, default=100)
    p.add_argument("--dropout", type=V.Number(0.0, strict=False, maximum=0.99).cli, default=0.2)
    p.add_argument("--epochs", type=V.non_negative_int.cli, default=100)
    p.add_argument("--batch-size", type=V.positive_int.cli, default=64)
    p.add_argument("--lr", type=V.positive_number.cli, default=2e-3)
    p.add_argument("--samples", type=V.positive_int.cli, default=100, help="importance samples per test document (perplexity)")
    p.add_argument("--draws", type=V.positive_int.cli, default=200, help="posterior draws for the ArviZ summary")
    p.add_argument("--top-n", type=V.Integer(2).cli, default=10, help="top words per topic (printed, and NPMI over them)")
    p.add_argument("--seed", type=V.seed_rule.cli, default=0)
    p.add_argument("--device", default="cpu", type=V.device_rule.cli, help="train on cpu, cuda or cuda:N (evaluation runs on the CPU)")
    runs.add_run_arguments(p, resume=False)
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--quiet", action="store_true", help="do not print the top words")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", default=None, help="output folder (default runs/<model>)")


def load_corpus(args: argparse.Namespace) -> tuple[BowCorpus, BowCorpus]:
    """``(train, test)`` for ``args.dataset``, sharing one vocabulary."""
    if args.dataset == "lee":
        return load_lee_background(args.min_df, args.max_df, args.max_vocab, seed=args.seed)
    if args.data_path is None:
        raise ValueError(f"--dataset {args.dataset} needs a path: pass --data-path")
    if args.dataset == "20ng":
        return load_nvdm(args.data_path, stop_words=None if args.keep_stop_words else "english")
    return split_texts(read_texts(args.data_path), Path(args.data_path).stem, args.min_df, args.max_df,
                       args.max_vocab, seed=args.seed)


def build_model(name: str, args: argparse.Namespace, vocab_size: int, num_docs: int) -> tuple[Any, Any]:
    """The pair and its ELBO."""
    if name == "prodlda":
        pair = ProdLDA(vocab_size, args.topics, hidden=args.hidden, dropout=args.dropout, alpha=args.alpha,
                       posterior=args.posterior)
        return pair, pyro.infer.TraceMeanField_ELBO()
    pair = LDA(vocab_size, args.topics, assignments=args.assignments, alpha=args.alpha, eta=args.eta,
               hidden=args.hidden, dropout=args.dropout)
    return pair, pair.objective(num_datapoints=num_docs)


def _model_name(args: argparse.Namespace) -> str:
    name = args.model or getattr(args, "task", None) or "prodlda"
    if name not in MODELS:
        raise ValueError(f"unknown topic model {name!r}; choose one of {MODELS}")
    return name


def main(args: argparse.Namespace) -> dict[str, Any]:
    name = _model_name(args)
    train, test = load_corpus(args)
    config = begin(args, name)
    pair, elbo = build_model(name, args, len(train.vocab), len(train))
    with run_folder(args, config, args.out or f"runs/{name}") as out:
        return _train(args, name, out, train, test, pair, elbo)


def _train(args: argparse.Namespace, name: str, out: Path, train: BowCorpus, test: BowCorpus, pair: Any, elbo: Any
           ) -> dict[str, Any]:
    t0 = time.perf_counter()
    history = fit(pair, train.counts, elbo=elbo, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  seed=args.seed, device=args.device, checkpoint_dir=out / "model", progress=args.progress)
    seconds = time.perf_counter() - t0
    pair.cpu().eval()

    held = heldout_log_likelihood(pair, test.counts, num_samples=args.samples)
    report = topic_report(pair.topic_word_logits(), train.vocab, test.counts, n_npmi=args.top_n)
    topics_text = format_topics(pair.topic_word_logits(), train.vocab, args.top_n, report["npmi_per_topic"])
    (out / "topics.txt").write_text(topics_text + "\n")
    if not args.quiet:
        print(f"{name}: top {args.top_n} words per topic (NPMI on the test documents first)")
        print(topics_text)
    metrics: dict[str, Any] = {
        "model": name, "data": {"train": train.summary(), "test": test.summary()},
        "epochs": len(history), "train_seconds": round(seconds, 2),
        "test": {"elbo_per_doc": float(held["elbo"].mean()),
                 "perplexity_elbo": perplexity(held["elbo"], held["words"]),
                 "perplexity_is": perplexity(held["log_lik"], held["words"]),
                 "importance_samples": args.samples},
        "npmi": report["npmi"], "npmi_reference": "test documents", "npmi_per_topic": report["npmi_per_topic"],
        "npmi_all_documents": topic_report(pair.topic_word_logits(), train.vocab,
                                           torch.cat([train.counts, test.counts]), n_npmi=args.top_n)["npmi"],
        "diversity": report["diversity"], "top_words": report["top_words"],
    }
    idata = posterior_draws(pair, test, args.draws, seed=args.seed)
    summary = _summary(idata)
    summary.to_csv(out / "theta_summary.csv")
    metrics["theta_summary_head"] = summary.head(args.topics).round(3).reset_index().to_dict(orient="records")
    if not args.no_figures:
        metrics["figures"] = [str(p) for p in draw_figures(history, report, idata, out, name)]
    atomic_json_save(metrics, out / "metrics.json")
    return metrics


def posterior_draws(pair: Any, test: BowCorpus, draws: int, docs: int = 3, seed: int = 0) -> Any:
    """``InferenceData`` of theta for the first ``docs`` test documents (named dims and coords)."""
    from ..evaluation.arviz_io import to_inference_data

    k = pair.num_topics
    return to_inference_data(pair, test.counts[:docs], ["theta"], num_samples=draws,
                             dims={"theta": ["document", "topic"]},
                             coords={"document": [f"doc{i}" for i in range(docs)],
                                     "topic": [f"topic{j}" for j in range(k)]}, seed=seed)


def _summary(idata):
    import arviz as az

    # Independent draws from q: the MCMC diagnostics (r_hat, ess) do not apply, so only the stats.
    return az.summary(idata, var_names=["theta"], kind="stats")


def draw_figures(history: History, report: dict, idata: Any, out: Path, name: str) -> list[Path]:
    from .. import plots

    paths = [plots.coherence_per_topic(report["npmi_per_topic"], out / "coherence_per_topic.png",
                                       f"{name}: coherence per topic", mean=report["npmi"])]

    import arviz as az

    axes = az.plot_forest(idata, var_names=["theta"], combined=True, figsize=(5, 0.18 * idata.posterior["theta"].size
                                                                                / idata.posterior.sizes["draw"] + 1))
    fig = axes.ravel()[0].figure
    fig.suptitle("document-topic proportions of 3 test documents (94% HDI, draws from the guide)", fontsize=8)
    paths.append(plots.save_figure(fig, out / "theta_forest.png"))
    paths.append(plots.training_curves({name: history}, out / "training_curves.png", keys=("train_loss",)))
    return paths


# ----------------------------------------------------------------------------- CLI verbs on a run folder

def load_run(run: str | Path) -> tuple[Any, BowCorpus, BowCorpus, dict]:
    """``(pair, train corpus, test corpus, config)`` of a run folder written by :func:`main`."""
    run = Path(run)
    config = runs.read_config(run)
    options = argparse.Namespace(**config)
    train, test = load_corpus(options)
    pair, _ = build_model(config["task"], options, len(train.vocab), len(train))
    ckpt, path = load_best_or_last(run / "model")
    load_module_state(pair, ckpt, path)
    return pair.eval(), train, test, config


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Held-out ELBO and perplexities (``--samples`` importance samples per document) on the
    test documents (``--split test``) or the training ones (``--split train``)."""
    if args.split == "valid":
        raise ValueError("topic-model runs have train and test documents only: use --split test or --split train")
    pair, train, test, config = load_run(args.run)
    corpus = test if args.split == "test" else train
    held = heldout_log_likelihood(pair, corpus.counts, num_samples=args.samples)
    return {"model": config["task"], "split": args.split, "elbo_per_doc": float(held["elbo"].mean()),
            "perplexity_elbo": perplexity(held["elbo"], held["words"]),
            "perplexity_is": perplexity(held["log_lik"], held["words"]), "importance_samples": args.samples,
            "elbo_samples": args.samples, "seed": args.seed}
