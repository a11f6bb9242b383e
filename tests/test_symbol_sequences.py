"""Latent symbol sequences: the pair against brute force, every estimator by name, the
comparison harness, decoding, what the codes carry, the task and CLI, and bad input."""

import argparse
import itertools
import json
import math
import runpy
import warnings
import zipfile
from pathlib import Path

import pyro
import pytest
import torch
import torch.nn.functional as F

from pyro_lvm import fit
from pyro_lvm.models.text import decoding
from pyro_lvm.checkpoint import load_checkpoint
from pyro_lvm.cli import main as cli_main
from pyro_lvm.data.text import Vocabulary, encode_sentences
from pyro_lvm.infer import KLScaledELBO
from pyro_lvm.infer.discrete.estimators import ESTIMATORS, DiscreteELBO
from pyro_lvm.infer.discrete.comparison import compare_estimators
from pyro_lvm.models.text.symbol_sequences import (SymbolSequenceAutoencoder, mutual_information, symbol_tag_information,
                                                   symbol_word_associations)
from pyro_lvm.tasks import symbol_sequences as task
from pyro_lvm.validation import InvalidArgumentError

SENTENCES = [s.split() for s in ["the cat sat", "a dog ran far", "the dog sat on a mat", "a cat ran",
                                 "dogs sat", "the mat"]]


@pytest.fixture
def data():
    vocab = Vocabulary.build(SENTENCES)
    return vocab, encode_sentences(SENTENCES, vocab)


def _pair(vocab, L=2, K=3, seed=0):
    torch.manual_seed(seed)
    return SymbolSequenceAutoencoder(len(vocab), n_symbols=L, alphabet=K, embed_dim=8, hidden_dim=8, symbol_dim=4,
                                     max_len=10)


def _brute_force_elbo(pair, tokens):
    """sum_z q(z|x) [log p(x|z) + log p(z) - log q(z|x)] over all K**L codes, one sentence at a time."""
    total = 0.0
    with torch.no_grad():
        log_q = pair.code_logits(tokens).log_softmax(-1)  # (B, L, K)
        for b in range(len(tokens)):
            for code in itertools.product(range(pair.alphabet), repeat=pair.n_symbols):
                z = F.one_hot(torch.tensor(code), pair.alphabet).float().flatten()
                logits = pair.decoder_logits(tokens[b:b + 1, :-1], z.unsqueeze(0))[0]
                targets = tokens[b, 1:]
                real = targets != 0
                log_lik = logits.log_softmax(-1)[real].gather(-1, targets[real].unsqueeze(-1)).sum()
                lq = sum(log_q[b, l, k] for l, k in enumerate(code))
                total += float(lq.exp() * (log_lik - pair.n_symbols * math.log(pair.alphabet) - lq))
    return total


def test_enumerated_elbo_and_exact_marginal_match_brute_force(data):
    vocab, tokens = data
    pair = _pair(vocab)
    enum = DiscreteELBO("enumerate", max_plate_nesting=1)
    assert -enum.loss(pair.model, pair.guide, tokens) == pytest.approx(_brute_force_elbo(pair, tokens), rel=1e-5)
    log_px = pair.log_marginal(tokens)
    with torch.no_grad():
        lik = torch.stack([pair.likelihood(tokens, c.expand(len(tokens), -1, -1)).log_prob(tokens[:, 1:])
                           for c in pair.all_codes()])
    assert torch.allclose(log_px, torch.logsumexp(lik, 0) - 2 * math.log(3))
    assert bool((log_px >= -pair.negative_elbo(tokens, 200) - 0.05).all())  # log p(x) >= ELBO


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_every_estimator_trains_the_pair_by_name(data, estimator):
    vocab, tokens = data
    pair = _pair(vocab)
    before = {n: p.detach().clone() for n, p in pair.named_parameters()}
    history = fit(pair, tokens, tokens, elbo=DiscreteELBO(estimator, 0.7, max_plate_nesting=1), epochs=3,
                  batch_size=3, lr=1e-2)
    assert all(math.isfinite(v) for v in history["train_loss"] + history["valid_loss"])
    assert not torch.equal(before["to_logits.weight"], pair.to_logits.weight)   # the guide learns
    assert not torch.equal(before["output.weight"], pair.output.weight)         # so does the decoder


def test_harness_compares_every_estimator_with_the_exact_gradient(data):
    vocab, tokens = data
    pair = _pair(vocab, L=2, K=2)
    names = task.comparable_estimators(pair, tokens)
    assert names == list(ESTIMATORS)  # 4 codes: enumeration is feasible
    cmp = compare_estimators(pair, tokens, names, temperatures=[0.5], repeats=20)
    assert cmp.exact_available and cmp.latent_size == 4
    assert cmp.row("enumerate").relative_bias < 1e-5 and cmp.row("enumerate").trace_cov < 1e-8
    assert cmp.row("score-function").trace_cov > cmp.row("score-function-baseline").trace_cov > 0
    big = _pair(vocab, L=6, K=16)
    assert "enumerate" not in task.comparable_estimators(big, tokens)


def test_codes_carry_the_sentence_and_decode(data):
    """With the KL switched off (an autoencoder), the 3 x 8 code identifies each of six sentences:
    decoding from a sentence's own code beats decoding from another sentence's by far."""
    vocab, tokens = data
    torch.manual_seed(0)
    pair = SymbolSequenceAutoencoder(len(vocab), 3, 8, embed_dim=16, hidden_dim=32, symbol_dim=8, max_len=10)
    fit(pair, tokens, elbo=KLScaledELBO(DiscreteELBO("straight-through", 0.5, max_plate_nesting=1), beta=0.0),
        epochs=150, batch_size=6, lr=2e-2)
    code = pair.encode(tokens)
    assert code.shape == (6, 24) and torch.equal(code.sum(-1), torch.full((6,), 3.0))
    inputs, targets, mask = pair.split(tokens)

    def accuracy(z):
        return float(((pair.decoder_logits(inputs, z).argmax(-1) == targets) & mask).sum() / mask.sum())

    assert decoding.reconstruction_accuracy(pair, tokens) == pytest.approx(accuracy(code))
    assert accuracy(code) > 0.85 and accuracy(code) > accuracy(code.roll(1, 0)) + 0.15
    assert decoding.beam_search(pair, code[:2], beam_size=1) == decoding.greedy(pair, code[:2])
    assert len(decoding.sample_prior(pair, 3, "sample", temperature=0.8)) == 3
    exact, rows = task.exact_reconstructions(pair, vocab, tokens)
    assert exact == sum(r["sentence"] == r["reconstruction"] for r in rows) / 6


def test_mutual_information_and_associations_on_known_cases():
    # Symbols copy the tag at word position 1 and ignore position 2.
    tags = [["DT", "NN"], ["VB", "NN"], ["DT", "JJ"], ["VB", "JJ"]] * 5
    first = torch.tensor([[0 if t[0] == "DT" else 1] for t in tags])
    info = symbol_tag_information(first, tags, positions=2)
    assert info["mi"][0][0] == pytest.approx(math.log(2)) and info["mi"][0][1] == pytest.approx(0.0, abs=1e-12)
    assert info["chance"][0][0] < math.log(2)
    assert mutual_information([(a, b) for a in range(3) for b in range(4)]) == pytest.approx(0.0, abs=1e-12)
    sentences = [["red", "apple"], ["red", "car"], ["blue", "sky"], ["blue", "sea"]] * 3
    codes = torch.tensor([[0], [0], [1], [1]] * 3)
    assoc = symbol_word_associations(codes, sentences, top=1, min_count=3)
    assert assoc["0"][0] == ("red", pytest.approx(math.log(2))) and assoc["1"][0][0] == "blue"


def test_bad_input(data):
    vocab, tokens = data
    with pytest.raises(InvalidArgumentError, match="n_symbols must be a positive int"):
        SymbolSequenceAutoencoder(len(vocab), n_symbols=0)
    for k in (0, 1):
        with pytest.raises(InvalidArgumentError, match="alphabet .* must be an int >= 2.*carries no information"):
            SymbolSequenceAutoencoder(len(vocab), alphabet=k)
    with pytest.raises(ValueError, match="more than max_codes"):
        _pair(vocab, L=13, K=2).log_marginal(tokens)
    with pytest.raises(ValueError, match="one <eos>"):
        _pair(vocab).negative_elbo(torch.tensor([[2, 5, 6]]))
    with pytest.raises(InvalidArgumentError, match="tags has 1 sentences"):
        symbol_tag_information(torch.zeros(2, 1, dtype=torch.long), [["DT"]])
    parser = argparse.ArgumentParser()
    task.add_arguments(parser)
    with pytest.raises(InvalidArgumentError, match="pass --anneal-rate 0"):
        task.objective(parser.parse_args(["--estimator", "gumbel", "--kl-weight", "0.5"]))
    elbo, callbacks = task.objective(parser.parse_args(["--estimator", "gumbel", "--kl-weight", "0", "--anneal-rate", "0"]))
    assert isinstance(elbo, KLScaledELBO) and elbo.beta == 0.0 and callbacks == []


TINY = ["--subset", "80", "--eval-subset", "12", "--epochs", "1", "--symbols", "2", "--alphabet", "3",
        "--embed-dim", "8", "--hidden-dim", "8", "--symbol-dim", "4", "--max-vocab", "200", "--max-len", "15",
        "--batch-size", "40"]


def _masc_zip(path):
    lines = ["The_DT cat_NN sat_VBD ._.", "A_DT dog_NN ran_VBD far_RB ._.", "Dogs_NNS sat_VBD ._.",
             "The_DT red_JJ car_NN stopped_VBD ._."] * 8
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("masc_tagged/written/a.txt", "\n".join(lines[:16]))
        z.writestr("masc_tagged/spoken/b.txt", "\n".join(lines[16:]))
    return path


def test_task_cli_and_run_verbs(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["train", "symbol-sequences", *TINY, "--estimator", "score-function-baseline", "--compare",
                     "--compare-batch", "4", "--repeats", "3", "--corpus", str(_masc_zip(tmp_path / "masc_tagged.zip")),
                     "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["nll_method"] == "exact sum over 9 codes" and metrics["test"]["nll"] <= metrics["test"]["neg_elbo"] + 1e-3
    assert len(metrics["tag_information"]["mi"]) == 2 and (out / "tag_information.png").stat().st_size > 1000
    assert [r["estimator"] for r in metrics["estimators"]["table"]][:3] == list(ESTIMATORS)[:3]
    assert (out / "estimators" / "table.md").is_file() and (out / "codes.txt").read_text().count("->") == metrics["data"]["test"]
    assert load_checkpoint(out / "model.pt")["format"] == task.MODEL_FORMAT  # data only, loads without code
    capsys.readouterr()
    assert cli_main(["sample", str(out), "-n", "3"]) == 0
    assert len(json.loads(capsys.readouterr().out)["samples"]) == 3
    assert cli_main(["evaluate", str(out), "--samples", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["nll"] == pytest.approx(metrics["test"]["nll"], rel=1e-4)
    assert cli_main(["interpolate", str(out)]) == 2
    assert "discrete symbols" in capsys.readouterr().err
    assert cli_main(["train", "symbol-sequences", "--alphabet", "1", "--out", str(tmp_path / "x")]) == 2
    assert "pyro-lvm: error: train symbol_sequences: argument --alphabet: must be an int >= 2" in capsys.readouterr().err


def test_task_runs_offline_on_the_embedded_corpus(tmp_path):
    with pytest.warns(UserWarning, match="truncated"):
        assert cli_main(["train", "symbol-sequences", *TINY, "--estimator", "gumbel", "--out", str(tmp_path / "ex")]) == 0
    metrics = json.loads((tmp_path / "ex" / "metrics.json").read_text())
    assert metrics["estimator"] == "gumbel" and metrics["data"]["name"] == "wikipedia-gensim-sample"
    assert "tag_information" not in metrics and metrics["word_associations"]


def test_benchmark_grid_runs_on_a_corpus_without_tags(tmp_path):
    """benchmarks/symbol_sequences.py's grid on the embedded corpus: no POS alignment (it has no
    tags), the word associations of --figure-code instead, and no heatmap."""
    bench = runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "symbol_sequences.py"))
    args = bench["parser"]().parse_args(
        ["--data", "embedded", "--parts", "grid", "--subset", "80", "--eval-subset", "12", "--symbols", "1", "2",
         "--alphabets", "3", "--figure-code", "2", "3", "--epochs", "1", "--embed-dim", "8", "--hidden-dim", "8",
         "--symbol-dim", "4", "--out", str(tmp_path / "grid.json"), "--figures", str(tmp_path / "figures")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the corpus's long sentences are truncated (recorded in the JSON)
        result = bench["main"](args)
    assert result["data"]["name"] == "wikipedia-gensim-sample" and result["data_warnings"]
    assert [(r["L"], r["K"]) for r in result["grid"]] == [(1, 3), (2, 3)]
    assert all("tag_information" not in r and r["test"]["nll_method"].startswith("exact") for r in result["grid"])
    assert result["grid"][1]["word_associations"] and "word_associations" not in result["grid"][0]
    assert json.loads((tmp_path / "grid.json").read_text())["grid"] == json.loads(json.dumps(result["grid"]))
    assert not (tmp_path / "figures" / "symbol_tag_information.png").exists()


def test_compression_benchmark_reads_the_corpus_it_is_given(tmp_path):
    """benchmarks/symbol_compression.py --data: every row trains on that corpus (here a text file of
    SENTENCES, whose seven words are the whole vocabulary), not on the embedded default."""
    corpus = tmp_path / "sentences.txt"
    corpus.write_text("\n".join(" ".join(s) for s in SENTENCES * 10) + "\n")
    bench = runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "symbol_compression.py"))
    args = bench["parser"]().parse_args(
        ["--data", str(corpus), "--rows", "uniform-ae", "compression-ae", "--symbols", "2", "--alphabet", "3",
         "--epochs", "1", "--prior-epochs", "1", "--embed-dim", "8", "--hidden-dim", "8", "--samples", "2",
         "--examples", "1", "--out", str(tmp_path / "compression.json")])
    result = bench["main"](args)
    words = {w for s in SENTENCES for w in s}
    for row in result["rows"].values():
        assert row["task_args"][row["task_args"].index("--corpus") + 1] == str(corpus)
        assert row["vocab_size"] <= len(words) + 4          # the words and the special tokens, nothing more
        assert all(math.isfinite(row["test"][k]) for k in ("nll", "neg_elbo"))
    assert result["rows"]["compression-ae"]["alphabet"] == result["rows"]["compression-ae"]["vocab_size"]


def test_evaluation_samples_codes_when_they_are_too_many_to_sum(data):
    """Past max_codes the NLL is importance-sampled, batch by batch; with 200 of 9 codes it is the exact value
    up to the estimator's noise."""
    vocab, tokens = data
    pair = _pair(vocab)
    exact = task.evaluate_model(pair, tokens, samples=200)
    assert exact["nll_method"] == "exact sum over 9 codes"
    pyro.set_rng_seed(0)
    asked = task.evaluate_model(pair, tokens, samples=200, batch_size=2, exact_codes=8)  # the caller's limit
    pair.max_codes = 4                     # 9 codes are now "too many"
    pyro.set_rng_seed(0)
    sampled = task.evaluate_model(pair, tokens, samples=200, batch_size=2)
    assert sampled["nll_method"] == asked["nll_method"] == "importance sampling, 200 codes from q"
    assert sampled["nll"] == asked["nll"]
    assert sampled["nll"] == pytest.approx(exact["nll"], abs=0.1) and sampled["sentences"] == len(tokens)


def test_exact_marginal_in_groups_of_codes_is_the_same_sum(data):
    """log_marginal bounds its memory by decoding the codes a few at a time: any grouping gives the
    one-pass sum (the smallest budget decodes one code at a time)."""
    vocab, tokens = data
    pair = _pair(vocab, L=2, K=4)
    with torch.no_grad():
        one_pass = pair.log_marginal(tokens, max_logits=10**9)
        for budget in (1, tokens.numel() * len(vocab) * 3):  # one code per group; three codes per group
            assert torch.allclose(pair.log_marginal(tokens, max_logits=budget), one_pass, atol=1e-5)
    with pytest.raises(InvalidArgumentError, match="max_logits must be a positive int"):
        pair.log_marginal(tokens, max_logits=0)
