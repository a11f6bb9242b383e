"""The public functions check their inputs (pyro_lvm.validation) and refuse bad values in their
own words: the error is pyro_lvm's, names the argument and shows the value, never a torch or
Pyro message from deep inside. Property tests draw the bad values."""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn

from pyro_lvm import elbo_terms, evaluation_report, fit, log_likelihood
from pyro_lvm.evaluation.diagnostics import active_units, collapse_report, kl_per_dimension, kl_per_site, mutual_information
from pyro_lvm.infer.discrete.comparison import compare_estimators
from pyro_lvm.models import VAE, Autoencoder
from pyro_lvm.models.collapse_toy import SequenceVAE
from pyro_lvm.models.categorical_vae import CategoricalVAE
from pyro_lvm.models.categorical_mixture import CategoricalMixture
from pyro_lvm.models.ss_vae import SSVAE
from pyro_lvm.models.topic import LDA, ProdLDA
from pyro_lvm.evaluation.psis import psis_khat
from pyro_lvm.validation import InvalidArgumentError, Integer, Number, Sizes, check

X = (torch.rand(12, 6, generator=torch.Generator().manual_seed(0)) < 0.5).float()


class UserPair(nn.Module):
    """A user's pair written here: pyro.module-free nn.Module with a local latent in the data plate."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(6, 4)
        self.dec = nn.Linear(2, 6)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

    def guide(self, x):
        h = self.enc(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(h[:, :2], nn.functional.softplus(h[:, 2:]) + 1e-3).to_event(1))


class ParamPair:
    """A pair built from bare pyro.param sites (no module)."""

    def model(self, x):
        loc = pyro.param("loc", torch.zeros(6))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(self, x):
        s = pyro.param("s", torch.ones(6), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x, s).to_event(1))


# Bad values by kind. None is bad wherever the argument is not optional.
not_positive_int = st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), st.booleans(), st.none(),
                             st.text(max_size=3), st.lists(st.integers(1, 3), max_size=2))
not_optional_positive_int = st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), st.booleans(),
                                      st.text(max_size=3))
not_non_negative_int = st.one_of(st.integers(max_value=-1), st.floats(allow_nan=True), st.booleans(), st.none(),
                                 st.text(max_size=3))
not_positive_number = st.one_of(st.floats(max_value=0.0), st.just(math.nan), st.just(math.inf), st.booleans(),
                                st.none(), st.text(max_size=3), st.lists(st.floats(0.1, 1.0), max_size=2))
not_a_device = st.one_of(st.sampled_from(["mps", "tpu", "gpu", "cuda:9", "", "cpu:x", "xla"]), st.integers(),
                         st.none(), st.floats())
not_sizes = st.one_of(st.integers(max_value=0), st.lists(st.integers(max_value=0), min_size=1, max_size=3),
                      st.lists(st.integers(1, 4), min_size=1, max_size=2).map(lambda v: v + [-4]),
                      st.text(min_size=1, max_size=3), st.floats(), st.just([2.5]))
not_a_pair = st.one_of(st.none(), st.integers(), st.text(max_size=3), st.just(nn.Linear(2, 2)), st.just(VAE))


def _fit(**kw):
    return fit(VAE(6, 2, (4,)), X, **{"epochs": 1, "progress": False, **kw})


# (entry point, argument, strategy of bad values). Each call must fail before any real work.
CASES = [
    (_fit, "batch_size", not_positive_int),
    (_fit, "epochs", not_non_negative_int),
    (_fit, "lr", not_positive_number),
    (_fit, "seed", st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32), st.floats(), st.text(max_size=2))),
    (_fit, "device", not_a_device),
    (_fit, "patience", not_optional_positive_int),
    (_fit, "clip_norm", st.one_of(st.floats(max_value=0.0), st.text(max_size=2), st.booleans())),
    (_fit, "checkpoint_every", not_positive_int),
    (lambda **kw: fit(kw.pop("pair"), X, epochs=1, progress=False), "pair", not_a_pair),
    (lambda **kw: log_likelihood(VAE(6, 2, (4,)), X, **kw), "num_samples", not_positive_int),
    (lambda **kw: log_likelihood(VAE(6, 2, (4,)), X, **kw), "batch_size", not_positive_int),
    (lambda **kw: log_likelihood(VAE(6, 2, (4,)), X, **kw), "chunk_size", not_optional_positive_int),
    (lambda **kw: log_likelihood(kw.pop("pair"), X), "pair", not_a_pair),
    (lambda **kw: elbo_terms(VAE(6, 2, (4,)), X, **kw), "batch_size", not_positive_int),
    (lambda **kw: elbo_terms(VAE(6, 2, (4,)), X, **kw), "num_samples", not_positive_int),
    (lambda **kw: elbo_terms(kw.pop("pair"), X), "pair", not_a_pair),
    (lambda **kw: evaluation_report(UserPair(), X, **kw), "num_samples", not_positive_int),
    (lambda **kw: evaluation_report(UserPair(), X, **kw), "batch_size", not_positive_int),
    (lambda **kw: kl_per_dimension(UserPair(), X, **kw), "batch_size", not_positive_int),
    (lambda **kw: kl_per_site(kw.pop("pair"), X), "pair", not_a_pair),
    (lambda **kw: active_units(UserPair(), X, **kw), "threshold",
     st.one_of(st.floats(max_value=-1e-9), st.just(math.nan), st.text(max_size=2), st.none())),
    (lambda **kw: mutual_information(UserPair(), X, **kw), "batch_size", not_positive_int),
    (lambda **kw: collapse_report(UserPair(), X, **kw), "batch_size", not_positive_int),
    (lambda **kw: psis_khat(UserPair(), X, **kw), "num_samples",
     st.one_of(st.integers(max_value=9), st.floats(), st.text(max_size=2), st.none())),
    (lambda **kw: psis_khat(UserPair(), X, **kw), "batch_size", not_positive_int),
    (lambda **kw: compare_estimators(CategoricalMixture(3), CategoricalMixture.simulate(5, 3), ["score-function"],
                                     **kw), "repeats", st.one_of(st.integers(max_value=1), st.floats(), st.none())),
    (lambda **kw: VAE(6, 2, **kw), "hidden", not_sizes),
    (lambda **kw: VAE(**{"x_dim": 6, "z_dim": 2, **kw}), "z_dim", not_positive_int),
    (lambda **kw: Autoencoder(**{"x_dim": 6, "z_dim": 2, **kw}), "x_dim", not_positive_int),
    (lambda **kw: CategoricalVAE(6, 2, 3, **kw), "hidden", not_sizes),
    (lambda **kw: CategoricalVAE(**{"x_dim": 6, **kw}), "n_latents", not_positive_int),
    (lambda **kw: SSVAE(6, 3, 2, **kw), "hidden", not_sizes),
    (lambda **kw: SSVAE(**{"x_dim": 6, "n_classes": 3, **kw}), "z_dim", not_positive_int),
    (lambda **kw: ProdLDA(12, 3, **kw), "hidden", not_positive_int),
    (lambda **kw: LDA(12, 3, **kw), "hidden", not_positive_int),
    (lambda **kw: SequenceVAE(**kw), "hidden", not_positive_int),
]


@pytest.mark.parametrize("call, argument, bad", CASES, ids=[f"{i}-{a}" for i, (_, a, _) in enumerate(CASES)])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bad_values_are_refused_in_our_words(call, argument, bad, data):
    value = data.draw(bad, label=argument)
    with pytest.raises(InvalidArgumentError) as err:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call(**{argument: value})
    assert argument in str(err.value)
    assert type(err.value).__module__ == "pyro_lvm.validation"


@pytest.mark.parametrize("entry", [
    lambda d: fit(VAE(6, 2, (4,)), d, epochs=1, progress=False),
    lambda d: log_likelihood(VAE(6, 2, (4,)), d, num_samples=2),
    lambda d: elbo_terms(UserPair(), d),
    lambda d: kl_per_site(UserPair(), d),
])
@pytest.mark.parametrize("data, words", [
    (torch.zeros(0, 6), "empty"),
    (torch.full((3, 6), math.nan), "NaN"),
    ((torch.zeros(3, 6), torch.zeros(4)), "different numbers of datapoints"),
    (np.zeros((3, 6), dtype=np.float32), "torch.as_tensor"),
    ("x.csv", "must be a tensor"),
])
def test_bad_data_is_refused_in_our_words(entry, data, words):
    with pytest.raises(InvalidArgumentError, match=words):
        entry(data)


@pytest.mark.parametrize("pair", [VAE(6, 2, (4,)), UserPair(), ParamPair()], ids=["VAE", "user module", "pyro.param"])
def test_float64_data_is_cast_to_the_pairs_dtype_with_a_warning(pair):
    x64 = X.double()
    with pytest.warns(UserWarning, match="torch.float64 but the pair's parameters are torch.float32"):
        history = fit(pair, x64, epochs=1, batch_size=6, progress=False)
    assert math.isfinite(history.last()["train_loss"])
    with pytest.warns(UserWarning, match="cast to torch.float32"):
        ll = log_likelihood(pair, x64, num_samples=3)
    assert ll.dtype == torch.float32 and bool(torch.isfinite(ll).all())


def test_a_float64_pair_keeps_float64_data():
    pair = UserPair().double()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no cast, no warning
        ll = log_likelihood(pair, X.double(), num_samples=3)
    assert ll.dtype == torch.float64


def test_log_likelihood_names_a_non_pair_like_fit():
    for entry in (fit, log_likelihood):
        with pytest.raises(TypeError, match="pair must be a model/guide pair, got a Linear with no callable 'model'"):
            entry(nn.Linear(2, 2), X)
    with pytest.raises(TypeError, match="got the class VAE; construct it first"):
        log_likelihood(VAE, X)


def test_two_functions_given_as_a_pair_are_told_how_to_be_one():
    """``(model, guide)`` as ``SVI`` takes it: the message says how to pass it, and that way works."""
    import types

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[-1]), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x / 2, 0.7).to_event(1))

    from pyro_lvm.evaluation.arviz_io import to_inference_data
    from pyro_lvm.inspection import inspect_pair

    for entry in (fit, log_likelihood, inspect_pair, lambda pair, x: to_inference_data(pair, x, sites=["z"])):
        with pytest.raises(TypeError, match=r"got a tuple of two functions; wrap them as "
                                            r"types\.SimpleNamespace\(model=model, guide=guide\)"):
            entry((model, guide), X)
    ll = log_likelihood(types.SimpleNamespace(model=model, guide=guide), X, num_samples=3)
    assert ll.shape == (X.shape[0],) and torch.isfinite(ll).all()


def test_messages_show_argument_value_and_fix():
    with pytest.raises(InvalidArgumentError, match=r"^lr must be a positive finite number, got '0.01'$"):
        _fit(lr="0.01")
    with pytest.raises(InvalidArgumentError, match=r"device must be .*got 'mps'; 'mps' is not available here"):
        _fit(device="mps")
    with pytest.raises(InvalidArgumentError, match=r"hidden must be .*got \(-4,\); entry 0 is -4 \(a layer needs"):
        VAE(6, 2, (-4,))
    with pytest.raises(InvalidArgumentError, match=r"chunk_size must be a positive int or None, got -1"):
        log_likelihood(VAE(6, 2, (4,)), X, chunk_size=-1)


@given(st.integers(-5, 5), st.integers(-5, 5))
def test_integer_rule_matches_its_description(minimum, value):
    rule = Integer(minimum)
    if value >= minimum:
        assert rule("n", value) == value
    else:
        with pytest.raises(InvalidArgumentError, match=f"n must be an? .*got {value}"):
            rule("n", value)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_number_rule_accepts_exactly_finite_positive_numbers(value):
    ok = math.isfinite(value) and value > 0
    if ok:
        assert Number()("x", value) == value
    else:
        with pytest.raises(InvalidArgumentError):
            Number()("x", value)


@given(st.lists(st.integers(-3, 5), max_size=4))
def test_sizes_rule(widths):
    if all(w >= 1 for w in widths):
        assert Sizes()("hidden", widths) == tuple(widths)
    else:
        with pytest.raises(InvalidArgumentError, match="a layer needs at least one unit"):
            Sizes()("hidden", widths)


def test_the_cli_adapter_is_the_same_rule():
    import argparse

    parse = Integer(1).cli
    assert parse("3") == 3
    for text in ("0", "-4", "x", "2.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="must be a positive int"):
            parse(text)
    with pytest.raises(KeyError, match="no rule"):
        check(nonsense=1)
