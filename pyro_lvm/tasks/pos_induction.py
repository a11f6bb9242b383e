"""Task ``pos_induction``: unsupervised part-of-speech induction with a categorical-emission HMM.

Words in, tags only for evaluation. Trained by Baum-Welch (closed-form EM, the Johnson 2007
set-up) or by gradient on the Pyro loss (``--trainer adam``); states are decoded with Viterbi
and scored against the gold tags by many-to-one and one-to-one accuracy and V-measure.

Data: ``--data-path masc_tagged.zip`` (NLTK's MASC); without it, a small synthetic tagged
corpus drawn from a hand-written tag grammar (offline, seconds). ``--lowercase --min-count 5
--rare shape`` replaces the rare words by spelling classes (``data.tagged_text.word_shape``),
which helps many-to-one accuracy on MASC (``benchmarks/hmm_quality.py --part pos``).

Outputs under ``--out``: ``metrics.json``, ``transition_matrix.png``, ``state_tag_counts.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import runs, validation as V
from ..checkpoint import atomic_json_save, atomic_torch_save, load_checkpoint, load_module_state, set_seed
from ..data.tagged_text import TaggedCorpus, load_masc_tagged, word_features
from ..models.hmm import HMM, CategoricalEmission, FeatureCategoricalEmission
from ..train import resolve_device
from . import run_options
from .hmm_chorales import MODEL_FILE

NOT_APPLICABLE = {"interpolate": "an HMM's states are discrete, with no code to interpolate between"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-path", default=None, help="masc_tagged.zip; omitted: a synthetic toy corpus (offline)")
    p.add_argument("--max-sentences", type=V.Integer(1, optional=True).cli, default=None, help="use only the first N sentences")
    p.add_argument("--toy-sentences", type=V.positive_int.cli, default=400, help="size of the synthetic corpus")
    p.add_argument("--states", type=V.positive_int.cli, default=45)
    p.add_argument("--emission", default="categorical", choices=["categorical", "features"],
                   help="features: log-linear emissions over word identity, suffixes, capital, digit, hyphen "
                        "(Berg-Kirkpatrick et al. 2010); EM runs L-BFGS in the M-step")
    p.add_argument("--l2", type=V.non_negative_number.cli, default=1.0, help="features: L2 penalty on the emission weights")
    p.add_argument("--trainer", default="em", choices=["em", "adam"])
    p.add_argument("--iterations", type=V.non_negative_int.cli, default=50, help="EM iterations, or epochs for adam")
    p.add_argument("--lr", type=V.positive_number.cli, default=0.05, help="adam only")
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


# ----------------------------------------------------------------------------- scores

def contingency(pred: np.ndarray, gold: np.ndarray, num_states: int, num_tags: int) -> np.ndarray:
    """``(states, tags)`` co-occurrence counts of two flat label arrays."""
    table = np.zeros((num_states, num_tags), dtype=np.int64)
    np.add.at(table, (pred, gold), 1)
    return table


def tagging_scores(pred: np.ndarray, gold: np.ndarray, num_states: int, num_tags: int) -> dict[str, float]:
    """Many-to-one (each state -> its most frequent tag), one-to-one (best injective map,
    Hungarian algorithm) accuracy and V-measure (Rosenberg & Hirschberg 2007)."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import v_measure_score

    table = contingency(pred, gold, num_states, num_tags)
    rows, cols = linear_sum_assignment(-table)
    return {"many_to_one": float(table.max(axis=1).sum() / len(gold)),
            "one_to_one": float(table[rows, cols].sum() / len(gold)),
            "v_measure": float(v_measure_score(gold, pred))}


# ----------------------------------------------------------------------------- toy corpus

_TOY_WORDS = {
    "DT": "the a this every", "JJ": "small red old happy quick", "NN": "dog cat house idea tree bird",
    "VB": "sees likes finds eats builds", "IN": "in on near under", "PRP": "she he it", ".": ". !",
}
# Tag bigram grammar: sentence = (DT JJ* NN | PRP) VB (DT JJ* NN) (IN DT NN)? .
_TOY_NEXT = {"<s>": {"DT": 0.7, "PRP": 0.3}, "DT": {"JJ": 0.4, "NN": 0.6}, "JJ": {"JJ": 0.2, "NN": 0.8},
             "NN": {"VB": 0.45, "IN": 0.25, ".": 0.3}, "PRP": {"VB": 1.0}, "VB": {"DT": 1.0},
             "IN": {"DT": 1.0}}


def toy_corpus(num_sentences: int, seed: int = 0) -> TaggedCorpus:
    """Sentences from a small tag grammar with disjoint word lists per tag (offline stand-in for MASC)."""
    if num_sentences < 1:
        raise ValueError(f"num_sentences must be positive, got {num_sentences}")
    rng = np.random.default_rng(seed)
    tagset = sorted(_TOY_WORDS)
    vocab = sorted({w for ws in _TOY_WORDS.values() for w in ws.split()})
    w_idx, t_idx = {w: i for i, w in enumerate(vocab)}, {t: i for i, t in enumerate(tagset)}
    words, tags = [], []
    for _ in range(num_sentences):
        tag, sw, st = "<s>", [], []
        while tag != "." and len(st) < 30:
            options = _TOY_NEXT[tag]
            tag = rng.choice(list(options), p=list(options.values()))
            st.append(t_idx[tag])
            sw.append(w_idx[rng.choice(_TOY_WORDS[tag].split())])
        words.append(sw)
        tags.append(st)
    return TaggedCorpus(words, tags, vocab, tagset, w_idx)


# ----------------------------------------------------------------------------- task

def load_corpus(args: argparse.Namespace) -> TaggedCorpus:
    if args.data_path is None:
        return toy_corpus(args.toy_sentences, args.seed)
    return load_masc_tagged(args.data_path, lowercase=args.lowercase, min_count=args.min_count,
                            max_sentences=args.max_sentences, rare=args.rare)


def train(hmm: HMM, batches: list, args: argparse.Namespace, num_tags: int, progress: list, log=print) -> list[float]:
    """EM or Adam over the length-sorted batches; returns the log-likelihood per token per iteration
    (EM: before each update; Adam: summed over the epoch's batches while they were trained on).
    With ``--eval-every N`` appends ``{"iteration", "many_to_one", ...}`` to ``progress``."""
    pairs = [(x, m) for x, m, _ in batches]
    tokens = sum(int(m.sum()) for _, m in pairs)

    def report(i, ll):
        if i % 10 == 0 or args.trainer == "adam":
            log(f"{args.trainer} iteration {i}: log-lik/token {ll / tokens:.4f}", flush=True)
        if args.eval_every and (i + 1) % args.eval_every == 0:
            t0 = time.perf_counter()
            progress.append({"iteration": i + 1, **tagging_scores(*decode(hmm, batches), args.states, num_tags)})
            progress[-1]["scoring_seconds"] = round(time.perf_counter() - t0, 1)
            log(progress[-1], flush=True)

    if args.trainer == "em":
        return [ll / tokens for ll in hmm.em_fit(pairs, args.iterations, args.emission_pseudocount, callback=report)]
    # Adam on the fast path: one step per length-sorted batch, batches in a seeded random order.
    # (Not fit(): its mini-batches are slices of one padded tensor; these batches differ in length.)
    opt = torch.optim.Adam(hmm.parameters(), lr=args.lr)
    elbo, history = hmm.elbo(), []
    for epoch in range(args.iterations):
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(args.seed * 100_003 + epoch))
        total = 0.0
        for i in order.tolist():
            opt.zero_grad()
            loss = elbo.differentiable_loss(hmm.model, hmm.guide, *pairs[i])
            loss.backward()
            opt.step()
            total -= float(loss.detach())
        history.append(total / tokens)
        report(epoch, total)
    return history


@torch.no_grad()
def decode(hmm: HMM, batches: list) -> tuple[np.ndarray, np.ndarray]:
    """Flat Viterbi states and gold tags over all observed tokens."""
    preds, golds = [], []
    for x, m, tags in batches:
        paths, _ = hmm.viterbi(x, m)
        m = m.cpu()
        preds.append(paths.cpu()[m])
        golds.append(tags[m])
    return torch.cat(preds).numpy(), torch.cat(golds).numpy()


def build_model(args: argparse.Namespace, corpus: TaggedCorpus) -> HMM:
    if args.emission == "features":
        emission = FeatureCategoricalEmission(args.states, word_features(corpus.vocab)[0], l2=args.l2)
    else:
        emission = CategoricalEmission(args.states, len(corpus.vocab))
    # num_sequences: with --trainer adam the prior term is split over the batches, not counted per batch.
    return HMM(emission, concentration=args.concentration, num_sequences=len(corpus.words))


def main(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    resolve_device(args.device)  # a clear error before any work when CUDA is missing
    set_seed(args.seed)
    corpus = load_corpus(args)
    batches = [(x.to(args.device), m.to(args.device), tags) for x, m, tags in corpus.batches(args.batch_tokens)]
    hmm = build_model(args, corpus).to(args.device)
    with runs.start_run(args.out, {**run_options(args), "task": "pos_induction"},
                        overwrite=getattr(args, "overwrite", False)) as out:
        return _train(args, out, corpus, batches, hmm)


def _train(args: argparse.Namespace, out: Path, corpus: TaggedCorpus, batches: list, hmm: HMM) -> dict[str, Any]:
    t0 = time.perf_counter()
    progress: list[dict] = []
    history = train(hmm, batches, args, len(corpus.tagset), progress)
    train_seconds = time.perf_counter() - t0 - sum(p["scoring_seconds"] for p in progress)
    pred, gold = decode(hmm, batches)
    scores = tagging_scores(pred, gold, args.states, len(corpus.tagset))
    metrics: dict[str, Any] = {
        "data": corpus.summary(), "source": args.data_path or "toy", "states": args.states, "emission": args.emission,
        "trainer": args.trainer,
        "iterations": len(history), "train_seconds": round(train_seconds, 1),
        "log_lik_per_token": history[-1] if history else None, "history": history, "progress": progress, **scores}
    atomic_torch_save({"format": "pyro_lvm.hmm_run/1", "pair": hmm.state_dict()}, out / MODEL_FILE)
    if not args.no_figures:
        metrics["figures"] = [str(p) for p in draw_figures(hmm, pred, gold, corpus, out)]
    atomic_json_save(metrics, out / "metrics.json")
    return metrics


# ----------------------------------------------------------------------------- CLI verbs on a run folder

def load_run(run: str | Path) -> tuple[HMM, TaggedCorpus]:
    """``(hmm, corpus)`` of a run folder written by :func:`main` (the corpus rebuilt from ``config.json``)."""
    run = Path(run)
    options = argparse.Namespace(**runs.read_config(run))
    corpus = load_corpus(options)
    hmm = build_model(options, corpus)
    load_module_state(hmm, load_checkpoint(run / MODEL_FILE), run / MODEL_FILE)
    return hmm.eval(), corpus


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Viterbi tagging scores against the gold tags (the corpus has no separate splits: all of it)."""
    hmm, corpus = load_run(args.run)
    batches = corpus.batches(10_000)
    pred, gold = decode(hmm, batches)
    ll = sum(float(hmm.log_likelihood(x, m).sum()) for x, m, _ in batches) / sum(int(m.sum()) for _, m, _ in batches)
    return {"split": "all", "log_lik_per_token": ll, **tagging_scores(pred, gold, hmm.num_states, len(corpus.tagset))}


def sample(args: argparse.Namespace) -> dict[str, Any]:
    """``--num`` sentences of 12 words drawn from the HMM, with their hidden states."""
    hmm, corpus = load_run(args.run)
    states, words = hmm.sample(args.num, 12)
    return {"num": args.num, "sentences": [" ".join(corpus.vocab[int(w)] for w in row) for row in words],
            "states": states.tolist()}


def draw_figures(hmm: HMM, pred: np.ndarray, gold: np.ndarray, corpus: TaggedCorpus, out: Path) -> list[Path]:
    from .hmm_chorales import plot_transition_matrix

    from .. import plots

    plt = plots._pyplot()
    paths = [plot_transition_matrix(hmm, out / "transition_matrix.png")]
    table = contingency(pred, gold, hmm.num_states, len(corpus.tagset))
    freq = table / np.maximum(table.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(max(6, len(corpus.tagset) * 0.2), max(4, hmm.num_states * 0.15)))
    ax.imshow(freq, aspect="auto", cmap="Greys")
    ax.set_xticks(range(len(corpus.tagset)), corpus.tagset, rotation=90, fontsize=6)
    ax.set_xlabel("gold tag")
    ax.set_ylabel("HMM state")
    ax.set_title("p(tag | Viterbi state)")
    paths.append(plots._save(fig, out / "state_tag_counts.png"))
    return paths
