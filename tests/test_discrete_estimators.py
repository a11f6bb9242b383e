"""RLOO, VIMCO, ARM/DisARM, REBAR/RELAX, Gumbel-Rao and the Bernoulli relaxations on user pairs.

Every pair here is written in the test file the way a user writes one (plain functions with
``pyro.param``, an ``nn.Module`` calling ``pyro.module``, Bernoulli / OneHotCategorical /
Categorical sites). Unbiasedness is checked against the exact gradient from enumeration
(itself checked against brute force in tests/test_discrete.py), or, for VIMCO, against the
exact gradient of the S-sample bound summed by brute force here.

The statistical test: R gradient draws, each the average over M replicated datapoints (so
one vectorised call gives M independent estimates). Unbiased means: Hotelling's T^2 of the
mean against the exact gradient below its 0.1% critical value, and every coordinate within
4 standard errors. The same test flags the biased estimators (``test_the_test_has_power``).
Draws are seeded: each case is reproducible.
"""

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from scipy.stats import f as f_dist
from torch import nn

from pyro_lvm import fit
from pyro_lvm.infer import KLAnnealing, KLScaledELBO
from pyro_lvm.infer.discrete.estimators import (ESTIMATORS, DiscreteELBO, TemperatureAnnealing, applicable_estimators,
                                                estimator_applicability)
from pyro_lvm.infer.discrete.comparison import compare_estimators
from pyro_lvm.infer.discrete.gradient_variance import GradientVariance
from pyro_lvm.infer.discrete.relaxed import GumbelSoftmaxBernoulli

UNBIASED = ["rloo", "arm", "disarm", "rebar", "relax"]


# ----------------------------------------------------------------------------- user pairs

class BernoulliPair:
    """``d`` Bernoulli latents per datapoint (one site, ``.to_event(1)``), guide logits ``a + b x``."""

    def __init__(self, d, a, b):
        self.d = d
        self.init = (torch.tensor(a[:d]), torch.tensor(b[:d]))
        self.w = torch.linspace(-1.5, 1.5, d) if d > 1 else torch.tensor([1.5])

    def model(self, x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(probs=torch.full((len(x), self.d), 0.4)).to_event(1))
            pyro.sample("x", dist.Normal((z * self.w).sum(-1), 1.0), obs=x)

    def guide(self, x):
        a = pyro.param("a", self.init[0])
        b = pyro.param("b", self.init[1])
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Bernoulli(logits=a + b * x.unsqueeze(-1)).to_event(1))


class CategoricalPair:
    """One K-way latent per datapoint, as ``OneHotCategorical`` (one_hot=True) or an index ``Categorical``."""

    def __init__(self, k, w, c, one_hot=True):
        self.k, self.one_hot = k, one_hot
        self.init = (torch.tensor(w[:k]), torch.tensor(c[:k]))
        self.locs = torch.linspace(-2.0, 2.0, k)

    def model(self, x):
        with pyro.plate("data", len(x)):
            if self.one_hot:
                z = pyro.sample("z", dist.OneHotCategorical(logits=torch.zeros(self.k)))
                loc = z @ self.locs
            else:
                z = pyro.sample("z", dist.Categorical(logits=torch.zeros(self.k)))
                loc = self.locs[z]
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    def guide(self, x):
        w = pyro.param("w", self.init[0])
        c = pyro.param("c", self.init[1])
        with pyro.plate("data", len(x)):
            logits = w * x.unsqueeze(-1) + c
            pyro.sample("z", dist.OneHotCategorical(logits=logits) if self.one_hot else dist.Categorical(logits=logits))


def param_list():
    return [pyro.param(name).unconstrained() for name in sorted(pyro.get_param_store().keys())
            if not name.startswith("__")]


def grad_of(loss, params):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


def exact_gradient(pair, x):
    loss = DiscreteELBO("enumerate", max_plate_nesting=1).differentiable_loss(pair.model, pair.guide, x)
    return grad_of(loss, param_list())


def draws(objective, pair, x, repeats):
    params = param_list()
    return torch.stack([grad_of(objective.differentiable_loss(pair.model, pair.guide, x), params).double()
                        for _ in range(repeats)])


def same_mean(g, h):
    """Two-sample version of :func:`unbiased`: do draws ``g`` and ``h`` have the same mean?"""
    both = torch.cat([g - g.mean(0), h - h.mean(0)])
    return unbiased(g, h.mean(0), spread=both, reference_draws=len(h))


def unbiased(g, exact, spread=None, reference_draws=None):
    """``(passes, T^2 / its 0.1% critical value, max |z|)`` of the test in the module docstring.

    Hotelling's T^2 of the mean draw against the exact gradient, on the directions where the
    draws vary (a categorical's logit gradients sum to zero, so its coordinates are
    correlated and not all free). A direction without variance (DisARM on one binary
    variable at p = 1/2 is exact) must match the exact gradient to float precision instead.
    """
    r = len(g)
    exact = exact.double()
    diff = g.mean(0) - exact
    cov = torch.cov(g.T if spread is None else spread.T).reshape(len(exact), len(exact))
    if reference_draws:  # the reference is the mean of that many draws: its noise adds to the difference's
        cov = cov * (1 + r / reference_draws)
    evals, evecs = torch.linalg.eigh(cov)
    free = evals > 1e-10 * max(float(evals.max()), 1e-30)
    p = int(free.sum())
    proj = evecs.T @ diff
    silent_ok = bool((proj[~free].abs() <= 1e-4 * (1 + float(exact.norm()))).all())
    t2 = float(r * (proj[free] ** 2 / evals[free]).sum()) if p else 0.0
    critical = (r - 1) * p / (r - p) * f_dist.ppf(0.999, p, r - p) if p else 1.0
    se = (cov.diagonal() / r).sqrt()
    z = (diff.abs() / se)[se > 1e-6 * (1 + exact.abs())]
    zmax = float(z.max()) if z.numel() else 0.0
    return silent_ok and t2 < critical and zmax < 4, t2 / critical, zmax


X = torch.tensor([-1.2, 0.4, 1.9])
REPLICAS = 50  # datapoints averaged inside one draw


def check_unbiased(pair, estimators, seed, repeats=40, temperature=0.5):
    pyro.clear_param_store()
    x = X.repeat(REPLICAS)
    exact = exact_gradient(pair, x)
    for name in estimators:
        pyro.set_rng_seed(seed)
        g = draws(DiscreteELBO(name, temperature=temperature), pair, x, repeats)
        ok, stat, zmax = unbiased(g, exact)
        assert ok, f"{name}: T^2 at {stat:.2f} x its critical value, max |z| = {zmax:.2f}"


# ----------------------------------------------------------------------------- unbiasedness

coef = st.floats(-1.5, 1.5, allow_nan=False, width=32)


@settings(max_examples=3, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate])
@given(d=st.integers(1, 3), a=st.lists(coef, min_size=3, max_size=3), b=st.lists(coef, min_size=3, max_size=3),
       seed=st.integers(0, 1000))
def test_unbiased_estimators_on_bernoulli_pairs(d, a, b, seed):
    check_unbiased(BernoulliPair(d, a, b), UNBIASED, seed)


@settings(max_examples=3, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate])
@given(k=st.integers(2, 4), w=st.lists(coef, min_size=4, max_size=4), c=st.lists(coef, min_size=4, max_size=4),
       seed=st.integers(0, 1000))
def test_unbiased_estimators_on_one_hot_pairs(k, w, c, seed):
    check_unbiased(CategoricalPair(k, w, c), UNBIASED, seed)


@settings(max_examples=3, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate])
@given(k=st.integers(2, 5), w=st.lists(coef, min_size=5, max_size=5), seed=st.integers(0, 1000))
def test_unbiased_estimators_on_categorical_index_pairs(k, w, seed):
    # ARM/DisARM reach an index site through the stick-breaking coupling
    check_unbiased(CategoricalPair(k, w, [0.3, -0.2, 0.1, 0.0, -0.4], one_hot=False), ["rloo", "arm", "disarm"], seed)


def exact_bound(pair, x, s):
    """The S-sample bound summed by brute force over the K^S joint draws of every datapoint."""
    if isinstance(pair, BernoulliPair):
        values = torch.tensor(list(itertools.product([0.0, 1.0], repeat=pair.d)))        # (V, d)
        logits = pyro.param("a") + pyro.param("b") * x.unsqueeze(-1)                      # (B, d)
        log_q = dist.Bernoulli(logits=logits.unsqueeze(1)).log_prob(values).sum(-1)       # (B, V)
        log_p = (dist.Bernoulli(probs=torch.tensor(0.4)).log_prob(values).sum(-1)
                 + dist.Normal((values * pair.w).sum(-1), 1.0).log_prob(x.unsqueeze(-1)))
    else:
        log_q = torch.log_softmax(pyro.param("w") * x.unsqueeze(-1) + pyro.param("c"), -1)
        log_p = dist.Normal(pair.locs, 1.0).log_prob(x.unsqueeze(-1)) - math.log(pair.k)
    log_w = log_p - log_q
    total = 0.0
    for combo in itertools.product(range(log_q.shape[1]), repeat=s):
        idx = torch.tensor(combo)
        total = total + (log_q[:, idx].sum(-1).exp() * (torch.logsumexp(log_w[:, idx], -1) - math.log(s))).sum()
    return total


@pytest.mark.parametrize("pair", [BernoulliPair(2, [0.4, -0.3], [0.8, -0.6]),
                                  CategoricalPair(3, [0.5, 0.0, -0.5], [0.2, -0.1, 0.3])], ids=["bernoulli", "one-hot"])
@pytest.mark.parametrize("s", [2, 3])
def test_vimco_is_unbiased_for_its_bound(pair, s):
    pyro.clear_param_store()
    x = X.repeat(REPLICAS)
    pair.guide(x)  # create the parameters
    exact = grad_of(-exact_bound(pair, x, s), param_list())
    objective = DiscreteELBO("vimco", num_particles=s)
    pyro.set_rng_seed(s)
    g = draws(objective, pair, x, 40)
    ok, stat, zmax = unbiased(g, exact)
    assert ok, (stat, zmax)
    # its loss is the bound, not the ELBO, and the ELBO estimate comes with it
    bound = float(exact_bound(pair, x, s).detach())
    values = torch.tensor([-objective.loss(pair.model, pair.guide, x) for _ in range(30)])
    assert abs(float(values.mean()) - bound) < 4 * float(values.std()) / math.sqrt(30)
    assert objective.last_stats["elbo"] < objective.last_stats["bound"] + 1e-3 * abs(bound)
    assert objective.objective_name == f"{s}-sample bound"


@pytest.mark.parametrize("pair", [BernoulliPair(2, [0.4, -0.3], [0.8, -0.6]),
                                  CategoricalPair(3, [0.5, 0.0, -0.5], [0.2, -0.1, 0.3])], ids=["bernoulli", "one-hot"])
def test_gumbel_rao_has_the_mean_of_straight_through_and_less_variance(pair):
    """Rao-Blackwellisation: the same expected gradient (biased alike) at a fraction of the variance."""
    pyro.clear_param_store()
    x = X.repeat(REPLICAS)
    exact_gradient(pair, x)
    pyro.set_rng_seed(0)
    st_draws = draws(DiscreteELBO("straight-through", temperature=0.3), pair, x, 60)
    gr_draws = draws(DiscreteELBO("gumbel-rao", temperature=0.3, rao_samples=20), pair, x, 60)
    ok, stat, zmax = same_mean(gr_draws, st_draws)
    assert ok, (stat, zmax)
    assert float(gr_draws.var(0).sum()) < 0.7 * float(st_draws.var(0).sum())


def test_the_test_has_power():
    """The same test rejects straight-through and Gumbel-softmax at tau = 1 (biased estimators)."""
    pair = BernoulliPair(2, [0.4, -0.3], [0.8, -0.6])
    pyro.clear_param_store()
    x = X.repeat(REPLICAS)
    exact = exact_gradient(pair, x)
    for name in ("straight-through", "gumbel"):
        pyro.set_rng_seed(0)
        ok, stat, _ = unbiased(draws(DiscreteELBO(name, temperature=1.0), pair, x, 40), exact)
        assert not ok and stat > 10, (name, stat)


def test_unbiased_under_kl_scaling():
    """KLScaledELBO(beta) around a particle estimator: its mean gradient is the exact gradient of
    -rec + beta * KL (enumeration under the same handler)."""
    pair = CategoricalPair(3, [0.5, 0.0, -0.5], [0.2, -0.1, 0.3])
    pyro.clear_param_store()
    x = X.repeat(REPLICAS)
    reference = KLScaledELBO(DiscreteELBO("enumerate", max_plate_nesting=1), beta=0.3)
    exact = grad_of(reference.differentiable_loss(pair.model, pair.guide, x), param_list())
    plain = exact_gradient(pair, x)
    assert float((exact - plain).abs().max()) > 0.1  # the scaling changes the gradient
    for name in ("rloo", "disarm", "rebar"):
        pyro.set_rng_seed(1)
        ok, stat, zmax = unbiased(draws(KLScaledELBO(DiscreteELBO(name), beta=0.3), pair, x, 40), exact)
        assert ok, (name, stat, zmax)


# ----------------------------------------------------------------------------- variance ordering

class Coder(nn.Module):
    """A user's amortised pair: 4 Bernoulli codes of a 3-d observation, pyro.module in model and guide."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Linear(3, 4)
        self.decoder = nn.Linear(4, 3)

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(probs=torch.full((len(x), 4), 0.5)).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 0.5).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Bernoulli(logits=self.encoder(x)).to_event(1))


def coder_data(n=16):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, generator=g) * 1.5


def test_variance_ordering_disarm_arm_rloo_score_function_gumbel_rao_straight_through():
    pyro.clear_param_store()
    pair, x = Coder(), coder_data()
    cmp = compare_estimators(pair, x, ["score-function", "rloo", "arm", "disarm", "straight-through", "gumbel-rao"],
                             temperatures=[0.5], repeats=150, num_particles={"score-function": 2}, exact=False)
    var = {r.estimator: r.trace_cov_groups["encoder"] for r in cmp.rows}   # the guide's gradient
    assert var["disarm"] < var["arm"]                       # Dong et al. 2020: never noisier than ARM
    assert var["rloo"] < 0.5 * var["score-function"]        # same 2 samples, with the baseline
    assert var["gumbel-rao"] < 0.5 * var["straight-through"]  # Rao-Blackwellised at the same temperature
    assert cmp.row("rloo").model_evaluations == 2 and cmp.row("disarm").model_evaluations == 2


def test_rebar_and_relax_learn_to_lower_their_variance():
    pyro.clear_param_store()
    pair, x = Coder(), coder_data()
    before = compare_estimators(pair, x, ["rebar", "relax"], temperatures=[2.0], repeats=80, warmup=0, exact=False)
    after = compare_estimators(pair, x, ["rebar", "relax"], temperatures=[2.0], repeats=80, warmup=150, exact=False)
    for name in ("rebar", "relax"):  # the encoder's gradient (the control variate does not touch the decoder's)
        assert after.row(name).trace_cov_groups["encoder"] < 0.8 * before.row(name).trace_cov_groups["encoder"], name
        learned = after.row(name).learned["z"]
        assert learned["temperature"] != pytest.approx(2.0) and math.isfinite(learned["eta"])
    # the pair itself is untouched by the warm-up, and the control variates are gone afterwards
    assert not [k for k in pyro.get_param_store().keys() if k.startswith("__cv__")]


# ----------------------------------------------------------------------------- training

@pytest.mark.parametrize("name", ["rloo", "vimco", "arm", "disarm", "rebar", "relax", "gumbel-rao"])
def test_fit_trains_each_estimator_down_to_temperature_0_1(name):
    pyro.clear_param_store()
    torch.manual_seed(0)
    pair, x = Coder(), coder_data(200)
    history = fit(pair, x, x[:50], elbo=DiscreteELBO(name, temperature=0.1), epochs=6, batch_size=50, lr=3e-2,
                  seed=0)
    losses = history["train_loss"]
    assert all(math.isfinite(v) for v in losses + history["valid_loss"])
    assert losses[-1] < losses[0] - 0.1, losses


class PlainCoder(Coder):
    """Coder without pyro.module calls: its parameters are the module's own."""

    def model(self, x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(probs=torch.full((len(x), 4), 0.5)).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 0.5).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Bernoulli(logits=self.encoder(x)).to_event(1))


@pytest.mark.parametrize("name", ["relax", "gumbel"])
def test_kl_annealing_and_exact_resume(tmp_path, name):
    """Resume is bit-exact: the objective's first look at the guide and RELAX's network
    initialisation do not draw from the global generators."""
    pyro.clear_param_store()
    x = coder_data(100)

    def run(epochs, resume):
        pyro.clear_param_store()
        pair = PlainCoder()
        return fit(pair, x, epochs=epochs, batch_size=50, lr=1e-2, seed=0, elbo=DiscreteELBO(name),
                   callbacks=[KLAnnealing("linear", start=0.0, steps=4)], checkpoint_dir=tmp_path / str(resume),
                   resume=resume)
    straight = run(4, False)
    run(2, True)
    resumed = run(4, True)
    assert straight["kl_weight"][-1] == 1.0 and straight["kl_weight"][0] < 1.0
    assert resumed["train_loss"] == straight["train_loss"]  # the control variate's net resumes too


# ----------------------------------------------------------------------------- Bernoulli relaxations (issue 14)

def test_bernoulli_straight_through_is_exactly_binary_and_its_loss_is_unbiased():
    q = GumbelSoftmaxBernoulli(torch.randn(40, 5, requires_grad=True), temperature=0.3, hard=True)
    b = q.rsample()
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    (b * torch.randn(5)).sum().backward()
    assert float(q.logits.grad.abs().sum()) > 0
    pair = BernoulliPair(3, [0.4, -0.3, 0.2], [0.8, -0.6, 0.1])
    pyro.clear_param_store()
    exact = DiscreteELBO("enumerate", max_plate_nesting=1).loss(pair.model, pair.guide, X)
    # exact Bernoulli KL + a one-sample reconstruction at an exactly binary value: unbiased for -ELBO
    values = torch.tensor([DiscreteELBO("straight-through", 0.3).loss(pair.model, pair.guide, X) for _ in range(400)])
    assert abs(float(values.mean()) - exact) < 4 * float(values.std()) / 20


def test_bernoulli_gumbel_bias_shrinks_with_temperature_and_stays_finite_when_sharp():
    pair = BernoulliPair(3, [0.4, -0.3, 0.2], [0.8, -0.6, 0.1])
    pyro.clear_param_store()
    cmp = compare_estimators(pair, X.repeat(20), ["gumbel"], temperatures=[1.0, 0.1], repeats=100)
    assert cmp.exact_available
    assert cmp.row("gumbel", 0.1).relative_bias < 0.5 * cmp.row("gumbel", 1.0).relative_bias
    sharp = BernoulliPair(3, [12.0, -15.0, 9.0], [5.0, -4.0, 6.0])
    pyro.clear_param_store()
    for name in ("gumbel", "gumbel-concrete", "straight-through", "gumbel-rao"):
        loss = DiscreteELBO(name, temperature=0.1).differentiable_loss(sharp.model, sharp.guide, X)
        grads = torch.autograd.grad(loss, param_list())
        assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads), name


def test_categorical_index_site_refused_by_relaxations_with_how_to_fix():
    pair = CategoricalPair(3, [0.5, 0.0, -0.5], [0.2, -0.1, 0.3], one_hot=False)
    pyro.clear_param_store()
    for name in ("gumbel", "gumbel-concrete", "straight-through", "gumbel-rao", "rebar", "relax"):
        with pytest.raises(ValueError, match=r"site 'z'.*Categorical \(integer index\).*Write the site as "
                                             r"OneHotCategorical.*Estimators that apply to 'z': enumerate"):
            DiscreteELBO(name).differentiable_loss(pair.model, pair.guide, X)


# ----------------------------------------------------------------------------- which estimators apply

def test_estimator_applicability_per_site_kind():
    pyro.clear_param_store()
    bern = BernoulliPair(2, [0.1, 0.2], [0.3, 0.4])
    assert applicable_estimators(bern.model, bern.guide, X) == list(ESTIMATORS)
    index = CategoricalPair(3, [0.5, 0.0, -0.5], [0.2, -0.1, 0.3], one_hot=False)
    why = estimator_applicability(index.model, index.guide, X)
    assert {n for n, r in why.items() if r} == {"gumbel", "gumbel-concrete", "straight-through", "gumbel-rao",
                                                "rebar", "relax"}
    assert "OneHotCategorical" in why["rebar"]

    def binomial_guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("n", dist.Binomial(4, logits=pyro.param("l", torch.zeros(len(x)))))

    why = estimator_applicability(binomial_guide, binomial_guide, X)
    assert "ARM/DisARM need Bernoulli or categorical" in why["disarm"] and "no relaxation of Binomial" in why["gumbel"]
    assert not why["rloo"] and not why["enumerate"]

    def continuous_guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(pyro.param("m", torch.zeros(len(x))), 1.0))

    why = estimator_applicability(continuous_guide, continuous_guide, X)
    assert all("no discrete latent site" in r and "['z']" in r for r in why.values())


# ----------------------------------------------------------------------------- bad input

def test_bad_inputs_are_refused_in_our_own_words():
    with pytest.raises(ValueError, match="unknown estimator 'reinforce'; choose one of enumerate, .*rloo, vimco, arm, "
                                         "disarm.*gumbel-rao, rebar, relax"):
        DiscreteELBO("reinforce")
    for name in ("rloo", "vimco"):
        with pytest.raises(ValueError, match=f"the '{name}' estimator needs num_particles = S >= 2"):
            DiscreteELBO(name, num_particles=1)
    for name in ("gumbel-rao", "rebar", "relax"):
        with pytest.raises(ValueError, match="temperature must be a positive finite number, got"):
            DiscreteELBO(name, temperature=0.0)
    with pytest.raises(ValueError, match="control_variate= is the surrogate network of 'relax'"):
        DiscreteELBO("rebar", control_variate=nn.Linear(4, 1))
    with pytest.raises(ValueError, match="rao_samples must be a non-negative int, got -1"):
        DiscreteELBO("gumbel-rao", rao_samples=-1)
    pyro.clear_param_store()
    pair = BernoulliPair(2, [0.1, 0.2], [0.3, 0.4])
    with pytest.raises(ValueError, match=r"site 'z' must map inputs of shape \(\.\.\., 4\).*failed"):
        DiscreteELBO("relax", control_variate=nn.Linear(3, 1)).differentiable_loss(pair.model, pair.guide, X)
    with pytest.raises(ValueError, match=r"returned shape \(1, 3, 2\).*one number per datapoint"):
        DiscreteELBO("relax", control_variate=nn.Linear(4, 2)).differentiable_loss(pair.model, pair.guide, X)
    with pytest.raises(ValueError, match="has no network for site 'z'"):
        DiscreteELBO("relax", control_variate={"y": nn.Linear(4, 1)}).differentiable_loss(pair.model, pair.guide, X)
    with pytest.raises(ValueError, match="site 'q' is not discrete|not a latent site of the guide"):
        DiscreteELBO("rloo", sites=["q"]).differentiable_loss(pair.model, pair.guide, X)
    with pytest.raises(ValueError, match="learns its temperature"):
        fit(pair, X, epochs=1, elbo=DiscreteELBO("rebar"), callbacks=[TemperatureAnnealing()])


def make_index_pair():
    """For ``--pair``: a user's pair with a Categorical *index* site, and its batch."""
    return CategoricalPair(3, [0.1, -0.2, 0.3], [0.5, 0.0, -0.5], one_hot=False), X


def test_cli_compare_estimators_refuses_bad_input_in_its_own_words(tmp_path, capsys):
    from pyro_lvm.cli import main as cli_main

    assert cli_main(["compare-estimators", "--estimators", "reinforce", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "pyro-lvm: error:" in err and "'reinforce'" in err and "disarm" in err and "gumbel-rao" in err
    assert cli_main(["compare-estimators", "--temperatures", "0", "--out", str(tmp_path / "b")]) == 2
    assert "pyro-lvm: error:" in capsys.readouterr().err
    pyro.clear_param_store()
    spec = f"{__file__}:make_index_pair"
    assert cli_main(["compare-estimators", "--pair", spec, "--estimators", "gumbel", "--repeats", "2",
                     "--out", str(tmp_path / "c")]) == 2
    line = [x for x in capsys.readouterr().err.splitlines() if x.strip()][-1]
    assert line.startswith("pyro-lvm: error: ") and "site 'z'" in line and "OneHotCategorical" in line
    assert "Estimators that apply to 'z': enumerate, score-function" in line and "disarm" in line


def test_rebar_refuses_sites_that_depend_on_each_other():
    def model(x):
        with pyro.plate("data", len(x)):
            a = pyro.sample("a", dist.Bernoulli(0.5 * torch.ones(len(x))))
            b = pyro.sample("b", dist.Bernoulli(0.5 * torch.ones(len(x))))
            pyro.sample("x", dist.Normal(a + b, 1.0), obs=x)

    def guide(x):
        w = pyro.param("w", torch.tensor(0.5))
        with pyro.plate("data", len(x)):
            a = pyro.sample("a", dist.Bernoulli(logits=w * x))
            pyro.sample("b", dist.Bernoulli(logits=w * x + 2 * a))   # b's distribution depends on a's value

    pyro.clear_param_store()
    with pytest.raises(ValueError, match=r"site 'b': its distribution depends on the value of 'a'.*'disarm'"):
        DiscreteELBO("rebar").differentiable_loss(model, guide, X)
    # the estimators for dependent sites handle it, unbiasedly (hierarchical DisARM: one group per site)
    exact = grad_of(DiscreteELBO("enumerate", max_plate_nesting=1).differentiable_loss(model, guide, X.repeat(60)),
                    param_list())
    for name in ("disarm", "arm", "rloo"):
        pyro.set_rng_seed(3)
        g = torch.stack([grad_of(DiscreteELBO(name).differentiable_loss(model, guide, X.repeat(60)),
                                 param_list()).double() for _ in range(60)])
        ok, stat, zmax = unbiased(g, exact)
        assert ok, (name, stat, zmax)
    assert DiscreteELBO("disarm").model_evaluations == 2


def test_a_model_latent_without_a_guide_site_is_refused():
    def model(x):
        with pyro.plate("data", len(x)):
            pyro.sample("extra", dist.Normal(0.0, 1.0))
            z = pyro.sample("z", dist.Bernoulli(0.5 * torch.ones(len(x))))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Bernoulli(logits=pyro.param("l", torch.zeros(len(x)))))

    pyro.clear_param_store()
    with pytest.raises(ValueError, match=r"latent site\(s\) \['extra'\] of the model have no site in the guide"):
        DiscreteELBO("disarm").differentiable_loss(model, guide, X)


# ----------------------------------------------------------------------------- GradientVariance

def test_gradient_variance_logs_without_changing_training():
    x = coder_data(100)

    def run(callbacks):
        pyro.clear_param_store()
        return fit(Coder(), x, epochs=2, batch_size=25, lr=1e-2, seed=0, elbo=DiscreteELBO("disarm"),
                   callbacks=callbacks)
    gv = GradientVariance(every=3, draws=4)
    logged = run([gv])
    assert logged["train_loss"] == run([])["train_loss"]   # the draws run on forked generators
    steps = [r["step"] for r in gv.records]
    assert steps == [1, 3, 6]
    assert steps[:2] == [r["step"] for r in logged.epochs[0]["grad_variance"]]
    assert all(r["trace_cov"] > 0 and r["params"] == 4 * 3 + 4 for r in gv.records)  # the encoder's parameters
    # zero for an exact objective: nothing random in enumeration
    pair = CategoricalPair(3, [0.5, 0.0, -0.5], [0.2, -0.1, 0.3])
    pyro.clear_param_store()
    exact_gv = GradientVariance(every=1, draws=3)
    fit(pair, X.repeat(10), epochs=1, batch_size=30, elbo=DiscreteELBO("enumerate", max_plate_nesting=1),
        callbacks=[exact_gv])
    assert exact_gv.records[0]["trace_cov"] == 0.0 and exact_gv.records[0]["params"] == 6
    with pytest.raises(ValueError, match="draws must be an int >= 2"):
        GradientVariance(draws=1)
    with pytest.raises(ValueError, match="every must be a positive int"):
        GradientVariance(every=0)


# ----------------------------------------------------------------------------- global latents, plates sharing a dim

class Shared:
    """A global continuous latent, an unlabelled plate with a Bernoulli per datapoint, and a
    labelled plate after it on the same dimension (the M2 layout): costs must keep them apart."""

    def model(self, x_u, x_l):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("unlabelled", len(x_u)):
            z = pyro.sample("z", dist.Bernoulli(0.5 * torch.ones(len(x_u))))
            pyro.sample("x_u", dist.Normal(mu + 2 * z, 1.0), obs=x_u)
        with pyro.plate("labelled", len(x_l)):
            pyro.sample("x_l", dist.Normal(mu + 2.0, 1.0), obs=x_l)

    def guide(self, x_u, x_l):
        m = pyro.param("m", torch.tensor(0.3))
        a = pyro.param("a", torch.tensor(0.8))
        pyro.sample("mu", dist.Normal(m, 0.5))
        with pyro.plate("unlabelled", len(x_u)):
            pyro.sample("z", dist.Bernoulli(logits=a * x_u - 1.0))


def test_global_latents_and_plates_sharing_a_dimension():
    pyro.clear_param_store()
    batch = (torch.tensor([-1.0, 0.5, 2.5, 3.0, 1.0]).repeat(4), torch.tensor([2.0, 1.5, 3.0]))
    cmp = compare_estimators(Shared(), batch, ["rloo", "vimco", "disarm", "rebar"], repeats=150, reference_repeats=400,
                             temperatures=[0.5], warmup=0)
    assert cmp.reference.startswith("the mean of 400 draws of 'enumerate'")
    for name in ("rloo", "disarm", "rebar"):
        row = cmp.row(name)
        assert abs(row.elbo - cmp.reference_elbo) < 4 * row.elbo_se + 0.05 * abs(cmp.reference_elbo), name
        assert row.bias_ci[0] < 0.05 * cmp.reference_grad_norm and row.max_abs_z < 4.5, name
    # a global latent: VIMCO's bound is over the whole batch, so it is no lower than the ELBO
    assert cmp.row("vimco").objective >= cmp.row("vimco").elbo


class _MeanFieldPair(nn.Module):
    """Bernoulli latents (closed-form KL), a global Normal-guided Laplace latent (no closed form: the
    sampled fallback) and an auxiliary guide site: every branch of MeanFieldELBO's loss."""

    def __init__(self):
        super().__init__()
        self.enc, self.dec = nn.Linear(6, 4), nn.Linear(4, 6)
        self.prior = nn.Parameter(torch.zeros(4))
        self.w_loc = nn.Parameter(torch.tensor(0.3))

    def model(self, x):
        pyro.module("mf", self)
        w = pyro.sample("w", dist.Laplace(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(logits=self.prior).expand([x.shape[0], 4]).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z) + w, 1.0).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("mf", self)
        pyro.sample("u", dist.Normal(self.w_loc, 1.0), infer={"is_auxiliary": True})
        pyro.sample("w", dist.Normal(self.w_loc, 0.5))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(logits=self.enc(x)).to_event(1))


@pytest.mark.parametrize("name", ["gumbel", "straight-through", "gumbel-rao"])
def test_relaxed_estimators_skip_unused_log_densities_with_the_same_loss_and_gradients(name):
    from pyro.infer import TraceMeanField_ELBO

    x = torch.randn(5, 6)
    results = []
    for inner in ("ours", "pyro"):
        pyro.clear_param_store()
        torch.manual_seed(0)
        pair = _MeanFieldPair()
        objective = DiscreteELBO(name, temperature=0.5, rao_samples=3)
        if inner == "pyro":
            objective.inner = TraceMeanField_ELBO()
        pyro.enable_validation(False)
        try:
            torch.manual_seed(1)
            objective.differentiable_loss(pair.model, pair.guide, x)  # the first call checks the sites
            torch.manual_seed(2)
            loss = objective.differentiable_loss(pair.model, pair.guide, x)
        finally:
            pyro.enable_validation(True)
        grads = torch.autograd.grad(loss, list(pair.parameters()))
        results.append((loss.detach(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.equal(loss_a, loss_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))
    assert all(g.abs().sum() > 0 for g in grads_a)  # every parameter takes part (the comparison is not vacuous)
