"""``pyro-lvm compare``: the differing configuration keys and final metrics of run folders,
in Markdown, CSV and JSON, and one learning-curve figure."""

import csv
import io
import json
from pathlib import Path

import pytest

from pyro_lvm.cli import main
from pyro_lvm.evaluation.compare_runs import comparison, load_run, render


def write_run(folder: Path, config: dict, metrics: dict | None, histories: dict[str, list[dict]]) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    for sub, epochs in histories.items():
        (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / sub / "history.json").write_text(json.dumps({"epochs": epochs}))
    return folder


@pytest.fixture
def two_runs(tmp_path):
    curve = lambda scale: [{"epoch": e, "train_loss": scale / (e + 1), "valid_loss": scale / (e + 1) + 1, "step": 10 * e}
                           for e in range(3)]  # noqa: E731
    a = write_run(tmp_path / "a", {"task": "vae", "seed": 0, "model": {"z_dim": 8, "hidden": [128]}, "lr": 0.003},
                  {"vae": {"test": {"elbo": -30.5, "kl": 4.0}}, "data": {"train": 100}, "note": "text is no metric"},
                  {"vae": curve(10.0)})
    b = write_run(tmp_path / "b", {"task": "vae", "seed": 0, "model": {"z_dim": 16, "hidden": [128, 64]}, "lr": 0.003},
                  {"vae": {"test": {"elbo": -29.0, "kl": 4.0}}, "data": {"train": 100}, "extra": 1.5},
                  {"vae": curve(8.0), "ae": curve(6.0)})
    return a, b


def test_only_differing_keys_are_kept(two_runs):
    runs = [load_run(p, label=p.name) for p in two_runs]
    table = comparison(runs)
    assert table["runs"] == ["a", "b"]
    assert table["config"] == {"model/hidden": [[128], [128, 64]], "model/z_dim": [8, 16]}
    assert table["metrics"] == {
        "ae/epochs": ["–", 3.0], "ae/last/train_loss": ["–", 2.0], "ae/last/valid_loss": ["–", 3.0],
        "extra": ["–", 1.5], "vae/last/train_loss": [10 / 3, 8 / 3], "vae/last/valid_loss": [10 / 3 + 1, 8 / 3 + 1],
        "vae/test/elbo": [-30.5, -29.0]}
    everything = comparison(runs, keep_equal=True)
    assert everything["config"]["lr"] == [0.003, 0.003] and everything["metrics"]["vae/test/kl"] == [4.0, 4.0]
    assert "note" not in everything["metrics"]  # strings are not metrics


def test_formats_parse_back(two_runs):
    table = comparison([load_run(p, label=p.name) for p in two_runs])
    md = render(table, "md").splitlines()
    assert md[0] == "| | a | b |" and "| model/z_dim | 8 | 16 |" in md and "| vae/test/elbo | -30.5 | -29 |" in md
    assert md.index("| **config** | | |") < md.index("| **final metrics** | | |")
    rows = list(csv.reader(io.StringIO(render(table, "csv"))))
    assert rows[0] == ["section", "key", "a", "b"]
    assert ["final metrics", "extra", "–", "1.5"] in rows and ["config", "model/hidden", "[128]", "[128, 64]"] in rows
    assert json.loads(render(table, "json")) == json.loads(json.dumps(table))
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        render(table, "xml")


def test_cli_prints_the_table_and_draws_the_curves(two_runs, tmp_path, capsys):
    figure = tmp_path / "curves.png"
    assert main(["compare", *map(str, two_runs), "--format", "json", "--figure", str(figure)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["figure"] == str(figure) and figure.stat().st_size > 1000
    assert out["config"]["model/z_dim"] == [8, 16]


def test_cli_refuses_what_is_not_a_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty"), str(tmp_path / "missing"), "--no-figure"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-lvm: error: ") and "has no config.json, metrics.json or history.json" in err
    write_run(tmp_path / "bad", {"task": "vae"}, None, {})
    (tmp_path / "bad" / "metrics.json").write_text("{not json")
    assert main(["compare", str(tmp_path / "bad"), "--no-figure"]) == 2
    assert "metrics.json is not valid JSON" in capsys.readouterr().err
    write_run(tmp_path / "nocurve", {"task": "vae"}, {"x": 1.0}, {})
    assert main(["compare", str(tmp_path / "nocurve"), "--figure", str(tmp_path / "f.png")]) == 2
    assert "none of the runs logged train_loss, valid_loss" in capsys.readouterr().err


def test_compare_two_trained_runs(tmp_path, capsys):
    for z in (2, 3):
        assert main(["train", "vae", "--epochs", "2", "--samples", "5", "--hidden", "16", "--z-dim", str(z),
                     "--no-autoencoder", "--no-figures", "--out", str(tmp_path / f"z{z}")]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "z2"), str(tmp_path / "z3"), "--format", "csv",
                 "--figure", str(tmp_path / "c.png")]) == 0
    rows = {tuple(r[:2]): r[2:] for r in csv.reader(io.StringIO(capsys.readouterr().out))}
    assert rows[("config", "model/z_dim")] == ["2", "3"] and ("config", "seed") not in rows
    histories = [json.loads((tmp_path / f"z{z}" / "vae" / "history.json").read_text())["epochs"] for z in (2, 3)]
    assert rows[("final metrics", "vae/last/valid_loss")] == [f"{h[-1]['valid_loss']:.6g}" for h in histories]
    assert (tmp_path / "c.png").is_file()
