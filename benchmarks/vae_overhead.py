"""Overhead benchmark: one training step of our VAE versus the same network hand-written.

The VAE is 784-400-20 with a Bernoulli likelihood, batch 128, Adam (lr 1e-3). Every variant
runs one epoch of the same batches per round; rounds are interleaved so that machine noise
hits all variants alike. Reported: median CPU milliseconds per step and the median over
rounds of each variant's ratio to the hand-written baseline of the same estimator.

Variants:
  hand_mc / hand_analytic   plain PyTorch: logits + BCE, KL by Monte Carlo / in closed form,
                            torch.optim.Adam with its defaults (what a user writes)
  hand_*_fused              the same with Adam(fused=True), the optimiser fit() uses: the ratio
                            against it isolates Pyro's own cost
  fit_trace / fit_meanfield pyro_lvm.fit with Trace_ELBO (Monte Carlo KL) / TraceMeanField_ELBO
                            (closed-form KL)
  pyro_svi                  stock Pyro SVI with Trace_ELBO and pyro.optim.Adam, as Pyro's VAE example

    python benchmarks/vae_overhead.py --rounds 7
"""

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch
from torch.nn import functional as F

from pyro_lvm import fit, set_seed
from pyro_lvm.models import VAE


def hand_written_epoch(vae: VAE, opt: torch.optim.Optimizer, x: torch.Tensor, batch_size: int, analytic: bool) -> None:
    """One epoch of the VAE's negative ELBO, written directly in PyTorch."""
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        loc, scale = vae.encoder(xb)
        z = loc + scale * torch.randn_like(loc)
        rec = F.binary_cross_entropy_with_logits(vae.decoder(z), xb, reduction="sum")
        if analytic:
            kl = 0.5 * (loc ** 2 + scale ** 2 - 1 - 2 * scale.log()).sum()
        else:
            # log q(z|x) - log p(z) at the sample, as Trace_ELBO computes it
            kl = (0.5 * (z ** 2 - ((z - loc) / scale) ** 2) - scale.log()).sum()
        loss = rec + kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def stock_svi_epoch(svi: pyro.infer.SVI, x: torch.Tensor, batch_size: int) -> None:
    for i in range(0, len(x), batch_size):
        svi.step(x[i:i + batch_size])


class ModuleRegisteringVAE(VAE):
    """The VAE as Pyro's example writes it: ``pyro.module`` in model and guide, for SVI."""

    def model(self, x):
        pyro.module("decoder", self.decoder)
        super().model(x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        super().guide(x)


def main(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)  # fit() validates the first step only; keep SVI comparable
    set_seed(0)
    x = (torch.rand(args.batch_size * args.steps, 784) < 0.15).float()

    def fresh(cls=VAE):
        set_seed(0)
        return cls(784, 20, (400,))

    models = {name: fresh() for name in ("hand_mc", "hand_analytic", "hand_mc_fused", "hand_analytic_fused",
                                         "fit_trace", "fit_meanfield")}
    opts = {
        "hand_mc": torch.optim.Adam(models["hand_mc"].parameters(), lr=1e-3),
        "hand_analytic": torch.optim.Adam(models["hand_analytic"].parameters(), lr=1e-3),
        "hand_mc_fused": torch.optim.Adam(models["hand_mc_fused"].parameters(), lr=1e-3, fused=True),
        "hand_analytic_fused": torch.optim.Adam(models["hand_analytic_fused"].parameters(), lr=1e-3, fused=True),
    }
    svi_vae = fresh(ModuleRegisteringVAE)
    pyro.clear_param_store()
    svi = pyro.infer.SVI(svi_vae.model, svi_vae.guide, pyro.optim.Adam({"lr": 1e-3}), pyro.infer.Trace_ELBO())

    def run_fit(name, elbo):
        fit(models[name], x, epochs=1, batch_size=args.batch_size, progress=False, elbo=elbo, validate="never")

    variants = {
        "hand_mc": lambda: hand_written_epoch(models["hand_mc"], opts["hand_mc"], x, args.batch_size, False),
        "hand_analytic": lambda: hand_written_epoch(models["hand_analytic"], opts["hand_analytic"], x, args.batch_size, True),
        "hand_mc_fused": lambda: hand_written_epoch(models["hand_mc_fused"], opts["hand_mc_fused"], x, args.batch_size, False),
        "hand_analytic_fused": lambda: hand_written_epoch(models["hand_analytic_fused"], opts["hand_analytic_fused"], x, args.batch_size, True),
        "fit_trace": lambda: run_fit("fit_trace", pyro.infer.Trace_ELBO()),
        "fit_meanfield": lambda: run_fit("fit_meanfield", pyro.infer.TraceMeanField_ELBO()),
        "pyro_svi": lambda: stock_svi_epoch(svi, x, args.batch_size),
    }
    for f in variants.values():  # warm-up: allocator, first-call paths
        f()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, f in variants.items():
            t = time.process_time()
            f()
            times[name].append((time.process_time() - t) / args.steps * 1000)

    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    result = {
        "benchmark": "vae_overhead",
        "command": "python " + " ".join(sys.argv),
        "setup": f"VAE 784-400-20 Bernoulli, batch {args.batch_size}, {args.steps} steps per round, "
                 f"{args.rounds} interleaved rounds, {args.threads} torch thread(s), process CPU time",
        "ms_per_step": {k: statistics.median(v) for k, v in times.items()},
        "ratios": {
            "fit_trace / hand_mc (default Adam)": ratio("fit_trace", "hand_mc"),
            "fit_meanfield / hand_analytic (default Adam)": ratio("fit_meanfield", "hand_analytic"),
            "fit_trace / hand_mc_fused (same optimiser)": ratio("fit_trace", "hand_mc_fused"),
            "fit_meanfield / hand_analytic_fused (same optimiser)": ratio("fit_meanfield", "hand_analytic_fused"),
            "pyro_svi / hand_mc (default Adam)": ratio("pyro_svi", "hand_mc"),
        },
        "target": "fit / hand-written <= 1.2",
        "torch": torch.__version__, "pyro": pyro.__version__, "python": platform.python_version(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=40, help="steps per round")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/vae_overhead.json")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
