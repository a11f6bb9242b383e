"""Yang et al.'s dilated CNN decoder: causality, receptive field, the loss against a direct
computation, decoding, every remedy through the task, checkpoints, the CLI and bad input."""

import argparse
import json
import math

import pyro
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from pyro_lvm.models.text import decoding
from pyro_lvm.cli import main as cli_main
from pyro_lvm.data.text import Vocabulary, encode_sentences
from pyro_lvm.models.text.cnn_decoder import (PRESETS, DilatedCNNDecoder, dilations_for, receptive_field_of,
                                              resolve_conditioning)
from pyro_lvm.models.text.sentence_vae import LSTMLanguageModel, SentenceVAE, load_sentence_model, save_sentence_model
from pyro_lvm.tasks import sentence_vae as task
from pyro_lvm.validation import InvalidArgumentError

SENTENCES = [s.split() for s in ["the cat sat on the mat", "a dog ran", "the dog sat on a mat today", "a cat",
                                 "cats and dogs ran on the mat", "the mat sat on a dog and a cat"]]


@pytest.fixture
def data():
    vocab = Vocabulary.build(SENTENCES)
    return vocab, encode_sentences(SENTENCES, vocab)


def _field_positions(decoder: DilatedCNNDecoder, t: int, length: int, positive: bool = False) -> list[int]:
    """Input positions whose gradient on the output at ``t`` is non-zero."""
    x = torch.randn(2, length, decoder.input.in_features)
    x = (x.abs() if positive else x).requires_grad_()
    out, _ = decoder(x)
    grad = torch.autograd.grad(out[:, t].sum(), x)[0]
    return (grad.abs().sum((0, 2)) > 0).nonzero().flatten().tolist()


# ----------------------------------------------------------------------------- the network

def test_presets_are_yang_et_al_networks():
    assert {name: receptive_field_of(d, 3) for name, d in PRESETS.items()} == {"small": 15, "medium": 63, "large": 125}
    assert dilations_for("large") == (1, 2, 4, 8, 16, 1, 2, 4, 8, 16)
    assert dilations_for(1) == () and dilations_for(5) == (1, 1) and dilations_for(15) == (1, 2, 4)
    assert dilations_for(6, kernel_size=2) == (1, 2, 2)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 12), st.sampled_from([2, 3, 4]))
def test_gradient_reaches_exactly_the_receptive_field(half, kernel):
    """Output t depends on inputs t-R+1 .. t and on nothing before or after (zero gradient there)."""
    field = 1 + (kernel - 1) * half
    torch.manual_seed(half)
    dec = DilatedCNNDecoder(3, 5, field, kernel_size=kernel)
    assert dec.receptive_field == field == receptive_field_of(dec.dilations, kernel)
    length = field + 6
    t = length - 3
    field_positions = list(range(t - field + 1, t + 1))
    assert set(_field_positions(dec, t, length)) <= set(field_positions)
    # With positive weights and inputs no ReLU is ever 0, so every path of the field carries gradient.
    with torch.no_grad():
        for p in dec.parameters():
            p.abs_()
    assert _field_positions(dec, t, length, positive=True) == field_positions


def test_model_is_causal_perturbing_later_tokens_leaves_earlier_logits(data):
    vocab, tokens = data
    torch.manual_seed(0)
    vae = SentenceVAE(len(vocab), 8, 12, 3, decoder="cnn", receptive_field=5).eval()
    inputs, z = tokens[:, :-1], torch.randn(len(tokens), 3)
    base = vae.decoder_logits(inputs, z)
    for s in range(1, inputs.shape[1]):
        changed = inputs.clone()
        changed[:, s] = (changed[:, s] + 1) % len(vocab)
        out = vae.decoder_logits(changed, z)
        assert torch.equal(out[:, :s], base[:, :s])          # nothing at or after s leaks backwards
        assert not torch.allclose(out[:, s], base[:, s])     # the input at s is seen at s
        if s + 5 < inputs.shape[1]:
            assert torch.equal(out[:, s + 5:], base[:, s + 5:])  # and forgotten R = 5 positions later


def _direct_logits(vae: SentenceVAE, inputs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The CNN decoder written out with explicit sums over taps (no Conv1d, no padding)."""
    dec = vae.decoder_rnn
    x = torch.cat([vae.embedding(inputs), z.unsqueeze(1).expand(-1, inputs.shape[1], -1)], -1)
    h = x @ dec.input.weight.T + dec.input.bias                       # (B, T, C)
    for block, d in zip(dec.blocks, dec.dilations):
        a = torch.relu(h)
        conv = torch.zeros_like(h) + block.conv.bias
        for t in range(h.shape[1]):
            for j in range(dec.kernel_size):   # tap j reads t - (k - 1 - j) d
                src = t - (dec.kernel_size - 1 - j) * d
                if src >= 0:
                    conv[:, t] += a[:, src] @ block.conv.weight[:, :, j].T
        h = h + torch.relu(conv) @ block.mix.weight[:, :, 0].T + block.mix.bias
    return vae.output(h)


def test_loss_equals_a_direct_computation(data):
    vocab, tokens = data
    torch.manual_seed(1)
    vae = SentenceVAE(len(vocab), 6, 7, 3, decoder="cnn", receptive_field=7)
    inputs, targets, mask = vae.split(tokens)
    loc, scale = vae.encode_dist(tokens)
    pyro.set_rng_seed(5)  # the guide's draw of z, as the ELBO below makes it
    z = pyro.poutine.trace(vae.guide).get_trace(tokens).nodes["z"]["value"]
    log_lik = (F.log_softmax(_direct_logits(vae, inputs, z), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
               * mask).sum()
    kl = (0.5 * (loc ** 2 + scale ** 2 - 1) - scale.log()).sum()
    pyro.set_rng_seed(5)
    loss = pyro.infer.TraceMeanField_ELBO().differentiable_loss(vae.model, vae.guide, tokens)
    assert float(loss.detach()) == pytest.approx(float(kl - log_lik), rel=1e-5)
    lm = LSTMLanguageModel(len(vocab), 6, 7, decoder="cnn", receptive_field=3)
    lm_logits = lm.decoder_logits(inputs, None)
    direct = -(F.log_softmax(lm_logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask).sum()
    assert float(pyro.infer.Trace_ELBO().differentiable_loss(lm.model, lm.guide, tokens)) == pytest.approx(float(direct))


# ----------------------------------------------------------------------------- decoding and files

def test_step_by_step_decoding_equals_teacher_forcing_and_decoders_work(data):
    vocab, tokens = data
    torch.manual_seed(2)
    vae = SentenceVAE(len(vocab), 8, 12, 3, decoder="cnn", receptive_field=5, max_len=12).eval()
    inputs, z = tokens[:, :-1], torch.randn(len(tokens), 3)
    state, steps = vae.init_state(z), []
    for t in range(inputs.shape[1]):
        logits, state = vae.step(inputs[:, t], state, z)
        steps.append(logits)
    assert torch.allclose(torch.stack(steps, 1), vae.decoder_logits(inputs, z), atol=1e-5)
    assert state[0].shape == (4, len(tokens), 8 + 3)   # the last R - 1 inputs, batch on dim 1
    code = z[:2]
    assert decoding.beam_search(vae, code, beam_size=1) == decoding.greedy(vae, code)
    assert len(decoding.beam_search(vae, code, beam_size=3)) == 2
    assert len(decoding.sample(vae, code, temperature=0.7)) == 2
    assert len(decoding.homotopy(vae, vocab, "the cat sat", "a dog ran", steps=3)) == 3
    lm = LSTMLanguageModel(len(vocab), 8, 12, decoder="cnn", receptive_field="small", max_len=20)
    assert len(decoding.sample_prior(lm, 3, "beam", beam_size=2)) == 3


def test_checkpoint_keeps_the_decoder(tmp_path, data):
    vocab, tokens = data
    torch.manual_seed(3)
    vae = SentenceVAE(len(vocab), 8, 12, 3, decoder="cnn", receptive_field=9).eval()
    save_sentence_model(vae, vocab, tmp_path / "m.pt")
    loaded, _ = load_sentence_model(tmp_path / "m.pt", vocab)
    assert loaded.config()["decoder"] == "cnn" and loaded.decoder_rnn.receptive_field == 9
    z = torch.randn(len(tokens), 3)
    assert torch.equal(loaded.decoder_logits(tokens[:, :-1], z), vae.decoder_logits(tokens[:, :-1], z))


# ----------------------------------------------------------------------------- the task and the CLI

TINY = ["--subset", "120", "--eval-subset", "20", "--epochs", "2", "--embed-dim", "8", "--hidden-dim", "8",
        "--z-dim", "3", "--max-vocab", "300", "--max-len", "20", "--samples", "2", "--batch-size", "40",
        "--models", "vae", "--decoder", "cnn", "--receptive-field", "5"]
REMEDIES = {"none": [], "anneal": ["--remedy", "anneal", "--anneal-steps", "4"], "word-dropout": ["--word-keep", "0.5"],
            "free-bits": ["--remedy", "free-bits", "--free-bits", "50"],
            "aggressive": ["--remedy", "aggressive", "--aggressive-steps", "2"],
            "pretrain+free-bits": ["--remedy", "pretrain+free-bits", "--pretrain-epochs", "1", "--free-bits", "50"],
            "pretrain+anneal+free-bits": ["--remedy", "pretrain+anneal+free-bits", "--pretrain-epochs", "1",
                                          "--free-bits", "50", "--anneal-start", "0", "--anneal-steps", "4"]}


@pytest.mark.parametrize("name", list(REMEDIES))
def test_every_remedy_trains_the_cnn_vae_through_the_task(tmp_path, name):
    parser = argparse.ArgumentParser()
    task.add_arguments(parser)
    args = parser.parse_args([*TINY, *REMEDIES[name], "--out", str(tmp_path / "run")])
    with pytest.warns(UserWarning, match="truncated"):
        metrics = task.main(args)
    vae = metrics["models"]["vae"]
    assert vae["config"]["decoder"] == "cnn" and vae["config"]["conditioning"] == "concat"
    assert math.isfinite(vae["test"]["nll"]) and vae["test"]["nll"] <= vae["test"]["neg_elbo"] + 1.0
    assert metrics["text"]["vae_samples"] and len(metrics["text"]["homotopy"]["VAE"]) == args.steps
    history = json.loads((tmp_path / "run" / "vae" / "history.json").read_text())["epochs"]
    if name in ("free-bits", "pretrain+free-bits"):   # 3 dimensions charged at least 50 nats each
        assert all(e["train_loss"] > 150 for e in history)
    if name == "aggressive":
        assert history[0]["aggressive_inner_steps"] == 2.0
    if name.startswith("pretrain+"):
        pre = json.loads((tmp_path / "run" / "vae" / "pretrain" / "history.json").read_text())["epochs"]
        assert len(pre) == 1 and pre[0]["train_loss"] < history[0]["train_loss"]  # no KL term in pretraining
        assert "kl_weight" not in pre[0]   # the annealing belongs to the training phase only
    if name == "pretrain+anneal+free-bits":  # 3 batches per epoch: the weight starts at 0 and reaches 1 at step 4
        assert [e["kl_weight_min"] for e in history] == [0.0, 0.75] and history[-1]["kl_weight"] == 1.0


def test_cli_receptive_field_errors(tmp_path, capsys):
    for bad, words in (("0", "positive int"), ("4", "use 3 or 5"), ("huge", "'small', 'medium', 'large'")):
        assert cli_main(["train", "sentence-vae", "--decoder", "cnn", "--receptive-field", bad,
                         "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert "pyro-lvm: error: train sentence_vae: argument --receptive-field: must be" in err and words in err
    assert cli_main(["train", "sentence-vae", "--receptive-field", "5", "--out", str(tmp_path / "y"), *TINY[:2]]) == 2
    assert "CNN decoder only" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad input

def test_bad_input_is_refused_or_warned():
    with pytest.raises(InvalidArgumentError, match="positive int"):
        dilations_for(0)
    with pytest.raises(InvalidArgumentError, match="use 13 or 15"):
        dilations_for(14)
    with pytest.raises(InvalidArgumentError, match="kernel-3"):
        dilations_for("small", kernel_size=2)
    with pytest.raises(InvalidArgumentError, match="needs a decoder with an initial state"):
        resolve_conditioning("cnn", "init")
    with pytest.raises(InvalidArgumentError, match="decoder must be one of"):
        SentenceVAE(20, 4, 4, 2, decoder="transformer")
    with pytest.raises(InvalidArgumentError, match="CNN decoder only"):
        SentenceVAE(20, 4, 4, 2, receptive_field=5)
    with pytest.warns(UserWarning, match="sees every earlier word"):
        SentenceVAE(20, 4, 4, 2, decoder="cnn", receptive_field=21, max_len=20)
    assert resolve_conditioning("lstm", None) == "init" and resolve_conditioning("cnn", None) == "concat"


# ----------------------------------------------------------------------------- defaults, example, PTB rows

def _task_args(argv):
    parser = argparse.ArgumentParser()
    task.add_arguments(parser)
    return parser.parse_args(argv)


def test_conditioning_default_follows_the_decoder_and_the_showcase_keeps_its_own():
    showcase = _task_args([])
    task.check_arguments(showcase)
    assert showcase.conditioning == "both" and showcase.decoder == "lstm" and showcase.receptive_field is None
    cnn = _task_args(["--decoder", "cnn"])
    task.check_arguments(cnn)
    assert cnn.conditioning == "concat"
    assert task.build("vae", cnn, 30).decoder_rnn.receptive_field == 15       # "small" unless asked
    with pytest.raises(InvalidArgumentError, match="needs a decoder with an initial state"):
        task.build("vae", _task_args(["--decoder", "cnn", "--conditioning", "both"]), 30)


def test_cli_refuses_an_lstm_conditioning_for_the_cnn(tmp_path, capsys):
    assert cli_main(["train", "sentence-vae", *TINY, "--conditioning", "init", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-lvm: error:") and "use conditioning='concat'" in err


def test_task_trains_the_cnn_with_li_et_al_recipe(tmp_path):
    args = _task_args([*TINY, "--models", "vae", "lm", "--remedy", "pretrain+free-bits", "--pretrain-epochs", "1",
                       "--epochs", "1", "--out", str(tmp_path / "ex")])
    with pytest.warns(UserWarning, match="truncated"):
        metrics = task.main(args)
    vae, lm = metrics["models"]["vae"], metrics["models"]["lm"]
    assert vae["config"]["receptive_field"] == 5 and lm["config"]["decoder"] == "cnn"   # the same-architecture LM
    assert vae["remedy"] == "pretrain+free-bits" and (tmp_path / "ex" / "vae" / "pretrain" / "best.pt").is_file()


def _fake_ptb(folder):
    import random

    rng = random.Random(0)
    words = "the a cat dog sat ran on mat today and".split()
    folder.mkdir()
    for split, n in (("train", 60), ("valid", 12), ("test", 12)):
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 9))) for _ in range(n)]
        (folder / f"ptb.{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_ptb_rows_with_the_cnn_decoder_and_li_et_al(tmp_path):
    from pyro_lvm.reproduce import sentence_vae_ptb as ptb

    assert ptb.row_spec("lm@cnn15") == ("lm", "none", False, "cnn", 15)
    assert ptb.row_spec("vae+anneal@cnnlarge") == ("vae", "anneal", False, "cnn", "large")
    assert ptb.row_spec("vae+pretrain+free-bits") == ("vae", "pretrain+free-bits", False, "lstm", None)
    assert "vae+pretrain+free-bits" not in ptb.parser().parse_args([]).rows    # the table's six rows by default
    for bad in ("lm@cnn", "vae+magic", "vae@rnn5"):
        with pytest.raises(ValueError, match="unknown row"):
            ptb.row_spec(bad)
    args = ptb.parser().parse_args(["--data", str(_fake_ptb(tmp_path / "ptb")), "--epochs", "1", "--embed-dim", "8",
                                    "--hidden-dim", "8", "--z-dim", "2", "--samples", "2", "--pretrain-epochs", "1",
                                    "--rows", "lm@cnn5", "vae+anneal@cnn5", "vae+pretrain+free-bits"])
    result = ptb.run(args)
    rows = result["rows"]
    assert rows["lm@cnn5"]["config"]["decoder"] == "cnn" and rows["lm@cnn5"]["config"]["receptive_field"] == 5
    assert rows["vae+anneal@cnn5"]["config"]["conditioning"] == "concat"
    assert rows["vae+pretrain+free-bits"]["config"]["decoder"] == "lstm"
    assert len(rows["vae+pretrain+free-bits"]["pretraining"]) == 1 and "output.weight" in rows["vae+pretrain+free-bits"]["reset"]
    for r in rows.values():
        assert {"train_cpu_seconds", "eval_cpu_seconds"} <= set(r) and math.isfinite(r["test"]["nll"])
    assert "| vae+anneal@cnn5 |" in ptb.markdown(rows)
