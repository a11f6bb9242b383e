"""Pyro's HMM family (factorial, partially factorial, second order, autoregressive emissions):
both inference paths against each other and against brute force written from the models'
definitions (every assignment of every chain, summed), on random tiny problems."""

import itertools

import pyro
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_lvm import fit
from pyro_lvm.models.hmm import HMM, AutoregressiveBernoulliEmission, BernoulliEmission, lengths_to_mask
from pyro_lvm.models.hmm.family import FactorialHMM, PartiallyFactorialHMM, SecondOrderHMM

D = 3  # keys per frame


def randomise(module, seed):
    """Spread every parameter so that no two states look alike."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(1.5 * torch.randn(p.shape, generator=g))


def emission_log_prob(model, state, x, t):
    """``log p(x_t | emission state)`` from the emission's own distribution (not the fast table)."""
    prev = x[t - 1] if t else None
    return model.emission.dist(torch.tensor(state), prev).log_prob(x[t])


def brute_force(model, x, mask):
    """``log p(x_n)`` ``(N,)`` by summing the joint over every assignment of the hidden chains,
    written from each model's definition (chains start from state 0, see ``hmm_family``).
    An emission that reads the previous step reads zeros where that step is unobserved."""
    out = []
    x = x * mask.unsqueeze(-1)
    for n in range(len(x)):
        last = int(mask[n].nonzero().max())
        xs, ms = x[n, : last + 1], mask[n, : last + 1]
        steps = last + 1
        terms = []
        if isinstance(model, FactorialHMM):
            a, b = model.sizes
            f = model.point_factors()
            for ws in itertools.product(range(a), repeat=steps):
                for zs in itertools.product(range(b), repeat=steps):
                    lp = 0.0
                    for t in range(steps):
                        w_prev, z_prev = (ws[t - 1], zs[t - 1]) if t else (0, 0)
                        lp = lp + f["w"][w_prev, ws[t]]
                        z_row = f["z"][ws[t], z_prev] if isinstance(model, PartiallyFactorialHMM) else f["z"][z_prev]
                        lp = lp + z_row[zs[t]]
                        if ms[t]:
                            lp = lp + emission_log_prob(model, ws[t] * b + zs[t], xs, t)
                    terms.append(lp)
        elif isinstance(model, SecondOrderHMM):
            trans2 = model.point_factors()["trans2"]
            for zs in itertools.product(range(model.states), repeat=steps):
                lp = 0.0
                for t in range(steps):
                    p2, p1 = (zs[t - 2] if t >= 2 else 0), (zs[t - 1] if t >= 1 else 0)
                    lp = lp + trans2[p2, p1, zs[t]]
                    if ms[t]:
                        lp = lp + emission_log_prob(model, zs[t], xs, t)
                terms.append(lp)
        else:  # first-order HMM
            log_init, log_trans = model.point_estimates()
            for zs in itertools.product(range(model.num_states), repeat=steps):
                lp = log_init[zs[0]]
                for t in range(steps):
                    if t:
                        lp = lp + log_trans[zs[t - 1], zs[t]]
                    if ms[t]:
                        lp = lp + emission_log_prob(model, zs[t], xs, t)
                terms.append(lp)
        out.append(torch.logsumexp(torch.stack(terms), 0))
    return torch.stack(out)


def build(kind, inference, emission_kind):
    def emission(k):
        return (AutoregressiveBernoulliEmission if emission_kind == "ar" else BernoulliEmission)(k, D)
    if kind == "fhmm":
        return FactorialHMM(emission(4), (2, 2), inference=inference)
    if kind == "pfhmm":
        return PartiallyFactorialHMM(emission(6), (3, 2), inference=inference)
    if kind in ("2hmm", "2hmm_raftery"):
        return SecondOrderHMM(emission(3), raftery=kind == "2hmm_raftery", inference=inference)
    return HMM(emission(3), inference=inference)


KINDS = ["fhmm", "pfhmm", "2hmm", "2hmm_raftery", "hmm"]


@st.composite
def problems(draw):
    n, steps = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    mask = torch.tensor(draw(st.lists(st.lists(st.booleans(), min_size=steps, max_size=steps), min_size=n, max_size=n)))
    mask[:, 0] = True  # every sequence observes at least one step
    g = torch.Generator().manual_seed(draw(st.integers(0, 10_000)))
    x = torch.randint(0, 2, (n, steps, D), generator=g).float()
    return x, mask, draw(st.integers(0, 10_000))


@pytest.mark.parametrize("emission_kind", ["bernoulli", "ar"])
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=8, deadline=None)
@given(problem=problems())
def test_both_paths_equal_brute_force(kind, emission_kind, problem):
    x, mask, seed = problem
    fast, markov = build(kind, "fast", emission_kind), build(kind, "markov", emission_kind)
    randomise(fast, seed)
    markov.load_state_dict(fast.state_dict())
    losses, grads = [], []
    for pair in (fast, markov):
        pair.zero_grad()
        loss = pair.objective().differentiable_loss(pair.model, pair.guide, x, mask)
        loss.backward()
        losses.append(loss.detach())
        grads.append([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in pair.parameters()])
    reference = -brute_force(fast, x, mask).sum()
    assert torch.allclose(losses[0], reference, atol=1e-4, rtol=1e-5)
    assert torch.allclose(losses[1], reference, atol=1e-4, rtol=1e-5)
    for a, b in zip(*grads):  # and the same gradient for every parameter
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert torch.allclose(fast.log_likelihood(x, mask), brute_force(fast, x, mask), atol=1e-4)


def test_joint_states_decode_into_the_chains():
    torch.manual_seed(0)
    fhmm = FactorialHMM(BernoulliEmission(6, D), (2, 3))
    x, mask = torch.randint(0, 2, (2, 5, D)).float(), lengths_to_mask(torch.tensor([5, 3]))
    paths, _ = fhmm.viterbi(x, mask)
    w, z = fhmm.split_states(paths)
    assert torch.equal(torch.where(paths >= 0, w * 3 + z, -1), paths) and bool((w[1, 3:] == -1).all())
    hmm2 = SecondOrderHMM(BernoulliEmission(3, D))
    paths, _ = hmm2.viterbi(x, mask)
    prev, cur = hmm2.split_states(paths)
    # A joint path of a second-order chain is consistent: step t's "previous" is step t-1's "current".
    assert torch.equal(prev[0, 1:], cur[0, :-1]) and int(prev[0, 0]) == 0
    states, draws = hmm2.sample(4, 6, generator=torch.Generator().manual_seed(0))
    assert states.shape == (4, 6) and draws.shape == (4, 6, D)
    assert torch.equal(hmm2.split_states(states)[0][:, 1:], hmm2.split_states(states)[1][:, :-1])


def test_family_trains_with_fit_and_em_for_the_ar_emission():
    torch.manual_seed(0)
    x = (torch.rand(16, 12, D) < 0.3).float()
    for model in (PartiallyFactorialHMM(BernoulliEmission(4, D), (2, 2)), SecondOrderHMM(BernoulliEmission(2, D),
                                                                                          raftery=True)):
        history = fit(model, (x, torch.ones(16, 12, dtype=torch.bool)), elbo=model.objective(), epochs=15,
                      batch_size=8, lr=0.1, progress=False)
        assert history["train_loss"][-1] < history["train_loss"][0]
    ar = HMM(AutoregressiveBernoulliEmission(3, D))
    log_liks = ar.em_fit([(x, None)], iterations=6)
    assert all(b >= a - 1e-3 for a, b in zip(log_liks, log_liks[1:])) and log_liks[-1] > log_liks[0]


def test_family_bad_input():
    with pytest.raises(ValueError, match="sizes 2 x 3 need 6"):
        FactorialHMM(BernoulliEmission(5, D), (2, 3))
    with pytest.raises(ValueError, match="pair"):
        FactorialHMM(BernoulliEmission(4, D), 4)
    with pytest.raises(ValueError, match="number of states"):
        FactorialHMM(BernoulliEmission(4, D), (0, 4))
    with pytest.raises(ValueError, match="emission has 3 states but num_states=4"):
        SecondOrderHMM(BernoulliEmission(3, D), num_states=4)
    with pytest.raises(ValueError, match=r"shape \(N, T, 3\)"):
        SecondOrderHMM(BernoulliEmission(3, D)).log_likelihood(torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="inference"):
        SecondOrderHMM(BernoulliEmission(3, D), inference="slow")
    pyro.clear_param_store()


def test_chorales_task_runs_every_variant(tmp_path, capsys):
    pytest.importorskip("music21")
    import json

    from pyro_lvm.cli import main

    common = ["train", "hmm_chorales", "--limit", "6", "--cache-dir", str(tmp_path / "cache"), "--iterations", "2",
              "--batch-size", "4", "--lr", "0.05"]
    variants = [["--chain", "fhmm", "--states", "4"], ["--chain", "pfhmm", "--sizes", "2", "3", "--no-figures"],
                ["--chain", "2hmm", "--states", "3", "--raftery", "--no-figures"],
                ["--emission", "autoregressive", "--states", "3", "--no-figures"],
                ["--emission", "neural", "--within-frame", "--states", "3", "--hidden", "4", "--patience", "1",
                 "--no-figures"]]
    for i, extra in enumerate(variants):
        out = tmp_path / f"run{i}"
        assert main([*common, *extra, "--out", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["test_nll_per_step"] > 0 and metrics["seconds_per_epoch"] > 0
    assert (tmp_path / "run0" / "transition_matrix.png").stat().st_size > 1000  # over the 4 joint states
    assert json.loads((tmp_path / "run3" / "metrics.json").read_text())["trainer"] == "em"
    # evaluate and sample read each run folder back (config.json + model.pt): same NLL, rolls of MIDI pitches.
    capsys.readouterr()
    for i in (0, 2, 4):
        metrics = json.loads((tmp_path / f"run{i}" / "metrics.json").read_text())
        assert main(["evaluate", str(tmp_path / f"run{i}"), "--split", "test"]) == 0
        assert json.loads(capsys.readouterr().out)["nll_per_step"] == pytest.approx(metrics["test_nll_per_step"],
                                                                                    rel=1e-5)
        assert main(["sample", str(tmp_path / f"run{i}"), "-n", "2"]) == 0
        rolls = json.loads(capsys.readouterr().out)["rolls"]
        assert len(rolls) == 2 and all(21 <= p <= 108 for roll in rolls for frame in roll for p in frame)
    for extra, message in ((["--chain", "fhmm", "--states", "5"], "square number"),
                           (["--chain", "fhmm", "--states", "4", "--trainer", "em"], "--trainer em needs --chain hmm"),
                           (["--chain", "2hmm", "--parameters", "bayes"], "first-order chain")):
        assert main([*common, *extra, "--out", str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err
