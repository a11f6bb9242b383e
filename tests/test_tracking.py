"""TensorBoardLogger and MLflowLogger: what they write is read back with TensorBoard's
EventAccumulator and MLflow's client and must equal fit()'s history; the CLI's
--tensorboard/--mlflow reach every fit of a task; a missing package is one line naming the extra."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_lvm import Callback, fit
from pyro_lvm.cli import main
from pyro_lvm.evaluation.diagnostics import CollapseDiagnostics
from pyro_lvm.infer.annealing import KLAnnealing
from pyro_lvm.training.tracking import MLflowLogger, TensorBoardLogger, flatten, mlflow_uri, split_record

pytest.importorskip("tensorboard", reason="the tensorboard extra is part of the test set-up")
pytest.importorskip("mlflow", reason="the mlflow extra is part of the test set-up")
from mlflow import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class GlobalLocal(nn.Module):
    """A user's pair: a global offset (bare pyro.param in the guide; ``offset=False`` leaves it
    out, for the collapse diagnostics that need every latent in the data plate) and local 2-d
    codes in a data plate; pyro.module registers the networks inside model and guide."""

    def __init__(self, x_dim: int = 5, offset: bool = True):
        super().__init__()
        self.decoder, self.encoder = nn.Linear(2, x_dim), nn.Linear(x_dim, 4)
        self.offset = offset

    def model(self, x):
        pyro.module("decoder", self.decoder)
        offset = pyro.sample("offset", dist.Normal(0.0, 1.0)) if self.offset else 0.0
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z) + offset, 1.0).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        if self.offset:
            pyro.sample("offset", dist.Normal(pyro.param("offset_loc", torch.tensor(0.0)), 0.1))
        with pyro.plate("data", x.shape[0]):
            h = self.encoder(x)
            pyro.sample("z", dist.Normal(h[:, :2], h[:, 2:].exp()).to_event(1))


class LateKeys(Callback):
    """Adds keys after the loggers have seen the epoch: a number, a string, a dict of numbers."""

    def on_epoch_end(self, state):
        state.logs["late_number"] = 0.5 * state.epoch
        state.logs["late_text"] = f"epoch {state.epoch}"
        state.logs["late_dict"] = {"a": 1.0 + state.epoch, "b": -2.0}


def tb_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0, "images": 0}).Reload()
    return {tag: [(s.step, s.value) for s in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def history_scalars(history) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list] = {}
    for record in history.epochs:
        for key, value in split_record({k: v for k, v in record.items() if k != "epoch"})[0].items():
            out.setdefault(key, []).append((record["epoch"], value))
    return out


def test_flatten_and_split():
    record = {"epoch": 2, "kl": {"z": [1.0, 2.0]}, "name": "x", "none": None, "flag": True}
    assert flatten(record) == {"epoch": 2, "kl/z/0": 1.0, "kl/z/1": 2.0, "name": "x", "none": None, "flag": True}
    assert flatten(record, lists=False)["kl/z"] == [1.0, 2.0]
    assert split_record(record) == ({"epoch": 2.0, "kl/z/0": 1.0, "kl/z/1": 2.0, "flag": 1.0}, {"name": "x"})


def test_mlflow_uri_forms(tmp_path):
    assert mlflow_uri(None) == (None, None)
    assert mlflow_uri("sqlite:///x.db") == ("sqlite:///x.db", None)
    assert mlflow_uri("http://127.0.0.1:5000")[0] == "http://127.0.0.1:5000"
    uri, artifacts = mlflow_uri(tmp_path / "store")
    assert uri == f"sqlite:///{(tmp_path / 'store').resolve() / 'mlflow.db'}"
    assert artifacts == (tmp_path / "store").resolve() / "artifacts"


def test_loggers_hold_exactly_the_history(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(60, 5)
    pair = GlobalLocal(offset=False)
    tb = TensorBoardLogger(tmp_path / "tb", config={"lr": 0.01, "hidden": [4, 2], "note": "user pair"})
    ml = MLflowLogger(tmp_path / "ml", experiment="test", config={"lr": 0.01, "hidden": [4, 2]})
    # The loggers come before callbacks that add keys at the epoch's end: those must arrive too.
    history = fit(pair, x, x[:20], epochs=3, batch_size=20, lr=0.01, progress=False,
                  callbacks=[tb, ml, KLAnnealing("linear", steps=4),
                             CollapseDiagnostics(x[:20], data_plate="data"), LateKeys()])
    expected = history_scalars(history)
    assert {"train_loss", "valid_loss", "kl_weight", "kl", "kl/z", "kl_per_dim/z/0", "mi", "active_units",
            "late_number", "late_dict/a"} <= set(expected)

    # TensorBoard: one run named after the pair's class; values are stored as float32.
    logged = tb_scalars(tmp_path / "tb" / "GlobalLocal")
    assert set(logged) == set(expected)
    for key, points in expected.items():
        assert logged[key] == [(step, float(np.float32(v))) for step, v in points], key
    acc = EventAccumulator(str(tmp_path / "tb" / "GlobalLocal"), size_guidance={"tensors": 0}).Reload()
    texts = [e.tensor_proto.string_val[0].decode() for e in acc.Tensors("late_text/text_summary")]
    assert texts == ["epoch 0", "epoch 1", "epoch 2"]
    config_text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| hidden | [4, 2] |" in config_text and "| pair | GlobalLocal |" in config_text
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")

    # MLflow: one finished run, metrics exact per epoch, parameters, the last text as a tag.
    client = MlflowClient(ml.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert run.info.run_name == "GlobalLocal" and run.info.status == "FINISHED"
    for key, points in expected.items():
        got = [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
        assert got == points, key
    assert run.data.params["lr"] == "0.01" and run.data.params["hidden"] == "[4, 2]"
    assert run.data.params["pair"] == "GlobalLocal" and run.data.params["elbo"].startswith("Trace_ELBO")
    assert run.data.tags["late_text"] == "epoch 2"


def test_runs_are_named_by_checkpoint_folder_and_repeats_numbered(tmp_path):
    x = torch.randn(30, 5)
    tb = TensorBoardLogger(tmp_path / "tb")
    fit(GlobalLocal(), x, epochs=1, batch_size=30, progress=False, callbacks=[tb])
    fit(GlobalLocal(), x, epochs=1, batch_size=30, progress=False, callbacks=[tb])
    fit(GlobalLocal(), x, epochs=2, batch_size=30, progress=False, callbacks=[tb], checkpoint_dir=tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["GlobalLocal", "GlobalLocal-2", "ckpt"]
    # Resuming continues the run's steps without writing the earlier epochs again.
    fit(GlobalLocal(), x, epochs=3, batch_size=30, progress=False, callbacks=[tb], checkpoint_dir=tmp_path / "ckpt",
        resume=True)
    assert [s for s, _ in tb_scalars(tmp_path / "tb" / "ckpt")["train_loss"]] == [0, 1]
    assert [s for s, _ in tb_scalars(tmp_path / "tb" / "ckpt-2")["train_loss"]] == [2]


def test_config_must_be_a_dict():
    with pytest.raises(TypeError, match="config must be a dict"):
        TensorBoardLogger("tb", config=[("lr", 1)])  # type: ignore[arg-type]


def test_cli_session_logs_every_fit_metrics_and_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "vae", "--epochs", "2", "--samples", "5", "--hidden", "16", "--out", "run",
                 "--tensorboard", "tb", "--mlflow", "ml"])
    assert code == 0
    metrics = json.loads(Path("run/metrics.json").read_text())
    numbers = {k: v for k, v in flatten(metrics).items() if isinstance(v, (int, float))}
    for sub in ("vae", "ae"):  # the task's two fit calls, each its own run
        history = json.loads(Path(f"run/{sub}/history.json").read_text())["epochs"]
        assert [v for _, v in tb_scalars(Path("tb") / sub)["train_loss"]] == \
            [float(np.float32(e["train_loss"])) for e in history]
    session = EventAccumulator("tb", size_guidance={"scalars": 0, "images": 0}).Reload()
    assert set(session.Tags()["images"]) == {"reconstructions", "samples", "interpolation", "training_curves"}
    assert session.Scalars("metrics/vae/test/log_likelihood")[0].value == \
        float(np.float32(numbers["vae/test/log_likelihood"]))

    client = MlflowClient(mlflow_uri("ml")[0])
    runs = client.search_runs([client.get_experiment_by_name("vae").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert parent.info.run_name == "vae" and sorted(r.info.run_name for r in children) == ["ae", "vae"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    # (MLflow stores an infinite value, here an unfit PSIS k-hat, as the largest float.)
    assert parent.data.metrics == {k: math.copysign(sys.float_info.max, v) if math.isinf(v) else float(v)
                                   for k, v in numbers.items()}
    assert parent.data.params["epochs"] == "2" and "tensorboard" not in parent.data.params
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"metrics.json", "config.json", "figures"} <= artifacts
    assert {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "figures")} == \
        {"reconstructions.png", "samples.png", "interpolation.png", "training_curves.png"}


@pytest.mark.parametrize("option, extra", [("--tensorboard", "tensorboard"), ("--mlflow", "mlflow")])
def test_missing_package_is_one_line_naming_the_extra(tmp_path, option, extra):
    # Hide the package from a fresh interpreter; the command fails before any training.
    blocked = {"tensorboard": ["tensorboard", "torch.utils.tensorboard"], "mlflow": ["mlflow"]}[extra]
    code = (f"import sys; sys.modules.update(dict.fromkeys({blocked!r}))\n"
            "from pyro_lvm.cli import main\n"
            f"sys.exit(main(['train', 'vae', '--epochs', '1', '--out', {str(tmp_path / 'run')!r}, "
            f"{option!r}, {str(tmp_path / 'x')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"pyro-lvm: error: {'TensorBoardLogger' if extra == 'tensorboard' else 'MLflowLogger'} needs the "
                     f"{'tensorboard' if extra == 'tensorboard' else 'mlflow-skinny'} package: "
                     f"pip install 'pyro_lvm[{extra}]'"]
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_every_training_task_has_the_tracking_options():
    from pyro_lvm.cli import build_parser
    import argparse

    def choices(parser):
        return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices

    verbs = choices(build_parser())
    for name, sub in [("demo", verbs["demo"]), *choices(verbs["train"]).items()]:
        options = {o for a in sub._actions for o in a.option_strings}
        assert {"--tensorboard", "--mlflow"} <= options, name


class Boom(Callback):
    def on_epoch_end(self, state):
        if state.epoch == 1:
            raise RuntimeError("boom")


def test_a_failing_command_leaves_its_runs_marked_failed(tmp_path):
    from pyro_lvm.training.tracking import Session

    ml = MLflowLogger(tmp_path / "ml", experiment="fail")
    x = torch.randn(30, 5)
    with pytest.raises(RuntimeError, match="boom"):
        with Session([ml], "fail", {"epochs": 3}, out=tmp_path / "out"):
            fit(GlobalLocal(), x, epochs=3, batch_size=30, progress=False, callbacks=[Boom()])
    client = MlflowClient(ml.tracking_uri)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("fail").experiment_id])}
    assert {name: r.info.status for name, r in runs.items()} == {"fail": "FAILED", "GlobalLocal": "FAILED"}
    # The epoch that finished before the error is in the run.
    assert [m.step for m in client.get_metric_history(runs["GlobalLocal"].info.run_id, "train_loss")] == [0]
