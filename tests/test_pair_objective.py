"""One name for "this pair's default objective": ``objective()``, on every built-in pair, and
``fit`` (so the ``train FILE.py:FUNCTION`` command too) trains with it when given no ``elbo``."""

import importlib
import inspect
import pkgutil

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from torch import nn

import pyro_lvm.models
from pyro_lvm import Callback, fit
from pyro_lvm.infer import DiscreteELBO
from pyro_lvm.models.hmm import HMM, CategoricalEmission
from pyro_lvm.models.categorical_mixture import CategoricalMixture
from pyro_lvm.models.topic import LDA, ProdLDA
from pyro_lvm.models.vae import VAE


def built_in_pairs():
    """Every class in pyro_lvm.models with a model and a guide method (found, not listed)."""
    found = {}
    for info in pkgutil.walk_packages(pyro_lvm.models.__path__, "pyro_lvm.models."):
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and callable(getattr(cls, "model", None)) \
                    and callable(getattr(cls, "guide", None)) and not name.startswith("_"):
                found[f"{info.name.removeprefix('pyro_lvm.models.')}.{name}"] = cls
    return found


def test_the_pairs_are_found():
    names = set(built_in_pairs())
    for expected in ("vae.VAE", "vae.Autoencoder", "ppca.PPCA", "categorical_mixture.CategoricalMixture", "hmm.hmm.HMM",
                     "hmm.family.FactorialHMM", "topic.prodlda.ProdLDA", "topic.lda.LDA",
                     "categorical_vae.CategoricalVAE", "ss_vae.SSVAE", "text.sentence_vae.SentenceVAE",
                     "text.symbol_sequences.SymbolSequenceAutoencoder", "collapse_toy.SequenceVAE",
                     "attention_seq2seq.AttentionSeq2Seq"):
        assert expected in names


@pytest.mark.parametrize("name", sorted(built_in_pairs()))
def test_every_built_in_pair_has_an_objective(name):
    cls = built_in_pairs()[name]
    assert callable(getattr(cls, "objective", None)), f"{name} has no objective()"
    params = inspect.signature(cls.objective).parameters
    assert all(p.default is not inspect.Parameter.empty or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
               for n, p in params.items() if n != "self"), f"{name}.objective() needs arguments"


@pytest.mark.parametrize("pair, kind", [
    (VAE(6, 2, (8,)), Trace_ELBO),
    (CategoricalMixture(3, 2), DiscreteELBO),
    (ProdLDA(12, 3, hidden=8), pyro.infer.TraceMeanField_ELBO),
    (LDA(12, 3, assignments="enumerated", hidden=8), TraceEnum_ELBO),
    (HMM(CategoricalEmission(2, 4), inference="markov"), TraceEnum_ELBO),
])
def test_objective_returns_the_pairs_elbo(pair, kind):
    assert isinstance(pair.objective(), kind)


class Chosen(Callback):
    def on_train_begin(self, state):
        self.elbo = state.elbo


def user_pair_file(folder):
    """A pair of the user's (``USER_FILE``, below) written to ``folder``; its objective() marks
    each call in ``my_pair.objective-used``."""
    path = folder / "my_pair.py"
    path.write_text(USER_FILE)
    return path, folder / "my_pair.objective-used"


def test_fit_trains_with_the_pairs_objective_when_given_none(tmp_path):
    """A pair of the user's whose objective() marks its calls; and a built-in pair whose
    objective is not the one fit would pick itself (Trace_ELBO)."""
    from pyro_lvm.tasks.user_pair import load_user_pair

    path, mark = user_pair_file(tmp_path)
    pair, x = load_user_pair(f"{path}:make")
    fit(pair, x, epochs=2, batch_size=10, progress=False)
    assert mark.read_text() == "x" * 4                         # 2 epochs of 2 steps, all through it
    seen = Chosen()
    mixture = CategoricalMixture(3, 2)
    fit(mixture, CategoricalMixture.simulate(12, 3, seed=0)[:, :2], epochs=1, batch_size=6, progress=False,
        callbacks=[seen])
    assert isinstance(seen.elbo.inner, DiscreteELBO) and seen.elbo.inner.estimator == "enumerate"


def test_a_bad_objective_is_refused_with_the_pairs_name():
    class Odd(nn.Module):
        def model(self, x):
            pyro.sample("x", dist.Normal(0.0, 1.0).expand(x.shape).to_event(2), obs=x)

        def guide(self, x):
            pass

        def objective(self):
            return "trace"

    with pytest.raises(TypeError, match=r"Odd.objective\(\) must return"):
        fit(Odd(), torch.zeros(4, 2), epochs=1, batch_size=2, progress=False)


USER_FILE = '''
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from torch import nn

MARK = Path(__file__).with_suffix(".objective-used")


class Marking(pyro.infer.TraceMeanField_ELBO):
    def differentiable_loss(self, model, guide, *args, **kwargs):
        with MARK.open("a") as f:
            f.write("x")
        return super().differentiable_loss(model, guide, *args, **kwargs)


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.loc = nn.Linear(2, 1)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z.unsqueeze(-1), 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.loc(x).squeeze(-1), 1.0))

    def objective(self):
        return Marking()


def make():
    return Pair(), torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
'''


def test_train_file_function_uses_the_pairs_objective(tmp_path, capsys):
    """``pyro-lvm train FILE.py:FUNCTION`` without ``--estimator`` trains with the pair's objective()."""
    from pyro_lvm.cli import main as cli_main

    path, mark = user_pair_file(tmp_path)
    assert cli_main(["train", f"{path}:make", "--epochs", "1", "--samples", "2", "--batch-size", "8",
                     "--out", str(tmp_path / "run")]) == 0
    assert mark.read_text().startswith("xx")                   # the 18 training datapoints: 3 steps, and validation
