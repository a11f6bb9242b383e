"""fit(): reproducibility, exact resumption, checkpoints, early stopping, errors."""

import json
import os

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pyro_lvm import Callback, TrainingDivergedError, fit, load_checkpoint, set_seed
from pyro_lvm.checkpoint import atomic_json_save, atomic_torch_save
from pyro_lvm.models import VAE
from pyro_lvm.training.loop import TimeLimit

X = (torch.rand(96, 16, generator=torch.Generator().manual_seed(0)) < 0.3).float()


def small_vae(seed=0):
    set_seed(seed)
    return VAE(16, 3, (12,))


def params_of(module):
    return [p.detach().clone() for p in module.parameters()]


def test_same_seed_same_numbers_and_other_seed_differs():
    a = fit(small_vae(), X, X[:20], epochs=3, batch_size=32, seed=5, progress=False)
    b = fit(small_vae(), X, X[:20], epochs=3, batch_size=32, seed=5, progress=False)
    c = fit(small_vae(), X, X[:20], epochs=3, batch_size=32, seed=6, progress=False)
    assert a.epochs == b.epochs
    assert a["train_loss"] != c["train_loss"]


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    full = small_vae()
    h_full = fit(full, X, X[:20], epochs=5, batch_size=32, seed=3, progress=False, checkpoint_dir=tmp_path / "a")

    part = small_vae()
    fit(part, X, X[:20], epochs=2, batch_size=32, seed=3, progress=False, checkpoint_dir=tmp_path / "b")
    resumed = small_vae(seed=99)  # different initialisation: everything must come from the checkpoint
    h_resumed = fit(resumed, X, X[:20], epochs=5, batch_size=32, seed=3, progress=False,
                    checkpoint_dir=tmp_path / "b", resume=True)

    assert h_resumed.epochs == h_full.epochs
    for p, q in zip(params_of(full), params_of(resumed)):
        assert torch.equal(p, q)
    saved = json.loads((tmp_path / "b" / "history.json").read_text())["epochs"]
    assert len(saved) == 5


def test_resume_restores_pyro_param_store_parameters(tmp_path):
    class ParamPair:
        """A pair built from pyro.param alone (no nn.Module)."""

        def model(self, x):
            loc = pyro.param("loc", torch.zeros(2))
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
                pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)

        def guide(self, x):
            w = pyro.param("w", torch.zeros(2))
            s = pyro.param("s", torch.ones(2), constraint=dist.constraints.positive)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(x * w, s).to_event(1))

    x = torch.randn(40, 2) + 3
    pyro.clear_param_store()
    h_full = fit(ParamPair(), x, epochs=4, batch_size=10, lr=0.05, progress=False)
    full = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    assert float(full["loc"].mean()) > 0.5  # it learned something

    pyro.clear_param_store()
    fit(ParamPair(), x, epochs=2, batch_size=10, lr=0.05, progress=False, checkpoint_dir=tmp_path)
    pyro.clear_param_store()
    h = fit(ParamPair(), x, epochs=4, batch_size=10, lr=0.05, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert h.epochs == h_full.epochs
    for k, v in pyro.get_param_store().items():
        assert torch.allclose(v, full[k])


class PoisonAt(Callback):
    """Sets a parameter to NaN just before the given step (counting from 1)."""

    def __init__(self, step):
        self.step = step

    def on_step_begin(self, state, batch):
        if state.step + 1 == self.step:
            with torch.no_grad():
                next(state.pair.parameters()).fill_(float("nan"))


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    vae = small_vae()
    with pytest.raises(TrainingDivergedError, match=r"step 7 \(epoch 3") as err:
        # 96 datapoints / batch 32 = 3 steps per epoch: step 7 is the first of epoch 3.
        fit(vae, X, epochs=5, batch_size=32, progress=False, checkpoint_dir=tmp_path, callbacks=[PoisonAt(7)])
    assert "last.pt" in str(err.value)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["step"] == 6
    assert all(bool(torch.isfinite(v).all()) for v in ckpt["pair"].values())


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"value": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"value": 2}, path)
    monkeypatch.undo()
    assert torch.load(path)["value"] == 1
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary file left behind


def test_atomic_files_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_json_save({"a": 1}, tmp_path / "m.json")
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644


def test_early_stopping_and_restore_best():
    values = iter([5.0, 3.0, 4.0, 4.5, 6.0, 7.0, 8.0, 9.0])
    h = fit(small_vae(), X, epochs=8, batch_size=32, progress=False, metrics={"score": lambda pair, data: next(values)},
            monitor="score", patience=2, restore_best=True)
    assert len(h) == 4  # best at epoch 2 (3.0), then two epochs without improvement
    assert h["score"] == [5.0, 3.0, 4.0, 4.5]


def test_restore_best_puts_back_the_best_parameters():
    vae = small_vae()
    snapshots = []

    class Record(Callback):
        def on_epoch_end(self, state):
            snapshots.append(params_of(state.pair))

    values = iter([3.0, 1.0, 2.0])
    fit(vae, X, epochs=3, batch_size=32, progress=False, callbacks=[Record()],
        metrics={"score": lambda pair, data: next(values)}, monitor="score", restore_best=True)
    for p, q in zip(params_of(vae), snapshots[1]):
        assert torch.equal(p, q)


def test_time_limit_stops_training():
    h = fit(small_vae(), X, epochs=50, batch_size=32, progress=False, callbacks=[TimeLimit(1e-9)])
    assert len(h) == 1 and h.last()["cpu_seconds"] > 0


@pytest.mark.parametrize("kind", ["tuple", "dataset", "dataloader", "dict"])
def test_data_kinds(kind):
    class Labelled(VAE):
        def model(self, x, y=None):
            super().model(x)

        def guide(self, x, y=None):
            super().guide(x)

    y = torch.zeros(len(X))
    data = {
        "tuple": (X, y),
        "dataset": TensorDataset(X, y),
        "dataloader": DataLoader(TensorDataset(X, y), batch_size=32),
        "dict": DataLoader([{"x": X[i], "y": y[i]} for i in range(len(X))], batch_size=32),
    }[kind]
    set_seed(0)
    h = fit(Labelled(16, 3, (12,)), data, epochs=2, batch_size=32, progress=False)
    assert len(h) == 2 and h["train_loss"][1] < 30


def test_gradient_clipping_bounds_the_update():
    vae = small_vae()
    before = params_of(vae)
    fit(vae, X, epochs=1, batch_size=96, progress=False, optimizer=lambda ps: torch.optim.SGD(ps, lr=1.0), clip_norm=1e-3)
    step = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(params_of(vae), before)))
    assert float(step) <= 1e-3 + 1e-6


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=0), "batch_size"),
    (dict(epochs=-1), "epochs"),
    (dict(lr=-1.0), "lr"),
    (dict(lr=float("nan")), "lr"),
    (dict(optimizer="adamax"), "unknown optimizer"),
    (dict(device="cuda:7"), "cuda|CUDA"),
    (dict(device="tpu-ish"), "device"),
    (dict(resume=True), "checkpoint_dir"),
    (dict(patience=0), "patience"),
    (dict(validate="sometimes"), "validate"),
    (dict(monitor="nope", patience=1), "monitor 'nope'"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit(small_vae(), X, **{"epochs": 1, "progress": False, **kwargs})


@pytest.mark.parametrize("data, message", [
    (torch.zeros(0, 16), "empty"),
    (torch.full((4, 16), float("nan")), "NaN"),
    ((torch.zeros(4, 16), torch.zeros(5)), "different numbers"),
    ([1, 2, 3], "must be a tensor"),
])
def test_bad_training_data(data, message):
    with pytest.raises((ValueError, TypeError), match=message):
        fit(small_vae(), data, epochs=1, progress=False)


def test_not_a_pair():
    with pytest.raises(TypeError, match="'guide'"):
        fit(torch.nn.Linear(2, 2), X, epochs=1)


def test_progress_bar_runs(capsys):
    fit(small_vae(), X, epochs=1, batch_size=32, progress=True)
    assert "epoch 1/1" in capsys.readouterr().err


# ----------------------------------------------------------------------------- parameter groups

class TwoPartPair(torch.nn.Module):
    """A user's pair: an encoder and a decoder registered by pyro.module, a bare pyro.param scale."""

    def __init__(self):
        super().__init__()
        self.decoder = torch.nn.Linear(2, 16)
        self.encoder = torch.nn.Linear(16, 4)

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        scale = pyro.param("guide_scale", torch.tensor(1.0), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            out = self.encoder(x)
            pyro.sample("z", dist.Normal(out[:, :2], scale * torch.nn.functional.softplus(out[:, 2:])).to_event(1))


def two_part_pair(seed=0):
    pyro.clear_param_store()
    set_seed(seed)
    return TwoPartPair()


def encoder_first(pair, encoder_lr, others_lr=0.01):
    """Adam with the encoder's parameters in a first group at ``encoder_lr``, the rest after."""
    encoder = {id(p) for p in pair.encoder.parameters()}
    return lambda params: torch.optim.Adam([{"params": [p for p in params if id(p) in encoder], "lr": encoder_lr},
                                            {"params": [p for p in params if id(p) not in encoder], "lr": others_lr}])


def test_parameter_groups_get_their_own_learning_rates():
    pair = two_part_pair()
    encoder, decoder = params_of(pair.encoder), params_of(pair.decoder)
    fit(pair, X, epochs=2, batch_size=32, progress=False, optimizer=encoder_first(pair, encoder_lr=0.0))
    assert all(torch.equal(p, q) for p, q in zip(params_of(pair.encoder), encoder))  # lr 0: frozen
    assert not any(torch.equal(p, q) for p, q in zip(params_of(pair.decoder), decoder))
    assert float(pyro.param("guide_scale").detach()) != 1.0


def test_resume_with_parameter_groups_in_another_order_is_exact(tmp_path):
    full = two_part_pair()
    h_full = fit(full, X, epochs=4, batch_size=32, seed=2, progress=False, optimizer=encoder_first(full, 0.02))
    store_full = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}

    part = two_part_pair()
    fit(part, X, epochs=2, batch_size=32, seed=2, progress=False, optimizer=encoder_first(part, 0.02),
        checkpoint_dir=tmp_path)
    resumed = two_part_pair(seed=7)
    h = fit(resumed, X, epochs=4, batch_size=32, seed=2, progress=False, optimizer=encoder_first(resumed, 0.02),
            checkpoint_dir=tmp_path, resume=True)
    assert h.epochs == h_full.epochs
    assert all(torch.equal(p, q) for p, q in zip(params_of(resumed), params_of(full)))
    assert torch.equal(pyro.param("guide_scale").detach(), store_full["guide_scale"])


def test_an_optimiser_must_hold_every_parameter_and_nothing_else():
    pair = two_part_pair()
    without_scale = lambda params: torch.optim.Adam([p for p in params if p.dim() > 0])  # noqa: E731
    with pytest.raises(ValueError, match=r"\['guide_scale'\] are in no group of the optimiser"):
        fit(pair, X, epochs=1, progress=False, optimizer=without_scale)
    stranger = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match=r"1 tensor\(s\) that are not trainable parameters of the pair \(shapes \[\(3,\)\]"):
        fit(two_part_pair(), X, epochs=1, progress=False, optimizer=lambda params: torch.optim.Adam([*params, stranger]))


# ----------------------------------------------------------------------------- the step hooks

@pytest.mark.parametrize("clip_norm", [None, 1e9])  # None: the norm alone; a bound: clip_grad_norm_
def test_step_hooks_see_the_loss_and_the_gradient_norm_before_the_update(clip_norm):
    pair = two_part_pair()
    seen = []

    class Watch(Callback):
        def on_before_backward(self, state, batch, loss):
            seen.append({"loss": loss, "grads": [p.grad for p in state.params]})

        def on_before_optimizer_step(self, state, batch):
            norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in state.params]))
            seen[-1].update(norm=float(norm), reported=float(state.grad_norm), before=params_of(state.pair))

        def on_step_end(self, state, batch, loss):
            seen[-1].update(end_loss=loss, after=params_of(state.pair))

    fit(pair, X, epochs=1, batch_size=32, progress=False, clip_norm=clip_norm, callbacks=[Watch()])
    assert len(seen) == 3
    for step in seen:
        assert step["loss"] == step["end_loss"]
        assert all(g is None for g in step["grads"])  # cleared before backward (set_to_none)
        assert step["reported"] == pytest.approx(step["norm"], rel=1e-5)
        assert not any(torch.equal(p, q) for p, q in zip(step["before"], step["after"]))
    for previous, step in zip(seen, seen[1:]):  # nothing moves parameters between an update and the next hook
        assert all(torch.equal(p, q) for p, q in zip(previous["after"], step["before"]))


class SqrtMean:
    """A user's pair whose mean is sqrt(a) of a bare pyro.param a = 0: the loss is finite, its
    gradient in a is infinite."""

    def model(self, x):
        a = pyro.param("a", torch.zeros(x.shape[1]))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(a.sqrt(), 1.0).to_event(1), obs=x)

    def guide(self, x):
        pass


@pytest.mark.parametrize("clip_norm", [None, 1.0])
def test_a_non_finite_gradient_of_a_finite_loss_stops_before_the_update(clip_norm):
    pyro.clear_param_store()
    with pytest.raises(TrainingDivergedError, match=r"gradient norm became (inf|nan) at step 1 \(epoch 1"):
        fit(SqrtMean(), X[:, :3] + 1.0, epochs=1, batch_size=32, progress=False, clip_norm=clip_norm)
    assert torch.equal(pyro.param("a").detach(), torch.zeros(3))


def test_raising_before_the_optimiser_step_leaves_the_parameters():
    pair = two_part_pair()
    before = params_of(pair)

    class Refuse(Callback):
        def on_before_optimizer_step(self, state, batch):
            raise RuntimeError("no update")

    with pytest.raises(RuntimeError, match="no update"):
        fit(pair, X, epochs=1, batch_size=32, progress=False, callbacks=[Refuse()])
    assert all(torch.equal(p, q) for p, q in zip(params_of(pair), before))


# ----------------------------------------------------------------------------- prepared batches

class MaskedSequences:
    """A user's pair over padded sequences ``x (B, T)`` with a mask: a global pyro.param mean,
    one latent level per sequence (outer plate), masked steps (inner plate)."""

    def model(self, x, mask):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("seqs", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(loc, 1.0))
            with pyro.plate("steps", x.shape[1], dim=-1):
                pyro.sample("x", dist.Normal(z, 0.5).mask(mask), obs=x)

    def guide(self, x, mask):
        w = pyro.param("w", torch.tensor(0.5))
        s = pyro.param("s", torch.tensor(1.0), constraint=dist.constraints.positive)
        mean = (x * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True)
        with pyro.plate("seqs", x.shape[0], dim=-2):
            pyro.sample("z", dist.Normal(w * mean, s))


def length_sorted_batches():
    """Five batches of 3, 4, 2, 5 and 1 sequences, padded to lengths 2..6."""
    g = torch.Generator().manual_seed(1)
    out = []
    for size, length in zip((3, 4, 2, 5, 1), range(2, 7)):
        lengths = torch.randint(1, length + 1, (size,), generator=g)
        lengths[0] = length
        mask = torch.arange(length) < lengths.unsqueeze(1)
        out.append(((torch.randn(size, length, generator=g) + 2.0) * mask, mask))
    return out


def test_batch_list_takes_batches_whole_in_a_seeded_order_per_epoch():
    from pyro_lvm.training.batching import BatchList
    from pyro_lvm.checkpoint import epoch_generator

    batches = length_sorted_batches()
    seen = []

    class Shapes(Callback):
        def on_step_begin(self, state, batch):
            seen.append((state.epoch, tuple(batch[0].shape)))

    pyro.clear_param_store()
    h = fit(MaskedSequences(), BatchList(batches), epochs=3, batch_size=2, seed=4, lr=0.05, progress=False,
            callbacks=[Shapes()])
    expected = [(epoch, tuple(batches[i][0].shape)) for epoch in range(3)
                for i in torch.randperm(5, generator=epoch_generator(4, epoch)).tolist()]
    assert seen == expected  # batch_size=2 does not cut them
    assert len({tuple(s for e, s in seen if e == epoch) for epoch in range(3)}) > 1  # the order changes
    assert h["step"] == [5, 10, 15] and float(pyro.param("loc")) > 0.1

    seen.clear()
    fit(MaskedSequences(), BatchList(batches, shuffle=False), epochs=2, progress=False, callbacks=[Shapes()])
    assert [s for _, s in seen] == [tuple(b[0].shape) for b in batches] * 2


def test_batch_list_resume_is_exact_and_evaluation_counts_datapoints(tmp_path):
    from pyro_lvm.training.batching import BatchList, loss_value, num_datapoints
    from pyro_lvm.training.loop import evaluate_loss

    data = BatchList(length_sorted_batches())
    assert len(data) == 5 and num_datapoints(data) == 15
    pyro.clear_param_store()
    h_full = fit(MaskedSequences(), data, epochs=4, seed=1, lr=0.05, progress=False)
    full = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    pyro.clear_param_store()
    fit(MaskedSequences(), data, epochs=2, seed=1, lr=0.05, progress=False, checkpoint_dir=tmp_path)
    pyro.clear_param_store()
    h = fit(MaskedSequences(), data, epochs=4, seed=1, lr=0.05, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert h.epochs == h_full.epochs
    assert all(torch.equal(v.detach(), full[k]) for k, v in pyro.get_param_store().items())

    elbo = pyro.infer.Trace_ELBO()
    pyro.set_rng_seed(0)
    mean = evaluate_loss(MaskedSequences(), data, elbo)
    pyro.set_rng_seed(0)
    assert mean == pytest.approx(sum(loss_value(elbo, MaskedSequences(), b) for b in data.batches) / 15)


def test_batch_list_refuses_what_is_not_a_batch():
    from pyro_lvm.training.batching import BatchList

    with pytest.raises(ValueError, match="at least one batch"):
        BatchList([])
    with pytest.raises(ValueError, match="batch 1 of the BatchList must be a tensor or a tuple of tensors"):
        BatchList([torch.zeros(2, 3), [1, 2]])
