"""Task ``sentence_vae``: Bowman et al.'s sentence VAE, a deterministic autoencoder and an LSTM
language model on the same text; evaluation, prior samples and VAE-vs-AE homotopies.

Outputs under ``--out``: ``config.json``, ``vocab.json``, ``metrics.json``, ``samples.txt``,
``interpolation.txt`` and one folder per model (``vae/``, ``ae/``, ``lm/``) with ``fit``'s
checkpoints (``last.pt``, ``best.pt``, ``history.json``) and ``model.pt`` (config, best
weights and vocabulary in one file, see :func:`pyro_lvm.models.sentence_vae.load_sentence_model`).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from .. import runs
from ..checkpoint import atomic_json_save, set_seed
from ..data.text import (TextCorpus, Vocabulary, bucket_epoch_callback, bucket_loader, count_tokens, encode_sentences,
                         load_corpus)
from ..metrics import elbo_terms, log_likelihood
from ..models.cnn_decoder import DECODERS, receptive_field_option
from ..models.sentence_vae import (LSTMLanguageModel, SentenceAutoencoder, SentenceVAE, load_sentence_model,
                                   save_sentence_model)
from ..train import Callback, evaluate_loss, fit
from .. import decoding, infer
from ..diagnostics import active_units, mutual_information
from ..infer.pretraining import pretrain_and_fit

KINDS = ("vae", "ae", "lm")
REMEDY_PARTS = ("anneal", "free-bits", "aggressive", "pretrain")
# "pretrain+...": Li et al. 2019, autoencoder pretraining and a decoder reset first (pyro_lvm.infer.pretraining).
REMEDIES = ("none", *REMEDY_PARTS[:3], "anneal+aggressive", "pretrain+free-bits", "pretrain+anneal+free-bits")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", default="embedded",
                   help="'embedded' (Wikipedia sample shipped in gensim's wheel, offline), a ptb.zip or PTB folder, "
                        "or a text file with one sentence per line")
    p.add_argument("--subset", type=int, default=None, help="use only the first N training sentences")
    p.add_argument("--eval-subset", type=int, default=None, help="use only the first N valid/test sentences")
    p.add_argument("--max-vocab", type=int, default=10000, help="vocabulary size including the 4 special tokens")
    p.add_argument("--min-freq", type=int, default=1, help="rarer words read as <unk>")
    p.add_argument("--max-len", type=int, default=40, help="longer sentences are truncated (with a warning)")
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--hidden-dim", type=int, default=256)
    p.add_argument("--z-dim", type=int, default=32)
    p.add_argument("--encoder", default="lstm", choices=["lstm", "gru"])
    p.add_argument("--conditioning", default=None, choices=["init", "concat", "both"],
                   help="how z enters the decoder: initial state, concatenated to each input, or both "
                        "(default: init for the LSTM decoder, concat for the CNN)")
    p.add_argument("--decoder", default="lstm", choices=list(DECODERS),
                   help="decoder network of every model: LSTM, or Yang et al.'s causal dilated CNN")
    p.add_argument("--receptive-field", type=receptive_field_option, default=None,
                   help="context of the CNN decoder: small (15), medium (63), large (125) or a number of positions")
    p.add_argument("--word-keep", type=float, default=1.0,
                   help="word-dropout keep rate of the VAE decoder (1 = off; Bowman et al.'s decoder weakening)")
    p.add_argument("--remedy", default="none", choices=REMEDIES,
                   help="KL control for the VAE from pyro_lvm.infer (word dropout is --word-keep)")
    p.add_argument("--anneal-steps", type=int, default=2000, help="KL annealing length in steps (--remedy anneal)")
    p.add_argument("--anneal-start", type=float, default=0.1, help="KL weight at step 0 (--remedy anneal)")
    p.add_argument("--aggressive-steps", type=int, default=100,
                   help="most encoder-only steps per joint step (--remedy aggressive; He et al. use 100)")
    p.add_argument("--free-bits", type=float, default=0.5, help="lambda in nats per dimension (--remedy free-bits)")
    p.add_argument("--pretrain-epochs", type=int, default=5,
                   help="autoencoder (beta = 0) epochs before the decoder reset (--remedy pretrain+...; Li et al.)")
    p.add_argument("--reset", default="initial", choices=["initial", "fresh"],
                   help="decoder reset after pretraining: back to its initial values, or a fresh draw")
    p.add_argument("--models", nargs="+", default=list(KINDS), choices=KINDS, help="which models to train")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip-norm", type=float, default=5.0)
    p.add_argument("--patience", type=int, default=None, help="early stopping on the validation loss")
    p.add_argument("--samples", type=int, default=100,
                   help="importance samples per sentence for the test NLL (He et al. use 500)")
    p.add_argument("--decode", default="greedy", choices=sorted(decoding.DECODERS), help="decoder for samples/homotopies")
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    runs.add_run_arguments(p, resume=True)
    p.add_argument("--progress", action="store_true", help="show a progress bar per epoch")
    p.add_argument("--out", default="runs/sentence_vae")


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


def _check_resumed_vocab(args: argparse.Namespace, out: Path, vocab: Vocabulary) -> None:
    """On ``--resume`` the data must give the vocabulary the checkpoints were trained with."""
    saved = out / "vocab.json"
    if args.resume and saved.is_file():
        Vocabulary.load(saved).check_same(vocab, where=f"run folder {out} (resumed with other data or cut-offs)")


def build(kind: str, args: argparse.Namespace, vocab_size: int):
    common = dict(vocab_size=vocab_size, embed_dim=args.embed_dim, hidden_dim=args.hidden_dim, max_len=args.max_len,
                  decoder=getattr(args, "decoder", "lstm"), receptive_field=getattr(args, "receptive_field", None))
    if kind == "lm":
        return LSTMLanguageModel(**common)
    cls = SentenceVAE if kind == "vae" else SentenceAutoencoder
    return cls(**common, z_dim=args.z_dim, encoder=args.encoder, conditioning=args.conditioning,
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


# ----------------------------------------------------------------------------- evaluation

def eval_loader(tokens: torch.Tensor, batch_size: int = 50):
    return bucket_loader(tokens, batch_size, shuffle=False)


def evaluate_model(model, tokens: torch.Tensor, samples: int, batch_size: int = 20) -> dict[str, Any]:
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
        nll = -log_likelihood(model, loader, num_samples=k, chunk_size=chunk)
        out.update(neg_elbo=float(-terms["elbo"].mean()), kl=float(terms["kl"].mean()), nll=float(nll.mean()),
                   ppl=math.exp(float(nll.sum()) / n_tokens), is_samples=k)
        out.update(_diagnostics(model, tokens))
    if model.z_dim > 0:
        out["reconstruction_accuracy"] = decoding.reconstruction_accuracy(model, loader)
    return out


def _diagnostics(model, tokens: torch.Tensor, batch_size: int = 500) -> dict[str, Any]:
    """He et al.'s mutual information ``I_q(x; z)`` and active units (:mod:`pyro_lvm.diagnostics`).

    MI is estimated per batch and is at most ``log(batch size)``, so it gets its own wide
    batches (500 sentences: at most 6.2 nats) rather than the NLL's narrow ones.
    """
    if model.z_dim == 0:
        return {}
    loader = bucket_loader(tokens, batch_size, shuffle=False)
    return {"mi": mutual_information(model, loader), "active_units": active_units(model, loader),
            "mi_batch_size": min(batch_size, len(tokens))}


# ----------------------------------------------------------------------------- main

def main(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    corpus, vocab, data = prepare_data(args)
    _check_resumed_vocab(args, out, vocab)
    examples = [" ".join(s) for s in (corpus.test + corpus.train)[:2]]  # endpoints of the homotopy
    config = {"task": "sentence_vae", "corpus": args.corpus, "subset": args.subset, "eval_subset": args.eval_subset,
              "max_len": args.max_len, "seed": args.seed, "remedy": args.remedy, "example_sentences": examples,
              "models": {kind: build(kind, args, len(vocab)).config() for kind in args.models}}  # checks the sizes
    parse_remedy(args.remedy)
    with runs.start_run(out, config, resume=args.resume, overwrite=getattr(args, "overwrite", False)):
        vocab.save(out / "vocab.json")
        return _train(args, out, corpus, vocab, data, config, examples)


def _train(args: argparse.Namespace, out: Path, corpus: TextCorpus, vocab: Vocabulary, data: dict, config: dict,
           examples: list[str]) -> dict[str, Any]:
    metrics: dict[str, Any] = {"data": corpus.summary(), "vocab_size": len(vocab), "models": {}}
    models = {}
    for kind in args.models:
        set_seed(args.seed)
        model = build(kind, args, len(vocab))
        config["models"][kind] = model.config()
        atomic_json_save(config, out / "config.json")
        elbo, callbacks, extra = remedy_setup(args.remedy if kind == "vae" else "none", args)
        loader = bucket_loader(data["train"], args.batch_size, seed=args.seed)
        t0 = time.perf_counter()
        history = train_function(extra)(
                      model, loader, eval_loader(data["valid"]), elbo=elbo, epochs=args.epochs, lr=args.lr,
                      clip_norm=args.clip_norm, seed=args.seed, device=args.device, patience=args.patience,
                      restore_best=True, resume=args.resume, progress=args.progress, checkpoint_dir=out / kind,
                      callbacks=[bucket_epoch_callback(loader), *callbacks], **extra)
        seconds = time.perf_counter() - t0
        model.cpu().eval()
        save_sentence_model(model, vocab, out / kind / "model.pt")
        models[kind] = model
        metrics["models"][kind] = {
            "config": model.config(), "remedy": args.remedy if kind == "vae" else "none",
            "epochs": len(history), "train_seconds": round(seconds, 2),
            "seconds_per_epoch": round(seconds / max(len(history), 1), 2),
            "best_valid_loss": min(history["valid_loss"], default=None),
            "test": evaluate_model(model, data["test"], args.samples),
        }
    kw = _decode_kwargs(args)
    set_seed(args.seed)
    text: dict[str, Any] = {}
    for kind in ("vae", "lm"):
        if kind in models:
            text[f"{kind}_samples"] = decoding.to_text(vocab, decoding.sample_prior(models[kind], 5, args.decode, **kw))
    homotopies = {k.upper(): decoding.homotopy(models[k], vocab, *examples, steps=8, method=args.decode, **kw)
                  for k in ("vae", "ae") if k in models}
    text["homotopy"] = homotopies
    _write_text(out, text, examples)
    metrics["text"] = text
    atomic_json_save(metrics, out / "metrics.json")
    return metrics


def _decode_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    if args.decode == "beam":
        return {"beam_size": args.beam_size}
    if args.decode == "sample":
        return {"temperature": args.temperature}
    return {}


def _write_text(out: Path, text: dict[str, Any], examples: list[str]) -> None:
    lines = []
    for key in ("vae_samples", "lm_samples"):
        if key in text:
            lines += [f"# {key.replace('_', ' ')}", *text[key], ""]
    (out / "samples.txt").write_text("\n".join(lines))
    (out / "interpolation.txt").write_text(format_homotopy(text["homotopy"], examples))


def format_homotopy(rows: dict[str, list[str]], endpoints: list[str]) -> str:
    """Side-by-side columns, one per model, first/last lines decode the two sentences' codes."""
    lines = [f"from: {endpoints[0]}", f"to:   {endpoints[1]}", ""]
    for name, sentences in rows.items():
        lines += [f"## {name}", *sentences, ""]
    return "\n".join(lines)


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


def interpolate(args: argparse.Namespace) -> dict[str, Any]:
    """Homotopy between two sentences (``args.sentences`` or the run's two example test
    sentences) for the run's VAE and, when present, its autoencoder; printed side by side."""
    set_seed(getattr(args, "seed", 0))
    vae, vocab, config = load_run(args.run, "vae")
    sentences = list(args.sentences) if args.sentences else config["example_sentences"]
    if len(sentences) != 2:
        raise ValueError(f"interpolation needs exactly two sentences, got {len(sentences)}")
    rows = {"VAE": decoding.homotopy(vae, vocab, *sentences, steps=args.steps)}
    if (Path(args.run) / "ae" / "model.pt").is_file():
        ae, _, _ = load_run(args.run, "ae")
        rows["AE"] = decoding.homotopy(ae, vocab, *sentences, steps=args.steps)
    print(format_homotopy(rows, sentences))
    return {"sentences": sentences, "steps": args.steps, **rows}


def sample(args: argparse.Namespace) -> dict[str, Any]:
    """Greedy decodings of ``args.num`` codes drawn from the VAE's prior."""
    vae, vocab, _ = load_run(args.run, "vae")
    set_seed(args.seed)
    return {"samples": decoding.to_text(vocab, decoding.sample_prior(vae, args.num))}


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Test (or ``args.split``) metrics of every model in the run, data rebuilt from ``config.json``."""
    run = Path(args.run)
    config = _read_config(run)
    _, vocab, _ = load_run(run, next(iter(config["models"])))
    data_args = argparse.Namespace(corpus=config["corpus"], subset=config["subset"], eval_subset=config["eval_subset"],
                                   seed=config["seed"], max_len=config["max_len"], max_vocab=None, min_freq=1)
    _, _, data = prepare_data(data_args, vocab)
    report: dict[str, Any] = {"split": args.split}
    for kind in config["models"]:
        model, _, _ = load_run(run, kind)
        report[kind] = evaluate_model(model, data[args.split], args.samples)
    return report
