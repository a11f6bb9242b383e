"""Task ``sentence_vae``: Bowman et al.'s sentence VAE, a deterministic autoencoder and an LSTM
language model on the same text; evaluation, prior samples and VAE-vs-AE homotopies.

With no options this is the showcase (``pyro-lvm demo sentence``): the embedded Wikipedia sample's simple sentences, sizes and a
budget sized to train and evaluate all three models in under 5 minutes on 2 CPU cores (264
CPU seconds measured with one torch thread, the default, on a shared machine; see
docs/sentence_vae.md), free bits so that the VAE keeps a code, prior samples drawn by nucleus
sampling and homotopies decoded by a beam search that does not loop. Every default is an option.

Outputs under ``--out``: ``config.json``, ``vocab.json``, ``metrics.json``, ``samples.txt``,
``interpolation.txt``, ``report.txt`` (what the showcase prints) and one folder per model
(``vae/``, ``ae/``, ``lm/``) with ``fit``'s checkpoints (``last.pt``, ``best.pt``,
``history.json``) and ``model.pt`` (config, best weights and vocabulary in one file, see
:func:`pyro_lvm.models.text.sentence_vae.load_sentence_model`).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import pyro
import torch

from ..training import runs
from ..checkpoint import atomic_json_save, set_seed
from ..data.text import (TextCorpus, Vocabulary, bucket_loader, count_tokens, encode_sentences,
                         load_corpus, tokenize_text, unk_rate)
from ..evaluation.metrics import elbo_terms, log_likelihood
from ..models.text.cnn_decoder import DECODERS, receptive_field_option
from ..models.text.sentence_vae import (LSTMLanguageModel, SentenceAutoencoder, SentenceVAE, load_sentence_model,
                                        save_sentence_model)
from ..training.loop import Callback, evaluate_loss, fit
from .. import infer
from ..models.text import decoding
from ..evaluation.diagnostics import active_units, mutual_information
from ..infer.pretraining import pretrain_and_fit
from . import begin, run_folder

KINDS = ("vae", "ae", "lm")
NAMES = {"vae": "VAE", "ae": "AE", "lm": "LM"}
REMEDY_PARTS = ("anneal", "free-bits", "aggressive", "pretrain")
# "pretrain+...": Li et al. 2019, autoencoder pretraining and a decoder reset first (pyro_lvm.infer.pretraining).
REMEDIES = ("none", *REMEDY_PARTS[:3], "anneal+aggressive", "pretrain+free-bits", "pretrain+anneal+free-bits")
DEFAULT_REMEDY = "free-bits"
# Why free bits is the default (docs/sentence_vae.md; benchmarks/sentence_vae_ptb.py and
# sentence_vae_remedies.py): the rule is the best test NLL among the remedies that keep a code
# (KL >= 3 nats, >= 5 active units). On PTB only free bits does (annealing, annealing + word
# dropout and aggressive training collapse); on the embedded corpus at the showcase's budget
# free bits and free bits + word dropout do, free bits with the better NLL (annealing, with or
# without word dropout, and aggressive training collapse).
REMEDY_HELP = ("KL control for the VAE from pyro_lvm.infer. Default free-bits, by the rule 'best test NLL "
               "among the remedies that keep a code (KL >= 3 nats, >= 5 active units)': on PTB it is the only "
               "one of free-bits, anneal, anneal + word dropout and aggressive that keeps a code; on the "
               "embedded corpus, at this budget, anneal (with or without word dropout) and aggressive collapse "
               "and free bits has a better NLL than free bits + word dropout (docs/sentence_vae.md). "
               "'none' shows the collapse. 'pretrain+free-bits' is Li et al. 2019's recipe (autoencoder "
               "pretraining, decoder reset, free bits). Word dropout is --word-keep")
SHOWCASE = ("The lecture's sentence-VAE example, offline, sized for a few minutes on 2 idle CPU cores: trains "
            "a sentence VAE (free bits), a deterministic autoencoder and an LSTM language model on the embedded "
            "Wikipedia sample's simple sentences, then prints five sentences from the VAE's prior, the VAE's homotopy between two "
            "held-out sentences beside the autoencoder's, and KL, active units and NLL against the LM. "
            "The options are those of 'pyro-lvm train sentence_vae' (whose defaults are this showcase); "
            "add --remedy none to see the posterior collapse.")
HOMOTOPY_MAX_WORDS = 12  # default endpoints: the first two test sentences this short
TOP_P = 0.5  # nucleus of the prior samples: the unreliable tail of a few minutes' decoder stays out


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``pyro-lvm train sentence_vae`` (and of the showcase), one group per stage."""
    _data_arguments(p)
    _model_arguments(p)
    _kl_arguments(p)
    _training_arguments(p)
    _decoding_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    runs.add_run_arguments(p, resume=True)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="a progress bar per phase on stderr (also when it is not a terminal)")
    p.add_argument("--out", default="runs/sentence_vae")


def _data_arguments(p: argparse.ArgumentParser) -> None:
    """Which sentences, how many, and the vocabulary."""
    data = p.add_argument_group("data")
    data.add_argument("--corpus", default="embedded-simple",
                      help="'embedded-simple' (the default: the sentences of at most 30 tokens of the Wikipedia sample "
                           "shipped in gensim's wheel whose every word occurs at least 3 times in it, so that under 5%% "
                           "of test words are <unk>), 'embedded' (all of that sample), a ptb.zip or PTB folder, or a "
                           "text file with one sentence per line")
    data.add_argument("--subset", type=int, default=None, help="use only the first N training sentences")
    data.add_argument("--eval-subset", type=int, default=None, help="use only the first N valid/test sentences")
    data.add_argument("--max-vocab", type=int, default=None,
                      help="vocabulary size including the 4 special tokens (default: every training word)")
    data.add_argument("--min-freq", type=int, default=1, help="rarer training words read as <unk>")
    data.add_argument("--max-len", type=int, default=30, help="longer sentences are truncated (with a warning)")


def _model_arguments(p: argparse.ArgumentParser) -> None:
    """Sizes and networks of the encoder and decoder."""
    model = p.add_argument_group("model")
    model.add_argument("--embed-dim", type=int, default=128)
    model.add_argument("--hidden-dim", type=int, default=192)
    model.add_argument("--z-dim", type=int, default=32)
    model.add_argument("--encoder", default="lstm", choices=["lstm", "gru"])
    model.add_argument("--conditioning", default=None, choices=["init", "concat", "both"],
                       help="how z enters the decoder: initial state, concatenated to each input, or both. None: "
                            "both for the LSTM decoder (z at every step is the shortest path, which a few minutes of "
                            "training finds) and concat for the CNN, its only choice (it has no initial state)")
    model.add_argument("--decoder", default="lstm", choices=list(DECODERS),
                       help="decoder network of every model: LSTM, or Yang et al.'s causal dilated CNN")
    model.add_argument("--receptive-field", type=receptive_field_option, default=None,
                       help="context of the CNN decoder: small (15), medium (63), large (125) or a number of "
                            "positions. None: small")
    model.add_argument("--dropout", type=float, default=0.0, help="dropout on embeddings and decoder outputs")
    model.add_argument("--word-keep", type=float, default=1.0,
                       help="word-dropout keep rate of the VAE decoder (1 = off; Bowman et al.'s decoder weakening)")


def _kl_arguments(p: argparse.ArgumentParser) -> None:
    """The remedy against posterior collapse and its settings."""
    kl = p.add_argument_group("KL control (VAE only)")
    kl.add_argument("--remedy", default=DEFAULT_REMEDY, choices=REMEDIES, help=REMEDY_HELP)
    kl.add_argument("--free-bits", type=float, default=0.25,
                    help="lambda in nats per dimension (--remedy free-bits): z_dim * lambda nats are free")
    kl.add_argument("--anneal-steps", type=int, default=400,
                    help="KL annealing length in steps (--remedy anneal; the default reaches weight 1 three quarters "
                         "through the default run of 4 epochs, 528 steps)")
    kl.add_argument("--anneal-start", type=float, default=0.1, help="KL weight at step 0 (--remedy anneal)")
    kl.add_argument("--aggressive-steps", type=int, default=5,
                    help="most encoder-only steps per joint step (--remedy aggressive; He et al. use 100)")
    kl.add_argument("--pretrain-epochs", type=int, default=5,
                    help="autoencoder (beta = 0) epochs before the decoder reset (--remedy pretrain+...; Li et al.)")
    kl.add_argument("--reset", default="initial", choices=["initial", "fresh"],
                    help="decoder reset after pretraining: back to its initial values, or a fresh draw")


def _training_arguments(p: argparse.ArgumentParser) -> None:
    """Which models, the optimiser's settings, and the test NLL's importance samples."""
    train = p.add_argument_group("training")
    train.add_argument("--models", nargs="+", default=list(KINDS), choices=KINDS, help="which models to train")
    train.add_argument("--epochs", type=int, default=4)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=3e-3)
    train.add_argument("--clip-norm", type=float, default=5.0)
    train.add_argument("--patience", type=int, default=None, help="early stopping on the validation loss")
    train.add_argument("--samples", type=int, default=10,
                       help="importance samples K per sentence for the test NLL (He et al. use 500)")
    train.add_argument("--test-sentences", type=int, default=None,
                       help="evaluate on the first N test sentences (default: all)")


def _decoding_arguments(p: argparse.ArgumentParser) -> None:
    """How prior samples and homotopy points become sentences."""
    dec = p.add_argument_group("decoding (prior samples and homotopies)")
    dec.add_argument("--decode", default="beam", choices=sorted(decoding.DECODERS),
                     help="how homotopy points are decoded: beam (default; the most probable sentence of each code, "
                          "length-normalised, n-gram blocking), greedy (Bowman et al.'s; loops when the decoder is "
                          "small) or sample (nucleus sampling, --top-p)")
    dec.add_argument("--prior-decode", default="sample", choices=sorted(decoding.DECODERS),
                     help="how the prior samples (VAE and LM) are decoded: sample (default: a sentence drawn from "
                          "p(x | z), nucleus --top-p, as a sample of the model should be; the most probable sentence "
                          "of different codes is often the same common one), beam or greedy")
    dec.add_argument("--beam-size", type=int, default=10)
    dec.add_argument("--length-penalty", type=float, default=1.0,
                     help="beam score = log p / length ** this (0: plain log p, which prefers short sentences)")
    dec.add_argument("--block-ngram", type=int, default=2, help="never repeat an n-gram of this size (0 = off)")
    dec.add_argument("--top-p", type=float, default=TOP_P,
                     help="nucleus mass when sampling (1 = all words; Holtzman et al.'s tail cut)")
    dec.add_argument("--temperature", type=float, default=1.0, help="softmax temperature when sampling")
    dec.add_argument("--steps", type=int, default=7, help="points on each homotopy, both ends included (>= 2)")
    dec.add_argument("--sentences", nargs=2, default=None, metavar=("A", "B"),
                     help=f"homotopy endpoints (default: the first two test sentences of at most "
                          f"{HOMOTOPY_MAX_WORDS} words)")


def _option_names() -> list[str]:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return list(vars(p.parse_args([])))


TASK_OPTIONS = _option_names()  # what config.json records of a run's options


def conditioning(args: argparse.Namespace) -> str:
    """``--conditioning``, or its default: ``both`` for the LSTM decoder, ``concat`` (its only
    choice, having no initial state) for the CNN."""
    given = getattr(args, "conditioning", None)
    if given is not None:
        return given
    return "concat" if getattr(args, "decoder", "lstm") == "cnn" else "both"


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse settings that would fail only after training, before anything is trained, and fill
    in ``--conditioning``'s default, which depends on ``--decoder``."""
    args.conditioning = conditioning(args)  # config.json records the choice made
    steps = getattr(args, "steps", 7)
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"--steps must be >= 2 (a homotopy has both ends), got {steps!r}")
    for name in ("epochs", "samples", "batch_size", "beam_size", "pretrain_epochs"):
        v = getattr(args, name, 1)
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive int, got {v!r}")
    top_p, temperature = getattr(args, "top_p", 1.0), getattr(args, "temperature", 1.0)
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ValueError(f"--top-p must be in (0, 1], got {top_p!r}")
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"--temperature must be > 0, got {temperature!r}")
    sentences = getattr(args, "sentences", None)
    if sentences is not None and (len(sentences) != 2 or not all(tokenize_text(s) for s in sentences)):
        raise ValueError(f"--sentences needs two sentences with words in them, got {sentences!r}")


# ----------------------------------------------------------------------------- data

def prepare_data(args: argparse.Namespace, vocab: Vocabulary | None = None) -> tuple[TextCorpus, Vocabulary, dict]:
    """Corpus (subset as asked), vocabulary (built on train unless given) and encoded splits."""
    corpus = load_corpus(args.corpus, seed=args.seed)
    if args.subset is not None or args.eval_subset is not None:
        corpus = corpus.subset(args.subset, args.eval_subset)
    if vocab is None:
        vocab = Vocabulary.build(corpus.train, max_size=args.max_vocab, min_freq=args.min_freq)
    tensors = {s: encode_sentences(getattr(corpus, s), vocab, max_len=args.max_len) for s in ("train", "valid", "test")}
    return corpus, vocab, tensors


def data_summary(corpus: TextCorpus, vocab: Vocabulary, tensors: dict, args: argparse.Namespace) -> dict[str, Any]:
    """What ``metrics.json`` says about the text: split sizes, vocabulary and ``<unk>`` rates
    (share of words, ``<bos>``/``<eos>`` not counted, that read as ``<unk>``)."""
    return {**corpus.summary(), "vocab_size": len(vocab),
            "vocabulary": {"max_size": args.max_vocab, "min_freq": args.min_freq, "lowercase": True, "numbers": "N"},
            "unk_rate": {s: round(unk_rate(t), 5) for s, t in tensors.items()}}


def _check_resumed_vocab(args: argparse.Namespace, out: Path, vocab: Vocabulary) -> None:
    """On ``--resume`` the data must give the vocabulary the checkpoints were trained with."""
    saved = out / "vocab.json"
    if args.resume and saved.is_file():
        Vocabulary.load(saved).check_same(vocab, where=f"run folder {out} (resumed with other data or cut-offs)")


def build(kind: str, args: argparse.Namespace, vocab_size: int):
    common = dict(vocab_size=vocab_size, embed_dim=args.embed_dim, hidden_dim=args.hidden_dim, max_len=args.max_len,
                  dropout=getattr(args, "dropout", 0.0), decoder=getattr(args, "decoder", "lstm"),
                  receptive_field=getattr(args, "receptive_field", None))
    if kind == "lm":
        return LSTMLanguageModel(**common)
    cls = SentenceVAE if kind == "vae" else SentenceAutoencoder
    return cls(**common, z_dim=args.z_dim, encoder=args.encoder, conditioning=conditioning(args),
               word_keep=args.word_keep if kind == "vae" else 1.0)


# ----------------------------------------------------------------------------- KL control

def parse_remedy(remedy: str) -> tuple[str, ...]:
    """``"anneal+aggressive"`` -> ``("anneal", "aggressive")``; ``"none"`` -> ``()``.

    Parts may be combined with ``+`` (He et al. 2019 run aggressive training with annealing);
    ``free-bits`` and ``aggressive`` may each appear once.
    """
    if not isinstance(remedy, str) or not remedy:
        raise ValueError(f"remedy must be a non-empty string, got {remedy!r}")
    if remedy == "none":
        return ()
    parts = tuple(remedy.split("+"))
    unknown = [p for p in parts if p not in REMEDY_PARTS]
    if unknown or len(set(parts)) != len(parts):
        raise ValueError(f"unknown or repeated KL-control remedy {remedy!r}: use 'none' or parts of "
                         f"{list(REMEDY_PARTS)} joined by '+' (word dropout is --word-keep)")
    return parts


def remedy_setup(remedy: str, args: argparse.Namespace) -> tuple[Any, list[Callback], dict]:
    """``(elbo, callbacks, extra fit kwargs)`` for a KL-control remedy from :mod:`pyro_lvm.infer`.

    * ``none``: ``TraceMeanField_ELBO`` (analytic KL);
    * ``anneal``: :class:`~pyro_lvm.infer.KLAnnealing`, linear from ``args.anneal_start`` to 1
      over ``args.anneal_steps`` steps (He et al.'s schedule; the validation loss stays the ELBO);
    * ``free-bits``: :class:`~pyro_lvm.infer.FreeBitsELBO` with ``args.free_bits`` nats per
      latent dimension (Li et al. 2019);
    * ``aggressive``: :class:`~pyro_lvm.infer.AggressiveTraining` (He et al. 2019): encoder-only
      inner loop of at most ``args.aggressive_steps`` steps on training batches, until the
      validation MI stops rising (fit's ``train_data``/``valid_data`` are what it reads);
    * ``pretrain+free-bits`` (Li et al. 2019; ``pretrain+anneal+free-bits`` with their annealing):
      ``args.pretrain_epochs`` epochs as an autoencoder (beta = 0), a decoder reset (``args.reset``),
      then free bits; the extra kwargs are those of
      :func:`~pyro_lvm.infer.pretraining.pretrain_and_fit` (:func:`train_function` picks it).
    """
    parts = parse_remedy(remedy)
    elbo: Any = pyro.infer.TraceMeanField_ELBO()
    callbacks: list[Callback] = []
    if "free-bits" in parts:
        elbo = infer.FreeBitsELBO(getattr(args, "free_bits", 0.5))
    if "anneal" in parts:
        callbacks.append(infer.KLAnnealing("linear", start=getattr(args, "anneal_start", 0.1),
                                           steps=getattr(args, "anneal_steps", 2000)))
    if "aggressive" in parts:
        callbacks.append(infer.AggressiveTraining(max_inner_steps=getattr(args, "aggressive_steps", 100),
                                                  clip_norm=getattr(args, "clip_norm", None)))
    if "pretrain" in parts:  # trained by pretrain_and_fit (see train_function), which builds the free-bits ELBO
        return pyro.infer.TraceMeanField_ELBO(), callbacks, {
            "pretrain_epochs": getattr(args, "pretrain_epochs", 5), "reset": getattr(args, "reset", "initial"),
            "free_bits": getattr(args, "free_bits", 0.5) if "free-bits" in parts else 0.0}
    return elbo, callbacks, {}


def train_function(extra: dict):
    """``fit``, or :func:`~pyro_lvm.infer.pretraining.pretrain_and_fit` for a ``pretrain+...`` remedy."""
    return pretrain_and_fit if "pretrain_epochs" in extra else fit


# ----------------------------------------------------------------------------- progress

def _bar(total: int, desc: str, enabled: bool, initial: int = 0):
    """A tqdm bar on stderr, or ``None``. Not a terminal (a log file, CI): a new state every 10 s."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.2 if sys.stderr.isatty() else 10.0)


class TrainingProgress(Callback):
    """One bar per model over all its training steps: the model, the epoch, the last loss and
    the validation loss of the last epoch, with tqdm's elapsed time and ETA."""

    def __init__(self, name: str, epochs: int, batches_per_epoch: int, enabled: bool = True):
        self.name, self.epochs, self.batches, self.enabled = name, epochs, batches_per_epoch, enabled
        self.bar = None
        self.valid = ""

    def on_train_begin(self, state) -> None:
        self.bar = _bar(self.epochs * self.batches, f"train {self.name}", self.enabled,
                        initial=min(state.epoch, self.epochs) * self.batches)

    def on_epoch_begin(self, state) -> None:
        if self.bar is not None:
            self.bar.set_description(f"train {self.name} epoch {state.epoch + 1}/{self.epochs}", refresh=False)

    def on_step_end(self, state, batch, loss: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss/sentence {loss / len(batch):.2f}{self.valid}", refresh=False)
            self.bar.update(1)

    def on_epoch_end(self, state) -> None:
        if "valid_loss" in state.logs:
            self.valid = f", valid {state.logs['valid_loss']:.2f}"

    def on_train_end(self, state) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- evaluation

def eval_loader(tokens: torch.Tensor, batch_size: int = 50):
    return bucket_loader(tokens, batch_size, shuffle=False)


def evaluate_model(model, tokens: torch.Tensor, samples: int, batch_size: int = 20, progress: bool = False,
                   name: str | None = None) -> dict[str, Any]:
    """Test metrics in nats per sentence, perplexity per predicted token (words + ``<eos>``)."""
    model.eval()
    n_tokens = count_tokens(tokens)
    loader = eval_loader(tokens, batch_size)
    out: dict[str, Any] = {"sentences": len(tokens), "tokens": n_tokens}
    if isinstance(model, SentenceAutoencoder):
        # Its loss is exactly -log p(x | mu(x)): no prior, no likelihood of x to estimate.
        out["reconstruction_nll"] = evaluate_loss(model, loader, pyro.infer.Trace_ELBO())
    else:
        terms = elbo_terms(model, loader)
        k = samples if model.z_dim > 0 else 1  # the LM's bound is exact with one "sample"
        # Logits of all particles at once are (chunk * batch * T * vocab): keep that near 2**25
        # floats (128 MB) so the LSTM runs on a wide batch without exhausting memory.
        chunk = max(1, 2 ** 25 // (batch_size * tokens.shape[1] * model.vocab_size))
        name = name or type(model).__name__
        what = f"K={k} samples" if model.z_dim > 0 else "exact"
        bar = _bar(len(tokens), f"evaluate {name}: test NLL ({what}) over {len(tokens)} sentences", progress)
        parts = []
        for batch in loader:  # batch by batch, so that the bar moves
            parts.append(-log_likelihood(model, batch, num_samples=k, chunk_size=chunk))
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        nll = torch.cat(parts)
        out.update(neg_elbo=float(-terms["elbo"].mean()), kl=float(terms["kl"].mean()), nll=float(nll.mean()),
                   ppl=math.exp(float(nll.sum()) / n_tokens), is_samples=k)
        out.update(_diagnostics(model, tokens))
    if model.z_dim > 0:
        out["reconstruction_accuracy"] = decoding.reconstruction_accuracy(model, loader)
    return out


def _diagnostics(model, tokens: torch.Tensor, batch_size: int = 500) -> dict[str, Any]:
    """He et al.'s mutual information ``I_q(x; z)`` and active units (:mod:`pyro_lvm.evaluation.diagnostics`).

    MI is estimated per batch and is at most ``log(batch size)``, so it gets its own wide
    batches (500 sentences: at most 6.2 nats) rather than the NLL's narrow ones.
    """
    if model.z_dim == 0:
        return {}
    loader = bucket_loader(tokens, batch_size, shuffle=False)
    return {"mi": mutual_information(model, loader), "active_units": active_units(model, loader),
            "mi_batch_size": min(batch_size, len(tokens))}


@torch.no_grad()
def sentence_nll(model, vocab: Vocabulary, sentences: Sequence[str]) -> dict[str, float]:
    """``-log p(sentence)`` summed over ``sentences`` under a language model, with the token
    count (words + ``<eos>``) and the perplexity ``exp(nll / tokens)``: how natural text reads to it."""
    if model.z_dim != 0:
        raise ValueError(f"sentence_nll scores text under a language model (no z), got a {type(model).__name__}")
    token_lists = [tokenize_text(s) or ["<unk>"] for s in sentences]
    tokens = encode_sentences(token_lists, vocab, max_len=model.max_len)
    nll = -float(log_likelihood(model.eval(), tokens, num_samples=1).sum())
    n = count_tokens(tokens)
    return {"nll": nll, "tokens": n, "ppl": math.exp(nll / n)}


# ----------------------------------------------------------------------------- main

def main(args: argparse.Namespace) -> dict[str, Any]:
    check_arguments(args)
    started = time.perf_counter(), time.process_time(), _load()
    out = Path(args.out)
    corpus, vocab, data = prepare_data(args)
    if args.test_sentences is not None:
        data["test"] = data["test"][:args.test_sentences]
    endpoints = list(args.sentences) if args.sentences else decoding.homotopy_endpoints(corpus, HOMOTOPY_MAX_WORDS)
    if "vae" in args.models or "ae" in args.models:
        for s in endpoints:  # refuse an all-unknown endpoint now, not after training
            decoding.tokenize_known(vocab, s)
    _check_resumed_vocab(args, out, vocab)
    config = begin(args, "sentence_vae", {
        "corpus": args.corpus, "subset": args.subset, "eval_subset": args.eval_subset, "max_len": args.max_len,
        "seed": args.seed, "remedy": args.remedy, "example_sentences": endpoints, "decode": decode_settings(args),
        "prior_decode": decode_settings(args, args.prior_decode),
        "models": {kind: build(kind, args, len(vocab)).config() for kind in args.models},  # checks the sizes
        "options": {k: v for k, v in vars(args).items() if k in TASK_OPTIONS}})
    parse_remedy(args.remedy)
    with run_folder(args, config, out):
        vocab.save(out / "vocab.json")
        return _train(args, out, corpus, vocab, data, config, endpoints, started)


def _train(args: argparse.Namespace, out: Path, corpus: TextCorpus, vocab: Vocabulary, data: dict, config: dict,
           endpoints: list[str], started: tuple) -> dict[str, Any]:
    wall0, cpu0, load0 = started
    metrics: dict[str, Any] = {"data": data_summary(corpus, vocab, data, args), "vocab_size": len(vocab), "models": {}}
    models = {}
    for kind in args.models:
        set_seed(args.seed)
        model = build(kind, args, len(vocab))
        config["models"][kind] = model.config()
        atomic_json_save(config, out / "config.json")
        elbo, callbacks, extra = remedy_setup(args.remedy if kind == "vae" else "none", args)
        loader = bucket_loader(data["train"], args.batch_size, seed=args.seed)
        bar = TrainingProgress(NAMES[kind], args.epochs, len(loader), enabled=args.progress)
        if "pretrain_epochs" in extra:  # Li et al.: the pretraining phase gets its own bar
            extra["pretrain_callbacks"] = [TrainingProgress(
                f"{NAMES[kind]} (autoencoder pretraining)", extra["pretrain_epochs"], len(loader),
                enabled=args.progress)]
        t0, c0 = time.perf_counter(), time.process_time()
        history = train_function(extra)(
                      model, loader, eval_loader(data["valid"]), elbo=elbo, epochs=args.epochs, lr=args.lr,
                      clip_norm=args.clip_norm, seed=args.seed, device=args.device, patience=args.patience,
                      restore_best=True, resume=args.resume, progress=False, checkpoint_dir=out / kind,
                      callbacks=[*callbacks, bar], **extra)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        model.cpu().eval()
        save_sentence_model(model, vocab, out / kind / "model.pt")
        models[kind] = model
        t0 = time.perf_counter()
        test = evaluate_model(model, data["test"], args.samples, progress=args.progress, name=NAMES[kind])
        metrics["models"][kind] = {
            "config": model.config(), "remedy": args.remedy if kind == "vae" else "none",
            "epochs": len(history), "train_seconds": round(seconds, 2), "train_cpu_seconds": round(cpu, 2),
            "seconds_per_epoch": round(seconds / max(len(history), 1), 2),
            "best_valid_loss": min(history["valid_loss"], default=None),
            "eval_seconds": round(time.perf_counter() - t0, 2), "test": test,
        }
    text = generate_text(models, vocab, endpoints, args)
    _write_text(out, text, endpoints)
    metrics["text"] = text
    if "lm" in models:  # the lecture's point, measured: how natural the homotopies read to the LM
        metrics["homotopy_lm"] = {name: sentence_nll(models["lm"], vocab, rows[1:-1] or rows)
                                  for name, rows in text["homotopy"].items()}
    metrics["time"] = {"wall_seconds": round(time.perf_counter() - wall0, 1),
                       "cpu_seconds": round(time.process_time() - cpu0, 1), "torch_threads": torch.get_num_threads(),
                       "cpu_count": os.cpu_count(), "load_average_start": load0, "load_average_end": _load()}
    atomic_json_save(metrics, out / "metrics.json")
    (out / "report.txt").write_text(report(metrics))
    return metrics


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not on every platform
        return None


def decode_settings(args: argparse.Namespace, method: str | None = None) -> dict[str, Any]:
    """``{"method": ..., **keyword arguments}`` of a decoder of the task: ``method`` (default
    ``args.decode``, the homotopies') with the run's beam or sampling options."""
    method = args.decode if method is None else method
    kw: dict[str, Any] = {"block_ngram": args.block_ngram}
    if method == "beam":
        kw.update(beam_size=args.beam_size, length_penalty=args.length_penalty)
    elif method == "sample":
        kw.update(temperature=args.temperature, top_p=args.top_p)
    return {"method": method, **kw}


def generate_text(models: dict, vocab: Vocabulary, endpoints: Sequence[str], args: argparse.Namespace) -> dict[str, Any]:
    """Five prior samples of the VAE and the LM (decoded by ``args.prior_decode``), and the
    VAE's and AE's homotopies (``args.decode``)."""
    settings, prior = decode_settings(args), decode_settings(args, args.prior_decode)
    text: dict[str, Any] = {"decode": settings, "prior_decode": prior, "endpoints": list(endpoints)}
    for kind in ("vae", "lm"):
        if kind in models:
            set_seed(args.seed)
            text[f"{kind}_samples"] = decoding.to_text(vocab, decoding.sample_prior(models[kind], 5, **prior))
    text["homotopy"] = {}
    for kind in ("vae", "ae"):
        if kind in models:
            set_seed(args.seed)
            text["homotopy"][NAMES[kind]] = decoding.homotopy(models[kind], vocab, *endpoints, steps=args.steps,
                                                              **settings)
    return text


def _write_text(out: Path, text: dict[str, Any], endpoints: Sequence[str]) -> None:
    lines = []
    for key in ("vae_samples", "lm_samples"):
        if key in text:
            lines += [f"# {key.replace('_', ' ')}", *text[key], ""]
    (out / "samples.txt").write_text("\n".join(lines))
    (out / "interpolation.txt").write_text(format_homotopy(text["homotopy"], endpoints))


def format_homotopy(rows: dict[str, list[str]], endpoints: Sequence[str]) -> str:
    """The models' homotopies side by side, one numbered line per point; the first and last
    lines decode the two sentences' own codes."""
    lines = [f"from: {endpoints[0]}", f"to:   {endpoints[1]}", ""]
    names = list(rows)
    width = {n: max([len(n), *map(len, rows[n])]) for n in names[:-1]}
    lines.append("    " + " | ".join(n.ljust(width.get(n, 0)) for n in names).rstrip())
    for i in range(max(map(len, rows.values()), default=0)):
        cells = [(rows[n][i] if i < len(rows[n]) else "").ljust(width.get(n, 0)) for n in names]
        lines.append(f"{i + 1:>2}  " + " | ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _decoder_text(settings: dict[str, Any]) -> str:
    """``beam (beam size 5, ...)``: a decoder's settings in words."""
    return f"{settings['method']} (" + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in settings.items()
                                            if k != "method") + ")"


def report(metrics: dict[str, Any]) -> str:
    """What the showcase prints: prior samples, the homotopies side by side, KL/AU/NLL against the LM."""
    text, models, data = metrics["text"], metrics["models"], metrics["data"]
    endpoints = text["endpoints"]
    lines = [f"Corpus {data['name']}: {data['train']:,} / {data['valid']:,} / {data['test']:,} sentences, "
             f"vocabulary {data['vocab_size']:,}, <unk> {100 * data['unk_rate']['test']:.1f}% of test words.",
             f"Decoding: prior samples by {_decoder_text(text.get('prior_decode', text['decode']))}; "
             f"homotopies by {_decoder_text(text['decode'])}.", ""]
    for kind in ("vae", "lm"):
        if f"{kind}_samples" in text:
            title = "Five sentences from the VAE's prior (z ~ N(0, I), decoded)" if kind == "vae" else \
                "Five sentences from the LM (for comparison)"
            lines += [title + ":", *(f"  {s}" for s in text[f"{kind}_samples"]), ""]
    if text["homotopy"]:
        lines += ["Homotopy: decoding evenly spaced points between the codes of two held-out sentences", ""]
        lines += ["  " + row for row in format_homotopy(text["homotopy"], endpoints).splitlines()] + [""]
    if "homotopy_lm" in metrics:
        lines.append("Perplexity of the homotopy's inner sentences under the LM (lower reads more naturally): " +
                     ", ".join(f"{n} {v['ppl']:.1f}" for n, v in metrics["homotopy_lm"].items()))
        lines.append("")
    head = f"{'test set':<10} {'NLL':>8} {'PPL':>8} {'KL':>7} {'AU':>4} {'MI':>6}"
    lines += [f"Test set, {next(iter(models.values()))['test']['sentences']:,} sentences (NLL in nats per "
              f"sentence; the VAE's by importance sampling):", head]
    for kind in ("lm", "vae", "ae"):
        if kind not in models:
            continue
        t = models[kind]["test"]
        if kind == "ae":
            lines.append(f"{'AE':<10} reconstruction -log p(x | mu(x)) {t['reconstruction_nll']:.2f}, "
                         f"token accuracy {t['reconstruction_accuracy']:.2f}")
            continue
        name = "LM" if kind == "lm" else f"VAE K={t['is_samples']}"
        kl = f"{t['kl']:>7.2f}" if kind == "vae" else f"{'-':>7}"
        au = f"{t['active_units']:>4}" if kind == "vae" else f"{'-':>4}"
        mi = f"{t['mi']:>6.2f}" if kind == "vae" else f"{'-':>6}"
        lines.append(f"{name:<10} {t['nll']:>8.2f} {t['ppl']:>8.1f} {kl} {au} {mi}")
    if "vae" in models:
        lines.append(f"(VAE: remedy {models['vae']['remedy']}; KL >= 3 nats with >= 5 active units means it keeps "
                     "a code; --remedy none shows the collapse)")
    t = metrics["time"]
    how = t.get("note") or f"{t['torch_threads']} torch threads"
    lines += ["", f"Time: {t['wall_seconds']:.0f} s wall, {t['cpu_seconds']:.0f} s CPU "
                  f"({how}; load average at the start {t['load_average_start']})."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- CLI verbs on a run folder

def _read_config(run: Path) -> dict:
    return runs.read_config(run)


def load_run(run: str | Path, kind: str = "vae"):
    """``(model, vocabulary, config)`` of one model of a run folder written by :func:`main`."""
    run = Path(run)
    config = _read_config(run)
    model_path = run / kind / "model.pt"
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path} not found: the run has no trained {kind!r} model "
                                f"(trained: {sorted(config.get('models', {}))})")
    model, vocab = load_sentence_model(model_path, Vocabulary.load(run / "vocab.json"))
    return model, vocab, config


def _run_decoder(config: dict, use: str = "decode") -> dict[str, Any]:
    """The run's decoder settings for the homotopies (``use="decode"``) or the prior samples
    (``"prior_decode"``; runs written before it was saved: the homotopies'; before either: greedy)."""
    return dict(config.get(use) or config.get("decode") or {"method": "greedy"})


def interpolate(args: argparse.Namespace) -> dict[str, Any]:
    """Homotopy between two sentences (``args.sentences`` or the run's two example test
    sentences) for the run's VAE and, when present, its autoencoder; printed side by side."""
    if not isinstance(args.steps, int) or args.steps < 2:
        raise ValueError(f"--steps must be >= 2 (a homotopy has both ends), got {args.steps!r}")
    set_seed(getattr(args, "seed", 0))
    vae, vocab, config = load_run(args.run, "vae")
    sentences = list(args.sentences) if args.sentences else config["example_sentences"]
    if len(sentences) != 2:
        raise ValueError(f"interpolation needs exactly two sentences, got {len(sentences)}")
    settings = _run_decoder(config)
    rows = {"VAE": decoding.homotopy(vae, vocab, *sentences, steps=args.steps, **settings)}
    if (Path(args.run) / "ae" / "model.pt").is_file():
        ae, _, _ = load_run(args.run, "ae")
        rows["AE"] = decoding.homotopy(ae, vocab, *sentences, steps=args.steps, **settings)
    print(format_homotopy(rows, sentences))
    return {"sentences": sentences, "steps": args.steps, **rows}


def sample(args: argparse.Namespace) -> dict[str, Any]:
    """Decodings (with the run's prior-sample decoder) of ``args.num`` codes drawn from the VAE's prior."""
    vae, vocab, config = load_run(args.run, "vae")
    set_seed(args.seed)
    settings = _run_decoder(config, "prior_decode")
    return {"samples": decoding.to_text(vocab, decoding.sample_prior(vae, args.num, **settings))}


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Test (or ``args.split``) metrics of every model in the run, data rebuilt from ``config.json``."""
    run = Path(args.run)
    config = _read_config(run)
    _, vocab, _ = load_run(run, next(iter(config["models"])))
    data_args = argparse.Namespace(corpus=config["corpus"], subset=config["subset"], eval_subset=config["eval_subset"],
                                   seed=config["seed"], max_len=config["max_len"], max_vocab=None, min_freq=1)
    _, _, data = prepare_data(data_args, vocab)
    report_: dict[str, Any] = {"split": args.split}
    for kind in config["models"]:
        model, _, _ = load_run(run, kind)
        report_[kind] = evaluate_model(model, data[args.split], args.samples)
    return report_
