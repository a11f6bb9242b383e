"""Streaming text and full-data scaling: corpora larger than memory keep the right objective."""

import collections

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_lvm import fit
from pyro_lvm.data.streaming import StreamingSentences, scan_sentences
from pyro_lvm.data.text import BOS_ID, EOS_ID, PAD_ID, Vocabulary
from pyro_lvm.models.text.sentence_vae import SentenceVAE
from pyro_lvm.infer.scaling import full_data_elbo

WORDS = "the a cat dog sat ran on mat under tree quickly slowly".split()


@pytest.fixture
def corpus_files(tmp_path):
    g = torch.Generator().manual_seed(0)
    paths, sentences = [], []
    for f in range(3):
        lines = []
        for _ in range(37):
            n = int(torch.randint(1, 9, (), generator=g))
            words = [WORDS[int(i)] for i in torch.randint(0, len(WORDS), (n,), generator=g)]
            sentences.append(words)
            lines.append(" ".join(words))
        lines.insert(5, "   ")  # an empty line is skipped
        path = tmp_path / f"part{f}.txt"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths, sentences


def test_one_pass_vocabulary_equals_the_in_memory_one(corpus_files):
    paths, sentences = corpus_files
    vocab, n = scan_sentences(paths, max_size=10)
    assert n == len(sentences) == 111
    assert vocab == Vocabulary.build(sentences, max_size=10)


def test_every_sentence_once_per_epoch_bucketed_and_reshuffled(corpus_files):
    paths, sentences = corpus_files
    vocab, _ = scan_sentences(paths)
    stream = StreamingSentences(paths, vocab, batch_size=8, buffer_batches=3, seed=1)
    epochs = []
    for epoch in range(2):
        stream.set_epoch(epoch)
        batches = list(stream)
        rows = []
        for b in batches:
            assert b.dtype == torch.long and b.shape[0] <= 8 and bool((b[:, 0] == BOS_ID).all())
            for row in b.tolist():
                body = row[1:row.index(EOS_ID)]
                assert all(t == PAD_ID for t in row[row.index(EOS_ID) + 1:])
                rows.append(tuple(vocab.decode(body)))
        assert collections.Counter(rows) == collections.Counter(tuple(s) for s in sentences)
        epochs.append([b.shape for b in batches])
    assert epochs[0] != epochs[1]  # another batch order in the next epoch
    stream.set_epoch(0)
    assert [b.shape for b in stream] == epochs[0]  # ... and the same again for the same epoch


def test_bad_stream_input_is_refused(tmp_path, corpus_files):
    paths, _ = corpus_files
    vocab, _ = scan_sentences(paths)
    with pytest.raises(FileNotFoundError, match="no text file"):
        scan_sentences([tmp_path / "missing.txt"])
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="hold no sentences"):
        scan_sentences(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="batch_size"):
        StreamingSentences(paths, vocab, batch_size=0)


class GlobalMeanPair(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.mu_hat = nn.Parameter(torch.tensor(0.5))
        self.z_hat = nn.Parameter(torch.linspace(-1, 1, n))

    def model(self, idx, x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(idx)):
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(self, idx, x):
        pyro.sample("mu", dist.Delta(self.mu_hat))
        with pyro.plate("data", len(idx)):
            pyro.sample("z", dist.Delta(self.z_hat[idx]))


def test_full_data_elbo_is_unbiased_for_the_whole_dataset():
    n, b = 12, 4
    idx, x = torch.arange(n), torch.randn(n)
    pair = GlobalMeanPair(n)
    elbo = pyro.infer.Trace_ELBO()
    whole = elbo.differentiable_loss(pair.model, pair.guide, idx, x)
    scaled = full_data_elbo(elbo, num_datapoints=n)
    # The mean over a partition into batches equals the full-data loss exactly.
    batches = [scaled.differentiable_loss(pair.model, pair.guide, idx[i:i + b], x[i:i + b]) for i in range(0, n, b)]
    assert torch.allclose(torch.stack(batches).mean(), whole, rtol=1e-6)
    with pytest.raises(ValueError, match="num_datapoints must be a positive int"):
        full_data_elbo(elbo, num_datapoints=0)


def test_fit_trains_a_sentence_vae_from_a_stream(corpus_files):
    paths, _ = corpus_files
    vocab, n = scan_sentences(paths)
    stream = StreamingSentences(paths, vocab, batch_size=16, buffer_batches=2)
    torch.manual_seed(0)
    vae = SentenceVAE(len(vocab), 8, 8, 2, max_len=10)
    history = fit(vae, stream, elbo=full_data_elbo(pyro.infer.TraceMeanField_ELBO(), n), epochs=3, lr=1e-2,
                  progress=True)
    assert len(history) == 3 and history["train_loss"][-1] < history["train_loss"][0]


NEWS = ["stocks fell sharply market traders worried", "market rally stocks traders cheered gains",
        "football match goal striker scored", "striker goal football crowd cheered", "rain storm weather cold",
        "weather forecast storm wind cold", "the of and"]  # the last has no vocabulary word


@pytest.fixture
def news_files(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("\n".join(NEWS[:4] * 3) + "\n\n")
    b.write_text("\n".join(NEWS[4:] * 3) + "\n")
    return [a, b], NEWS[:4] * 3 + NEWS[4:] * 3


def test_streamed_bags_of_words_equal_the_in_memory_corpus(news_files):
    from pyro_lvm.data.bow import corpus_from_texts
    from pyro_lvm.data.streaming import StreamingBagOfWords, scan_documents

    paths, texts = news_files
    vocab, n = scan_documents(paths, min_df=2, max_df=0.5)
    corpus = corpus_from_texts(texts, min_df=2, max_df=0.5)
    assert n == len(texts) and vocab == corpus.vocab
    stream = StreamingBagOfWords(paths, vocab, batch_size=4, buffer_batches=2)
    rows = torch.cat(list(stream))
    assert stream.dropped == 3 == corpus.dropped  # the three copies of the stop-word-only line
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(rows) == key(corpus.counts)
    with pytest.raises(ValueError, match="vocabulary is empty"):
        StreamingBagOfWords(paths, [])


def test_prodlda_trains_from_a_bag_of_words_stream(news_files):
    from pyro_lvm.data.streaming import StreamingBagOfWords, scan_documents
    from pyro_lvm.models.topic import ProdLDA

    paths, _ = news_files
    vocab, n = scan_documents(paths, min_df=2, max_df=0.5)
    torch.manual_seed(0)
    model = ProdLDA(len(vocab), 3, hidden=8)
    history = fit(model, StreamingBagOfWords(paths, vocab, batch_size=6), epochs=4, lr=1e-2,
                  elbo=full_data_elbo(pyro.infer.TraceMeanField_ELBO(), n))
    assert len(history) == 4 and all(torch.isfinite(torch.tensor(history["train_loss"])))
