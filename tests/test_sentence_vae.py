"""Sentence VAE: text pipeline, models, decoding, evaluation, checkpoints, example and CLI."""

import argparse
import itertools
import json
import math
import runpy
import warnings
import zipfile
from pathlib import Path

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from hypothesis import given, settings, strategies as st

from pyro_lvm import fit
from pyro_lvm.models.text import decoding
from pyro_lvm.cli import main as cli_main
from pyro_lvm.data.text import (BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, BucketBatchSampler, Vocabulary, bucket_loader,
                                count_tokens, encode_sentences, lengths_of, load_corpus, load_embedded_corpus, read_ptb,
                                read_sentences, simple_sentences, tokenize, tokenize_text, unk_rate)
from pyro_lvm.evaluation.metrics import elbo_terms, log_likelihood
from pyro_lvm.models.text.sentence_vae import (LSTMLanguageModel, SentenceAutoencoder, SentenceVAE, WordCategorical,
                                               check_tokens, load_sentence_model, save_sentence_model, word_dropout)
from pyro_lvm.tasks import sentence_vae as task

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = [s.split() for s in [
    "the cat sat on the mat", "a dog ran", "the dog sat", "cats and dogs ran on the mat today",
    "a cat", "the mat sat on a dog", "dogs ran", "the cat and the dog sat on a mat",
]]


@pytest.fixture
def vocab():
    return Vocabulary.build(SENTENCES)


def _models(vocab_size, **kw):
    torch.manual_seed(0)
    return [SentenceVAE(vocab_size, 8, 12, 3, **kw), SentenceAutoencoder(vocab_size, 8, 12, 3, **kw),
            LSTMLanguageModel(vocab_size, 8, 12, **({"word_keep": kw["word_keep"]} if "word_keep" in kw else {}))]


def _task_args(argv):
    parser = argparse.ArgumentParser()
    task.add_arguments(parser)
    return parser.parse_args(argv)


def _loss(model, tokens, seed=0):
    pyro.set_rng_seed(seed)
    return pyro.infer.Trace_ELBO().differentiable_loss(model.model, model.guide, tokens)


# ----------------------------------------------------------------------------- text pipeline

def test_tokenize_words_punctuation_and_numbers():
    assert tokenize("The 1,987 cats' toys -- well-known, OK!") == ["the", "N", "cats", "'", "toys", "-", "-", "well-known", ",", "ok", "!"]
    assert tokenize("Année 3.5", lower=False, numbers=None) == ["Année", "3.5"]
    assert tokenize_text("Born in N, 1,987 .") == ["born", "in", "N", ",", "N", "."]  # tokenised text stays itself
    with pytest.raises(TypeError):
        tokenize(["a"])


def test_vocabulary_cutoffs_oov_and_literal_unk():
    sents = [["b", "a", "a", "<unk>"], ["c", "a", "b"]]
    v = Vocabulary.build(sents)
    assert v.itos == [*SPECIALS, "a", "b", "c"]  # by frequency, ties alphabetical; literal <unk> is the special
    assert Vocabulary.build(sents, min_freq=2).itos == [*SPECIALS, "a", "b"]
    assert Vocabulary.build(sents, max_size=5).itos == [*SPECIALS, "a"]
    assert v.encode(["a", "zebra", "<unk>"]) == [4, UNK_ID, UNK_ID]
    assert v.decode([BOS_ID, 4, 5, EOS_ID, 6, PAD_ID]) == ["a", "b"]
    assert v.decode([BOS_ID, 4, EOS_ID], strip=False) == ["<bos>", "a", "<eos>"]
    for bad in (dict(max_size=4), dict(min_freq=0)):
        with pytest.raises(ValueError):
            Vocabulary.build(sents, **bad)
    with pytest.raises(ValueError, match="empty"):
        Vocabulary.build(sents, min_freq=10)
    with pytest.raises(ValueError, match="outside"):
        v.decode([99])


def test_vocabulary_save_load_and_mismatch(tmp_path, vocab):
    vocab.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json") == vocab
    other = Vocabulary.build(SENTENCES + [["zebra", "zebra", "zebra"]])
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        vocab.check_same(other)
    with pytest.raises(FileNotFoundError):
        Vocabulary.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a saved"):
        Vocabulary.load(tmp_path / "bad.json")


def test_readers_skip_empty_lines_and_refuse_empty_corpora(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("a b c\n\n   \nd e\n")
    assert read_sentences(f) == [["a", "b", "c"], ["d", "e"]]
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="no sentences"):
        read_sentences(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError):
        read_sentences(tmp_path / "nope.txt")
    z = tmp_path / "ptb.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for split, text in (("train", "a b\n\nc d e\n"), ("valid", "a\n"), ("test", "b c\n")):
            zf.writestr(f"__MACOSX/._ptb.{split}.txt", "\x00\x05junk")
            zf.writestr(f"ptb.{split}.txt", text)
    corpus = read_ptb(z)
    assert corpus.train == [["a", "b"], ["c", "d", "e"]] and corpus.test == [["b", "c"]]
    assert corpus.skipped["train"] == 1


def test_real_ptb_zip(shared_data):
    corpus = read_ptb(shared_data / "ptb.zip")
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (42068, 3370, 3761)
    # Mikolov's 10k types count <unk> and the end of sentence: 9,998 words + our 4 specials.
    assert len(Vocabulary.build(corpus.train)) == 9998 + 4


def test_embedded_corpus_is_real_english_and_split_deterministically():
    a, b = load_embedded_corpus(), load_embedded_corpus()
    n = len(a.train) + len(a.valid) + len(a.test)
    assert n >= 10_000 and a.train == b.train and a.test == b.test
    words = collections_counter(a.train)
    assert words.most_common(1)[0][0] == "the" and all(5 <= len(s) <= 50 for s in a.train)


def test_simple_sentences_keep_short_ones_without_rare_words():
    text = [s.split() for s in ["a b c", "a b", "a d", "a b c a b c", "b c"]]
    # counts: a 5, b 5, c 4, d 1
    assert simple_sentences(text, min_count=2, max_tokens=3) == [["a", "b", "c"], ["a", "b"], ["b", "c"]]
    assert simple_sentences(text, min_count=5, max_tokens=10) == [["a", "b"]]
    for bad in (dict(min_count=0), dict(max_tokens=0), dict(min_count=True)):
        with pytest.raises(ValueError):
            simple_sentences(text, **bad)


def test_default_corpus_and_vocabulary_leave_under_5_percent_unk():
    """The showcase's text: the Wikipedia sample's simple sentences, the training split's words."""
    args = _task_args([])
    corpus, vocab, tensors = task.prepare_data(args)
    full = load_embedded_corpus()
    assert corpus.name == "wikipedia-gensim-sample-simple" and len(corpus.train) >= 3000
    assert all(len(s) <= 30 for s in corpus.train + corpus.test)
    assert unk_rate(tensors["train"]) == 0.0 and 0.0 < unk_rate(tensors["test"]) < 0.05
    summary = task.data_summary(corpus, vocab, tensors, args)
    assert summary["unk_rate"]["test"] == pytest.approx(unk_rate(tensors["test"]), abs=1e-5)
    # The full sample with the same kind of vocabulary does not get there.
    full_vocab = Vocabulary.build(full.train, max_size=10_000)
    assert unk_rate(encode_sentences(full.test, full_vocab)) > 0.05


def test_unk_rate_counts_words_only(vocab):
    t = encode_sentences([["the", "zebra"], ["a", "cat", "quokka", "sat"]], vocab)
    assert unk_rate(t) == pytest.approx(2 / 6)


def test_a_corpus_path_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus .*nope.txt' does not exist: give 'embedded'"):
        load_corpus(str(tmp_path / "nope.txt"))


def collections_counter(sentences):
    import collections
    return collections.Counter(t for s in sentences for t in s)


def test_encode_sentences_layout_and_too_long(vocab):
    t = encode_sentences([["a", "cat"], ["the", "zebra", "sat"]], vocab)
    assert t.tolist() == [[BOS_ID, vocab.stoi["a"], vocab.stoi["cat"], EOS_ID, PAD_ID],
                          [BOS_ID, vocab.stoi["the"], UNK_ID, vocab.stoi["sat"], EOS_ID]]
    assert lengths_of(t).tolist() == [4, 5] and count_tokens(t) == 7
    long = [["the"] * 5, ["a"]]
    with pytest.warns(UserWarning, match="1 of 2 sentences"):
        assert encode_sentences(long, vocab, max_len=3).shape == (2, 5)
    assert encode_sentences(long, vocab, max_len=3, too_long="drop").shape == (1, 3)
    with pytest.raises(ValueError, match="sentence 0 has 5 tokens"):
        encode_sentences(long, vocab, max_len=3, too_long="error")
    with pytest.raises(ValueError, match="empty"):
        encode_sentences([["a"], []], vocab)
    with pytest.raises(TypeError):
        encode_sentences(["a cat"], vocab)
    with pytest.raises(ValueError, match="no sentences"):
        encode_sentences([], vocab)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=60), st.integers(1, 9), st.integers(0, 3))
def test_bucket_sampler_covers_every_index_once(lengths, batch_size, epoch):
    s = BucketBatchSampler(torch.tensor(lengths), batch_size, seed=1)
    s.set_epoch(epoch)
    batches = list(s)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert len(batches) == len(s) and all(len(b) <= batch_size for b in batches)
    # Bucketing: batches are consecutive runs of the length-sorted order.
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
    assert all(hi1 <= lo2 for (_, hi1), (lo2, _) in zip(spans, spans[1:]))
    assert batches == list(s)  # same (seed, epoch): same batches


def test_bucket_loader_trims_padding(vocab):
    t = encode_sentences(SENTENCES, vocab)
    for batch in bucket_loader(t, 3, seed=0):
        assert batch.shape[1] == int(lengths_of(batch).max())
    with pytest.raises(TypeError):
        bucket_loader(t.float(), 3)


# ----------------------------------------------------------------------------- models

def test_word_categorical_equals_categorical():
    logits = torch.randn(2, 3, 7) * 3
    v = torch.randint(0, 7, (2, 3))
    a, b = WordCategorical(logits), dist.Categorical(logits=logits)
    assert torch.allclose(a.log_prob(v), b.log_prob(v), atol=1e-5)
    assert torch.allclose(a.expand((4, 2, 3)).log_prob(v), b.log_prob(v).expand(4, 2, 3), atol=1e-5)


def test_masked_padding_changes_nothing(vocab):
    t = encode_sentences(SENTENCES, vocab)
    padded = torch.cat([t, torch.full((len(t), 7), PAD_ID)], dim=1)
    for m in _models(len(vocab)):
        assert torch.allclose(_loss(m, t), _loss(m, padded), atol=1e-4), type(m).__name__


def test_loss_equals_sentence_by_sentence_sum_without_padding(vocab):
    """Batched masked loss == each sentence alone (no padding at all), summed, + analytic KL."""
    t = encode_sentences(SENTENCES, vocab)
    vae = _models(len(vocab))[0].eval()
    guide_trace = poutine.trace(vae.guide).get_trace(t)
    z = guide_trace.nodes["z"]["value"]
    batched = pyro.infer.TraceMeanField_ELBO().differentiable_loss(vae.model, poutine.replay(vae.guide, trace=guide_trace), t)
    loc, scale = vae.encode_dist(t)
    total = 0.0
    for i, s in enumerate(SENTENCES):
        row = encode_sentences([s], vocab)
        logits = vae.decoder_logits(row[:, :-1], z[i:i + 1])
        total -= torch.log_softmax(logits, -1)[0].gather(-1, row[0, 1:, None]).sum()
        assert torch.allclose(vae.encode_dist(row)[0], loc[i:i + 1], atol=1e-5)
    kl = torch.distributions.kl_divergence(dist.Normal(loc, scale), dist.Normal(0.0, 1.0)).sum()
    assert torch.allclose(batched, total + kl, rtol=1e-5)


def test_word_dropout_keep_one_equals_none(vocab):
    t = encode_sentences(SENTENCES, vocab)
    assert word_dropout(t, 1.0) is t
    keep_one, _, lm = _models(len(vocab), word_keep=1.0)
    keep_one.train()
    without = SentenceVAE(len(vocab), 8, 12, 3)
    without.load_state_dict(keep_one.state_dict())
    without.eval()  # eval mode: word dropout never applies
    assert torch.equal(_loss(keep_one, t), _loss(without, t))
    dropped = word_dropout(t, 0.0)
    assert bool((dropped[:, 0] == BOS_ID).all()) and bool((dropped[t == PAD_ID] == PAD_ID).all())
    assert bool((dropped[(t != PAD_ID) & (t != BOS_ID)] == UNK_ID).all())
    with pytest.raises(ValueError):
        word_dropout(t, 1.5)


@settings(max_examples=15, deadline=None)
@given(st.floats(0.0, 1.0), st.integers(0, 1000))
def test_word_dropout_only_turns_words_into_unk(keep, seed):
    t = torch.randint(4, 20, (6, 9))
    t[:, 0] = BOS_ID
    t[:3, 6:] = PAD_ID
    out = word_dropout(t, keep, generator=torch.Generator().manual_seed(seed))
    changed = out != t
    assert bool((out[changed] == UNK_ID).all()) and not bool(changed[:, 0].any()) and not bool(changed[t == PAD_ID].any())


def test_word_dropout_is_used_in_training_only(vocab):
    t = encode_sentences(SENTENCES, vocab)
    vae = _models(len(vocab), word_keep=0.0)[0]
    vae.train()
    weak = _loss(vae, t)
    vae.eval()
    assert not torch.allclose(weak, _loss(vae, t))


def test_bad_input_is_refused_clearly(vocab):
    t = encode_sentences(SENTENCES, vocab)
    vae = _models(len(vocab))[0]
    cases = {"LongTensor": t.float(), "at least one sentence": t[:0], "must lie in": t.clone().fill_(len(vocab)),
             "start with <bos>": t[:, 1:], "exactly one <eos>": t[:, :-1].clone()}
    cases["exactly one <eos>"][cases["exactly one <eos>"] == PAD_ID] = 5
    for match, bad in cases.items():
        with pytest.raises(ValueError, match=match):
            vae.model(bad)
    holes = t.clone()
    holes[0, 2] = PAD_ID
    with pytest.raises(ValueError, match="only at the end"):
        check_tokens(holes, len(vocab), full=True)
    check_tokens(holes, len(vocab), full=False)  # shape-only check: the full scan runs under validation
    for kw in (dict(z_dim=0), dict(conditioning="middle"), dict(encoder="rnn"), dict(word_keep=2.0), dict(max_len=0)):
        with pytest.raises(ValueError):
            SentenceVAE(len(vocab), **kw)
    with pytest.raises(ValueError, match="vocab_size"):
        SentenceVAE(4)
    with pytest.raises(ValueError, match="no latent code"):
        LSTMLanguageModel(len(vocab)).encode(t)


@pytest.mark.parametrize("conditioning", ["init", "concat", "both"])
def test_conditionings_train_and_decode(vocab, conditioning):
    t = encode_sentences(SENTENCES, vocab)
    vae = SentenceVAE(len(vocab), 8, 12, 3, conditioning=conditioning, encoder="gru")
    loss = _loss(vae, t)
    loss.backward()
    assert math.isfinite(loss.item())
    assert vae.embedding.weight.grad is not None and vae.encoder_rnn.weight_ih_l0.grad is not None
    assert len(decoding.greedy(vae.eval(), torch.zeros(2, 3), max_len=5)) == 2


# ----------------------------------------------------------------------------- decoding

@pytest.mark.parametrize("kind", [0, 2])
def test_beam_size_one_equals_greedy(vocab, kind):
    model = _models(len(vocab))[kind].eval()
    z, n = (torch.randn(6, 3) * 2, None) if kind == 0 else (None, 1)
    assert decoding.beam_search(model, z, n, beam_size=1, max_len=12) == decoding.greedy(model, z, n, max_len=12)


def _seq_score(model, z, seq, max_len):
    """log p(seq [+ <eos> when shorter than max_len] | z) by teacher forcing."""
    ids = [BOS_ID, *seq] + ([EOS_ID] if len(seq) < max_len else [])
    logits = model.decoder_logits(torch.tensor([ids[:-1]]), z)
    return float(torch.log_softmax(logits, -1)[0].gather(-1, torch.tensor(ids[1:])[:, None]).sum())


def test_wide_beam_finds_the_exact_best_sentence():
    vae = SentenceVAE(6, 4, 5, 2, max_len=3).eval()  # 5 non-<eos> tokens: 156 sentences in all
    z = torch.randn(1, 2)
    words = [i for i in range(6) if i != EOS_ID]
    candidates = [list(s) for L in range(4) for s in itertools.product(words, repeat=L)]
    best = max(candidates, key=lambda s: _seq_score(vae, z, s, 3))
    found = decoding.beam_search(vae, z, beam_size=200, max_len=3)[0]
    assert math.isclose(_seq_score(vae, z, found, 3), _seq_score(vae, z, best, 3), abs_tol=1e-5)
    assert _seq_score(vae, z, found, 3) >= _seq_score(vae, z, decoding.greedy(vae, z, max_len=3)[0], 3) - 1e-6


def test_sampling_homotopy_and_errors(vocab):
    vae, ae, lm = (m.eval() for m in _models(len(vocab)))
    gen = torch.Generator().manual_seed(0)
    out = decoding.sample(vae, torch.randn(4, 3), temperature=0.5, max_len=7, generator=gen)
    assert len(out) == 4 and all(len(s) <= 7 and EOS_ID not in s for s in out)
    assert len(decoding.sample_prior(lm, 3, method="beam", beam_size=2)) == 3
    rows = {m: decoding.homotopy(m, vocab, "the cat sat", "a dog ran on the mat", steps=5) for m in (vae, ae)}
    assert all(len(r) == 5 for r in rows.values())
    za, zb = decoding.encode_text(vae, vocab, ["the cat sat", "a dog ran on the mat"])
    assert rows[vae][0] == decoding.to_text(vocab, decoding.greedy(vae, za[None]))[0]
    assert rows[vae][-1] == decoding.to_text(vocab, decoding.greedy(vae, zb[None]))[0]
    with pytest.raises(NotImplementedError):
        decoding.sample_prior(ae, 2)
    with pytest.raises(ValueError, match="no latent code"):
        decoding.homotopy(lm, vocab, "a", "b")
    with pytest.raises(ValueError):
        decoding.sample(vae, torch.randn(2, 3), temperature=0.0)
    with pytest.raises(ValueError, match="z must be"):
        decoding.greedy(vae, torch.randn(2, 5))
    with pytest.raises(ValueError, match="no tokens"):
        decoding.homotopy(vae, vocab, "  ", "a")
    with pytest.raises(ValueError, match="steps"):
        decoding.homotopy(vae, vocab, "a", "b", steps=1)
    with pytest.raises(ValueError, match="unknown decoding"):
        decoding.decode(vae, torch.zeros(1, 3), method="top-k")


# ----------------------------------------------------------------------------- decoding that does not loop

def _repeated_ngrams(seq, n):
    grams = [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]
    return len(grams) - len(set(grams))


def test_blocked_tokens_are_the_continuations_of_the_last_words():
    seq = [5, 6, 7, 5, 6]
    assert decoding.blocked_tokens(seq, 3) == [7]        # "5 6 7" is there already
    assert decoding.blocked_tokens(seq, 2) == [7]        # after "6": "6 7"
    assert decoding.blocked_tokens([5, 6, 5], 2) == [6]
    assert decoding.blocked_tokens(seq, 1) == [5, 6, 7]  # no word twice
    assert decoding.blocked_tokens(seq, 0) == [] and decoding.blocked_tokens([5], 3) == []


def _looping_lm(vocab_size=7, max_len=30):
    """An LM whose greedy decoding loops: the output layer always prefers word 4, then 5."""
    torch.manual_seed(0)
    lm = LSTMLanguageModel(vocab_size, 4, 5, max_len=max_len).eval()
    with torch.no_grad():
        lm.output.weight.zero_()
        lm.output.bias.copy_(torch.tensor([-9.0, -9.0, -9.0, -5.0, 3.0, 2.0, 1.0])[:vocab_size])
    return lm


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.sampled_from(["greedy", "beam", "sample"]), st.integers(0, 10_000),
       st.floats(0.0, 2.0))
def test_no_output_repeats_a_blocked_ngram(n, method, seed, length_penalty):
    lm = _looping_lm()
    assert _repeated_ngrams(decoding.greedy(lm, n=1)[0], n) > 0  # without blocking it loops
    kw = {"beam": dict(beam_size=3, length_penalty=length_penalty), "sample": dict(top_p=0.9), "greedy": {}}[method]
    torch.manual_seed(seed)
    vae = SentenceVAE(9, 4, 6, 2, max_len=25).eval()
    for model, z, k in ((lm, None, 3), (vae, torch.randn(3, 2) * 3, None)):
        out = decoding.decode(model, z, k, method, block_ngram=n, **kw)
        assert len(out) == 3 and all(_repeated_ngrams(s, n) == 0 for s in out), out


def test_nucleus_sampling_keeps_the_top_mass():
    lm = _looping_lm()
    gen = torch.Generator().manual_seed(0)
    # A nucleus smaller than the top word's probability is the argmax: sampling is greedy.
    assert decoding.sample(lm, n=4, top_p=1e-6, generator=gen, max_len=6) == decoding.greedy(lm, n=4, max_len=6)
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert torch.equal(decoding._nucleus(probs, 0.7), torch.tensor([[0.5, 0.3, 0.0, 0.0]]))
    assert torch.equal(decoding._nucleus(probs, 0.5), torch.tensor([[0.5, 0.0, 0.0, 0.0]]))
    assert torch.equal(decoding._nucleus(probs, 1.0), probs)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="top_p"):
            decoding.sample(lm, n=1, top_p=bad)
    with pytest.raises(ValueError, match="block_ngram"):
        decoding.greedy(lm, n=1, block_ngram=-1)
    with pytest.raises(ValueError, match="length_penalty"):
        decoding.beam_search(lm, n=1, length_penalty=-1.0)


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_wide_beam_with_length_penalty_finds_the_best_normalised_sentence(alpha):
    vae = SentenceVAE(6, 4, 5, 2, max_len=3).eval()
    z = torch.randn(1, 2)
    words = [i for i in range(6) if i != EOS_ID]
    candidates = [list(s) for L in range(4) for s in itertools.product(words, repeat=L)]

    def normalised(s):  # scored tokens: the words, and <eos> when shorter than max_len
        return _seq_score(vae, z, s, 3) / (len(s) + (len(s) < 3)) ** alpha

    best = max(candidates, key=normalised)
    found = decoding.beam_search(vae, z, beam_size=200, max_len=3, length_penalty=alpha)[0]
    assert math.isclose(normalised(found), normalised(best), abs_tol=1e-5)


def test_unknown_words_in_a_homotopy_endpoint(vocab):
    vae = _models(len(vocab))[0].eval()
    with pytest.raises(ValueError, match=r"every word of .zebra quokka. is outside .*\(unknown: zebra, quokka\)"):
        decoding.homotopy(vae, vocab, "zebra quokka", "the cat sat")
    with pytest.warns(UserWarning, match="1 of 3 words .* zebra"):
        assert len(decoding.homotopy(vae, vocab, "the zebra sat", "the cat sat", steps=3)) == 3


# ----------------------------------------------------------------------------- evaluation

def test_importance_sampled_nll_is_at_most_the_negative_elbo(vocab):
    t = encode_sentences(SENTENCES, vocab)
    vae, _, lm = (m.eval() for m in _models(len(vocab)))
    with torch.no_grad():  # a wider q than the untrained encoder's makes the gap visible
        vae.to_scale.bias.fill_(1.0)
    pyro.set_rng_seed(1)
    neg_elbo = -elbo_terms(vae, t, num_samples=200)["elbo"]
    nll = -log_likelihood(vae, t, num_samples=200)
    assert bool((nll <= neg_elbo + 1e-3).all()) and float((neg_elbo - nll).mean()) > 0.01
    # No latent variable: the ELBO is the exact log-likelihood.
    assert torch.allclose(-log_likelihood(lm, t, num_samples=1), -elbo_terms(lm, t)["elbo"], atol=1e-4)


def test_save_load_round_trip_and_vocabulary_mismatch(tmp_path, vocab):
    t = encode_sentences(SENTENCES, vocab)
    for m in _models(len(vocab), word_keep=0.5):
        path = tmp_path / f"{type(m).__name__}.pt"
        save_sentence_model(m, vocab, path)
        loaded, v2 = load_sentence_model(path, vocab)
        assert v2 == vocab and type(loaded) is type(m) and loaded.config() == m.config()
        assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), loaded.state_dict().values()))
        assert torch.equal(_loss(m.eval(), t), _loss(loaded, t))
    other = Vocabulary.build(SENTENCES + [["zebra"] * 3])
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        load_sentence_model(path, other)
    with pytest.raises(ValueError, match="vocabulary has"):
        save_sentence_model(m, other, tmp_path / "x.pt")
    torch.save({"a": 1}, tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="not a sentence-model"):
        load_sentence_model(tmp_path / "junk.pt")


# ----------------------------------------------------------------------------- example and CLI

TINY = ["--subset", "200", "--eval-subset", "20", "--epochs", "1", "--embed-dim", "16", "--hidden-dim", "16",
        "--z-dim", "4", "--max-vocab", "500", "--max-len", "20", "--samples", "3", "--batch-size", "50"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sentence") / "run"
    with pytest.warns(UserWarning, match="truncated"):
        assert cli_main(["train", "sentence-vae", *TINY, "--out", str(out)]) == 0
    return out


def test_cli_train_writes_metrics_and_text(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert set(metrics["models"]) == {"vae", "ae", "lm"}
    vae, lm = metrics["models"]["vae"]["test"], metrics["models"]["lm"]["test"]
    assert vae["nll"] <= vae["neg_elbo"] + 0.5 and lm["nll"] == pytest.approx(lm["neg_elbo"], rel=1e-5)
    assert vae["ppl"] == pytest.approx(math.exp(vae["nll"] * vae["sentences"] / vae["tokens"]), rel=1e-4)
    assert len(metrics["text"]["homotopy"]["VAE"]) == 7 and len(metrics["text"]["vae_samples"]) == 5
    header = (trained_run / "interpolation.txt").read_text().splitlines()[3].split()
    assert header == ["VAE", "|", "AE"]
    assert set(metrics["data"]["unk_rate"]) == {"train", "valid", "test"}
    assert (trained_run / "vae" / "best.pt").is_file() and (trained_run / "lm" / "model.pt").is_file()


def test_cli_interpolate_evaluate_sample(trained_run, capsys):
    capsys.readouterr()
    assert cli_main(["interpolate", str(trained_run), "--sentences", "the war ended .", "he was born in N .",
                     "--steps", "4"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(printed[printed.index("{\n"):])
    assert len(result["VAE"]) == 4 and len(result["AE"]) == 4
    lines = printed.splitlines()
    assert lines[3].split() == ["VAE", "|", "AE"]  # side by side, one numbered row per point
    assert lines[4].startswith(" 1  " + result["VAE"][0]) and lines[4].endswith("| " + result["AE"][0])
    assert cli_main(["interpolate", str(trained_run), "--steps", "1"]) == 2
    assert "--steps: must be an int >= 2" in capsys.readouterr().err
    assert cli_main(["interpolate", str(trained_run), "--sentences", "zebra quokka", "the war ended ."]) == 2
    err = capsys.readouterr().err  # which words were unknown, in the CLI's words
    assert err.startswith("pyro-lvm: error: ") and "(unknown: zebra, quokka)" in err, err
    assert cli_main(["interpolate", str(trained_run), "--steps", "3"]) == 0  # the run's own example sentences
    capsys.readouterr()
    assert cli_main(["sample", str(trained_run), "-n", "2", "--seed", "3"]) == 0
    samples = json.loads(capsys.readouterr().out)["samples"]
    # The run's prior-sample decoder (nucleus sampling by default), not the homotopies' beam.
    vae, vocab, config = task.load_run(trained_run)
    assert config["prior_decode"]["method"] == "sample" and config["decode"]["method"] == "beam"
    pyro.set_rng_seed(3)
    assert samples == decoding.to_text(vocab, decoding.sample_prior(vae, 2, **config["prior_decode"]))
    assert cli_main(["evaluate", str(trained_run), "--samples", "2", "--split", "valid"]) == 0
    assert json.loads(capsys.readouterr().out)["lm"]["sentences"] == 20


@pytest.mark.parametrize("argv, message", [
    (["--steps", "1"], "--steps must be >= 2"),
    (["--corpus", "no/such/corpus.txt"], "corpus 'no/such/corpus.txt' does not exist"),
    (["--sentences", "zebra quokka", "the war ended ."], r"every word of 'zebra quokka' .*\(unknown: zebra, quokka\)"),
    (["--samples", "0"], "--samples must be a positive int"),
    (["--top-p", "0"], r"--top-p must be in \(0, 1\]"),
    (["--threads", "0"], "--threads: must be a positive int"),
])
def test_showcase_refuses_bad_input_before_training(tmp_path, capsys, argv, message):
    """Each is refused in the CLI's words (exit 2) before any model is trained."""
    import re

    out = tmp_path / "run"
    assert cli_main(["demo", "sentence", *TINY, *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # argparse's own refusals print the usage first
    assert last.startswith("pyro-lvm: error: ") and re.search(message, last), err
    assert not (out / "vae").exists()


def test_demo_without_argument_is_still_the_digits_vae():
    from pyro_lvm.cli import build_parser

    args = build_parser().parse_args(["demo", "--epochs", "2"])
    assert args.showcase is None and args.dataset == "digits" and args.epochs == 2
    args = build_parser().parse_args(["demo", "sentence", "--epochs", "3"])
    assert args.showcase == "sentence" and args.corpus == "embedded-simple" and args.epochs == 3
    assert args.out == "runs/demo_sentence" and args.remedy == "free-bits" and args.decode == "beam"
    assert args.prior_decode == "sample" and 0 < args.top_p < 1  # prior samples are drawn, from the nucleus


def test_showcase_prints_its_report_with_progress_on_stderr(tmp_path, capsys):
    out = tmp_path / "demo"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli_main(["demo", "sentence", *TINY, "--steps", "4", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    printed, err = captured.out, captured.err
    assert printed == (out / "report.txt").read_text()
    for part in ("Decoding: prior samples by sample (", "; homotopies by beam (",
                 "Five sentences from the VAE's prior", "Homotopy", "| AE", "Perplexity of the homotopy",
                 "LM ", "VAE K=3", "<unk>"):
        assert part in printed, part
    # One bar per phase, in a non-interactive stderr too: which model, which epoch, the evaluation, an ETA.
    for part in ("train VAE epoch 1/1", "train AE epoch 1/1", "train LM epoch 1/1",
                 "evaluate VAE: test NLL (K=3 samples) over 20 sentences", "evaluate LM: test NLL (exact)", "<"):
        assert part in err, part
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["data"]["unk_rate"]) == {"train", "valid", "test"}
    assert len(metrics["text"]["homotopy"]["VAE"]) == 4 and len(metrics["text"]["homotopy"]["AE"]) == 4
    assert metrics["homotopy_lm"]["VAE"]["tokens"] > 0 and metrics["time"]["cpu_seconds"] > 0


def test_acceptance_script_runs_at_ci_size(tmp_path):
    """The committed acceptance script, at a reduced size: every check is computed and reported."""
    module = runpy.run_path(str(ROOT / "benchmarks" / "sentence_vae_showcase.py"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = module["main"](["--quick", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "a.json")])
    assert json.loads((tmp_path / "a.json").read_text())["checks"] == result["checks"]
    assert set(result["checks"]) == {"five_distinct_samples", "homotopy_neighbours_distinct", "non_unk_token_share",
                                     "vae_homotopy_reads_better_than_ae", "vae_keeps_a_code", "wall_time",
                                     "cpu_time"}
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    times = {k: result["checks"][k] for k in ("wall_time", "cpu_time")}
    assert result["checks"] == {**module["acceptance"](metrics), **times}
    assert times["cpu_time"]["torch_threads"] == 1 and times["cpu_time"]["met"] == (times["cpu_time"]["value"] <= 300)
    assert result["all_met"] == all(c["met"] for c in result["checks"].values())


def test_acceptance_checks_fail_when_they_should():
    acceptance = runpy.run_path(str(ROOT / "benchmarks" / "sentence_vae_showcase.py"))["acceptance"]
    good = {"text": {"vae_samples": ["a b .", "c d .", "e f .", "a c .", "b d ."],
                     "homotopy": {"VAE": ["a b .", "a c .", "c d ."], "AE": ["a b .", "x", "c d ."]}},
            "homotopy_lm": {"VAE": {"ppl": 10.0}, "AE": {"ppl": 20.0}},
            "models": {"vae": {"test": {"kl": 4.0, "active_units": 6}}}}
    assert all(c["met"] for c in acceptance(good).values())
    bad = json.loads(json.dumps(good))
    bad["text"]["vae_samples"][1] = "a b ."
    bad["text"]["homotopy"]["VAE"] = ["a b .", "a b .", "<unk> <unk> <unk> <unk> ."]
    bad["homotopy_lm"]["AE"]["ppl"] = 5.0
    bad["models"]["vae"]["test"]["active_units"] = 0
    checks = acceptance(bad)
    assert not any(c["met"] for c in checks.values()), checks
    assert checks["non_unk_token_share"]["value"] == pytest.approx(1 - 4 / 26, abs=1e-4)


def test_resume_with_another_vocabulary_is_refused(trained_run, tmp_path):
    bad = json.loads((trained_run / "vocab.json").read_text())
    bad["tokens"][5], bad["tokens"][6] = bad["tokens"][6], bad["tokens"][5]
    (trained_run / "vae" / "model.pt").rename(tmp_path / "keep.pt")
    other = Vocabulary.from_dict(bad)
    save_sentence_model(load_sentence_model(tmp_path / "keep.pt")[0], other, trained_run / "vae" / "model.pt")
    try:
        with pytest.raises(ValueError, match="vocabulary mismatch: id 5"):
            task.load_run(trained_run, "vae")
    finally:
        (tmp_path / "keep.pt").replace(trained_run / "vae" / "model.pt")


def test_resume_with_other_cutoffs_is_refused(trained_run, capsys):
    tiny = [a if a != "500" else "300" for a in TINY]  # --max-vocab 300: another vocabulary
    with pytest.warns(UserWarning):
        assert cli_main(["train", "sentence-vae", *tiny, "--resume", "--out", str(trained_run)]) == 2
    assert "vocabulary mismatch: sizes differ" in capsys.readouterr().err


def test_task_runs_with_tiny_arguments(tmp_path):
    parser = argparse.ArgumentParser()
    task.add_arguments(parser)
    args = parser.parse_args([*TINY, "--models", "vae", "--word-keep", "0.5", "--decode", "beam", "--beam-size", "2",
                              "--out", str(tmp_path / "ex")])
    with pytest.warns(UserWarning):
        metrics = task.main(args)
    assert metrics["models"]["vae"]["epochs"] == 1 and metrics["models"]["vae"]["config"]["word_keep"] == 0.5
    assert (tmp_path / "ex" / "samples.txt").read_text().startswith("# vae samples")


# ----------------------------------------------------------------------------- KL-control remedies

def test_remedy_setup_builds_the_infer_objects():
    from pyro_lvm.infer import AggressiveTraining, FreeBitsELBO, KLAnnealing

    args = argparse.Namespace(anneal_steps=10, anneal_start=0.2, free_bits=0.3, aggressive_steps=7, clip_norm=5.0)
    elbo, callbacks, extra = task.remedy_setup("none", args)
    assert isinstance(elbo, pyro.infer.TraceMeanField_ELBO) and callbacks == [] and extra == {}
    elbo, (anneal,), _ = task.remedy_setup("anneal", args)
    assert isinstance(elbo, pyro.infer.TraceMeanField_ELBO) and isinstance(anneal, KLAnnealing)
    assert [anneal.weight(s) for s in (0, 5, 10, 50)] == pytest.approx([0.2, 0.6, 1.0, 1.0])
    elbo, callbacks, _ = task.remedy_setup("free-bits", args)
    assert isinstance(elbo, FreeBitsELBO) and elbo.lam == 0.3 and elbo.per_dimension and callbacks == []
    elbo, (agg,), _ = task.remedy_setup("aggressive", args)
    assert isinstance(agg, AggressiveTraining) and agg.max_inner_steps == 7 and agg.clip_norm == 5.0
    _, callbacks, _ = task.remedy_setup("anneal+aggressive", args)
    assert [type(c).__name__ for c in callbacks] == ["KLAnnealing", "AggressiveTraining"]
    for bad in ("annealing", "anneal+anneal", "", "none+anneal"):
        with pytest.raises(ValueError, match="remedy"):
            task.remedy_setup(bad, args)


def test_free_bits_objective_on_the_sentence_vae_is_exact(vocab):
    """FreeBitsELBO(lam) - TraceMeanField_ELBO = n * d * lam - sum KL when every dimension's
    batch-mean KL is below lam (same z: both draw it the same way); lam = 0 is the ELBO."""
    from pyro_lvm.infer import FreeBitsELBO

    t = encode_sentences(SENTENCES, vocab)
    torch.manual_seed(0)
    vae = SentenceVAE(len(vocab), 8, 12, 3)
    with torch.no_grad():
        loc, scale = vae.encode_dist(t)
    kl = float(torch.distributions.kl_divergence(dist.Normal(loc, scale), dist.Normal(0.0, 1.0)).sum())
    losses = {}
    for lam in (0.0, 100.0):
        pyro.set_rng_seed(1)
        losses[lam] = FreeBitsELBO(lam).loss(vae.model, vae.guide, t)
    pyro.set_rng_seed(1)
    plain = pyro.infer.TraceMeanField_ELBO().loss(vae.model, vae.guide, t)
    assert losses[0.0] == pytest.approx(plain, rel=1e-5)
    assert losses[100.0] - plain == pytest.approx(len(SENTENCES) * 3 * 100.0 - kl, rel=1e-5)


REMEDY_RUNS = {  # name: extra CLI arguments
    "anneal": ["--remedy", "anneal", "--anneal-steps", "5", "--anneal-start", "0.1"],
    "anneal+word-dropout": ["--remedy", "anneal", "--anneal-steps", "5", "--word-keep", "0.75"],
    "free-bits": ["--remedy", "free-bits", "--free-bits", "50"],
    "aggressive": ["--remedy", "aggressive", "--aggressive-steps", "3"],
}


@pytest.mark.parametrize("name", list(REMEDY_RUNS))
def test_each_remedy_trains_the_sentence_vae_end_to_end(tmp_path, name):
    """Train with the remedy through the task, then check MI/AU are reported and the remedy acted."""
    parser = argparse.ArgumentParser()
    task.add_arguments(parser)
    args = parser.parse_args([*TINY, "--subset", "120", "--epochs", "2", "--models", "vae", *REMEDY_RUNS[name],
                              "--out", str(tmp_path / "run")])
    with pytest.warns(UserWarning, match="truncated"):
        metrics = task.main(args)
    vae = metrics["models"]["vae"]
    test = vae["test"]
    assert vae["remedy"] == args.remedy and vae["epochs"] == 2
    assert isinstance(test["active_units"], int) and 0 <= test["active_units"] <= 4
    assert math.isfinite(test["mi"]) and -0.5 < test["mi"] <= math.log(test["mi_batch_size"]) + 1e-6
    history = json.loads((tmp_path / "run" / "vae" / "history.json").read_text())["epochs"]
    if name.startswith("anneal"):
        # The weight of each epoch's last step: linear from 0.1 to 1 over 5 steps.
        assert [e["kl_weight"] for e in history] == pytest.approx([min(1.0, 0.1 + 0.9 * (e["step"] - 1) / 5)
                                                                   for e in history])
        assert history[0]["kl_weight"] < 1.0
        assert vae["config"]["word_keep"] == (0.75 if "word" in name else 1.0)
    if name == "free-bits":
        # Every dimension is charged at least 50 nats per sentence: 4 * 50 on top of a positive -log p(x|z).
        assert all(e["train_loss"] > 200 for e in history)
    if name == "aggressive":
        # fit() hands AggressiveTraining its validation data; 3 inner steps per joint step
        # (the very first step has no optimiser to copy yet).
        assert history[0]["aggressive"] == 1 and history[0]["aggressive_mi_source"] == "valid"
        assert history[0]["aggressive_inner_steps"] == 3.0


@pytest.mark.parametrize("conditioning", ["init", "concat"])
def test_autoencoder_learns_to_reconstruct_through_z(vocab, conditioning):
    """The code must carry each sentence: an AE trained on 8 sentences decodes all of them back."""
    t = encode_sentences(SENTENCES, vocab)
    torch.manual_seed(0)
    ae = SentenceAutoencoder(len(vocab), 16, 32, 4, conditioning=conditioning)
    fit(ae, t, epochs=150, batch_size=8, lr=1e-2, seed=0)
    assert decoding.reconstruction_accuracy(ae, t) == 1.0
    assert decoding.to_text(vocab, decoding.greedy(ae, ae.encode(t))) == [" ".join(s) for s in SENTENCES]
