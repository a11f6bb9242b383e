"""``fit()``: the one training loop every example, benchmark and CLI command uses.

It runs stochastic variational inference on any model/guide pair (see :mod:`pyro_lvm.base`)
with any Pyro ELBO, and adds what long runs need: mini-batches, a progress bar, per-epoch
history, seeds, gradient clipping, early stopping, callbacks, atomic checkpoints and exact
resumption.

Why not ``pyro.infer.SVI``: SVI wraps one optimiser per parameter and hands its state to
Pyro's param store, which costs time on small steps (see ``benchmarks/vae_overhead.py``) and
makes checkpointing awkward. ``fit`` asks the ELBO for a differentiable loss and steps one
``torch.optim`` optimiser over the pair's parameters instead; the objective is the same.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import pyro
import pyro.poutine as poutine
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from .base import batch_args, batch_size as _batch_size, batch_to, check_pair, pair_device
from .checkpoint import atomic_json_save, atomic_torch_save, load_checkpoint, rng_state, set_rng_state, set_seed
from . import distributed

CHECKPOINT_FORMAT = 1


class TrainingDivergedError(FloatingPointError):
    """The loss or a gradient became NaN/inf; parameters were not updated by that step."""


@dataclass
class History:
    """Per-epoch records: a list of dicts such as ``{"epoch": 3, "train_loss": 97.1, ...}``."""

    epochs: list[dict[str, Any]] = field(default_factory=list)

    def __getitem__(self, key: str) -> list[Any]:
        """All recorded values of one key, in epoch order (epochs lacking it are skipped)."""
        return [e[key] for e in self.epochs if key in e]

    def __len__(self) -> int:
        return len(self.epochs)

    def last(self) -> dict[str, Any]:
        return self.epochs[-1] if self.epochs else {}

    def save(self, path: str | Path) -> None:
        atomic_json_save({"epochs": self.epochs}, path)


@dataclass
class TrainState:
    """What callbacks see and may change while ``fit`` runs.

    ``logs`` collects the current epoch's record; anything a callback puts there ends up in
    the history. Setting ``stop = True`` ends training after the current epoch.
    """

    pair: Any
    elbo: Any
    optimizer: torch.optim.Optimizer | None
    params: list[torch.Tensor]
    device: torch.device
    epoch: int = 0
    step: int = 0
    history: History = field(default_factory=History)
    logs: dict[str, Any] = field(default_factory=dict)
    stop: bool = False
    rank: distributed.RankContext | None = None  # set on each process of a strategy="ddp" run
    train_data: Any = None  # what fit() was given, for callbacks that draw their own batches
    valid_data: Any = None
    checkpoint_dir: Path | None = None  # fit()'s, for callbacks that write beside the checkpoints

    def loss(self, batch: Any) -> torch.Tensor:
        """Differentiable negative ELBO of one batch (summed over its datapoints)."""
        return differentiable_loss(self.elbo, self.pair, batch)


class Callback:
    """Hooks into :func:`fit`. Override what you need; all default to doing nothing.

    A callback with state that must survive ``resume=True`` implements ``state_dict`` and
    ``load_state_dict``.
    """

    def on_train_begin(self, state: TrainState) -> None: ...

    def on_epoch_begin(self, state: TrainState) -> None: ...

    def on_step_begin(self, state: TrainState, batch: Any) -> None: ...

    def on_after_backward(self, state: TrainState, batch: Any) -> None:
        """Gradients are in ``.grad`` and not yet clipped or applied (e.g. all-reduce them here)."""

    def on_step_end(self, state: TrainState, batch: Any, loss: float) -> None: ...

    def on_epoch_end(self, state: TrainState) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TimeLimit(Callback):
    """Stop training at the end of the epoch during which ``seconds`` of process CPU time
    (or wall time, ``clock="wall"``) have passed since training began."""

    def __init__(self, seconds: float, clock: str = "cpu"):
        if not seconds > 0:
            raise ValueError(f"seconds must be positive, got {seconds!r}")
        if clock not in ("cpu", "wall"):
            raise ValueError(f"clock must be 'cpu' or 'wall', got {clock!r}")
        self.seconds, self.clock = float(seconds), clock
        self.used = 0.0
        self._start = 0.0

    def _now(self) -> float:
        return time.process_time() if self.clock == "cpu" else time.perf_counter()

    def on_epoch_begin(self, state: TrainState) -> None:
        self._start = self._now()

    def on_epoch_end(self, state: TrainState) -> None:
        self.used += self._now() - self._start
        state.logs[f"{self.clock}_seconds"] = self.used
        if self.used >= self.seconds:
            state.stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"used": self.used}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.used = state["used"]


_ADDED_CALLBACKS: contextvars.ContextVar[tuple[Callback, ...]] = contextvars.ContextVar("added_callbacks", default=())


@contextlib.contextmanager
def added_callbacks(*callbacks: Callback) -> Iterator[None]:
    """Every :func:`fit` call inside the block also runs ``callbacks`` (after its own): how the
    CLI's ``--tensorboard``/``--mlflow`` loggers reach the fit calls inside a task."""
    token = _ADDED_CALLBACKS.set(_ADDED_CALLBACKS.get() + callbacks)
    try:
        yield
    finally:
        _ADDED_CALLBACKS.reset(token)


def differentiable_loss(elbo: Any, pair: Any, batch: Any) -> torch.Tensor:
    """``elbo.differentiable_loss(pair.model, pair.guide, *batch)`` with the batch convention."""
    args, kwargs = batch_args(batch)
    if not hasattr(elbo, "differentiable_loss"):
        raise TypeError(
            f"{type(elbo).__name__} has no differentiable_loss; fit() needs an ELBO that has one "
            "(Trace_ELBO, TraceMeanField_ELBO, TraceEnum_ELBO, JitTrace_ELBO, ... or pyro_lvm's "
            "objectives). For TraceGraph_ELBO use pyro_lvm.infer.estimators."
        )
    return elbo.differentiable_loss(pair.model, pair.guide, *args, **kwargs)


# ----------------------------------------------------------------------------- data

def _check_tensor_data(tensors: Sequence[torch.Tensor], what: str) -> None:
    lengths = {int(t.shape[0]) if t.dim() else -1 for t in tensors}
    if -1 in lengths:
        raise ValueError(f"{what}: every tensor needs a leading datapoint dimension (got a 0-d tensor)")
    if len(lengths) != 1:
        raise ValueError(f"{what}: tensors have different numbers of datapoints: {sorted(lengths)}")
    if lengths == {0}:
        raise ValueError(f"{what} is empty (0 datapoints)")
    for t in tensors:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{what} contains NaN or inf values")


def _as_tensors(data: Any) -> tuple[torch.Tensor, ...] | None:
    if isinstance(data, torch.Tensor):
        return (data,)
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, torch.Tensor) for t in data):
        return tuple(data)
    return None


def num_datapoints(data: Any) -> int | None:
    """Number of datapoints, or None for a stream that does not know it (an IterableDataset)."""
    tensors = _as_tensors(data)
    if tensors is not None:
        return int(tensors[0].shape[0])
    try:
        return len(data.dataset if isinstance(data, DataLoader) else data)  # type: ignore[arg-type]
    except TypeError:
        return None


def _num_batches(data: Any, batch_size: int) -> int | None:
    """Batches per epoch, for the progress bar; None for a stream of unknown length."""
    if isinstance(data, DataLoader):
        try:
            return len(data)
        except TypeError:  # a DataLoader over an IterableDataset without __len__
            return None
    n = num_datapoints(data)
    return None if n is None else math.ceil(n / batch_size)


def _set_epoch(data: Any, epoch: int) -> None:
    """Tell data that reshuffles by epoch (a sampler, a stream) which epoch this is."""
    for obj in (data, getattr(data, "dataset", None), getattr(data, "sampler", None), getattr(data, "batch_sampler", None)):
        if callable(getattr(obj, "set_epoch", None)):
            obj.set_epoch(epoch)


def iterate_batches(data: Any, batch_size: int, shuffle: bool, seed: int, epoch: int) -> Iterator[Any]:
    """Yield mini-batches of ``data`` (a tensor, a tuple of tensors, a Dataset or a DataLoader).

    Shuffling uses a generator seeded by ``(seed, epoch)``, so the order of an epoch does not
    depend on what ran before it: a resumed run sees the same batches as an uninterrupted one.
    A DataLoader, or an IterableDataset that yields batches, is iterated as it is (it decides
    the order; ``fit`` calls its ``set_epoch`` if it has one).
    """
    tensors = _as_tensors(data)
    if tensors is not None:
        n = tensors[0].shape[0]
        if shuffle:
            g = torch.Generator().manual_seed(seed * 100_003 + epoch)
            order = torch.randperm(n, generator=g)
            tensors = tuple(t[order.to(t.device)] for t in tensors)
        for start in range(0, n, batch_size):
            chunk = tuple(t[start:start + batch_size] for t in tensors)
            yield chunk[0] if len(chunk) == 1 else chunk
    elif isinstance(data, (DataLoader, IterableDataset)):
        yield from data  # a stream yields whole batches (e.g. pyro_lvm.data.streaming)
    elif isinstance(data, Dataset):
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        yield from DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=g)
    else:
        raise TypeError(
            f"training data must be a tensor, a tuple of tensors, a torch Dataset or a DataLoader; "
            f"got {type(data).__name__}"
        )


def _check_data(data: Any, what: str) -> None:
    tensors = _as_tensors(data)
    if tensors is not None:
        _check_tensor_data(tensors, what)
    elif isinstance(data, (DataLoader, Dataset)):
        if num_datapoints(data) == 0:  # None (a stream) is checked as it is read
            raise ValueError(f"{what} is empty (0 datapoints)")
    else:
        raise TypeError(
            f"{what} must be a tensor, a tuple of tensors, a torch Dataset or a DataLoader; "
            f"got {type(data).__name__}"
        )


def resolve_device(device: str | torch.device) -> torch.device:
    """``torch.device`` for a name, refusing CUDA where there is none."""
    try:
        device = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}: {e}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available here; use device='cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


# ----------------------------------------------------------------------------- evaluation

def evaluation_batches(pair: Any, data: Any, batch_size: int, device: str | torch.device | None = None) -> Iterator[Any]:
    """``data`` in order, in batches moved to ``device`` (default: where the pair's parameters
    are), so evaluating a pair trained on a GPU needs no manual moves."""
    device = device if device is not None else pair_device(pair)
    for batch in iterate_batches(data, batch_size, shuffle=False, seed=0, epoch=0):
        yield batch if device is None else batch_to(batch, device)


@torch.no_grad()
def evaluate_loss(pair: Any, data: Any, elbo: Any, batch_size: int = 512, device: str | torch.device | None = None) -> float:
    """Mean negative ELBO per datapoint over ``data`` (no gradients, no parameter change)."""
    total, count = 0.0, 0
    for batch in evaluation_batches(pair, data, batch_size, device):
        total += float(differentiable_loss(elbo, pair, batch))
        count += _batch_size(batch)
    return total / count


# ----------------------------------------------------------------------------- the loop

def _make_optimizer(optimizer: Any, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    if isinstance(optimizer, str):
        factories = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop}
        name = optimizer.lower()
        if name not in factories:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {sorted(factories)} or pass a callable params -> torch.optim.Optimizer")
        if name in ("adam", "adamw"):
            # The fused kernel updates all parameters in one call: on a CPU VAE step it is
            # ~3x faster than the default per-tensor loop (benchmarks/vae_overhead.py).
            try:
                return factories[name](params, lr=lr, fused=True)
            except (RuntimeError, TypeError, ValueError):
                pass  # fused needs torch >= 2.4 and a supported device/dtype
        return factories[name](params, lr=lr)
    if isinstance(optimizer, pyro.optim.PyroOptim):
        raise TypeError("fit() steps a torch optimiser; pass e.g. optimizer='adam', lr=1e-3, or a callable params -> torch.optim.Adam(params, ...)")
    if callable(optimizer):
        return optimizer(params)
    raise TypeError(f"optimizer must be a name or a callable, got {type(optimizer).__name__}")


def _trainable_params(pair: Any, captured: Iterable[dict]) -> list[torch.Tensor]:
    """The pair's module parameters, then parameters created with ``pyro.param`` (by name)."""
    params: list[torch.Tensor] = []
    seen: set[int] = set()
    if isinstance(pair, nn.Module):
        for p in pair.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    for site in sorted(captured, key=lambda s: s["name"]):
        p = site["value"].unconstrained()
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            params.append(p)
    return params


def _save_checkpoint(path: Path, state: TrainState, callbacks: Sequence[Callback], extra: dict) -> None:
    atomic_torch_save(
        {
            "format": CHECKPOINT_FORMAT,
            "epoch": state.epoch,
            "step": state.step,
            "pair": state.pair.state_dict() if isinstance(state.pair, nn.Module) else None,
            "param_store": pyro.get_param_store().get_state(),
            "optimizer": state.optimizer.state_dict() if state.optimizer is not None else None,
            "rng": rng_state(),
            "history": state.history.epochs,
            "callbacks": [cb.state_dict() for cb in callbacks],
            **extra,
        },
        path,
    )


def _better(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return value < best if mode == "min" else value > best


def fit(
    pair: Any,
    train_data: Any,
    valid_data: Any = None,
    *,
    elbo: Any = None,
    optimizer: Any = "adam",
    lr: float = 1e-3,
    epochs: int = 10,
    batch_size: int = 128,
    seed: int = 0,
    device: str | torch.device = "cpu",
    clip_norm: float | None = None,
    metrics: Mapping[str, Callable[[Any, Any], float]] | None = None,
    patience: int | None = None,
    monitor: str = "valid_loss",
    mode: str = "min",
    restore_best: bool = False,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    progress: bool | None = None,
    validate: str = "first",
    strategy: str = "single",
    num_processes: int = 1,
    data_plate: str | None = None,
) -> History:
    """Train ``pair`` by SVI and return its :class:`History`.

    Args:
        pair: a model/guide pair (``pair.model(batch)``, ``pair.guide(batch)``).
        train_data: a tensor ``(N, ...)``, a tuple of tensors with a common ``N``, a torch
            ``Dataset``, a ``DataLoader``, or an ``IterableDataset`` yielding batches (a stream
            over files larger than memory: :mod:`pyro_lvm.data.streaming`). Batches are passed to model and guide by the
            convention of :mod:`pyro_lvm.base`.
        valid_data: same kinds; its loss per datapoint is logged as ``valid_loss``.
        elbo: any Pyro ELBO with ``differentiable_loss`` (default ``Trace_ELBO()``).
        optimizer, lr: a name (``"adam"``, ``"adamw"``, ``"sgd"``, ``"rmsprop"``) with a learning
            rate, or a callable ``params -> torch.optim.Optimizer``.
        seed: seeds all generators at the start, and fixes each epoch's shuffling.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; the pair and every batch are moved there.
        clip_norm: clip the global gradient norm to this value.
        metrics: ``{name: fn(pair, data) -> float}`` evaluated at each epoch's end on
            ``valid_data`` (or ``train_data`` when there is none) and logged under ``name``.
        patience, monitor, mode: early stopping after ``patience`` epochs without improvement
            of the logged value ``monitor`` (``mode`` ``"min"`` or ``"max"``).
        restore_best: at the end, load the parameters of the best epoch by ``monitor``.
        callbacks: :class:`Callback` objects (KL schedules, aggressive encoder training, ...).
        checkpoint_dir: writes ``last.pt`` every ``checkpoint_every`` epochs (and at the end),
            ``best.pt`` when ``monitor`` improves, and ``history.json``; all atomically.
        resume: continue from ``checkpoint_dir/last.pt`` if it exists; the continued run
            produces the same numbers as one that was never interrupted.
        progress: show a tqdm bar (default: only when stderr is a terminal).
        validate: ``"first"`` runs Pyro's argument validation on the first step only (it is
            slow), ``"always"`` or ``"never"``.
        strategy, num_processes: ``"ddp"`` trains data-parallel on ``num_processes`` local
            processes (gloo on CPU; one GPU each with ``device="cuda"``), or joins the process
            group a launcher such as ``torchrun`` made. Each rank takes a slice of every batch
            and gradients are summed across ranks, so the objective is the same as one
            process's (see :mod:`pyro_lvm.distributed`); ``batch_size`` is the global batch.
            Rank 0 writes checkpoints; the trained parameters come back into ``pair``.
        data_plate: name of the plate over datapoints, for ``strategy="ddp"``, when another
            plate could have the shard's size.

    Raises:
        TrainingDivergedError: when the loss or gradient norm is NaN/inf; the message names
            the step, and ``last.pt`` still holds the last good state.
        pyro_lvm.distributed.WorkerFailedError: a process of a ``"ddp"`` run failed (named).
    """
    # (a forked ddp worker inherits the added callbacks and gets them in `callbacks` too: no repeats)
    callbacks = [*callbacks, *(cb for cb in _ADDED_CALLBACKS.get() if cb not in callbacks)]
    call = dict(locals())  # for the worker processes of strategy="ddp"
    check_pair(pair)
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"clip_norm must be positive, got {clip_norm!r}")
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience must be a positive int, got {patience!r}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if validate not in ("first", "always", "never"):
        raise ValueError(f"validate must be 'first', 'always' or 'never', got {validate!r}")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every!r}")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir to resume from")
    _check_data(train_data, "training data")
    if valid_data is not None:
        _check_data(valid_data, "validation data")

    device = resolve_device(device)
    distributed.check_strategy(strategy, num_processes, device)
    rank = distributed.join_group(device) if strategy == "ddp" else None
    if strategy == "ddp" and rank is None and num_processes > 1:
        records = distributed.launch(fit, pair, (train_data, valid_data),
                                     {k: v for k, v in call.items() if k not in ("pair", "train_data", "valid_data")},
                                     num_processes, device)
        return History(records)
    if rank is not None:
        device = distributed.rank_device(device, rank)
    main_process = rank is None or rank.is_main
    if isinstance(pair, nn.Module):
        pair.to(device)
    elbo = elbo if elbo is not None else pyro.infer.Trace_ELBO()
    step_elbo = elbo if rank is None else distributed.sharded_elbo(elbo, rank.world_size, data_plate)
    metrics = dict(metrics or {})
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    show_progress = (sys.stderr.isatty() if progress is None else progress) and main_process

    state = TrainState(pair=pair, elbo=step_elbo, optimizer=None, params=[], device=device, rank=rank,
                       train_data=train_data, valid_data=valid_data, checkpoint_dir=ckpt_dir)
    best_value: float | None = None
    best_state: dict | None = None
    bad_epochs = 0
    pending_optimizer_state = None
    # Ranks draw different guide noise; parameters start equal (rank 0's are broadcast).
    set_seed(seed if rank is None else seed + 7919 * rank.rank)
    if rank is not None and isinstance(pair, nn.Module):
        rank.broadcast_parameters(list(pair.parameters()))

    if resume and ckpt_dir is not None and (ckpt_dir / "last.pt").is_file():
        ckpt = load_checkpoint(ckpt_dir / "last.pt", map_location=device)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{ckpt_dir / 'last.pt'} has checkpoint format {ckpt.get('format')!r}, expected {CHECKPOINT_FORMAT}")
        if isinstance(pair, nn.Module):
            pair.load_state_dict(ckpt["pair"])
        pyro.get_param_store().set_state(ckpt["param_store"])
        pending_optimizer_state = ckpt["optimizer"]
        state.epoch, state.step = ckpt["epoch"] + 1, ckpt["step"]
        state.history = History(list(ckpt["history"]))
        for cb, cb_state in zip(callbacks, ckpt["callbacks"]):
            cb.load_state_dict(cb_state)
        best_value, bad_epochs = ckpt.get("best_value"), ckpt.get("bad_epochs", 0)
        set_rng_state(ckpt["rng"])
        if rank is not None and rank.rank > 0:  # the checkpoint holds rank 0's generators
            set_seed(seed + 7919 * rank.rank + 104_729 * state.epoch)
        if restore_best and (ckpt_dir / "best.pt").is_file():
            best = load_checkpoint(ckpt_dir / "best.pt", map_location=device)
            best_state = {"pair": best["pair"], "param_store": best["param_store"]}

    def build_optimizer(params: list[torch.Tensor]) -> torch.optim.Optimizer:
        opt = _make_optimizer(optimizer, params, lr)
        if pending_optimizer_state is not None:
            opt.load_state_dict(pending_optimizer_state)
        return opt

    def checkpoint(name: str) -> None:
        if ckpt_dir is not None and main_process:
            _save_checkpoint(ckpt_dir / name, state, callbacks, {"best_value": best_value, "bad_epochs": bad_epochs})

    was_validating = pyro.poutine.util.is_validation_enabled()
    pyro.enable_validation(validate != "never")
    if isinstance(pair, nn.Module):
        pair.train()
    for cb in callbacks:
        cb.on_train_begin(state)
    try:
        while state.epoch < epochs and not state.stop:
            state.logs = {"epoch": state.epoch}
            for cb in callbacks:
                cb.on_epoch_begin(state)
            total, count = 0.0, 0
            _set_epoch(train_data, state.epoch)
            batches = iterate_batches(train_data, batch_size, shuffle=True, seed=seed, epoch=state.epoch)
            if show_progress:
                from tqdm.auto import tqdm

                batches = tqdm(batches, desc=f"epoch {state.epoch + 1}/{epochs}", leave=False,
                               total=_num_batches(train_data, batch_size))
            for batch in batches:
                n = _batch_size(batch)
                if rank is not None:
                    if n < rank.world_size:
                        continue  # too small to give every rank a datapoint (all ranks skip it)
                    batch = rank.shard(batch)
                batch = batch_to(batch, device)
                for cb in callbacks:
                    cb.on_step_begin(state, batch)
                loss_value = _optimisation_step(
                    state, batch, callbacks, build_optimizer, clip_norm,
                    lambda: f"step {state.step + 1} (epoch {state.epoch + 1}, {count} datapoints into it); "
                            f"parameters left as before that step. {_last_good(ckpt_dir)}")
                if validate == "first":
                    pyro.enable_validation(False)
                total += loss_value
                count += n
                if show_progress:
                    batches.set_postfix(loss=f"{loss_value / n:.3f}")  # type: ignore[union-attr]
                for cb in callbacks:
                    cb.on_step_end(state, batch, loss_value)
            if count == 0:
                raise ValueError(f"the training data gave no batches in epoch {state.epoch + 1}"
                                 + (" (with strategy='ddp', each batch needs at least one datapoint per rank)"
                                    if rank is not None else ""))
            state.logs["train_loss"] = total / count
            state.logs["step"] = state.step
            if isinstance(pair, nn.Module):
                pair.eval()
            if valid_data is not None:
                state.logs["valid_loss"] = evaluate_loss(pair, valid_data, elbo, batch_size=max(batch_size, 256), device=device)
            for name, fn in metrics.items():
                state.logs[name] = float(fn(pair, valid_data if valid_data is not None else train_data))
            for cb in callbacks:
                cb.on_epoch_end(state)
            if rank is not None:  # every rank follows rank 0's record and stopping decision
                state.logs, state.stop = rank.agree((state.logs, state.stop))
            if isinstance(pair, nn.Module):
                pair.train()
            state.history.epochs.append(dict(state.logs))

            improved = False
            if monitor in state.logs:
                value = float(state.logs[monitor])
                if _better(value, best_value, mode):
                    best_value, bad_epochs, improved = value, 0, True
                else:
                    bad_epochs += 1
                if patience is not None and bad_epochs >= patience:
                    state.stop = True
            elif patience is not None or restore_best:
                raise ValueError(f"monitor {monitor!r} was not logged; logged keys: {sorted(state.logs)}")
            if improved and restore_best:
                best_state = _snapshot(pair)
            if improved:
                checkpoint("best.pt")
            if (state.epoch + 1) % checkpoint_every == 0 or state.stop or state.epoch + 1 == epochs:
                checkpoint("last.pt")
            if ckpt_dir is not None and main_process:
                state.history.save(ckpt_dir / "history.json")
            state.epoch += 1
    finally:
        pyro.enable_validation(was_validating)
    if isinstance(pair, nn.Module):
        pair.eval()
    if restore_best and best_state is not None:
        _restore(pair, best_state)
    for cb in callbacks:
        cb.on_train_end(state)
    return state.history


def _optimisation_step(state: TrainState, batch: Any, callbacks: Sequence[Callback],
                       build_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
                       clip_norm: float | None, context: Callable[[], str]) -> float:
    """Loss, backward, NaN checks, clipping and one update; returns the loss value (in a
    ``"ddp"`` run, summed over ranks: the loss of the whole batch)."""
    if state.optimizer is None:
        # The first step discovers parameters created lazily by pyro.param.
        with poutine.trace(param_only=True) as capture:
            loss = state.loss(batch)
        state.params = _trainable_params(state.pair, capture.trace.nodes.values())
        if not state.params:
            raise ValueError("the pair has no trainable parameters (no nn.Module parameters and no pyro.param sites)")
        state.optimizer = build_optimizer(state.params)
        if state.rank is not None:  # pyro.param values were drawn on each rank: use rank 0's
            state.rank.broadcast_parameters(state.params)
            loss = state.loss(batch)
    else:
        loss = state.loss(batch)
    value = loss.detach().item()
    if state.rank is not None:
        value = state.rank.sum(value, state.device)
    if not math.isfinite(value):
        raise TrainingDivergedError(f"loss became {value} at {context()}")
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if state.rank is not None:
        state.rank.sum_gradients(state.params)
    for cb in callbacks:
        cb.on_after_backward(state, batch)
    grad_norm = torch.nn.utils.clip_grad_norm_(state.params, clip_norm if clip_norm is not None else math.inf)
    if not bool(torch.isfinite(grad_norm)):
        raise TrainingDivergedError(f"gradient norm became {float(grad_norm)} at {context()}")
    state.optimizer.step()
    state.step += 1
    return value


def _last_good(ckpt_dir: Path | None) -> str:
    if ckpt_dir is not None and (ckpt_dir / "last.pt").is_file():
        return f"The last good checkpoint is {ckpt_dir / 'last.pt'}."
    return "No checkpoint was written yet (pass checkpoint_dir= to keep one)."


def _snapshot(pair: Any) -> dict:
    return {
        "pair": copy.deepcopy(pair.state_dict()) if isinstance(pair, nn.Module) else None,
        "param_store": copy.deepcopy(pyro.get_param_store().get_state()),
    }


def _restore(pair: Any, snap: dict) -> None:
    if isinstance(pair, nn.Module):
        pair.load_state_dict(snap["pair"])
    pyro.get_param_store().set_state(snap["param_store"])
