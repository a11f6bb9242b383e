"""The importance-sampled log-likelihood against models whose marginal is exact."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import given, settings, strategies as st

from pyro_lvm import elbo_terms, fit, log_likelihood, set_seed
from pyro_lvm.evaluation.metrics import log_weight_terms
from pyro_lvm.models import PPCA, Autoencoder


class ExactPosteriorPPCA(PPCA):
    """pPCA whose guide is the exact posterior: every importance weight equals p(x)."""

    def guide(self, x):
        post = self.exact_posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", post)


@settings(max_examples=20, deadline=None)
@given(x_dim=st.integers(1, 6), z_dim=st.integers(1, 3), sigma=st.floats(0.2, 2.0), k=st.integers(1, 50),
       seed=st.integers(0, 10_000))
def test_exact_posterior_guide_gives_exact_log_likelihood_for_any_k(x_dim, z_dim, sigma, k, seed):
    set_seed(seed)
    pair = ExactPosteriorPPCA(x_dim, z_dim, sigma)
    x = pair.marginal().sample((7,))
    estimate = log_likelihood(pair, x, num_samples=k, batch_size=4)
    assert torch.allclose(estimate, pair.exact_log_likelihood(x), atol=2e-4, rtol=1e-5)


@pytest.fixture(scope="module")
def trained_ppca():
    """A pPCA pair with an amortised diagonal guide: ELBO strictly below log p(x)."""
    pyro.clear_param_store()
    set_seed(1)
    pair = PPCA(6, 2, sigma=0.3)
    x = pair.marginal().sample((64,))
    fit(pair, x, epochs=40, batch_size=32, lr=2e-2, progress=False)
    return pair, x


def test_iwae_converges_to_exact_ppca_log_likelihood(trained_ppca):
    pair, x = trained_ppca
    exact = pair.exact_log_likelihood(x).mean().item()
    gaps = {}
    for k in (1, 10, 100, 3000):
        set_seed(0)
        gaps[k] = exact - log_likelihood(pair, x, num_samples=k).mean().item()
    assert gaps[1] > 0.05, "a diagonal guide should leave a visible gap at K=1"
    assert gaps[1] > gaps[10] > gaps[100] - 0.01
    assert abs(gaps[3000]) < 0.02


def test_elbo_below_iwae_below_exact(trained_ppca):
    pair, x = trained_ppca
    set_seed(0)
    elbo = elbo_terms(pair, x, num_samples=500)["elbo"].mean().item()
    iwae = log_likelihood(pair, x, num_samples=50).mean().item()
    exact = pair.exact_log_likelihood(x).mean().item()
    assert elbo < iwae < exact + 0.01


def test_elbo_terms_analytic_kl_matches_closed_form(trained_ppca):
    pair, x = trained_ppca
    terms = elbo_terms(pair, x, num_samples=1)
    assert float(terms["kl_analytic"]) == 1.0
    with torch.no_grad():
        loc, raw = pair.enc(x).chunk(2, dim=-1)
        scale = torch.nn.functional.softplus(raw) + 1e-3
    closed = (0.5 * (loc ** 2 + scale ** 2 - 1) - scale.log()).sum(-1)
    assert torch.allclose(terms["kl"], closed, atol=1e-5)
    assert torch.allclose(terms["elbo"], terms["reconstruction"] - terms["kl"])


def test_large_k_is_chunked_and_finite(trained_ppca):
    pair, x = trained_ppca
    ll = log_likelihood(pair, x[:3], num_samples=5000, chunk_size=700)
    assert ll.shape == (3,) and bool(torch.isfinite(ll).all())
    assert torch.allclose(ll, pair.exact_log_likelihood(x[:3]), atol=0.05)


def test_log_weights_shapes(trained_ppca):
    pair, x = trained_ppca
    t = log_weight_terms(pair, x[:5], num_samples=3)
    for key in ("log_lik", "log_prior", "log_q"):
        assert t[key].shape == (3, 5)
    assert t["latent_sites"] == ["z"]


def test_autoencoder_has_no_likelihood():
    ae = Autoencoder(4, 2, (8,))
    x = torch.rand(5, 4).round()
    with pytest.raises(ValueError, match="improper prior"):
        log_likelihood(ae, x, num_samples=2)
    with pytest.raises(NotImplementedError, match="no prior"):
        ae.sample(3)


class GlobalLatentPair:
    """A pair with a global latent outside the data plate, its guide the prior."""

    def model(self, x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(self, x):
        pyro.sample("mu", dist.Normal(0.0, 1.0))


def test_global_latent_draws_are_shared_across_the_set():
    from pyro_lvm.evaluation.metrics import set_log_likelihood

    # x_i = mu + noise with mu ~ N(0, 1) drawn from the guide (= the prior): jointly x ~ N(0, I + 11^T)
    x = torch.zeros(4)
    held = set_log_likelihood(GlobalLatentPair(), x, num_samples=1, global_samples=1000)
    exact_total = -0.5 * math.log(5.0) - 2 * math.log(2 * math.pi)
    assert held["global_sites"] == ["mu"]
    assert abs(held["total"] - exact_total) < 4 * held["se"] + 1e-3
    exact_point = -0.5 * math.log(2 * math.pi * 2.0)
    torch.testing.assert_close(held["pointwise"], torch.full((4,), exact_point), atol=0.05, rtol=0)


def test_bad_num_samples():
    with pytest.raises(ValueError, match="num_samples"):
        log_likelihood(PPCA(), torch.zeros(2, 5), num_samples=0)


def test_ppca_marginal_matches_numeric_integration_in_one_dimension():
    # 1-d x and z: integrate p(x|z) p(z) over a fine grid and compare with the closed form.
    set_seed(0)
    pair = PPCA(1, 1, sigma=0.7)
    pair.double()  # the grid sum needs float64 to be accurate to 1e-6
    x = torch.tensor([[0.3]], dtype=torch.float64)
    z = torch.linspace(-12, 12, 20001, dtype=torch.float64).unsqueeze(-1)
    with torch.no_grad():
        joint = dist.Normal(0, 1).log_prob(z).squeeze(-1) + dist.Normal(z @ pair.W.T + pair.b, 0.7).log_prob(x).squeeze(-1)
    numeric = torch.logsumexp(joint, 0) + math.log(float(z[1] - z[0]))
    assert abs(float(numeric) - float(pair.exact_log_likelihood(x))) < 1e-6
