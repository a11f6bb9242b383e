"""Part-of-speech induction: the readers (CoNLL-U, word/TAG, MASC) on small files written here,
word vectors (training, fall-backs, a cache that runs no code), the embedding, flow and neural
emissions (both inference paths against brute force), and the task with tiny settings."""

import json

import numpy as np
import pytest
import torch

from pyro_lvm.models.hmm import inference as inf
from pyro_lvm.cli import main as cli_main
from pyro_lvm.data.tagged_text import load_tagged_corpus, read_conllu, read_slash_tagged, read_tagged
from pyro_lvm.data.word_vectors import WordVectors, embedding_key, load_or_train_word_vectors, prepare_text
from pyro_lvm.models.hmm import HMM, BernoulliEmission, CategoricalEmission, lengths_to_mask
from pyro_lvm.models.hmm.word_emissions import (EmbeddingGaussianEmission, NeuralCategoricalEmission,
                                                VolumePreservingFlow, char_ids)

CONLLU = """# sent_id = 1
# text = The dog's bone.
1\tThe\tthe\tDET\tDT\t_\t2\tdet\t_\t_
2-3\tdog's\t_\t_\t_\t_\t_\t_\t_\t_
2\tdog\tdog\tNOUN\tNN\t_\t4\tnmod\t_\t_
3\t's\t's\tPART\tPOS\t_\t2\tcase\t_\t_
4\tbone\tbone\tNOUN\tNN\t_\t0\troot\t_\t_
4.1\tate\teat\tVERB\tVBD\t_\t_\t_\t4:ref\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

# sent_id = 2
1\tGo\tgo\tVERB\tVB\t_\t0\troot\t_\t_
2\t!\t!\tPUNCT\t.\t_\t1\tpunct\t_\t_
"""

POS = """[ Pierre/NNP Vinken/NNP ]
,/, 
[ 61/CD years/NNS ]
old/JJ will/MD join/VB *-1/-NONE-
[ the/DT 1\\/2/CD board/NN ]
./. 

======================================

[ Mr./NNP Vinken/NNP ]
is/VBZ chairman/NN|VBN ./.
"""


def test_conllu_reader(tmp_path):
    path = tmp_path / "tiny.conllu"
    path.write_text(CONLLU)
    assert read_conllu(path) == [[("The", "DET"), ("dog", "NOUN"), ("'s", "PART"), ("bone", "NOUN"), (".", "PUNCT")],
                                 [("Go", "VERB"), ("!", "PUNCT")]]
    assert [t for _, t in read_conllu(path, "xpos")[0]] == ["DT", "NN", "POS", "NN", "."]
    corpus = load_tagged_corpus(path, tag_column="xpos")  # format from the name
    assert corpus.summary() == {"sentences": 2, "tokens": 7, "vocab": 7, "tags": 5}


def test_conllu_bad_input(tmp_path):
    path = tmp_path / "bad.conllu"
    path.write_text(CONLLU.replace("4\tbone\tbone\tNOUN\tNN\t_\t0\troot\t_\t_", "4\tbone\tNOUN"))
    with pytest.raises(ValueError, match=r"bad.conllu:7: .*10 tab-separated columns, this one has 3"):
        read_conllu(path)
    path.write_text("1\tGo\tgo\tVERB\t_\t_\t0\troot\t_\t_\n")
    with pytest.raises(ValueError, match="no XPOS tags.*tag_column='upos'"):
        read_conllu(path, "xpos")
    with pytest.raises(ValueError, match="tag_column must be 'upos' or 'xpos'"):
        read_conllu(path, "deprel")
    path.write_text("x\tGo\tgo\tVERB\tVB\t_\t0\troot\t_\t_\n")
    with pytest.raises(ValueError, match="bad.conllu:1: the ID column"):
        read_conllu(path)
    with pytest.raises(FileNotFoundError):
        read_conllu(tmp_path / "missing.conllu")


def test_slash_tagged_reader(tmp_path):
    path = tmp_path / "wsj_0001.pos"
    path.write_text(POS)
    sentences = read_slash_tagged(path)
    # Brackets and the -NONE- trace are gone, 1\/2 is one word, of NN|VBN the first tag is kept.
    assert sentences == [[("Pierre", "NNP"), ("Vinken", "NNP"), (",", ","), ("61", "CD"), ("years", "NNS"),
                          ("old", "JJ"), ("will", "MD"), ("join", "VB"), ("the", "DT"), ("1/2", "CD"),
                          ("board", "NN"), (".", ".")],
                         [("Mr.", "NNP"), ("Vinken", "NNP"), ("is", "VBZ"), ("chairman", "NN"), (".", ".")]]
    assert read_tagged(path) == sentences  # .pos is recognised
    lines = tmp_path / "lines.txt"
    lines.write_text("a/DT dog/NN\nbarks/VBZ ./.\n")
    assert len(read_slash_tagged(lines, one_per_line=True)) == 2 and len(read_slash_tagged(lines)) == 1
    lines.write_text("a/DT dog\n")
    with pytest.raises(ValueError, match=r"lines.txt:1: token 'dog' is not word/TAG"):
        read_slash_tagged(lines)
    with pytest.raises(ValueError, match="cannot tell the format"):
        read_tagged(lines)


def test_word_vectors_train_fall_back_and_cache_safely(tmp_path):
    text = {"corpus": [["The", "dog", "barks", "."], ["A", "cat", "sleeps", "."]] * 20 + [["The", "Rethinking", "."]]}
    assert prepare_text([["Reframing", "the", "Dogs", "1,987"]], min_count=2)[0] == [
        "<unk-cap-ing>", "<unk>", "<unk-cap-s>", "<unk-num>"]
    assert embedding_key("1,987") == "N" and embedding_key("Dogs") == "dogs"
    vectors = load_or_train_word_vectors(text, cache_dir=tmp_path, dim=8, window=1, min_count=2, epochs=2)
    assert vectors.dim == 8 and "the" in vectors and vectors.info["tokens"] == 163
    assert "rethinking" not in vectors and "<unk-cap-ing>" in vectors  # seen once: trained as its spelling class
    # Cached: the second call loads the same numbers without training.
    again = load_or_train_word_vectors(text, cache_dir=tmp_path, dim=8, window=1, min_count=2, epochs=2)
    assert again.words == vectors.words and np.array_equal(again.vectors, vectors.vectors)
    table, routes = vectors.lookup(["the", "Sleeps", "Recasting", "???"])
    # "Recasting" has no vector but its spelling class does; "???" has neither and gets the mean.
    assert routes == {"own": 2, "shape": 1, "mean": 1}
    assert torch.allclose(table[3], torch.from_numpy(vectors.vectors.mean(0)))
    # The cache is read without pickle: a file holding Python objects is refused, not run.
    evil = tmp_path / "evil.npz"
    np.savez(evil, words=np.array([object()], dtype=object), vectors=np.zeros((1, 2)), info=np.array("{}"))
    with pytest.raises(ValueError, match="allow_pickle"):
        WordVectors.load(evil)
    with pytest.raises(ValueError, match="dim must be a positive int"):
        load_or_train_word_vectors(text, cache_dir=tmp_path, dim=0)
    with pytest.raises(ValueError, match="non-empty vocabulary"):
        vectors.lookup([])


VOCAB = ["the", "dog", "Dogs", "barked", "2-day", "quickly"]


@pytest.mark.parametrize("make", [
    lambda i: HMM(EmbeddingGaussianEmission(3, torch.randn(6, 4), scale="state", flow_layers=2), inference=i),
    lambda i: HMM(EmbeddingGaussianEmission(3, torch.randn(6, 4), scale="shared",
                                            spelling=torch.tensor([0, 0, 1, 2, 3, 2])), inference=i),
    lambda i: HMM(NeuralCategoricalEmission(3, VOCAB, vectors=torch.randn(6, 4), channels=5, hidden=8), inference=i),
], ids=["embedding-flow", "embedding-shared-spelling", "neural"])
def test_word_emissions_both_paths_equal_brute_force(make):
    torch.manual_seed(0)
    x, mask = torch.randint(0, 6, (3, 5)), lengths_to_mask(torch.tensor([5, 2, 4]))
    fast = make("fast")
    with torch.no_grad():  # move away from the identity flow / zero init
        for p in fast.parameters():
            p.add_(0.5 * torch.randn_like(p))
    markov = make("markov")
    markov.load_state_dict(fast.state_dict())
    a = fast.objective().differentiable_loss(fast.model, fast.guide, x, mask)
    b = markov.objective().differentiable_loss(markov.model, markov.guide, x, mask)
    reference = -inf.brute_force_log_likelihood(*fast._tables(x, mask)).sum()
    assert torch.allclose(a, b, atol=1e-4) and torch.allclose(a, reference, atol=1e-4)
    if isinstance(fast.emission, NeuralCategoricalEmission):  # a normalised distribution over the vocabulary
        assert torch.allclose(fast.emission.log_likelihoods(torch.arange(6)[None]).exp().sum(1), torch.ones(3), atol=1e-5)


def test_neural_emission_type_table_is_normalised_and_gathers_per_token():
    torch.manual_seed(0)
    vocab = [*VOCAB, "a", "Quickly-2"]
    emission = NeuralCategoricalEmission(3, vocab, channels=5, hidden=8, kernel=3)
    with torch.no_grad():  # move away from the near-zero init; the padding character keeps its zero vector
        for p in emission.parameters():
            p.add_(0.5 * torch.randn_like(p))
        emission.char_embedding.weight[0] = 0.0
    # The packed character CNN (one matrix product over real character positions) is the
    # padded Conv1d over each word, max over its characters.
    conv = torch.relu(emission.conv(emission.char_embedding(emission.chars).transpose(1, 2)))
    padded = conv.masked_fill((emission.chars == 0).unsqueeze(1), 0.0).amax(-1)
    assert emission.char_features().shape == (8, 5)
    assert torch.allclose(emission.char_features(), padded, atol=1e-5)
    table = emission.log_likelihoods(torch.arange(8)[None])[0].T  # (K, V)
    assert table.shape == (3, 8)
    assert torch.allclose(table.logsumexp(-1), torch.zeros(3), atol=1e-5)  # a distribution over words per state
    # The table computed once over word types, then gathered, is each token's own log-probability.
    x = torch.tensor([[0, 7, 7, 2], [5, 1, 0, 3]])
    per_token = emission.log_likelihoods(x)
    assert per_token.shape == (2, 4, 3)
    for n in range(2):
        for t in range(4):
            for k in range(3):
                own = torch.log_softmax(emission.state_net(emission.states.weight[k]) @ emission.word_features().T
                                        + emission.bias, -1)[x[n, t]]
                assert torch.allclose(per_token[n, t, k], own, atol=1e-5)
                assert torch.allclose(emission.dist(torch.tensor(k), None).log_prob(x[n, t]), own, atol=1e-5)
    # Every parameter gets a gradient from the exact marginal likelihood (the padding row excepted).
    hmm = HMM(emission)
    (-hmm.log_likelihood(x).sum()).backward()
    for name, p in emission.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
        grad = p.grad[1:] if name == "char_embedding.weight" else p.grad
        assert float(grad.abs().sum()) > 0, name
    assert float(emission.char_embedding.weight.grad[0].abs().sum()) == 0.0
    # Without gradients the table is computed once and reused until a parameter changes (in
    # place, as optimisers and EM's M-step change them).
    with torch.no_grad():
        first = emission.log_table()
        assert emission.log_table() is first
        emission.bias[0] += 1.0
        second = emission.log_table()
        assert second is not first and not torch.allclose(second, first)
    emission.update((torch.rand(3, 8),), pseudocount=1e-3)  # Adam steps of the generalised M-step
    with torch.no_grad():
        assert not torch.allclose(emission.log_table(), second)
        assert torch.allclose(emission.log_table(), torch.log_softmax(emission.logits, -1))
    # The derived windows are not saved: a state dict of the padded version still loads.
    assert "windows" not in emission.state_dict() and "chars" in emission.state_dict()
    with pytest.raises(ValueError, match="kernel"):
        NeuralCategoricalEmission(3, vocab, kernel=0)


def test_neural_emission_trained_by_fit_lowers_the_loss():
    from pyro_lvm.training.loop import BatchList, fit

    torch.manual_seed(0)
    x = torch.randint(0, 6, (16, 6))
    x[:, ::2] = torch.randint(0, 2, (16, 3))  # "the dog" words every other step: a structure to learn
    mask = lengths_to_mask(torch.randint(2, 7, (16,)))
    hmm = HMM(NeuralCategoricalEmission(3, VOCAB, channels=5, hidden=8))
    with torch.no_grad():
        before = float(hmm.log_likelihood(x, mask).sum())
    fit(hmm, BatchList([(x[:8], mask[:8]), (x[8:], mask[8:])]), elbo=hmm.objective(num_datapoints=16),
        optimizer=lambda params: torch.optim.Adam(params, lr=0.05), epochs=15, seed=0, progress=False)
    with torch.no_grad():
        after = float(hmm.log_likelihood(x, mask).sum())
    assert after > before + 1.0


def test_flow_is_invertible_and_volume_preserving():
    flow = VolumePreservingFlow(5, layers=3, hidden=7)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(torch.randn_like(p))
    v = torch.randn(4, 5, dtype=torch.double)
    flow = flow.double()
    assert torch.allclose(flow.inverse(flow(v)), v, atol=1e-10)
    jacobian = torch.autograd.functional.jacobian(flow, v[0])
    assert torch.allclose(torch.linalg.slogdet(jacobian)[1], torch.zeros((), dtype=torch.double), atol=1e-10)
    assert not torch.allclose(flow(v), v)  # and it does move the vectors


def test_embedding_em_increases_the_likelihood_and_unused_states_keep_their_gaussians():
    torch.manual_seed(0)
    vectors = torch.randn(6, 3)
    x, mask = torch.randint(0, 6, (8, 7)), lengths_to_mask(torch.tensor([7, 5, 3, 7, 2, 6, 7, 1]))
    for scale, spelling in (("fixed", None), ("shared", torch.tensor([0, 1, 1, 2, 0, 2])), ("state", None)):
        hmm = HMM(EmbeddingGaussianEmission(4, vectors, scale=scale, spelling=spelling))
        history = hmm.em_fit([(x, mask)], iterations=6)
        assert all(b >= a - 1e-3 for a, b in zip(history, history[1:])) and history[-1] > history[0]
    emission = EmbeddingGaussianEmission(2, vectors, scale="state")
    before = emission.loc[1].clone()
    counts = torch.zeros(2, 6)
    counts[0, :3] = 1.0
    emission.update((counts,), pseudocount=1e-3)
    assert torch.allclose(emission.loc[1], before)


def test_char_ids_and_bad_input():
    ids, alphabet = char_ids(["ab", "b", "abcdefghijklmnopqrstuvwxyz"], max_chars=8)
    assert ids.shape == (3, 8) and alphabet[0] == "a" and ids[1].tolist() == [2] + [0] * 7
    assert "".join(alphabet[i - 1] for i in ids[2].tolist()) == "abcdwxyz"  # first 4 and last 4 letters
    with pytest.raises(ValueError, match="non-empty"):
        char_ids([])
    with pytest.raises(ValueError, match=r"\(V, D\) table"):
        EmbeddingGaussianEmission(3, torch.randn(6))
    with pytest.raises(ValueError, match="NaN or inf"):
        EmbeddingGaussianEmission(3, torch.full((6, 2), float("nan")))
    with pytest.raises(ValueError, match="a class id >= 0 for each of the 6 words"):
        EmbeddingGaussianEmission(3, torch.randn(6, 2), spelling=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="scale must be"):
        EmbeddingGaussianEmission(3, torch.randn(6, 2), scale="diag")
    with pytest.raises(ValueError, match="number of states"):
        EmbeddingGaussianEmission(0, torch.randn(6, 2))
    with pytest.raises(ValueError, match="vectors has 5 rows but the vocabulary 6 words"):
        NeuralCategoricalEmission(3, VOCAB, vectors=torch.randn(5, 4))
    # An emission that does not fit the data says what it needs.
    with pytest.raises(ValueError, match=r"Bernoulli emissions need x of shape \(N, T, 4\)"):
        HMM(BernoulliEmission(2, 4)).log_likelihood(torch.randint(0, 6, (2, 3)))
    with pytest.raises(ValueError, match="categorical emissions need integer x"):
        HMM(CategoricalEmission(2, 6)).log_likelihood(torch.rand(2, 3, 4))
    with pytest.raises(ValueError, match="symbol id 9 is outside the vocabulary"):
        HMM(EmbeddingGaussianEmission(2, torch.randn(6, 2))).log_likelihood(torch.tensor([[1, 9]]))
    with pytest.raises(NotImplementedError, match="cannot generate word ids"):
        HMM(EmbeddingGaussianEmission(2, torch.randn(6, 2))).sample(2, 3)


def run(tmp_path, name, *argv):
    out = tmp_path / name
    code = cli_main(["train", "pos_induction", "--toy-sentences", "120", "--states", "7", "--no-figures",
                     "--cache-dir", str(tmp_path / "cache"), "--out", str(out), *argv])
    return code, (json.loads((out / "metrics.json").read_text()) if code == 0 else None)


def test_task_every_emission_offline(tmp_path, capsys):
    code, m = run(tmp_path, "emb", "--emission", "embedding", "--spelling", "--init", "kmeans-types",
                  "--iterations", "4", "--flow-layers", "2",
                  "--flow-epochs", "2", "--lr", "0.01", "--vector-epochs", "2", "--vector-dim", "8")
    assert code == 0 and m["emission"] == "embedding" and m["iterations"] == 4 + 2
    assert m["word_vectors"]["vocabulary_lookup"]["own"] + m["word_vectors"]["vocabulary_lookup"]["shape"] > 0
    assert m["word_vectors"]["training"]["tokens"] == m["data"]["tokens"]
    code, m = run(tmp_path, "neural", "--emission", "neural", "--trainer", "adam", "--iterations", "6", "--lr", "0.003")
    assert code == 0 and m["trainer"] == "adam" and m["history"][-1] > m["history"][0]
    code, m = run(tmp_path, "neural_em", "--emission", "neural", "--iterations", "4", "--m-steps", "3", "--lr", "0.01")
    assert code == 0 and m["trainer"] == "em" and m["history"][-1] > m["history"][0]  # generalised EM
    # evaluate rebuilds corpus, word vectors (from the cache) and model from the run folder: same scores.
    capsys.readouterr()
    for name in ("emb", "neural_em"):
        trained = json.loads((tmp_path / name / "metrics.json").read_text())
        assert cli_main(["evaluate", str(tmp_path / name)]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["many_to_one"] == pytest.approx(trained["many_to_one"])
        assert report["log_lik_per_token"] == pytest.approx(trained["log_lik_per_token"], rel=1e-5)
    assert cli_main(["sample", str(tmp_path / "neural_em"), "-n", "2"]) == 0
    assert len(json.loads(capsys.readouterr().out)["sentences"][1].split()) == 12
    assert cli_main(["sample", str(tmp_path / "emb"), "-n", "2"]) == 2  # a density over vectors has no words to draw
    assert "pyro-lvm: error: a Gaussian over word vectors" in capsys.readouterr().err
    # Restarts: each one scored by its training likelihood; the best one continues, with a tolerance.
    code, m = run(tmp_path, "restarts", "--emission", "categorical", "--restarts", "3", "--restart-iterations", "2",
                  "--iterations", "30", "--tol", "1e-3")
    assert code == 0 and len(m["restarts"]) == 3 and m["iterations"] < 30
    best = max(r["log_lik_per_token"] for r in m["restarts"])
    assert m["log_lik_per_token"] >= best - 1e-6
    # Bad input reaches the user as "pyro-lvm: error: ..." with exit status 2.
    for argv, message in ((["--emission", "categorical", "--spelling"], "needs --emission embedding"),
                          (["--emission", "categorical", "--flow-layers", "2"], "needs --emission embedding"),
                          (["--states", "0"], "--states: must be a positive int")):
        code, _ = run(tmp_path, "bad", *argv)
        assert code == 2 and message in capsys.readouterr().err


def test_task_runs_the_new_emissions(tmp_path):
    import argparse

    from pyro_lvm.tasks import pos_induction as example

    parser = argparse.ArgumentParser()
    example.add_arguments(parser)
    for argv in (["--emission", "embedding", "--spelling", "--variance-scale", "2", "--vector-contexts", "positional",
                  "--vector-epochs", "1", "--vector-dim", "8", "--iterations", "3"],
                 ["--emission", "neural", "--iterations", "2", "--m-steps", "2"]):
        args = parser.parse_args(["--toy-sentences", "80", "--states", "7", "--no-figures", "--cache-dir",
                                  str(tmp_path / "cache"), "--out", str(tmp_path / argv[1]), *argv])
        metrics = example.main(args)
        assert metrics["emission"] == argv[1] and 0 < metrics["many_to_one"] <= 1


def test_task_reads_a_conllu_file(tmp_path):
    path = tmp_path / "tiny.conllu"
    path.write_text(CONLLU * 5)
    code, m = run(tmp_path, "conllu", "--data-path", str(path), "--tag-column", "xpos", "--states", "3",
                  "--iterations", "3")
    assert code == 0 and m["data"]["tags"] == 5 and m["data"]["tokens"] == 35


def test_adam_trains_chain_and_emission_at_their_own_rates_through_fit():
    """The task's Adam path is fit() over length-sorted batches (a BatchList) with one
    learning rate for the chain and one for the emission."""
    from pyro_lvm import fit
    from pyro_lvm.training.batching import BatchList
    from pyro_lvm.data import toy_corpus
    from pyro_lvm.tasks.pos_induction import chain_and_emission_adam, run_adam

    corpus = toy_corpus(60, seed=1)
    pairs = [(x, m) for x, m, _ in corpus.batches(200)]
    assert len({x.shape[1] for x, _ in pairs}) > 1  # the batches differ in length
    torch.manual_seed(0)
    hmm = HMM(CategoricalEmission(4, len(corpus.vocab)))
    emission = [p.detach().clone() for p in hmm.emission.parameters()]
    chain = [p.detach().clone() for n, p in hmm.named_parameters() if not n.startswith("emission.")]
    h = fit(hmm, BatchList(pairs), elbo=hmm.objective(num_datapoints=len(corpus.words)),
            optimizer=chain_and_emission_adam(hmm, 0.1, 0.0), epochs=2, progress=False)
    assert h["step"] == [len(pairs), 2 * len(pairs)]
    assert all(torch.equal(p, q) for p, q in zip(hmm.emission.parameters(), emission))  # emission lr 0
    assert not any(torch.equal(p, q) for p, q in
                   zip([p for n, p in hmm.named_parameters() if not n.startswith("emission.")], chain))

    reported = []
    args = type("Args", (), {"lr": 0.05, "chain_lr": None, "device": "cpu"})()
    history = run_adam(hmm, pairs, 3, args, lambda epoch, total: reported.append((epoch, total)), seed=0)
    assert [e for e, _ in reported] == [0, 1, 2] and history == [t for _, t in reported]
    assert history[-1] > history[0]  # the log-likelihood of the batches rises
