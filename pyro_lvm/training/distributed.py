"""Data-parallel SVI on ``torch.distributed``: each process takes a shard of every batch.

:func:`pyro_lvm.fit` with ``strategy="ddp"`` uses this module. Every process (rank) runs the
same loop on its own slice of each global mini-batch; after ``backward`` the gradients are
summed across ranks with one ``all_reduce`` (gloo on CPU, NCCL on GPUs), so every rank takes
the same optimiser step and parameters stay identical.

**Same objective as one process.** ``fit`` minimises the negative ELBO of a batch, summed
over its datapoints. Summing the ranks' shard losses gives exactly that, provided terms that
are *not* per-datapoint count once, not once per rank: :class:`~pyro_lvm.infer.scaling.ShardScale`
rescales the sites by where they sit (global sites by ``1 / W`` for ``W`` ranks). The sum of the shard losses then equals the one-process loss of the whole batch (tested on a
two-process gloo group), and so do the gradients.

Launching: ``fit(..., strategy="ddp", num_processes=N)`` starts ``N`` local processes with
``torch.multiprocessing`` (fork where the platform has it, so the pair and the data need not
be picklable); if a process group already exists (a script started by ``torchrun``), ``fit``
joins it instead, which is how to run on several GPUs or machines.
"""

from __future__ import annotations

import atexit
import os
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pyro
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .. import validation
from ..traces import restore_param_store
from ..checkpoint import atomic_text_save, atomic_torch_save, decode_param_store, encode_param_store, load_checkpoint
from ..infer.scaling import ScaledELBO, ShardScale

STRATEGIES = ("single", "ddp")


def sharded_elbo(elbo: Any, world_size: int, data_plate: str | None = None) -> ScaledELBO:
    """``elbo`` run under :class:`~pyro_lvm.infer.scaling.ShardScale` for this rank's shard."""
    return ScaledELBO(elbo, lambda n: ShardScale(world_size, n, data_plate))


# ----------------------------------------------------------------------------- in-rank helpers

@dataclass
class RankContext:
    """What ``fit`` needs to know and do on one rank of a process group."""

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: Any) -> Any:
        """This rank's contiguous slice of a global batch (a tensor, tuple or dict of tensors)."""
        if isinstance(batch, torch.Tensor):
            return torch.tensor_split(batch, self.world_size)[self.rank]
        if isinstance(batch, (tuple, list)):
            return type(batch)(self.shard(t) for t in batch)
        if isinstance(batch, dict):
            return {k: self.shard(v) for k, v in batch.items()}
        raise TypeError(f"cannot split a batch of type {type(batch).__name__} across ranks")

    def sum(self, value: float, device: torch.device) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t)

    def sum_gradients(self, params: Sequence[torch.Tensor]) -> None:
        """Sum ``.grad`` over ranks in one flat all-reduce (a missing grad counts as zeros)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads):
            p.grad = flat[offset:offset + g.numel()].view_as(g).clone()
            offset += g.numel()

    def broadcast_parameters(self, params: Sequence[torch.Tensor]) -> None:
        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, src=0)

    def agree(self, obj: Any) -> Any:
        """Rank 0's value of a picklable object, on every rank (logs, stop decisions)."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def current_rank_context() -> RankContext | None:
    """The context of an initialised process group (``torchrun``, or our launcher), else None."""
    if dist.is_available() and dist.is_initialized():
        return RankContext(dist.get_rank(), dist.get_world_size())
    return None


def _launched_world_size() -> int:
    """Processes a launcher such as ``torchrun`` started (it sets ``WORLD_SIZE``), else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def join_group(device: torch.device) -> RankContext | None:
    """The current process group, made from ``torchrun``'s environment if needed; None if alone."""
    ctx = current_rank_context()
    if ctx is None and _launched_world_size() > 1:
        _init_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
        atexit.register(leave_group)
        ctx = current_rank_context()
    return ctx


def _init_group(backend: str, **kwargs: Any) -> None:
    # torch.distributed.nn binds ``group.WORLD`` as default arguments when it is imported, and
    # torch imports it lazily (an Adam step does). Imported after the group exists, it would
    # keep the group alive past destroy_process_group: gloo's threads then outlive the Python
    # interpreter and abort the process at exit ("terminate called without an active exception").
    import torch.distributed.nn  # noqa: F401

    dist.init_process_group(backend, **kwargs)


def leave_group() -> None:
    """Destroy the process group while the interpreter is whole (``join_group`` registers it at exit).

    A group left to the interpreter's teardown can abort the process: a gloo thread that
    drops the last reference to a tensor then needs a Python that is gone.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    """False on ranks other than 0 of a data-parallel run: they should not write reports."""
    ctx = current_rank_context()
    if ctx is not None:
        return ctx.is_main
    return int(os.environ.get("RANK", "0")) == 0


# ----------------------------------------------------------------------------- launching

def check_strategy(strategy: str, num_processes: int, device: torch.device) -> None:
    """Refuse bad settings before any process starts."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {list(STRATEGIES)}")
    validation.positive_int("num_processes", num_processes)
    if strategy == "single" and num_processes != 1:
        raise ValueError(f"num_processes={num_processes} needs strategy='ddp'")
    if strategy == "ddp" and device.type == "cuda" and current_rank_context() is None and _launched_world_size() == 1:
        if device.index is not None and num_processes > 1:
            raise ValueError(f"device {str(device)!r} pins one GPU; with num_processes={num_processes} pass device='cuda' "
                             "(rank r uses cuda:r)")
        if num_processes > torch.cuda.device_count():
            raise ValueError(f"num_processes={num_processes} asks for one GPU per process, "
                             f"but only {torch.cuda.device_count()} are visible")


def rank_device(device: torch.device, ctx: RankContext) -> torch.device:
    """cuda -> cuda:LOCAL_RANK (one GPU per process; the rank on one machine); others unchanged."""
    if device.type == "cuda" and device.index is None:
        local = int(os.environ.get("LOCAL_RANK", ctx.rank))
        return torch.device("cuda", local % max(torch.cuda.device_count(), 1))
    return device


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a local process group)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, backend: str, fit_fn: Callable, fit_args: tuple,
            fit_kwargs: dict, folder: str) -> None:
    # A forked child cannot use the OpenMP thread pool its parent started (ops hang), and
    # N processes on N cores want one thread each anyway. torchrun-started processes are free
    # to use more.
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    _init_group(backend, rank=rank, world_size=world_size)
    try:
        history = fit_fn(*fit_args, **fit_kwargs)
    except BaseException:
        # When one rank fails the others fail soon after in a collective ("connection reset");
        # the launcher reports the rank that failed first.
        # Atomic: the launcher may kill this process mid-write once another rank failed.
        atomic_text_save(f"{time.time()!r}\n{traceback.format_exc()}", Path(folder) / f"rank{rank}.error")
        raise
    try:
        if rank == 0:
            pair = fit_args[0]
            state = {
                "pair": pair.state_dict() if isinstance(pair, torch.nn.Module) else None,
                "param_store": encode_param_store(pyro.get_param_store().get_state()),
                "history": history.epochs,
            }
            atomic_torch_save(state, Path(folder) / "rank0.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _first_failure(folder: Path, reported: int, message: str) -> tuple[int, str]:
    """(rank, traceback) of the earliest failure the workers recorded, else the reported one."""
    failures = []
    for path in folder.glob("rank*.error"):
        when, _, trace = path.read_text().partition("\n")
        try:
            failures.append((float(when), int(path.stem[4:]), trace))
        except ValueError:
            continue  # not a record this module wrote
    if not failures:
        return reported, message
    _, rank, trace = min(failures)
    return rank, trace


class WorkerFailedError(RuntimeError):
    """A training process of a ``strategy="ddp"`` run failed; the others were stopped."""


def launch(fit_fn: Callable, pair: Any, fit_args: tuple, fit_kwargs: dict, num_processes: int,
           device: torch.device) -> list[dict]:
    """Run ``fit_fn(pair, *fit_args, **fit_kwargs)`` on ``num_processes`` local ranks.

    Rank 0's trained parameters are loaded back into ``pair`` (and Pyro's param store);
    returns rank 0's history records. A failing rank stops the others and raises
    :class:`WorkerFailedError` naming it.
    """
    backend = "nccl" if device.type == "cuda" else "gloo"
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with tempfile.TemporaryDirectory(prefix="pyro_lvm_ddp_") as tmp:
        try:
            mp.start_processes(_worker, nprocs=num_processes, join=True, start_method=method,
                               args=(num_processes, free_port(), backend, fit_fn, (pair, *fit_args), fit_kwargs, tmp))
        except mp.ProcessRaisedException as e:
            first, trace = _first_failure(Path(tmp), e.error_index, str(e))
            raise WorkerFailedError(f"rank {first} of {num_processes} failed; the other ranks were stopped. "
                                    f"Its traceback:\n{trace}") from None
        except mp.ProcessExitedException as e:
            raise WorkerFailedError(f"rank {e.error_index} of {num_processes} exited with code {e.exit_code}; "
                                    "the other ranks were stopped") from None
        result = load_checkpoint(Path(tmp) / "rank0.pt", map_location=device)
    if isinstance(pair, torch.nn.Module):
        pair.load_state_dict(result["pair"])
    restore_param_store(decode_param_store(result["param_store"]))  # in place: pyro.module tensors see it
    return result["history"]
