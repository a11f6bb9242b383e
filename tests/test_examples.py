"""Smoke tests: the VAE example script and the pyro-lvm command run with tiny arguments."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pyro_lvm.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "1", "--samples", "5", "--hidden", "16", "--z-dim", "2"]


def test_vae_example_script(tmp_path):
    out = tmp_path / "run"
    subprocess.run([sys.executable, str(ROOT / "examples" / "vae.py"), *TINY, "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["vae"]["epochs"] == 1 and metrics["vae"]["test"]["log_likelihood"] < 0
    for name in ("reconstructions", "samples", "interpolation", "training_curves"):
        assert (out / f"{name}.png").stat().st_size > 1000
    assert (out / "vae" / "last.pt").is_file() and (out / "ae" / "last.pt").is_file()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert cli_main(["train", "vae", *TINY, "--no-figures", "--out", str(out)]) == 0
    return out


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
