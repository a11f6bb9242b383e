"""The HMM family of Pyro's ``examples/hmm.py`` on the JSB chorales: the code of ``benchmarks/hmm_quality.py
--part jsb-family`` and of ``pyro-lvm reproduce jsb-used-keys`` / ``jsb-all-keys``; the parser is the
whole script's (:mod:`pyro_lvm.reproduce.hmm_quality`).

Each variant (Obermeyer et al. 2019: HMM and arHMM by Baum-Welch, FHMM, PFHMM, 2HMM full and
Raftery, nnHMM and the nnHMM whose keys also see the lower keys of their frame, by Adam with early
stopping on the validation NLL) is trained with the chorales task (``pyro_lvm.tasks.hmm_chorales``);
recorded: test NLL in nats per frame, exact, and seconds per epoch. Protocols: ``used-keys`` drops
the keys never played in training (51 of 88 kept), as Pyro's example; ``full`` keeps all 88.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ..tasks import hmm_chorales
from . import Budget, Reproduction, data_path
from .hmm_quality import JSB_FILE, parser, task_args


def chorales_run(jsb: Path | None, protocol: str, argv: list[str], out: str) -> dict:
    """One run of the chorales task on the JSB pickle ``jsb`` (music21's chorales when ``None``);
    its metrics with wall and CPU seconds and the arguments."""
    data = [] if jsb is None else ["--data-path", str(jsb)]
    args = task_args(hmm_chorales, [*argv, *data, "--protocol", protocol, "--no-figures", "--overwrite", "--out", out])
    t0, c0 = time.perf_counter(), time.process_time()
    metrics = hmm_chorales.main(args)
    metrics.pop("train_nll_history")
    metrics.update(wall_seconds=round(time.perf_counter() - t0, 1), cpu_seconds=round(time.process_time() - c0, 1),
                   args=argv)
    return metrics


def jsb_path(args: argparse.Namespace) -> Path | None:
    """The JSB pickle ``--data`` names (the file, or the folder that holds it); ``None`` for
    ``--dataset music21``."""
    if args.dataset == "music21":
        return None
    path = data_path(args, f"your copy of the JSB chorales ({JSB_FILE}) or the folder that holds it")
    return path / JSB_FILE if path.is_dir() else path


_ADAM = ["--trainer", "adam", "--iterations", "200", "--lr", "0.05", "--batch-size", "32", "--patience", "20"]
_NEURAL = ["--emission", "neural", "--hidden", "48", "--iterations", "200", "--lr", "0.02", "--batch-size", "32",
           "--patience", "25"]
JSB_FAMILY = {
    "hmm": ["--chain", "hmm", "--states", "16", "--trainer", "em", "--iterations", "100"],
    "arhmm": ["--chain", "hmm", "--states", "16", "--emission", "autoregressive", "--trainer", "em",
              "--iterations", "100"],
    "fhmm": ["--chain", "fhmm", "--sizes", "4", "4", *_ADAM],
    "pfhmm": ["--chain", "pfhmm", "--sizes", "4", "4", *_ADAM],
    "2hmm": ["--chain", "2hmm", "--states", "16", *_ADAM],
    "2hmm_raftery": ["--chain", "2hmm", "--states", "16", "--raftery", *_ADAM],
    "nnhmm": ["--chain", "hmm", "--states", "16", *_NEURAL],
    "nnhmm_within_frame": ["--chain", "hmm", "--states", "16", *_NEURAL, "--within-frame"],
}


def run_jsb_family(jsb: Path | None, protocols: list[str], variants: list[str], quick: bool = False) -> dict:
    """Each variant of :data:`JSB_FAMILY` on each protocol through the chorales task (on the JSB
    pickle ``jsb``, or music21's chorales when ``None``); test NLL per frame, seconds per epoch (per
    EM iteration), wall and CPU time. The runs' folders are temporary (the numbers are returned)."""
    runs = {}
    with tempfile.TemporaryDirectory(prefix="jsb_family_") as tmp:
        for protocol in protocols:
            for name in variants:
                argv = list(JSB_FAMILY[name])
                if quick:  # a few iterations, to check the script runs
                    argv[argv.index("--iterations") + 1] = "2"
                metrics = chorales_run(jsb, protocol, argv, str(Path(tmp) / protocol / name))
                runs[f"{protocol}/{name}"] = metrics
                print(protocol, name, {k: metrics[k] for k in ("test_nll_per_step", "iterations", "seconds_per_epoch")},
                      flush=True)
    return {"runs": runs, "reference": {"pyro_model7_shifted_used_keys": 7.58, "dmm_full": 6.87,
                                        "hmm16_em_used_keys_previous": 8.21}}


def run(args: argparse.Namespace) -> dict:
    """``--part jsb-family``: every chosen variant on every chosen protocol (one torch thread)."""
    import torch

    if args.part != "jsb-family":
        raise ValueError(f"this entry runs --part jsb-family, not {args.part}; the other parts: benchmarks/hmm_quality.py")
    torch.set_num_threads(1)
    return run_jsb_family(jsb_path(args), args.family_protocols, args.family_variants, args.quick)


def _nll(r: dict, key: str) -> str:
    return f"{r['runs'][key]['test_nll_per_step']:.2f}" if key in r["runs"] else "not run"


def _used_keys(r: dict) -> str:
    return (f"nnHMM {_nll(r, 'used-keys/nnhmm')} vs Pyro's model 7 {r['reference']['pyro_model7_shifted_used_keys']:g} / "
            f"HMM {_nll(r, 'used-keys/hmm')} nats per frame")


def _all_keys(r: dict) -> str:
    return f"nnHMM {_nll(r, 'full/nnhmm')} / within-frame nnHMM {_nll(r, 'full/nnhmm_within_frame')} nats per frame"


_COMMON = dict(script="benchmarks/hmm_quality.py", parser=parser, run=run, data=(JSB_FILE, "--data"),
               embedded=["--dataset", "music21"],
               get_data="the JSB chorales pickle of Boulanger-Lewandowski et al. 2012 (jsb_chorales.pickle)")

USED_KEYS = Reproduction(
    name="jsb-used-keys",
    title="JSB test NLL per frame, the 51 keys played in training: nnHMM (early stopping) vs Pyro's model 7 / plain HMM",
    anchor="Pyro's examples/hmm.py (Obermeyer et al. 2019) model 7, the neural HMM, with its frame shifted by one "
           "as its diagram has it, after 500 steps: 7.58 nats per frame (our re-implementation, benchmarks/hmm_quality.py "
           "--part pyro7); its 5.35 as written leaks each frame into its own emission",
    target="clearly below both",
    ours=_used_keys, fixed=["--part", "jsb-family", "--family-protocols", "used-keys", "--tag", "used_keys"],
    budgets={"quick": Budget(["--quick"], 0.2),
             "standard": Budget(["--family-variants", "hmm", "nnhmm"], 0.6),
             "full": Budget([], 4.4)},
    notes="test NLL per frame, exact (forward algorithm); quick trains every variant for 2 iterations (a check that "
          "the code runs); standard only the two variants of the headline; full every variant of examples/hmm.py",
    **_COMMON)

ALL_KEYS = Reproduction(
    name="jsb-all-keys",
    title="JSB test NLL per frame, all 88 keys: nnHMM / nnHMM with keys seeing their frame",
    anchor="the Deep Markov Model of Pyro's DMM tutorial: 6.87 nats per frame on JSB test",
    target="<= 6.87 (Deep Markov Model)",
    ours=_all_keys,
    fixed=["--part", "jsb-family", "--family-protocols", "full", "--family-variants", "hmm", "arhmm", "nnhmm",
           "nnhmm_within_frame", "--tag", "full"],
    budgets={"quick": Budget(["--quick"], 0.1),
             "standard": Budget(["--family-variants", "nnhmm", "nnhmm_within_frame"], 2.4),
             "full": Budget([], 2.9)},
    notes="test NLL per frame, exact (forward algorithm), against the DMM's figure as Pyro's tutorial reports it; "
          "quick trains each variant for 2 iterations (a check that the code runs); standard only the two variants "
          "of the headline",
    **_COMMON)
