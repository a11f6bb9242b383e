"""Posterior-collapse remedies and diagnostics (issue 3), checked on pairs written here.

Exact answers: the KL of a Gaussian pair in closed form, log-densities at the sampled z,
He et al.'s calc_mi re-written by hand, gradients of the unwrapped ELBO.
"""

import copy
import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO, config_enumerate
from torch import nn

from pyro_lvm import fit
from pyro_lvm.training.loop import Callback
from pyro_lvm.evaluation.diagnostics import (CollapseDiagnostics, active_units, collapse_report, kl_per_dimension,
                                             mutual_information, plot_collapse, unit_activity)
from pyro_lvm.infer import (AggressiveTraining, Constant, Cyclical, FreeBitsELBO, KLAnnealing, KLScaledELBO,
                            Linear, Sigmoid, kl_scale, make_schedule, split_parameters)


class TinyPair(nn.Module):
    """x (batch, 3) ~ N(W z + b, 1), z (batch, 2) ~ N(0, I); q(z|x) = N(A x, softplus(B x))."""

    def __init__(self, x_dim=3, z_dim=2, encode=True, shared=False):
        super().__init__()
        self.z_dim, self.encode = z_dim, encode
        self.enc = nn.Linear(x_dim, 2 * z_dim)
        self.free = nn.Parameter(torch.randn(2 * z_dim))       # used when the guide ignores x
        self.dec = nn.Linear(z_dim, x_dim)
        self.shared = nn.Parameter(torch.tensor(0.3)) if shared else None

    def q_params(self, x):
        h = self.enc(x) if self.encode else self.free.expand(x.shape[0], -1)
        if self.shared is not None:
            h = h * self.shared
        return h[..., :self.z_dim], F.softplus(h[..., self.z_dim:]) + 1e-3

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            loc = self.dec(z) * (self.shared if self.shared is not None else 1.0)
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(self, x):
        loc, scale = self.q_params(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


class TwoSitePair(nn.Module):
    """Two latent sites, z1 (batch, 2) and z2 (batch,) without a dimension axis."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(3, 6)
        self.dec = nn.Linear(3, 3)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            z2 = pyro.sample("z2", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(self.dec(torch.cat([z1, z2.unsqueeze(-1)], -1)), 1.0).to_event(1), obs=x)

    def guide(self, x):
        h = self.enc(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z1", dist.Normal(h[:, :2], F.softplus(h[:, 2:4]) + 0.1).to_event(1))
            pyro.sample("z2", dist.Normal(h[:, 4], F.softplus(h[:, 5]) + 0.1))


def gaussian_kl(loc, scale):
    """KL(N(loc, scale^2) || N(0, 1)) elementwise."""
    return 0.5 * (loc ** 2 + scale ** 2 - 1 - 2 * scale.log())


def data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g)


def loss_and_grads(elbo, pair, x, seed=1):
    pyro.set_rng_seed(seed)
    pair.zero_grad()
    loss = elbo.differentiable_loss(pair.model, pair.guide, x)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in pair.named_parameters() if p.grad is not None}


# ----------------------------------------------------------------------------- KL scaling

@pytest.mark.parametrize("elbo_cls", [Trace_ELBO, TraceMeanField_ELBO])
def test_beta_one_is_exactly_the_unwrapped_elbo(elbo_cls):
    pair, x = TinyPair(), data()
    loss0, grads0 = loss_and_grads(elbo_cls(), pair, x)
    loss1, grads1 = loss_and_grads(KLScaledELBO(elbo_cls(), beta=1.0), pair, x)
    assert loss0.item() == loss1.item()
    assert grads0.keys() == grads1.keys()
    for k in grads0:
        assert torch.equal(grads0[k], grads1[k]), k


@settings(max_examples=8, deadline=None)
@given(beta=st.floats(0.0, 5.0))
def test_beta_scales_only_the_analytic_kl(beta):
    pyro.clear_param_store()
    pair, x = TinyPair(), data()
    loc, scale = pair.q_params(x)
    kl = gaussian_kl(loc, scale).sum().detach()
    loss0, g0 = loss_and_grads(KLScaledELBO(TraceMeanField_ELBO(), beta=0.0), pair, x)   # -E_q log p(x|z)
    loss_b, gb = loss_and_grads(KLScaledELBO(TraceMeanField_ELBO(), beta=beta), pair, x)
    assert loss_b.item() == pytest.approx(loss0.item() + beta * kl.item(), rel=1e-5, abs=1e-4)
    # The KL does not involve the decoder: its gradient is the same at every beta.
    for k in ("dec.weight", "dec.bias"):
        torch.testing.assert_close(gb[k], g0[k])
    # The encoder's gradient moves by exactly beta * dKL/dphi.
    pair.zero_grad()
    loc, scale = pair.q_params(x)
    gkl = torch.autograd.grad(gaussian_kl(loc, scale).sum(), pair.enc.weight)[0]
    torch.testing.assert_close(gb["enc.weight"], g0["enc.weight"] + beta * gkl, rtol=1e-4, atol=1e-4)


def test_beta_scales_the_monte_carlo_kl_of_trace_elbo():
    pair, x = TinyPair(), data()
    beta = 0.37
    # The sample Trace_ELBO draws, re-drawn with the same seed: z = loc + scale * eps.
    pyro.set_rng_seed(1)
    loc, scale = pair.q_params(x)
    z = dist.Normal(loc, scale).rsample()
    log_q = dist.Normal(loc, scale).log_prob(z).sum()
    log_p = dist.Normal(0.0, 1.0).log_prob(z).sum()
    log_lik = dist.Normal(pair.dec(z), 1.0).log_prob(x).sum()
    loss, _ = loss_and_grads(KLScaledELBO(Trace_ELBO(), beta=beta), pair, x)
    assert loss.item() == pytest.approx((-log_lik + beta * (log_q - log_p)).item(), rel=1e-5)


def test_kl_scale_selects_sites_by_name_and_predicate():
    pair, x = TwoSitePair(), data()
    h = pair.enc(x)
    kl1 = gaussian_kl(h[:, :2], F.softplus(h[:, 2:4]) + 0.1).sum().item()
    kl2 = gaussian_kl(h[:, 4], F.softplus(h[:, 5]) + 0.1).sum().item()
    mf = TraceMeanField_ELBO()
    base, _ = loss_and_grads(KLScaledELBO(mf, beta=0.0), pair, x)              # no KL at all
    only1, _ = loss_and_grads(KLScaledELBO(mf, beta=0.0, sites=["z1"]), pair, x)
    pred2, _ = loss_and_grads(KLScaledELBO(mf, beta=0.0, sites=lambda name: name == "z2"), pair, x)
    assert only1.item() == pytest.approx(base.item() + kl2, rel=1e-5)
    assert pred2.item() == pytest.approx(base.item() + kl1, rel=1e-5)


def test_kl_scale_handlers_directly_and_with_svi_style_call():
    pair, x = TinyPair(), data()
    model, guide = kl_scale(pair.model, pair.guide, beta=0.0)
    pyro.set_rng_seed(1)
    loss = TraceMeanField_ELBO().differentiable_loss(model, guide, x)
    ref, _ = loss_and_grads(KLScaledELBO(TraceMeanField_ELBO(), beta=0.0), pair, x)
    assert loss.item() == ref.item()
    # The observation is never scaled: guide-only tracing shows the scale on z only.
    tr = pyro.poutine.trace(model).get_trace(x)
    assert tr.nodes["x"]["scale"] == 1.0


class EnumPair(nn.Module):
    """c ~ Cat(2) enumerated in the model; z independent of c; x | c, z."""

    def __init__(self, z_depends_on_c=False):
        super().__init__()
        self.enc = nn.Linear(3, 4)
        self.means = nn.Parameter(torch.randn(2, 3))
        self.z_depends_on_c = z_depends_on_c

    @config_enumerate
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(logits=x.new_zeros(2)))
            prior_loc = (c.float().unsqueeze(-1) * x.new_ones(2)) if self.z_depends_on_c else x.new_zeros(2)
            z = pyro.sample("z", dist.Normal(prior_loc, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.means[c] + z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)

    def guide(self, x):
        h = self.enc(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(h[:, :2], F.softplus(h[:, 2:]) + 0.1).to_event(1))


def test_trace_enum_elbo_scales_the_guided_site_and_leaves_the_enumerated_one():
    pair, x = EnumPair(), data()
    beta = 0.6
    pyro.set_rng_seed(1)
    h = pair.enc(x)
    q = dist.Normal(h[:, :2], F.softplus(h[:, 2:]) + 0.1)
    z = q.rsample()
    mc_kl = (q.log_prob(z) - dist.Normal(0.0, 1.0).log_prob(z)).sum().item()
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    l0, _ = loss_and_grads(KLScaledELBO(elbo, beta=0.0), pair, x)
    lb, _ = loss_and_grads(KLScaledELBO(elbo, beta=beta), pair, x)
    l1, _ = loss_and_grads(elbo, pair, x)
    assert lb.item() == pytest.approx(l0.item() + beta * mc_kl, rel=1e-5)
    assert l1.item() == pytest.approx(l0.item() + mc_kl, rel=1e-5)


def test_trace_enum_elbo_unsupported_case_has_a_clear_error():
    pair, x = EnumPair(z_depends_on_c=True), data()
    with pytest.raises(ValueError, match="enumerated in the model"):
        KLScaledELBO(TraceEnum_ELBO(max_plate_nesting=1), beta=0.5).differentiable_loss(pair.model, pair.guide, x)


def test_kl_scaling_bad_input():
    pair, x = TinyPair(), data()
    with pytest.raises(ValueError, match="-0.5"):
        KLScaledELBO(beta=-0.5)
    with pytest.raises(ValueError, match="nan"):
        KLScaledELBO(beta=float("nan"))
    e = KLScaledELBO()
    with pytest.raises(ValueError, match="-1"):
        e.beta = -1
    with pytest.raises(ValueError, match="'zz'"):
        KLScaledELBO(sites=["zz"]).differentiable_loss(pair.model, pair.guide, x)
    with pytest.raises(TypeError, match="Jit"):
        KLScaledELBO(pyro.infer.JitTrace_ELBO())


# ----------------------------------------------------------------------------- schedules

def test_schedules_values():
    assert Constant(0.3)(0) == Constant(0.3)(10 ** 6) == 0.3
    lin = Linear(steps=10, start=0.1)
    assert [lin(s) for s in (0, 5, 10, 50)] == pytest.approx([0.1, 0.55, 1.0, 1.0])
    sig = Sigmoid(steps=100)
    assert sig(50) == pytest.approx(0.5) and sig(0) < 0.01 and sig(100) > 0.99
    assert all(sig(s) <= sig(s + 1) for s in range(200))
    cyc = Cyclical(period=10, cycles=2, ratio=0.5)
    assert [cyc(s) for s in (0, 2, 5, 9, 10, 12, 19, 20, 1000)] == pytest.approx([0, 0.4, 1, 1, 0, 0.4, 1, 1, 1])
    assert make_schedule(0.25)(7) == 0.25 and make_schedule("linear", steps=4)(2) == 0.5


@pytest.mark.parametrize("build, match", [
    (lambda: Linear(steps=0), "steps"),
    (lambda: Linear(steps=5, start=-0.1), "start"),
    (lambda: Constant(float("nan")), "value"),
    (lambda: Cyclical(period=10, ratio=1.5), "ratio"),
    (lambda: make_schedule("cosine"), "cosine"),
    (lambda: make_schedule("linear", stepz=3), "linear"),
    (lambda: Linear(steps=5)(-1), "step"),
])
def test_schedule_bad_input(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_kl_annealing_logs_the_weight_and_rejects_nan():
    pair, x = TinyPair(), data(64)
    hist = fit(pair, x, epochs=3, batch_size=16, elbo=TraceMeanField_ELBO(),
               callbacks=[KLAnnealing(schedule="linear", start=0.0, steps=8)])
    assert hist["kl_weight"] == pytest.approx([3 / 8, 7 / 8, 1.0])   # weight of each epoch's last step
    with pytest.raises(ValueError, match="nan"):
        fit(TinyPair(), x, epochs=1, batch_size=16, callbacks=[KLAnnealing(schedule=lambda s: float("nan"))])


def test_kl_annealing_accepts_a_schedule_object_and_restores_the_elbo():
    pair, x = TinyPair(), data(32)
    seen = {}

    class Spy(Callback):
        def on_step_end(self, state, batch, loss):
            seen.setdefault("during", state.elbo)

        def on_train_end(self, state):
            seen["after"] = state.elbo

    elbo = Trace_ELBO()
    hist = fit(pair, x, epochs=2, batch_size=16, elbo=elbo, callbacks=[KLAnnealing(schedule=Cyclical(period=4, cycles=1)), Spy()])
    assert hist["kl_weight"] == [0.5, 1.0]
    assert isinstance(seen["during"], KLScaledELBO) and seen["after"] is elbo


# ----------------------------------------------------------------------------- free bits

@pytest.mark.parametrize("pair_cls", [TinyPair, TwoSitePair])
def test_free_bits_lambda_zero_is_the_elbo(pair_cls):
    pair, x = pair_cls(), data()
    for ref, fb in ((TraceMeanField_ELBO(), FreeBitsELBO(0.0)), (Trace_ELBO(), FreeBitsELBO(0.0, analytic=False))):
        l0, g0 = loss_and_grads(ref, pair, x)
        l1, g1 = loss_and_grads(fb, pair, x)
        assert l1.item() == pytest.approx(l0.item(), rel=1e-6)
        for k in g0:
            torch.testing.assert_close(g1[k], g0[k], rtol=1e-5, atol=1e-6)


@settings(max_examples=6, deadline=None)
@given(lam=st.floats(0.01, 2.0))
def test_free_bits_hinge_per_dimension(lam):
    pair, x = TinyPair(), data()
    n = x.shape[0]
    loc, scale = pair.q_params(x)
    kl_dim = gaussian_kl(loc, scale).detach().mean(0)                 # (z_dim,) batch-averaged
    rec, _ = loss_and_grads(KLScaledELBO(TraceMeanField_ELBO(), beta=0.0), pair, x)
    loss, _ = loss_and_grads(FreeBitsELBO(lam), pair, x)
    expected = rec.item() + n * torch.clamp(kl_dim, min=lam).sum().item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    site_level, _ = loss_and_grads(FreeBitsELBO(lam, per_dimension=False), pair, x)
    assert site_level.item() == pytest.approx(rec.item() + n * max(lam, kl_dim.sum().item()), rel=1e-5)


def test_free_bits_gives_no_kl_gradient_to_dimensions_under_lambda():
    pair, x = TinyPair(), data()
    loc, scale = pair.q_params(x)
    big = float(gaussian_kl(loc, scale).detach().mean(0).max()) + 1.0
    _, g_rec = loss_and_grads(KLScaledELBO(TraceMeanField_ELBO(), beta=0.0), pair, x)
    _, g_fb = loss_and_grads(FreeBitsELBO(big), pair, x)
    for k in g_rec:
        torch.testing.assert_close(g_fb[k], g_rec[k])


def test_free_bits_bad_input():
    pair, x = TwoSitePair(), data()
    with pytest.raises(ValueError, match="-0.1"):
        FreeBitsELBO(-0.1)
    with pytest.raises(ValueError, match="'nope'"):
        FreeBitsELBO(0.5, sites=["nope"]).differentiable_loss(pair.model, pair.guide, x)
    # Hinge on z1 only: z2 keeps its plain KL.
    assert math.isfinite(FreeBitsELBO(0.5, sites=["z1"]).loss(pair.model, pair.guide, x))


def test_free_bits_hinges_a_scalar_site_as_one_dimension():
    pair, x = TwoSitePair(), data()
    n, lam = x.shape[0], 0.5
    h = pair.enc(x).detach()
    kl1 = gaussian_kl(h[:, :2], F.softplus(h[:, 2:4]) + 0.1).mean(0)            # (2,): z1 per dimension
    kl2 = gaussian_kl(h[:, 4], F.softplus(h[:, 5]) + 0.1).mean()                # z2: one dimension
    rec, _ = loss_and_grads(KLScaledELBO(TraceMeanField_ELBO(), beta=0.0), pair, x)
    loss, _ = loss_and_grads(FreeBitsELBO(lam), pair, x)
    expected = rec.item() + n * (torch.clamp(kl1, min=lam).sum() + max(lam, float(kl2))).item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def _free_bits_by_hand(pair, x, zs, lam):
    """The free-bits objective of particles ``zs`` (each ``(n, z_dim)``) written out: for each
    particle ``-log p(x | z) + n * sum_d max(lam, mean_i [log q(z_id) - log p(z_id)])``, averaged."""
    loc, scale = pair.q_params(x)
    n, out = x.shape[0], []
    for z in zs:
        rec = dist.Normal(pair.dec(z), 1.0).log_prob(x).sum()
        kl_dim = (dist.Normal(loc, scale).log_prob(z) - dist.Normal(0.0, 1.0).log_prob(z)).mean(0)
        out.append(-rec + n * torch.clamp(kl_dim, min=lam).sum())
    return torch.stack(out).mean()


@pytest.mark.parametrize("vectorize", [False, True])
def test_free_bits_honours_num_particles_and_vectorize_particles(vectorize):
    """FreeBitsELBO is a Trace_ELBO: ``num_particles`` particles (drawn at once with
    ``vectorize_particles``) each hinged on their own, as the objective written by hand on the
    same draws of z (Monte Carlo KL, so the particles' hinges differ)."""
    pair, x, p = TinyPair(), data(), 4
    pyro.set_rng_seed(5)  # the draws of z Pyro makes for these particles
    if vectorize:
        plated = pyro.plate("num_particles_vectorized", p, dim=-2)(pair.guide)
        zs = list(pyro.poutine.trace(plated).get_trace(x).nodes["z"]["value"].detach())
    else:
        zs = [pyro.poutine.trace(pair.guide).get_trace(x).nodes["z"]["value"].detach() for _ in range(p)]
    loc, scale = (t.detach() for t in pair.q_params(x))
    first_dim = [float((dist.Normal(loc, scale).log_prob(z) - dist.Normal(0.0, 1.0).log_prob(z)).mean(0)[0])
                 for z in zs]
    lam = sorted(first_dim)[p // 2] - 1e-4      # between the particles' KLs: the hinge acts on some only
    elbo = FreeBitsELBO(lam, analytic=False, num_particles=p, vectorize_particles=vectorize, max_plate_nesting=1)
    pyro.set_rng_seed(5)
    loss = elbo.differentiable_loss(pair.model, pair.guide, x)
    assert elbo.max_plate_nesting == (2 if vectorize else 1)
    assert loss.item() == pytest.approx(_free_bits_by_hand(pair, x, zs, lam).item(), rel=1e-5)
    # the hinge of the particles' average would be another number: each particle is hinged on its own
    pooled = torch.stack(zs).reshape(-1, pair.z_dim)
    assert abs(loss.item() - _free_bits_by_hand(pair, x.repeat(p, 1), [pooled], lam).item() / p) > 1e-3
    loss.backward()                                      # a differentiable loss, gradients in every parameter
    assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in (pair.enc.weight, pair.dec.weight))


def test_fit_gives_vectorized_particles_their_plate():
    """fit settles an unset max_plate_nesting from the pair (here 1), plus the particle plate."""
    for elbo in (FreeBitsELBO(0.3, num_particles=3, vectorize_particles=True),
                 Trace_ELBO(num_particles=3, vectorize_particles=True)):
        history = fit(TinyPair(), data(16), epochs=1, batch_size=8, elbo=elbo, progress=False)
        assert elbo.max_plate_nesting == 2 and math.isfinite(history["train_loss"][-1])


def test_free_bits_vectorized_particles_charge_each_particle_its_own_score_cost():
    """A Bernoulli (score-function) site with vectorised particles: loss and gradient equal the
    surrogate written by hand on the same draws, each datapoint of each particle charged its own
    loss (``log q(b_pi) * cost_pi``), the hinge on the analytic KL averaged over datapoints."""

    class Coin(nn.Module):
        def __init__(self):
            super().__init__()
            self.logit = nn.Linear(3, 1)
            self.dec = nn.Linear(1, 3)

        def model(self, x):
            with pyro.plate("data", x.shape[0]):
                b = pyro.sample("b", dist.Bernoulli(0.3 * x.new_ones(1)).to_event(1))
                pyro.sample("x", dist.Normal(self.dec(b), 1.0).to_event(1), obs=x)

        def guide(self, x):
            with pyro.plate("data", x.shape[0]):
                pyro.sample("b", dist.Bernoulli(logits=self.logit(x)).to_event(1))

    pyro.set_rng_seed(0)
    pair, x, p = Coin(), data(8), 3
    pyro.set_rng_seed(2)
    plated = pyro.plate("num_particles_vectorized", p, dim=-2)(pair.guide)
    b = pyro.poutine.trace(plated).get_trace(x).nodes["b"]["value"].detach()          # (p, n, 1)
    q = dist.Bernoulli(logits=pair.logit(x))
    kl = torch.distributions.kl_divergence(q, dist.Bernoulli(0.3 * torch.ones(8, 1))).sum(-1)  # (n,)
    lam = float(kl.detach().mean()) - 1e-3                                                         # the hinge is active
    nll = -dist.Normal(pair.dec(b), 1.0).log_prob(x).sum(-1)                               # (p, n)
    cost = (nll + kl).detach()
    by_hand = nll.sum() / p + x.shape[0] * torch.clamp(kl.mean(), min=lam) + (q.log_prob(b).sum(-1) * cost).sum() / p
    expected = torch.autograd.grad(by_hand, [pair.logit.weight, pair.dec.weight])

    elbo = FreeBitsELBO(lam, num_particles=p, vectorize_particles=True, max_plate_nesting=1)
    pyro.set_rng_seed(2)
    loss = elbo.differentiable_loss(pair.model, pair.guide, x)
    got = torch.autograd.grad(loss, [pair.logit.weight, pair.dec.weight])
    score_value = (q.log_prob(b).sum(-1) * cost).sum() / p
    assert loss.item() == pytest.approx((by_hand - score_value).item(), rel=1e-5)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- aggressive training

def test_split_parameters_finds_the_encoder_of_any_pair():
    pair, x = TinyPair(shared=True), data()
    params = list(pair.parameters())
    enc, dec = split_parameters(pair, x, params)
    names = {id(p): n for n, p in pair.named_parameters()}
    assert sorted(names[id(p)] for p in enc) == ["enc.bias", "enc.weight"]
    assert sorted(names[id(p)] for p in dec) == ["dec.bias", "dec.weight", "free", "shared"]   # shared: both use it


def test_aggressive_inner_loop_leaves_decoder_values_and_grads_unchanged():
    pair, x = TinyPair(shared=True), data(64)
    params = list(pair.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    # A previous joint step left gradients in .grad (as fit() does).
    Trace_ELBO().differentiable_loss(pair.model, pair.guide, x[:16]).backward()
    opt.step()
    before = {n: (p.detach().clone(), None if p.grad is None else p.grad.clone()) for n, p in pair.named_parameters()}
    opt_before = copy.deepcopy(opt.state_dict())

    class State:  # the parts of fit()'s TrainState the callback reads
        def __init__(self):
            self.pair, self.params, self.optimizer, self.step, self.device = pair, params, opt, 0, torch.device("cpu")
            self.logs = {}

        def loss(self, batch):
            return Trace_ELBO().differentiable_loss(pair.model, pair.guide, batch)

    cb = AggressiveTraining(max_inner_steps=30, check_every=15, data=x)
    steps = cb.inner_loop(State(), x[:16])
    assert 15 <= steps <= 30
    for n, p in pair.named_parameters():
        value, grad = before[n]
        if n.startswith("enc"):
            assert not torch.equal(p.detach(), value), n          # the encoder moved
        else:
            assert torch.equal(p.detach(), value), n              # decoder (and shared) values untouched
        assert (p.grad is None and grad is None) or torch.equal(p.grad, grad), n   # no .grad touched
    opt_after = opt.state_dict()["state"]                          # fit's optimiser: not stepped
    for i, st_i in opt_before["state"].items():
        for k, v in st_i.items():
            assert torch.equal(opt_after[i][k], v), (i, k)


def test_aggressive_training_in_fit_logs_and_stops_when_mi_falls():
    pair, x = TinyPair(), data(96)
    cb = AggressiveTraining(max_inner_steps=15, check_every=5, data=x, valid_data=x[:48])
    hist = fit(pair, x, x[:48], epochs=4, batch_size=32, callbacks=[cb])
    assert hist["aggressive"][0] == 1
    mis = hist["aggressive_mi"]
    # The phase continues exactly while the MI rises (He et al.'s rule, from pre_mi = 0).
    active = hist["aggressive"]
    for i in range(1, len(active)):
        expected = int(active[i - 1] == 1 and mis[i - 1] >= (mis[i - 2] if i >= 2 else 0.0))
        assert active[i] == expected
    assert all(1 <= s <= 15 for s in hist["aggressive_inner_steps"])


def test_aggressive_training_bad_input_and_paramless_guide():
    with pytest.raises(ValueError, match="max_inner_steps"):
        AggressiveTraining(max_inner_steps=0)

    class NoEncoder(TinyPair):
        def guide(self, x):
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))

    with pytest.raises(ValueError, match="no encoder parameters"):
        fit(NoEncoder(), data(32), epochs=1, batch_size=16, callbacks=[AggressiveTraining()])


# ----------------------------------------------------------------------------- diagnostics

def test_au_and_mi_are_zero_for_a_guide_that_ignores_x():
    pair, x = TinyPair(encode=False), data(200)
    assert active_units(pair, x) == 0
    assert mutual_information(pair, x) == pytest.approx(0.0, abs=1e-9)
    assert float(unit_activity(pair, x)["z"].max()) == 0.0


def test_au_and_mi_are_positive_for_a_guide_that_encodes_x():
    pair, x = TinyPair(), data(200)
    with torch.no_grad():
        pair.enc.weight.copy_(torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 0], [0, 0, 0]]))
        pair.enc.bias.copy_(torch.tensor([0.0, 0, -3, -3]))            # small posterior scales
    loc, _ = pair.q_params(x)
    assert active_units(pair, x) == 2
    assert active_units(pair, x, per_site=True) == {"z": int((loc.var(0) > 0.01).sum())}
    mi = mutual_information(pair, x, batch_size=100)
    assert 1.0 < mi <= math.log(100)


def he_calc_mi(mu, logvar, z):
    """He et al.'s calc_mi (lagging-inference-networks, modules/encoders/encoder.py), given the sample."""
    x_batch, nz = mu.size()
    neg_entropy = (-0.5 * nz * math.log(2 * math.pi) - 0.5 * (1 + logvar).sum(-1)).mean()
    z_samples = z.unsqueeze(1)
    mu, logvar = mu.unsqueeze(0), logvar.unsqueeze(0)
    dev = z_samples - mu
    log_density = -0.5 * ((dev ** 2) / logvar.exp()).sum(dim=-1) - 0.5 * (nz * math.log(2 * math.pi) + logvar.sum(-1))
    log_qz = torch.logsumexp(log_density, dim=1) - math.log(x_batch)
    return (neg_entropy - log_qz.mean(-1)).item()


def test_mutual_information_matches_he_et_al_calc_mi():
    pair, x = TinyPair(), data(50)
    pyro.set_rng_seed(3)
    mi = mutual_information(pair, x, batch_size=50, entropy="analytic")
    pyro.set_rng_seed(3)
    loc, scale = pair.q_params(x)
    z = dist.Normal(loc, scale).sample()
    assert mi == pytest.approx(he_calc_mi(loc.detach(), 2 * scale.detach().log(), z), rel=1e-5, abs=1e-6)


def test_kl_per_dimension_is_the_closed_form():
    pair, x = TinyPair(), data(40)
    loc, scale = pair.q_params(x)
    got = kl_per_dimension(pair, x, batch_size=16)                     # three batches, weighted
    torch.testing.assert_close(got["z"], gaussian_kl(loc, scale).detach().mean(0))
    pair2 = TwoSitePair()
    kl2 = kl_per_dimension(pair2, x)
    assert kl2["z1"].shape == (2,) and kl2["z2"].shape == (1,)


def test_collapse_diagnostics_callback_and_plot(tmp_path):
    pair, x = TinyPair(), data(64)
    hist = fit(pair, x, x[:32], epochs=2, batch_size=32, callbacks=[KLAnnealing("linear", steps=2), CollapseDiagnostics(x[:32])],
               metrics={"mi_metric": mutual_information, "au_metric": active_units})
    last = hist.last()
    for key in ("kl", "kl/z", "kl_per_dim/z", "mi", "active_units", "kl_weight", "mi_metric", "au_metric"):
        assert key in last, key
    assert last["kl"] == pytest.approx(sum(last["kl_per_dim/z"]), rel=1e-4)
    assert max(last["mi"], last["mi_metric"]) <= math.log(32) + 1e-9     # one sample each: estimates differ
    path = plot_collapse({"anneal": hist}, tmp_path / "c.png")
    assert path.stat().st_size > 1000
    report = collapse_report(pair, x)
    assert report["units"] == 2 and 0 <= report["active_units"] <= 2


def test_plot_collapse_keeps_each_run_in_one_colour(tmp_path, monkeypatch):
    """A run that did not log a key must not shift the others' colours in that panel."""
    from pyro_lvm import plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig) or Path(path))
    runs = {"plain": [{"kl": 1.0, "mi": 0.5}, {"kl": 0.5, "mi": 0.2}],   # never annealed: no kl_weight
            "anneal": [{"kl": 2.0, "mi": 0.9, "kl_weight": 0.5}, {"kl": 1.5, "mi": 0.8, "kl_weight": 1.0}]}
    plot_collapse(runs, tmp_path / "c.png", keys=("kl", "kl_weight"))
    colours = [{line.get_label(): line.get_color() for line in ax.get_lines()} for ax in figures[0].axes]
    assert colours[0] == {"plain": "C0", "anneal": "C1"} and colours[1] == {"anneal": "C1"}


def test_diagnostics_bad_input():
    class NoPlate(TinyPair):
        def guide(self, x):
            pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    with pytest.raises(ValueError, match="'z'.*plate"):
        mutual_information(NoPlate(), data(8))
    with pytest.raises(ValueError, match="entropy"):
        mutual_information(TinyPair(), data(8), entropy="exact")
    with pytest.raises(ValueError, match="data"):
        CollapseDiagnostics(None)


# ----------------------------------------------------------------------------- all remedies, one user pair

@pytest.mark.parametrize("remedy", ["anneal", "free-bits", "aggressive", "beta"])
def test_every_remedy_trains_a_pair_written_here(remedy):
    pair, x = TinyPair(), data(64)
    elbo, callbacks = TraceMeanField_ELBO(), []
    if remedy == "anneal":
        callbacks = [KLAnnealing("sigmoid", steps=4)]
    elif remedy == "beta":
        callbacks = [KLAnnealing("constant", value=0.5)]
    elif remedy == "free-bits":
        elbo = FreeBitsELBO(0.25)
    else:
        callbacks = [AggressiveTraining(max_inner_steps=10, check_every=5, data=x)]
    hist = fit(pair, x, x[:32], elbo=elbo, epochs=2, batch_size=32, lr=1e-2, callbacks=callbacks)
    assert len(hist) == 2 and all(math.isfinite(v) for v in hist["valid_loss"])


# ----------------------------------------------------------------------------- the demonstration task

def test_collapse_task_runs_with_tiny_arguments(tmp_path):
    import argparse
    import json

    from pyro_lvm.models.collapse_toy import SequenceVAE, lstm_sequences
    from pyro_lvm.tasks import collapse

    tokens, z = lstm_sequences(5, vocab=7, length=4, seed=1)
    assert tokens.shape == (5, 4) and tokens.dtype == torch.long and int(tokens.max()) < 7 and z.shape == (5,)
    assert torch.equal(lstm_sequences(5, vocab=7, length=4, seed=1)[0], tokens)
    with pytest.raises(ValueError, match="tokens outside"):
        SequenceVAE(vocab=5).guide(torch.full((2, 3), 5))
    parser = argparse.ArgumentParser()
    collapse.add_arguments(parser)
    args = parser.parse_args(["--methods", "vae", "free-bits", "aggressive", "--epochs", "1", "--n-train", "60",
                              "--n-valid", "30", "--n-test", "30", "--hidden", "8", "--samples", "3",
                              "--out", str(tmp_path)])
    metrics = collapse.main(args)
    assert json.loads((tmp_path / "metrics.json").read_text())["methods"].keys() == {"vae", "free-bits", "aggressive"}
    for m in metrics["methods"].values():
        assert m["nll"] > 0 and m["elbo"] <= -m["nll"] + 1.0 and m["active_units"] in (0, 1)
    assert (tmp_path / "collapse_curves.png").stat().st_size > 1000


def test_the_synthetic_source_is_normalised_and_its_information_matches_enumeration():
    """The generator's log p(x|z) sums to 1 over all sequences, its quadrature marginal is
    converged, and the sampled estimate of I(x; z) agrees with the value by enumeration."""
    import itertools

    from pyro_lvm.models.collapse_toy import lstm_source

    vocab, length = 3, 3
    source, g, _ = lstm_source(vocab=vocab, length=length, hidden=8, components=4, spread=3.0, seed=4)
    every = torch.tensor(list(itertools.product(range(vocab), repeat=length)))           # (27, 3)
    for z in (-3.0, 0.2, 2.5):
        total = source.log_prob(every, torch.full((len(every),), z)).exp().sum()
        assert float(total) == pytest.approx(1.0, abs=1e-5)
    coarse, fine = source.log_marginal(every, grid=200), source.log_marginal(every, grid=1000)
    assert torch.allclose(coarse, fine, atol=1e-3)
    assert float(fine.exp().sum()) == pytest.approx(1.0, abs=1e-4)
    # Exact I(x; z) = E_z sum_x p(x|z) log p(x|z)/p(x), the z integral on a fine grid.
    zs = torch.linspace(-6.0, 6.0, 1000)
    w = source.prior_log_density(zs).softmax(0)
    cond = torch.stack([source.log_prob(every, zz.expand(len(every))) for zz in zs])          # (grid, 27)
    exact = float((w.unsqueeze(-1) * cond.exp() * (cond - fine)).sum())
    z = source.sample_z(20000, g)
    x = source.sample(z, length, g)
    pointwise = source.log_prob(x, z) - source.log_marginal(x, grid=400)
    se = float(pointwise.std() / len(pointwise) ** 0.5)
    assert 0 < exact < math.log(vocab ** length)
    assert abs(float(pointwise.mean()) - exact) < 4 * se + 1e-3
    assert source.mutual_information(x[:50], z[:50], grid=100) == pytest.approx(float(pointwise[:50].mean()), abs=0.01)
