"""Task ``symbol_sequences``: a sentence autoencoder whose code is L discrete symbols from an alphabet of K.

Trains :class:`~pyro_lvm.models.text.symbol_sequences.SymbolSequenceAutoencoder` with the discrete
estimator ``--estimator`` (any name of :data:`pyro_lvm.infer.discrete.estimators.ESTIMATORS`), evaluates
it on the test sentences (the discrete model's -ELBO, the exact log-likelihood when the
``K**L`` codes can be summed, else importance sampling; reconstruction accuracy; exact
greedy reconstructions) and reports what the codes carry: the words most associated with
each symbol and, on MASC (``--corpus masc_tagged.zip``), the mutual information between the
symbol at each code position and the part-of-speech tag at each word position.
``--compare`` also runs :func:`pyro_lvm.infer.compare_estimators` on the trained pair
over every registered estimator.

Outputs under ``--out``: ``config.json``, ``vocab.json``, ``metrics.json``, ``codes.txt``
(test sentences, their codes and reconstructions), ``model.pt``, fit's checkpoints in
``model/``, ``tag_information.png`` (MASC) and ``estimators/`` (``--compare``).

    pyro-lvm train symbol-sequences --symbols 4 --alphabet 16 --epochs 3
    pyro-lvm train symbol-sequences --kl-weight 0 --anneal-rate 0     # an autoencoder: the code is free
    pyro-lvm train symbol-sequences --prior language_model            # Miao & Blunsom: L source words, LM prior

``--prior language_model`` trains the LM prior on the training sentences first (``--prior-epochs``,
its losses in ``metrics.json`` under ``prior_pretraining``) and keeps it fixed (``--train-prior``:
trained with the ELBO too); ``codes.txt`` then shows each code as words.

With a uniform prior and the ELBO (``--kl-weight 1``) a deterministic code costs its full
``L log K`` nats, and on real text with an LSTM decoder the code collapses (q uniform, KL 0);
``--kl-weight 0`` trains the autoencoder of Havrylov & Titov's communication games, where the
code carries whatever helps reconstruction.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from .. import validation as V
from ..models.text import decoding
from ..training import runs
from ..checkpoint import atomic_json_save, atomic_torch_save, load_checkpoint, set_seed
from ..data.images import split_indices
from ..data.tagged_text import read_masc_sentences
from ..data.text import TextCorpus, Vocabulary, bucket_loader, encode_sentences, load_corpus
from ..infer.discrete.estimators import ESTIMATORS, RELAXED, DiscreteELBO, TemperatureAnnealing
from ..infer.handlers import KLScaledELBO
from ..infer.discrete.comparison import check_enumerable, compare_estimators
from ..models.text.symbol_sequences import (PRIORS, SymbolSequenceAutoencoder, symbol_tag_information,
                                            symbol_word_associations)
from ..models.text.symbol_metrics import code_as_words, evaluate_model, exact_reconstructions
from ..training.loop import fit
from . import begin, run_folder

MODEL_FORMAT = "pyro_lvm.symbol_sequences/1"
NOT_APPLICABLE = {"interpolate": "its codes are sequences of discrete symbols, with no line between two of them"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", default="embedded",
                   help="'embedded' (Wikipedia sample in gensim's wheel, offline), a ptb.zip or PTB folder, a text file "
                        "with one sentence per line, or masc_tagged.zip (then tags are kept for the alignment)")
    p.add_argument("--subset", type=V.positive_int.cli, default=None, help="use only the first N training sentences")
    p.add_argument("--eval-subset", type=V.positive_int.cli, default=None, help="first N valid/test sentences")
    p.add_argument("--max-vocab", type=V.Integer(5).cli, default=10000, help="vocabulary size with the 4 special tokens")
    p.add_argument("--max-len", type=V.positive_int.cli, default=40, help="longer sentences are truncated")
    p.add_argument("--symbols", type=V.positive_int.cli, default=4, help="L, symbols per code")
    p.add_argument("--alphabet", type=V.Integer(2).cli, default=None,
                   help="K, distinct symbols (default 16); with --prior language_model the latent words are the "
                        "vocabulary's first K token ids (default: the whole vocabulary; at most its size)")
    p.add_argument("--prior", default="uniform", choices=PRIORS,
                   help="uniform symbols, or language_model: Miao & Blunsom's compression prior (the code is L words "
                        "pointed at in the sentence, scored by an LSTM language model)")
    p.add_argument("--prior-epochs", type=V.non_negative_int.cli, default=2,
                   help="--prior language_model: epochs of training the LM prior on the training sentences first")
    p.add_argument("--train-prior", action="store_true",
                   help="--prior language_model: keep training the LM prior with the ELBO (default: fixed after pretraining)")
    p.add_argument("--embed-dim", type=V.positive_int.cli, default=64)
    p.add_argument("--hidden-dim", type=V.positive_int.cli, default=128)
    p.add_argument("--symbol-dim", type=V.positive_int.cli, default=32)
    p.add_argument("--estimator", default="straight-through", choices=list(ESTIMATORS))
    p.add_argument("--temperature", type=V.positive_number.cli, default=1.0, help="initial relaxation temperature")
    p.add_argument("--anneal-rate", type=V.non_negative_number.cli, default=1e-4,
                   help="tau = max(min, tau0 exp(-rate * step)) for the relaxed estimators")
    p.add_argument("--min-temperature", type=V.positive_number.cli, default=0.5)
    p.add_argument("--kl-weight", type=V.non_negative_number.cli, default=1.0,
                   help="weight of the KL term (1: the ELBO; 0: an autoencoder whose code costs nothing, as in "
                        "Havrylov & Titov's games); evaluation always reports the ELBO")
    p.add_argument("--epochs", type=V.non_negative_int.cli, default=5)
    p.add_argument("--batch-size", type=V.positive_int.cli, default=64)
    p.add_argument("--lr", type=V.positive_number.cli, default=2e-3)
    p.add_argument("--clip-norm", type=V.positive_number.cli, default=5.0)
    p.add_argument("--samples", type=V.positive_int.cli, default=100,
                   help="importance samples per test sentence when the codes are too many to sum exactly")
    p.add_argument("--compare", action="store_true", help="also compare every registered estimator on the trained pair")
    p.add_argument("--compare-batch", type=V.positive_int.cli, default=32, help="test sentences in the comparison batch")
    p.add_argument("--repeats", type=V.Integer(2).cli, default=50, help="gradient draws per estimator (--compare)")
    p.add_argument("--curve-steps", type=V.non_negative_int.cli, default=0,
                   help="--compare: also train each estimator this many steps on the batch (ELBO vs time)")
    p.add_argument("--seed", type=V.seed_rule.cli, default=0)
    p.add_argument("--device", default="cpu", type=V.device_rule.cli)
    runs.add_run_arguments(p, resume=True)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", default="runs/symbol_sequences")


# ----------------------------------------------------------------------------- data

def load_data(source: str, seed: int = 0) -> tuple[TextCorpus, dict[str, list[list[str]]] | None]:
    """The corpus, and for MASC (a ``masc_tagged.zip``) each split's tag sequences (else None).

    MASC words are lower-cased, as the other corpora's; tags stay Penn Treebank tags.
    """
    if Path(source).name == "masc_tagged.zip" or (Path(source).is_dir() and (Path(source) / "masc_tagged.zip").is_file()):
        tagged = read_masc_sentences(source)
        parts = dict(zip(("train", "valid", "test"), split_indices(len(tagged), seed=seed)))
        words = {s: [[w.lower() for w, _ in tagged[i]] for i in idx] for s, idx in parts.items()}
        tags = {s: [[t for _, t in tagged[i]] for i in idx] for s, idx in parts.items()}
        return TextCorpus(words["train"], words["valid"], words["test"], "masc"), tags
    return load_corpus(source, seed=seed), None


def prepare_data(args: argparse.Namespace, vocab: Vocabulary | None = None):
    """``(corpus, tags or None, vocabulary, {split: tokens})``, subsets applied, vocabulary built on train."""
    corpus, tags = load_data(args.corpus, args.seed)
    if args.subset is not None or args.eval_subset is not None:
        corpus = corpus.subset(args.subset, args.eval_subset)
        if tags is not None:
            ev = args.eval_subset if args.eval_subset is not None else args.subset
            tags = {"train": tags["train"][:args.subset], "valid": tags["valid"][:ev], "test": tags["test"][:ev]}
    if vocab is None:
        vocab = Vocabulary.build(corpus.train, max_size=args.max_vocab)
    tensors = {s: encode_sentences(getattr(corpus, s), vocab, max_len=args.max_len) for s in ("train", "valid", "test")}
    return corpus, tags, vocab, tensors


def build(args: argparse.Namespace, vocab_size: int) -> SymbolSequenceAutoencoder:
    return SymbolSequenceAutoencoder(vocab_size, n_symbols=args.symbols, alphabet=args.alphabet,
                                     embed_dim=args.embed_dim, hidden_dim=args.hidden_dim,
                                     symbol_dim=args.symbol_dim, max_len=args.max_len,
                                     prior=getattr(args, "prior", "uniform"),
                                     train_prior=getattr(args, "train_prior", False))


def objective(args: argparse.Namespace) -> tuple[Any, list]:
    """The training objective for ``--estimator`` (its KL term weighted by ``--kl-weight`` through
    :class:`~pyro_lvm.infer.KLScaledELBO`) and, for the relaxed ones, temperature annealing."""
    elbo = DiscreteELBO(args.estimator, args.temperature, max_plate_nesting=1)
    anneal = [TemperatureAnnealing(args.anneal_rate, args.min_temperature, args.temperature)] \
        if args.estimator in RELAXED and args.anneal_rate > 0 else []
    beta = getattr(args, "kl_weight", 1.0)
    if beta == 1.0:
        return elbo, anneal
    if anneal:
        raise V.InvalidArgumentError(
            f"--kl-weight {beta:g} with temperature annealing: the KL handler wraps the objective, and the annealing "
            "would set the wrapper's temperature, not the estimator's; pass --anneal-rate 0 (a fixed --temperature)")
    return KLScaledELBO(elbo, beta=beta), []


# ----------------------------------------------------------------------------- main

def main(args: argparse.Namespace) -> dict[str, Any]:
    corpus, tags, vocab, data = prepare_data(args)
    out = Path(args.out)
    config = begin(args, "symbol_sequences", model=build(args, len(vocab)).config())
    with run_folder(args, config, out):
        if args.resume and (out / "vocab.json").is_file():
            Vocabulary.load(out / "vocab.json").check_same(vocab, where=f"run folder {out}")
        vocab.save(out / "vocab.json")
        return _train(args, out, corpus, tags, vocab, data)


def _train(args, out: Path, corpus: TextCorpus, tags, vocab: Vocabulary, data: dict) -> dict[str, Any]:
    set_seed(args.seed)
    pyro.clear_param_store()
    model = build(args, len(vocab))
    pretraining = _pretrain_prior(args, model, data)
    elbo, callbacks = objective(args)
    loader = bucket_loader(data["train"], args.batch_size, seed=args.seed)
    t0 = time.perf_counter()
    history = fit(model, loader, bucket_loader(data["valid"], 100, shuffle=False), elbo=elbo, epochs=args.epochs,
                  lr=args.lr, clip_norm=args.clip_norm, seed=args.seed, device=args.device, restore_best=True,
                  resume=args.resume, progress=args.progress, checkpoint_dir=out / "model", callbacks=callbacks)
    seconds = time.perf_counter() - t0
    model.cpu().eval()
    save_model(model, vocab, out / "model.pt")
    test = evaluate_model(model, data["test"], args.samples)
    exact, examples = exact_reconstructions(model, vocab, data["test"][:200])
    test["exact_reconstructions"] = exact
    symbols = model.symbols(data["test"])
    metrics: dict[str, Any] = {
        "data": corpus.summary(), "vocab_size": len(vocab), "config": model.config(), "estimator": args.estimator,
        "epochs": len(history), "train_seconds": round(seconds, 2), "best_valid_loss": min(history["valid_loss"]),
        "test": test, "symbols_used": {str(pos): len(set(symbols[:, pos].tolist())) for pos in range(model.n_symbols)},
        "word_associations": symbol_word_associations(symbols, corpus.test, min_count=3),
    }
    if pretraining is not None:
        metrics["prior_pretraining"] = pretraining
    if tags is not None:
        info = symbol_tag_information(symbols, tags["test"])
        metrics["tag_information"] = info
        _plot_tag_information(info, out / "tag_information.png")
    lines = [f"{e.get('code_words', e['code'])}\t{e['sentence']}\n\t-> {e['reconstruction']}" for e in examples[:20]]
    (out / "codes.txt").write_text("\n".join(lines) + "\n")
    if args.compare:
        metrics["estimators"] = _compare(args, model, data["test"][:args.compare_batch], out / "estimators")
    atomic_json_save(metrics, out / "metrics.json")
    return metrics


def _pretrain_prior(args, model: SymbolSequenceAutoencoder, data: dict) -> dict[str, Any] | None:
    """Miao & Blunsom's first step for ``--prior language_model``: the LM prior trained on the training
    sentences (``--prior-epochs``); its loss per word on train (each epoch) and validation."""
    if not model.compresses:
        return None
    t0 = time.perf_counter()
    losses = model.pretrain_prior(data["train"], args.prior_epochs, args.batch_size, args.lr, args.seed)
    with torch.no_grad():
        valid = float(model.language_model.sentence_loss(data["valid"]))
    return {"epochs": args.prior_epochs, "train_loss_per_word": losses, "valid_loss_per_word": valid,
            "fixed": not model.train_prior, "seconds": round(time.perf_counter() - t0, 2)}


def comparable_estimators(model: SymbolSequenceAutoencoder, batch: torch.Tensor) -> list[str]:
    """Every registered estimator, less ``"enumerate"`` when the codes are too many to sum."""
    names = list(ESTIMATORS)
    try:
        check_enumerable(model, batch)
    except ValueError:
        names.remove("enumerate")
    return names


def _compare(args, model: SymbolSequenceAutoencoder, batch: torch.Tensor, folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    cmp = compare_estimators(model, batch, comparable_estimators(model, batch), temperatures=[1.0, 0.5],
                             repeats=args.repeats, curve_steps=args.curve_steps, curve_every=max(args.curve_steps // 10, 1),
                             seed=args.seed)
    (folder / "table.md").write_text(cmp.to_markdown() + "\n")
    cmp.to_json(folder / "comparison.json")
    return {"table": cmp.table(), "exact_available": cmp.exact_available, "latent_size": cmp.latent_size,
            "figures": [str(p) for p in cmp.plot(folder)]}


def _plot_tag_information(info: dict, path: Path) -> None:
    from ..plots import pyplot, save_figure

    mi = torch.tensor(info["mi"]) - torch.tensor(info["chance"])
    fig, ax = pyplot().subplots(figsize=(1 + 0.6 * mi.shape[1], 1 + 0.5 * mi.shape[0]))
    image = ax.imshow(mi.numpy(), cmap="viridis", aspect="auto")
    ax.set(xlabel="word position", ylabel="code position", xticks=range(mi.shape[1]),
           xticklabels=[str(j + 1) for j in range(mi.shape[1])], yticks=range(mi.shape[0]),
           yticklabels=[str(i + 1) for i in range(mi.shape[0])], title="I(symbol; POS tag) above chance, nats")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------- files and run verbs

def save_model(model: SymbolSequenceAutoencoder, vocab: Vocabulary, path: Path) -> None:
    """One file with the model's config, weights and vocabulary (tensors and plain data only)."""
    atomic_torch_save({"format": MODEL_FORMAT, "config": model.config(), "state_dict": model.state_dict(),
                       "vocab": vocab.to_dict()}, path)


def load_model(path: str | Path) -> tuple[SymbolSequenceAutoencoder, Vocabulary]:
    """Inverse of :func:`save_model` (the file is loaded without running code): ``(model in eval mode, vocabulary)``."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a symbol-sequence model file written by save_model")
    model = SymbolSequenceAutoencoder(**ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), Vocabulary.from_dict(ckpt["vocab"])


def sample(args: argparse.Namespace) -> dict[str, Any]:
    """Greedy decodings of ``args.num`` codes drawn from the run's prior (uniform, or its language model)."""
    model, vocab = load_model(Path(args.run) / "model.pt")
    codes = model.sample_prior_codes(args.num)
    text = decoding.to_text(vocab, decoding.greedy(model, codes))
    symbols = codes.reshape(args.num, model.n_symbols, model.alphabet).argmax(-1).tolist()
    rows = [{"code": c, "sentence": s} for c, s in zip(symbols, text)]
    if model.compresses:  # the symbols are words
        for row in rows:
            row["code_words"] = code_as_words(vocab, row["code"])
    return {"samples": rows}


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Metrics of the run's model on ``args.split``, the data rebuilt from ``config.json``."""
    run = Path(args.run)
    model, vocab = load_model(run / "model.pt")
    config = runs.read_config(run)
    data_args = argparse.Namespace(**{k: config.get(k) for k in ("corpus", "subset", "eval_subset", "seed", "max_len")},
                                   max_vocab=None)
    _, _, _, data = prepare_data(data_args, vocab)
    return {"split": args.split, **evaluate_model(model, data[args.split], args.samples)}
