"""Topic models: bag-of-words pipeline, Laplace prior, enumerated == collapsed LDA, NPMI,
planted-topic recovery, held-out likelihood, bad input, the task and example script."""

import argparse
import io
import json
import math
import subprocess
import sys
import zipfile
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import given, settings, strategies as st

from pyro_lvm import fit, set_seed
from pyro_lvm.infer.scaling import full_data_elbo
from pyro_lvm.data.bow import (BowCorpus, build_vocabulary, check_counts, check_same_vocabulary, corpus_from_texts,
                               count_matrix, load_nvdm, read_texts, tokenize)
from pyro_lvm.models.topic import (LDA, BagOfWords, ProdLDA, counts_to_tokens, laplace_dirichlet_prior,
                                   log_likelihood_enumerated_brute_force)
from pyro_lvm.models.topic.metrics import (heldout_log_likelihood, npmi_coherence, perplexity, top_word_ids, top_words,
                                           topic_diversity)

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- bag of words

def test_tokenize_and_vocabulary_cutoffs():
    assert tokenize("Sydney's fires, 2001: the BIG ones!", stop_words={"the"}) == ["sydney", "fires", "big", "ones"]
    docs = [["a1", "b", "c"], ["a1", "b"], ["a1", "d"], ["a1", "b", "e", "e"]]
    # df: a1=4, b=3, c=1, d=1, e=1; max_df=0.9 drops a1 (in 4/4 docs), min_df=2 drops c, d, e
    assert build_vocabulary(docs, min_df=2, max_df=0.9) == ["b"]
    assert build_vocabulary(docs, min_df=1, max_df=1.0, max_vocab=2) == ["a1", "b"]
    counts = count_matrix(docs, ["b", "e"])
    assert counts.tolist() == [[1, 0], [1, 0], [0, 0], [1, 2]]


def test_empty_documents_are_dropped_and_counted():
    texts = ["fire fire smoke", "cricket match", "fire smoke", "zzz qqq", "cricket match wicket"]
    corpus = corpus_from_texts(texts, min_df=2, max_df=1.0, stop_words=None)
    assert sorted(corpus.vocab) == ["cricket", "fire", "match", "smoke"]
    assert len(corpus) == 4 and corpus.dropped == 1          # "zzz qqq" has no vocabulary word
    with pytest.raises(ValueError, match="1 of 5 documents are empty"):
        corpus_from_texts(texts, min_df=2, max_df=1.0, stop_words=None, drop_empty=False)


def test_empty_vocabulary_after_cutoffs_is_refused():
    with pytest.raises(ValueError, match="vocabulary is empty after the document-frequency cut-offs"):
        corpus_from_texts(["alpha beta", "gamma delta"], min_df=2)


@pytest.mark.parametrize("counts, message", [
    (torch.tensor([[1.0, -1.0]]), "negative counts"),
    (torch.tensor([[1.0, 0.5]]), "whole-number"),
    (torch.tensor([[1.0, float("nan")]]), "NaN"),
    (torch.tensor([[1.0, float("inf")]]), "NaN or inf"),
    (torch.tensor([[float("-inf"), 1.0]]), "NaN or inf"),
    (torch.tensor([[2.0, -0.5]]), "negative counts"),
    (torch.tensor([[1, 2]]), "floating-point"),
    (torch.ones(3), "shape"),
    (torch.ones(2, 3), "vocabulary mismatch"),
])
def test_bad_counts_are_named(counts, message):
    with pytest.raises(ValueError, match=message):
        check_counts(counts, vocab_size=2)
    if counts.dim() == 2 and counts.is_floating_point():
        for model in (ProdLDA(2, 2, hidden=4), LDA(2, 2, hidden=4)):
            with pytest.raises(ValueError, match=message):
                model.model(counts)


@pytest.mark.parametrize("counts", [torch.tensor([[0.0, 3.0], [-0.0, 1e6]]), torch.zeros(0, 2),
                                    torch.tensor([[1.0, 2.0]], dtype=torch.float64)])
def test_valid_counts_pass_the_check_unchanged(counts):
    assert check_counts(counts, vocab_size=2) is counts


def test_vocabulary_mismatch_between_splits():
    a = BowCorpus(torch.ones(2, 2), ["x", "y"])
    check_same_vocabulary(a, BowCorpus(torch.ones(1, 2), ["x", "y"]))
    with pytest.raises(ValueError, match="vocabulary mismatch.*1 test words not in training"):
        check_same_vocabulary(a, BowCorpus(torch.ones(1, 2), ["x", "z"]))
    with pytest.raises(ValueError, match="different order"):
        check_same_vocabulary(a, BowCorpus(torch.ones(1, 2), ["y", "x"]))


def test_split_is_by_document_and_restrict_drops_empty():
    corpus = BowCorpus(torch.eye(10) + torch.eye(10).roll(1, 1), [f"w{i}" for i in range(10)])
    train, test = corpus.split(0.3, seed=1)
    assert len(train) == 7 and len(test) == 3
    rows = {tuple(r.tolist()) for r in torch.cat([train.counts, test.counts])}
    assert rows == {tuple(r.tolist()) for r in corpus.counts}
    small = corpus.restrict(["w0"])                       # documents 0 and 9 contain w0
    assert len(small) == 2 and small.dropped == 8


def test_nvdm_reader_ids_start_at_one(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("bow/vocab.new", "apple 5\nbanana 3\ncherry 1\n")
        z.writestr("bow/train.feat", "1 1:2 3:1\n2 2:4\n")
        z.writestr("bow/test.feat", "1 3:2\n")
    path = tmp_path / "bow.zip"
    path.write_bytes(buf.getvalue())
    train, test = load_nvdm(path)
    assert train.vocab == ["apple", "banana", "cherry"]
    assert train.counts.tolist() == [[2, 0, 1], [0, 4, 0]] and train.labels.tolist() == [1, 2]
    assert test.counts.tolist() == [[0, 0, 2]]
    # stop words leave both splits' vocabulary; a document left empty is dropped and counted
    train, test = load_nvdm(path, stop_words=["apple"])
    assert train.vocab == test.vocab == ["banana", "cherry"]
    assert train.counts.tolist() == [[0, 1], [4, 0]] and test.counts.tolist() == [[0, 2]]
    with pytest.raises(ValueError, match="every one of the 1 documents is empty"):
        load_nvdm(path, stop_words=["cherry"])                        # nothing left of the test split
    assert load_nvdm(path, stop_words="english")[0].vocab == ["apple", "banana", "cherry"]
    bad = tmp_path / "bad"
    (bad / "x").mkdir(parents=True)
    (bad / "x" / "vocab.new").write_text("a 1\n")
    (bad / "x" / "train.feat").write_text("1 2:1\n")
    (bad / "x" / "test.feat").write_text("1 1:1\n")
    with pytest.raises(ValueError, match="word id 2 outside 1..1"):
        load_nvdm(bad)


def test_read_texts(tmp_path):
    (tmp_path / "a.txt").write_text("first document")
    (tmp_path / "b.txt").write_text("  ")
    assert read_texts(tmp_path) == ["first document"]
    f = tmp_path / "lines.txt"
    f.write_text("one\n\ntwo\n")
    assert read_texts(f) == ["one", "two"]
    with pytest.raises(FileNotFoundError):
        read_texts(tmp_path / "missing")


def test_20ng_from_shared_data(shared_data):
    train, test = load_nvdm(shared_data / "20ng.zip")
    assert (len(train), len(test), len(train.vocab)) == (11268, 7505, 2000)
    assert train.vocab[:3] == ["who", "out", "which"]


def test_embedded_corpus_loads():
    pytest.importorskip("gensim")
    from pyro_lvm.data.bow import load_lee_background

    train, test = load_lee_background()
    assert len(train) + len(test) == 300 and train.vocab == test.vocab
    assert "bushfire" in train.vocab or "fires" in train.vocab


# ----------------------------------------------------------------------------- distributions and priors

def test_bag_of_words_is_multinomial_without_coefficient():
    logits = torch.randn(3, 5)
    x = torch.tensor([[1.0, 0, 2, 0, 0], [0, 0, 0, 0, 4], [1, 1, 1, 1, 1]])
    coef = torch.lgamma(x.sum(-1) + 1) - torch.lgamma(x + 1).sum(-1)
    expected = dist.Multinomial(logits=logits, validate_args=False).log_prob(x) - coef
    assert torch.allclose(BagOfWords(logits).log_prob(x), expected, atol=1e-5)
    draws = BagOfWords(logits, total_count=torch.tensor([3, 7, 0])).sample((4,))
    assert draws.shape == (4, 3, 5) and draws.sum(-1).tolist() == [[3, 7, 0]] * 4


def test_counts_to_tokens_round_trip():
    counts = torch.tensor([[2.0, 0, 1], [0, 0, 0], [0, 3, 0]])
    tokens, mask = counts_to_tokens(counts)
    assert tokens.shape == (3, 3) and mask.sum(1).tolist() == [3, 0, 3]
    back = torch.zeros(3, 3).index_put_((torch.arange(3)[:, None].expand(3, 3)[mask], tokens[mask]),
                                        torch.ones(int(mask.sum())), accumulate=True)
    assert torch.equal(back, counts)


def test_laplace_prior_matches_its_formula_and_is_the_laplace_approximation():
    alpha = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    mu, sigma2 = laplace_dirichlet_prior(alpha)
    k = 4
    hand_mu = [math.log(a) - sum(math.log(b) for b in alpha.tolist()) / k for a in alpha.tolist()]
    hand_s2 = [(1 / a) * (1 - 2 / k) + sum(1 / b for b in alpha.tolist()) / k ** 2 for a in alpha.tolist()]
    assert torch.allclose(mu, torch.tensor(hand_mu, dtype=torch.float64))
    assert torch.allclose(sigma2, torch.tensor(hand_s2, dtype=torch.float64))
    # Dirichlet density in the softmax basis h (Jacobian included): prod_k softmax(h)_k ** alpha_k
    neg_log = lambda h: -(alpha * h.log_softmax(-1)).sum()
    grad = torch.autograd.functional.jacobian(neg_log, mu)
    assert torch.allclose(grad, torch.zeros(k, dtype=torch.float64), atol=1e-12)     # mu is the mode
    hess = torch.autograd.functional.hessian(neg_log, mu)
    centre = torch.eye(k, dtype=torch.float64) - 1.0 / k
    cov = centre @ torch.diag(1 / alpha) @ centre
    assert torch.allclose(cov.diagonal(), sigma2)                   # the formula is diag(P A^-1 P) ...
    assert torch.allclose(hess @ cov @ hess, hess, atol=1e-10)      # ... a generalised inverse of the Hessian


def test_laplace_prior_moments_approach_dirichlet_for_large_k():
    # E[log theta_k]: exact for the Dirichlet (digamma), Monte Carlo for softmax(Normal(mu, sigma2)).
    gaps, offdiag = [], []
    for k in (3, 30, 300):
        alpha = torch.ones(k, dtype=torch.float64)
        mu, sigma2 = laplace_dirichlet_prior(alpha)
        g = torch.Generator().manual_seed(0)
        h = mu + sigma2.sqrt() * torch.randn(20000, k, generator=g, dtype=torch.float64)
        e_log_ln = h.log_softmax(-1).mean()
        e_log_dir = torch.digamma(alpha[0]) - torch.digamma(alpha.sum())
        gaps.append(float(abs(e_log_ln - e_log_dir) / abs(e_log_dir)))
        centre = torch.eye(k, dtype=torch.float64) - 1.0 / k
        cov = centre @ torch.diag(1 / alpha) @ centre
        offdiag.append(float(cov[0, 1].abs() / cov[0, 0]))          # what the diagonal formula ignores
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.02
    assert offdiag[0] > offdiag[1] > offdiag[2] and offdiag[2] < 0.01


# ----------------------------------------------------------------------------- enumerated == collapsed

def _delta_guide(theta, phi, enumerated):
    def guide(counts):
        with pyro.plate("topics", phi.shape[0], dim=-1):
            pyro.sample("phi", dist.Delta(phi, event_dim=1))
        with pyro.plate("documents", theta.shape[0], dim=-2 if enumerated else -1):
            pyro.sample("theta", dist.Delta(theta.unsqueeze(-2) if enumerated else theta, event_dim=1))
    return guide


@settings(max_examples=12, deadline=None)
@given(k=st.integers(2, 5), v=st.integers(2, 9), b=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_enumerated_and_collapsed_lda_agree_exactly(k, v, b, seed):
    g = torch.Generator().manual_seed(seed)
    counts = torch.poisson(2 * torch.rand(b, v, generator=g, dtype=torch.float64), generator=g)
    theta = torch.distributions.Dirichlet(torch.ones(k, dtype=torch.float64)).sample((b,))
    phi = torch.distributions.Dirichlet(torch.ones(v, dtype=torch.float64)).sample((k,))
    enum, coll = LDA(v, k, assignments="enumerated").double(), LDA(v, k, assignments="collapsed").double()
    # Delta guides: log q = 0, so the loss is -log p(words, theta, phi) for these fixed values
    enum_loss = pyro.infer.TraceEnum_ELBO(max_plate_nesting=2).loss(enum.model, _delta_guide(theta, phi, True), counts)
    coll_loss = pyro.infer.Trace_ELBO().loss(coll.model, _delta_guide(theta, phi, False), counts)
    assert enum_loss == pytest.approx(coll_loss, rel=1e-12, abs=1e-9)
    # and the collapsed likelihood is the brute-force sum over every assignment of one short document
    small = counts[0].clamp(max=1)
    small[: min(v, 3)] = 1
    small[3:] = 0
    brute = log_likelihood_enumerated_brute_force(small, theta[0], phi)
    assert float(BagOfWords((theta[0] @ phi).log()).log_prob(small)) == pytest.approx(float(brute), rel=1e-12)


def test_enumerated_and_collapsed_training_follow_the_same_path():
    # The same guide draws and the same objective value => the same gradients and parameters.
    counts, _ = planted_corpus(n_docs=40, length=20)
    losses = {}
    for assignments, elbo in (("enumerated", pyro.infer.TraceEnum_ELBO(max_plate_nesting=2)),
                              ("collapsed", pyro.infer.Trace_ELBO())):
        set_seed(0)
        model = LDA(40, 4, assignments=assignments, hidden=16)
        history = fit(model, counts, elbo=full_data_elbo(elbo, 40, data_plate="documents"), epochs=3, batch_size=20,
                      lr=1e-2, progress=False)
        losses[assignments] = history["train_loss"]
    assert losses["enumerated"] == pytest.approx(losses["collapsed"], rel=1e-4)


# ----------------------------------------------------------------------------- learning

def planted_corpus(n_docs=400, k=4, words_per=10, length=50, seed=0):
    """Documents from k disjoint planted topics of ``words_per`` words each (topic t owns words
    t*words_per .. (t+1)*words_per - 1)."""
    g = torch.Generator().manual_seed(seed)
    v = k * words_per
    phi = torch.zeros(k, v)
    for t in range(k):
        phi[t, t * words_per:(t + 1) * words_per] = 1.0 / words_per
    theta = torch._sample_dirichlet(torch.full((n_docs, k), 0.2), generator=g)
    words = torch.multinomial(theta @ phi, length, replacement=True, generator=g)
    counts = torch.zeros(n_docs, v).scatter_add_(1, words, torch.ones(n_docs, length))
    return counts, phi


def _assert_recovers(topic_word, k=4, words_per=10):
    owners = top_word_ids(topic_word, 5) // words_per                  # true topic of each top word
    assert bool((owners == owners[:, :1]).all()), owners              # each learned topic is one true topic
    assert sorted(owners[:, 0].tolist()) == list(range(k)), owners    # and every true topic is found


@pytest.mark.parametrize("posterior", ProdLDA.POSTERIORS)
def test_prodlda_recovers_planted_topics(posterior):
    counts, _ = planted_corpus()
    set_seed(0)
    model = ProdLDA(40, 4, hidden=32, posterior=posterior)
    history = fit(model, counts, elbo=pyro.infer.TraceMeanField_ELBO(), epochs=40, batch_size=50, lr=1e-2,
                  progress=False)
    assert history["train_loss"][-1] < history["train_loss"][0]
    _assert_recovers(model.topic_word_logits())


def test_collapsed_lda_recovers_planted_topics_and_heldout_bounds():
    counts, _ = planted_corpus()
    test, _ = planted_corpus(n_docs=50, seed=1)
    set_seed(0)
    model = LDA(40, 4, alpha=0.3)   # a sparse prior, as the truth (0.2)
    fit(model, counts, elbo=model.objective(num_datapoints=len(counts)), epochs=80, batch_size=50, lr=1e-2,
        progress=False)
    _assert_recovers(model.topic_word_probs())
    held = heldout_log_likelihood(model, test, num_samples=200)
    assert bool((held["log_lik"] >= held["elbo"] - 1e-4).all())      # Jensen, draw by draw
    # a word is one of 10 equally likely words of its topic: perplexity >= 10; uniform over 40 words gives 40
    ppl = perplexity(held["log_lik"], held["words"])
    assert 10 <= ppl < 30


def test_heldout_importance_sampling_matches_generic_estimator():
    from pyro_lvm.evaluation.metrics import log_likelihood

    counts, _ = planted_corpus(n_docs=30)
    set_seed(0)
    model = ProdLDA(40, 4, hidden=16)
    fit(model, counts, elbo=pyro.infer.TraceMeanField_ELBO(), epochs=20, batch_size=10, lr=1e-2, progress=False)
    ours = heldout_log_likelihood(model, counts, num_samples=2000)["log_lik"]
    generic = log_likelihood(model.eval(), counts, num_samples=2000)   # pyro_lvm.evaluation.metrics: any pair
    # two independent Monte Carlo estimates (heavy-tailed weights); a missing term would differ by tens of nats
    assert float((ours - generic).abs().max()) < 1.0
    assert float((ours - generic).abs().mean()) < 0.2


# ----------------------------------------------------------------------------- coherence and diversity

def test_npmi_matches_hand_computation():
    # words:        a  b  c
    ref = torch.tensor([[1.0, 1, 0],
                        [1, 1, 0],
                        [1, 0, 1],
                        [0, 0, 1]])
    # P(a)=3/4 P(b)=1/2 P(c)=1/2; P(a,b)=1/2 P(a,c)=1/4 P(b,c)=0
    npmi_ab = math.log((1 / 2) / (3 / 4 * 1 / 2)) / -math.log(1 / 2)
    npmi_ac = math.log((1 / 4) / (3 / 4 * 1 / 2)) / -math.log(1 / 4)
    npmi_bc = -1.0                                                       # never together
    got = npmi_coherence(torch.tensor([[0, 1, 2], [0, 1, 0]])[:1], ref)
    assert float(got[0]) == pytest.approx((npmi_ab + npmi_ac + npmi_bc) / 3, abs=1e-6)
    assert float(npmi_coherence(torch.tensor([[0, 1]]), ref)[0]) == pytest.approx(npmi_ab, abs=1e-6)
    with pytest.raises(ValueError, match="outside the reference vocabulary"):
        npmi_coherence(torch.tensor([[0, 5]]), ref)


def test_diversity_and_top_words():
    topic_word = torch.tensor([[3.0, 2, 1, 0], [0, 2, 3, 1]])
    assert top_words(topic_word, ["a", "b", "c", "d"], 2) == [["a", "b"], ["c", "b"]]
    assert topic_diversity(topic_word, 2) == pytest.approx(3 / 4)      # {a, b, c} of 4 slots
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        top_words(topic_word, ["a", "b"], 2)


@pytest.mark.parametrize("make", [lambda: ProdLDA(10, 1), lambda: LDA(10, 0), lambda: ProdLDA(10, 3, posterior="x"),
                                  lambda: LDA(10, 3, assignments="sampled")])
def test_bad_hyperparameters(make):
    with pytest.raises(ValueError, match="num_topics|posterior|assignments"):
        make()


# ----------------------------------------------------------------------------- task, CLI, example

def _task_args(tmp_path, **over):
    from pyro_lvm.tasks import topic

    parser = argparse.ArgumentParser()
    topic.add_arguments(parser)
    args = parser.parse_args(["--epochs", "2", "--samples", "5", "--draws", "10", "--hidden", "16", "--topics", "3",
                              "--quiet", "--out", str(tmp_path / "run")])
    for k, v in over.items():
        setattr(args, k, v)
    return topic, args


@pytest.mark.parametrize("model, assignments", [("prodlda", "collapsed"), ("lda", "enumerated")])
def test_topic_task_runs(tmp_path, model, assignments):
    pytest.importorskip("gensim")
    topic, args = _task_args(tmp_path, model=model, assignments=assignments, no_figures=model == "lda")
    metrics = topic.main(args)
    assert metrics["model"] == model and len(metrics["top_words"]) == 3
    assert metrics["test"]["perplexity_is"] <= metrics["test"]["perplexity_elbo"] * 1.01
    assert -1 <= metrics["npmi"] <= 1 and 0 < metrics["diversity"] <= 1
    out = tmp_path / "run"
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2
    assert (out / "theta_summary.csv").read_text().startswith(",mean,sd")
    if model == "prodlda":
        for name in ("coherence_per_topic", "theta_forest", "training_curves"):
            assert (out / f"{name}.png").stat().st_size > 1000


def test_topic_task_prints_top_words(tmp_path):
    pytest.importorskip("gensim")
    result = subprocess.run([sys.executable, "-m", "pyro_lvm", "train", "prodlda", "--epochs", "1",
                             "--samples", "3", "--draws", "5", "--hidden", "8", "--topics", "2", "--no-figures",
                             "--out", str(tmp_path / "ex")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "top 10 words per topic" in result.stdout and len(result.stdout.splitlines()) >= 3


def test_topic_task_needs_a_path_for_20ng(tmp_path):
    topic, args = _task_args(tmp_path, dataset="20ng")
    with pytest.raises(ValueError, match="needs a path"):
        topic.main(args)


# ----------------------------------------------------------------------------- full-data scaling

@pytest.mark.parametrize("assignments", LDA.ASSIGNMENTS)
def test_lda_full_data_objective_is_the_old_num_docs_scaling(assignments):
    """objective(num_datapoints=N) (the shared DatasetScale rule) gives the loss and gradients of
    the deprecated LDA(num_docs=N), whose model subsamples a plate of N documents (Pyro's own
    scaling, the code before); and more than the unscaled loss."""
    counts, _ = planted_corpus(n_docs=12, length=8)
    batch, n = counts[:5], 60
    set_seed(0)
    new = LDA(40, 4, assignments=assignments, hidden=8)
    with pytest.warns(DeprecationWarning, match="num_datapoints"):
        old = LDA(40, 4, assignments=assignments, hidden=8, num_docs=n)
    old.load_state_dict(new.state_dict())

    def loss_and_grads(pair, elbo):
        pyro.set_rng_seed(3)
        pair.zero_grad()
        loss = elbo.differentiable_loss(pair.model, pair.guide, batch)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in pair.parameters() if p.grad is not None]

    plain = new.objective()
    got, g_got = loss_and_grads(new, new.objective(num_datapoints=n))
    ref, g_ref = loss_and_grads(old, plain)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    unscaled, _ = loss_and_grads(new, plain)
    assert got.item() > unscaled.item() + 1.0
    with pytest.warns(DeprecationWarning, match="objective"):
        assert type(new.elbo()) is type(plain)
