"""Generic capabilities on pairs written the ways users write them (issue 14's regressions).

Each pair below is written here, in plain Pyro, in one of the idioms of Pyro's tutorials:
``pyro.module`` inside ``model`` and ``guide`` (on an ``nn.Module`` and on a plain class),
``config_enumerate`` guides, Bernoulli and Categorical latents, autoguides, global latents
next to local ones. Every test failed before the fix it guards.
"""

import math
import types

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO, Trace_ELBO, config_enumerate
from torch import nn

from pyro_lvm import Callback, fit, set_seed


# ----------------------------------------------------------------------------- pairs


class StudentVAE(nn.Module):
    """A VAE with a heavy-tailed prior, registering its networks with pyro.module (Pyro's VAE tutorial idiom)."""

    def __init__(self, x_dim=6, z_dim=2):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = nn.Linear(x_dim, 2 * z_dim)
        self.decoder = nn.Linear(z_dim, x_dim)

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.StudentT(3.0, x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 0.5).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        loc, raw = self.encoder(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))


class PlainClassPair:
    """Not an nn.Module: its networks reach Pyro only through pyro.module."""

    def __init__(self, x_dim=6, z_dim=2):
        self.z_dim = z_dim
        self.encoder = nn.Linear(x_dim, 2 * z_dim)
        self.decoder = nn.Linear(z_dim, x_dim)

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 0.5).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        loc, raw = self.encoder(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))


class GMMVAE(nn.Module):
    """Mixture-of-Gaussians VAE: an enumerated cluster y (config_enumerate) and a continuous code z."""

    def __init__(self, x_dim=6, z_dim=2, k=3):
        super().__init__()
        self.k, self.z_dim = k, z_dim
        self.means = nn.Parameter(torch.randn(k, z_dim))
        self.classify = nn.Linear(x_dim, k)
        self.encoder = nn.Linear(x_dim + k, 2 * z_dim)
        self.decoder = nn.Linear(z_dim, x_dim)

    def model(self, x):
        pyro.module("gmm", self)
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(self.k)))
            z = pyro.sample("z", dist.Normal(self.means[y], 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 0.5).to_event(1), obs=x)

    @config_enumerate
    def guide(self, x):
        pyro.module("gmm", self)
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(logits=self.classify(x)))
            one_hot = nn.functional.one_hot(y, self.k).to(x)
            shape = torch.broadcast_shapes(one_hot.shape[:-1], x.shape[:-1])  # y may be enumerated
            h = torch.cat([x.expand(shape + x.shape[-1:]), one_hot.expand(shape + (self.k,))], -1)
            loc, raw = self.encoder(h).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))


class SigmoidBeliefNet(nn.Module):
    """A sigmoid belief net: a vector of Bernoulli latents."""

    def __init__(self, x_dim=8, h=20):
        super().__init__()
        self.encoder = nn.Linear(x_dim, h)
        self.decoder = nn.Linear(h, x_dim)
        self.prior_logits = nn.Parameter(torch.zeros(h))

    def model(self, x):
        pyro.module("sbn", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(logits=self.prior_logits).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("sbn", self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(logits=self.encoder(x)).to_event(1))


def real_data(n=24, seed=0):
    return torch.randn(n, 6, generator=torch.Generator().manual_seed(seed))


def binary_data(n=24, seed=0):
    return (torch.rand(n, 8, generator=torch.Generator().manual_seed(seed)) < 0.4).float()


def tensors_of(pair):
    """Every trained number: the module state (when a Module) and the param store."""
    out = {f"pair/{k}": v.detach().clone() for k, v in pair.state_dict().items()} if isinstance(pair, nn.Module) else {}
    if isinstance(pair, PlainClassPair):
        for part in ("encoder", "decoder"):
            out.update({f"{part}/{k}": v.detach().clone() for k, v in getattr(pair, part).state_dict().items()})
    out.update({f"store/{k}": v.detach().clone() for k, v in pyro.get_param_store().items()})
    return out


class CountParams(Callback):
    def on_train_end(self, state):
        self.params = list(state.params)
        self.names = list(getattr(state, "param_names", []))


# ----------------------------------------------------------------------------- item 1: resume, parameters by name


@pytest.mark.parametrize("make,data", [(StudentVAE, real_data), (PlainClassPair, real_data),
                                       (GMMVAE, real_data), (SigmoidBeliefNet, binary_data)],
                         ids=["module-pair", "plain-class", "config-enumerate", "bernoulli"])
def test_resume_is_bit_identical_for_pairs_calling_pyro_module(make, data, tmp_path):
    x = data()
    pyro.clear_param_store()
    set_seed(1)
    full = make()
    h_full = fit(full, x, x[:8], epochs=3, batch_size=8, lr=1e-2, seed=4, progress=False)
    expected = tensors_of(full)

    pyro.clear_param_store()
    set_seed(1)
    fit(make(), x, x[:8], epochs=1, batch_size=8, lr=1e-2, seed=4, progress=False, checkpoint_dir=tmp_path)
    pyro.clear_param_store()  # a fresh process: nothing but the checkpoint
    set_seed(99)
    resumed = make()
    h = fit(resumed, x, x[:8], epochs=3, batch_size=8, lr=1e-2, seed=4, progress=False, checkpoint_dir=tmp_path,
            resume=True)
    assert h.epochs == h_full.epochs
    got = tensors_of(resumed)
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k


def test_a_second_pair_in_the_same_process_trains_only_its_own_parameters():
    x = real_data()
    fit(StudentVAE(), x, epochs=1, batch_size=8, progress=False)   # leaves its tensors in the param store
    second = StudentVAE()
    seen = CountParams()
    fit(second, x, epochs=1, batch_size=8, progress=False, callbacks=[seen])   # no clear_param_store() between
    own = list(second.parameters())
    assert len(seen.params) == len(own) == 4
    assert all(any(p is q for q in own) for p in seen.params)
    assert seen.names == ["encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"]
    # the param store now holds the tensors the module computes with, not the first pair's
    assert pyro.get_param_store().get_param("encoder$$$weight") is second.encoder.weight


def test_resume_maps_optimiser_state_by_name_and_names_a_mismatch(tmp_path):
    x = real_data()
    fit(StudentVAE(), x, epochs=1, batch_size=8, progress=False, checkpoint_dir=tmp_path)
    pyro.clear_param_store()

    class Wider(StudentVAE):
        def model(self, x):
            super().model(x)
            pyro.factor("penalty", -(pyro.param("extra", torch.zeros(2)) ** 2).sum())

    with pytest.raises(ValueError, match=r"only in the pair \['extra'\]"):
        fit(Wider(), x, epochs=2, batch_size=8, progress=False, checkpoint_dir=tmp_path, resume=True)


# ----------------------------------------------------------------------------- item 2: validation with any ELBO


@pytest.mark.parametrize("with_annealing", [False, True])
def test_validation_works_with_trace_enum_elbo(with_annealing):
    from pyro_lvm.infer import KLAnnealing

    x = real_data()
    set_seed(0)
    pair = GMMVAE()
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    callbacks = [KLAnnealing("linear", steps=4)] if with_annealing else []
    h = fit(pair, x, x[:8], elbo=elbo, epochs=2, batch_size=8, progress=False, callbacks=callbacks)
    assert len(h["valid_loss"]) == 2 and all(math.isfinite(v) for v in h["valid_loss"])
    # the logged value is the enumerated negative ELBO of the validation data (deterministic: y summed out,
    # z drawn; the same draw again gives the same number)
    pyro.set_rng_seed(3)
    a = TraceEnum_ELBO(max_plate_nesting=1).loss(pair.model, pair.guide, x[:8]) / 8
    pyro.set_rng_seed(3)
    from pyro_lvm.training.loop import evaluate_loss
    assert evaluate_loss(pair, x[:8], elbo) == pytest.approx(a, rel=1e-6)


# ----------------------------------------------------------------------------- item 10: enumeration marks


def test_default_elbo_enumerates_a_config_enumerate_guide():
    x = real_data()
    set_seed(0)
    h_default = fit(GMMVAE(), x, x[:8], epochs=2, batch_size=8, progress=False)
    set_seed(0)
    h_enum = fit(GMMVAE(), x, x[:8], epochs=2, batch_size=8, progress=False, elbo=TraceEnum_ELBO(max_plate_nesting=1))
    assert h_default.epochs == h_enum.epochs


def test_a_sampling_elbo_on_an_enumeration_marked_pair_says_what_to_pass():
    with pytest.raises(ValueError, match=r"\['y'\] are marked for enumeration.*Trace_ELBO samples them.*"
                                         r"TraceEnum_ELBO\(max_plate_nesting=1\)"):
        fit(GMMVAE(), real_data(), epochs=1, batch_size=8, progress=False, elbo=Trace_ELBO())


# ----------------------------------------------------------------------------- item 5: categorical activity, joint MI


def test_activity_of_a_categorical_site_is_the_variance_of_its_class_probabilities():
    from pyro_lvm.evaluation.diagnostics import active_units, unit_activity

    set_seed(0)
    pair, x = GMMVAE(), real_data(40)
    with torch.no_grad():
        pair.classify.weight.mul_(3.0)
        probs = torch.softmax(pair.classify(x), -1).double()
    activity = unit_activity(pair, x)
    assert activity["y"].shape == (3,) and bool(torch.isfinite(activity["y"]).all())
    torch.testing.assert_close(activity["y"], probs.var(0))
    assert active_units(pair, x, per_site=True)["y"] == int((probs.var(0) > 0.01).sum()) > 0


class ClusterBits(nn.Module):
    """q(y | x) q(z | x, y): a cluster and two bits whose guide depends on the cluster."""

    def __init__(self):
        super().__init__()
        self.classify = nn.Linear(2, 3)
        self.bits = nn.Parameter(4.0 * torch.randn(3, 2))
        self.mix = nn.Linear(2, 2)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(3)))
            z = pyro.sample("z", dist.Bernoulli(0.5 * x.new_ones(2)).to_event(1))
            pyro.sample("x", dist.Normal(z + y.unsqueeze(-1).to(x), 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(logits=2 * self.classify(x)))
            pyro.sample("z", dist.Bernoulli(logits=self.bits[y] + 0.3 * self.mix(x)).to_event(1))

    @torch.no_grad()
    def exact_mutual_information(self, x):
        """I(x; y, z) of the batch's aggregate posterior, by enumerating the 3 x 4 joint values."""
        qy = torch.softmax(2 * self.classify(x), -1)
        zs = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
        joint = torch.stack([qy[:, y:y + 1] * dist.Bernoulli(logits=(self.bits[y] + 0.3 * self.mix(x)).unsqueeze(1))
                             .log_prob(zs).sum(-1).exp() for y in range(3)], 1).reshape(x.shape[0], -1)
        return float((joint * (joint / joint.mean(0)).log()).sum(1).mean())


def test_mutual_information_uses_the_joint_guide():
    from pyro_lvm.evaluation.diagnostics import mutual_information

    set_seed(0)
    pair, x = ClusterBits(), 2 * torch.randn(8, 2)
    exact = pair.exact_mutual_information(x)
    estimates = []
    for seed in range(120):
        pyro.set_rng_seed(seed)
        estimates.append(mutual_information(pair, x, batch_size=8))
    est = torch.tensor(estimates)
    # Summing the sites' log q as if y and z were independent given x gave 0.40 here.
    assert abs(float(est.mean()) - exact) < 4 * float(est.std()) / math.sqrt(len(est)) + 0.005
    assert float(est.min()) >= 0.0


# ----------------------------------------------------------------------------- item 6: free bits on any site


def test_free_bits_sums_an_enumerated_site_out_exactly():
    from pyro_lvm.infer import FreeBitsELBO

    set_seed(0)
    pair, x = GMMVAE(), real_data(8)

    def loss_and_grads(elbo):
        pyro.set_rng_seed(3)
        pair.zero_grad()
        loss = elbo.differentiable_loss(pair.model, pair.guide, x)
        loss.backward()
        return float(loss.detach()), {n: p.grad.clone() for n, p in pair.named_parameters() if p.grad is not None}

    ref, g_ref = loss_and_grads(TraceEnum_ELBO(max_plate_nesting=1))
    got, g_got = loss_and_grads(FreeBitsELBO(0.0, analytic=False))      # lambda = 0: the plain ELBO
    assert got == pytest.approx(ref, rel=1e-6)
    for k in g_ref:
        torch.testing.assert_close(g_got[k], g_ref[k], rtol=1e-4, atol=1e-5)
    # the call: hinge only the continuous code, the enumerated cluster keeps its exact KL
    assert math.isfinite(loss_and_grads(FreeBitsELBO(0.5, sites="z"))[0])


class TinySBN(nn.Module):
    """Three Bernoulli latents: small enough to sum the free-bits objective over all 8 values."""

    def __init__(self):
        super().__init__()
        self.encoder, self.decoder = nn.Linear(4, 3), nn.Linear(3, 4)
        self.prior_logits = nn.Parameter(torch.randn(3))

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(logits=self.prior_logits).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(logits=self.encoder(x)).to_event(1))

    def exact_free_bits_loss(self, x, lam):
        zs = torch.tensor([[float(b) for b in f"{k:03b}"] for k in range(8)])           # (8, 3)
        q = dist.Bernoulli(logits=self.encoder(x).unsqueeze(1)).log_prob(zs).sum(-1).exp()  # (n, 8)
        rec = (q * dist.Bernoulli(logits=self.decoder(zs)).log_prob(x.unsqueeze(1)).sum(-1)).sum()
        kl = torch.distributions.kl_divergence(dist.Bernoulli(logits=self.encoder(x)),
                                               dist.Bernoulli(logits=self.prior_logits.expand(x.shape[0], 3)))
        return -rec + x.shape[0] * torch.clamp(kl.mean(0), min=lam).sum(), kl.mean(0)


def test_free_bits_gradient_on_bernoulli_latents_is_unbiased():
    from pyro_lvm.infer import FreeBitsELBO

    set_seed(0)
    pair, x = TinySBN(), (torch.rand(6, 4, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    params = list(pair.parameters())
    _, kl = pair.exact_free_bits_loss(x, 0.0)
    for lam in (0.0, float(kl.detach().median())):        # the plain ELBO, and a hinge with dims on both sides
        exact = torch.cat([g.reshape(-1) for g in torch.autograd.grad(pair.exact_free_bits_loss(x, lam)[0], params)])
        draws = []
        for _ in range(120):
            loss = FreeBitsELBO(lam).differentiable_loss(pair.model, pair.guide, x)
            draws.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
        g = torch.stack(draws)
        noise = float((g.var(0).sum() / len(g)).sqrt())
        assert float((g.mean(0) - exact).norm()) < 4 * noise + 1e-4, lam


def test_free_bits_logs_the_elbo_as_valid_loss_and_the_hinged_value_apart():
    from pyro_lvm.infer import FreeBitsELBO
    from pyro_lvm.training.loop import evaluate_loss

    set_seed(0)
    pair, x = StudentVAE(), real_data()
    elbo = FreeBitsELBO(3.0)                                   # far above the code's KL: the hinge is active
    h = fit(pair, x, x[:8], elbo=elbo, epochs=2, batch_size=8, progress=False)
    assert len(h["valid_loss"]) == len(h["valid_objective"]) == 2
    assert all(o > v for o, v in zip(h["valid_objective"], h["valid_loss"]))   # + n * (3 - KL) per dimension
    # valid_loss is -ELBO: the unhinged objective. The Student-t prior has no closed-form KL, so it
    # is Trace_ELBO's Monte Carlo estimate, draw for draw.
    pyro.set_rng_seed(7)
    plain = evaluate_loss(pair, x[:8], elbo.plain_elbo)
    pyro.set_rng_seed(7)
    assert plain == pytest.approx(evaluate_loss(pair, x[:8], Trace_ELBO()), rel=1e-5)


# ----------------------------------------------------------------------------- item 7: the CLI takes your file


def test_pyro_lvm_inspect_takes_a_user_file(tmp_path, capsys):
    from pyro_lvm import cli

    path = tmp_path / "my_pair.py"
    path.write_text(
        "import pyro, pyro.distributions as dist, torch\n"
        "class Coin:\n"
        "    def model(self, x):\n"
        "        p = pyro.sample('p', dist.Beta(2.0, 2.0))\n"
        "        with pyro.plate('data', x.shape[0]):\n"
        "            pyro.sample('x', dist.Bernoulli(p), obs=x)\n"
        "    def guide(self, x):\n"
        "        pyro.sample('p', dist.Beta(pyro.param('a', torch.tensor(2.0)), 2.0))\n"
        "def make():\n"
        "    return Coin(), torch.ones(5)\n")
    assert cli.main(["inspect", "--pair", f"{path}:make"]) == 0
    out = capsys.readouterr().out
    assert "Beta" in out and "Bernoulli" in out and '"missing_in_guide": []' in out
    assert cli.main(["inspect", "--pair", f"{path}:nope"]) == 2
    assert "defines no function 'nope'" in capsys.readouterr().err
    assert cli.main(["inspect"]) == 2
    assert "name one model" in capsys.readouterr().err


# ----------------------------------------------------------------------------- item 8: per-step KL weights


def test_a_cyclical_schedule_shows_in_the_history():
    from pyro_lvm.infer import KLAnnealing

    h = fit(StudentVAE(), real_data(), epochs=2, batch_size=4, progress=False,   # 6 steps per epoch
            callbacks=[KLAnnealing("cyclical", period=3, cycles=4, ratio=0.5)])
    for epoch in h.epochs:
        assert epoch["kl_weight_min"] == 0.0 and epoch["kl_weight_max"] == 1.0
        assert epoch["kl_weight"] == 1.0   # the last step's weight alone hides the cycles


# ----------------------------------------------------------------------------- item 9: MI is never negative


def test_mutual_information_is_never_negative_on_a_weak_bernoulli_code():
    from pyro_lvm.evaluation.diagnostics import mutual_information

    set_seed(0)
    pair, x = SigmoidBeliefNet(), binary_data(200)
    with torch.no_grad():
        pair.encoder.weight.mul_(0.05)   # a weak code: the MI is near 0, where the old estimates went negative
    for entropy in ("sample", "analytic"):
        values = []
        for seed in range(20):
            pyro.set_rng_seed(seed)
            values.append(mutual_information(pair, x, batch_size=200, entropy=entropy))
        assert min(values) >= 0.0, entropy
        assert max(values) < 0.1, entropy


def test_rao_blackwellised_mi_is_unbiased_for_bernoulli_latents():
    from pyro_lvm.evaluation.diagnostics import mutual_information

    set_seed(0)
    pair, x = TinySBN(), (torch.rand(8, 4, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    with torch.no_grad():
        zs = torch.tensor([[float(b) for b in f"{k:03b}"] for k in range(8)])
        q = dist.Bernoulli(logits=pair.encoder(x).unsqueeze(1)).log_prob(zs).sum(-1).exp()   # (n, 8)
        exact = float((q * (q / q.mean(0)).log()).sum(1).mean())
    est = []
    for seed in range(150):
        pyro.set_rng_seed(seed)
        est.append(mutual_information(pair, x, batch_size=8))
    est = torch.tensor(est)
    assert abs(float(est.mean()) - exact) < 4 * float(est.std()) / math.sqrt(len(est)) + 1e-3


# ----------------------------------------------------------------------------- item 12: global latents next to local ones


class BayesianBias(nn.Module):
    """x_i ~ N(z_i + b, 0.5^2): a per-datapoint code z_i ~ N(0, 1) next to a global decoder bias
    b ~ N(0, 1). The guide for z is the exact posterior given b, so only b is approximate."""

    sigma = 0.5

    def __init__(self):
        super().__init__()
        v = 1 + self.sigma ** 2
        self.b_loc = nn.Parameter(torch.tensor(0.3))
        self.b_raw = nn.Parameter(torch.tensor(-1.0))
        self.gain = nn.Parameter(torch.tensor(1 / v))
        self.z_scale = nn.Parameter(torch.tensor(self.sigma / math.sqrt(v)))

    def model(self, x):
        b = pyro.sample("b", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z + b, self.sigma), obs=x)

    def guide(self, x):
        b = pyro.sample("b", dist.Normal(self.b_loc, nn.functional.softplus(self.b_raw)))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.gain * (x - b), self.z_scale.abs()))

    @torch.no_grad()
    def exact(self, x):
        """Closed forms with b drawn from the guide: the set's log E_q(b) prod_i p(x_i | b), each
        datapoint's log E_q(b) p(x_i | b), and KL(q(b) || p(b))."""
        m, s = self.b_loc, nn.functional.softplus(self.b_raw)
        v = 1 + self.sigma ** 2
        n = x.shape[0]
        joint = dist.MultivariateNormal(m.expand(n), v * torch.eye(n) + s ** 2 * torch.ones(n, n)).log_prob(x)
        pointwise = dist.Normal(m, (v + s ** 2).sqrt()).log_prob(x)
        kl = torch.distributions.kl_divergence(dist.Normal(m, s), dist.Normal(0.0, 1.0))
        return float(joint), pointwise, float(kl)


def test_global_latents_are_drawn_from_the_guide_and_shared_across_the_set():
    from pyro_lvm import evaluation_report, log_likelihood
    from pyro_lvm.evaluation.metrics import elbo_terms, set_log_likelihood

    pair, x = BayesianBias(), torch.randn(6, generator=torch.Generator().manual_seed(0)) + 0.5
    joint, pointwise, kl = pair.exact(x)
    held = set_log_likelihood(pair, x, num_samples=2, global_samples=200)
    assert held["global_sites"] == ["b"]
    assert abs(held["total"] - joint) < 4 * held["se"] + 0.02
    torch.testing.assert_close(held["pointwise"], pointwise, atol=0.06, rtol=0)
    pyro.set_rng_seed(5)
    ll = log_likelihood(pair, x, num_samples=2, global_samples=50)
    pyro.set_rng_seed(5)
    torch.testing.assert_close(ll, set_log_likelihood(pair, x, num_samples=2, global_samples=50)["pointwise"])
    terms = elbo_terms(pair, x, num_samples=50)
    assert float(terms["kl_global"]) == pytest.approx(kl, rel=1e-5)        # analytic, charged once per set
    assert float(terms["elbo"].sum()) <= held["total"] + 4 * held["se"]       # Jensen: the set's ELBO is below
    report = evaluation_report(pair, x, num_samples=2, global_samples=100, psis_samples=None)
    assert report["kl_global"] == pytest.approx(kl, rel=1e-5)
    assert report["log_likelihood_set"] == pytest.approx(joint / 6, abs=0.03)


def test_collapse_diagnostics_read_the_local_sites_only():
    from pyro_lvm.evaluation.diagnostics import collapse_report

    pair, x = BayesianBias(), torch.randn(40, generator=torch.Generator().manual_seed(0))
    report = collapse_report(pair, x, batch_size=20)
    assert list(report["kl_per_site"]) == ["z"] and report["units"] == 1
    assert report["active_units"] == 1 and 0 < report["mi"] <= math.log(20)


# ----------------------------------------------------------------------------- item 11: autoguides


def coin_and_mean(x, y):
    """Two global latents: a coin's bias p and a location mu, seen through x_i and y_i."""
    p = pyro.sample("p", dist.Beta(2.0, 2.0))
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Bernoulli(p), obs=x)
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


class AutoguidePair:
    """``guide = AutoX(model)``, as Pyro's tutorials write it."""

    def __init__(self, guide_class):
        self.guide = guide_class(coin_and_mean)

    def model(self, x, y):
        return coin_and_mean(x, y)


def coin_data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, generator=g) < 0.3).float(), torch.randn(n, generator=g) + 1.0


AUTOGUIDES = ["AutoNormal", "AutoDelta", "AutoDiagonalNormal", "AutoLowRankMultivariateNormal", "AutoIAFNormal"]


@pytest.mark.parametrize("name", AUTOGUIDES)
def test_every_autoguide_trains_resumes_and_evaluates(name, tmp_path):
    from pyro.infer import autoguide

    from pyro_lvm import elbo_terms, evaluation_report, log_likelihood
    from pyro_lvm.evaluation.arviz_io import to_inference_data
    from pyro_lvm.infer import FreeBitsELBO
    from pyro_lvm.evaluation.metrics import set_log_likelihood

    make = lambda: AutoguidePair(getattr(autoguide, name))  # noqa: E731
    data = coin_data()
    valid = tuple(t[:8] for t in data)
    pyro.clear_param_store()
    full = make()
    h_full = fit(full, data, valid, epochs=3, batch_size=8, lr=0.05, progress=False)
    assert all(math.isfinite(v) for v in h_full["valid_loss"])
    expected = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}

    pyro.clear_param_store()
    fit(make(), data, valid, epochs=1, batch_size=8, lr=0.05, progress=False, checkpoint_dir=tmp_path)
    pyro.clear_param_store()
    resumed = make()
    h = fit(resumed, data, valid, epochs=3, batch_size=8, lr=0.05, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert h.epochs == h_full.epochs
    got = dict(pyro.get_param_store().items())
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k].detach(), expected[k]), k

    x, y = data
    if name == "AutoDelta":   # a point mass: no density, no ELBO; the plug-in likelihood still applies
        for fn in (elbo_terms, evaluation_report):
            with pytest.raises(ValueError, match="'p' is a point mass .*MAP guide .*no importance weights"):
                fn(resumed, data)
        p_hat, mu_hat = resumed.guide.median()["p"], resumed.guide.median()["mu"]
        plug_in = dist.Bernoulli(p_hat).log_prob(x) + dist.Normal(mu_hat, 1.0).log_prob(y)
        torch.testing.assert_close(log_likelihood(resumed, data, num_samples=1, global_samples=3), plug_in.detach())
    else:
        held = set_log_likelihood(resumed, data, num_samples=1, global_samples=100)
        assert held["global_sites"][-2:] == ["p", "mu"] or set(held["global_sites"]) >= {"p", "mu"}
        terms = elbo_terms(resumed, data, num_samples=20)
        assert float(terms["elbo"].sum()) <= held["total"] + 4 * held["se"]
        report = evaluation_report(resumed, data, num_samples=2, global_samples=20, psis_samples=None)
        assert math.isfinite(report["log_likelihood_set"]) and math.isfinite(report["kl_global"])
    with pytest.raises(ValueError, match=r"free bits cannot hinge latent site 'p'.*sites=\[\.\.\.\]"):
        FreeBitsELBO(0.5).differentiable_loss(resumed.model, resumed.guide, *data)
    assert math.isfinite(fit(resumed, data, epochs=1, batch_size=8, elbo=FreeBitsELBO(0.0), progress=False)
                         ["train_loss"][0])
    idata = to_inference_data(resumed, data, sites=["p", "mu"], num_samples=20)
    assert idata.posterior["p"].shape == (1, 20)


def test_autonormal_set_likelihood_matches_quadrature():
    from pyro.infer.autoguide import AutoNormal

    from pyro_lvm.evaluation.metrics import set_log_likelihood

    pair = AutoguidePair(AutoNormal)
    data = coin_data()
    fit(pair, data, epochs=5, batch_size=16, lr=0.05, progress=False)
    x, y = data
    with torch.no_grad():
        # q(p) = sigmoid(N(loc, scale)), q(mu) = N(loc, scale): E_q prod_i p(x_i, y_i | p, mu) factorises
        loc, scale = pair.guide.locs.p, pair.guide.scales.p
        u = torch.linspace(float(loc - 12 * scale), float(loc + 12 * scale), 40001, dtype=torch.float64)
        f = dist.Normal(loc.double(), scale.double()).log_prob(u) + dist.Bernoulli(logits=u.unsqueeze(-1)).log_prob(
            x.double()).sum(-1)
        part_p = torch.logsumexp(f, 0) + math.log(float(u[1] - u[0]))
        m, s = pair.guide.locs.mu.double(), pair.guide.scales.mu.double()
        n = y.shape[0]
        part_mu = dist.MultivariateNormal(m.expand(n), torch.eye(n, dtype=torch.float64) + s ** 2).log_prob(y.double())
    held = set_log_likelihood(pair, data, num_samples=1, global_samples=400)
    assert abs(held["total"] - float(part_p + part_mu)) < 4 * held["se"] + 0.02


class ModuleWithAutoguide(nn.Module):
    """An ``nn.Module`` pair holding its autoguide: the guide's parameters appear on its first call."""

    def __init__(self):
        super().__init__()
        self.autoguide = pyro.infer.autoguide.AutoNormal(coin_and_mean)

    def model(self, x, y):
        return coin_and_mean(x, y)

    def guide(self, x, y):
        return self.autoguide(x, y)


def test_resume_restores_an_autoguide_created_lazily_inside_a_module_pair(tmp_path):
    data = coin_data()
    pyro.clear_param_store()
    full = ModuleWithAutoguide()
    h_full = fit(full, data, epochs=3, batch_size=8, lr=0.05, progress=False)
    pyro.clear_param_store()
    fit(ModuleWithAutoguide(), data, epochs=1, batch_size=8, lr=0.05, progress=False, checkpoint_dir=tmp_path)
    pyro.clear_param_store()
    resumed = ModuleWithAutoguide()   # no autoguide parameters yet: its state_dict lacks them
    h = fit(resumed, data, epochs=3, batch_size=8, lr=0.05, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert h.epochs == h_full.epochs
    expected, got = full.state_dict(), resumed.state_dict()
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)


# ----------------------------------------------------------------------------- autoguides on per-datapoint latents

def local_means(x):
    """z_i ~ N(0, 1), x_i ~ N(z_i, 0.5): the exact posterior mean of z_i is 0.8 x_i."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 0.5), obs=x)


@pytest.mark.parametrize("name", ["AutoNormal", "AutoDelta", "AutoDiagonalNormal"])
def test_an_autoguide_on_a_per_datapoint_latent_is_refused_where_fit_would_mix_datapoints(name, tmp_path):
    """Its parameters are per position of the batch's plate; fit shuffles datapoints, so they
    would follow none. Refused with the site, the plate and the ways out; one fixed batch trains."""
    from pyro.infer import autoguide

    from pyro_lvm import BatchList, elbo_terms, log_likelihood

    x = torch.linspace(-2.0, 2.0, 24)
    for data, valid, size in ((x, None, 8), (BatchList([x]), x[:6], 24)):   # shuffled batches of 8; valid data
        pyro.clear_param_store()
        pair = types.SimpleNamespace(model=local_means, guide=getattr(autoguide, name)(local_means))
        with pytest.raises(ValueError, match=rf"site 'z' comes from {name} inside the plate 'data' .*"
                                             rf"one parameter per position of that plate \({size} here\).*"
                                             r"amortised guide.*BatchList\(\[data\]\)"):
            fit(pair, data, valid, epochs=1, batch_size=8, progress=False, checkpoint_dir=tmp_path / "run")
        assert not (tmp_path / "run" / "last.pt").exists()
    if name == "AutoNormal":   # the way out it names: one fixed batch, each position one datapoint
        pyro.clear_param_store()
        pair = types.SimpleNamespace(model=local_means, guide=autoguide.AutoNormal(local_means))
        fit(pair, BatchList([x]), epochs=300, lr=0.05, progress=False)
        loc = pair.guide.locs.z.detach()   # one-particle SVI noise: the shuffled run's correlation was about 0
        assert torch.corrcoef(torch.stack([loc, x]))[0, 1] > 0.97 and (loc - 0.8 * x).abs().max() < 0.4
        # it scores its own 24 datapoints, in one batch whatever batch_size says, against the exact marginal
        exact = dist.Normal(0.0, 1.25 ** 0.5).log_prob(x)
        gap = (log_likelihood(pair, x, num_samples=500, batch_size=5) - exact).abs()
        assert float(gap.mean()) < 0.03 and float(gap.max()) < 0.15   # q is one noisy SVI fit per datapoint
        with pytest.raises(ValueError, match=r"site 'z' comes from AutoNormal, which holds one parameter per "
                                             r"position of the plate 'data' \(24 of them.*not 10 datapoints"):
            elbo_terms(pair, x[:10])


class AmortisedLocalsAutoGlobal(nn.Module):
    """The mixed idiom the refusal points to: an autoguide for the global mean (the model's other
    sites blocked), an encoder for the per-datapoint latent."""

    def __init__(self):
        super().__init__()
        self.globals = pyro.infer.autoguide.AutoNormal(pyro.poutine.block(self.model, expose=["mu"]))
        self.encoder = nn.Linear(1, 2)

    def model(self, x):
        mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(self, x):
        self.globals(x)
        loc, raw = self.encoder(x.unsqueeze(-1)).unbind(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3))


def test_an_autoguide_for_the_globals_next_to_an_encoder_trains_on_mini_batches():
    pyro.clear_param_store()
    x = torch.randn(64, generator=torch.Generator().manual_seed(1)) + 2.0
    pair = AmortisedLocalsAutoGlobal()
    h = fit(pair, x, x[:16], epochs=40, batch_size=16, lr=0.05, progress=False)
    assert h["valid_loss"][-1] < h["valid_loss"][0]
    assert abs(float(pair.globals.locs.mu.detach()) - float(x.mean())) < 0.5


def test_a_plate_that_subsamples_the_batch_trains_and_is_refused_by_per_datapoint_evaluation():
    """``pyro.plate("data", len(x), subsample_size=8)``, Pyro's idiom for large data: ``fit`` trains
    it (Pyro scales the subsample); per-datapoint evaluation names the plate and what to change."""
    from pyro_lvm import log_likelihood

    def model(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0], subsample_size=8) as idx:
            z = pyro.sample("z", dist.Normal(loc, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x[idx])

    def guide(x):
        a = pyro.param("a", torch.tensor(0.5))
        with pyro.plate("data", x.shape[0], subsample_size=8) as idx:
            pyro.sample("z", dist.Normal(a * x[idx], 0.5))

    pyro.clear_param_store()
    x = torch.randn(64, generator=torch.Generator().manual_seed(0)) + 2.0
    pair = types.SimpleNamespace(model=model, guide=guide)
    fit(pair, x, epochs=150, batch_size=64, lr=0.05, progress=False)   # one subsampled step per epoch
    assert abs(float(pyro.param("loc").detach()) - float(x.mean())) < 0.5
    with pytest.raises(ValueError, match=r"plate 'data', which subsamples 8 of the batch's 64 datapoints.*"
                                         r"subsample_size=None"):
        log_likelihood(pair, x, num_samples=4, batch_size=64)


def test_an_autoguide_on_a_plate_that_only_has_the_batch_size_trains_when_data_plate_says_so():
    """A global latent per feature, in a plate of 8 features, trained in batches of 8: by size alone
    the feature plate looks like the datapoint plate; ``data_plate`` names the right one."""
    from pyro.infer.autoguide import AutoNormal

    def model(x):
        with pyro.plate("features", 8, dim=-1):
            mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
        with pyro.plate("data", x.shape[0], dim=-2):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(0)) + torch.arange(8.0)
    for data_plate in (None, "data"):
        pyro.clear_param_store()
        pair = types.SimpleNamespace(model=model, guide=AutoNormal(model))
        if data_plate is None:
            with pytest.raises(ValueError, match="site 'mu' comes from AutoNormal inside the plate 'features'"):
                fit(pair, x, epochs=1, batch_size=8, progress=False)
        else:
            fit(pair, x, epochs=60, batch_size=8, lr=0.05, progress=False, data_plate=data_plate)
            assert float((pair.guide.locs.mu.detach() - torch.arange(8.0)).abs().max()) < 1.0
