"""Discrete latents: estimators, categorical VAE, M2, the comparison harness and their tasks.

Exact references: the mixture's closed-form ELBO (plain PyTorch), brute-force sums over every
latent configuration, and Pyro's own TraceGraph_ELBO gradient.
"""

import argparse
import itertools
import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pyro_lvm import fit
from pyro_lvm.data import load_digits_data
from pyro_lvm.infer.discrete.estimators import (ConcreteCategorical, DiscreteELBO, GraphELBO, GumbelSoftmaxCategorical,
                                                TemperatureAnnealing)
from pyro_lvm.infer.discrete.comparison import check_enumerable, compare_estimators, enumeration_size
from pyro_lvm.models import VAE
from pyro_lvm.models.categorical_vae import CategoricalVAE
from pyro_lvm.models.categorical_mixture import CategoricalMixture
from pyro_lvm.models.ss_vae import SSVAE, SemiSupervisedBatches, split_labelled


def grads_of(loss, params):
    return [g if g is not None else torch.zeros_like(p)
            for g, p in zip(torch.autograd.grad(loss, params, allow_unused=True), params)]


# ----------------------------------------------------------------------------- enumeration is exact

@settings(max_examples=15, deadline=None)
@given(k=st.integers(2, 6), n=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_enumeration_equals_closed_form_on_mixture(k, n, seed):
    torch.manual_seed(seed)
    pyro.clear_param_store()
    pair = CategoricalMixture(k)
    x = CategoricalMixture.simulate(n, k, seed=seed)
    params = list(pair.parameters())
    loss = DiscreteELBO("enumerate", max_plate_nesting=1).differentiable_loss(pair.model, pair.guide, x)
    exact = -pair.exact_elbo(x).sum()
    assert torch.allclose(loss, exact, rtol=1e-5, atol=1e-4)
    for g, h in zip(grads_of(loss, params), grads_of(exact, params)):
        assert torch.allclose(g, h, rtol=1e-4, atol=1e-4)


def brute_force_vae_elbo(pair: CategoricalVAE, x: torch.Tensor) -> torch.Tensor:
    """sum over all K^N codes of q(z|x) [log p(x|z) + log p(z) - log q(z|x)], summed over x."""
    n, k = pair.n_latents, pair.n_classes
    log_q = torch.log_softmax(pair.posterior_logits(x), -1)          # (B, N, K)
    log_prior = torch.log_softmax(pair.prior_logits, -1)             # (N, K)
    total = 0.0
    for code in itertools.product(range(k), repeat=n):
        idx = torch.tensor(code)
        z = torch.nn.functional.one_hot(idx, k).float().expand(len(x), n, k)
        lq = log_q[:, torch.arange(n), idx].sum(-1)                  # (B,)
        lp = log_prior[torch.arange(n), idx].sum()
        total = total + (lq.exp() * (pair.likelihood_dist(z).log_prob(x) + lp - lq)).sum()
    return total


def test_enumeration_gradient_equals_brute_force_on_categorical_vae():
    torch.manual_seed(0)
    pair = CategoricalVAE(64, n_latents=2, n_classes=3, hidden=(16,), estimator="enumerate")
    x = load_digits_data().train[:12]
    params = [p for n, p in pair.named_parameters() if "baseline" not in n]
    loss = pair.objective().differentiable_loss(pair.model, pair.guide, x)
    brute = -brute_force_vae_elbo(pair, x)
    assert torch.allclose(loss, brute, rtol=1e-5)
    for g, h in zip(grads_of(loss, params), grads_of(brute, params)):
        assert torch.allclose(g, h, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- sampling estimators

def test_score_function_is_unbiased_and_enumeration_has_no_variance():
    torch.manual_seed(1)
    pair = CategoricalMixture(3)
    x = CategoricalMixture.simulate(20, 3, seed=1)
    cmp = compare_estimators(pair, x, ["enumerate", "score-function"], repeats=1000)
    enum, sf = cmp.row("enumerate"), cmp.row("score-function")
    bl = compare_estimators(pair, x, ["score-function-baseline"], repeats=300, warmup=50).row("score-function-baseline")
    assert cmp.exact_available and cmp.latent_size == 3
    assert enum.trace_cov == 0 and enum.bias_norm < 1e-4 * cmp.exact_grad_norm
    # Every coordinate of the mean gradient within 4 standard errors of the exact gradient
    # (15 coordinates: a false alarm has probability < 0.001).
    assert sf.max_abs_z < 4.0 and bl.max_abs_z < 4.0
    assert sf.bias_ci[0] < 0.05 * cmp.exact_grad_norm
    assert bl.trace_cov < sf.trace_cov  # the baseline reduces variance
    assert abs(sf.elbo - cmp.exact_elbo) < 4 * sf.elbo_se


def test_gumbel_bias_shrinks_with_temperature():
    torch.manual_seed(2)
    pair = CategoricalMixture(5)
    x = CategoricalMixture.simulate(30, 5, seed=2)
    cmp = compare_estimators(pair, x, ["gumbel"], temperatures=[1.0, 0.1], repeats=200)
    hot, cold = cmp.row("gumbel", 1.0), cmp.row("gumbel", 0.1)
    assert cold.relative_bias < 0.5 * hot.relative_bias
    assert cold.trace_cov > hot.trace_cov


def test_graph_elbo_gradient_matches_tracegraph():
    torch.manual_seed(3)
    x = CategoricalMixture.simulate(10, 4, seed=3)
    pair = CategoricalMixture(4)
    params = list(pair.parameters())
    handler = {"estimator": "score-function-baseline", "role": "guide"}
    from pyro_lvm.infer.discrete.estimators import with_estimator

    guide = with_estimator(pair.guide, handler)
    pyro.set_rng_seed(0)
    loss = GraphELBO().differentiable_loss(pair.model, guide, x)
    ours = grads_of(loss, params)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    value = pyro.infer.TraceGraph_ELBO().loss_and_grads(pair.model, guide, x)
    assert math.isclose(float(loss.detach()), value, rel_tol=1e-5)
    for g, p in zip(ours, params):
        assert torch.allclose(g, p.grad, rtol=1e-5, atol=1e-6)


def test_straight_through_forward_is_exactly_one_hot_and_has_gradient():
    logits = torch.randn(50, 7, requires_grad=True)
    q = GumbelSoftmaxCategorical(logits, temperature=0.3, hard=True)
    z = q.rsample()
    assert set(z.unique().tolist()) <= {0.0, 1.0}
    assert bool((z.sum(-1) == 1).all())
    # log_prob needs only the value: a clone (which loses any cached relaxed sample) is fine.
    assert torch.isfinite(q.log_prob(z.clone())).all()
    (z * torch.randn(7)).sum().backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0


def test_straight_through_values_reach_the_decoder_one_hot():
    pair = CategoricalVAE(64, 4, 5, hidden=(16,), estimator="straight-through", temperature=0.2)
    x = load_digits_data().train[:8]
    model, guide = pair.objective().wrap(pair.model, pair.guide)
    trace = pyro.poutine.trace(guide).get_trace(x)
    z = trace.nodes["z"]["value"]
    assert z.shape == (8, 4, 5) and bool(((z == 0) | (z == 1)).all()) and bool((z.sum(-1) == 1).all())


@settings(max_examples=20, deadline=None)
@given(tau=st.floats(0.1, 2.0), scale=st.sampled_from([1.0, 30.0]),
       estimator=st.sampled_from(["gumbel", "gumbel-concrete", "straight-through"]))
def test_relaxed_losses_finite_down_to_tau_0_1(tau, scale, estimator):
    torch.manual_seed(0)
    pair = CategoricalVAE(64, 6, 10, hidden=(16,), estimator=estimator, temperature=tau)
    with torch.no_grad():  # sharp posteriors make relaxed components underflow in float32
        pair.encoder[-1].weight.mul_(scale)
    x = load_digits_data().train[:64]
    loss = pair.objective().differentiable_loss(pair.model, pair.guide, x)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in pair.parameters() if p.grad is not None)


def test_concrete_density_matches_torch_where_torch_is_finite():
    torch.manual_seed(4)
    logits = torch.randn(200, 6)
    ours = ConcreteCategorical(logits, 0.7)
    value = ours.rsample()
    ref = torch.distributions.RelaxedOneHotCategorical(torch.tensor(0.7), logits=logits).log_prob(value)
    assert torch.allclose(ours.log_prob(value), ref, rtol=1e-4, atol=1e-3)


def test_temperature_annealing_schedule_and_fit_integration():
    anneal = TemperatureAnnealing(rate=0.01, min_temperature=0.5)
    assert anneal.temperature(0) == 1.0
    assert math.isclose(anneal.temperature(50), math.exp(-0.5))
    assert anneal.temperature(10_000) == 0.5
    pair = CategoricalVAE(64, 3, 4, hidden=(8,))
    objective = pair.objective()
    history = fit(pair, load_digits_data().train[:200], epochs=2, batch_size=50, elbo=objective, callbacks=[anneal])
    assert math.isclose(objective.temperature, math.exp(-0.01 * 7))   # set before the 8th step
    assert math.isclose(history["temperature"][-1], math.exp(-0.01 * 7))


# ----------------------------------------------------------------------------- M2

def test_m2_enumerated_beats_sampled_y_with_few_labels():
    data = load_digits_data()
    x_u, x_l, y_l = split_labelled(data.train, data.train_labels, 50, 10, seed=0)
    accuracy = {}
    for estimator in ("enumerate", "score-function"):
        pyro.clear_param_store()
        pair = SSVAE(64, 10, z_dim=8, hidden=(64,), y_estimator=estimator)
        loader = SemiSupervisedBatches(x_u, x_l, y_l, 100, 20, seed=0).loader()
        fit(pair, loader, elbo=pair.objective(), epochs=6, lr=3e-3, seed=0)
        accuracy[estimator] = pair.accuracy(data.valid, data.valid_labels)
    assert accuracy["enumerate"] > 0.3
    assert accuracy["enumerate"] > accuracy["score-function"] + 0.15


def test_split_labelled_is_balanced_and_disjoint():
    data = load_digits_data()
    x_u, x_l, y_l = split_labelled(data.train, data.train_labels, 30, 10)
    assert len(x_l) == 30 and len(x_u) == len(data.train) - 30
    assert torch.bincount(y_l, minlength=10).tolist() == [3] * 10


# ----------------------------------------------------------------------------- a user's own pair

class TwoSitePair(nn.Module):
    """Written as a user would: two one-hot latents, guide logits as pyro.param sites."""

    def model(self, x):
        with pyro.plate("data", len(x)):
            a = pyro.sample("a", dist.OneHotCategorical(logits=torch.zeros(3)))
            b = pyro.sample("b", dist.OneHotCategorical(logits=torch.zeros(2)))
            loc = a @ torch.tensor([-2.0, 0.0, 2.0]) + b @ torch.tensor([-1.0, 1.0])
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    def guide(self, x):
        wa = pyro.param("wa", torch.zeros(3))
        wb = pyro.param("wb", torch.zeros(2))
        with pyro.plate("data", len(x)):
            pyro.sample("a", dist.OneHotCategorical(logits=wa * x.unsqueeze(-1)))
            pyro.sample("b", dist.OneHotCategorical(logits=wb * x.unsqueeze(-1)))


def test_harness_on_a_user_pair_with_exact_reference(tmp_path):
    x = torch.tensor([-2.5, -1.0, 0.3, 1.2, 3.0])
    pair = TwoSitePair()
    cmp = compare_estimators(pair, x, ["enumerate", "score-function", "gumbel"], temperatures=[0.5],
                             repeats=400, curve_steps=4, curve_every=2)
    assert cmp.latent_size == 6 and cmp.groups == {"wa": ["wa"], "wb": ["wb"]}
    # brute force over the 6 joint values
    wa, wb = pyro.param("wa").detach(), pyro.param("wb").detach()
    elbo = 0.0
    for i, j in itertools.product(range(3), range(2)):
        lq = torch.log_softmax(wa * x[:, None], -1)[:, i] + torch.log_softmax(wb * x[:, None], -1)[:, j]
        lp = dist.Normal(torch.tensor([-2.0, 0.0, 2.0])[i] + torch.tensor([-1.0, 1.0])[j], 1.0).log_prob(x)
        elbo += float((lq.exp() * (lp + math.log(1 / 6) - lq)).sum())
    assert math.isclose(cmp.exact_elbo, elbo, rel_tol=1e-5)
    assert cmp.row("enumerate").trace_cov == 0
    assert cmp.row("score-function").max_abs_z < 4.0
    assert cmp.row("gumbel").curve[-1]["step"] == 4
    assert "| score-function |" in cmp.to_markdown()
    cmp.to_json(tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text())["rows"][0]["estimator"] == "enumerate"
    assert cmp.to_csv().splitlines()[0].startswith("estimator,temperature,elbo")
    assert {p.name for p in cmp.plot(tmp_path)} == {"variance_by_estimator.png", "variance_vs_temperature.png",
                                                    "elbo_vs_time.png"}


# ----------------------------------------------------------------------------- bad input

def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match="n_classes must be an int >= 2, got 1"):
        CategoricalVAE(64, 4, 1)
    with pytest.raises(ValueError, match="n_classes"):
        CategoricalMixture(1)
    with pytest.raises(ValueError, match="unknown estimator 'reinforce'"):
        DiscreteELBO("reinforce")
    with pytest.raises(ValueError, match="temperature must be a positive finite number, got"):
        DiscreteELBO("gumbel", temperature=0.0)
    with pytest.raises(ValueError, match="temperature must be a positive finite number, got"):
        CategoricalVAE(64, 2, 3, temperature=-1)
    with pytest.raises(ValueError, match="temperature must be a positive finite number, got"):
        TemperatureAnnealing(min_temperature=0)
    objective = DiscreteELBO("gumbel")
    with pytest.raises(ValueError, match="temperature must be a positive finite number, got"):
        objective.temperature = float("nan")
    # enumeration of a latent space too large: refused with its size
    with pytest.raises(ValueError, match=r"10\^20 = 1e\+20"):
        CategoricalVAE(64, 20, 10, estimator="enumerate")
    big = CategoricalVAE(64, 20, 10, hidden=(8,))
    x = load_digits_data().train[:4]
    assert enumeration_size(big, x) == (1e20, [])
    with pytest.raises(ValueError, match="1e\\+20 joint values"):
        check_enumerable(big, x)
    with pytest.raises(ValueError, match="1e\\+20 joint values"):
        DiscreteELBO("enumerate").differentiable_loss(big.model, big.guide, x)
    with pytest.raises(ValueError, match="exact gradient requested"):
        compare_estimators(big, x, ["score-function"], exact=True)
    # enumeration of a continuous site
    vae = VAE(64, 2, hidden=(8,))
    with pytest.raises(ValueError, match="site 'z' is not discrete"):
        DiscreteELBO("enumerate", sites=["z"]).differentiable_loss(vae.model, vae.guide, x)
    with pytest.raises(ValueError, match=r"\['z'\] are continuous"):
        check_enumerable(vae, x)
    # a relaxed estimator on an integer-valued Categorical site
    def model(y):
        with pyro.plate("d", 2):
            pyro.sample("c", dist.Categorical(logits=torch.zeros(3)))

    with pytest.raises(ValueError, match="Categorical \\(integer index\\).*Write the site as OneHotCategorical"):
        DiscreteELBO("gumbel").differentiable_loss(model, model, None)
    with pytest.raises(ValueError, match="repeats must be an int >= 2"):
        compare_estimators(CategoricalMixture(3), torch.zeros(4, 2), ["score-function"], repeats=1)


# ----------------------------------------------------------------------------- tasks and CLI

def _args(task, **kw):
    parser = argparse.ArgumentParser()
    task.add_arguments(parser)
    argv = []
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        argv += [flag] if v is True else [flag] + [str(a) for a in (v if isinstance(v, list) else [v])]
    return parser.parse_args(argv)


def test_task_categorical_vae_runs(tmp_path):
    # (examples/categorical_vae.py is tested in tests/test_examples.py)
    from pyro_lvm.tasks import categorical_vae

    m = categorical_vae.main(_args(categorical_vae, epochs=1, latents=3, classes=3, hidden=16, samples=2, out=tmp_path))
    assert math.isfinite(m["test_neg_elbo"]) and m["test_neg_elbo"] > 0
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "samples.png").is_file()


def test_task_ss_vae_runs(tmp_path):
    from pyro_lvm.tasks import ss_vae

    m = ss_vae.main(_args(ss_vae, epochs=1, labels=20, hidden=16, z_dim=2, y_estimator="gumbel",
                           no_figures=True, out=tmp_path))
    assert 0.0 <= m["test_accuracy"] <= 1.0 and m["labels"] == 20


def test_task_and_cli_compare_estimators(tmp_path):
    from pyro_lvm.cli import main as cli_main
    from pyro_lvm.tasks import compare_estimators as task

    m = task.main(_args(task, classes=3, n=10, repeats=3, temperatures=0.5, no_figures=True, out=tmp_path / "a"))
    assert m["exact_available"] and [r["estimator"] for r in m["rows"]][0] == "enumerate"
    user = tmp_path / "my_pair.py"
    user.write_text(
        "import torch, pyro, pyro.distributions as dist\n"
        "class P:\n"
        "    def model(self, x):\n"
        "        with pyro.plate('d', len(x)):\n"
        "            z = pyro.sample('z', dist.OneHotCategorical(logits=torch.zeros(4)))\n"
        "            pyro.sample('x', dist.Normal(z @ torch.arange(4.), 1.), obs=x)\n"
        "    def guide(self, x):\n"
        "        w = pyro.param('w', torch.zeros(4))\n"
        "        with pyro.plate('d', len(x)):\n"
        "            pyro.sample('z', dist.OneHotCategorical(logits=w * x.unsqueeze(-1)))\n"
        "def make():\n"
        "    return P(), torch.tensor([0., 1., 2.5, 3.])\n")
    rc = cli_main(["compare-estimators", "--pair", f"{user}:make", "--estimators", "enumerate", "score-function",
                   "--repeats", "3", "--no-figures", "--out", str(tmp_path / "b")])
    assert rc == 0 and "| score-function |" in (tmp_path / "b" / "table.md").read_text()
    assert cli_main(["compare-estimators", "--pair", f"{user}:nothing", "--out", str(tmp_path / "c")]) == 2


@pytest.mark.parametrize("name", ["score-function", "score-function-baseline", "rloo", "gumbel"])
def test_a_sampling_estimator_samples_an_enumeration_marked_site_quietly(name):
    """A user's ``config_enumerate`` guide under a sampling estimator: the mark is dropped for
    that estimator (no Pyro warning) and the loss is the unmarked guide's, draw for draw."""
    import warnings

    from pyro.infer import config_enumerate

    class Pair:
        def model(self, x):
            p = pyro.param("p", torch.tensor(0.3), constraint=dist.constraints.unit_interval)
            with pyro.plate("d", x.shape[0]):
                c = pyro.sample("c", dist.OneHotCategorical(torch.stack([1 - p, p])))
                pyro.sample("x", dist.Normal(c[..., 1], 1.0), obs=x)

        def guide(self, x):
            q = pyro.param("q", torch.full((x.shape[0], 2), 0.5), constraint=dist.constraints.simplex)
            with pyro.plate("d", x.shape[0]):
                pyro.sample("c", dist.OneHotCategorical(q))

    x = torch.linspace(-1, 2, 8)
    losses = []
    for guide in (Pair().guide, config_enumerate(Pair().guide)):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any warning fails the test
            losses.append(DiscreteELBO(name, max_plate_nesting=1).loss(Pair().model, guide, x))
    assert losses[0] == losses[1]
