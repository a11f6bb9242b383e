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
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import pyro
import torch
from torch import nn

from ..base import batch_args, batch_size as _batch_size, batch_to, check_pair
from ..checkpoint import (CHECKPOINT_FORMAT, decode_param_store, load_best_or_last, load_checkpoint, load_module_state,
                          set_rng_state, set_seed)
from .. import validation
from . import distributed, runs
# Re-exported: the names users and tasks import from here (each defined once, in its own module).
from .batching import (BatchList, differentiable_loss, evaluate_loss, evaluation_batches, iterate_batches,  # noqa: F401
                       loss_value, num_batches, num_datapoints, resolve_device, set_epoch)
from .callbacks import (BestState, Callback, Checkpoints, History, Monitor, ProgressBar, StopOnNonFinite,  # noqa: F401
                        TimeLimit, TrainingDivergedError, TrainState)
from ..traces import (discover_parameters, enumerated_sites, guide_and_model_traces, max_plate_nesting,
                      per_position_sites, preserved_rng, restore_param_store)

CHECKPOINT_FILES = ("last.pt", "best.pt", "history.json")


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


_SAMPLING_ELBOS = (pyro.infer.Trace_ELBO, pyro.infer.TraceGraph_ELBO)  # (subclasses: MeanField, Jit variants)


class DefaultELBO:
    """``fit()``'s objective when none is given: the pair's own, ``pair.objective()`` (every
    built-in pair has one, and a pair of yours may), else ``Trace_ELBO``, or ``TraceEnum_ELBO``
    (with the pair's plate nesting) when the pair marks latent sites for enumeration
    (``config_enumerate``, ``infer={"enumerate": ...}``), which ``Trace_ELBO`` would sample.

    ``fit`` decides on the first batch (:meth:`choose`); until then, or when used on its own,
    the first call decides by tracing the pair once.
    """

    def __init__(self, pair: Any = None) -> None:
        self.pair = pair
        self.inner: Any = None
        self.enumerated: list[str] = []

    def choose(self, enumerated: Sequence[str], plate_nesting: int) -> Any:
        if self.inner is None:
            self.enumerated = list(enumerated)
            own = pair_objective(self.pair)
            if own is not None:
                _check_enumeration(own, enumerated, plate_nesting)
                _settle_plate_nesting(own, plate_nesting)
                self.inner = own
            else:
                self.inner = (pyro.infer.TraceEnum_ELBO(max_plate_nesting=plate_nesting) if self.enumerated
                              else pyro.infer.Trace_ELBO())
        return self.inner

    def _inner(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> Any:
        if self.inner is None:
            with preserved_rng():
                traces = guide_and_model_traces(model, guide, args, kwargs)
            self.choose(enumerated_sites(*traces), max_plate_nesting(*traces))
        return self.inner

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._inner(model, guide, args, kwargs).differentiable_loss(model, guide, *args, **kwargs)

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        return self._inner(model, guide, args, kwargs).loss(model, guide, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # num_particles, ... once chosen
        if name == "inner" or self.__dict__.get("inner") is None:
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"DefaultELBO({type(self.inner).__name__ if self.inner is not None else 'undecided'})"


def pair_objective(pair: Any) -> Any | None:
    """``pair.objective()``, the objective a pair says it is meant to train with, or None for a
    pair without that method."""
    method = getattr(pair, "objective", None)
    if not callable(method):
        return None
    elbo = method()
    if not callable(getattr(elbo, "differentiable_loss", None)):
        raise TypeError(f"{type(pair).__name__}.objective() must return an objective with a "
                        f"differentiable_loss(model, guide, *args) method (a Pyro ELBO), got {type(elbo).__name__}")
    return elbo


def _check_enumeration(elbo: Any, enumerated: Sequence[str], plate_nesting: int) -> None:
    """Refuse a sampling ELBO (``Trace_ELBO`` and kin) for a pair that marks sites for enumeration."""
    inner = elbo
    while not isinstance(inner, _SAMPLING_ELBOS) and "elbo" in getattr(inner, "__dict__", {}):
        inner = inner.__dict__["elbo"]  # KLScaledELBO, ScaledELBO, ...: look at the ELBO they wrap
    if enumerated and isinstance(inner, _SAMPLING_ELBOS) and not getattr(inner, "sums_enumerated_sites", False):
        raise ValueError(
            f"latent site(s) {list(enumerated)} are marked for enumeration (config_enumerate or "
            f"infer={{'enumerate': ...}}), but {type(inner).__name__} samples them instead of summing them out. "
            f"Pass elbo=pyro.infer.TraceEnum_ELBO(max_plate_nesting={plate_nesting}) (or leave elbo unset and fit() "
            "chooses it), or remove the enumeration marks to sample them.")


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


def _load_optimizer_state(opt: torch.optim.Optimizer, saved: dict, saved_names: Sequence[str] | None,
                          names: Sequence[str], source: Path) -> None:
    """Load ``saved`` (an optimiser ``state_dict`` over parameters called ``saved_names``) into
    ``opt`` (over ``names``) matching parameters by name, so that a resumed run gets each
    tensor's own moments however its parameters were ordered.

    The hyperparameters given now (``lr``, betas, ...) are kept: they are applied, with a
    warning where they differ from the checkpoint's, never silently dropped.
    """
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    if saved_names is None:  # a checkpoint from before parameters had names
        opt.load_state_dict(saved)
    else:
        opt.load_state_dict(_by_name(opt.state_dict(), saved, list(saved_names), list(names)))
    changed = set()
    for group, want in zip(opt.param_groups, fresh):
        for k, v in want.items():
            if group.get(k) != v:
                changed.add(f"{k}={v!r} (was {group.get(k)!r})")
                group[k] = v
    if changed:
        warnings.warn(f"resuming from {source}: applying the optimiser settings given now: {', '.join(sorted(changed))}",
                      stacklevel=6)  # the caller of fit (via fit, _train_epoch, _Steps)


def _by_name(current: dict, saved: dict, saved_names: list[str], names: list[str]) -> dict:
    """``saved`` re-indexed to the parameter order of ``current`` (both optimiser state dicts)."""
    if set(saved_names) != set(names) or len(saved_names) != len(names):
        missing = sorted(set(saved_names) - set(names))
        new = sorted(set(names) - set(saved_names))
        raise ValueError(f"the checkpoint's optimiser state does not fit this pair: parameters only in the checkpoint "
                         f"{missing}, only in the pair {new}. Resume with the pair that wrote the checkpoint, or "
                         "start afresh (overwrite=True).")
    saved_index = {name: i for i, name in enumerate(saved_names)}
    if len(current["param_groups"]) != len(saved["param_groups"]):
        raise ValueError(f"the checkpoint's optimiser has {len(saved['param_groups'])} parameter groups, this one "
                         f"{len(current['param_groups'])}: build the optimiser as the run that wrote the checkpoint did")
    groups = []
    state = {}
    for cur, old in zip(current["param_groups"], saved["param_groups"]):
        if {names[i] for i in cur["params"]} != {saved_names[i] for i in old["params"]}:
            raise ValueError("the checkpoint's optimiser groups hold other parameters than this optimiser's: "
                             "build the optimiser as the run that wrote the checkpoint did")
        groups.append({**old, "params": cur["params"]})
        for i in cur["params"]:
            j = saved_index[names[i]]
            if j in saved["state"]:
                state[i] = saved["state"][j]
    return {"state": state, "param_groups": groups}


def _in_optimizer_order(opt: torch.optim.Optimizer, named: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the pair's parameters in the order ``opt`` holds them (its ``state_dict``
    numbers them so, and checkpoints store the names in that order). A factory may split the
    parameters into groups in any order (per-group learning rates), holding each exactly once."""
    name_of = {id(p): name for name, p in named.items()}
    held = [p for group in opt.param_groups for p in group["params"]]
    foreign = [tuple(p.shape) for p in held if id(p) not in name_of]
    if foreign:
        raise ValueError(f"the optimiser holds {len(foreign)} tensor(s) that are not trainable parameters of the pair "
                         f"(shapes {foreign}): build its groups from the parameters fit passes to the factory")
    names = [name_of[id(p)] for p in held]
    missing = sorted(set(named) - set(names))
    if missing:
        raise ValueError(f"parameters {missing} are in no group of the optimiser, so they would never be trained: "
                         "put every parameter fit passes to the factory in a group (to freeze one, give its group lr=0)")
    return names


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
    overwrite: bool = False,
    progress: bool | None = None,
    validate: str = "first",
    strategy: str = "single",
    num_processes: int = 1,
    data_plate: str | None = None,
) -> History:
    """Train ``pair`` by SVI and return its :class:`History`.

    Args:
        pair: a model/guide pair (``pair.model(batch)``, ``pair.guide(batch)``).
        train_data: a tensor ``(N, ...)``, a tuple of tensors with a common ``N``, a
            :class:`~pyro_lvm.training.batching.BatchList` of batches prepared whole (variable-length,
            length-sorted, ...; shuffled as whole batches), a torch ``Dataset``, a ``DataLoader``,
            or an ``IterableDataset`` yielding batches (a stream over files larger than memory:
            :mod:`pyro_lvm.data.streaming`). Batches are passed to model and guide by the
            convention of :mod:`pyro_lvm.base`.
        valid_data: same kinds; its negative ELBO per datapoint is logged as ``valid_loss``
            (for an objective that is not the ELBO, such as free bits, the ELBO it modifies;
            the objective's own value is logged as ``valid_objective``).
        elbo: any Pyro ELBO with ``differentiable_loss``. Default: ``Trace_ELBO()``, or
            ``TraceEnum_ELBO`` when the pair marks latent sites for enumeration (decided on the
            first batch; see :class:`DefaultELBO`). A sampling ELBO (``Trace_ELBO`` and kin)
            for a pair with enumeration marks is refused with what to pass instead.
        optimizer, lr: a name (``"adam"``, ``"adamw"``, ``"sgd"``, ``"rmsprop"``) with a learning
            rate, or a callable ``params -> torch.optim.Optimizer``. The callable may split
            ``params`` (the pair's trainable tensors) into parameter groups with their own
            settings, e.g. a learning rate per module; it must put each in exactly one group.
            Resume matches the optimiser's state to parameters by name, whatever the grouping.
        seed: seeds all generators at the start, and fixes each epoch's shuffling.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; the pair and every batch are moved there.
        clip_norm: clip the global gradient norm to this value.
        metrics: ``{name: fn(pair, data) -> float}`` evaluated at each epoch's end on
            ``valid_data`` (or ``train_data`` when there is none) and logged under ``name``.
        patience, monitor, mode: early stopping after ``patience`` epochs without improvement
            of the logged value ``monitor`` (``mode`` ``"min"`` or ``"max"``).
        restore_best: at the end, load the parameters of the best epoch by ``monitor``.
        callbacks: :class:`Callback` objects (KL schedules, aggressive encoder training, ...);
            their hooks run before those of the callbacks ``fit`` adds itself (the NaN stop,
            early stopping, best state, checkpoints, progress bar: :mod:`pyro_lvm.training.callbacks`).
        checkpoint_dir: writes ``last.pt`` every ``checkpoint_every`` epochs (and at the end),
            ``best.pt`` when ``monitor`` improves, and ``history.json``; all atomically, in
            the safe format of :mod:`pyro_lvm.checkpoint`. The folder is locked while ``fit``
            runs (a second process is refused) and temporaries a killed run left are removed.
            A folder that already holds these files is refused unless ``resume`` or ``overwrite``.
        resume: continue from ``checkpoint_dir/last.pt`` if it exists; the continued run
            produces the same numbers as one that was never interrupted. A different ``seed``
            or optimiser name is refused; a different ``lr`` (or other optimiser setting) is
            applied, with a warning.
        overwrite: replace the run in ``checkpoint_dir`` (its ``last.pt``, ``best.pt`` and
            ``history.json``) instead of refusing.
        progress: show a tqdm bar (default: only when stderr is a terminal).
        validate: ``"first"`` runs Pyro's argument validation on the first step only (it is
            slow), ``"always"`` or ``"never"``.
        strategy, num_processes: ``"ddp"`` trains data-parallel on ``num_processes`` local
            processes (gloo on CPU; one GPU each with ``device="cuda"``), or joins the process
            group a launcher such as ``torchrun`` made. Each rank takes a slice of every batch
            and gradients are summed across ranks, so the objective is the same as one
            process's (see :mod:`pyro_lvm.training.distributed`); ``batch_size`` is the global batch.
            Rank 0 writes checkpoints; the trained parameters come back into ``pair``.
        data_plate: name of the plate over datapoints, when another plate could have the
            batch's (or with ``strategy="ddp"`` the shard's) size: the shards, and the check of
            an autoguide's per-datapoint latents, go by it.

    Raises:
        pyro_lvm.validation.InvalidArgumentError: an argument is invalid (named, with its value).
        pyro_lvm.training.runs.RunFolderError: ``checkpoint_dir`` holds a run and neither ``resume`` nor
            ``overwrite`` was given, or another process is writing it (``RunFolderInUseError``).
        TrainingDivergedError: when the loss or gradient norm is NaN/inf; the message names
            the step, and ``last.pt`` still holds the last good state.
        pyro_lvm.training.distributed.WorkerFailedError: a process of a ``"ddp"`` run failed (named).
    """
    # (a forked ddp worker inherits the added callbacks and gets them in `callbacks` too: no repeats)
    callbacks = [*callbacks, *(cb for cb in _ADDED_CALLBACKS.get() if cb not in callbacks)]
    call = dict(locals())  # for the worker processes of strategy="ddp"
    check_pair(pair)
    _check_options(call)
    train_data = validation.data(train_data, "train_data", pair)
    if valid_data is not None:
        valid_data = validation.data(valid_data, "valid_data", pair)
    device = resolve_device(device)
    distributed.check_strategy(strategy, num_processes, device)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    rank = distributed.join_group(device) if strategy == "ddp" else None
    if strategy == "ddp" and rank is None and num_processes > 1:
        return _launch_processes(call, train_data, valid_data, ckpt_dir, device)
    device = distributed.rank_device(device, rank) if rank is not None else device
    main_process = rank is None or rank.is_main
    elbo = elbo if elbo is not None else DefaultELBO(pair)
    with contextlib.ExitStack() as held:
        if ckpt_dir is not None and main_process:  # the folder is locked by this process until fit returns
            held.enter_context(runs.claim(ckpt_dir, _checkpoint_files, resume=resume, overwrite=overwrite,
                                          remove=_remove_checkpoint_files))
        held.enter_context(pyro.validation_enabled(validate != "never"))
        state = _start(pair, elbo, device, rank, data_plate, seed, train_data, valid_data, ckpt_dir)
        options = {"seed": seed, "lr": lr, "optimizer": optimizer if isinstance(optimizer, str) else None}
        monitor_cb = Monitor(monitor, mode, patience, required=patience is not None or restore_best)
        best_cb = BestState(monitor_cb)
        pending = None  # what a checkpoint restores at the first step (see _prepare)
        if resume and ckpt_dir is not None and (ckpt_dir / "last.pt").is_file():
            pending = _resume(ckpt_dir / "last.pt", state, options, callbacks, monitor_cb,
                              best_cb if restore_best else None, seed)
        # What fit adds itself, run after the user's callbacks at each hook (in this order).
        internal: list[Callback] = [StopOnNonFinite(), monitor_cb, *([best_cb] if restore_best else [])]
        if ckpt_dir is not None and main_process:
            internal.append(Checkpoints(ckpt_dir, checkpoint_every, epochs, monitor_cb, callbacks, options))
        if (sys.stderr.isatty() if progress is None else progress) and main_process:
            internal.append(ProgressBar(epochs, num_batches(train_data, batch_size)))
        everyone = [*callbacks, *internal]
        step = _Steps(optimizer, lr, clip_norm, elbo, pending, everyone, validate, data_plate)
        _set_training(pair, True)
        _call(everyone, "on_train_begin", state)
        while state.epoch < epochs and not state.stop:
            state.logs = {"epoch": state.epoch}
            _call(everyone, "on_epoch_begin", state)
            _train_epoch(state, step, everyone, batch_size, seed)
            _set_training(pair, False)
            _evaluate(state, elbo, dict(metrics or {}), batch_size)
            _call(callbacks, "on_epoch_end", state)
            if rank is not None:  # every rank follows rank 0's record and stopping decision
                state.logs, state.stop = rank.agree((state.logs, state.stop))
            _set_training(pair, True)
            state.history.epochs.append(dict(state.logs))
            _call(internal, "on_epoch_end", state)  # early stopping, best state, checkpoints: on the epoch as recorded
            state.epoch += 1
    step.restore_if_unstepped(state)
    _set_training(pair, False)
    _call([*internal, *callbacks], "on_train_end", state)  # the best state is back before the user's callbacks see the end
    return state.history


def _call(callbacks: Sequence[Callback], hook: str, *args: Any) -> None:
    """Run one hook of every callback, in order."""
    for cb in callbacks:
        getattr(cb, hook)(*args)


def _set_training(pair: Any, training: bool) -> None:
    if isinstance(pair, nn.Module):
        pair.train(training)


def _check_options(call: dict) -> None:
    """fit()'s checks of its plain options (each error names the option and its value)."""
    validation.check(**{k: call[k] for k in ("epochs", "batch_size", "lr", "seed", "clip_norm", "patience",
                                             "checkpoint_every", "monitor", "data_plate")})
    validation.Choice(("min", "max"))("mode", call["mode"])
    validation.Choice(("first", "always", "never"))("validate", call["validate"])
    if call["resume"] and call["checkpoint_dir"] is None:
        raise validation.InvalidArgumentError("resume=True needs a checkpoint_dir to resume from")


def _launch_processes(call: dict, train_data: Any, valid_data: Any, ckpt_dir: Path | None,
                      device: torch.device) -> History:
    """``strategy="ddp"`` from a single process: start ``num_processes`` workers that each run
    fit with the same arguments, and return rank 0's history."""
    if ckpt_dir is not None:  # refuse here, before any process starts (rank 0 claims the folder)
        runs.check_free(ckpt_dir, _checkpoint_files(ckpt_dir), resume=call["resume"], overwrite=call["overwrite"],
                        resume_flag="resume=True", overwrite_flag="overwrite=True")
    records = distributed.launch(fit, call["pair"], (train_data, valid_data),
                                 {k: v for k, v in call.items() if k not in ("pair", "train_data", "valid_data")},
                                 call["num_processes"], device)
    return History(records)


def _start(pair: Any, elbo: Any, device: torch.device, rank: Any, data_plate: str | None, seed: int,
           train_data: Any, valid_data: Any, ckpt_dir: Path | None) -> TrainState:
    """The pair on its device, every generator seeded, and the state callbacks will see."""
    if isinstance(pair, nn.Module):
        pair.to(device)
    step_elbo = elbo if rank is None else distributed.sharded_elbo(elbo, rank.world_size, data_plate)
    # Ranks draw different guide noise; parameters start equal (rank 0's are broadcast).
    set_seed(seed if rank is None else seed + 7919 * rank.rank)
    if rank is not None and isinstance(pair, nn.Module):
        rank.broadcast_parameters(list(pair.parameters()))
    return TrainState(pair=pair, elbo=step_elbo, optimizer=None, params=[], device=device, rank=rank,
                      train_data=train_data, valid_data=valid_data, checkpoint_dir=ckpt_dir)


def _resume(last: Path, state: TrainState, options: dict, callbacks: Sequence[Callback], monitor: Monitor,
            best: BestState | None, seed: int) -> dict:
    """Continue the run in ``last`` (``last.pt``): counters, history, every callback's state and
    the random streams go back now; returns what the first step restores (module weights,
    param store, optimiser state), once lazily created parameters exist."""
    ckpt = load_checkpoint(last, map_location=state.device)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{last} has checkpoint format {ckpt.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    _check_resumed_options(ckpt.get("options", {}), options, last)
    state.epoch, state.step = ckpt["epoch"] + 1, ckpt["step"]
    state.history = History(list(ckpt["history"]))
    for cb, cb_state in zip(callbacks, ckpt["callbacks"]):
        cb.load_state_dict(cb_state)
    monitor.load_state_dict(ckpt)  # its keys sit at the checkpoint's top level
    set_rng_state(ckpt["rng"])
    if state.rank is not None and state.rank.rank > 0:  # the checkpoint holds rank 0's generators
        set_seed(seed + 7919 * state.rank.rank + 104_729 * state.epoch)
    if best is not None:
        best.load_best(last.parent, state.device)
    return {"pair": ckpt.get("pair"), "param_store": decode_param_store(ckpt["param_store"]),
            "optimizer": ckpt.get("optimizer"), "param_names": ckpt.get("param_names"), "path": last}


def _train_epoch(state: TrainState, step: _Steps, callbacks: Sequence[Callback], batch_size: int, seed: int) -> None:
    """One pass over the training data, one optimisation step per batch; logs ``train_loss``
    (per datapoint) and ``step``."""
    total, count = 0.0, 0
    set_epoch(state.train_data, state.epoch)
    for batch in iterate_batches(state.train_data, batch_size, shuffle=True, seed=seed, epoch=state.epoch):
        n = state.datapoints = _batch_size(batch)
        if state.rank is not None:
            if n < state.rank.world_size:
                continue  # too small to give every rank a datapoint (all ranks skip it)
            batch = state.rank.shard(batch)
        batch = batch_to(batch, state.device)
        _call(callbacks, "on_step_begin", state, batch)
        loss = step(state, batch)
        total += loss
        count += n
        _call(callbacks, "on_step_end", state, batch, loss)
    if count == 0:
        raise ValueError(f"the training data gave no batches in epoch {state.epoch + 1}"
                         + (" (with strategy='ddp', each batch needs at least one datapoint per rank)"
                            if state.rank is not None else ""))
    state.logs["train_loss"] = total / count
    state.logs["step"] = state.step


def _evaluate(state: TrainState, elbo: Any, metrics: Mapping[str, Callable[[Any, Any], float]], batch_size: int) -> None:
    """Log the epoch's ``valid_loss`` (for an objective that modifies the ELBO, such as free
    bits, the plain ELBO's, and ``valid_objective`` its own) and each of ``metrics``."""
    if state.valid_data is not None:
        plain = getattr(elbo, "plain_elbo", None)
        valid_batch = max(batch_size, 256)
        state.logs["valid_loss"] = evaluate_loss(state.pair, state.valid_data, plain if plain is not None else elbo,
                                                 batch_size=valid_batch, device=state.device)
        if plain is not None:
            state.logs["valid_objective"] = evaluate_loss(state.pair, state.valid_data, elbo, batch_size=valid_batch,
                                                          device=state.device)
    for name, fn in metrics.items():
        state.logs[name] = float(fn(state.pair, state.valid_data if state.valid_data is not None else state.train_data))


class _Steps:
    """One optimisation step per call: loss, backward, clipping, update, with the callbacks'
    step hooks between them. The first step also looks at the pair once, restores a checkpoint
    (``pending``), settles the objective and builds the optimiser over the parameters it found."""

    def __init__(self, optimizer: Any, lr: float, clip_norm: float | None, elbo: Any, pending: dict | None,
                 callbacks: Sequence[Callback], validate: str, data_plate: str | None):
        self.optimizer, self.lr, self.clip_norm, self.elbo = optimizer, lr, clip_norm, elbo
        self.pending, self.callbacks, self.validate, self.data_plate = pending, callbacks, validate, data_plate

    def __call__(self, state: TrainState, batch: Any) -> float:
        """Returns the loss value (in a ``"ddp"`` run, summed over ranks: the whole batch's)."""
        loss = self._first_loss(state, batch) if state.optimizer is None else state.loss(batch)
        value = loss.detach().item()
        if state.rank is not None:
            value = state.rank.sum(value, state.device)
        state.optimizer.zero_grad(set_to_none=True)
        _call(self.callbacks, "on_before_backward", state, batch, value)
        loss.backward()
        if state.rank is not None:
            state.rank.sum_gradients(state.params)
        _call(self.callbacks, "on_after_backward", state, batch)
        state.grad_norm = _gradient_norm(state.params, self.clip_norm)
        _call(self.callbacks, "on_before_optimizer_step", state, batch)
        state.optimizer.step()
        state.step += 1
        if self.validate == "first":
            pyro.enable_validation(False)
        return value

    def _first_loss(self, state: TrainState, batch: Any) -> torch.Tensor:
        _prepare(state.pair, batch, self.elbo, self.pending)
        _check_autoguide_positions(state, self.data_plate)
        # Parameters are found by name (some are created lazily by the first run).
        named, loss = discover_parameters(state.pair, lambda: state.loss(batch))
        if not named:
            raise ValueError("the pair has no trainable parameters (no nn.Module parameters and no pyro.param sites)")
        state.optimizer = _make_optimizer(self.optimizer, list(named.values()), self.lr)
        state.param_names = _in_optimizer_order(state.optimizer, named)
        state.params = [named[name] for name in state.param_names]
        pending = self.pending
        if pending is not None and pending["optimizer"] is not None:
            _load_optimizer_state(state.optimizer, pending["optimizer"], pending["param_names"], state.param_names,
                                  pending["path"])
        if state.rank is not None:  # pyro.param values were drawn on each rank: use rank 0's
            state.rank.broadcast_parameters(state.params)
            loss = state.loss(batch)
        return loss

    def restore_if_unstepped(self, state: TrainState) -> None:
        """Resumed after the last epoch: no step ran to restore the checkpoint, so do it now."""
        if self.pending is not None and state.optimizer is None:
            if isinstance(state.pair, nn.Module) and self.pending["pair"] is not None:
                # strict=False: lazily created parameters live in the param store
                state.pair.load_state_dict(self.pending["pair"], strict=False)
            restore_param_store(self.pending["param_store"])


def _gradient_norm(params: Sequence[torch.Tensor], clip_norm: float | None) -> torch.Tensor:
    """The global norm of the gradients of ``params`` before clipping, after clipping them to
    ``clip_norm`` when given. Without a bound only the norm is computed: ``clip_grad_norm_``
    with an infinite one would still multiply every gradient by 1, a pass over all of them."""
    if clip_norm is not None:
        return torch.nn.utils.clip_grad_norm_(params, clip_norm)
    return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])


def _look(pair: Any, batch: Any) -> list:
    """The guide's and the replayed model's traces on ``batch``, taken in eval mode with the
    random state left as it was, so a run's numbers do not depend on this look."""
    was_training = isinstance(pair, nn.Module) and pair.training
    if was_training:
        pair.eval()
    try:
        args, kwargs = batch_args(batch)
        with preserved_rng():
            return list(guide_and_model_traces(pair.model, pair.guide, args, kwargs))
    finally:
        if was_training:
            pair.train()


def _restore(pair: Any, traces: Sequence[Any], pending: dict) -> None:
    """Put a checkpoint's module weights and param store into ``pair``, after :func:`_look`:
    parameters created lazily (autoguides, ``PyroModule``) exist by then, so the module state
    loads strictly, and the param store is restored in place, ``pyro.module`` parameters included."""
    if isinstance(pair, nn.Module) and pending["pair"] is not None:
        load_module_state(pair, pending, pending["path"])
    param_sites = [s for tr in traces for s in tr.nodes.values() if s["type"] == "param"]
    restore_param_store(pending["param_store"], sites=param_sites)


def load_trained(pair: Any, batch: Any, checkpoint_dir: str | Path) -> Path:
    """Load what :func:`fit` saved in ``checkpoint_dir`` (``best.pt``, else ``last.pt``) into
    ``pair``, ready for evaluation; ``batch`` is one example batch the pair is traced on once, so
    that parameters it creates lazily exist. Returns the file that was read.
    Nothing in the file is run: see :func:`pyro_lvm.checkpoint.load_checkpoint`."""
    ckpt, path = load_best_or_last(checkpoint_dir)
    _restore(pair, _look(pair, batch), {"pair": ckpt.get("pair"), "param_store": decode_param_store(ckpt["param_store"]),
                                        "path": path})
    if isinstance(pair, nn.Module):
        pair.eval()
    return path


def _prepare(pair: Any, batch: Any, elbo: Any, pending: dict | None) -> None:
    """Look at the pair once before its first step (:func:`_look`), then restore a checkpoint
    (``pending``, :func:`_restore`) and settle the objective: the default chooses
    ``TraceEnum_ELBO`` for enumeration marks, a sampling ELBO given for such a pair is refused,
    an objective that would guess its plate nesting gets it.
    """
    traces = _look(pair, batch)
    if pending is not None:
        _restore(pair, traces, pending)
    enumerated, nesting = enumerated_sites(*traces), max_plate_nesting(*traces)
    if isinstance(elbo, DefaultELBO):
        elbo.choose(enumerated, nesting)
    else:
        _check_enumeration(elbo, enumerated, nesting)
        _settle_plate_nesting(elbo, nesting)


def _check_autoguide_positions(state: TrainState, data_plate: str | None) -> None:
    """Refuse an autoguide's per-datapoint latent unless every step sees the same datapoints in
    the same places: ``fit`` shuffles datapoints and batches, so its parameters (one per position
    of the batch's plate, :func:`~pyro_lvm.traces.per_position_sites`) would follow no datapoint."""
    one_fixed_batch = isinstance(state.train_data, BatchList) and len(state.train_data) == 1
    found = [] if one_fixed_batch and state.valid_data is None else per_position_sites(state.pair, data_plate)
    if found:
        name, guide, plate, size = found[0]
        raise validation.InvalidArgumentError(
            f"the guide's site {name!r} comes from {guide} inside the plate {plate!r} over the datapoints: an "
            f"autoguide is not amortised, it holds one parameter per position of that plate ({size} here), "
            "and fit() shuffles the datapoints (and scores valid_data with the same parameters), so each "
            f"datapoint would get another's posterior. Give {name!r} an amortised guide (an encoder that "
            "computes its parameters from the batch; docs/write_your_own.md), keep the autoguide for the "
            "global latents (AutoGuideList, or the autoguide of poutine.block(model, hide=[...])), or train on "
            "one fixed batch: fit(pair, BatchList([data])) without valid_data. (If the plate over the datapoints "
            f"is not {plate!r} but has the same size, name it: fit(..., data_plate='<name>').)")


def _settle_plate_nesting(elbo: Any, nesting: int) -> None:
    """Give an objective (or the ELBO it wraps) that would guess its ``max_plate_nesting`` on its
    first call the value just found. Pyro's guess traces the pair, which moves the random
    state at the first step of every run, a resumed one included."""
    seen: set[int] = set()
    while elbo is not None and id(elbo) not in seen:
        seen.add(id(elbo))
        attrs = getattr(elbo, "__dict__", {})
        if "max_plate_nesting" in attrs and (attrs["max_plate_nesting"] is None or attrs["max_plate_nesting"] == math.inf):
            # vectorised particles take one more plate, to the left of the pair's (as Pyro's own guess counts it)
            particles = attrs.get("vectorize_particles") and attrs.get("num_particles", 1) > 1
            elbo.max_plate_nesting = nesting + 1 if particles else nesting
        elbo = attrs.get("elbo", attrs.get("inner"))


def _checkpoint_files(folder: Path) -> list[Path]:
    """The files of a run that ``fit`` wrote into ``folder`` (what resume/overwrite are about)."""
    return [folder / name for name in CHECKPOINT_FILES if (folder / name).exists()]


def _remove_checkpoint_files(folder: Path) -> None:
    for path in _checkpoint_files(folder):
        path.unlink()


def _check_resumed_options(saved: dict, now: dict, path: Path) -> None:
    """Options the checkpoint would override: a new seed or optimiser cannot be honoured by a
    resumed run, so they are refused; a new ``lr`` is applied (see :func:`_load_optimizer_state`)."""
    for key in ("seed", "optimizer"):
        if key in saved and saved[key] != now[key]:
            raise ValueError(f"resume refused: {key}={now[key]!r} differs from {key}={saved[key]!r} that {path} was "
                             f"trained with; a resumed run continues the checkpoint's {'random streams' if key == 'seed' else 'optimiser state'}, "
                             f"so pass {key}={saved[key]!r}, or overwrite=True to start again")
