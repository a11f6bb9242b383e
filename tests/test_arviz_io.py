"""ArviZ converter: draws from a guide into InferenceData, on a conjugate model with a known
posterior and on the topic models; bad input."""

import math

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_lvm.evaluation.arviz_io import to_inference_data
from pyro_lvm.models.topic import LDA, ProdLDA


class ConjugateNormal(nn.Module):
    """x_ij ~ N(mu_i, 1), mu_i ~ N(0, 1); the guide is the exact posterior N(sum_j x_ij / (n+1), 1/(n+1))."""

    def model(self, x):                              # x: (groups, n)
        with pyro.plate("groups", x.shape[0]):
            mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
            pyro.deterministic("mu2", 2 * mu)
            with pyro.plate("obs", x.shape[1], dim=-2):
                pyro.sample("x", dist.Normal(mu, 1.0), obs=x.t())

    def guide(self, x):
        n = x.shape[1]
        with pyro.plate("groups", x.shape[0]):
            pyro.sample("mu", dist.Normal(x.sum(1) / (n + 1), (1.0 / (n + 1)) ** 0.5))


def test_draws_match_the_known_posterior_with_named_dims():
    x = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, -2.0]])
    idata = to_inference_data(ConjugateNormal(), x, ["mu", "mu2"], num_samples=4000,
                              dims={"mu": ["group"], "mu2": ["group"]}, coords={"group": ["a", "b"]})
    post = idata.posterior
    assert post["mu"].dims == ("chain", "draw", "group") and post["mu"].shape == (1, 4000, 2)
    assert list(post["group"].values) == ["a", "b"]
    mean, sd = post["mu"].mean(("chain", "draw")).values, post["mu"].std(("chain", "draw")).values
    se = 0.5 / math.sqrt(4000)
    assert mean == pytest.approx([6 / 4, -3 / 4], abs=5 * se) and sd == pytest.approx([0.5, 0.5], rel=0.05)
    assert torch.allclose(torch.as_tensor(post["mu2"].values), 2 * torch.as_tensor(post["mu"].values))
    summary = az.summary(idata, var_names=["mu"], kind="stats")
    assert list(summary.index) == ["mu[a]", "mu[b]"]


def test_posterior_predictive_and_observed_data():
    x = torch.randn(2, 5)
    idata = to_inference_data(ConjugateNormal(), x, ["mu"], num_samples=50, posterior_predictive=True,
                              dims={"x": ["point", "group"]})
    assert idata.posterior_predictive["x"].shape == (1, 50, 5, 2)
    assert torch.allclose(torch.as_tensor(idata.observed_data["x"].values), x.t())
    # resampled, not copied from the data
    assert not torch.allclose(torch.as_tensor(idata.posterior_predictive["x"].values[0, 0]), x.t())


@pytest.mark.parametrize("kwargs, message", [
    (dict(sites=["nu"]), r"site 'nu' is not in the model; its sites are \['mu', 'mu2', 'x'\]"),
    (dict(sites=["x"]), "is observed"),
    (dict(sites=["mu"], posterior_predictive=["mu"]), "not observed sites"),
    (dict(sites=["mu"], dims={"mu": ["a", "b"]}), "does not fit dims"),
    (dict(sites=["mu"], dims={"typo": ["a"]}), "not a site of the model"),
    (dict(sites=[]), "at least one"),
])
def test_bad_requests_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        to_inference_data(ConjugateNormal(), torch.randn(2, 3), num_samples=3, **kwargs)


@pytest.mark.parametrize("make", [lambda: ProdLDA(12, 3, hidden=8), lambda: ProdLDA(12, 3, hidden=8, posterior="dirichlet"),
                                  lambda: LDA(12, 3, assignments="collapsed", hidden=8),
                                  lambda: LDA(12, 3, assignments="enumerated", hidden=8)])
def test_topic_models_convert_and_summarise(make):
    model = make()
    model.train()
    counts = torch.poisson(torch.full((4, 12), 1.5))
    idata = to_inference_data(model, counts, ["theta"], num_samples=30, dims={"theta": ["document", "topic"]},
                              coords={"topic": ["t0", "t1", "t2"]})
    theta = torch.as_tensor(idata.posterior["theta"].values)
    assert theta.shape == (1, 30, 4, 3)
    assert torch.allclose(theta.sum(-1), torch.ones(1, 30, 4), atol=1e-5)   # proportions on the simplex
    assert az.summary(idata, kind="stats").shape == (12, 4)
    assert model.training                                                    # mode restored


def test_prodlda_posterior_predictive_keeps_document_lengths():
    model = ProdLDA(12, 3, hidden=8)
    counts = torch.poisson(torch.full((4, 12), 1.5))
    idata = to_inference_data(model, counts, ["theta"], num_samples=7, posterior_predictive=["words"],
                              dims={"words": ["document", "word"]})
    lengths = torch.as_tensor(idata.posterior_predictive["words"].values).sum(-1)
    assert torch.equal(lengths, counts.sum(-1).expand(1, 7, 4))


def test_bayesian_hmm_transition_rows_convert_and_summarise():
    from pyro_lvm import fit
    from pyro_lvm.models.hmm import HMM, CategoricalEmission

    torch.manual_seed(0)
    words = torch.randint(0, 6, (10, 7))
    hmm = HMM(CategoricalEmission(3, 6), parameters="bayes")
    fit(hmm, words, elbo=hmm.objective(), epochs=2, batch_size=10, lr=0.05)
    idata = to_inference_data(hmm, words, ["trans"], num_samples=50,
                              dims={"trans": ["from_state", "to_state"]},
                              coords={"from_state": ["s0", "s1", "s2"], "to_state": ["s0", "s1", "s2"]})
    post = idata.posterior["trans"]
    assert post.shape == (1, 50, 3, 3) and list(post.coords["from_state"].values) == ["s0", "s1", "s2"]
    assert np.allclose(post.sum("to_state"), 1.0, atol=1e-5)  # every draw is a stochastic matrix
    summary = az.summary(idata, kind="stats")
    assert len(summary) == 9 and summary["mean"].between(0, 1).all()
