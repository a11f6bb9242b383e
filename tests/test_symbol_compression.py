"""Miao & Blunsom's compression prior on the symbol-sequence pair: the pointer only picks source
words, the LM prior's probability against a direct computation, the pair under Pyro's ELBOs and the
estimators by name, the refusals and training (the command line: tests/test_cli.py)."""

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO

from pyro_lvm import fit
from pyro_lvm.data.text import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Vocabulary, encode_sentences
from pyro_lvm.infer.discrete.estimators import DiscreteELBO, GraphELBO
from pyro_lvm.infer.discrete.registry import ESTIMATORS
from pyro_lvm.models.text.compression_prior import LanguageModelPrior, WordLanguageModel, to_symbols
from pyro_lvm.models.text.symbol_sequences import SymbolSequenceAutoencoder
from pyro_lvm.validation import InvalidArgumentError

SENTENCES = [s.split() for s in ["the cat sat", "a dog ran far", "the dog sat on a mat", "a cat ran",
                                 "dogs sat", "the mat", "a cat sat on the mat", "the dog ran"]]


@pytest.fixture
def data():
    vocab = Vocabulary.build(SENTENCES)
    return vocab, encode_sentences(SENTENCES, vocab)


def _pair(vocab, L=2, K=None, seed=0, **kw):
    torch.manual_seed(seed)
    return SymbolSequenceAutoencoder(len(vocab), n_symbols=L, alphabet=K, embed_dim=8, hidden_dim=8, symbol_dim=4,
                                     max_len=10, prior="language_model", **kw)


def test_pair_runs_under_pyros_elbos(data):
    vocab, tokens = data
    pair = _pair(vocab)
    assert pair.alphabet == len(vocab) and pair.config()["prior"] == "language_model"
    # (TraceMeanField_ELBO, which takes reparameterised guides only, runs under the relaxed estimators: below)
    for elbo in (Trace_ELBO(), GraphELBO()):  # GraphELBO: TraceGraph_ELBO with its surrogate as a loss
        loss = elbo.differentiable_loss(pair.model, pair.guide, tokens)
        loss.backward()
        assert torch.isfinite(loss) and pair.queries.grad is not None and torch.isfinite(pair.queries.grad).all()
        assert float(pair.queries.grad.abs().sum()) > 0
        pair.zero_grad()
    trace = pyro.poutine.trace(pair.guide).get_trace(tokens)
    assert trace.nodes["z"]["value"].shape == (len(tokens), 2, len(vocab))


def test_latent_words_are_words_of_the_source(data):
    vocab, tokens = data
    K = 8  # the specials and 4 words; the other words of these sentences are <unk> for the code
    pair = _pair(vocab, L=3, K=K)
    rare_only = encode_sentences([["dogs", "far", "mat"]], vocab)  # no word among the K - 4 most frequent
    assert bool((rare_only[0, 1:-1] >= K).all())
    batch = torch.cat([tokens, F.pad(rare_only, (0, tokens.shape[1] - rare_only.shape[1]))])
    for _ in range(20):
        z = pyro.poutine.trace(pair.guide).get_trace(batch).nodes["z"]["value"]  # (B, L, K) one-hot
        assert bool((z.sum(-1) == 1).all())
        for row, code in zip(batch.tolist(), z.argmax(-1).tolist()):
            words = {w for w in row if w not in (PAD_ID, BOS_ID, EOS_ID)}
            in_alphabet = {w for w in words if w < K}
            allowed = in_alphabet or {UNK_ID}  # <unk> only where no word of the sentence is in the alphabet
            assert set(code) <= allowed, (row, code)
    # the most probable code too, and with the whole vocabulary every choice is a source word
    full = _pair(vocab, L=3)
    for row, code in zip(tokens.tolist(), full.symbols(tokens).tolist()):
        assert set(code) <= set(row) - {PAD_ID, BOS_ID, EOS_ID}


def _direct_log_prob(lm: WordLanguageModel, ids: list[int]) -> float:
    """log p(c) step by step: the LSTM fed <bos> then the code's words, next-word softmax over <unk> and words."""
    words = [k for k in range(lm.alphabet) if k not in (PAD_ID, BOS_ID, EOS_ID)]
    state, prev, total = None, BOS_ID, 0.0
    for k in ids:
        out, state = lm.rnn(lm.embedding.weight[prev].view(1, 1, -1), state)
        logits = lm.output(out[0, 0])
        total += (logits[k] - torch.logsumexp(logits[words], 0)).item()
        prev = k
    return total


def test_language_model_prior_against_a_direct_computation():
    torch.manual_seed(1)
    lm = WordLanguageModel(alphabet=6, embed_dim=3, hidden_dim=4)
    prior = LanguageModelPrior(lm, n_symbols=3, batch_shape=(2,))
    codes = torch.tensor([[4, 5, 1], [1, 1, 4]])
    with torch.no_grad():
        got = prior.log_prob(F.one_hot(codes, 6).float())
    assert got.shape == (2,)
    for g, c in zip(got.tolist(), codes.tolist()):
        assert g == pytest.approx(_direct_log_prob(lm, c), abs=1e-5)
    # a distribution over the codes of 3 words from {<unk>, w4, w5}: it sums to one, non-words get nothing
    all_codes = F.one_hot(torch.tensor(list(itertools.product(range(6), repeat=3))), 6).float()
    with torch.no_grad():
        total = LanguageModelPrior(lm, 3).log_prob(all_codes).exp()
    assert float(total.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(total[(all_codes.argmax(-1) == EOS_ID).any(-1)].sum()) == 0.0
    # samples are words, with the batch shape; log_prob broadcasts over sample dims
    sample = prior.sample((5,))
    assert sample.shape == (5, 2, 3, 6) and not bool(torch.isin(sample.argmax(-1), torch.tensor([0, 2, 3])).any())
    assert prior.log_prob(sample).shape == (5, 2)


def test_exact_marginal_bounds_the_elbo_on_a_tiny_code(data):
    vocab, tokens = data
    pair = _pair(vocab, L=1)
    assert pair.alphabet ** pair.n_symbols <= pair.max_codes
    exact = pair.log_marginal(tokens)
    pyro.set_rng_seed(0)
    elbo = -pair.negative_elbo(tokens, num_samples=200)
    assert bool((exact >= elbo - 0.05).all())


def test_refusals(data):
    vocab, tokens = data
    n = len(vocab)
    with pytest.raises(InvalidArgumentError, match=f"alphabet K={n + 1} is larger than the vocabulary \\({n} tokens\\)"):
        _pair(vocab, K=n + 1)
    with pytest.raises(InvalidArgumentError, match="n_symbols must be a positive int"):
        _pair(vocab, L=0)
    for k in (0, 1, 4):
        with pytest.raises(InvalidArgumentError, match="alphabet .* must be an int >= 5"):
            _pair(vocab, K=k)
    with pytest.raises(InvalidArgumentError, match="prior must be one of"):
        SymbolSequenceAutoencoder(n, prior="lm")
    with pytest.raises(InvalidArgumentError, match="prior='uniform'"):
        SymbolSequenceAutoencoder(n, alphabet=3).pretrain_prior(tokens)
    # the pointer site is a OneHotCategorical (relaxable); the LM prior has no relaxed density
    pair = _pair(vocab)
    for name in ("gumbel-concrete", "rebar", "relax"):
        with pytest.raises(ValueError, match=f"the '{name}' estimator does not apply to site 'z'.*LanguageModelPrior "
                                             "is not a Bernoulli or OneHotCategorical.*straight-through") as err:
            DiscreteELBO(name, max_plate_nesting=1).differentiable_loss(pair.model, pair.guide, tokens)
        # the estimators it offers instead: every registered one that leaves the model's site alone
        offered = str(err.value).split("only need its log_prob: ", 1)[1].splitlines()[0].split(", ")
        assert set(offered) == {n for n, e in ESTIMATORS.items() if not e.rewrites_model}
        assert not {"gumbel-concrete", "rebar", "relax"} & set(offered)


def test_prior_pretrains_then_stays_fixed_and_training_lowers_the_loss(data):
    vocab, tokens = data
    pair = _pair(vocab)
    losses = pair.pretrain_prior(tokens, epochs=30, batch_size=4)
    assert losses[-1] < losses[0] - 0.2
    assert not any(p.requires_grad for p in pair.language_model.parameters())  # frozen again
    before = {k: v.clone() for k, v in pair.language_model.state_dict().items()}
    pyro.clear_param_store()
    history = fit(pair, tokens, elbo=DiscreteELBO("straight-through", max_plate_nesting=1), epochs=40, batch_size=8,
                  lr=1e-2, seed=0)
    loss = history["train_loss"]
    assert sum(loss[-5:]) / 5 < sum(loss[:5]) / 5 - 1.0
    assert all(torch.equal(before[k], v) for k, v in pair.language_model.state_dict().items())
    # trained jointly, the prior moves with the ELBO
    joint = _pair(vocab, train_prior=True)
    start = joint.language_model.output.weight.detach().clone()
    fit(joint, tokens, elbo=joint.objective("score-function-baseline"), epochs=2, batch_size=8, seed=0)
    assert not torch.equal(start, joint.language_model.output.weight)


@pytest.mark.parametrize("estimator", ["score-function", "score-function-baseline", "rloo", "gumbel",
                                       "straight-through", "enumerate"])
def test_fit_trains_it_by_estimator_name(data, estimator):
    vocab, tokens = data
    pair = _pair(vocab, L=1)  # 1 word of 14: enumerable, so "enumerate" applies too
    pair.pretrain_prior(tokens, epochs=2, batch_size=4)
    pyro.clear_param_store()
    history = fit(pair, tokens, elbo=pair.objective(estimator), epochs=3, batch_size=4, seed=0)
    assert all(math.isfinite(v) for v in history["train_loss"])
    assert bool(torch.isfinite(pair.negative_elbo(tokens)).all())


def test_a_user_pair_with_the_lm_prior_gets_the_same_refusals_and_training(data):
    """A pair written with bare pyro.module / pyro.param and the prior distribution of the library."""
    vocab, tokens = data
    K, L = len(vocab), 2
    lm = WordLanguageModel(K, 4, 4)
    decoder = torch.nn.Linear(L * K, K)

    def model(tokens):
        pyro.module("decoder", decoder)
        with pyro.plate("data", tokens.shape[0]):
            z = pyro.sample("z", LanguageModelPrior(lm, L, (tokens.shape[0],)))
            logits = decoder(z.flatten(-2)).unsqueeze(-2).expand(*z.shape[:-2], tokens.shape[1] - 1, K)
            pyro.sample("x", dist.Categorical(logits=logits).to_event(1), obs=tokens[:, 1:])

    def guide(tokens):
        logits = pyro.param("q_logits", torch.zeros(L, K))
        with pyro.plate("data", tokens.shape[0]):
            pyro.sample("z", dist.OneHotCategorical(logits=logits).expand([tokens.shape[0], L]).to_event(1))

    pyro.clear_param_store()
    with pytest.raises(ValueError, match="'gumbel-concrete' estimator does not apply to site 'z'"):
        DiscreteELBO("gumbel-concrete", max_plate_nesting=1).differentiable_loss(model, guide, tokens)
    class UserPair:
        pass

    user = UserPair()
    user.model, user.guide = model, guide
    pyro.clear_param_store()
    history = fit(user, tokens, elbo=DiscreteELBO("straight-through", max_plate_nesting=1), epochs=2,
                  batch_size=8)
    assert all(math.isfinite(v) for v in history["train_loss"])


def test_to_symbols_maps_rare_words_to_unk():
    assert to_symbols(torch.tensor([0, 2, 5, 9, 3]), 6).tolist() == [0, 2, 5, UNK_ID, 3]
