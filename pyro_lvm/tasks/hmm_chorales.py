"""Task ``hmm_chorales``: Pyro's HMM family over piano rolls of Bach chorales.

Chains (``--chain``): ``hmm`` (first order), ``fhmm`` (two independent chains, Pyro's model 3),
``pfhmm`` (partially factorial, model 4), ``2hmm`` (second order, model 6; ``--raftery`` for the
mixture parameterisation). Emissions (``--emission``): ``bernoulli`` (independent keys given the
state), ``autoregressive`` (each key also sees its own previous value, the arHMM of model 2),
``neural`` (logits from the state and the previous frame, the nnHMM of models 5/7; with
``--within-frame`` each key also sees the keys below it in the same frame).

Training: Baum-Welch (``--trainer em``, first-order chain with a closed-form emission) or Adam
on the Pyro loss (``adam``, either inference path); ``auto`` picks EM where it applies.
``--patience N`` stops Adam when the validation NLL has not improved for N epochs and keeps
the best epoch. Reports the exact negative log-likelihood in nats per time step on each split
and the training time per epoch, and draws a test piano roll with its Viterbi state path and
the learned transition matrix.

Data: music21's bundled chorales by default (offline; ``--limit N`` parses only the first N
scores, cached under ``--cache-dir``), or the standard JSB set with ``--data-path
jsb_chorales.pickle``. ``--protocol used-keys`` drops keys never played in training (Pyro's
``examples/hmm.py``: 51 of 88 on JSB); ``full`` keeps all 88.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import torch

from ..base import batch_to, pair_device
from .. import plots, validation as V
from ..training import runs
from ..checkpoint import atomic_json_save, atomic_torch_save, load_checkpoint, load_module_state
from ..data.music import MusicData, keep_used_keys, load_jsb_pickle, load_music21_chorales, pad_rolls
from ..models.hmm import HMM, AutoregressiveBernoulliEmission, BernoulliEmission, HMMBase, NeuralBernoulliEmission
from ..models.hmm.family import FactorialHMM, PartiallyFactorialHMM, SecondOrderHMM
from ..training.loop import fit, resolve_device
from . import begin, run_folder

MODEL_FILE = "model.pt"  # the trained HMM's weights (EM trains without fit's checkpoints)
NOT_APPLICABLE = {"interpolate": "an HMM's states are discrete, with no code to interpolate between"}

CHAINS = ("hmm", "fhmm", "pfhmm", "2hmm")
EMISSIONS = ("bernoulli", "autoregressive", "neural")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-path", default=None, help="jsb_chorales.pickle; omitted: music21's Bach chorales")
    p.add_argument("--limit", type=V.Integer(3, optional=True).cli, default=None, help="music21: parse only the first N scores")
    p.add_argument("--cache-dir", default=None, help="music21 parse cache (default ~/.cache/pyro_lvm)")
    p.add_argument("--protocol", default="full", choices=["full", "used-keys"])
    p.add_argument("--chain", default="hmm", choices=CHAINS)
    p.add_argument("--states", type=V.positive_int.cli, default=16, help="states of the chain (fhmm/pfhmm: see --sizes)")
    p.add_argument("--sizes", type=V.positive_int.cli, nargs=2, default=None, metavar=("A", "B"),
                   help="fhmm/pfhmm: states of the two chains (default: the square root of --states twice)")
    p.add_argument("--raftery", action="store_true", help="2hmm: Raftery's mixture instead of the full K^3 table")
    p.add_argument("--emission", default="bernoulli", choices=EMISSIONS)
    p.add_argument("--hidden", type=V.positive_int.cli, default=16, help="neural emission width")
    p.add_argument("--within-frame", action="store_true", help="neural: each key also sees lower keys of its frame")
    p.add_argument("--parameters", default="map", choices=["map", "bayes"],
                   help="hmm chain only. bayes: Dirichlet priors on the initial and transition rows and a variational "
                        "posterior over them (trained by Adam), summarised with ArviZ in transition_summary.csv")
    p.add_argument("--trainer", default="auto", choices=["auto", "em", "adam"],
                   help="auto: EM for a first-order chain with a closed-form emission, else Adam")
    p.add_argument("--inference", default="fast", choices=["fast", "markov"], help="adam only")
    p.add_argument("--iterations", type=V.non_negative_int.cli, default=50, help="EM iterations or Adam epochs")
    p.add_argument("--patience", type=V.Integer(1, optional=True).cli, default=None, help="adam: stop after N epochs without a better valid NLL")
    p.add_argument("--lr", type=V.positive_number.cli, default=0.03)
    p.add_argument("--batch-size", type=V.positive_int.cli, default=32)
    p.add_argument("--seed", type=V.seed_rule.cli, default=0)
    p.add_argument("--device", default="cpu", type=V.device_rule.cli, help="cpu, cuda or cuda:N")
    runs.add_run_arguments(p, resume=False)
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--out", default="runs/hmm_chorales")


def load_data(args: argparse.Namespace) -> tuple[MusicData, dict]:
    data = load_jsb_pickle(args.data_path) if args.data_path else load_music21_chorales(args.limit, args.cache_dir)
    info: dict[str, Any] = {"keys": 88}
    if args.protocol == "used-keys":
        data, keys = keep_used_keys(data)
        info = {"keys": len(keys), "key_indices": keys.tolist()}
    return data, info


def chain_sizes(args: argparse.Namespace) -> tuple[int, int]:
    if args.sizes is not None:
        return tuple(args.sizes)
    side = int(round(args.states ** 0.5))
    if side * side != args.states:
        raise ValueError(f"--chain {args.chain} splits --states into two chains: give a square number or --sizes A B, "
                         f"not {args.states}")
    return side, side


def build_model(args: argparse.Namespace, dim: int) -> HMMBase:
    if args.parameters == "bayes" and args.chain != "hmm":
        raise ValueError(f"--parameters bayes is for the first-order chain; --chain {args.chain} keeps point estimates")
    states = args.states if args.chain in ("hmm", "2hmm") else chain_sizes(args)[0] * chain_sizes(args)[1]
    if args.emission == "neural":
        emission = NeuralBernoulliEmission(states, dim, args.hidden, within_frame=args.within_frame)
    elif args.emission == "autoregressive":
        emission = AutoregressiveBernoulliEmission(states, dim)
    else:
        emission = BernoulliEmission(states, dim)
    if args.chain == "fhmm":
        return FactorialHMM(emission, chain_sizes(args), inference=args.inference)
    if args.chain == "pfhmm":
        return PartiallyFactorialHMM(emission, chain_sizes(args), inference=args.inference)
    if args.chain == "2hmm":
        return SecondOrderHMM(emission, raftery=args.raftery, inference=args.inference)
    return HMM(emission, inference=args.inference, parameters=args.parameters)


def trainer_of(args: argparse.Namespace) -> str:
    closed_form = args.chain == "hmm" and args.emission != "neural" and args.parameters == "map"
    if args.trainer == "auto":
        return "em" if closed_form else "adam"
    if args.trainer == "em" and not closed_form:
        if args.parameters == "bayes":
            raise ValueError("--trainer em updates point estimates; with --parameters bayes use --trainer adam")
        raise ValueError(f"--trainer em needs --chain hmm and a closed-form emission (bernoulli, autoregressive); "
                         f"use --trainer adam for --chain {args.chain} --emission {args.emission}")
    return args.trainer


@torch.no_grad()
def nll_per_step(hmm: HMMBase, rolls: list[torch.Tensor]) -> float:
    """Exact ``-log p(x) / number of frames`` over a list of rolls."""
    x, mask = batch_to(pad_rolls(rolls), pair_device(hmm))
    return float(-hmm.log_likelihood(x, mask).sum() / mask.sum())


def train(hmm: HMMBase, data: MusicData, args: argparse.Namespace) -> list[float]:
    """Fit ``hmm`` on ``data.train``; returns the training NLL per step after each iteration/epoch."""
    device = pair_device(hmm)
    x, mask = batch_to(pad_rolls(data.train), device)
    frames = float(mask.sum())
    if trainer_of(args) == "em":
        return [-ll / frames for ll in hmm.em_fit([(x, mask)], args.iterations)]
    valid = batch_to(pad_rolls(data.valid), device) if args.patience else None
    # Each batch's loss estimates the whole training set's (full-data scaling): an epoch's
    # train_loss (the batches' sum over N) times N is the sum of those estimates, one per batch.
    history = fit(hmm, (x, mask), valid, elbo=hmm.objective(num_datapoints=len(x)), epochs=args.iterations,
                  batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device, progress=False,
                  patience=args.patience, restore_best=bool(args.patience))
    batches = math.ceil(len(x) / args.batch_size)
    return [loss * len(x) / (batches * frames) for loss in history["train_loss"]]


def main(args: argparse.Namespace) -> dict[str, Any]:
    resolve_device(args.device)  # a clear error before any work when CUDA is missing
    trainer_of(args)  # refuse a bad combination before loading anything
    config = begin(args, "hmm_chorales")
    data, key_info = load_data(args)
    dim = data.train[0].shape[1]
    hmm = build_model(args, dim).to(args.device)
    with run_folder(args, config) as out:
        return _train(args, out, data, key_info, hmm)


def _train(args: argparse.Namespace, out: Path, data: MusicData, key_info: dict, hmm: HMMBase) -> dict[str, Any]:
    t0 = time.perf_counter()
    history = train(hmm, data, args)
    seconds = time.perf_counter() - t0
    metrics: dict[str, Any] = {
        "data": data.summary(), "protocol": args.protocol, "keys": key_info["keys"], "chain": args.chain,
        "states": hmm.num_states, "emission": args.emission, "within_frame": args.within_frame,
        "raftery": args.raftery, "trainer": trainer_of(args), "iterations": len(history),
        "train_seconds": round(seconds, 1), "seconds_per_epoch": round(seconds / max(len(history), 1), 3),
        "parameters_count": sum(p.numel() for p in hmm.parameters()), "train_nll_history": history,
        **{f"{s}_nll_per_step": nll_per_step(hmm, getattr(data, s)) for s in ("train", "valid", "test")}}
    if args.parameters == "bayes":
        metrics["posterior_summary"] = str(summarise_transitions(hmm, data, out / "transition_summary.csv"))
    atomic_torch_save({"format": "pyro_lvm.hmm_run/1", "pair": hmm.cpu().state_dict()}, out / MODEL_FILE)
    if not args.no_figures:
        states, _ = hmm.viterbi(data.test[0].unsqueeze(0).to(pair_device(hmm)))
        metrics["figures"] = [str(plots.roll_with_states(data.test[0], states[0], out / "viterbi_roll.png")),
                              str(plots.transition_matrix(hmm, out / "transition_matrix.png"))]
    atomic_json_save(metrics, out / "metrics.json")
    return metrics


def summarise_transitions(hmm: HMM, data: MusicData, path: Path) -> Path:
    """``az.summary`` of 200 draws of the transition matrix from the guide, written as CSV.

    The draws are independent (variational), so the MCMC columns (r_hat, ess) are left out.
    """
    import arviz as az

    from ..evaluation.arviz_io import to_inference_data

    states = [f"s{k}" for k in range(hmm.num_states)]
    idata = to_inference_data(hmm, batch_to(pad_rolls(data.train[:4]), pair_device(hmm)), ["trans"], num_samples=200,
                              dims={"trans": ["from_state", "to_state"]},
                              coords={"from_state": states, "to_state": states})
    path.parent.mkdir(parents=True, exist_ok=True)
    az.summary(idata, kind="stats").to_csv(path)
    return path


# ----------------------------------------------------------------------------- CLI verbs on a run folder

def load_run(run: str | Path) -> tuple[HMMBase, MusicData, dict]:
    """``(hmm, data, key info)`` of a run folder written by :func:`main` (data rebuilt from ``config.json``)."""
    run = Path(run)
    options = argparse.Namespace(**runs.read_config(run))
    data, key_info = load_data(options)
    hmm = build_model(options, data.train[0].shape[1])
    load_module_state(hmm, load_checkpoint(run / MODEL_FILE), run / MODEL_FILE)
    return hmm.eval(), data, key_info


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Exact negative log-likelihood per time step on ``--split`` (no sampling involved)."""
    hmm, data, _ = load_run(args.run)
    return {"split": args.split, "nll_per_step": nll_per_step(hmm, getattr(data, args.split)),
            "num_sequences": len(getattr(data, args.split))}


def sample(args: argparse.Namespace) -> dict[str, Any]:
    """``--num`` piano rolls of 16 frames from the model, as MIDI pitches sounding per frame."""
    hmm, _, key_info = load_run(args.run)
    keys = key_info.get("key_indices")
    _, x = hmm.sample(args.num, 16)
    index = torch.tensor(keys) if keys else torch.arange(x.shape[-1])
    return {"num": args.num, "frames": 16,
            "rolls": [[[21 + int(index[k]) for k in frame.nonzero().flatten()] for frame in roll] for roll in x]}
