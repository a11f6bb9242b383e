"""ProdLDA (Srivastava & Sutton 2017) on gensim's Lee news corpus: fit, held-out perplexity,
each topic's top words with its NPMI coherence, and two figures.

    python examples/prodlda.py                        # 240 + 60 news articles, offline, ~15 CPU-seconds
    python examples/prodlda.py --topics 20 --epochs 200
    python examples/prodlda.py --data DATA/20ng.zip   # your copy of the NVDM 20 Newsgroups (docs/data.md)

The story, top to bottom: a bag-of-words count matrix (documents x words); the pair from the
library (a logistic-normal document-topic latent, amortised by an encoder; topics are a
product of experts over words); the mean-field ELBO; ``fit``; held-out perplexity by
importance sampling; top words and NPMI on the test documents. Prints the topics and writes
``coherence_per_topic.png`` and ``training_curve.png`` under ``--out``. The full program, with
LDA (``--model lda``), ArviZ summaries, run folders and every option, is ``pyro-lvm train prodlda``.
"""

import argparse
from pathlib import Path

import pyro

from pyro_lvm import fit, plots, set_seed
from pyro_lvm.data import load_lee_background, load_nvdm
from pyro_lvm.models import ProdLDA
from pyro_lvm.models.topic.metrics import format_topics, heldout_log_likelihood, perplexity, topic_report


def main(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    # 1. Data: word counts (D, V), train and test documents over one vocabulary, without
    # English stop words (they would fill every topic's top words).
    train, test = load_nvdm(args.data, stop_words="english") if args.data else load_lee_background(seed=args.seed)
    print(f"{len(train)} train / {len(test)} test documents, {len(train.vocab)} words")

    # 2. The pair, and 3. its objective: q(theta | words) is a logistic normal, so the KL to the
    # (Laplace-approximated Dirichlet) prior is analytic: the mean-field ELBO uses it.
    set_seed(args.seed)
    prodlda = ProdLDA(len(train.vocab), args.topics, hidden=args.hidden)
    elbo = pyro.infer.TraceMeanField_ELBO()

    # 4. Training: Adam on mini-batches of documents, a progress bar per epoch.
    history = fit(prodlda, train.counts, elbo=elbo, epochs=args.epochs, batch_size=64, lr=2e-3, seed=args.seed,
                  progress=True)

    # 5. Evaluation on the held-out documents: the ELBO bounds log p(words) from below; importance
    # sampling with q as proposal tightens it. Perplexity = exp(-log p / number of words).
    prodlda.eval()
    held = heldout_log_likelihood(prodlda, test.counts, num_samples=args.samples)
    print(f"test perplexity: {perplexity(held['log_lik'], held['words']):.1f} "
          f"(ELBO bound {perplexity(held['elbo'], held['words']):.1f})")

    # 6. What the topics are: top words, and NPMI coherence (co-occurrence in test documents).
    topic_word = prodlda.topic_word_logits()
    report = topic_report(topic_word, train.vocab, test.counts)
    print(f"top 10 words per topic (NPMI first); mean NPMI {report['npmi']:.3f}, diversity {report['diversity']:.2f}")
    print(format_topics(topic_word, train.vocab, 10, report["npmi_per_topic"]))

    # 7. Figures.
    plots.coherence_per_topic(report["npmi_per_topic"], out / "coherence_per_topic.png", mean=report["npmi"])
    plots.training_curves({"ProdLDA": history}, out / "training_curve.png", keys=("train_loss",))
    print(f"figures in {out}/")
    return {"perplexity": perplexity(held["log_lik"], held["words"]), **report}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="your copy of 20ng.zip (NVDM format); omitted: the Lee corpus")
    parser.add_argument("--topics", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--samples", type=int, default=100, help="importance samples per test document")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/example_prodlda")
    main(parser.parse_args())
