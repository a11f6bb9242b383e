"""HMM speed: loss + gradient over the whole JSB training set, by inference path and state count.
The code of ``benchmarks/hmm_speed.py`` and ``pyro-lvm reproduce hmm-speed``.

Variants, all on the same parameters and data (JSB: 229 sequences, 88 Bernoulli keys, padded to
129 steps with a mask), timed in one process with interleaved rounds (process CPU time, medians):

* ``fast``: ``HMM(inference="fast")`` under ``Trace_ELBO``: a ``pyro.factor`` over the scaled forward;
* ``markov``: ``HMM(inference="markov")`` under ``TraceEnum_ELBO`` (``pyro.markov`` + parallel
  enumeration), only ``--markov-rounds`` rounds and only for K <= ``--markov-max-states``;
* ``markov_tones_plate``: the same, written as Pyro's ``examples/hmm.py`` model 1 (a ``tones``
  plate of scalar Bernoullis), at 16 states only;
* ``discrete_hmm``: Pyro's ``DiscreteHMM`` (parallel scan) fed the same emission table;
* ``handwritten``: a plain PyTorch scaled forward written here, the baseline of the ratios;
* ``hmmlearn_e_step``: hmmlearn's C forward-backward (``implementation="scaling"``) with the
  posterior state marginals, i.e. the E-step an EM iteration needs where the others need a
  gradient. hmmlearn has no 88-key Bernoulli emission, so a ``BaseHMM`` subclass here supplies
  the same emission table; its log-likelihood is checked against ours. Skipped, and said so in
  the JSON, when hmmlearn is not installed (``pip install -e ".[bench]"``).

Also times the fast path on sequences truncated to 16..128 steps (linear in length?).
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from ..data.music import load_jsb_pickle, load_music21_chorales, pad_rolls
from ..models.hmm import HMM, BernoulliEmission
from . import Budget, Reproduction, data_path

JSB_FILE = "jsb_chorales.pickle"


def handwritten_loss(init_logits, trans_logits, emit_logits, x, mask):
    """Plain PyTorch: one-matmul emission table (``x @ l.T + sum_d log sigmoid(-l)``), probability-space
    forward renormalised each step, autograd for the gradient."""
    log_emit = x @ emit_logits.T + F.logsigmoid(-emit_logits).sum(-1)
    log_emit = log_emit * mask.unsqueeze(-1)
    shift = log_emit.max(-1, keepdim=True).values
    emit = (log_emit - shift).exp()
    trans = torch.softmax(trans_logits, -1)
    alpha = torch.softmax(init_logits, -1) * emit[:, 0]
    log_z = shift.sum((1, 2))
    for t in range(x.shape[1]):
        if t:
            alpha = (alpha @ trans) * emit[:, t]
        c = alpha.sum(-1, keepdim=True)
        alpha = alpha / c
        log_z = log_z + c.squeeze(-1).log()
    return -log_z.sum()


class _Table(dist.TorchDistribution):
    """Observation 'distribution' whose log_prob is a precomputed (N, T, K) table (value ignored)."""

    arg_constraints: dict = {}
    support = dist.constraints.real

    def __init__(self, table):
        self.table = table
        super().__init__(batch_shape=table.shape, validate_args=False)

    def log_prob(self, value):
        return self.table


def discrete_hmm_loss(init_logits, trans_logits, emit_logits, x, mask):
    """Pyro's DiscreteHMM. Its initial_logits is the state *before* step 0, so step 0 gets a
    transition whose every row is the initial distribution (time-varying transition_logits)."""
    log_emit = x @ F.logsigmoid(emit_logits).T + (1 - x) @ F.logsigmoid(-emit_logits).T
    log_emit = log_emit * mask.unsqueeze(-1)
    steps, k = x.shape[1], init_logits.shape[0]
    trans = F.log_softmax(trans_logits, -1).expand(steps, k, k)
    trans = torch.cat([F.log_softmax(init_logits, -1).expand(1, k, k), trans[1:]], 0)
    hmm = dist.DiscreteHMM(torch.zeros(k), trans, _Table(log_emit), validate_args=False)
    return -hmm.log_prob(torch.zeros(x.shape[:2])).sum()


def tones_plate_loss(init_logits, trans_logits, emit_logits, x, mask):
    """The markov path written exactly as Pyro's ``examples/hmm.py`` model 1: one Bernoulli per
    key inside a ``tones`` plate rather than ``.to_event(1)``."""
    def model():
        log_init, log_trans = F.log_softmax(init_logits, -1), F.log_softmax(trans_logits, -1)
        tones = pyro.plate("tones", x.shape[-1], dim=-1)
        with pyro.plate("sequences", x.shape[0], dim=-2):
            z = None
            for t in pyro.markov(range(x.shape[1])):
                logits = log_init if z is None else log_trans[z]
                z = pyro.sample(f"z_{t}", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})
                with tones, pyro.poutine.mask(mask=mask[:, t].unsqueeze(-1)):
                    pyro.sample(f"x_{t}", dist.Bernoulli(logits=emit_logits[z.squeeze(-1)]), obs=x[:, t])
    return pyro.infer.TraceEnum_ELBO(max_plate_nesting=2).differentiable_loss(model, lambda: None)


def hmmlearn_e_step(fast: HMM, x, mask):
    """``() -> log-likelihood``: hmmlearn's scaled forward-backward on the same parameters and frames."""
    from hmmlearn.base import BaseHMM

    class BernoulliKeysHMM(BaseHMM):
        def __init__(self, n_components, log_on, log_off):
            super().__init__(n_components, implementation="scaling")
            self.log_on, self.log_off = log_on, log_off

        def _get_n_fit_scalars_per_param(self):
            return {}

        def _compute_log_likelihood(self, frames):
            return frames @ self.log_on.T + (1 - frames) @ self.log_off.T

    with torch.no_grad():
        logits = fast.emission.logits.double()
        hl = BernoulliKeysHMM(fast.num_states, F.logsigmoid(logits).numpy(), F.logsigmoid(-logits).numpy())
        hl.startprob_ = torch.softmax(fast.init_logits.double(), -1).numpy()
        hl.transmat_ = torch.softmax(fast.trans_logits.double(), -1).numpy()
    lengths = mask.sum(1).long().tolist()
    frames = x[mask].double().numpy()

    def run():
        log_lik, _posteriors = hl.score_samples(frames, lengths)
        return log_lik
    return run


def pyro_loss(model: HMM, x, mask):
    return model.objective().differentiable_loss(model.model, model.guide, x, mask)


def cpu_time(fn) -> tuple[float, float]:
    """Process seconds of ``fn()`` plus its backward pass (none for a float: hmmlearn's E-step)."""
    t0 = time.process_time()
    loss = fn()
    if isinstance(loss, torch.Tensor):
        loss.backward()
        loss = float(loss.detach())
    return time.process_time() - t0, float(loss)


def bench_states(k: int, x, mask, rounds: int, markov_rounds: int, markov_max: int) -> dict:
    torch.manual_seed(k)
    fast = HMM(BernoulliEmission(k, x.shape[-1]), inference="fast")
    markov = HMM(BernoulliEmission(k, x.shape[-1]), inference="markov")
    markov.load_state_dict(fast.state_dict())
    p = (fast.init_logits, fast.trans_logits, fast.emission.logits)
    variants = {
        "handwritten": lambda: handwritten_loss(*p, x, mask),
        "fast": lambda: pyro_loss(fast, x, mask),
        "discrete_hmm": lambda: discrete_hmm_loss(*p, x, mask),
        "markov": lambda: pyro_loss(markov, x, mask),
        "markov_tones_plate": lambda: tones_plate_loss(*p, x, mask),
    }
    try:
        e_step = hmmlearn_e_step(fast, x, mask)
        variants["hmmlearn_e_step"] = lambda: -e_step()        # a loss, like the others
    except ImportError:
        pass
    times: dict[str, list[float]] = {v: [] for v in variants}
    losses: dict[str, float] = {}
    for r in range(rounds):
        for name, fn in variants.items():
            if name.startswith("markov") and (k > markov_max or r >= markov_rounds):
                continue
            if name == "markov_tones_plate" and k > 16:
                continue
            fast.zero_grad(), markov.zero_grad()
            seconds, losses[name] = cpu_time(fn)
            times[name].append(seconds)
    ms = {v: round(1000 * statistics.median(t), 1) for v, t in times.items() if t}
    ratio = {v: round(statistics.median(a / b for a, b in zip(times[v], times["handwritten"])), 2)
             for v in ms}
    out = {"states": k, "ms_per_pass": ms, "ratio_vs_handwritten": ratio, "rounds": {v: len(t) for v, t in times.items()},
           "loss": {v: round(val, 3) for v, val in losses.items()}}
    if "hmmlearn_e_step" not in ms:
        out["hmmlearn_skipped"] = "hmmlearn is not installed (pip install -e '.[bench]')"
    else:  # the target: the fast loss + gradient at most hmmlearn's E-step, round by round
        out["fast_over_hmmlearn"] = round(statistics.median(
            a / b for a, b in zip(times["fast"], times["hmmlearn_e_step"])), 2)
    if "markov" in ms:
        for v in ("markov", "markov_tones_plate"):
            if times[v]:
                out[f"{v}_over_fast"] = round(statistics.median(a / b for a, b in zip(times[v], times["fast"])), 1)
    else:
        out["markov_skipped"] = f"markov path timed only up to {markov_max} states"
    print(out, flush=True)
    return out


def bench_length(x, mask, k: int, rounds: int) -> dict:
    torch.manual_seed(0)
    fast = HMM(BernoulliEmission(k, x.shape[-1]))
    lengths = [16, 32, 64, 128]
    times: dict[int, list[float]] = {t: [] for t in lengths}
    for _ in range(rounds):
        for t in lengths:
            fast.zero_grad()
            times[t].append(cpu_time(lambda: pyro_loss(fast, x[:, :t], mask[:, :t]))[0])
    ms = {t: 1000 * statistics.median(v) for t, v in times.items()}
    return {"states": k, "ms_per_pass_by_steps": {t: round(v, 1) for t, v in ms.items()},
            "ms_per_step": {t: round(v / t, 2) for t, v in ms.items()}}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help=f"your {JSB_FILE}, or the folder that holds it (docs/data.md)")
    p.add_argument("--dataset", default="jsb", choices=["jsb", "music21"],
                   help="music21: the Bach chorales bundled with music21 instead (offline; a smoke run)")
    p.add_argument("--states", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--markov-rounds", type=int, default=3, help="the markov path takes seconds per pass")
    p.add_argument("--markov-max-states", type=int, default=32)
    return p


def run(args: argparse.Namespace) -> dict:
    """Every variant at each state count, then the length scaling; the JSON's content. One
    thread for torch and for numpy's BLAS (hmmlearn), so both sides get the same CPU."""
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    torch.set_num_threads(1)
    pyro.enable_validation(False)
    if args.dataset == "jsb":
        path = data_path(args, f"your copy of the JSB chorales ({JSB_FILE}) or the folder that holds it")
        data = load_jsb_pickle(path / JSB_FILE if path.is_dir() else path)
    else:
        data = load_music21_chorales()
    x, mask = pad_rolls(data.train)
    with threadpool_limits(limits=1):
        by_states = [bench_states(k, x, mask, args.rounds, args.markov_rounds, args.markov_max_states)
                     for k in args.states]
        length = bench_length(x, mask, 16, args.rounds)
    return {"threads": 1, "blas_threads": 1, "torch": torch.__version__, "pyro": pyro.__version__,
            "data": {"sequences": len(x), "max_steps": x.shape[1], "frames": int(mask.sum())},
            "by_states": by_states, "length_scaling": length}


def _headline(r: dict) -> str:
    first = r["by_states"][0]
    parts = [f"fast / hand-written {first['ratio_vs_handwritten']['fast']:.2f}x at K = {first['states']}"]
    if "fast_over_hmmlearn" in first:
        parts.append("fast / hmmlearn " + " / ".join(f"{b['fast_over_hmmlearn']:.2f}x" for b in r["by_states"])
                     + " at K = " + " / ".join(str(b["states"]) for b in r["by_states"]))
    if "markov_over_fast" in first:
        parts.append(f"markov / fast {first['markov_over_fast']:.1f}x")
    return "; ".join(parts)


REPRODUCTION = Reproduction(
    name="hmm-speed",
    title="HMM loss + gradient over the JSB training set: fast path vs hand-written forward, hmmlearn's C E-step "
          "and the pyro.markov path (CPU time ratios)",
    anchor="in the same run: a hand-written PyTorch scaled forward, hmmlearn's C forward-backward "
           "(implementation='scaling') on the same parameters, and Pyro's pyro.markov + enumeration path; "
           "no published figure",
    target="fast / hand-written <= 2x at K = 16; fast / hmmlearn <= 1x at every K; markov / fast >= 15x at K = 16",
    script="benchmarks/hmm_speed.py", parser=parser, run=run, ours=_headline,
    budgets={"quick": Budget(["--states", "16", "--rounds", "3", "--markov-rounds", "1"], 0.3),
             "standard": Budget(["--rounds", "3", "--markov-rounds", "1"], 0.5),
             "full": Budget([], 1.6)},
    data=(JSB_FILE, "--data"), embedded=["--dataset", "music21"],
    get_data="the JSB chorales pickle of Boulanger-Lewandowski et al. 2012 (jsb_chorales.pickle)",
    notes="process CPU time, one torch thread and one BLAS thread, interleaved rounds, medians of per-round ratios; "
          "hmmlearn's side is the E-step (posteriors) an EM iteration needs, ours the loss and its gradient; "
          "hmmlearn is optional (pip install -e '.[bench]'), without it the hmmlearn ratio is skipped",
)
