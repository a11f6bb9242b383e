"""The DisARM protocol: a VAE with 200 Bernoulli latents on binarized MNIST, every estimator.

Dong, Mnih & Tucker (2020), Sec. 6 and their code (google-research ``disarm/binary``): 200
Bernoulli latents; *linear* encoder/decoder (784-200, 200-784) and *nonlinear* ones (two
hidden layers of 200, leaky ReLU 0.3); batch 50; Adam at 1e-4; encoder input demeaned,
decoder output bias initialised at the data's logit mean; 10^6 steps; ELBO on the training
set, 100-sample bound on the test set, gradient variance along the way.

Here: the pair is plain Pyro (``BernoulliVAE`` below, one ``Bernoulli(...).to_event(1)``
site), each estimator is ``DiscreteELBO(name)`` trained by ``pyro_lvm.fit`` from the same
initialisation on the same batches for the same number of steps, and the number of steps is
what fits in ``--budget-minutes`` of CPU time per model size for all estimators together
(measured from their time per step). Prior logits take Adam at 1e-4 with the rest (the
reference uses SGD at 1e-2 for them). Statically binarized MNIST (your copy of the
Larochelle & Murray files), not the dynamic binarization of the paper.

Also, in the same process: time per training step of each estimator against a
hand-written PyTorch implementation of the *same* estimator on the *same* network
(interleaved rounds, process CPU time, median of per-round ratios).

    nice -n 10 python benchmarks/discrete_estimators_mnist.py --data PATH/binarized_mnist \\
        --sizes linear nonlinear --budget-minutes 60 > disarm.log 2>&1 &

``--phase timing`` with a timing file already there re-times the estimators named (into it).
Resumable: each (size, estimator) run checkpoints every 1,000 steps under ``--runs`` and
writes ``benchmarks/results/discrete_estimators_mnist/<size>_<estimator>.json`` when done;
a rerun skips finished runs and resumes unfinished ones. ``--phase summary`` (also run at the
end) merges them into ``benchmarks/results/discrete_estimators_mnist.json`` and draws the
figures.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyro_lvm import fit  # noqa: E402
from pyro_lvm.checkpoint import atomic_json_save, rng_state, set_rng_state, set_seed  # noqa: E402
from pyro_lvm.data import load_binarized_mnist  # noqa: E402
from pyro_lvm.infer.discrete.estimators import DiscreteELBO  # noqa: E402
from pyro_lvm.infer.discrete.gradient_variance import GradientVariance  # noqa: E402
from pyro_lvm.infer.discrete.relaxed import conditional_logistic  # noqa: E402
from pyro_lvm.reproduce import data_path  # noqa: E402
from pyro_lvm.training.loop import Callback  # noqa: E402

# in the order they are trained (the most expensive last)
ESTIMATORS = ["score-function", "rloo", "arm", "disarm", "vimco", "gumbel-rao", "straight-through", "gumbel",
              "rebar", "relax"]
LATENTS = 200
STEPS_PER_EPOCH = 1000          # 50,000 images / batch 50
TEMPERATURE = 0.5               # relaxations: fixed tau; REBAR/RELAX: initial lambda
RAO_SAMPLES = 10

# Published results: Dong, Mnih & Tucker (2020). The search tool reached the paper's
# abstract, the caption of its Figure 5 and the code's protocol, but not the text of its
# Table 1 or appendix tables: no published number is filled in here rather than a guessed one.
PUBLISHED: dict[str, dict[str, float]] = {}


# ----------------------------------------------------------------------------- the pair

def mlp(sizes: list[int], nonlinear: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if nonlinear and i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.3))
    return nn.Sequential(*layers)


class BernoulliVAE(nn.Module):
    """200 Bernoulli latents, written as a user would: ``b ~ Bern(sigmoid(prior))``, ``x ~ Bern(f(b))``."""

    def __init__(self, x_mean: torch.Tensor, nonlinear: bool):
        super().__init__()
        hidden = [200, 200] if nonlinear else []
        self.encoder = mlp([784, *hidden, LATENTS], nonlinear)
        self.decoder = mlp([LATENTS, *hidden, 784], nonlinear)
        with torch.no_grad():
            p = x_mean.clamp(1e-3, 1 - 1e-3)
            self.decoder[-1].bias.copy_(torch.log(p) - torch.log1p(-p))
        self.prior_logits = nn.Parameter(torch.zeros(LATENTS))
        self.register_buffer("x_mean", x_mean)

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            prior = dist.Bernoulli(logits=self.prior_logits).expand([x.shape[0], LATENTS]).to_event(1)
            b = pyro.sample("b", prior)
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(b)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("b", dist.Bernoulli(logits=self.encoder(x - self.x_mean)).to_event(1))

    @torch.no_grad()
    def negative_elbo(self, x: torch.Tensor, samples: int = 1) -> torch.Tensor:
        """``-ELBO`` per image: ``samples`` draws for the reconstruction, the exact Bernoulli KL."""
        a = self.encoder(x - self.x_mean)
        q, p = dist.Bernoulli(logits=a), dist.Bernoulli(logits=self.prior_logits.expand_as(a))
        kl = torch.distributions.kl_divergence(q, p).sum(-1)
        b = q.sample((samples,))
        rec = -F.binary_cross_entropy_with_logits(self.decoder(b), x.expand(samples, *x.shape),
                                                  reduction="none").sum(-1).mean(0)
        return kl - rec

    @torch.no_grad()
    def negative_bound(self, x: torch.Tensor, samples: int = 100) -> torch.Tensor:
        """``-log (1/K) sum_k p(x, b_k) / q(b_k | x)`` per image (the K-sample bound)."""
        a = self.encoder(x - self.x_mean)
        b = dist.Bernoulli(logits=a).sample((samples,))
        log_w = (-F.binary_cross_entropy_with_logits(self.decoder(b), x.expand(samples, *x.shape),
                                                     reduction="none").sum(-1)
                 + dist.Bernoulli(logits=self.prior_logits).log_prob(b).sum(-1)
                 - dist.Bernoulli(logits=a).log_prob(b).sum(-1))
        return -(torch.logsumexp(log_w, 0) - math.log(samples))


# ----------------------------------------------------------------------------- hand-written estimators

class HandWritten:
    """The same estimators in plain PyTorch on the pair's own networks (for timing)."""

    def __init__(self, pair: BernoulliVAE, estimator: str):
        self.pair, self.estimator = pair, estimator
        self.eta = torch.ones((), requires_grad=True)
        self.log_lambda = torch.tensor(math.log(TEMPERATURE), requires_grad=True)
        self.net = nn.Sequential(nn.Linear(2 * LATENTS, 137), nn.LeakyReLU(0.3), nn.Linear(137, 1))
        self.extra = [self.eta, self.log_lambda] + (list(self.net.parameters()) if estimator == "relax" else [])

    def parameters(self) -> list[torch.Tensor]:
        return list(self.pair.parameters()) + (self.extra if self.estimator in ("rebar", "relax") else [])

    def f(self, b: torch.Tensor, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``log p(x | b) + log p(b) - log q(b | x)`` per particle and image (``b`` may be relaxed)."""
        prior = self.pair.prior_logits
        rec = -F.binary_cross_entropy_with_logits(self.pair.decoder(b), x.expand(b.shape[0], *x.shape),
                                                  reduction="none").sum(-1)
        return rec + (b * prior - F.softplus(prior)).sum(-1) - (b * a - F.softplus(a)).sum(-1)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        a = self.pair.encoder(x - self.pair.x_mean)
        p = torch.sigmoid(a).detach()
        e = self.estimator
        if e in ("score-function", "rloo", "vimco"):
            s = 1 if e == "score-function" else 2
            b = (torch.rand(s, *a.shape) < p).float()
            f = self.f(b, x, a)
            log_q = (b * a - F.softplus(a)).sum(-1)
            if e == "score-function":
                return -(f.sum() + (log_q * f.detach()).sum())
            if e == "rloo":
                return -(f.mean(0).sum() + (log_q * (f - (f.sum(0) - f) / (s - 1)).detach()).sum() / s)
            bound = torch.logsumexp(f, 0) - math.log(s)
            with torch.no_grad():
                other = (f.sum(0, keepdim=True) - f) / (s - 1)
                loo = torch.stack([torch.logsumexp(torch.cat([f[:k], other[k:k + 1], f[k + 1:]]), 0)
                                   for k in range(s)]) - math.log(s)
            return -(bound.sum() + (log_q * (bound - loo).detach()).sum())
        if e in ("arm", "disarm"):
            u = torch.rand_like(a)
            b = torch.stack([(u < p), (1 - u < p)]).float()
            f = self.f(b, x, a)
            diff = (f[0] - f[1]).detach().unsqueeze(-1)
            if e == "disarm":
                g = 0.5 * diff * (1 - 2 * b[1]) * (b[0] != b[1]).float() * torch.sigmoid(a.detach().abs())
            else:
                g = -diff * (u - 0.5)
            return -(f.mean(0).sum() + (a * g).sum())
        if e in ("gumbel", "straight-through", "gumbel-rao"):
            if e == "gumbel-rao":
                with torch.no_grad():
                    hard = (a + torch.logit(torch.rand_like(a).clamp(1e-6, 1 - 1e-6)) > 0).float()
                noise = (conditional_logistic(a, hard, torch.Size([RAO_SAMPLES])) - a).detach()
                soft = torch.sigmoid((a + noise) / TEMPERATURE).mean(0)
                b = hard + soft - soft.detach()
            else:
                z = a + torch.logit(torch.rand_like(a).clamp(1e-6, 1 - 1e-6))
                soft = torch.sigmoid(z / TEMPERATURE)
                b = soft if e == "gumbel" else (z > 0).float() + soft - soft.detach()
            prior = self.pair.prior_logits
            kl = torch.distributions.kl_divergence(dist.Bernoulli(logits=a), dist.Bernoulli(logits=prior.expand_as(a))).sum()
            rec = -F.binary_cross_entropy_with_logits(self.pair.decoder(b), x, reduction="sum")
            return -(rec - kl)
        return self._rebar(x, a)

    def _rebar(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        lam = self.log_lambda.exp()
        z = a + torch.logit(torch.rand_like(a).clamp(1e-6, 1 - 1e-6))
        b = (z.detach() > 0).float()
        z_cond = conditional_logistic(a, b)
        f = self.f(torch.stack([b, torch.sigmoid(z / lam), torch.sigmoid(z_cond / lam)]), x, a)
        d_relaxed, = torch.autograd.grad((f[1] - f[2]).sum(), a, retain_graph=True, create_graph=True)
        d_hard, = torch.autograd.grad(f[0].sum(), a, retain_graph=True)
        control = self.eta * f[2]
        cv_grad = self.eta * d_relaxed
        if self.estimator == "relax":
            def r(zz: torch.Tensor) -> torch.Tensor:
                return self.net(torch.cat([zz, a.detach()], -1)).squeeze(-1)
            r_z, r_cond = r(z), r(z_cond)
            control = control + r_cond
            d_net, = torch.autograd.grad((r_z - r_cond).sum(), a, retain_graph=True, create_graph=True)
            cv_grad = cv_grad + d_net
        correction = (f[0].detach() - control).unsqueeze(-1) * (b - torch.sigmoid(a)).detach() + cv_grad
        variance = (d_hard + correction).pow(2).sum()
        extra = [p for p in self.extra]
        grads = torch.autograd.grad(variance, extra, retain_graph=True, allow_unused=True)
        deliver = sum((p * g.detach()).sum() for p, g in zip(extra, grads) if g is not None)
        return -(f[0].sum() + (a * correction.detach()).sum()) + (deliver - deliver.detach())


# ----------------------------------------------------------------------------- timing

def make_pair(data: Any, size: str, seed: int) -> BernoulliVAE:
    set_seed(seed)
    return BernoulliVAE(data.train.mean(0), nonlinear=size == "nonlinear")


def objective(estimator: str) -> DiscreteELBO:
    return DiscreteELBO(estimator, temperature=TEMPERATURE, rao_samples=RAO_SAMPLES)


def time_steps(data: Any, size: str, estimators: list[str], rounds: int, seed: int) -> dict[str, Any]:
    """ms per step of ours and the hand-written version of every estimator, interleaved."""
    pyro.enable_validation(False)
    pyro.clear_param_store()
    x = data.train[:50]
    runners: dict[str, Callable[[], None]] = {}
    for est in estimators:
        for kind in ("pyro_lvm", "handwritten", "pyro_trace_elbo"):
            pair = make_pair(data, size, seed)
            if kind == "pyro_trace_elbo":
                # Pyro's own Trace_ELBO with as many model evaluations: the cost of tracing alone
                evals = objective(est).model_evaluations
                elbo = pyro.infer.Trace_ELBO(num_particles=evals, vectorize_particles=evals > 1, max_plate_nesting=1)
                params, loss_fn = list(pair.parameters()), (lambda elbo=elbo, pair=pair: elbo.differentiable_loss(
                    pair.model, pair.guide, x))
            elif kind == "pyro_lvm":
                obj = objective(est)
                obj.differentiable_loss(pair.model, pair.guide, x)   # creates the control variate's parameters
                params = list(pair.parameters()) + [v.unconstrained() for k, v in pyro.get_param_store().items()
                                                    if k.startswith("__cv__")]
                loss_fn = (lambda obj=obj, pair=pair: obj.differentiable_loss(pair.model, pair.guide, x))
            else:
                hw = HandWritten(pair, est)
                params, loss_fn = hw.parameters(), (lambda hw=hw: hw.loss(x))
            opt = torch.optim.Adam(params, lr=1e-4, fused=True)

            def run(loss_fn=loss_fn, opt=opt) -> None:
                loss = loss_fn()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            runners[f"{est}|{kind}"] = run
    for run in runners.values():
        for _ in range(3):
            run()
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for key, run in runners.items():
            t = time.process_time()
            for _ in range(10):
                run()
            times[key].append((time.process_time() - t) / 10 * 1000)
    out: dict[str, Any] = {}
    for est in estimators:
        ours, hw, floor = (times[f"{est}|{k}"] for k in ("pyro_lvm", "handwritten", "pyro_trace_elbo"))
        out[est] = {"ms_per_step": statistics.median(ours), "handwritten_ms_per_step": statistics.median(hw),
                    "ratio_vs_handwritten": statistics.median(o / h for o, h in zip(ours, hw)),
                    "ratio_rounds": [o / h for o, h in zip(ours, hw)],
                    "pyro_trace_elbo_ms_per_step": statistics.median(floor),
                    "pyro_trace_elbo_evaluations": objective(est).model_evaluations}
    return out


# ----------------------------------------------------------------------------- training

class StepTimer(Callback):
    """Process CPU time spent inside training steps (resumable)."""

    def __init__(self) -> None:
        self.cpu, self._t = 0.0, 0.0

    def on_step_begin(self, state, batch) -> None:
        self._t = time.process_time()

    def on_step_end(self, state, batch, loss) -> None:
        self.cpu += time.process_time() - self._t

    def on_epoch_end(self, state) -> None:
        state.logs["train_cpu_s"] = self.cpu

    def state_dict(self) -> dict:
        return {"cpu": self.cpu}

    def load_state_dict(self, state: dict) -> None:
        self.cpu = state["cpu"]


class Curve(Callback):
    """-ELBO on fixed subsets of train and valid every ``every`` steps (and at step 0)."""

    def __init__(self, data: Any, n: int, every: int, timer: StepTimer):
        self.train, self.valid = data.train[:n], data.valid[:n]
        self.every, self.timer, self.points = every, timer, []

    def _measure(self, state) -> None:
        saved = rng_state()  # the evaluation's draws must not shift the training's random stream
        torch.manual_seed(0)
        self.points.append({"step": state.step, "train_cpu_s": self.timer.cpu,
                            "train_neg_elbo": float(state.pair.negative_elbo(self.train).mean()),
                            "valid_neg_elbo": float(state.pair.negative_elbo(self.valid).mean())})
        set_rng_state(saved)

    def on_train_begin(self, state) -> None:
        if not self.points:
            self._measure(state)

    def on_step_end(self, state, batch, loss) -> None:
        if state.step % self.every == 0:
            self._measure(state)

    def on_epoch_end(self, state) -> None:
        state.logs["curve"] = list(self.points)

    def state_dict(self) -> dict:
        return {"points": self.points}

    def load_state_dict(self, state: dict) -> None:
        self.points = list(state["points"])


def train_one(data: Any, size: str, estimator: str, steps: int, args: argparse.Namespace) -> dict[str, Any]:
    pyro.clear_param_store()
    pair = make_pair(data, size, args.seed)
    timer, variance = StepTimer(), GradientVariance(every=args.variance_every, draws=args.variance_draws)
    curve_cb = Curve(data, args.curve_images, args.curve_every, timer)
    ckpt = Path(args.runs) / size / estimator
    wall, cpu = time.perf_counter(), time.process_time()
    history = fit(pair, data.train, None, elbo=objective(estimator), epochs=steps // STEPS_PER_EPOCH,
                  batch_size=50, lr=args.lr, seed=args.seed, checkpoint_dir=ckpt, resume=True,
                  callbacks=[timer, curve_cb, variance], progress=False)
    torch.manual_seed(1)
    train = torch.cat([pair.negative_elbo(x) for x in data.train.split(5000)])
    valid = torch.cat([pair.negative_elbo(x, samples=5) for x in data.valid.split(5000)])
    bound = torch.cat([pair.negative_bound(x, 100) for x in data.valid[: args.bound_images].split(250)])
    curve = history.epochs[-1]["curve"]
    variances = [r for e in history.epochs for r in e.get("grad_variance", [])]
    return {"size": size, "estimator": estimator, "steps": history.epochs[-1]["step"],
            # what the estimator optimised, on the last epoch's batches (the 2-sample bound for vimco)
            "train_objective": history.epochs[-1]["train_loss"],
            "objective_name": objective(estimator).objective_name,
            "train_neg_elbo": float(train.mean()), "valid_neg_elbo": float(valid.mean()),
            "valid_neg_elbo_se": float(valid.std() / math.sqrt(len(valid))),
            "valid_neg_bound100": float(bound.mean()), "bound_images": len(bound),
            "train_cpu_s": history.epochs[-1]["train_cpu_s"], "wall_s_this_session": time.perf_counter() - wall,
            "process_cpu_s_this_session": time.process_time() - cpu,
            "curve": curve, "grad_variance": variances}


# ----------------------------------------------------------------------------- summary

def summarize(out_dir: Path, summary_path: Path, figures: Path) -> dict[str, Any]:
    runs = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*_*.json")) if not p.name.startswith("timing")]
    timing = {p.stem.split("_", 1)[1]: json.loads(p.read_text()) for p in out_dir.glob("timing_*.json")}
    sizes: dict[str, Any] = {}
    for size in ("linear", "nonlinear"):
        rows = [r for r in runs if r["size"] == size]
        if not rows:
            continue
        by = {r["estimator"]: r for r in rows}
        t = timing.get(size, {}).get("estimators", {})
        table = []
        for r in sorted(rows, key=lambda r: r["train_neg_elbo"]):
            table.append({"estimator": r["estimator"], "steps": r["steps"], "train_neg_elbo": r["train_neg_elbo"],
                          "train_objective": r["train_objective"], "objective_name": r["objective_name"],
                          "valid_neg_elbo": r["valid_neg_elbo"], "valid_neg_bound100": r["valid_neg_bound100"],
                          "final_trace_cov": r["grad_variance"][-1]["trace_cov"] if r["grad_variance"] else None,
                          **{k: t.get(r["estimator"], {}).get(k) for k in
                             ("ms_per_step", "handwritten_ms_per_step", "ratio_vs_handwritten")}})
        checks = {}
        for better, worse in (("disarm", "arm"), ("rloo", "score-function")):
            if better in by and worse in by:
                for key, what in (("train_neg_elbo", "train -ELBO"), ("valid_neg_elbo", "valid -ELBO"),
                                  ("valid_neg_bound100", "valid 100-sample bound")):
                    checks[f"{better} <= {worse} ({what})"] = by[better][key] <= by[worse][key]
        sizes[size] = {"table": table, "ordering": checks, "budget": timing.get(size, {}).get("budget"),
                       "markdown": _markdown(table, t)}
        _plot(size, rows, figures)
    steps = sorted({r["steps"] for r in runs})
    summary = {"protocol": __doc__.split("\n\n")[1], "published": PUBLISHED, "published_steps": 10**6,
               "our_steps": steps, "batch_size": 50,
               "machine": "2 CPU cores shared with other jobs; one thread; CPU seconds are process time",
               "sizes": sizes}
    atomic_json_save(summary, summary_path)
    return summary


def _markdown(table: list[dict], timing: dict) -> str:
    """The docs table of one model size (best train -ELBO first)."""
    lines = ["| estimator | train -ELBO | valid -ELBO | valid 100-sample bound | tr Cov (encoder, end) | ms/step "
             "| hand-written ms/step | ratio | Pyro Trace_ELBO ms/step (same evaluations) |", "|" + "---|" * 9]
    for r in table:
        t = timing.get(r["estimator"], {})
        own = f" (own bound {r['train_objective']:.2f})" if r["objective_name"] != "ELBO" else ""
        lines.append(f"| {r['estimator']} | {r['train_neg_elbo']:.2f}{own} | {r['valid_neg_elbo']:.2f} | "
                     f"{r['valid_neg_bound100']:.2f} | {r['final_trace_cov']:.3g} | {t.get('ms_per_step', math.nan):.2f} "
                     f"| {t.get('handwritten_ms_per_step', math.nan):.2f} | {t.get('ratio_vs_handwritten', math.nan):.2f}x "
                     f"| {t.get('pyro_trace_elbo_ms_per_step', math.nan):.2f} |")
    return "\n".join(lines)


def _plot(size: str, rows: list[dict], figures: Path) -> None:
    from pyro_lvm.plots import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].set_prop_cycle(color=plt.cm.tab10.colors)
    axes[1].set_prop_cycle(color=plt.cm.tab10.colors)
    axes[2].set_prop_cycle(color=plt.cm.tab10.colors)
    for r in sorted(rows, key=lambda r: r["estimator"]):
        c = r["curve"]
        axes[0].plot([e["step"] for e in c], [e["train_neg_elbo"] for e in c], label=r["estimator"])
        axes[1].plot([e["train_cpu_s"] / 60 for e in c], [e["train_neg_elbo"] for e in c], label=r["estimator"])
        v = r["grad_variance"]
        axes[2].plot([e["step"] for e in v], [e["trace_cov"] for e in v], label=r["estimator"])
    axes[0].set(xlabel="step", ylabel="train -ELBO (5,000 images)", title=f"{size}: -ELBO over steps")
    axes[1].set(xlabel="CPU minutes (training steps only)", ylabel="train -ELBO", title="over CPU time")
    axes[2].set(xlabel="step", ylabel="tr Cov of the encoder's gradient", yscale="log", title="gradient variance")
    for ax in axes[:2]:
        lo = min(e["train_neg_elbo"] for r in rows for e in r["curve"])
        ax.set_ylim(lo - 2, lo + 60)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, figures / f"disarm_protocol_{size}.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="your binarized_mnist folder with train.amat and valid.amat (docs/data.md)")
    p.add_argument("--sizes", nargs="+", default=["linear", "nonlinear"], choices=["linear", "nonlinear"])
    p.add_argument("--estimators", nargs="+", default=ESTIMATORS)
    p.add_argument("--phase", default="all", choices=["all", "timing", "train", "summary"])
    p.add_argument("--budget-minutes", type=float, default=60.0,
                   help="CPU minutes of training per model size, all estimators together (sets the steps)")
    p.add_argument("--steps", type=int, default=None, help="fix the steps instead (multiple of 1,000)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--timing-rounds", type=int, default=7)
    p.add_argument("--variance-every", type=int, default=1000)
    p.add_argument("--variance-draws", type=int, default=10)
    p.add_argument("--curve-images", type=int, default=5000)
    p.add_argument("--curve-every", type=int, default=250, help="steps between points of the -ELBO curves")
    p.add_argument("--bound-images", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default=str(ROOT / "runs" / "discrete_estimators_mnist"))
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results" / "discrete_estimators_mnist"))
    p.add_argument("--summary", default=str(ROOT / "benchmarks" / "results" / "discrete_estimators_mnist.json"))
    p.add_argument("--figures", default=str(ROOT / "docs" / "figures"))
    args = p.parse_args()
    torch.set_num_threads(1)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.phase != "summary":
        data = load_binarized_mnist(data_path(args, "your copy of binarized_mnist/ (train.amat, valid.amat)"))
        for size in args.sizes:
            timing_path = out_dir / f"timing_{size}.json"
            if args.phase == "timing" and timing_path.is_file():
                # re-time some estimators (interleaved with their hand-written twins) into the file
                saved = json.loads(timing_path.read_text())
                saved["estimators"].update(time_steps(data, size, args.estimators, args.timing_rounds, args.seed))
                atomic_json_save(saved, timing_path)
            elif args.phase in ("all", "timing") and not timing_path.is_file():
                timing = time_steps(data, size, args.estimators, args.timing_rounds, args.seed)
                per_step = sum(t["ms_per_step"] for t in timing.values())
                steps = args.steps or max(STEPS_PER_EPOCH, int(args.budget_minutes * 60e3 / per_step
                                                               / STEPS_PER_EPOCH) * STEPS_PER_EPOCH)
                atomic_json_save({"estimators": timing, "threads": 1, "budget": {
                    "cpu_minutes": args.budget_minutes, "sum_ms_per_step": per_step, "steps": steps}}, timing_path)
                print(size, "timing", {k: round(v["ratio_vs_handwritten"], 2) for k, v in timing.items()},
                      "steps", steps, flush=True)
        # estimator-major, so that a run cut short has both model sizes of the first estimators
        for est in args.estimators if args.phase in ("all", "train") else []:
            for size in args.sizes:
                path = out_dir / f"{size}_{est}.json"
                if path.is_file():
                    continue
                steps = args.steps or json.loads((out_dir / f"timing_{size}.json").read_text())["budget"]["steps"]
                result = train_one(data, size, est, steps, args)
                atomic_json_save(result, path)
                print(f"{size:9s} {est:16s} train -ELBO {result['train_neg_elbo']:.2f}  valid -ELBO "
                      f"{result['valid_neg_elbo']:.2f}  ({result['steps']} steps, {result['train_cpu_s']:.0f} s CPU, "
                      f"{result['wall_s_this_session']:.0f} s wall)", flush=True)
    summary = summarize(out_dir, Path(args.summary), Path(args.figures))
    print(json.dumps({s: v["ordering"] for s, v in summary["sizes"].items()}, indent=1))


if __name__ == "__main__":
    main()
