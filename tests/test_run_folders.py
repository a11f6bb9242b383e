"""Nothing lost: a run folder is never left inconsistent (pyro_lvm.training.runs, fit(checkpoint_dir=...)).

A folder holding a run is written only with resume/overwrite; one process at a time holds it
(a second is refused, "in use"); a killed writer's temporaries are removed at the next start;
a command that is refused leaves the folder byte for byte as it was; on resume, options the
checkpoint would override are applied (lr) or refused (seed).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pyro_lvm import Callback, TrainingDivergedError, fit, set_seed
from pyro_lvm.cli import main as cli_main
from pyro_lvm.models import VAE
from pyro_lvm.training.runs import LOCK_NAME, RunFolderError, RunFolderInUseError, in_use

ROOT = Path(__file__).resolve().parents[1]
X = (torch.rand(64, 16, generator=torch.Generator().manual_seed(0)) < 0.3).float()
TINY = ["--epochs", "1", "--hidden", "8", "--z-dim", "2", "--samples", "3", "--no-figures", "--no-autoencoder"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` with its bytes (what "byte-identical" compares)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def vae(seed=0):
    set_seed(seed)
    return VAE(16, 3, (12,))


def train(folder, **kw):
    return fit(vae(), X, X[:16], **{"epochs": 1, "batch_size": 32, "progress": False, "checkpoint_dir": folder, **kw})


# ----------------------------------------------------------------------------- fit(checkpoint_dir=...)

def test_fit_refuses_a_folder_that_holds_a_run(tmp_path):
    train(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(RunFolderError, match="already holds a run .*pass resume=True to continue it or overwrite=True"):
        train(tmp_path)
    assert snapshot(tmp_path) == before
    with pytest.raises(RunFolderError, match="contradict"):
        train(tmp_path, resume=True, overwrite=True)
    assert snapshot(tmp_path) == before


def test_fit_overwrite_replaces_the_run(tmp_path):
    train(tmp_path, epochs=3)
    history = train(tmp_path, epochs=1, overwrite=True)
    assert len(history) == 1
    assert json.loads((tmp_path / "history.json").read_text())["epochs"] == history.epochs


def test_other_files_in_the_folder_do_not_count_as_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    train(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    train(tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"  # overwrite removes only fit's own files


def test_stale_temporaries_are_removed_at_the_next_start(tmp_path):
    train(tmp_path)
    stale = [tmp_path / ".last.pt.k3j2x9.tmp", tmp_path / ".history.json.a1b2c3.tmp"]
    for p in stale:
        p.write_bytes(os.urandom(4096))  # what kill -9 during an atomic write leaves
    train(tmp_path, epochs=2, resume=True)
    assert not any(p.exists() for p in stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LOCK_NAME, "best.pt", "history.json", "last.pt"])


class LearningRates(Callback):
    def __init__(self):
        self.seen = []

    def on_step_end(self, state, batch, loss):
        self.seen.append(state.optimizer.param_groups[0]["lr"])


def test_resume_applies_a_new_lr_and_says_so(tmp_path):
    train(tmp_path, lr=1e-3)
    rates = LearningRates()
    with pytest.warns(UserWarning, match=r"applying the optimiser settings given now: lr=0.01 \(was 0.001\)"):
        train(tmp_path, epochs=2, lr=1e-2, resume=True, callbacks=[rates])
    assert rates.seen and set(rates.seen) == {1e-2}


def test_resume_refuses_a_seed_it_cannot_honour(tmp_path):
    train(tmp_path, seed=3)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"seed=4 differs from seed=3 .*last\.pt.*pass seed=3"):
        train(tmp_path, epochs=2, seed=4, resume=True)
    assert snapshot(tmp_path) == before


def test_divergence_message_is_right_about_checkpoints(tmp_path):
    class Poison(Callback):
        def on_step_begin(self, state, batch):
            with torch.no_grad():
                next(state.pair.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingDivergedError, match=r"No checkpoint was written to .* yet"):
        train(tmp_path / "a", callbacks=[Poison()], validate="never")
    with pytest.raises(TrainingDivergedError, match="pass checkpoint_dir= to keep one"):
        train(None, callbacks=[Poison()], validate="never")


# ----------------------------------------------------------------------------- one writer at a time

HOLD = """
import sys, time
from pyro_lvm.training.runs import locked
with locked(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def held_folder(tmp_path):
    """A folder whose lock another process holds (for as long as the test runs)."""
    folder = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    yield folder
    proc.kill()
    proc.wait()


def test_a_second_process_is_refused_by_the_lock(held_folder):
    assert in_use(held_folder)
    with pytest.raises(RunFolderInUseError, match="is in use by another process"):
        train(held_folder)
    with pytest.raises(RunFolderInUseError, match="in use"):
        train(held_folder, resume=True)


def test_two_concurrent_cli_train_runs_into_one_folder(tmp_path, capsys):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "pyro_lvm.cli", "train", "vae", *TINY, "--epochs", "400",
                              "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not in_use(out):
            assert first.poll() is None, first.stderr.read()
            assert time.time() < deadline, "the first run never took the folder"
            time.sleep(0.2)
        for extra in ([], ["--overwrite"], ["--resume"]):
            assert cli_main(["train", "vae", *TINY, *extra, "--out", str(out)]) == 2
            err = capsys.readouterr().err
            assert err.startswith("pyro-lvm: error: ") and "is in use by another process" in err, err
        assert first.poll() is None  # the first run was not disturbed
    finally:
        first.kill()
        first.wait()
    # Killed mid-run: the next start (here a resume) cleans up and continues.
    (out / "vae" / ".last.pt.killed.tmp").write_bytes(b"partial")
    assert cli_main(["train", "vae", *TINY, "--resume", "--out", str(out)]) == 0
    assert not (out / "vae" / ".last.pt.killed.tmp").exists()


# ----------------------------------------------------------------------------- refused commands change nothing

@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("refused") / "run"
    assert cli_main(["train", "vae", *TINY, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("argv, words", [
    (["--z-dim", "4", "--epochs", "-1"], "argument --epochs: must be a non-negative int, got '-1'"),
    (["--hidden", "-4"], "argument --hidden: must be a positive int, got '-4'"),
    (["--hidden", "0"], "argument --hidden: must be a positive int, got '0'"),
    (["--lr", "fast"], "argument --lr: must be a positive finite number, got 'fast'"),
    (["--device", "mps"], "argument --device: must be 'cpu', 'cuda' or 'cuda:N'"),
    ([], "already holds a run (config.json, metrics.json, vae); pass --resume to continue it or --overwrite"),
    (["--z-dim", "4"], "already holds a run"),
    (["--resume", "--z-dim", "4"], "--resume refused: the options differ from the run in"),
    (["--resume", "--seed", "5"], "seed: the run has 0, now 5"),
    (["--resume", "--overwrite"], "contradict"),
    (["--dataset", "mnist"], "needs a path"),
])
def test_a_refused_train_leaves_the_folder_byte_identical(cli_run, argv, words, capsys):
    before = snapshot(cli_run)
    assert cli_main(["train", "vae", *TINY, *argv, "--out", str(cli_run)]) == 2
    err = capsys.readouterr().err
    assert "pyro-lvm: error: " in err and words in err, err
    assert snapshot(cli_run) == before


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("years of work")
    assert cli_main(["train", "vae", *TINY, "--overwrite", "--out", str(tmp_path)]) == 2
    assert "not a pyro-lvm run folder; nothing was removed" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_resume_refuses_another_optimiser(tmp_path):
    train(tmp_path, optimizer="adam")
    with pytest.raises(ValueError, match="optimizer='sgd' differs from optimizer='adam'"):
        train(tmp_path, epochs=2, optimizer="sgd", resume=True)
