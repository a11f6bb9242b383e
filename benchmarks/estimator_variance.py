"""Gradient estimators for discrete latents: variance, bias, speed.

Part 1, the categorical mixture (``pyro_lvm.models.categorical_mixture``, one latent of K = 10 or 100
classes, 2-d Gaussians, 100 datapoints), where enumeration gives the exact gradient: for
each estimator the trace of the gradient covariance over R draws, the (debiased) relative
bias against the exact gradient with a bootstrap 95% interval, CPU time per step, against a
hand-written closed-form exact gradient in plain PyTorch (same run, ratio).

Part 2, the speed claim of Jang et al. (2017, sec. 4.3): a semi-supervised M2 step with the
label marginalised (enumerated, K decoder passes) against the same step with a Gumbel-softmax
sample (one pass), K = 10 and 100, MNIST-sized (784-500-50), batch 100, interleaved rounds
of process CPU time; plus a hand-written PyTorch enumerated M2 step as the baseline.

    python benchmarks/estimator_variance.py          # ~6 min on one core
    python benchmarks/estimator_variance.py --parts mixture --classes 10 --curve-steps 0 \
        --estimators enumerate score-function rloo vimco arm disarm straight-through gumbel-rao rebar relax \
        --out benchmarks/results/estimator_variance_zoo.json     # the unbiased estimators and Gumbel-Rao

Writes ``benchmarks/results/estimator_variance.json`` and plots under
``benchmarks/results/estimator_variance/``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyro_lvm.checkpoint import atomic_json_save, set_seed  # noqa: E402
from pyro_lvm.infer.discrete.comparison import compare_estimators  # noqa: E402
from pyro_lvm.models.categorical_mixture import CategoricalMixture  # noqa: E402
from pyro_lvm.models.ss_vae import SSVAE, _cat  # noqa: E402

ESTIMATORS = ["enumerate", "score-function", "score-function-baseline", "gumbel", "gumbel-concrete", "straight-through"]


def handwritten_exact_ms(pair: CategoricalMixture, x: torch.Tensor, reps: int = 200) -> float:
    """Median CPU ms of the closed-form exact loss and gradient in plain PyTorch."""
    params = list(pair.parameters())
    times = []
    for _ in range(reps):
        t = time.process_time()
        torch.autograd.grad(-pair.exact_elbo(x).sum(), params)
        times.append(time.process_time() - t)
    return 1000 * statistics.median(times)


def mixture_part(args) -> dict:
    out = {}
    for k in args.classes:
        set_seed(args.seed)
        x = CategoricalMixture.simulate(args.n, k, seed=args.seed)
        pair = CategoricalMixture(k)
        cmp = compare_estimators(pair, x, args.estimators, temperatures=args.temperatures, repeats=args.repeats,
                                 curve_steps=args.curve_steps, curve_every=10, seed=args.seed)
        plots = cmp.plot(Path(args.out).with_suffix("") / f"mixture_K{k}")
        hand = handwritten_exact_ms(pair, x)
        enum_ms = cmp.row("enumerate").ms_per_step
        out[f"K={k}"] = {"comparison": cmp.to_dict(), "markdown": cmp.to_markdown(),
                         "handwritten_exact_ms": hand, "enumerate_vs_handwritten": enum_ms / hand,
                         "baseline_variance_reduction": cmp.row("score-function").trace_cov
                         / cmp.row("score-function-baseline").trace_cov
                         if "score-function-baseline" in args.estimators else None,
                         "plots": [os.path.relpath(p, ROOT) for p in plots]}
        print(f"K={k}\n{cmp.to_markdown()}\nhand-written exact: {hand:.2f} ms\n", flush=True)
    return out


# ----------------------------------------------------------------------------- M2 speed

def handwritten_m2_enum_loss(m: SSVAE, x: torch.Tensor) -> torch.Tensor:
    """Plain-PyTorch M2 unlabelled loss, label marginalised: sum_y q(y|x)[-ELBO(x, y)] - H(q)."""
    k = m.n_classes
    log_q = torch.log_softmax(m.classifier(x), -1)                           # (B, K)
    y = torch.eye(k, dtype=x.dtype).unsqueeze(1)                             # (K, 1, K)
    loc, scale = m.encoder_z(_cat(x, y))                                     # (K, B, z)
    z = loc + scale * torch.randn_like(loc)
    rec = -F.binary_cross_entropy_with_logits(m.decoder(_cat(z, y.expand(k, len(x), k))), x.expand(k, -1, -1),
                                              reduction="none").sum(-1)      # (K, B)
    kl_z = 0.5 * (loc.pow(2) + scale.pow(2) - 1 - 2 * scale.log()).sum(-1)   # (K, B)
    elbo_y = rec - kl_z - torch.log(torch.tensor(float(k)))                  # prior log p(y) = -log K
    q = log_q.exp().T                                                        # (K, B)
    return -((q * elbo_y).sum(0) - (log_q.exp() * log_q).sum(-1)).sum()


def m2_speed_part(args) -> dict:
    pyro.enable_validation(False)
    x = (torch.rand(args.m2_batch, 784) < 0.3).float()
    results = {}
    for k in args.m2_classes:
        runners = {}
        for name in ("enumerate", "gumbel"):
            m = SSVAE(784, k, 50, (500,), y_estimator=name)
            obj, opt = m.objective(), torch.optim.Adam(m.parameters(), 1e-3)

            def run(m=m, obj=obj, opt=opt):
                loss = obj.differentiable_loss(m.model, m.guide, x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            runners[name] = run
        hm = SSVAE(784, k, 50, (500,))
        hopt = torch.optim.Adam(hm.parameters(), 1e-3)

        def hand(hm=hm, hopt=hopt):
            loss = handwritten_m2_enum_loss(hm, x)
            hopt.zero_grad(set_to_none=True)
            loss.backward()
            hopt.step()
        runners["handwritten-enumerate"] = hand
        for run in runners.values():
            for _ in range(3):
                run()
        times = {n: [] for n in runners}
        for _ in range(args.m2_rounds):
            for n, run in runners.items():
                t = time.process_time()
                for _ in range(args.m2_steps):
                    run()
                times[n].append((time.process_time() - t) / args.m2_steps * 1000)
        rounds = list(zip(*times.values()))
        names = list(times)
        ie, ig, ih = names.index("enumerate"), names.index("gumbel"), names.index("handwritten-enumerate")
        results[f"K={k}"] = {
            "ms_per_step": {n: statistics.median(v) for n, v in times.items()},
            "speedup_gumbel_vs_enumerate": statistics.median(r[ie] / r[ig] for r in rounds),
            "pyro_enumerate_vs_handwritten": statistics.median(r[ie] / r[ih] for r in rounds),
        }
        print(f"M2 K={k}: {results[f'K={k}']}", flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, nargs="+", default=[10, 100])
    p.add_argument("--n", type=int, default=100, help="datapoints of the mixture")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.1])
    p.add_argument("--repeats", type=int, default=500)
    p.add_argument("--curve-steps", type=int, default=150)
    p.add_argument("--m2-classes", type=int, nargs="+", default=[10, 100])
    p.add_argument("--m2-batch", type=int, default=100)
    p.add_argument("--m2-steps", type=int, default=5)
    p.add_argument("--m2-rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--estimators", nargs="+", default=ESTIMATORS, help="mixture part: the estimators compared")
    p.add_argument("--parts", nargs="+", default=["mixture", "m2"], choices=["mixture", "m2"])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "estimator_variance.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    result = {"config": vars(args), "threads": 1, "timer": "process CPU time, medians"}
    if "mixture" in args.parts:
        result["mixture"] = mixture_part(args)
        atomic_json_save(result, args.out)
    if "m2" in args.parts:
        result["m2_speed"] = m2_speed_part(args)
        result["jang_speedup"] = {"K=10": 2.0, "K=100": 9.9}
        atomic_json_save(result, args.out)


if __name__ == "__main__":
    main()
