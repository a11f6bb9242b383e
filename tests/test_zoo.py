"""The conformance zoo: small pairs in the idioms users write, and every generic capability on each.

Every pair is written here in plain Pyro. Every capability runs on every pair
(``test_cell``, a pair x capability matrix); a cell either works (with its own checks:
log-likelihoods against closed forms or full enumeration where those exist, bit-identical
resume, ...) or refuses with a message that names the site, the reason and what to do.

``docs/compatibility.md`` is this matrix: ``python scripts/update_compatibility.py`` runs
the cells and writes it, and each cell's test fails when its outcome differs from the page,
so the page cannot drift from the code.

The pairs are tiny (16 training datapoints, batches of 8) and the runs short: the matrix is
about what works, not how well.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer import config_enumerate
from pyro.nn import PyroModule, PyroParam, PyroSample, pyro_method
from torch import nn

THIS_FILE = Path(__file__).resolve()
PAGE = THIS_FILE.parents[1] / "docs" / "compatibility.md"
N_TRAIN, BATCH = 16, 8


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ============================================================================= the pairs


class ModuleVAE(nn.Module):
    """Networks registered with ``pyro.module`` in model and guide (Pyro's VAE tutorial)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.decoder = nn.Linear(2, 4)

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 0.5).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        loc, raw = self.encoder(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 0.1).to_event(1))

    @torch.no_grad()
    def exact_log_px(self, x):
        w, b = self.decoder.weight, self.decoder.bias
        return dist.MultivariateNormal(b, w @ w.T + 0.25 * torch.eye(4)).log_prob(x)


class PyroModuleVAE(PyroModule):
    """``PyroModule`` with ``PyroParam`` (a constrained noise scale) and ``PyroSample`` (a prior on
    the decoder's bias: a global latent next to the per-datapoint code). ``model`` and ``guide``
    are ``@pyro_method``s: outside ``forward``, that is what makes a PyroModule's attributes
    Pyro sites (without it a ``PyroSample`` is drawn silently, invisible to Pyro)."""

    def __init__(self):
        super().__init__()
        self.encoder = PyroModule[nn.Linear](4, 4)
        self.decoder = PyroModule[nn.Linear](2, 4)
        self.decoder.bias = PyroSample(dist.Normal(0.0, 1.0).expand([4]).to_event(1))
        self.noise = PyroParam(torch.tensor(0.5), constraint=constraints.positive)
        self.bias_loc = PyroParam(torch.zeros(4))
        self.bias_scale = PyroParam(torch.full((4,), 0.3), constraint=constraints.positive)

    @pyro_method
    def model(self, x):
        bias = self.decoder.bias          # drawn once, outside the data plate: global
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.decoder.weight.T + bias, self.noise).to_event(1), obs=x)

    @pyro_method
    def guide(self, x):
        pyro.sample("decoder.bias", dist.Normal(self.bias_loc, self.bias_scale).to_event(1))
        loc, raw = self.encoder(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 0.1).to_event(1))

    @torch.no_grad()
    def exact_set_log_px(self, x):
        """log E_q(bias) prod_i p(x_i | bias): x stacked is Gaussian with covariance I (x) C + J (x) S."""
        w, n = self.decoder.weight, x.shape[0]
        c = w @ w.T + self.noise ** 2 * torch.eye(4)
        cov = torch.kron(torch.eye(n), c) + torch.kron(torch.ones(n, n), torch.diag(self.bias_scale ** 2))
        return float(dist.MultivariateNormal(self.bias_loc.repeat(n), cov).log_prob(x.reshape(-1)))


class ParamOnly:
    """``pyro.param`` only, no ``nn.Module``: a one-factor linear Gaussian model."""

    def model(self, x):
        w = pyro.param("w", torch.full((3,), 0.5))
        b = pyro.param("b", torch.zeros(3))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z.unsqueeze(-1) * w + b, 0.5).to_event(1), obs=x)

    def guide(self, x):
        a = pyro.param("a", torch.full((3,), 0.2))
        s = pyro.param("s", torch.tensor(0.8), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ a, s))

    @torch.no_grad()
    def exact_log_px(self, x):
        w, b = pyro.param("w"), pyro.param("b")
        return dist.MultivariateNormal(b, torch.outer(w, w) + 0.25 * torch.eye(3)).log_prob(x)


def coin_and_mean(x, y):
    """Two global latents, a coin's bias and a location, seen through x_i and y_i."""
    p = pyro.sample("p", dist.Beta(2.0, 2.0))
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Bernoulli(p), obs=x)
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


class AutoNormalPair:
    """``guide = AutoNormal(model)`` for global latents."""

    def __init__(self):
        self.guide = pyro.infer.autoguide.AutoNormal(coin_and_mean)

    def model(self, x, y):
        return coin_and_mean(x, y)

    @torch.no_grad()
    def exact_set_log_px(self, x, y):
        """log E_q prod_i p(x_i, y_i | p, mu) by quadrature over q(logit p) and in closed form over q(mu)."""
        loc, scale = self.guide.locs.p.double(), self.guide.scales.p.double()
        u = torch.linspace(float(loc - 12 * scale), float(loc + 12 * scale), 20001, dtype=torch.float64)
        f = dist.Normal(loc, scale).log_prob(u) + dist.Bernoulli(logits=u.unsqueeze(-1)).log_prob(x.double()).sum(-1)
        part_p = torch.logsumexp(f, 0) + math.log(float(u[1] - u[0]))
        m, s, n = self.guide.locs.mu.double(), self.guide.scales.mu.double(), y.shape[0]
        part_mu = dist.MultivariateNormal(m.expand(n), torch.eye(n, dtype=torch.float64) + s ** 2).log_prob(y.double())
        return float(part_p + part_mu)


class AutoDeltaPair(AutoNormalPair):
    """``guide = AutoDelta(model)``: MAP estimates of global latents."""

    def __init__(self):
        self.guide = pyro.infer.autoguide.AutoDelta(coin_and_mean)

    exact_set_log_px = None


class AutoNormalLocal:
    """``guide = AutoNormal(model)`` on a per-datapoint latent: one parameter per position of the
    datapoint plate, not amortised (what ``fit`` would shuffle away is refused)."""

    def __init__(self):
        self.guide = pyro.infer.autoguide.AutoNormal(self.model)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)


class EnumeratedMixtureVAE(nn.Module):
    """A ``config_enumerate`` guide: an enumerated cluster y next to a continuous code z | y."""

    def __init__(self):
        super().__init__()
        self.means = nn.Parameter(torch.randn(3, 2, generator=_gen(1)))
        self.classify = nn.Linear(4, 3)
        self.encoder = nn.Linear(4 + 3, 4)
        self.decoder = nn.Linear(2, 4)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(3)))
            z = pyro.sample("z", dist.Normal(self.means[y], 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 0.5).to_event(1), obs=x)

    @config_enumerate
    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(logits=self.classify(x)))
            one_hot = nn.functional.one_hot(y, 3).to(x)
            shape = torch.broadcast_shapes(one_hot.shape[:-1], x.shape[:-1])  # y may be enumerated
            loc, raw = self.encoder(torch.cat([x.expand(shape + (4,)), one_hot.expand(shape + (3,))], -1)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 0.1).to_event(1))

    @torch.no_grad()
    def exact_log_px(self, x):
        w, b = self.decoder.weight, self.decoder.bias
        comps = dist.MultivariateNormal(self.means @ w.T + b, w @ w.T + 0.25 * torch.eye(4))
        return torch.logsumexp(comps.log_prob(x.unsqueeze(1)), 1) - math.log(3)


class CategoricalMixture(nn.Module):
    """A ``Categorical`` index latent, sampled by the guide: a mixture of Gaussians."""

    def __init__(self):
        super().__init__()
        self.prior_logits = nn.Parameter(torch.zeros(3))
        self.locs = nn.Parameter(2 * torch.randn(3, 4, generator=_gen(2)))
        self.classify = nn.Linear(4, 3)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(logits=self.prior_logits))
            pyro.sample("x", dist.Normal(self.locs[c], 0.7).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Categorical(logits=self.classify(x)))

    @torch.no_grad()
    def exact_log_px(self, x):
        lp = dist.Normal(self.locs, 0.7).to_event(1).log_prob(x.unsqueeze(1)) + torch.log_softmax(self.prior_logits, 0)
        return torch.logsumexp(lp, 1)


class OneHotVAE(nn.Module):
    """``OneHotCategorical`` vector latents: two 3-way codes."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(6, 6)
        self.decoder = nn.Linear(6, 6)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.OneHotCategorical(logits=x.new_zeros(2, 3)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z.flatten(-2))).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.OneHotCategorical(logits=self.encoder(x).unflatten(-1, (2, 3))).to_event(1))

    @torch.no_grad()
    def exact_log_px(self, x):
        codes = torch.stack([torch.cat([nn.functional.one_hot(torch.tensor(i), 3), nn.functional.one_hot(torch.tensor(j), 3)])
                             for i, j in itertools.product(range(3), repeat=2)]).float()            # (9, 6)
        lp = dist.Bernoulli(logits=self.decoder(codes)).log_prob(x.unsqueeze(1)).sum(-1) - math.log(9)
        return torch.logsumexp(lp, 1)


class BernoulliSBN(nn.Module):
    """``Bernoulli`` vector latents: a sigmoid belief net with 4 bits."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(6, 4)
        self.decoder = nn.Linear(4, 6)
        self.prior_logits = nn.Parameter(torch.zeros(4))

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(logits=self.prior_logits).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(logits=self.encoder(x)).to_event(1))

    @torch.no_grad()
    def exact_log_px(self, x):
        codes = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)))                      # (16, 4)
        prior = dist.Bernoulli(logits=self.prior_logits).log_prob(codes).sum(-1)
        lp = prior + dist.Bernoulli(logits=self.decoder(codes)).log_prob(x.unsqueeze(1)).sum(-1)
        return torch.logsumexp(lp, 1)


class StudentTVAE(nn.Module):
    """A heavy-tailed prior with no closed-form KL (Student-t), a one-dimensional code."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(3, 2)
        self.decoder = nn.Linear(1, 3)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.StudentT(3.0, x.new_zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 0.5).to_event(1), obs=x)

    def guide(self, x):
        loc, raw = self.encoder(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 0.1).to_event(1))

    @torch.no_grad()
    def exact_log_px(self, x):
        z = torch.linspace(-60, 60, 60001, dtype=torch.float64).unsqueeze(-1)                    # quadrature
        loc = z @ self.decoder.weight.double().T + self.decoder.bias.double()                     # (grid, 3)
        lp = dist.StudentT(3.0, 0.0, 1.0).log_prob(z).squeeze(-1) + dist.Normal(loc, 0.5).log_prob(
            x.double().unsqueeze(1)).sum(-1)
        return (torch.logsumexp(lp, 1) + math.log(float(z[1] - z[0]))).float()


class NestedTokens(nn.Module):
    """Nested plates: a latent per token inside the per-sentence plate (sentences x 3 tokens)."""

    def __init__(self):
        super().__init__()
        self.gain, self.shift = nn.Parameter(torch.tensor(0.8)), nn.Parameter(torch.tensor(0.1))
        self.q_gain, self.q_raw = nn.Parameter(torch.tensor(0.3)), nn.Parameter(torch.tensor(0.0))

    def model(self, x):
        with pyro.plate("sentences", x.shape[0], dim=-2), pyro.plate("tokens", x.shape[1], dim=-1):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(self.gain * z + self.shift, 0.5), obs=x)

    def guide(self, x):
        with pyro.plate("sentences", x.shape[0], dim=-2), pyro.plate("tokens", x.shape[1], dim=-1):
            pyro.sample("z", dist.Normal(self.q_gain * x, nn.functional.softplus(self.q_raw) + 0.1))

    @torch.no_grad()
    def exact_log_px(self, x):
        return dist.Normal(self.shift, (self.gain ** 2 + 0.25).sqrt()).log_prob(x).sum(-1)


class GlobalAndLocal(nn.Module):
    """A global latent next to local ones: a Bayesian decoder bias b and a code z_i per datapoint."""

    def __init__(self):
        super().__init__()
        self.b_loc, self.b_raw = nn.Parameter(torch.tensor(0.3)), nn.Parameter(torch.tensor(-1.0))
        self.gain, self.z_raw = nn.Parameter(torch.tensor(0.5)), nn.Parameter(torch.tensor(-0.5))

    def model(self, x):
        b = pyro.sample("b", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z + b, 0.5), obs=x)

    def guide(self, x):
        b = pyro.sample("b", dist.Normal(self.b_loc, nn.functional.softplus(self.b_raw)))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.gain * (x - b), nn.functional.softplus(self.z_raw) + 0.1))

    @torch.no_grad()
    def exact_set_log_px(self, x):
        m, s, n = self.b_loc, nn.functional.softplus(self.b_raw), x.shape[0]
        return float(dist.MultivariateNormal(m.expand(n), 1.25 * torch.eye(n) + s ** 2 * torch.ones(n, n)).log_prob(x))


class MaskedSequences(nn.Module):
    """``poutine.mask`` for padding: sequences of up to 5 steps, one latent per sequence."""

    def __init__(self):
        super().__init__()
        self.gain, self.shift = nn.Parameter(torch.tensor(1.2)), nn.Parameter(torch.tensor(-0.3))
        self.q_gain, self.q_raw = nn.Parameter(torch.tensor(0.4)), nn.Parameter(torch.tensor(-0.5))

    def model(self, x, mask):
        with pyro.plate("sequences", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            with pyro.plate("steps", x.shape[1], dim=-1), poutine.mask(mask=mask):
                pyro.sample("x", dist.Normal(self.gain * z + self.shift, 0.5), obs=x)

    def guide(self, x, mask):
        mean = (x * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True)
        with pyro.plate("sequences", x.shape[0], dim=-2):
            pyro.sample("z", dist.Normal(self.q_gain * mean, nn.functional.softplus(self.q_raw) + 0.1))

    @torch.no_grad()
    def exact_log_px(self, x, mask):
        out = []
        for xi, mi in zip(x, mask):
            v = xi[mi]
            cov = self.gain ** 2 * torch.ones(len(v), len(v)) + 0.25 * torch.eye(len(v))
            out.append(dist.MultivariateNormal(self.shift.expand(len(v)), cov).log_prob(v))
        return torch.stack(out)


class MarkovHMM(nn.Module):
    """A ``pyro.markov`` sequence: a 2-state HMM over 4 binary steps, states drawn by the guide."""

    def __init__(self):
        super().__init__()
        self.init_logits = nn.Parameter(torch.zeros(2))
        self.trans_logits = nn.Parameter(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        self.emit_logits = nn.Parameter(torch.tensor([-1.5, 1.5]))
        self.posterior = nn.Linear(4, 4 * 2)

    def model(self, x):
        with pyro.plate("sequences", x.shape[0]):
            s = None
            for t in pyro.markov(range(x.shape[1])):
                logits = self.init_logits if s is None else self.trans_logits[s]
                s = pyro.sample(f"s_{t}", dist.Categorical(logits=logits))
                pyro.sample(f"x_{t}", dist.Bernoulli(logits=self.emit_logits[s]), obs=x[:, t])

    def guide(self, x):
        logits = self.posterior(x).unflatten(-1, (4, 2))
        with pyro.plate("sequences", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                pyro.sample(f"s_{t}", dist.Categorical(logits=logits[:, t]))

    @torch.no_grad()
    def exact_log_px(self, x):
        paths = torch.tensor(list(itertools.product([0, 1], repeat=4)))                           # (16, 4)
        init, trans = torch.log_softmax(self.init_logits, 0), torch.log_softmax(self.trans_logits, 1)
        lp = init[paths[:, 0]] + trans[paths[:, :-1], paths[:, 1:]].sum(-1)                        # (16,)
        emit = dist.Bernoulli(logits=self.emit_logits[paths]).log_prob(x.unsqueeze(1)).sum(-1)    # (n, 16)
        return torch.logsumexp(lp + emit, 1)


# ============================================================================= cases


@dataclass
class Case:
    """One pair of the zoo: how to build it and its data, and its exact answers where they exist."""

    idiom: str
    build: Callable[[], Any]
    data: Callable[[int, int], Any]           # (n, seed) -> batch
    exact: bool = False                       # pair.exact_log_px(*batch): per datapoint
    exact_set: bool = False                   # pair.exact_set_log_px(*batch): the set, global latents shared
    notes: str = ""

    def batch_args(self, batch):
        return batch if isinstance(batch, tuple) else (batch,)


def _real(dim):
    return lambda n, seed: torch.randn(n, dim, generator=_gen(seed))


def _binary(dim):
    return lambda n, seed: (torch.rand(n, dim, generator=_gen(seed)) < 0.4).float()


def _coin(n, seed):
    g = _gen(seed)
    return (torch.rand(n, generator=g) < 0.3).float(), torch.randn(n, generator=g) + 1.0


def _masked(n, seed):
    g = _gen(seed)
    lengths = torch.randint(2, 6, (n,), generator=g)
    mask = torch.arange(5).unsqueeze(0) < lengths.unsqueeze(1)
    return torch.randn(n, 5, generator=g) * mask, mask


CASES: dict[str, Case] = {
    "pyro-module": Case("`pyro.module` in model and guide", ModuleVAE, _real(4), exact=True),
    "pyromodule": Case("`PyroModule` + `PyroParam` + `PyroSample` (global bias)", PyroModuleVAE, _real(4), exact_set=True),
    "param-only": Case("`pyro.param` only, no `nn.Module`", ParamOnly, _real(3), exact=True),
    "autonormal": Case("`AutoNormal` guide, global latents", AutoNormalPair, _coin, exact_set=True),
    "autodelta": Case("`AutoDelta` guide (MAP), global latents", AutoDeltaPair, _coin),
    "autonormal-local": Case("`AutoNormal` guide on a per-datapoint latent", AutoNormalLocal,
                             lambda n, s: torch.randn(n, generator=_gen(s))),
    "config-enumerate": Case("`config_enumerate` guide: Categorical + continuous", EnumeratedMixtureVAE, _real(4),
                             exact=True),
    "categorical": Case("`Categorical` index latent, sampled", CategoricalMixture, _real(4), exact=True),
    "one-hot": Case("`OneHotCategorical` vector latents", OneHotVAE, _binary(6), exact=True),
    "bernoulli": Case("`Bernoulli` vector latents", BernoulliSBN, _binary(6), exact=True),
    "student-t": Case("heavy-tailed prior, no closed-form KL", StudentTVAE, _real(3), exact=True),
    "nested-plates": Case("per-token latents in a per-sentence plate", NestedTokens, _real(3), exact=True),
    "global-local": Case("a global latent next to local ones", GlobalAndLocal, lambda n, s: torch.randn(n, generator=_gen(s)),
                         exact_set=True),
    "masked": Case("`poutine.mask` for padding", MaskedSequences, _masked, exact=True),
    "markov": Case("a `pyro.markov` sequence (HMM)", MarkovHMM, _binary(4), exact=True),
}


def make(name: str):
    """A fresh pair of the zoo, its training data and its validation data (seeded)."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    case = CASES[name]
    return case.build(), case.data(N_TRAIN, 1), case.data(BATCH, 2)


def _cli_maker(name: str):
    def maker():
        pair, _, valid = make(name)
        return pair, valid
    return maker


for _name in CASES:  # make_<name>() -> (pair, batch): what `pyro-lvm inspect --pair tests/test_zoo.py:make_<name>` calls
    globals()["make_" + _name.replace("-", "_")] = _cli_maker(_name)


# ============================================================================= capabilities


def _tensors(pair) -> dict[str, torch.Tensor]:
    out = {f"pair/{k}": v.detach().clone() for k, v in pair.state_dict().items()} if isinstance(pair, nn.Module) else {}
    out.update({f"store/{k}": v.detach().clone() for k, v in pyro.get_param_store().items()})
    return out


def _fit(pair, train, valid=None, **kw):
    from pyro_lvm import fit

    kw = {"epochs": 1, "batch_size": BATCH, "lr": 1e-2, "progress": False, **kw}
    return fit(pair, train, valid, **kw)


def _finite(history, *keys):
    for key in keys:
        values = history[key]
        assert values and all(math.isfinite(v) for v in values), (key, values)


def cap_fit(name):
    pair, train, valid = make(name)
    _finite(_fit(pair, train, valid, epochs=2), "train_loss", "valid_loss")


def cap_resume(name, tmp):
    pair, train, valid = make(name)
    full = _fit(pair, train, valid, epochs=2, seed=3)
    expected = _tensors(pair)
    pair, train, valid = make(name)
    _fit(pair, train, valid, epochs=1, seed=3, checkpoint_dir=tmp)
    pyro.clear_param_store()
    torch.manual_seed(123)   # a different initialisation: everything must come from the checkpoint
    resumed = CASES[name].build()
    h = _fit(resumed, train, valid, epochs=2, seed=3, checkpoint_dir=tmp, resume=True)
    assert h.epochs == full.epochs
    got = _tensors(resumed)
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), f"{k} differs after resume"


def cap_elbo_terms(name):
    from pyro_lvm import elbo_terms

    pair, _, valid = make(name)
    t = elbo_terms(pair, valid, num_samples=4)
    assert t["elbo"].shape == (BATCH,) and bool(torch.isfinite(t["elbo"]).all())
    torch.testing.assert_close(t["elbo"], t["reconstruction"] - t["kl"])


def cap_log_likelihood(name):
    from pyro_lvm import log_likelihood
    from pyro_lvm.evaluation.metrics import set_log_likelihood

    case = CASES[name]
    pair, train, valid = make(name)
    # A short training run first: an untrained guide can be a proposal with heavy-tailed weights,
    # whose K-sample estimate is far from log p(x) for any affordable K.
    _fit(pair, train, epochs=30, lr=0.03)
    if case.exact_set:
        held = set_log_likelihood(pair, valid, num_samples=20, global_samples=300)
        exact = pair.exact_set_log_px(*case.batch_args(valid))
        assert abs(held["total"] - exact) < 4 * held["se"] + 0.02 * BATCH, (held["total"], exact, held["se"])
        return
    ll = log_likelihood(pair, valid, num_samples=2000)
    assert ll.shape == (BATCH,) and bool(torch.isfinite(ll).all())
    if case.exact:
        exact = pair.exact_log_px(*case.batch_args(valid))
        assert float((ll - exact).abs().max()) < 0.1, (ll, exact)


def cap_evaluation_report(name):
    from pyro_lvm import evaluation_report

    pair, _, valid = make(name)
    report = evaluation_report(pair, valid, num_samples=20, psis_samples=20, global_samples=20)
    assert math.isfinite(report["log_likelihood"]) and "khat_median" in report["psis"]


SCHEDULE_ARGS = {"constant": {"value": 0.5}, "linear": {"steps": 2}, "sigmoid": {"steps": 2},
                 "cyclical": {"period": 2, "cycles": 1}}


def cap_kl_annealing(name):
    from pyro_lvm.infer import KLAnnealing
    from pyro_lvm.infer.schedules import SCHEDULES

    assert set(SCHEDULES) <= set(SCHEDULE_ARGS), f"give the new schedule(s) {set(SCHEDULES) - set(SCHEDULE_ARGS)} arguments"
    for schedule in SCHEDULES:
        pair, train, valid = make(name)
        h = _fit(pair, train, valid, callbacks=[KLAnnealing(schedule, **SCHEDULE_ARGS[schedule])])
        _finite(h, "train_loss", "valid_loss", "kl_weight_min", "kl_weight_max")


def cap_free_bits(name):
    from pyro_lvm.infer import FreeBitsELBO

    pair, train, valid = make(name)
    _finite(_fit(pair, train, valid, elbo=FreeBitsELBO(0.2)), "train_loss", "valid_loss", "valid_objective")


def cap_aggressive(name):
    from pyro_lvm.infer import AggressiveTraining

    pair, train, valid = make(name)
    h = _fit(pair, train, valid, epochs=2, callbacks=[AggressiveTraining(max_inner_steps=2, check_every=1, mi_batch_size=8)])
    _finite(h, "train_loss", "aggressive_mi")


def cap_collapse(name):
    from pyro_lvm.evaluation.diagnostics import collapse_report

    pair, _, valid = make(name)
    report = collapse_report(pair, valid, batch_size=BATCH)
    assert 0.0 <= report["mi"] <= math.log(BATCH) + 1e-9 and 0 <= report["active_units"] <= report["units"]


def cap_estimator(name, estimator):
    from pyro_lvm.infer import DiscreteELBO

    pair, train, _ = make(name)
    _finite(_fit(pair, train, elbo=DiscreteELBO(estimator)), "train_loss")


def cap_compare_estimators(name):
    from pyro_lvm.infer.discrete.comparison import compare_estimators

    pair, _, valid = make(name)
    cmp = compare_estimators(pair, valid, repeats=2, temperatures=[1.0], warmup=1)
    assert cmp.rows and all(math.isfinite(r.elbo) for r in cmp.rows)


def cap_inspect(name):
    from pyro_lvm import cli
    from pyro_lvm.inspection import inspect_pair

    pair, _, valid = make(name)
    report = inspect_pair(pair, valid)
    assert report.missing_in_guide == [] and any(r.latent and r.random for r in report)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert cli.main(["inspect", "--pair", f"{THIS_FILE}:make_{name.replace('-', '_')}"]) == 0
    assert all(r.name in out.getvalue() for r in report)


def cap_arviz(name):
    from pyro_lvm.evaluation.arviz_io import to_inference_data
    from pyro_lvm.inspection import inspect_pair

    pair, _, valid = make(name)
    sites = [r.name for r in inspect_pair(pair, valid) if r.kind == "sample" and r.latent and r.in_model]
    idata = to_inference_data(pair, valid, sites=sites, num_samples=5)
    assert set(sites) <= set(idata.posterior.data_vars)


def _estimator_names() -> list[str]:
    from pyro_lvm.infer.discrete.estimators import ESTIMATORS

    return list(ESTIMATORS)  # the one registry of estimator names: new ones join the matrix by themselves


CAPABILITIES: dict[str, Callable] = {
    "fit + validation": cap_fit,
    "exact resume": cap_resume,
    "elbo_terms": cap_elbo_terms,
    "log-likelihood": cap_log_likelihood,
    "evaluation report + PSIS": cap_evaluation_report,
    "KL annealing, every schedule": cap_kl_annealing,
    "free bits": cap_free_bits,
    "aggressive training": cap_aggressive,
    "collapse diagnostics": cap_collapse,
    **{f"estimator `{e}`": (lambda e: lambda name: cap_estimator(name, e))(e) for e in _estimator_names()},
    "compare_estimators": cap_compare_estimators,
    "inspection (API + CLI)": cap_inspect,
    "ArviZ export": cap_arviz,
}

REFUSALS = (ValueError, TypeError, NotImplementedError)


def run_cell(name: str, capability: str, tmp: Path) -> tuple[str, str]:
    """``("works", "")`` or ``("refused", message)``; anything other than a clean refusal propagates."""
    fn = CAPABILITIES[capability]
    torch.set_num_threads(1)
    pyro.enable_validation(True)
    try:
        fn(name, tmp) if capability == "exact resume" else fn(name)
    except REFUSALS as e:
        return "refused", " ".join(str(e).split())
    finally:
        pyro.clear_param_store()
    return "works", ""


# ============================================================================= the page


def matrix_markdown(outcomes: dict[tuple[str, str], tuple[str, str]]) -> str:
    """``docs/compatibility.md`` from the outcomes of every cell."""
    caps = list(CAPABILITIES)
    lines = [
        "# Compatibility: every capability on every kind of pair",
        "",
        "Each row is a small model/guide pair written in one of the idioms Pyro users write; each column a",
        "generic capability of pyro_lvm. ✓: it works on that pair (with the checks of `tests/test_zoo.py`:",
        "log-likelihoods against closed forms or full enumeration where the pair has them, bit-identical",
        "resume, ...). ✗ n: it refuses, with message n below, which names the site, the reason and what to do.",
        "",
        "This page is generated from the test suite's matrix (`tests/test_zoo.py`), which fails when an",
        "outcome differs from it; regenerate it with",
        "",
        "```text",
        "python scripts/update_compatibility.py",
        "```",
        "",
        "| pair | idiom | " + " | ".join(caps) + " |",
        "|---|---|" + "---|" * len(caps),
    ]
    notes: list[str] = []
    for name, case in CASES.items():
        cells = []
        for cap in caps:
            status, message = outcomes[(name, cap)]
            if status == "works":
                cells.append("✓")
            else:
                notes.append(f"{len(notes) + 1}. **{name}** × {cap}: {message}")
                cells.append(f"✗ {len(notes)}")
        lines.append(f"| {name} | {case.idiom} | " + " | ".join(cells) + " |")
    lines += ["", "## Refusals", ""] + (notes or ["None."]) + [""]
    return "\n".join(lines)


_ROW = re.compile(r"^\| (\S+) \| .*$")


def read_page(text: str) -> dict[tuple[str, str], tuple[str, str]]:
    """The outcomes a page records (the inverse of :func:`matrix_markdown`)."""
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| pair | idiom |"))
    caps = [c.strip() for c in lines[header].strip("|").split("|")][2:]
    notes = {}
    for line in lines:
        m = re.match(r"^(\d+)\. \*\*(\S+)\*\* × (.*?): (.*)$", line)
        if m:
            notes[int(m.group(1))] = m.group(4)
    out = {}
    for line in lines[header + 2:]:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        for cap, cell in zip(caps, cells[2:]):
            out[(cells[0], cap)] = ("works", "") if cell == "✓" else ("refused", notes[int(cell.split()[1])])
    return out


_PAGE_CACHE: dict[str, Any] = {}


def page_outcomes() -> dict[tuple[str, str], tuple[str, str]]:
    if "outcomes" not in _PAGE_CACHE:
        _PAGE_CACHE["outcomes"] = read_page(PAGE.read_text()) if PAGE.is_file() else {}
    return _PAGE_CACHE["outcomes"]


# ============================================================================= the tests


ADVICE = re.compile(r"\b(use|pass|give|put|draw|train|select|hinge|mark|remove|wrap|resume|name|choose|write|diagnose)\b",
                    re.I)


@pytest.mark.parametrize("capability", list(CAPABILITIES))
@pytest.mark.parametrize("name", list(CASES))
def test_cell(name, capability, tmp_path):
    status, message = run_cell(name, capability, tmp_path)
    recorded = page_outcomes().get((name, capability))
    assert recorded == (status, message), (
        f"docs/compatibility.md records {recorded} for {name} x {capability}, the code gives {(status, message)}: "
        "run python scripts/update_compatibility.py")
    if status == "refused":
        # A refusal says what is wrong and what to do, in the library's words.
        says_what_to_do = bool(ADVICE.search(message)) and bool(re.search(r"'[\w.$]+'|site|guide|estimator", message))
        assert says_what_to_do, f"the refusal names no site or gives no way out: {message}"


def test_the_zoo_is_large_enough_and_the_page_lists_all_of_it():
    assert len(CASES) >= 12
    assert set(page_outcomes()) == {(n, c) for n in CASES for c in CAPABILITIES}, \
        "docs/compatibility.md lists other cells than the matrix: run python scripts/update_compatibility.py"
