"""The example scripts run as a user runs them (a subprocess, tiny arguments), and the
pyro-lvm command trains, evaluates and resumes a run."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyro_lvm.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "1", "--samples", "5", "--hidden", "16", "--z-dim", "2"]


def run_example(name: str, *args: str) -> str:
    """Run ``examples/NAME.py ARGS`` as a script; return what it printed (progress bars go to stderr)."""
    done = subprocess.run([sys.executable, str(ROOT / "examples" / f"{name}.py"), *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in the output:\n{text}"
    return float(match.group(1))


# The readable programs tested here (the sequence, text, HMM and topic examples have their own tests).
EXAMPLES = ("vae", "categorical_vae", "ss_vae", "compare_estimators", "collapse")


def test_examples_use_the_public_api_only():
    for name in EXAMPLES:
        script = ROOT / "examples" / f"{name}.py"
        source = script.read_text()
        assert "pyro_lvm.tasks" not in source, f"{script.name} imports a task"
        assert not re.search(r"from pyro_lvm[\w.]* import [^\n]*\b_\w", source), f"{script.name} imports a private name"
        assert source.startswith('"""'), f"{script.name} has no module docstring"


def test_vae_example_writes_its_model_out(tmp_path):
    source = (ROOT / "examples" / "vae.py").read_text()
    for line in ('pyro.module("decoder"', 'pyro.module("encoder"', 'pyro.plate("data"', "dist.Bernoulli(logits=",
                 'pyro.sample("z", dist.Normal('):
        assert line in source
    out = tmp_path / "vae"
    printed = run_example("vae", *TINY, "--out", str(out))
    elbo, rec, kl = (number(rf"{p} (-?[\d.]+)", printed) for p in ("test ELBO", "reconstruction", "KL"))
    assert elbo == pytest.approx(rec - kl, abs=0.02) and kl >= 0 and -64 * 0.7 < elbo < 0  # 64 pixels, better than chance
    assert elbo <= number(r"log p\(x\) ~ (-?[\d.]+)", printed) + 1.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["test"]["kl"] >= 0 and 0 <= metrics["test"]["active_units"] <= 2
    for name in ("reconstructions", "samples", "training_curves"):
        assert (out / f"{name}.png").stat().st_size > 1000


def test_categorical_vae_example(tmp_path):
    out = tmp_path / "cat"
    printed = run_example("categorical_vae", "--epochs", "1", "--samples", "5", "--hidden", "16", "--latents", "3",
                          "--classes", "4", "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["estimator"] == "gumbel" and metrics["epochs"] == 1
    assert 0.5 <= metrics["final_temperature"] < 1.0  # annealed from 1, floor 0.5
    assert 0 < metrics["test_neg_elbo"] < 64 * 0.7
    assert metrics["test_log_likelihood"] >= -metrics["test_neg_elbo"] - 1.0  # log p(x) >= ELBO, up to noise
    assert f"{metrics['test_neg_elbo']:.2f}" in printed
    for name in ("reconstructions", "samples", "training_curves"):
        assert (out / f"{name}.png").stat().st_size > 1000


def test_ss_vae_example(tmp_path):
    out = tmp_path / "ss"
    printed = run_example("ss_vae", "--epochs", "3", "--hidden", "32", "--z-dim", "4", "--labels", "50",
                          "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"] == 50 and metrics["epochs"] == 3
    assert 0.4 < metrics["test_accuracy"] <= 1.0  # 10 classes: chance is 0.1
    assert f"test {metrics['test_accuracy']:.3f}" in printed
    assert (out / "generated_per_class.png").stat().st_size > 1000


def test_compare_estimators_example(tmp_path):
    out = tmp_path / "cmp"
    printed = run_example("compare_estimators", "--estimators", "enumerate", "score-function", "gumbel",
                          "--temperatures", "1.0", "--repeats", "5", "--n", "20", "--classes", "3", "--out", str(out))
    comparison = json.loads((out / "comparison.json").read_text())
    rows = {r["estimator"]: r for r in comparison["rows"]}
    assert set(rows) == {"enumerate", "score-function", "gumbel"} and comparison["exact_available"]
    assert rows["enumerate"]["trace_cov"] == pytest.approx(0, abs=1e-6)  # exact: no variance
    assert rows["score-function"]["trace_cov"] > 0
    assert "| enumerate |" in printed and (out / "variance_by_estimator.png").stat().st_size > 1000


def test_collapse_example(tmp_path):
    out = tmp_path / "col"
    printed = run_example("collapse", "--methods", "vae", "free-bits", "--epochs", "2", "--n-train", "100",
                          "--n-valid", "20", "--n-test", "20", "--hidden", "8", "--samples", "5", "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"vae", "free-bits"} and metrics["information_nats"] > 0
    for row in metrics["methods"].values():
        assert row["kl"] >= 0 and 0 <= row["mi"] <= row["kl"] + 1e-6 and row["units"] == 1
        assert row["elbo"] <= -row["nll"] + 1.0  # ELBO <= log p(x), up to the estimate's noise
    assert re.search(r"^free-bits +-?[\d.]+", printed, re.M)
    assert (out / "collapse_curves.png").stat().st_size > 1000


def test_plot_helpers_share_one_curve_rule(tmp_path):
    from pyro_lvm import History, plots

    fig, ax = plots.pyplot().subplots()
    runs = {"a": History([{"epoch": 0, "kl": 1.0}, {"epoch": 1, "kl": None}, {"epoch": 2, "kl": 0.5}]),
            "b": [{"epoch": 0, "mi": 0.1}]}  # a History or a list of epoch dicts
    assert plots.epoch_curves(ax, runs, "kl") and not plots.epoch_curves(ax, runs, "absent")
    (line,) = ax.get_lines()  # run b has no "kl"; the None epoch is left out
    assert list(line.get_xdata()) == [1, 3] and list(line.get_ydata()) == [1.0, 0.5] and line.get_label() == "a"
    path = plots.save_figure(fig, tmp_path / "deep" / "curves.png")
    assert path.stat().st_size > 1000 and not plots.pyplot().get_fignums()  # written and closed
    images = torch.rand(6, 4)
    path = plots.images_per_class(images, 3, (2, 2), tmp_path / "per_class.png", "two per class")
    assert path.stat().st_size > 1000


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert cli_main(["train", "vae", *TINY, "--no-figures", "--out", str(out)]) == 0
    return out


def test_cli_train_vae_writes_a_run(tmp_path):
    # (was the VAE example's test when the example was a wrapper over this task)
    out = tmp_path / "run"
    assert cli_main(["train", "vae", *TINY, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["vae"]["epochs"] == 1 and metrics["vae"]["test"]["log_likelihood"] < 0
    for name in ("reconstructions", "samples", "interpolation", "training_curves"):
        assert (out / f"{name}.png").stat().st_size > 1000
    assert (out / "vae" / "last.pt").is_file() and (out / "ae" / "last.pt").is_file()


def test_cli_verbs_on_a_run(trained_run, capsys):
    capsys.readouterr()
    assert cli_main(["evaluate", str(trained_run), "--samples", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["split"] == "test" and report["elbo"] <= report["log_likelihood"] + 1.0
    assert cli_main(["sample", str(trained_run), "-n", "4"]) == 0
    assert (trained_run / "cli_samples.png").is_file()
    assert cli_main(["interpolate", str(trained_run), "--a", "0", "--b", "3", "--steps", "4"]) == 0
    assert (trained_run / "cli_interpolation.png").is_file()


def test_cli_resume_continues_a_run(trained_run, capsys):
    assert cli_main(["train", "vae", *TINY[2:], "--epochs", "2", "--no-figures", "--resume", "--out", str(trained_run)]) == 0
    history = json.loads((trained_run / "vae" / "history.json").read_text())["epochs"]
    assert [e["epoch"] for e in history] == [0, 1]


def test_cli_errors_are_clear(tmp_path, capsys):
    assert cli_main(["evaluate", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err
    assert cli_main(["train", "vae", "--dataset", "binarized-mnist", "--out", str(tmp_path / "x")]) == 2
    assert "needs a path" in capsys.readouterr().err
    assert cli_main(["train", "no-such-model"]) == 2
    assert "pyro-lvm: error: train: argument MODEL: invalid choice: 'no-such-model'" in capsys.readouterr().err
