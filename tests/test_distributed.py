"""Data-parallel training (strategy="ddp"): same objective as one process, ranks stay equal."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_lvm import Callback, fit
from pyro_lvm.training.distributed import WorkerFailedError, sharded_elbo


class MapPair(nn.Module):
    """A global mean, a latent per datapoint, point-mass guides: the loss has no noise.

    ``full_size`` switches the data plate to a subsampled one over ``full_size`` points.
    """

    def __init__(self, n: int, full_size: int | None = None):
        super().__init__()
        self.mu_hat = nn.Parameter(torch.tensor(0.3))
        self.z_hat = nn.Parameter(torch.linspace(-1, 1, n))
        self.full_size = full_size

    def _plate(self, idx):
        if self.full_size is None:
            return pyro.plate("data", len(idx))
        return pyro.plate("data", self.full_size, subsample=idx)

    def model(self, idx, x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with self._plate(idx):
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(self, idx, x):
        pyro.sample("mu", dist.Delta(self.mu_hat))
        with self._plate(idx):
            pyro.sample("z", dist.Delta(self.z_hat[idx]))


def _data(n=12):
    g = torch.Generator().manual_seed(0)
    return torch.arange(n), torch.randn(n, generator=g) + 1.0


@pytest.mark.parametrize("full_size", [None, 40])
@pytest.mark.parametrize("world", [2, 3])
def test_shard_losses_sum_to_the_whole_batch_loss(full_size, world):
    idx, x = _data()
    pair = MapPair(len(idx), full_size)
    elbo = pyro.infer.Trace_ELBO()
    whole = elbo.differentiable_loss(pair.model, pair.guide, idx, x)
    shards = zip(torch.tensor_split(idx, world), torch.tensor_split(x, world))
    summed = sum(sharded_elbo(elbo, world).differentiable_loss(pair.model, pair.guide, i, xi) for i, xi in shards)
    assert torch.allclose(summed, whole, rtol=1e-6)
    # Without the rescaling the global prior term would count `world` times.
    naive = sum(elbo.differentiable_loss(pair.model, pair.guide, i, xi)
                for i, xi in zip(torch.tensor_split(idx, world), torch.tensor_split(x, world)))
    assert not torch.allclose(naive, whole, rtol=1e-3)


@pytest.mark.parametrize("sharded_inside", [False, True])
@pytest.mark.parametrize("world", [2, 3])
def test_shard_losses_of_a_full_data_objective_sum_to_the_whole_batch_loss(world, sharded_inside):
    """full_data_elbo (DatasetScale) under sharding: the per-datapoint terms, scaled by each
    shard's N / n_shard, are shared out as a subsampled plate's are, whichever handler wraps the other."""
    from pyro_lvm.infer.scaling import full_data_elbo

    idx, x = _data()
    pair = MapPair(len(idx))
    elbo = full_data_elbo(pyro.infer.Trace_ELBO(), num_datapoints=40)
    whole = elbo.differentiable_loss(pair.model, pair.guide, idx, x)
    per_rank = (full_data_elbo(sharded_elbo(pyro.infer.Trace_ELBO(), world), num_datapoints=40) if sharded_inside
                else sharded_elbo(elbo, world))
    shards = zip(torch.tensor_split(idx, world), torch.tensor_split(x, world))
    summed = sum(per_rank.differentiable_loss(pair.model, pair.guide, i, xi) for i, xi in shards)
    assert torch.allclose(summed, whole, rtol=1e-6)
    # the same objective as the model's own subsampled plate of 40
    subsampled = pyro.infer.Trace_ELBO().differentiable_loss(*(lambda p: (p.model, p.guide))(MapPair(len(idx), 40)),
                                                            idx, x)
    assert torch.allclose(whole, subsampled, rtol=1e-6)


class SaveParams(Callback):
    def __init__(self, folder):
        self.folder = folder

    def on_train_end(self, state):
        name = "single" if state.rank is None else f"rank{state.rank.rank}"
        torch.save([p.detach().clone() for p in state.params], self.folder / f"{name}.pt")


def test_two_processes_match_one_process_and_each_other(tmp_path):
    idx, x = _data()
    runs = {}
    for strategy, procs in (("single", 1), ("ddp", 2)):
        torch.manual_seed(0)
        pair = MapPair(len(idx))
        history = fit(pair, (idx, x), elbo=pyro.infer.Trace_ELBO(), epochs=3, batch_size=6, lr=0.05,
                      strategy=strategy, num_processes=procs, callbacks=[SaveParams(tmp_path)],
                      checkpoint_dir=tmp_path / strategy)
        runs[strategy] = (pair, history)
    single, ddp = runs["single"], runs["ddp"]
    assert ddp[1]["train_loss"] == pytest.approx(single[1]["train_loss"], rel=1e-5)
    for a, b in zip(single[0].parameters(), ddp[0].parameters()):
        assert torch.allclose(a, b, atol=1e-5)
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(a, b) for a, b in zip(rank0, rank1))
    assert (tmp_path / "ddp" / "last.pt").is_file() and (tmp_path / "ddp" / "history.json").is_file()
    # Resuming a ddp run continues from rank 0's checkpoint.
    more = fit(ddp[0], (idx, x), elbo=pyro.infer.Trace_ELBO(), epochs=4, batch_size=6, lr=0.05,
               strategy="ddp", num_processes=2, checkpoint_dir=tmp_path / "ddp", resume=True)
    assert [e["epoch"] for e in more.epochs] == [0, 1, 2, 3]


class TinyVAE(nn.Module):
    """A linear Gaussian VAE over 2-d points: an encoder for aggressive training to step."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(2, 2)
        self.dec = nn.Linear(1, 2)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), 0.5).to_event(1), obs=x)

    def guide(self, x):
        loc, raw = self.enc(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))


def test_aggressive_training_keeps_ranks_identical(tmp_path):
    """Inner encoder steps sum their gradients over ranks: without that, shards differ and so would the encoders."""
    from pyro_lvm.infer import AggressiveTraining

    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 1, generator=g) @ torch.tensor([[2.0, -1.0]]) + 0.3 * torch.randn(40, 2, generator=g)
    torch.manual_seed(0)
    history = fit(TinyVAE(), x, x[:20], elbo=pyro.infer.Trace_ELBO(), epochs=2, batch_size=10, lr=0.02,
                  strategy="ddp", num_processes=2,
                  callbacks=[AggressiveTraining(max_inner_steps=6, check_every=2), SaveParams(tmp_path)])
    assert history.epochs[0]["aggressive"] == 1 and history.epochs[0]["aggressive_inner_steps"] > 1
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(a, b) for a, b in zip(rank0, rank1))


class FailOnRank1(Callback):
    def on_step_begin(self, state, batch):
        if state.rank is not None and state.rank.rank == 1:
            raise RuntimeError("boom on purpose")


def test_a_failing_rank_stops_the_run_and_is_named():
    idx, x = _data()
    with pytest.raises(WorkerFailedError, match="(?s)rank 1 of 2 failed.*boom on purpose"):
        fit(MapPair(len(idx)), (idx, x), epochs=1, batch_size=6, strategy="ddp", num_processes=2,
            callbacks=[FailOnRank1()])


def test_the_first_recorded_failure_is_reported_and_a_cut_short_record_is_skipped(tmp_path):
    from pyro_lvm.training.distributed import _first_failure

    (tmp_path / "rank0.error").write_text("")                       # killed between open and write
    (tmp_path / "rank2.error").write_text("20.0\nTraceback: later")
    (tmp_path / "rank1.error").write_text("10.0\nTraceback: first")
    assert _first_failure(tmp_path, 2, "reported") == (1, "Traceback: first")
    (tmp_path / "rank1.error").unlink(), (tmp_path / "rank2.error").unlink()
    assert _first_failure(tmp_path, 2, "reported") == (2, "reported")


@pytest.mark.parametrize("kwargs, message", [
    ({"strategy": "ddp", "num_processes": 0}, "num_processes must be a positive int"),
    ({"strategy": "horovod"}, "unknown strategy 'horovod'"),
    ({"num_processes": 2}, "needs strategy='ddp'"),
])
def test_bad_settings_are_refused_before_any_process_starts(kwargs, message):
    idx, x = _data()
    with pytest.raises(ValueError, match=message):
        fit(MapPair(len(idx)), (idx, x), epochs=1, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused():
    idx, x = _data()
    with pytest.raises(ValueError, match="CUDA is not available"):
        fit(MapPair(len(idx)), (idx, x), epochs=1, strategy="ddp", num_processes=2, device="cuda")


TINY_VAE = ["train", "vae", "--strategy", "ddp", "--epochs", "1", "--no-figures", "--samples", "5", "--no-autoencoder"]


def test_cli_with_local_processes_after_the_parent_used_threads(tmp_path):
    # Forked workers must not touch the parent's OpenMP pool (that used to hang).
    torch.set_num_threads(2)
    try:
        torch.isfinite(torch.randn(2000, 2000)).all()
        from pyro_lvm.cli import main
        assert main([*TINY_VAE, "--num-processes", "2", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(1)
    assert len(json.loads((tmp_path / "vae" / "history.json").read_text())["epochs"]) == 1


def _torchrun_two_processes(*args: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 ARGS``, one torch thread per process; asserts it exited 0."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.fail(f"torchrun is installed with torch next to {sys.executable}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", *args], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_cli_under_torchrun(tmp_path):
    _torchrun_two_processes("-m", "pyro_lvm.cli", *TINY_VAE, "--out", str(tmp_path))
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "vae" / "last.pt").is_file()


LEAVE_SCRIPT = """
import os, sys
sys.path.insert(0, {tests!r})
from test_distributed import MapPair, _data
from pyro_lvm import fit
from pyro_lvm.training.distributed import leave_group
idx, x = _data()
fit(MapPair(len(idx)), (idx, x), epochs=1, strategy="ddp", progress=False)  # Adam: imports torch.distributed.nn
leave_group()
names = [open(f"/proc/self/task/{{t}}/comm").read().strip() for t in os.listdir("/proc/self/task")]
with open(os.path.join({out!r}, "threads_rank" + os.environ["RANK"]), "w") as f:  # ranks share stdout
    f.write(" ".join(names))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through Linux's /proc")
def test_leaving_the_group_stops_its_threads_before_the_interpreter_exits(tmp_path):
    # Threads that outlived the interpreter aborted ranks at exit, now and then (SIGABRT).
    script = tmp_path / "leave.py"
    script.write_text(LEAVE_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path)))
    _torchrun_two_processes(str(script))
    for rank in (0, 1):
        threads = (tmp_path / f"threads_rank{rank}").read_text().split()
        assert threads and not [t for t in threads if "gloo" in t], (rank, threads)
