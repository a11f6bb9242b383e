"""The Gaussian VAE and the autoencoder: shapes, likelihoods, bad input, learning."""

import pyro
import pytest
import torch

from pyro_lvm import elbo_terms, fit, set_seed
from pyro_lvm.models import VAE, Autoencoder
from pyro_lvm.training.loop import evaluate_loss


@pytest.mark.parametrize("architecture, x_dim", [("mlp", 64), ("conv", 784)])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_shapes_and_finite_loss(architecture, x_dim, likelihood):
    set_seed(0)
    vae = VAE(x_dim, 5, (32,), likelihood=likelihood, architecture=architecture)
    x = torch.rand(3, x_dim).round()
    loss = pyro.infer.Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    assert loss.shape == () and bool(torch.isfinite(loss))
    assert vae.reconstruct(x).shape == (3, x_dim)
    assert vae.sample(4).shape == (4, x_dim)
    # networks accept extra leading dims (vectorised importance samples)
    assert vae.likelihood_dist(torch.zeros(2, 3, 5)).batch_shape == (2, 3)


def test_interpolation_endpoints_decode_the_two_codes():
    set_seed(0)
    vae = VAE(64, 4, (16,))
    a, b = torch.rand(2, 64).round()
    path = vae.interpolate(a, b, steps=5)
    assert path.shape == (5, 64)
    assert torch.allclose(path[0], vae.reconstruct(a[None])[0])
    assert torch.allclose(path[-1], vae.reconstruct(b[None])[0])


def test_meanfield_and_trace_elbo_agree_in_expectation():
    set_seed(0)
    vae = VAE(64, 4, (16,))
    x = torch.rand(50, 64).round()
    mc = sum(pyro.infer.Trace_ELBO().loss(vae.model, vae.guide, x) for _ in range(200)) / 200
    analytic = sum(pyro.infer.TraceMeanField_ELBO().loss(vae.model, vae.guide, x) for _ in range(200)) / 200
    assert abs(mc - analytic) / abs(analytic) < 0.01


def test_vae_and_autoencoder_learn_digits():
    from pyro_lvm.data import load_digits_data

    data = load_digits_data()
    results = {}
    for cls in (VAE, Autoencoder):
        set_seed(0)
        model = cls(64, 6, (64,))
        before = evaluate_loss(model, data.valid, pyro.infer.Trace_ELBO())
        fit(model, data.train, epochs=8, batch_size=64, lr=3e-3, progress=False)
        results[cls.__name__] = (before, evaluate_loss(model, data.valid, pyro.infer.Trace_ELBO()))
    for name, (before, after) in results.items():
        assert after < 0.7 * before, name
    # with no KL to pay, the autoencoder reconstructs better than the VAE's whole ELBO
    assert results["Autoencoder"][1] < results["VAE"][1]


@pytest.mark.parametrize("x, message", [
    (torch.rand(3, 10), r"shape \(batch, 64\)"),
    (torch.ones(3, 64, dtype=torch.long), "floating-point"),
    (torch.full((3, 64), 1.5), r"outside \[0, 1\]"),
    (torch.full((3, 64), float("nan")), "NaN"),
    (torch.rand(64), r"shape \(batch, 64\)"),
])
def test_bad_input_is_named(x, message):
    vae = VAE(64, 4, (16,))
    for method in (vae.model, vae.guide, vae.encode):
        with pytest.raises(ValueError, match=message):
            method(x)


def test_fit_validates_the_first_batch_through_the_model():
    # fit() checks finiteness itself; the range check for a Bernoulli comes from the model,
    # which validates while Pyro validation is on (the first step).
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        fit(VAE(64, 4, (16,)), torch.full((8, 64), 2.0), epochs=1, progress=False)


def test_gaussian_likelihood_accepts_values_outside_unit_interval():
    vae = VAE(8, 2, (8,), likelihood="gaussian")
    vae.model(torch.randn(4, 8) * 3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(likelihood="poisson"), "likelihood"),
    (dict(architecture="transformer"), "architecture"),
    (dict(z_dim=0), "z_dim"),
    (dict(architecture="conv", x_dim=64), "28x28"),
])
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VAE(**{"x_dim": 64, **kwargs})


def test_elbo_terms_on_vae_are_consistent():
    set_seed(0)
    vae = VAE(64, 4, (16,))
    x = torch.rand(10, 64).round()
    t = elbo_terms(vae, x, num_samples=4)
    assert t["elbo"].shape == (10,) and bool((t["kl"] > 0).all())
    assert torch.allclose(t["elbo"], t["reconstruction"] - t["kl"])
