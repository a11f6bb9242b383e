"""HMMs: exact inference against brute force, the two inference paths against each other,
masks, learning on a synthetic HMM, data readers, bad input, and the examples.

Exact references: sums and maxima over all K^T state paths (``hmm_inference.brute_force_*``).
"""

import itertools
import json
import sys
import zipfile
from pathlib import Path

import pyro
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_lvm import fit
from pyro_lvm.models.hmm import inference as inf
from pyro_lvm.data import music
from pyro_lvm.data.tagged_text import load_masc_tagged, pad_ids, word_features, word_shape
from pyro_lvm.models.hmm import (HMM, AutoregressiveBernoulliEmission, BernoulliEmission, CategoricalEmission, FeatureCategoricalEmission,
                                 GaussianEmission, NeuralBernoulliEmission, lengths_to_mask)
from pyro_lvm.tasks.pos_induction import tagging_scores


def random_tables(n, steps, k, seed):
    g = torch.Generator().manual_seed(seed)
    log_init = torch.randn(k, generator=g).log_softmax(-1)
    log_trans = torch.randn(k, k, generator=g).log_softmax(-1)
    log_emit = 2 * torch.randn(n, steps, k, generator=g)
    return log_init, log_trans, log_emit


@st.composite
def hmm_problems(draw):
    n, steps, k = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    mask = torch.tensor(draw(st.lists(st.lists(st.booleans(), min_size=steps, max_size=steps),
                                      min_size=n, max_size=n)))
    mask[:, 0] = True  # every sequence observes at least one step
    return (*random_tables(n, steps, k, draw(st.integers(0, 10_000))), mask)


# ----------------------------------------------------------------------------- exact inference

@settings(max_examples=25, deadline=None)
@given(hmm_problems())
def test_forward_viterbi_marginals_equal_brute_force(problem):
    log_init, log_trans, log_emit, mask = problem
    ref_paths, ref_best, ref_marg = inf.brute_force_posterior(*problem)
    assert torch.allclose(inf.forward_log_likelihood(*problem), inf.brute_force_log_likelihood(*problem), atol=1e-4)
    paths, best = inf.viterbi(*problem)
    assert torch.allclose(best, ref_best, atol=1e-4)
    # Masked steps can make exact ties (the same transitions in another order), so compare the
    # returned path's own score with the brute-force maximum rather than the paths themselves.
    assert torch.equal(paths == -1, ref_paths == -1)
    assert torch.allclose(path_scores(log_init, log_trans, log_emit, mask, paths), ref_best, atol=1e-4)
    assert torch.allclose(inf.posterior_marginals(*problem), ref_marg, atol=1e-4)


def path_scores(log_init, log_trans, log_emit, mask, paths):
    """``log p(x, z)`` of given state paths ``(N, T)`` (``-1`` after each sequence's end)."""
    scores = []
    for n in range(len(paths)):
        z = paths[n][paths[n] >= 0]
        emit = log_emit[n, torch.arange(len(z)), z] * mask[n, : len(z)]
        scores.append(log_init[z[0]] + emit.sum() + log_trans[z[:-1], z[1:]].sum())
    return torch.stack(scores)


@settings(max_examples=20, deadline=None)
@given(hmm_problems())
def test_handwritten_gradient_equals_autograd_of_brute_force(problem):
    *tables, mask = problem
    weights = torch.linspace(0.5, 1.5, tables[2].shape[0])  # a non-uniform upstream gradient
    grads = []
    for fn in (inf.forward_log_likelihood, inf.brute_force_log_likelihood):
        leaves = [t.clone().requires_grad_() for t in tables]
        grads.append(torch.autograd.grad((weights * fn(*leaves, mask)).sum(), leaves, allow_unused=True))
    for mine, ref in zip(*grads):
        assert torch.allclose(mine, torch.zeros_like(mine) if ref is None else ref, atol=1e-4)


@pytest.mark.parametrize("mask_rows", [
    [[1, 1, 1, 1, 1]] * 3,                                      # no padding: the where()-free branch
    [[1, 1, 1, 1, 1], [1, 0, 1, 1, 0], [1, 1, 0, 0, 0]],        # interior gaps and trailing padding
])
def test_handwritten_backward_passes_gradcheck_in_double(mask_rows):
    """The custom autograd Function's backward against finite differences (double precision).
    Unnormalised log_init/log_trans are fine: the recursion sums path weights whatever they are."""
    g = torch.Generator().manual_seed(5)
    mask = torch.tensor(mask_rows, dtype=torch.bool)
    tables = [torch.randn(*shape, generator=g, dtype=torch.double, requires_grad=True)
              for shape in ((3,), (3, 3), (3, 5, 3))]
    assert torch.autograd.gradcheck(lambda *t: inf.forward_log_likelihood(*t, mask), tables, eps=1e-6, atol=1e-6)


def test_second_derivative_is_refused():
    tables = [t.double().requires_grad_() for t in random_tables(2, 4, 3, seed=2)]
    # A non-linear function of log p(x), so that the upstream gradient itself depends on the inputs:
    # without @once_differentiable this second derivative would come out silently wrong.
    (g_emit,) = torch.autograd.grad((inf.forward_log_likelihood(*tables) ** 2).sum(), tables[2], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g_emit.sum().backward()


def test_forward_filter_backward_sample_matches_exact_posterior():
    log_init, log_trans, log_emit = random_tables(1, 3, 2, seed=3)
    draws = 4000
    samples = inf.sample_posterior(log_init, log_trans, log_emit.expand(draws, -1, -1),
                                   generator=torch.Generator().manual_seed(0))
    paths, scores = inf._all_paths(log_init, log_trans, log_emit[0])
    exact = (scores - scores.logsumexp(0)).exp()
    codes = samples @ torch.tensor([4, 2, 1])
    freq = torch.bincount(codes, minlength=8).float() / draws
    assert torch.allclose(freq, exact[torch.argsort(paths @ torch.tensor([4, 2, 1]))], atol=0.03)


def test_padding_is_irrelevant():
    log_init, log_trans, log_emit = random_tables(3, 7, 4, seed=1)
    lengths = torch.tensor([7, 4, 2])
    mask = lengths_to_mask(lengths)
    garbage = log_emit + 100 * torch.randn_like(log_emit) * ~mask.unsqueeze(-1)
    for n, length in enumerate(lengths.tolist()):
        alone = (log_init, log_trans, log_emit[n:n + 1, :length])
        assert torch.allclose(inf.forward_log_likelihood(log_init, log_trans, garbage, mask)[n],
                              inf.forward_log_likelihood(*alone)[0], atol=1e-5)
        paths, best = inf.viterbi(log_init, log_trans, garbage, mask)
        assert torch.equal(paths[n, :length], inf.viterbi(*alone)[0][0]) and bool((paths[n, length:] == -1).all())
        assert torch.allclose(best[n], inf.viterbi(*alone)[1][0], atol=1e-5)
        assert torch.allclose(inf.posterior_marginals(log_init, log_trans, garbage, mask)[n, :length],
                              inf.posterior_marginals(*alone)[0], atol=1e-5)


# ----------------------------------------------------------------------------- the packed recursions

@st.composite
def masked_problems(draw):
    """Any mask with at least one observed step per sequence, leading unobserved steps included,
    down to one sequence of one step."""
    n, steps, k = draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.integers(1, 3))
    rows = draw(st.lists(st.lists(st.booleans(), min_size=steps, max_size=steps).filter(any), min_size=n, max_size=n))
    return (*random_tables(n, steps, k, draw(st.integers(0, 10_000))), torch.tensor(rows))


@settings(max_examples=40, deadline=None)
@given(masked_problems())
def test_packed_recursions_equal_brute_force_on_any_mask(problem):
    """Log-likelihood and every gradient (the initial state's included when step 0 is unobserved)
    against autograd of the sum over all paths, with a non-uniform upstream gradient."""
    *tables, mask = problem
    weights = torch.linspace(0.5, 1.5, mask.shape[0])
    out = []
    for fn in (inf.forward_log_likelihood, inf.brute_force_log_likelihood):
        leaves = [t.clone().requires_grad_() for t in tables]
        log_lik = fn(*leaves, mask)
        grads = torch.autograd.grad((weights * log_lik).sum(), leaves, allow_unused=True)  # T = 1: no transition
        out.append((log_lik, *(torch.zeros_like(t) if g is None else g for t, g in zip(tables, grads))))
    for mine, ref in zip(*out):
        assert torch.allclose(mine, ref, rtol=1e-4, atol=1e-4)
    # The same through the packed entry point, whose emission gradient is the padded one at its rows.
    pack = inf.pack_sequences(mask)
    n, steps, k = tables[2].shape
    emit = tables[2].reshape(n * steps, k)[pack.rows].requires_grad_()
    log_lik = inf.packed_log_likelihood(tables[0], tables[1], emit, pack)
    (g_emit,) = torch.autograd.grad((weights * log_lik).sum(), emit)
    assert torch.allclose(log_lik, out[1][0], rtol=1e-4, atol=1e-4)
    assert torch.allclose(g_emit, out[1][3].reshape(n * steps, k)[pack.rows], atol=1e-4)


def test_packing_rows_and_places():
    """Rows run sequence by sequence up to each last observed step; each chain's places are a
    permutation of the rows, step by step with the longest sequences first."""
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 1, 1, 0], [0, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    pack = inf.pack_sequences(mask)
    expected_rows = [0, 1, 5, 6, 7, 8, 10, 11, 15, 16, 17, 18, 19]  # n * 5 + t, t <= last observed step
    assert pack.rows.tolist() == expected_rows and pack.seq.tolist() == [r // 5 for r in expected_rows]
    assert pack.sizes == [4, 4, 2, 2, 1]  # lengths 2, 4, 2, 5
    assert sorted(pack.fwd.tolist()) == list(range(13))
    assert pack.firsts.tolist() == [0, 2, 6, 8] and pack.lasts.tolist() == [1, 5, 7, 12]
    assert pack.holes.squeeze(-1).tolist() == [not bool(mask.view(-1)[r]) for r in expected_rows]
    assert inf.pack_sequences(torch.ones(2, 3, dtype=torch.bool)).holes is None


def test_one_step_one_sequence_and_unobserved_sequences():
    log_init, log_trans, log_emit = random_tables(1, 1, 3, seed=4)
    assert torch.allclose(inf.forward_log_likelihood(log_init, log_trans, log_emit),
                          torch.logsumexp(log_init + log_emit[0, 0], 0).view(1), atol=1e-6)
    # A sequence with no observed step has log-likelihood 0 and no gradient; the others are unchanged.
    tables = [t.clone().requires_grad_() for t in random_tables(3, 4, 2, seed=5)]
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 1]], dtype=torch.bool)
    log_lik = inf.forward_log_likelihood(*tables, mask)
    assert float(log_lik[1].detach()) == 0.0
    others = inf.brute_force_log_likelihood(tables[0], tables[1], tables[2][[0, 2]], mask[[0, 2]])
    assert torch.allclose(log_lik[[0, 2]], others, atol=1e-5)
    log_lik.sum().backward()
    assert float(tables[2].grad[1].abs().sum()) == 0.0


def test_filtered_distributions_and_posterior_draws_on_padded_batches():
    """Filtering matches each sequence alone (uniform rows after its end); posterior draws are
    states up to each end and -1 after it."""
    log_init, log_trans, log_emit = random_tables(3, 6, 3, seed=6)
    lengths = torch.tensor([6, 2, 4])
    mask = lengths_to_mask(lengths)
    _, filtered = inf.forward_log_likelihood(log_init, log_trans, log_emit, mask, return_filtered=True)
    for n, length in enumerate(lengths.tolist()):
        _, alone = inf.forward_log_likelihood(log_init, log_trans, log_emit[n:n + 1, :length], return_filtered=True)
        assert torch.allclose(filtered[n, :length], alone[0], atol=1e-6)
        assert torch.allclose(filtered[n, length:], torch.full_like(filtered[n, length:], 1 / 3))
    draws = inf.sample_posterior(log_init, log_trans, log_emit, mask, generator=torch.Generator().manual_seed(0))
    assert torch.equal(draws >= 0, mask) and int(draws.max()) < 3


@pytest.mark.parametrize("kind", ["bernoulli", "categorical", "gaussian", "autoregressive"])
def test_fast_path_never_reads_unobserved_steps(kind):
    """Unobserved steps inside sequences and padding after them: the fast path equals the markov
    path and brute force, and garbage (NaN, ids outside the vocabulary) there changes nothing."""
    x = make_data(kind)
    mask = torch.tensor([[1, 1, 0, 1, 1, 0], [0, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 1]], dtype=torch.bool)
    fast, markov = make_hmm(kind), make_hmm(kind, inference="markov")
    markov.load_state_dict(fast.state_dict())
    garbage = x.masked_fill(~mask if x.dim() == 2 else ~mask.unsqueeze(-1), -1 if x.dim() == 2 else float("nan"))
    losses, grads = [], []
    for pair, data in ((fast, x), (fast, garbage), (markov, x)):
        pair.zero_grad()
        loss = pair.objective().differentiable_loss(pair.model, pair.guide, data, mask)
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in pair.parameters()]))
    ref = -inf.brute_force_log_likelihood(*fast._tables(x, mask)).sum()
    for loss in losses:
        assert torch.allclose(loss, ref, rtol=1e-5, atol=1e-4)
    assert all(torch.allclose(g, grads[2], atol=1e-4) for g in grads[:2])
    assert torch.allclose(fast.log_likelihood(garbage, mask).sum(), -ref, atol=1e-4)


def make_hmm(kind, k=3, inference="fast", parameters="map", seed=0):
    torch.manual_seed(seed)
    emission = {"bernoulli": lambda: BernoulliEmission(k, 5), "categorical": lambda: CategoricalEmission(k, 6),
                "gaussian": lambda: GaussianEmission(k, 2), "neural": lambda: NeuralBernoulliEmission(k, 5, 4),
                "features": lambda: FeatureCategoricalEmission(k, word_features(SIX_WORDS)[0], init_scale=1.0),
                "autoregressive": lambda: AutoregressiveBernoulliEmission(k, 5),
                "neural_within_frame": lambda: NeuralBernoulliEmission(k, 5, 4, within_frame=True),
                }[kind]()
    return HMM(emission, inference=inference, parameters=parameters, concentration=1.5 if parameters == "bayes" else 1.0)


SIX_WORDS = ["Dogs", "bark", "barking", "cats", "2-day", "the"]


def make_data(kind, n=4, steps=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind in ("categorical", "features"):
        return torch.randint(0, 6, (n, steps), generator=g)
    if kind == "gaussian":
        return torch.randn(n, steps, 2, generator=g)
    return torch.randint(0, 2, (n, steps, 5), generator=g).float()


def test_within_frame_emission_is_normalised_and_samples_its_own_law():
    """OrderedBernoulli: key d sees the keys below it; its probabilities over all 2^D frames sum
    to 1, and draws follow them."""
    from pyro_lvm.models.hmm.emissions import OrderedBernoulli

    torch.manual_seed(0)
    law = OrderedBernoulli(torch.randn(2, 4), 2.0 * torch.randn(4, 4))  # a batch of two
    frames = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)))  # (16, 4)
    probs = law.log_prob(frames.unsqueeze(1)).exp()  # (16, 2)
    assert torch.allclose(probs.sum(0), torch.ones(2), atol=1e-5)
    draws = law.sample((20000,))  # (20000, 2, 4)
    codes = (draws[:, 0] * torch.tensor([8.0, 4.0, 2.0, 1.0])).sum(-1).long()
    assert torch.allclose(torch.bincount(codes, minlength=16).float() / 20000, probs[:, 0], atol=0.015)
    assert torch.equal(law.weight, law.weight.tril(-1))  # only the keys below count


@pytest.mark.parametrize("parameters", ["map", "bayes"])
@pytest.mark.parametrize("kind", ["bernoulli", "categorical", "gaussian", "neural", "features", "autoregressive",
                                  "neural_within_frame"])
def test_fast_path_equals_markov_path(kind, parameters):
    x, mask = make_data(kind), lengths_to_mask(torch.tensor([6, 3, 1, 5]))
    fast = make_hmm(kind, parameters=parameters)
    markov = make_hmm(kind, inference="markov", parameters=parameters)
    markov.load_state_dict(fast.state_dict())
    losses = []
    for pair in (fast, markov):
        pyro.set_rng_seed(7)  # the same Dirichlet draw in the Bayesian guide
        losses.append(pair.objective().differentiable_loss(pair.model, pair.guide, x, mask))
    assert torch.allclose(losses[0], losses[1], rtol=1e-5, atol=1e-4)
    if parameters == "map":  # and both are the exact negative log-likelihood
        ref = inf.brute_force_log_likelihood(*fast._tables(x, mask)).sum()
        assert torch.allclose(losses[0], -ref, atol=1e-4)


@pytest.mark.parametrize("kind", ["bernoulli", "categorical", "gaussian", "features", "autoregressive"])
def test_em_never_decreases_the_likelihood(kind):
    hmm = make_hmm(kind)
    if kind == "features":  # generalised EM (L-BFGS M-step): monotone in the likelihood when unpenalised
        hmm.emission.l2 = 0.0
    x, mask = make_data(kind, n=8, steps=10), lengths_to_mask(torch.tensor([10, 9, 3, 10, 1, 7, 10, 2]))
    history = hmm.em_fit([(x, mask)], iterations=8)
    assert all(b >= a - 1e-3 for a, b in zip(history, history[1:]))
    assert history[-1] > history[0] + 1.0


def synthetic_hmm():
    true = HMM(CategoricalEmission(3, 6))
    with torch.no_grad():
        true.init_logits.copy_(torch.tensor([0.5, 0.3, 0.2]).log())
        true.trans_logits.copy_(torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6]]).log())
        true.emission.logits.copy_(torch.tensor([[0.45, 0.45, 0.05, 0.05, 0.0, 0.0],
                                                 [0.0, 0.05, 0.45, 0.45, 0.05, 0.0],
                                                 [0.05, 0.0, 0.0, 0.05, 0.45, 0.45]]).clamp(min=1e-6).log())
    return true


def best_permutation_error(a, b):
    return min(float((a[list(p)][:, list(p)] - b).abs().max().detach()) for p in itertools.permutations(range(len(a))))


def test_map_training_decreases_loss_and_recovers_transitions():
    true = synthetic_hmm()
    _, x = true.sample(200, 40, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(x.shape, dtype=torch.bool)
    torch.manual_seed(1)
    learner = HMM(CategoricalEmission(3, 6))
    # Gradient MAP on the fast path alone (Pyro loss, fit()); about 0.02 error from 8000 steps of data.
    history = fit(learner, (x, mask), elbo=learner.objective(num_datapoints=len(x)), epochs=60, batch_size=50, lr=0.1, progress=False)
    assert history["train_loss"][-1] < history["train_loss"][0] - 5.0
    learned = learner.point_estimates()[1].exp().detach()
    true_trans = true.point_estimates()[1].exp()
    assert best_permutation_error(learned, true_trans) < 0.05
    # The learned model explains the data about as well as the true one (per sequence, nats).
    with torch.no_grad():
        gap = float((true.log_likelihood(x) - learner.log_likelihood(x)).mean())
    assert abs(gap) < 0.5


# ----------------------------------------------------------------------------- bad input

def test_bad_input_errors():
    for k in (0, -2):
        with pytest.raises(ValueError, match="number of states"):
            BernoulliEmission(k, 88)
    with pytest.raises(ValueError, match="positive"):
        HMM(BernoulliEmission(2, 3), num_states=0)
    hmm = HMM(BernoulliEmission(2, 3))
    with pytest.raises(ValueError, match="length 0"):
        hmm.log_likelihood(torch.zeros(2, 0, 3))
    with pytest.raises(ValueError, match="length 0"):
        hmm.log_likelihood(torch.zeros(2, 4, 3), torch.tensor([[True] * 4, [False] * 4]))
    with pytest.raises(ValueError, match="length 0"):
        lengths_to_mask(torch.tensor([3, 0]))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 3\)"):
        hmm.log_likelihood(torch.zeros(2, 4, 3), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="0/1"):
        hmm.log_likelihood(torch.full((1, 2, 3), 2.0))
    with pytest.raises(ValueError, match="note 109"):
        music.notes_to_roll([(60, 64), (109,)])
    with pytest.raises(ValueError, match="length 0"):
        music.notes_to_roll([])
    words = HMM(CategoricalEmission(2, 10))
    with pytest.raises(ValueError, match="symbol id 10 is outside the vocabulary"):
        words.log_likelihood(torch.tensor([[1, 10]]))
    assert torch.isfinite(words.log_likelihood(torch.tensor([[1, -1]]), torch.tensor([[True, False]]))).all()
    with pytest.raises(ValueError, match="inference"):
        HMM(BernoulliEmission(2, 3), inference="slow")
    with pytest.raises(ValueError, match="length 0"):
        pad_ids([[1, 2], []])
    with pytest.raises(ValueError, match=r"shape \(N, T, 3\)"):  # an 89th key, or any wrong width
        hmm.log_likelihood(torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="symbol id -1 is outside the vocabulary"):
        words.log_likelihood(torch.tensor([[1, -1]]))
    with pytest.raises(ValueError, match="integer x"):
        words.log_likelihood(torch.zeros(1, 2))
    log_init, log_trans, log_emit = random_tables(2, 4, 3, seed=0)
    for fn in (inf.forward_log_likelihood, inf.viterbi, inf.posterior_marginals, inf.sample_posterior):
        with pytest.raises(ValueError, match=r"mask has shape \(2, 3\)"):
            fn(log_init, log_trans, log_emit, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="log_trans"):
        inf.forward_log_likelihood(log_init, log_trans[:2], log_emit)
    pack = inf.pack_sequences(torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"emit must have shape \(8, K\), one row per packed step"):
        inf.packed_log_likelihood(log_init, log_trans, log_emit.reshape(8, 3)[:5], pack)
    with pytest.raises(ValueError, match="log_trans"):
        inf.packed_log_likelihood(log_init, log_trans[:2], log_emit.reshape(8, 3), pack)
    with pytest.raises(TypeError, match="pack_sequences"):
        inf.packed_log_likelihood(log_init, log_trans, log_emit.reshape(8, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="length 0"):
        inf.viterbi(log_init, log_trans, log_emit[:, :0])
    markov = HMM(BernoulliEmission(2, 3), inference="markov")  # the readable path checks the same way
    with pytest.raises(ValueError, match="0/1"):
        markov.objective().differentiable_loss(markov.model, markov.guide, torch.full((1, 2, 3), 2.0))
    with pytest.raises(ValueError, match="mask has shape"):
        markov.objective().differentiable_loss(markov.model, markov.guide, torch.zeros(1, 2, 3), torch.ones(1, 3))


# ----------------------------------------------------------------------------- data

def test_jsb_pickle_loader(shared_data):
    data = music.load_jsb_pickle(shared_data / "jsb_chorales.pickle")
    assert (len(data.train), len(data.valid), len(data.test)) == (229, 76, 77)
    x, mask = music.pad_rolls(data.train)
    assert x.shape[2] == 88 and int(mask.sum()) == sum(len(r) for r in data.train)
    reduced, keys = music.keep_used_keys(data)
    assert len(keys) == 51 and reduced.train[0].shape[1] == 51
    with pytest.raises(FileNotFoundError, match="jsb_chorales.pickle"):
        music.load_jsb_pickle(shared_data / "nope.pickle")


def test_music21_chorales_are_cached(tmp_path, monkeypatch):
    pytest.importorskip("music21")
    data = music.load_music21_chorales(limit=3, cache_dir=tmp_path)
    rolls = data.train + data.valid + data.test
    assert len(rolls) == 3 and all(r.shape[1] == 88 and r.sum() > 0 for r in rolls)
    monkeypatch.setattr(music, "parse_score", lambda p: pytest.fail("parsed again despite the cache"))
    again = music.load_music21_chorales(limit=3, cache_dir=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(again.train, data.train))


def test_music21_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "music21", None)
    with pytest.raises(ImportError, match=r"pyro_lvm\[music\]"):
        music.chorale_paths()


def test_masc_reader(tmp_path):
    path = tmp_path / "masc_tagged.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("masc_tagged/written/a.txt", "The_DT dog_NN barks_VBZ ._. \n\nA_DT cat_NN ._.\n")
        z.writestr("masc_tagged/spoken/b.txt", "Um_UH dog_NN \n")
    corpus = load_masc_tagged(path)
    assert corpus.summary() == {"sentences": 3, "tokens": 9, "vocab": 7, "tags": 5}
    x, mask, tags = corpus.batches(batch_tokens=100)[0]
    assert x.shape == tags.shape == mask.shape and int(mask.sum()) == 9
    with pytest.raises(FileNotFoundError):
        load_masc_tagged(tmp_path / "missing.zip")
    # Words seen once become spelling classes (computed before lowercasing); "dog" (twice) stays.
    shaped = load_masc_tagged(path, lowercase=True, min_count=2, rare="shape")
    assert shaped.vocab == sorted(["dog", ".", "<unk-cap>", "<unk-s>", "<unk>"])
    assert [shaped.vocab[i] for i in shaped.words[1]] == ["<unk-cap>", "dog", "<unk-s>", "."]  # files in name order
    with pytest.raises(ValueError, match="rare must be"):
        load_masc_tagged(path, rare="drop")


def test_word_features_exact():
    features, names = word_features(["Dogs", "2-day", "a"], suffix_lengths=(1, 2))
    rows = {tuple(sorted(names[j] for j in features.to_dense()[i].nonzero().squeeze(1).tolist())) for i in range(3)}
    assert rows == {("bias", "capital", "suffix1=s", "suffix2=gs", "word=Dogs"),
                    ("bias", "digit", "hyphen", "suffix1=y", "suffix2=ay", "word=2-day"),
                    ("bias", "word=a")}
    # Identity features alone make the log-linear emission an ordinary categorical one.
    emission = FeatureCategoricalEmission(2, torch.eye(3).to_sparse())
    plain = CategoricalEmission(2, 3)
    with torch.no_grad():
        plain.logits.copy_(emission.weight)
    x = torch.tensor([[0, 2, 1]])
    assert torch.allclose(emission.log_likelihoods(x), plain.log_likelihoods(x))
    with pytest.raises(ValueError, match=r"\(V, F\) matrix"):
        FeatureCategoricalEmission(2, torch.ones(3))


def test_word_shapes():
    assert [word_shape(w) for w in ("Reframing", "re-elected", "1990s", "...", "quickly", "Obama", "cats", "is")] == [
        "<unk-cap-ing>", "<unk-hyph-ed>", "<unk-num>", "<unk-punct>", "<unk-ly>", "<unk-cap>", "<unk-s>", "<unk>"]


def test_tagging_scores_exact():
    gold = torch.tensor([0, 0, 1, 1, 2, 2]).numpy()
    assert tagging_scores(torch.tensor([2, 2, 0, 0, 1, 1]).numpy(), gold, 3, 3) == {
        "many_to_one": 1.0, "one_to_one": 1.0, "v_measure": 1.0}
    # Two states both mapped to tag 0 by many-to-one; one-to-one can use only one of them.
    scores = tagging_scores(torch.tensor([0, 1, 2, 2, 2, 2]).numpy(), gold, 3, 3)
    assert scores["many_to_one"] == pytest.approx(4 / 6) and scores["one_to_one"] == pytest.approx(3 / 6)


# ----------------------------------------------------------------------------- the task (its example: test_examples_sequences.py)

def test_hmm_chorales_task(tmp_path):
    import argparse

    from pyro_lvm.tasks import hmm_chorales as example

    pytest.importorskip("music21")
    parser = argparse.ArgumentParser()
    example.add_arguments(parser)
    args = parser.parse_args(["--limit", "6", "--cache-dir", str(tmp_path / "cache"), "--states", "3", "--hidden", "4",
                              "--iterations", "3", "--lr", "0.05", "--batch-size", "4", "--out", str(tmp_path / "run")])
    metrics = example.main(args)
    assert metrics["iterations"] == 3 and metrics["test_nll_per_step"] > 0
    assert all(Path(f).stat().st_size > 1000 for f in metrics["figures"])
    args.emission, args.iterations, args.no_figures, args.overwrite = "neural", 1, True, True
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["emission"] == "bernoulli"
    assert example.main(args)["emission"] == "neural"
    # The Bayesian HMM: its transition rows summarised by ArviZ from guide draws.
    args.emission, args.parameters, args.iterations = "bernoulli", "bayes", 2
    summary = Path(example.main(args)["posterior_summary"]).read_text().splitlines()
    assert summary[0].startswith(",mean,sd") and len(summary) == 1 + 3 * 3 and "trans[s0, s2]" in summary[3]
    args.trainer = "em"
    with pytest.raises(ValueError, match="with --parameters bayes use --trainer adam"):
        example.main(args)


def test_pos_induction_example_and_cli(tmp_path):
    from pyro_lvm.cli import main as cli_main

    out = tmp_path / "pos"
    assert cli_main(["train", "pos_induction", "--toy-sentences", "150", "--states", "7", "--iterations", "30",
                     "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["many_to_one"] > 0.6 and metrics["history"][-1] > metrics["history"][0]
    assert (out / "transition_matrix.png").is_file() and (out / "state_tag_counts.png").is_file()
    # The feature HMM through the same command: EM with an L-BFGS M-step, and Adam on the fast path.
    for trainer in ("em", "adam"):
        assert cli_main(["train", "pos_induction", "--toy-sentences", "150", "--states", "7", "--iterations", "10",
                         "--emission", "features", "--trainer", trainer, "--lr", "0.1", "--no-figures",
                         "--out", str(out / trainer)]) == 0
        features = json.loads((out / trainer / "metrics.json").read_text())
        assert features["emission"] == "features" and features["history"][-1] > features["history"][0]


# ----------------------------------------------------------------------------- full-data scaling

@pytest.mark.parametrize("inference", ["fast", "markov"])
def test_hmm_full_data_objective_is_the_old_num_sequences_scaling_times_n_over_b(inference):
    """The old ``num_sequences=N`` scaled the chain's global terms by ``b / N``; the shared rule
    (``objective(num_datapoints=N)``) scales the sequences' terms by ``N / b`` instead: the same
    objective times ``N / b``, loss and gradients. The deprecated argument now gives the new one."""
    from pyro.poutine.messenger import Messenger

    class OldScaling(Messenger):  # the code before, written out: global sites times b / N
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def _pyro_sample(self, msg):
            if not any(f.name == "sequences" for f in msg["cond_indep_stack"]):
                msg["scale"] = msg["scale"] * self.factor

    torch.manual_seed(0)
    x = torch.randint(0, 6, (5, 7))
    mask = torch.ones(5, 7, dtype=torch.bool)
    b, n = x.shape[0], 40
    hmm = HMM(CategoricalEmission(3, 6), inference=inference, parameters="bayes", concentration=2.0)

    def loss_and_grads(elbo, model, guide):
        pyro.set_rng_seed(1)
        hmm.zero_grad()
        loss = elbo.differentiable_loss(model, guide, x, mask)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in hmm.parameters() if p.grad is not None]

    old_model, old_guide = OldScaling(b / n)(hmm.model), OldScaling(b / n)(hmm.guide)
    old, g_old = loss_and_grads(hmm.objective(), old_model, old_guide)
    new, g_new = loss_and_grads(hmm.objective(num_datapoints=n), hmm.model, hmm.guide)
    assert new.item() == pytest.approx(n / b * old.item(), rel=1e-5)
    for a, c in zip(g_new, g_old):
        torch.testing.assert_close(a, n / b * c, rtol=1e-4, atol=1e-5)
    with pytest.warns(DeprecationWarning, match="objective\\(num_datapoints=N\\)"):
        deprecated = HMM(CategoricalEmission(3, 6), inference=inference, parameters="bayes", concentration=2.0,
                         num_sequences=n)
    deprecated.load_state_dict(hmm.state_dict())
    pyro.set_rng_seed(1)
    same = deprecated.objective().differentiable_loss(deprecated.model, deprecated.guide, x, mask)
    assert same.item() == pytest.approx(new.item(), rel=1e-5)
    with pytest.warns(DeprecationWarning, match="objective"):
        assert type(hmm.elbo()) is type(hmm.objective())
