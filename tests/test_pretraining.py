"""Li et al.'s recipe on pairs written here: autoencoder pretraining (beta = 0), a decoder
reset chosen by the encoder/decoder split, free bits; checkpoints, resume and bad input."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_lvm import fit
from pyro_lvm.infer import FreeBitsELBO, KLScaledELBO
from pyro_lvm.infer.pretraining import PretrainedHistory, decoder_parameters, pretrain_and_fit
from pyro_lvm.training.runs import RunFolderError
from pyro_lvm.training.loop import evaluate_loss
from pyro_lvm.validation import InvalidArgumentError

X = torch.randn(64, 6, generator=torch.Generator().manual_seed(0))  # not the global RNG: its state depends on test order


class SharedVAE(nn.Module):
    """Gaussian VAE whose encoder and decoder share an input layer (like a shared word embedding)."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(6, 6)
        self.enc = nn.Linear(6, 4)
        self.dec = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 6))

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
            loc = self.dec(z) + self.shared.bias  # the decoder reads the shared layer too
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.enc(torch.tanh(self.shared(x))).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def param_pair():
    """Bare pyro.param pair: a linear decoder W, an amortised encoder A."""

    class Pair:
        def model(self, x):
            w = pyro.param("W", lambda: torch.randn(2, 6) * 0.1)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(z @ w, 1.0).to_event(1), obs=x)

        def guide(self, x):
            a = pyro.param("A", lambda: torch.randn(6, 2) * 0.1)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(x @ a, 0.5).to_event(1))

    return Pair()


def _values(named):
    return {n: p.detach().clone() for n, p in named}


def test_split_keeps_shared_parameters_and_finds_bare_params():
    vae = SharedVAE()
    names = [n for n, _ in decoder_parameters(vae, X[:8])]
    assert names == ["dec.0.weight", "dec.0.bias", "dec.2.weight", "dec.2.bias"]
    assert "shared.bias" in [n for n, _ in decoder_parameters(vae, X[:8], keep_shared=False)]
    assert [n for n, _ in decoder_parameters(param_pair(), X[:8])] == ["pyro.param 'W'"]


def test_pretraining_is_fit_with_the_kl_switched_off_then_training_with_free_bits():
    torch.manual_seed(0)
    vae = SharedVAE()
    torch.manual_seed(0)
    twin = SharedVAE()
    twin_decoder = {n: p.detach().clone() for n, p in twin.dec.named_parameters()}
    base = pyro.infer.TraceMeanField_ELBO()
    history = pretrain_and_fit(vae, X, X, pretrain_epochs=3, epochs=2, free_bits=0.3, batch_size=16, lr=1e-2,
                               elbo=base, seed=4)
    assert isinstance(history, PretrainedHistory) and len(history.pretraining) == 3 and len(history) == 2
    assert history.reset == ["dec.0.weight", "dec.0.bias", "dec.2.weight", "dec.2.bias"]
    # Phase 1 is exactly fit() with beta = 0 (KLScaledELBO): the same losses, epoch by epoch.
    pre = fit(twin, X, X, elbo=KLScaledELBO(base, beta=0.0), epochs=3, batch_size=16, lr=1e-2, seed=4)
    assert history.pretraining["train_loss"] == pre["train_loss"]
    assert history.pretraining["valid_loss"] == pre["valid_loss"]
    # Phase 2 is exactly fit() with free bits from the decoder's initial values, the encoder kept.
    with torch.no_grad():
        for name, p in twin.dec.named_parameters():
            p.copy_(twin_decoder[name])
    after = fit(twin, X, X, elbo=FreeBitsELBO(0.3), epochs=2, batch_size=16, lr=1e-2, seed=4)
    assert history["train_loss"] == after["train_loss"] and history["valid_loss"] == after["valid_loss"]
    # ... whose loss charges each of the 2 dimensions at least 0.3 nats: the same draw of z costs
    # at least 0.6 nats more than with the KL switched off.
    pyro.set_rng_seed(0)
    hinged = evaluate_loss(vae, X, FreeBitsELBO(0.3))
    pyro.set_rng_seed(0)
    assert hinged >= evaluate_loss(vae, X, KLScaledELBO(base, beta=0.0)) + 0.6 - 1e-4


def test_initial_reset_restores_the_decoder_and_keeps_the_encoder(monkeypatch):
    torch.manual_seed(0)
    vae = SharedVAE()
    initial = {n: p.detach().clone() for n, p in vae.named_parameters()}
    after_reset = {}

    def spy_fit(pair, *args, elbo=None, **kwargs):  # record the parameters as the training phase starts
        if not isinstance(elbo, KLScaledELBO):
            after_reset.update({n: p.detach().clone() for n, p in pair.named_parameters()})
        return real_fit(pair, *args, elbo=elbo, **kwargs)

    import pyro_lvm.training.loop as loop  # the recipe imports fit from the loop when it runs

    real_fit = loop.fit
    monkeypatch.setattr(loop, "fit", spy_fit)
    pretrain_and_fit(vae, X, pretrain_epochs=2, epochs=1, batch_size=16, lr=1e-2)
    for name, value in initial.items():
        if name.startswith("dec."):
            assert torch.equal(after_reset[name], value), name      # back to the start
        else:
            assert not torch.equal(after_reset[name], value), name  # pretrained, kept (shared included)


def test_fresh_reset_draws_new_values_and_refuses_bare_params():
    torch.manual_seed(0)
    vae = SharedVAE()
    initial = vae.dec[0].weight.detach().clone()
    pretrain_and_fit(vae, X, pretrain_epochs=1, epochs=0, reset="fresh", batch_size=16)
    assert not torch.equal(vae.dec[0].weight, initial)
    with pytest.raises(InvalidArgumentError, match=r"reset='fresh' needs a module.*pyro.param 'W'.*reset='initial'"):
        pretrain_and_fit(param_pair(), X, pretrain_epochs=1, epochs=0, reset="fresh")


def test_bare_param_pair_initial_reset():
    pair = param_pair()
    pyro.infer.Trace_ELBO().loss(pair.model, pair.guide, X)  # creates W and A
    w0, a0 = pyro.param("W").detach().clone(), pyro.param("A").detach().clone()
    history = pretrain_and_fit(pair, X, pretrain_epochs=2, epochs=0, lr=0.05, batch_size=16)
    assert history.reset == ["pyro.param 'W'"]
    assert torch.equal(pyro.param("W").detach(), w0)       # the decoder is back where it started
    assert not torch.allclose(pyro.param("A").detach(), a0)  # the encoder keeps its pretraining


def test_a_pair_without_decoder_parameters_is_refused():
    class GuideOnly:
        def model(self, x):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 6), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

        def guide(self, x):
            a = pyro.param("A", torch.zeros(6))
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(x + a, 1.0).to_event(1))

    with pytest.raises(ValueError, match="no decoder parameters to reset.*reset=None"):
        pretrain_and_fit(GuideOnly(), X, pretrain_epochs=1, epochs=1)
    history = pretrain_and_fit(GuideOnly(), X, pretrain_epochs=1, epochs=1, reset=None)
    assert history.reset == [] and len(history) == 1


def test_checkpoints_resume_and_refuse(tmp_path):
    torch.manual_seed(0)
    kw = dict(pretrain_epochs=2, batch_size=16, lr=1e-2, seed=3, checkpoint_dir=tmp_path / "run")
    pretrain_and_fit(SharedVAE(), X, X, epochs=1, **kw)
    assert (tmp_path / "run" / "pretrain" / "last.pt").is_file() and (tmp_path / "run" / "last.pt").is_file()
    assert (tmp_path / "run" / "pretrain" / "decoder_initial.pt").is_file()
    with pytest.raises(RunFolderError, match="already holds a run"):
        pretrain_and_fit(SharedVAE(), X, X, epochs=1, **kw)
    torch.manual_seed(0)
    resumed = SharedVAE()
    history = pretrain_and_fit(resumed, X, X, epochs=3, resume=True, **kw)
    assert [e["epoch"] for e in history.epochs] == [0, 1, 2]
    torch.manual_seed(0)
    straight = SharedVAE()
    pretrain_and_fit(straight, X, X, epochs=3, **{**kw, "checkpoint_dir": tmp_path / "straight"})
    for (n, a), (_, b) in zip(resumed.named_parameters(), straight.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), n  # resuming the training phase = never stopping


def test_bad_arguments():
    for kwargs, words in (({"pretrain_epochs": 0}, "pretrain_epochs must be a positive int"),
                          ({"pretrain_epochs": 1, "reset": "random"}, "reset must be one of"),
                          ({"pretrain_epochs": 1, "free_bits": -1.0}, "free_bits must be")):
        with pytest.raises(InvalidArgumentError, match=words):
            pretrain_and_fit(SharedVAE(), X, **kwargs)
