"""Task ``pos_induction``: unsupervised part-of-speech induction with an HMM.

Words in, tags only for evaluation. Emissions (``--emission``):

* ``categorical``: one categorical over words per state (Johnson 2007's EM HMM);
* ``features``: log-linear over word identity, suffixes, capital, digit, hyphen (Berg-Kirkpatrick
  et al. 2010), EM with an L-BFGS M-step;
* ``embedding``: a Gaussian over each word's word2vec vector (trained offline by gensim on the
  corpus text, plus ``--vector-ptb`` / ``--vector-wikipedia``, cached), EM in closed form;
  ``--flow-layers 4`` then trains He et al. 2018's volume-preserving projection jointly with the
  HMM by Adam on the exact marginal likelihood (``--flow-epochs``);
* ``neural``: Tran et al. 2016's softmax of state embeddings against word embeddings and
  character-CNN features, trained by generalised EM (Adam steps in the M-step) or by Adam on
  the exact marginal likelihood (``--trainer adam``, what docs/hmm.md's MASC row uses: from the
  near-uniform start, generalised EM can stall with most tokens in a few states).

EM runs until the relative change of the log-likelihood is below ``--tol`` (or
``--iterations``). ``--restarts R`` first trains ``R`` random initialisations for
``--restart-iterations`` each and continues the one with the best training likelihood (never
the best accuracy: tags are not seen in training). States are decoded with Viterbi and scored
against the gold tags by many-to-one, one-to-one and V-measure.

Data: ``--data-path`` a MASC zip, a CoNLL-U file (``--tag-column upos|xpos``) or ``word/TAG``
text (``.pos``); without it, a small synthetic tagged corpus (offline, seconds).

Outputs under ``--out``: ``metrics.json``, ``transition_matrix.png``, ``state_tag_counts.png``.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import validation as V
from ..training import runs
from ..checkpoint import atomic_json_save, atomic_torch_save, load_checkpoint, load_module_state, set_seed
from ..data.tagged_text import TaggedCorpus, corpus_from_sentences, read_tagged, toy_sentences, word_features, word_shape
from ..models.hmm import HMM, CategoricalEmission, FeatureCategoricalEmission
from ..models.hmm.tagging_metrics import contingency, tagging_scores, viterbi_tags
from ..training.loop import BatchList, Callback, TrainState, fit, resolve_device
from . import begin, run_folder
from .hmm_chorales import MODEL_FILE

NOT_APPLICABLE = {"interpolate": "an HMM's states are discrete, with no code to interpolate between"}

EMISSIONS = ("categorical", "features", "embedding", "neural")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-path", default=None,
                   help="masc_tagged.zip, a .conllu file or word/TAG .pos text; omitted: a synthetic toy corpus")
    p.add_argument("--format", default="auto", choices=["auto", "masc", "conllu", "slash"])
    p.add_argument("--tag-column", default="upos", choices=["upos", "xpos"], help="CoNLL-U: the gold tags")
    p.add_argument("--one-per-line", action="store_true", help="word/TAG text: each line is a sentence")
    p.add_argument("--max-sentences", type=V.Integer(1, optional=True).cli, default=None,
                   help="tag only the first N sentences (word vectors are still trained on the whole text)")
    p.add_argument("--toy-sentences", type=V.positive_int.cli, default=400, help="size of the synthetic corpus")
    p.add_argument("--states", type=V.positive_int.cli, default=45)
    p.add_argument("--emission", default="categorical", choices=EMISSIONS)
    p.add_argument("--l2", type=V.non_negative_number.cli, default=1.0, help="features: L2 penalty on the emission weights")
    p.add_argument("--scale", default="fixed", choices=["fixed", "shared", "state"],
                   help="embedding: one fixed diagonal variance (He et al.), one learned, or one per state")
    p.add_argument("--spelling", action="store_true",
                   help="embedding: each state also emits the word's spelling class (capital, digits, suffix)")
    p.add_argument("--variance-scale", type=V.positive_number.cli, default=1.0,
                   help="embedding: times the tokens' variance (> 1: flatter emissions, the transitions weigh more)")
    p.add_argument("--init", default="random", choices=["random", "kmeans-types"],
                   help="embedding: means from the token mean plus noise, or k-means over the word types' vectors "
                        "(each type once, so rare open-class words are not drowned by frequent function words)")
    p.add_argument("--flow-layers", type=V.non_negative_int.cli, default=0, help="embedding: volume-preserving coupling layers (0: none)")
    p.add_argument("--flow-epochs", type=V.non_negative_int.cli, default=0, help="embedding: Adam epochs on flow + HMM after EM")
    p.add_argument("--vectors", default=None, help="word vectors saved as .npz (WordVectors.save); omitted: word2vec "
                                                   "trained on the corpus text (+ --vector-ptb, --vector-wikipedia)")
    p.add_argument("--vector-ptb", default=None, help="ptb.zip: more text for word2vec")
    p.add_argument("--vector-wikipedia", action="store_true", help="gensim's Wikipedia sample as more text")
    p.add_argument("--vector-dim", type=V.positive_int.cli, default=100)
    p.add_argument("--vector-window", type=V.positive_int.cli, default=1)
    p.add_argument("--vector-epochs", type=V.positive_int.cli, default=20)
    p.add_argument("--vector-min-count", type=V.positive_int.cli, default=3, help="rarer words train their spelling class")
    p.add_argument("--vector-contexts", default="plain", choices=["plain", "positional"],
                   help="positional: left and right neighbours are different context words (structured skip-gram)")
    p.add_argument("--neural-vectors", action="store_true", help="neural: initialise word embeddings from word2vec")
    p.add_argument("--cache-dir", default=None, help="word-vector cache (default ~/.cache/pyro_lvm)")
    p.add_argument("--trainer", default="auto", choices=["auto", "em", "adam"],
                   help="EM (generalised for the features and neural emissions) or Adam on the fast path; auto: EM")
    p.add_argument("--m-steps", type=V.positive_int.cli, default=10, help="neural + EM: Adam steps in each M-step")
    p.add_argument("--iterations", type=V.non_negative_int.cli, default=50, help="EM iterations, or epochs for adam")
    p.add_argument("--tol", type=V.non_negative_number.cli, default=0.0, help="EM: stop when |relative change of log-lik| <= tol")
    p.add_argument("--restarts", type=V.positive_int.cli, default=1, help="random initialisations; the best likelihood continues")
    p.add_argument("--restart-iterations", type=V.positive_int.cli, default=5, help="iterations (epochs) each restart gets")
    p.add_argument("--lr", type=V.positive_number.cli, default=0.05, help="adam: the emission's learning rate (also the flow phase)")
    p.add_argument("--chain-lr", type=V.Number(0.0, optional=True).cli, default=None,
                   help="adam: the initial and transition logits' learning rate (default --lr); a small emission rate "
                        "with a fast chain keeps a neural emission from learning a mixture model first")
    p.add_argument("--batch-tokens", type=V.positive_int.cli, default=20000, help="padded tokens per length-sorted batch")
    p.add_argument("--concentration", type=V.positive_number.cli, default=1.0, help="Dirichlet prior on transitions (1 = none)")
    p.add_argument("--emission-pseudocount", type=V.non_negative_number.cli, default=1e-3)
    p.add_argument("--lowercase", action="store_true")
    p.add_argument("--min-count", type=V.positive_int.cli, default=1, help="rarer words become <unk> or a spelling class")
    p.add_argument("--rare", default="unk", choices=["unk", "shape"],
                   help="what words below --min-count become: one <unk>, or a spelling class (suffix, capital, digits)")
    p.add_argument("--eval-every", type=V.non_negative_int.cli, default=0, help="score the Viterbi tags every N iterations (0: only at the end)")
    p.add_argument("--seed", type=V.seed_rule.cli, default=0)
    p.add_argument("--device", default="cpu", type=V.device_rule.cli, help="cpu, cuda or cuda:N")
    runs.add_run_arguments(p, resume=False)
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--out", default="runs/pos_induction")


# ----------------------------------------------------------------------------- building

def load_sentences(args: argparse.Namespace) -> list[list[tuple[str, str]]]:
    """All sentences of the file (``--max-sentences`` is applied by the caller: word vectors are
    trained on the whole text either way)."""
    if args.data_path is None:
        return toy_sentences(args.toy_sentences, args.seed)
    return read_tagged(args.data_path, args.format, args.tag_column, args.one_per_line)


def load_corpus(args: argparse.Namespace) -> tuple[TaggedCorpus, torch.Tensor | None, dict | None]:
    """``(corpus, vectors (V, D) or None, vector info or None)`` for the options: the first
    ``--max-sentences`` sentences are tagged; word vectors (embedding emission, or neural with
    ``--neural-vectors``) come from the whole text."""
    text = load_sentences(args)
    corpus = corpus_from_sentences(text[: args.max_sentences], lowercase=args.lowercase, min_count=args.min_count,
                                   rare=args.rare)
    if args.emission == "embedding" or (args.emission == "neural" and args.neural_vectors):
        return (corpus, *word_vector_table(args, text, corpus))
    return corpus, None, None


def word_vector_table(args: argparse.Namespace, sentences, corpus: TaggedCorpus) -> tuple[torch.Tensor, dict]:
    """``(vectors (V, D) of the vocabulary, info)``: word2vec on the whole text of the file (+
    options) or ``--vectors``, cached."""
    from ..data.word_vectors import WordVectors, embedding_sentences, load_or_train_word_vectors

    if args.vectors:
        vectors = WordVectors.load(args.vectors)
    else:
        name = "masc" if args.data_path and str(args.data_path).endswith(".zip") else "corpus"
        text = embedding_sentences({name: [[w for w, _ in s] for s in sentences]}, ptb=args.vector_ptb,
                                   wikipedia=args.vector_wikipedia)
        vectors = load_or_train_word_vectors(text, cache_dir=args.cache_dir, dim=args.vector_dim,
                                             window=args.vector_window, min_count=args.vector_min_count,
                                             epochs=args.vector_epochs, contexts=args.vector_contexts)
    table, routes = vectors.lookup(corpus.vocab)
    return table, {"training": vectors.info, "vocabulary_lookup": routes}


def build_hmm(args: argparse.Namespace, corpus: TaggedCorpus, vectors: torch.Tensor | None) -> HMM:
    k, v = args.states, len(corpus.vocab)
    if args.emission == "features":
        emission = FeatureCategoricalEmission(k, word_features(corpus.vocab)[0], l2=args.l2)
    elif args.emission == "embedding":
        from ..models.hmm.word_emissions import EmbeddingGaussianEmission

        freq = torch.bincount(torch.tensor([w for s in corpus.words for w in s]), minlength=v).float()
        spelling = spelling_classes(corpus.vocab) if args.spelling else None
        means = kmeans_means(vectors, k, seed=int(torch.randint(0, 2**31 - 1, ()))) if args.init == "kmeans-types" else None
        emission = EmbeddingGaussianEmission(k, vectors, freq, scale=args.scale, flow_layers=args.flow_layers,
                                             spelling=spelling, init_means=means, variance_scale=args.variance_scale)
    elif args.emission == "neural":
        from ..models.hmm.word_emissions import NeuralCategoricalEmission

        emission = NeuralCategoricalEmission(k, corpus.vocab, vectors=vectors if args.neural_vectors else None,
                                             m_steps=args.m_steps, m_lr=args.lr)
    else:
        emission = CategoricalEmission(k, v)
    return HMM(emission, concentration=args.concentration)


def kmeans_means(vectors: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """``(k, D)`` k-means centres of the vocabulary's vectors, each word type once (scikit-learn)."""
    from sklearn.cluster import KMeans

    if len(vectors) < k:
        raise ValueError(f"k-means needs at least {k} word types, the vocabulary has {len(vectors)}")
    centres = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(vectors.numpy()).cluster_centers_
    return torch.from_numpy(centres).float()


def spelling_classes(vocab: list[str]) -> torch.Tensor:
    """``(V,)`` class id of each word's :func:`word_shape` (capital, hyphen, digits, suffix)."""
    shapes = [word_shape(w) for w in vocab]
    index = {c: i for i, c in enumerate(sorted(set(shapes)))}
    return torch.tensor([index[c] for c in shapes], dtype=torch.long)


def trainer_of(args: argparse.Namespace) -> str:
    return "em" if args.trainer == "auto" else args.trainer


# ----------------------------------------------------------------------------- training

def run_em(hmm: HMM, pairs: list, iterations: int, args: argparse.Namespace, report) -> list[float]:
    return hmm.em_fit(pairs, iterations, args.emission_pseudocount, tol=args.tol, callback=report)


class EpochLogLikelihood(Callback):
    """Sums the log-likelihood of each epoch's batches as they are trained on and hands it to
    ``report(epoch, total)``; ``history`` keeps the totals. A step's loss estimates the whole
    training set's (``N / batch`` times the batch's), so each step adds ``-loss * batch / N``."""

    def __init__(self, report, num_sequences: int) -> None:
        self.report, self.num_sequences, self.history, self.total = report, num_sequences, [], 0.0

    def on_epoch_begin(self, state: TrainState) -> None:
        self.total = 0.0

    def on_step_end(self, state: TrainState, batch, loss: float) -> None:
        self.total -= loss * state.datapoints / self.num_sequences

    def on_epoch_end(self, state: TrainState) -> None:
        self.history.append(self.total)
        self.report(state.epoch, self.total)


def chain_and_emission_adam(hmm: HMM, chain_lr: float, emission_lr: float):
    """An optimiser factory for :func:`pyro_lvm.fit`: Adam with the initial and transition
    logits at ``chain_lr`` and the emission's parameters at ``emission_lr``."""
    emission = {id(p) for p in hmm.emission.parameters()}

    def adam(params: list[torch.Tensor]) -> torch.optim.Adam:
        return torch.optim.Adam([{"params": [p for p in params if id(p) not in emission], "lr": chain_lr},
                                 {"params": [p for p in params if id(p) in emission], "lr": emission_lr}])
    return adam


def run_adam(hmm: HMM, pairs: list, epochs: int, args: argparse.Namespace, report, seed: int) -> list[float]:
    """Adam on the fast path by :func:`pyro_lvm.fit`: one step per length-sorted batch (a
    :class:`~pyro_lvm.training.batching.BatchList`, in a seeded random order each epoch), the chain at
    ``--chain-lr``, the emission at ``--lr``; returns the summed log-likelihood of each epoch's
    batches as they were trained on."""
    n = sum(x.shape[0] for x, _ in pairs)
    totals = EpochLogLikelihood(report, n)
    fit(hmm, BatchList(pairs), elbo=hmm.objective(num_datapoints=n),
        optimizer=chain_and_emission_adam(hmm, args.chain_lr or args.lr, args.lr),
        epochs=epochs, seed=seed, device=args.device, progress=False, callbacks=[totals])
    return totals.history


def train(args: argparse.Namespace, corpus: TaggedCorpus, vectors, batches: list, progress: list,
          log=print) -> tuple[HMM, list[float], list[dict]]:
    """Build and train the HMM (with restarts); returns ``(hmm, log-lik per token history,
    restarts)``. With ``--eval-every N`` appends ``{"iteration", "many_to_one", ...}`` to ``progress``."""
    pairs = [(x, m) for x, m, _ in batches]
    tokens = sum(int(m.sum()) for _, m in pairs)
    trainer = trainer_of(args)
    if args.restarts < 1 or args.restart_iterations < 1:
        raise ValueError(f"need --restarts >= 1 and --restart-iterations >= 1, got {args.restarts}, "
                         f"{args.restart_iterations}")

    def score(hmm, phase: str, iteration: int) -> dict:
        """Appends the tagging scores of ``hmm`` now to ``progress``, with the seconds they took."""
        t0 = time.perf_counter()
        progress.append({"phase": phase, "iteration": iteration,
                         **tagging_scores(*viterbi_tags(hmm, batches), args.states, len(corpus.tagset))})
        progress[-1]["scoring_seconds"] = round(time.perf_counter() - t0, 1)
        return progress[-1]

    def make_report(hmm, phase):
        def report(i, ll):
            if i % 10 == 0 or phase != "em":
                log(f"{phase} iteration {i}: log-lik/token {ll / tokens:.4f}", flush=True)
            if args.eval_every and (i + 1) % args.eval_every == 0:
                log(score(hmm, phase, i + 1), flush=True)
        return report

    def fit_for(hmm, iterations, seed):
        if iterations <= 0:
            return []
        if trainer == "em":
            return run_em(hmm, pairs, iterations, args, make_report(hmm, "em"))
        return run_adam(hmm, pairs, iterations, args, make_report(hmm, "adam"), seed)

    restarts, best = [], None
    first = min(args.restart_iterations, args.iterations) if args.restarts > 1 else args.iterations
    for r in range(args.restarts):
        set_seed(args.seed * 1000 + r)  # each restart its own initialisation
        hmm = build_hmm(args, corpus, vectors).to(args.device)
        history = fit_for(hmm, first, args.seed * 1000 + r)
        with torch.no_grad():
            final = sum(float(hmm.log_likelihood(*p).sum()) for p in pairs)
        restarts.append({"restart": r, "iterations": len(history), "log_lik_per_token": final / tokens})
        log(f"restart {r}: log-lik/token {final / tokens:.4f}", flush=True)
        if best is None or final > best[0]:
            best = (final, copy.deepcopy(hmm.state_dict()), history)
    hmm = build_hmm(args, corpus, vectors).to(args.device)
    hmm.load_state_dict(best[1])
    history = best[2]
    if args.restarts > 1:
        history = history + fit_for(hmm, args.iterations - first, args.seed * 1000 + 999)
    if args.emission == "embedding" and args.flow_layers and args.flow_epochs:
        # He et al. 2018: start the projection from the trained Gaussian HMM, then train both.
        # The scores before the projection moves are kept: they are the Gaussian HMM's.
        score(hmm, "before-flow", len(history))
        history = history + run_adam(hmm, pairs, args.flow_epochs, args, make_report(hmm, "flow"), args.seed)
    return hmm, [ll / tokens for ll in history], restarts



def main(args: argparse.Namespace) -> dict[str, Any]:
    resolve_device(args.device)  # a clear error before any work when CUDA is missing
    if args.emission != "embedding":
        for flag, used in (("--flow-layers", args.flow_layers), ("--spelling", args.spelling),
                           ("--init kmeans-types", args.init != "random")):
            if used:
                raise ValueError(f"{flag} is for the Gaussian over word vectors: it needs --emission embedding, "
                                 f"not {args.emission}")
    config = begin(args, "pos_induction")
    corpus, vectors, vector_info = load_corpus(args)
    batches = [(x.to(args.device), m.to(args.device), tags) for x, m, tags in corpus.batches(args.batch_tokens)]
    with run_folder(args, config) as out:
        return _train(args, out, corpus, vectors, vector_info, batches)


def _train(args: argparse.Namespace, out: Path, corpus: TaggedCorpus, vectors, vector_info, batches: list
           ) -> dict[str, Any]:
    t0 = time.perf_counter()
    progress: list[dict] = []
    hmm, history, restarts = train(args, corpus, vectors, batches, progress)
    train_seconds = time.perf_counter() - t0 - sum(p["scoring_seconds"] for p in progress)
    pred, gold = viterbi_tags(hmm, batches)
    scores = tagging_scores(pred, gold, args.states, len(corpus.tagset))
    with torch.no_grad():
        final = sum(float(hmm.log_likelihood(x, m).sum()) for x, m, _ in batches) / corpus.num_tokens
    metrics: dict[str, Any] = {
        "data": corpus.summary(), "source": args.data_path or "toy", "states": args.states, "emission": args.emission,
        "trainer": trainer_of(args), "flow_layers": args.flow_layers, "iterations": len(history),
        "train_seconds": round(train_seconds, 1), "log_lik_per_token": final, "history": history,
        "restarts": restarts, "progress": progress, "word_vectors": vector_info, **scores}
    atomic_torch_save({"format": "pyro_lvm.hmm_run/1", "pair": hmm.cpu().state_dict()}, out / MODEL_FILE)
    hmm.to(args.device)
    if not args.no_figures:
        metrics["figures"] = [str(p) for p in draw_figures(hmm, pred, gold, corpus, out)]
    atomic_json_save(metrics, out / "metrics.json")
    return metrics


# ----------------------------------------------------------------------------- CLI verbs on a run folder

def load_run(run: str | Path) -> tuple[HMM, TaggedCorpus]:
    """``(hmm, corpus)`` of a run folder written by :func:`main` (the corpus, and word vectors
    where the emission uses them, rebuilt from ``config.json``; word2vec's cache makes that quick)."""
    run = Path(run)
    options = argparse.Namespace(**runs.read_config(run))
    corpus, vectors, _ = load_corpus(options)
    hmm = build_hmm(options, corpus, vectors)
    load_module_state(hmm, load_checkpoint(run / MODEL_FILE), run / MODEL_FILE)
    return hmm.eval(), corpus


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Viterbi tagging scores against the gold tags (the corpus has no separate splits: all of it)."""
    hmm, corpus = load_run(args.run)
    batches = corpus.batches(10_000)
    pred, gold = viterbi_tags(hmm, batches)
    with torch.no_grad():
        ll = sum(float(hmm.log_likelihood(x, m).sum()) for x, m, _ in batches) / corpus.num_tokens
    return {"split": "all", "log_lik_per_token": ll, **tagging_scores(pred, gold, hmm.num_states, len(corpus.tagset))}


def sample(args: argparse.Namespace) -> dict[str, Any]:
    """``--num`` sentences of 12 words drawn from the HMM, with their hidden states."""
    hmm, corpus = load_run(args.run)
    states, words = hmm.sample(args.num, 12)
    return {"num": args.num, "sentences": [" ".join(corpus.vocab[int(w)] for w in row) for row in words],
            "states": states.tolist()}


def draw_figures(hmm: HMM, pred: np.ndarray, gold: np.ndarray, corpus: TaggedCorpus, out: Path) -> list[Path]:
    from .. import plots

    return [plots.transition_matrix(hmm, out / "transition_matrix.png"),
            plots.state_tag_frequencies(contingency(pred, gold, hmm.num_states, len(corpus.tagset)), corpus.tagset,
                                        out / "state_tag_counts.png")]
