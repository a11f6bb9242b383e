"""HMM quality: JSB chorales test NLL (two protocols), a check of Pyro's model 7 reference, and
part-of-speech induction on MASC.

    python benchmarks/hmm_quality.py --part jsb --data DATA     # ~2 min on one core
    python benchmarks/hmm_quality.py --part pyro7 --data DATA   # ~25 s
    python benchmarks/hmm_quality.py --part pos --data DATA     # EM on 590k tokens, 4 runs, ~9 min
    python benchmarks/hmm_quality.py --part pos-features --data DATA   # feature HMM, 3 seeds, ~13 min
    python benchmarks/hmm_quality.py --part jsb-family --data DATA     # every variant, both protocols
    python benchmarks/hmm_quality.py --part pos-emissions --data DATA  # every emission, 3 seeds
    python benchmarks/hmm_quality.py --part pos-emissions --dataset toy --quick   # offline, seconds

``DATA`` is the folder with your copies of jsb_chorales.pickle, masc_tagged.zip and ptb.zip
(docs/data.md says where to get them); ``--data`` has no default. ``jsb`` and ``pos`` run the
same task code as the examples (``pyro_lvm.tasks.hmm_chorales`` / ``pos_induction``); each part
writes ``benchmarks/results/hmm_quality_<part>.json``.

JSB protocols (test negative log-likelihood, nats per time step, exact):
* ``used-keys``: keys never played in training dropped (51 of 88), as Pyro's ``examples/hmm.py``;
  the issue's reference after its 50 steps: model 1 (HMM) 14.16, model 7 (neural HMM) 5.35.
* ``full``: all 88 keys (the Deep Markov Model's 6.87 is the usual anchor, Pyro's DMM tutorial).

``pyro7`` re-implements model 7 (same network, prior, guide, optimiser, batch size) and trains
it as written -- the logits of frame ``y_t`` computed from ``y_t`` itself -- and with the frame
shifted by one, as its diagram and its ``pyro.markov`` twin (model 5) have it. The first is
not a normalised model of ``y_t`` and its "NLL" keeps falling towards 0 with training.

``jsb-family`` (code and options: pyro_lvm/reproduce/jsb_family.py, shared with ``pyro-lvm reproduce
jsb-used-keys`` / ``jsb-all-keys``) trains each variant of Pyro's ``examples/hmm.py`` (Obermeyer et al. 2019) with the
task code: HMM and arHMM by Baum-Welch, FHMM, PFHMM, 2HMM (full and Raftery), nnHMM and the
nnHMM whose keys also see the lower keys of their frame by Adam with early stopping on the
validation NLL; it records test NLL and seconds per epoch (``--family-protocols``,
``--family-variants`` choose).

The POS parts' code is pyro_lvm/reproduce/pos_masc.py, shared with ``pyro-lvm reproduce
pos-masc`` (the headline row: ``--part pos-emissions --pos-emissions embedding_flow``).
``pos-emissions`` runs every emission type of ``pos_induction`` on MASC with 45 states for each
seed (``--pos-seeds``; ``--pos-emissions`` chooses): EM to a tolerance with random restarts kept
by likelihood (generalised EM for the feature and neural emissions), the embedding emission over
word2vec vectors trained on MASC + PTB + gensim's Wikipedia sample (cached), then its flow by
Adam. ``pos-variance`` is the one choice made with gold tags: the Gaussian's variance scale,
on the first 8,000 sentences.

POS anchor (WSJ, 45 states, literature): EM-trained HMM about 62% many-to-one (Johnson 2007).
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyro_lvm.checkpoint import atomic_json_save  # noqa: E402
from pyro_lvm.data.music import keep_used_keys, load_jsb_pickle, pad_rolls  # noqa: E402
from pyro_lvm.reproduce import data_path, pos_masc  # noqa: E402
from pyro_lvm.reproduce.hmm_quality import JSB_FILE, POS_PARTS, parser  # noqa: E402
from pyro_lvm.reproduce.jsb_family import chorales_run, jsb_path, run_jsb_family  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def run_jsb(data: Path, quick: bool) -> dict:
    runs = {}
    em_iters, adam_epochs = ("5", "3") if quick else ("100", "100")
    configs = {
        "hmm16_em": ["--states", "16", "--iterations", em_iters],
        "hmm32_em": ["--states", "32", "--iterations", em_iters],
        "neural16_adam": ["--states", "16", "--emission", "neural", "--hidden", "48", "--iterations", adam_epochs,
                          "--lr", "0.05", "--batch-size", "32"],
    }
    for protocol in ("used-keys", "full"):
        for name, argv in configs.items():
            runs[f"{protocol}/{name}"] = chorales_run(data / JSB_FILE, protocol, argv, f"/tmp/hmm_quality/{protocol}/{name}")
            print(protocol, name, {k: runs[f"{protocol}/{name}"][k] for k in ("test_nll_per_step", "train_seconds")},
                  flush=True)
    return {"runs": runs, "reference": {"pyro_examples_hmm_model1_used_keys": 14.16,
                                        "pyro_examples_hmm_model7_used_keys": 5.35, "dmm_full": 6.87}}


# ----------------------------------------------------------------------------- Pyro examples/hmm.py model 7

class _TonesNet(nn.Module):
    """The architecture of Pyro ``examples/hmm.py``'s ``TonesGenerator`` (model 7), written here:
    logits ``(..., K, D)`` = ``Linear(relu(Linear(onehot(k)) + Linear(relu(conv3(frame)))))``."""

    def __init__(self, states: int, dim: int, nn_dim: int = 48, channels: int = 2):
        super().__init__()
        self.states, self.dim = states, dim
        self.state_to_hidden = nn.Linear(states, nn_dim)
        self.frame_to_hidden = nn.Linear(channels * dim, nn_dim)
        self.conv = nn.Conv1d(1, channels, 3, padding=1)
        self.hidden_to_logits = nn.Linear(nn_dim, dim)

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        conv = F.relu(self.conv(frame.reshape(-1, 1, self.dim))).reshape(frame.shape[:-1] + (-1,))
        states = self.state_to_hidden(torch.eye(self.states))  # (K, nn_dim): one row per one-hot state
        return self.hidden_to_logits(F.relu(states + self.frame_to_hidden(conv).unsqueeze(-2)))


def _model7(seqs, lengths, net, shift, batch_size=None, include_prior=True):
    """Model 7 as Pyro's example writes it (``shift=False``: the logits of frame ``y_t`` are computed
    from ``y_t`` itself) or as its diagram and its ``pyro.markov`` twin (model 5) say (``shift=True``:
    from ``y_{t-1}``, zeros before the first frame). Everything else as the example: a
    ``Dirichlet(0.9 I + 0.1)`` prior on the transitions, MAP via ``AutoDelta``, ``DiscreteHMM``."""
    k = net.states
    pyro.module("tones", net)
    with poutine.mask(mask=include_prior):
        probs_x = pyro.sample("probs_x", dist.Dirichlet(0.9 * torch.eye(k) + 0.1).to_event(1))
    with pyro.plate("sequences", len(seqs), batch_size, dim=-1) as batch:
        lens = lengths[batch]
        y = seqs[batch, : int(lens.max())]
        cond = torch.cat([torch.zeros_like(y[:, :1]), y[:, :-1]], dim=1) if shift else y
        t = torch.arange(y.shape[1])
        init_logits = torch.full((k,), -float("inf"))
        init_logits[0] = 0.0
        obs = dist.Bernoulli(logits=net(cond)).to_event(1)
        obs = obs.mask((t < lens.unsqueeze(-1)).unsqueeze(-1))
        pyro.sample("y", dist.DiscreteHMM(init_logits, probs_x.log(), obs), obs=y)


def run_pyro_model7(data: Path, step_counts: list[int]) -> dict:
    """Pyro's model 7 protocol (used keys, SVI steps on mini-batches of 8, Adam 0.05, 16 states),
    with and without the observation leak, after each of ``step_counts`` steps; test NLL per
    frame without the prior. A leak shows as an NLL that keeps falling far below any honest model."""
    from pyro.infer import SVI, TraceEnum_ELBO
    from pyro.infer.autoguide import AutoDelta

    jsb, keys = keep_used_keys(load_jsb_pickle(data / JSB_FILE))
    runs = {}
    for name, shift, steps in [(n, s, k) for k in step_counts for n, s in (
            ("as_written_conditions_on_y_t", False), ("shifted_conditions_on_y_t_minus_1", True))]:
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        torch.manual_seed(0)
        net = _TonesNet(16, len(keys))
        model = functools.partial(_model7, net=net, shift=shift)
        guide = AutoDelta(poutine.block(model, expose_fn=lambda msg: msg["name"].startswith("probs_")))
        elbo = TraceEnum_ELBO(max_plate_nesting=1, strict_enumeration_warning=False)
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), elbo)
        x, mask = pad_rolls(jsb.train)
        lengths = mask.sum(1)
        t0 = time.perf_counter()
        for _ in range(steps):
            svi.step(x, lengths, batch_size=8)
        seconds = time.perf_counter() - t0
        result = {"train_seconds": round(seconds, 1)}
        with torch.no_grad():
            for split in ("train", "test"):
                xs, ms = pad_rolls(getattr(jsb, split))
                loss = elbo.loss(model, guide, xs, ms.sum(1), include_prior=False)
                result[f"{split}_nll_per_step"] = loss / float(ms.sum())
        runs[f"{name}/{steps}_steps"] = result
        print("pyro model 7", name, steps, result, flush=True)
    return {"runs": runs, "batch_size": 8, "lr": 0.05, "states": 16, "keys": len(keys)}


def main() -> None:
    args = parser().parse_args()
    torch.set_num_threads(1)
    if args.part in POS_PARTS:
        result = pos_masc.run(args)
    elif args.part == "jsb-family":
        result = run_jsb_family(jsb_path(args), args.family_protocols, args.family_variants, args.quick)
    else:
        data = data_path(args, f"the folder with your copy of {JSB_FILE}")
        result = run_jsb(data, args.quick) if args.part == "jsb" else run_pyro_model7(data, [2] if args.quick
                                                                                       else args.pyro7_steps)
    result.update({"command": "python " + " ".join(sys.argv), "threads": 1, "quick": args.quick})
    name = f"hmm_quality_{args.part.replace('-', '_')}" + (f"_{args.tag}" if args.tag else "") + ("_quick" if args.quick else "")
    if args.part in POS_PARTS:  # a non-default length or a part of the text gets its own file
        name += (f"_{args.pos_iterations}it" if args.pos_iterations is not None else "") + (
            f"_{args.pos_sentences}sentences" if args.pos_sentences else "")
    atomic_json_save(result, RESULTS / f"{name}.json")
    print("wrote", RESULTS / f"{name}.json")


if __name__ == "__main__":
    main()
