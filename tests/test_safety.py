"""Nothing run: loading a checkpoint or a data pickle never executes code from the file.

Every pyro_lvm file loads with ``torch.load(weights_only=True)``; crafted files are refused
before anything in them runs; checkpoints of the earlier format 1 still load (tests/data/format1,
written by the code before the safe format: see make_format1.py there), resume exactly and can
be rewritten once; a broken best.pt is named and last.pt used instead.
"""

import io
import json
import pickle
import shutil
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_lvm import fit, load_checkpoint, set_seed
from pyro_lvm.checkpoint import (CheckpointError, atomic_torch_save, decode_constraint, encode_constraint,
                                 load_best_or_last, upgrade_checkpoint)
from pyro_lvm.cli import main as cli_main
from pyro_lvm.data.music import load_jsb_pickle
from pyro_lvm.models import VAE

FORMAT1 = Path(__file__).parent / "data" / "format1"
X = (torch.rand(96, 16, generator=torch.Generator().manual_seed(0)) < 0.3).float()


class Boom:
    """Unpickling it would call ``Path.touch`` on a marker file (a stand-in for ``os.system``)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    """A file shaped like a pyro_lvm checkpoint whose pickle runs code when loaded unsafely."""
    torch.save({"format": 2, "epoch": 0, "pair": {"w": torch.zeros(1)}, "payload": Boom(marker)}, path)
    return path


def test_the_crafted_checkpoint_would_run_code_with_an_unsafe_load(tmp_path):
    marker = tmp_path / "ran"
    torch.load(crafted_checkpoint(tmp_path / "x.pt", marker), weights_only=False)
    assert marker.exists()  # so the refusals below are refusals of something real


def test_a_crafted_checkpoint_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    path = crafted_checkpoint(tmp_path / "best.pt", marker)
    with pytest.raises(CheckpointError, match=r"best\.pt was refused: .*Path.touch|best\.pt was refused: .*pathlib"):
        load_checkpoint(path)
    assert not marker.exists()


def test_resume_from_a_crafted_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "ran"
    crafted_checkpoint(tmp_path / "last.pt", marker)
    with pytest.raises(CheckpointError, match="could run code"):
        fit(VAE(16, 3, (12,)), X, epochs=1, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert not marker.exists()


def test_cli_evaluate_refuses_a_crafted_checkpoint_in_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(FORMAT1 / "vae_run", run)
    marker = tmp_path / "ran"
    crafted_checkpoint(run / "vae" / "best.pt", marker)
    assert cli_main(["evaluate", str(run), "--samples", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-lvm: error: ") and "best.pt" in err and "Traceback" not in err
    assert not marker.exists()


def test_a_crafted_sentence_model_is_refused(tmp_path):
    from pyro_lvm.models.text.sentence_vae import load_sentence_model

    marker = tmp_path / "ran"
    with pytest.raises(CheckpointError, match="could run code"):
        load_sentence_model(crafted_checkpoint(tmp_path / "model.pt", marker))
    assert not marker.exists()


def test_everything_pyro_lvm_writes_loads_with_weights_only(tmp_path):
    pair = VAE(16, 3, (12,))
    fit(pair, X, X[:20], epochs=1, batch_size=32, progress=False, checkpoint_dir=tmp_path, restore_best=True)
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(tmp_path / name, weights_only=True)  # plain torch, no allow-list
        assert ckpt["format"] == 2 and isinstance(ckpt["rng"]["numpy"]["key"], torch.Tensor)


def test_writing_a_python_object_is_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(CheckpointError, match=r"\['callbacks'\]\[0\]\['schedule'\]: it is a function"):
        atomic_torch_save({"callbacks": [{"schedule": lambda step: 1.0}]}, tmp_path / "c.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("constraint", [
    dist.constraints.real, dist.constraints.positive, dist.constraints.simplex, dist.constraints.unit_interval,
    dist.constraints.interval(-2.0, 3.5), dist.constraints.greater_than(torch.tensor([0.5, 1.0, 2.0])),
    dist.constraints.independent(dist.constraints.positive, 1), dist.constraints.lower_cholesky,
    dist.constraints.positive_ordered_vector, dist.constraints.softplus_positive,
])
def test_constraints_round_trip_by_name(constraint):
    spec = encode_constraint(constraint)
    buffer = io.BytesIO()
    torch.save(spec, buffer)
    buffer.seek(0)
    back = decode_constraint(torch.load(buffer, weights_only=True))
    x = torch.randn(3, 3)
    assert type(back) is type(constraint)
    assert torch.equal(torch.distributions.transform_to(back)(x), torch.distributions.transform_to(constraint)(x))


def test_a_custom_constraint_is_refused_with_its_param_named():
    class Odd(dist.constraints.Constraint):
        def check(self, value):
            return value % 2 == 1

    with pytest.raises(CheckpointError, match="param 'w'.*cannot record by name"):
        encode_constraint(Odd(), "param 'w'")


# ----------------------------------------------------------------------------- format 1

def test_format1_checkpoints_load_as_the_current_format():
    for name in ("vae_last.pt", "params_last.pt"):
        ckpt = load_checkpoint(FORMAT1 / name)
        assert ckpt["format"] == 2
        assert isinstance(ckpt["rng"]["python"]["state"], torch.Tensor)
    params = load_checkpoint(FORMAT1 / "params_last.pt")["param_store"]["constraints"]
    assert params == {"loc": "real", "s": "positive", "w": {"name": "interval", "args": [-5.0, 5.0]}}


def test_a_format1_checkpoint_resumes_where_it_stopped(tmp_path):
    # The fixture is epochs 0-1 of this run, written by the old code; epoch 2 continues it.
    (tmp_path / "run").mkdir()
    shutil.copy(FORMAT1 / "vae_last.pt", tmp_path / "run" / "last.pt")
    set_seed(99)
    resumed = VAE(16, 3, (12,))  # other weights: everything must come from the checkpoint
    h = fit(resumed, X, X[:20], epochs=3, batch_size=32, seed=3, progress=False, checkpoint_dir=tmp_path / "run",
            resume=True)
    set_seed(0)
    full = VAE(16, 3, (12,))
    h_full = fit(full, X, X[:20], epochs=3, batch_size=32, seed=3, progress=False)
    # Epochs 0-1 come from the fixture: their valid_loss was computed by the old code (through
    # differentiable_loss, now ELBO.loss), which differs in the last float bits.
    assert [e["train_loss"] for e in h.epochs] == pytest.approx([e["train_loss"] for e in h_full.epochs], rel=1e-6)
    assert h.epochs[-1] == pytest.approx(h_full.epochs[-1], rel=1e-6)
    # The fixture's weights were computed on another machine, whose matmul kernels may round the
    # last bits differently (seen: 3e-8 on an AMD EPYC); bit-identical resume on one machine is
    # test_any_pair.py's test. Across machines the weights agree to float32 rounding.
    assert all(torch.allclose(p, q, rtol=1e-5, atol=1e-7) for p, q in zip(full.parameters(), resumed.parameters()))


class ParamPair:
    """The pyro.param pair of make_format1.py (interval and positive constraints)."""

    def model(self, x):
        loc = pyro.param("loc", torch.zeros(2))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)

    def guide(self, x):
        w = pyro.param("w", torch.zeros(2), constraint=dist.constraints.interval(-5.0, 5.0))
        s = pyro.param("s", torch.ones(2), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x * w, s).to_event(1))


def test_a_format1_param_store_resumes_exactly(tmp_path):
    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(1)) + 3
    (tmp_path / "run").mkdir()
    shutil.copy(FORMAT1 / "params_last.pt", tmp_path / "run" / "last.pt")
    h = fit(ParamPair(), x, epochs=4, batch_size=10, lr=0.05, progress=False, checkpoint_dir=tmp_path / "run",
            resume=True)
    resumed = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    constraints = pyro.get_param_store().get_state()["constraints"]
    assert isinstance(constraints["w"], type(dist.constraints.interval(0.0, 1.0)))
    assert float(constraints["w"].upper_bound) == 5.0
    pyro.clear_param_store()
    h_full = fit(ParamPair(), x, epochs=4, batch_size=10, lr=0.05, progress=False)
    assert h.epochs == h_full.epochs
    assert all(torch.equal(v, pyro.get_param_store()[k].detach()) for k, v in resumed.items())


def test_cli_evaluates_a_format1_run_and_upgrade_rewrites_it(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(FORMAT1 / "vae_run", run)
    assert cli_main(["evaluate", str(run), "--samples", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["num_datapoints"] > 0
    with pytest.raises(pickle.UnpicklingError):
        torch.load(run / "vae" / "best.pt", weights_only=True)
    assert cli_main(["upgrade", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["upgraded"] == [str(run / "vae" / "best.pt")]
    assert torch.load(run / "vae" / "best.pt", weights_only=True)["format"] == 2
    assert upgrade_checkpoint(run / "vae" / "best.pt") is False  # already current
    assert cli_main(["evaluate", str(run), "--samples", "3"]) == 0


# ----------------------------------------------------------------------------- broken files

@pytest.fixture
def trained(tmp_path):
    fit(VAE(16, 3, (12,)), X, X[:20], epochs=1, batch_size=32, progress=False, checkpoint_dir=tmp_path / "ckpt")
    return tmp_path / "ckpt"


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.write_bytes(p.read_bytes()[:200]), "is not a readable checkpoint"),
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.write_text('{"not": "a checkpoint"}'), "is not a readable checkpoint"),
    (lambda p: torch.save([1, 2, 3], p), "holds a list"),
])
def test_a_broken_best_falls_back_to_last_with_a_warning(trained, damage, words):
    damage(trained / "best.pt")
    with pytest.raises(CheckpointError, match=f"best.pt {words}"):
        load_checkpoint(trained / "best.pt")
    with pytest.warns(UserWarning, match=rf"best\.pt {words}.*; using .*last\.pt instead"):
        ckpt, path = load_best_or_last(trained)
    assert path.name == "last.pt" and ckpt["epoch"] == 0


def test_both_broken_names_both_files(trained):
    (trained / "best.pt").write_bytes(b"")
    (trained / "last.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"best\.pt is empty.*and .*last\.pt is not a readable checkpoint"):
        load_best_or_last(trained)


# ----------------------------------------------------------------------------- the JSB pickle

def _jsb(tmp_path, obj) -> Path:
    path = tmp_path / "jsb_chorales.pickle"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return path


def test_a_pickle_of_plain_notes_loads(tmp_path):
    import numpy as np

    notes = {"train": [[(60, 64), (62,)], [(np.int64(55),)]], "valid": [[(70,)]], "test": [[(40, 41, 42)]]}
    data = load_jsb_pickle(_jsb(tmp_path, notes))
    assert [len(r) for r in data.train] == [2, 1] and data.train[0][0, 60 - 21] == 1 and data.test[0].sum() == 3


@pytest.mark.parametrize("payload", ["touch", "eval", "numpy_object"])
def test_a_crafted_pickle_is_refused_and_nothing_runs(tmp_path, payload):
    import builtins

    import numpy as np

    marker = tmp_path / "ran"

    class Eval:
        def __reduce__(self):
            return (builtins.eval, (f"open({str(marker)!r}, 'w')",))

    evil = {"touch": Boom(marker), "eval": Eval(), "numpy_object": np.array([Boom(marker)], dtype=object)}[payload]
    path = _jsb(tmp_path, {"train": [[(60,)], evil], "valid": [], "test": []})
    with pytest.raises(ValueError, match=r"jsb_chorales\.pickle was refused: refused"):
        load_jsb_pickle(path)
    assert not marker.exists()


def test_a_garbage_pickle_is_named(tmp_path):
    path = tmp_path / "jsb_chorales.pickle"
    path.write_bytes(b"\x80\x02not a pickle at all")
    with pytest.raises(ValueError, match=r"jsb_chorales\.pickle is not a readable pickle"):
        load_jsb_pickle(path)
    with pytest.raises(ValueError, match="expected a dict with lists 'train', 'valid', 'test'"):
        load_jsb_pickle(_jsb(tmp_path, [1, 2]))
