"""One name per model: the registry's names are the ones the classes, modules, tasks and the
command use, and names of earlier versions still reach the same entries."""

import json

import pytest

from pyro_lvm.cli import main as cli_main
from pyro_lvm.tasks import INSPECTABLE, REGISTRY, TASKS, canonical, load_example, load_task
from pyro_lvm.tasks.inspect_task import build_example

# Modules that hold a family of models rather than one (the name's class lives there).
FAMILY = {"autoencoder": "vae", "sequence_vae": "collapse_toy"}


@pytest.mark.parametrize("name", INSPECTABLE)
def test_a_models_name_is_its_class_and_module(name):
    pair, _, _ = build_example(name)
    cls = type(pair)
    assert cls.__name__.lower() == name.replace("_", ""), f"{name}: class {cls.__name__}"
    assert cls.__module__.rsplit(".", 1)[1] in (name, FAMILY.get(name)), f"{name}: module {cls.__module__}"


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_tasks_module_is_named_for_it(name):
    module = load_task(name).__name__.rsplit(".", 1)[1]
    assert module == {"prodlda": "topic", "lda": "topic"}.get(name, name)


def test_names_are_spelled_one_way_and_old_names_still_resolve():
    assert all(name == canonical(name) for name in REGISTRY)
    assert load_task("categorical-vae") is load_task("gumbel_vae") is load_task("categorical_vae")
    assert load_example("mixture") is load_example("categorical_mixture")
    with pytest.raises(ValueError, match="known: "):
        load_task("autoencoder")  # an inspectable model without a task of its own


def test_a_run_folder_written_under_an_earlier_name_still_evaluates(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["train", "categorical-vae", "--epochs", "1", "--latents", "2", "--classes", "3", "--hidden", "8",
                     "--samples", "2", "--eval-samples", "1", "--no-figures", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "categorical_vae"
    (out / "config.json").write_text(json.dumps({**config, "task": "gumbel_vae"}))  # as an earlier version wrote it
    capsys.readouterr()
    assert cli_main(["evaluate", str(out), "--samples", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["log_likelihood"] < 0
