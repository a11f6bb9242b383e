"""The CLI's one error contract, on every task: each verb on each task's run folder either works
or says in one ``pyro-lvm: error: ...`` line (exit 2, no traceback) why not; broken run
folders and bad options get the same treatment; ``--help`` shows every default.

Every task is trained once with tiny settings (module fixture), so the whole matrix stays fast.
"""

import argparse
import contextlib
import json
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from pyro_lvm.cli import RUN_VERBS, build_parser, main as cli_main, summary
from pyro_lvm.tasks import TASKS, load_task

ROOT = Path(__file__).resolve().parents[1]

# Tiny training settings per task: seconds each.
TRAIN = {
    "vae": ["--epochs", "1", "--hidden", "8", "--z-dim", "2", "--samples", "3", "--no-figures"],
    "categorical_vae": ["--epochs", "1", "--latents", "2", "--classes", "3", "--hidden", "8", "--samples", "3",
                   "--eval-samples", "1", "--no-figures"],
    "ss_vae": ["--epochs", "1", "--labels", "20", "--z-dim", "2", "--hidden", "8", "--no-figures"],
    "prodlda": ["--epochs", "1", "--topics", "3", "--hidden", "8", "--samples", "3", "--draws", "10", "--quiet",
                "--no-figures"],
    "lda": ["--epochs", "1", "--topics", "3", "--hidden", "8", "--samples", "3", "--draws", "10", "--quiet",
            "--no-figures"],
    "collapse": ["--methods", "vae", "--epochs", "1", "--n-train", "40", "--n-valid", "20", "--n-test", "20",
                 "--hidden", "8", "--samples", "3", "--no-figures"],
    "compare_estimators": ["--repeats", "2", "--classes", "3", "--n", "10", "--temperatures", "1.0",
                           "--estimators", "score-function", "--no-figures"],
    "hmm_chorales": ["--states", "2", "--iterations", "2", "--no-figures"],  # + --data-path (a tiny pickle)
    "pos_induction": ["--toy-sentences", "40", "--states", "4", "--iterations", "2", "--no-figures"],
    "pair": ["--epochs", "1", "--samples", "3"],  # + --pair (a user's file, written by _inputs)
    "sentence_vae": ["--epochs", "1", "--embed-dim", "8", "--hidden-dim", "8", "--z-dim", "2", "--max-vocab", "40",
                     "--samples", "2", "--batch-size", "10", "--max-len", "12", "--models", "vae", "ae"],
    "symbol_sequences": ["--epochs", "1", "--symbols", "2", "--alphabet", "2", "--embed-dim", "8", "--hidden-dim", "8",
                         "--symbol-dim", "4", "--max-vocab", "40", "--samples", "2", "--batch-size", "10",
                         "--max-len", "12"],
}
# What each verb does on each task's run: 0 = works, 2 = refused in one line ("does not apply").
WORKS = {
    "vae": {"evaluate", "sample", "interpolate"}, "sentence_vae": {"evaluate", "sample", "interpolate"},
    "categorical_vae": {"evaluate", "sample"}, "ss_vae": {"evaluate", "sample"}, "hmm_chorales": {"evaluate", "sample"},
    "pos_induction": {"evaluate", "sample"}, "collapse": {"evaluate"}, "prodlda": {"evaluate"}, "lda": {"evaluate"},
    "compare_estimators": set(), "symbol_sequences": {"evaluate", "sample"}, "pair": {"evaluate"},
}
VERB_ARGS = {"evaluate": ["--samples", "3"], "sample": ["-n", "2"], "interpolate": ["--steps", "3"]}


def test_every_task_is_in_the_matrix():
    assert set(TRAIN) == set(TASKS) == set(WORKS)


def _inputs(folder: Path) -> dict[str, list[str]]:
    """Data files for the tasks that need one: a tiny JSB-style pickle and a text corpus."""
    jsb = folder / "jsb_chorales.pickle"
    seqs = [[(60 + (i + t) % 5, 64 + t % 3) for t in range(6)] for i in range(8)]
    jsb.write_bytes(pickle.dumps({"train": seqs[:4], "valid": seqs[4:6], "test": seqs[6:]}, protocol=2))
    words = "the a cat dog sees likes runs big small red".split()
    lines = [" ".join(words[(i * k) % len(words)] for k in range(1, 6)) for i in range(80)]
    (folder / "corpus.txt").write_text("\n".join(lines) + "\n")
    (folder / "user_pair.py").write_text(USER_PAIR)
    return {"hmm_chorales": ["--data-path", str(jsb)], "sentence_vae": ["--corpus", str(folder / "corpus.txt")],
            "symbol_sequences": ["--corpus", str(folder / "corpus.txt")],
            "pair": ["--pair", f"{folder / 'user_pair.py'}:make"]}


# A pair as a user writes it, the way Pyro's VAE tutorial does: pyro.module in model and guide,
# a global latent (a bias) next to the local code, and the whole data set returned with it.
USER_PAIR = """
import pyro, pyro.distributions as dist, torch
from torch import nn


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc, self.dec = nn.Linear(6, 4), nn.Linear(2, 6)

    def model(self, x):
        pyro.module("dec", self.dec)
        bias = pyro.sample("bias", dist.Normal(torch.zeros(6), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z) + bias).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("enc", self.enc)
        loc = pyro.param("bias_loc", torch.zeros(6))
        pyro.sample("bias", dist.Normal(loc, 0.1).to_event(1))
        h = self.enc(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(h[:, :2], h[:, 2:].exp()).to_event(1))


def make():
    x = torch.bernoulli(torch.full((30, 6), 0.3), generator=torch.Generator().manual_seed(0))
    return Pair(), x
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_runs")
    extra = _inputs(folder)
    out = {}
    for task, argv in TRAIN.items():
        run = folder / task
        with _quiet():
            assert cli_main(["train", task, *argv, *extra.get(task, []), "--out", str(run)]) == 0, task
        assert (run / "config.json").is_file(), task
        assert json.loads((run / "config.json").read_text())["task"] == task
        out[task] = run
    return out


@contextlib.contextmanager
def _quiet():
    """Tiny runs warn (short sentences truncated, ...): not what these tests are about."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _result(out: str) -> dict:
    """The JSON object a verb prints last (some print text before it)."""
    start = 0 if out.startswith("{") else out.rindex("\n{\n") + 1
    return json.loads(out[start:])


def _refusal(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("pyro-lvm: error: "), err
    assert "Traceback" not in err, err
    return lines[-1]


@pytest.mark.parametrize("verb", RUN_VERBS)
@pytest.mark.parametrize("task", sorted(TRAIN))
def test_every_verb_on_every_task(runs, task, verb, capsys):
    capsys.readouterr()
    with _quiet():
        rc = cli_main([verb, str(runs[task]), *VERB_ARGS[verb]])
    if verb in WORKS[task]:
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        assert isinstance(_result(captured.out), dict)
    else:
        assert rc == 2
        line = _refusal(capsys)
        assert f"'{verb}' does not apply to a {task} run: " in line


def test_evaluate_seed_is_honoured_and_says_how_many_samples(runs, capsys):
    reports = []
    for seed in ("0", "0", "1"):
        capsys.readouterr()
        assert cli_main(["evaluate", str(runs["vae"]), "--samples", "5", "--seed", seed]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    assert reports[0] == reports[1] and reports[0]["elbo"] != reports[2]["elbo"]
    assert reports[0]["elbo_samples"] == 1 and reports[0]["log_likelihood_samples"] == 5 and reports[0]["seed"] == 0


def test_interpolate_sentences_on_an_image_run_is_refused(runs, capsys):
    assert cli_main(["interpolate", str(runs["vae"]), "--sentences", "a b", "c d"]) == 2
    assert "--sentences is for text runs" in _refusal(capsys)


# ----------------------------------------------------------------------------- broken run folders

BROKEN_CONFIGS = {
    "no config.json": (None, "config.json not found"),
    "not JSON": (b'{"task": "vae",', "is not valid JSON (Expecting"),
    "not UTF-8": (b'\xff\xfe{"task"', "is not UTF-8 text"),
    "no task": (b'{"model": {}}', 'names no task (no "task" string'),
    "unknown task": (b'{"task": "nope"}', "names the task 'nope', which this pyro-lvm does not know"),
    "wrong contents": (b'{"task": "vae", "model": 3}', "config.json"),
}


@pytest.mark.parametrize("verb", RUN_VERBS)
@pytest.mark.parametrize("case", sorted(BROKEN_CONFIGS))
def test_verbs_on_a_broken_config(runs, tmp_path, case, verb, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs["vae"], run)
    content, words = BROKEN_CONFIGS[case]
    if content is None:
        (run / "config.json").unlink()
    else:
        (run / "config.json").write_bytes(content)
    assert cli_main([verb, str(run), *VERB_ARGS[verb]]) == 2
    line = _refusal(capsys)
    assert words in line and str(run) in line


@pytest.mark.parametrize("damage", ["truncated", "empty", "foreign"])
@pytest.mark.parametrize("task", sorted(t for t in TRAIN if WORKS[t]))
def test_verbs_on_broken_checkpoints(runs, tmp_path, task, damage, capsys):
    run = tmp_path / task
    shutil.copytree(runs[task], run)
    checkpoints = sorted(run.rglob("*.pt"))
    assert checkpoints, task
    for p in checkpoints:
        {"truncated": lambda: p.write_bytes(p.read_bytes()[:100]), "empty": lambda: p.write_bytes(b""),
         "foreign": lambda: p.write_text("<html>not a checkpoint</html>")}[damage]()
    for verb in sorted(WORKS[task]):
        with _quiet():
            assert cli_main([verb, str(run), *VERB_ARGS[verb]]) == 2, (task, verb)
        line = _refusal(capsys)
        assert ".pt" in line and str(run) in line, line


def test_a_run_folder_that_is_not_a_folder(tmp_path, capsys):
    for verb in RUN_VERBS:
        assert cli_main([verb, str(tmp_path / "missing")]) == 2
        assert "is not a folder" in _refusal(capsys)


def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pyro_lvm.cli", "evaluate", str(tmp_path)], capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("pyro-lvm: error: ") and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_a_diverging_run_is_reported_in_one_line(tmp_path, capsys):
    assert cli_main(["train", "vae", "--epochs", "3", "--hidden", "8", "--z-dim", "2", "--lr", "1e30",
                     "--no-autoencoder", "--no-figures", "--out", str(tmp_path / "run")]) == 2
    line = _refusal(capsys)
    assert "became" in line and "step" in line


# ----------------------------------------------------------------------------- help

def _subparsers(parser):
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return actions[0].choices if actions else {}


def _all_parsers():
    top = build_parser()
    for verb, sub in _subparsers(top).items():
        yield verb, sub
        for task, tsub in _subparsers(sub).items():
            yield f"{verb} {task}", tsub


def test_help_shows_the_default_of_every_option():
    for name, parser in _all_parsers():
        text = parser.format_help()
        for action in parser._actions:
            if action.option_strings and action.default is not argparse.SUPPRESS and action.dest != "help":
                assert action.help and "(default:" in parser._get_formatter()._expand_help(action), (name, action.dest)
        assert "usage: pyro-lvm" in text


def test_task_summaries_are_one_clean_line():
    for name in TASKS:
        line = summary(load_task(name))
        assert line and "\n" not in line and "``" not in line and ":class:" not in line, (name, line)
        assert not line.endswith(("et al", "e.g", "i.e")), (name, line)
    assert summary(load_task("ss_vae")).startswith("semi-supervised VAE M2 (Kingma et al. 2014) with few labels")


def test_help_exits_0_and_usage_errors_exit_2(capsys):
    assert cli_main(["train", "vae", "--help"]) == 0
    assert "(default: 64)" in capsys.readouterr().out
    assert cli_main(["evaluate"]) == 2
    assert _refusal(capsys).startswith("pyro-lvm: error: evaluate: the following arguments are required: run")


def test_ctrl_c_is_one_line_and_status_130(monkeypatch, tmp_path, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(load_task("vae"), "main", interrupted)
    assert cli_main(["train", "vae", "--out", str(tmp_path / "run")]) == 130
    assert capsys.readouterr().err == "pyro-lvm: error: interrupted\n"


def test_damaged_data_files_are_named(tmp_path, capsys):
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "train.amat").write_text("0 1 0\n1 x 0\n")
    (folder / "valid.amat").write_text("0 1 0\n")
    assert cli_main(["train", "vae", "--dataset", "binarized-mnist", "--data-path", str(folder),
                     "--out", str(tmp_path / "run")]) == 2
    line = _refusal(capsys)
    assert str(folder / "train.amat") in line and "is not a binarized MNIST .amat file" in line
    assert not (tmp_path / "run").exists()  # refused before anything was written
    bad_zip = tmp_path / "20ng.zip"
    bad_zip.write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip: no members
    assert cli_main(["train", "prodlda", "--dataset", "20ng", "--data-path", str(bad_zip),
                     "--out", str(tmp_path / "topic")]) == 2
    assert str(bad_zip) in _refusal(capsys)
    text = tmp_path / "corpus.txt"
    text.write_bytes(b"good line\n\xff\xfe bad bytes\n")
    assert cli_main(["train", "sentence_vae", "--corpus", str(text), "--out", str(tmp_path / "s")]) == 2
    line = _refusal(capsys)
    assert str(text) in line and "not UTF-8" in line


def test_a_broken_vocabulary_is_named(runs, tmp_path, capsys):
    run = tmp_path / "sentence"
    shutil.copytree(runs["sentence_vae"], run)
    (run / "vocab.json").write_text('{"format": ')
    for verb in ("evaluate", "sample", "interpolate"):
        assert cli_main([verb, str(run), *VERB_ARGS[verb]]) == 2
        line = _refusal(capsys)
        assert str(run / "vocab.json") in line and "is not a vocabulary saved by pyro_lvm" in line


# ----------------------------------------------------------------------------- your own pair

def test_train_your_own_pair_by_file_and_function(runs, tmp_path, capsys):
    """``train FILE.py:FUNCTION`` is ``train pair --pair FILE.py:FUNCTION``; ``evaluate`` rebuilds
    the pair from the file and loads the best checkpoint into it, exactly."""
    import pyro

    from pyro_lvm.checkpoint import set_seed
    from pyro_lvm.evaluation.report import evaluation_report
    from pyro_lvm.tasks import pair as pair_task
    from pyro_lvm.tasks.user_pair import load_user_pair
    from pyro_lvm.training.loop import load_trained

    spec = json.loads((runs["pair"] / "config.json").read_text())["pair"]
    run = tmp_path / "short"
    with _quiet():
        assert cli_main(["train", spec, "--epochs", "2", "--samples", "3", "--out", str(run)]) == 0
    trained = _result(capsys.readouterr().out)
    assert trained["epochs"] == 2 and trained["valid"]["num_datapoints"] == 3  # 10% of 30 held out
    assert "log_likelihood" in trained["valid"] and "kl_global" in trained["valid"]

    with _quiet():
        assert cli_main(["evaluate", str(run), "--samples", "4", "--seed", "5"]) == 0
    report = _result(capsys.readouterr().out)
    assert report["split"] == "valid" and report["checkpoint"] == "best.pt"

    pyro.clear_param_store()  # a fresh process, as far as Pyro is concerned
    pair, data = load_user_pair(spec)
    _, valid = pair_task.split(data, 0.1, 0)
    load_trained(pair, valid[:2], run / "pair")
    set_seed(5)
    with _quiet():
        assert evaluation_report(pair, valid, num_samples=4)["elbo"] == report["elbo"]

    with _quiet():
        assert cli_main(["evaluate", str(run), "--split", "test"]) == 2
    assert "choose --split train or valid" in _refusal(capsys)
    with _quiet():
        assert cli_main(["train", spec, "--epochs", "1", "--out", str(run)]) == 2  # the run-folder rule holds
    assert "--resume" in _refusal(capsys)


def test_your_own_pair_follows_the_seed(runs, tmp_path, capsys):
    """FUNCTION builds the pair after --seed is applied: the same seed gives the same run
    (initial weights included), another seed another one."""
    spec = json.loads((runs["pair"] / "config.json").read_text())["pair"]
    finals = []
    for seed, name in ((3, "a"), (3, "b"), (4, "c")):
        with _quiet():
            assert cli_main(["train", spec, "--epochs", "1", "--samples", "2", "--seed", str(seed),
                             "--out", str(tmp_path / name)]) == 0
        finals.append(_result(capsys.readouterr().out)["final"]["train_loss"])
    assert finals[0] == finals[1] and finals[0] != finals[2]


FUNCTION_PAIR = """
import pyro, pyro.distributions as dist, torch
from pyro.infer.autoguide import AutoNormal

def model(x):
    scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
    mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(mu, scale), obs=x)

def make():
    return (model, AutoNormal(model)), torch.linspace(-1.0, 3.0, 30)
"""


def test_your_own_pair_may_be_two_functions_as_svi_takes_them(tmp_path, capsys):
    """``FUNCTION()`` may return ``((model, guide), batch)``, as ``SVI(model, guide, ...)`` takes a
    pair: a model function with a bare ``pyro.param`` and an autoguide train, evaluate and inspect."""
    import pyro

    user = tmp_path / "functions.py"
    user.write_text(FUNCTION_PAIR)
    run = tmp_path / "run"
    with _quiet():
        assert cli_main(["train", f"{user}:make", "--epochs", "10", "--lr", "0.05", "--samples", "3",
                         "--out", str(run)]) == 0
    assert _result(capsys.readouterr().out)["epochs"] == 10
    valid = [e["valid_loss"] for e in json.loads((run / "pair" / "history.json").read_text())["epochs"]]
    assert valid[-1] < valid[0]
    pyro.clear_param_store()
    with _quiet():
        assert cli_main(["evaluate", str(run), "--samples", "3"]) == 0
    assert _result(capsys.readouterr().out)["checkpoint"] == "best.pt"
    with _quiet():
        assert cli_main(["inspect", "--pair", f"{user}:make"]) == 0
    assert _result(capsys.readouterr().out)["sites"] == ["scale", "mu", "x", "AutoNormal.locs.mu",
                                                          "AutoNormal.scales.mu", "mu_unconstrained"]


def test_a_run_refused_at_its_first_step_leaves_the_folder_as_it_was(tmp_path, capsys):
    """A refusal that only the first step can see (an autoguide on a per-datapoint latent) comes
    after the folder was claimed: it is cleared again, so the same command runs again as it did."""
    user = tmp_path / "local_autoguide.py"
    user.write_text(
        "import pyro, pyro.distributions as dist, torch\n"
        "from pyro.infer.autoguide import AutoNormal\n"
        "def model(x):\n"
        "    with pyro.plate('data', x.shape[0]):\n"
        "        mu = pyro.sample('mu', dist.Normal(0.0, 3.0))\n"
        "        pyro.sample('x', dist.Normal(mu, 1.0), obs=x)\n"
        "def make():\n"
        "    return (model, AutoNormal(model)), torch.linspace(-1.0, 3.0, 30)\n")
    run = tmp_path / "run"
    for _ in range(2):
        with _quiet():
            assert cli_main(["train", f"{user}:make", "--epochs", "1", "--out", str(run)]) == 2
        assert "site 'mu' comes from AutoNormal inside the plate 'data'" in _refusal(capsys)
        assert [p.name for p in run.iterdir() if p.name != ".pyro_lvm.lock"] == []


@pytest.mark.parametrize("argv, words", [
    (["train", "missing.py:make"], "--pair file not found: missing.py"),
    (["train", "pair", "--pair", "no_function"], "--pair must look like FILE.py:FUNCTION"),
    (["train", "pair", "--pair", "PAIR", "--valid-fraction", "0.9"], "--valid-fraction"),
])
def test_train_your_own_pair_refuses_bad_input(runs, argv, words, tmp_path, capsys):
    spec = json.loads((runs["pair"] / "config.json").read_text())["pair"]
    argv = [spec if a == "PAIR" else a for a in argv]
    assert cli_main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert words in _refusal(capsys)
    assert not (tmp_path / "run").exists()


def test_threads_are_set_once_by_the_command_not_by_the_task(runs, tmp_path, capsys, monkeypatch):
    """``--threads`` reaches torch before the task runs; the task itself leaves the count alone."""
    import torch

    from pyro_lvm.tasks import TASKS, load_task

    seen = []
    task = load_task("collapse")
    monkeypatch.setattr(task, "main", lambda args: seen.append(torch.get_num_threads()) or {})
    try:
        with _quiet():
            assert cli_main(["train", "collapse", *TRAIN["collapse"], "--threads", "2", "--out", str(tmp_path / "r")]) == 0
        assert seen == [2]
    finally:
        torch.set_num_threads(1)
    for name in TASKS:  # no task sets the process-wide count itself
        source = Path(load_task(name).__file__).read_text()
        assert "set_num_threads" not in source, name


def test_symbol_sequences_with_the_compression_prior(runs, tmp_path, capsys):
    """--prior language_model: Miao & Blunsom's latent words (docs/symbol_sequences.md), the run verbs, K > vocabulary."""
    corpus = runs["symbol_sequences"].parent / "corpus.txt"  # written by _inputs
    words = set(corpus.read_text().split())
    out = tmp_path / "run"
    tiny = ["--corpus", str(corpus), "--epochs", "1", "--symbols", "2", "--embed-dim", "8", "--hidden-dim", "8",
            "--symbol-dim", "4", "--samples", "2", "--batch-size", "10", "--prior-epochs", "1"]
    with _quiet():
        assert cli_main(["train", "symbol-sequences", *tiny, "--prior", "language_model", "--estimator", "rloo",
                         "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["prior"] == "language_model" and metrics["config"]["alphabet"] == metrics["vocab_size"]
    assert metrics["prior_pretraining"]["fixed"] and len(metrics["prior_pretraining"]["train_loss_per_word"]) == 1
    first = (out / "codes.txt").read_text().splitlines()[0].split("\t")[0].split()
    assert len(first) == 2 and set(first) <= words  # the code read as words of the corpus
    capsys.readouterr()
    assert cli_main(["sample", str(out), "-n", "2"]) == 0
    samples = json.loads(capsys.readouterr().out)["samples"]
    assert len(samples) == 2 and all(len(s["code_words"].split()) == 2 for s in samples)
    assert cli_main(["evaluate", str(out), "--samples", "2"]) == 0
    assert "nll" in json.loads(capsys.readouterr().out)
    assert cli_main(["train", "symbol-sequences", *tiny, "--prior", "language_model", "--alphabet", "500",
                     "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-lvm: error:") and "alphabet K=500 is larger than the vocabulary" in err
