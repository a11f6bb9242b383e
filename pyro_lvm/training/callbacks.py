"""What :func:`pyro_lvm.fit` shows its callbacks: the per-epoch :class:`History`, the
:class:`TrainState`, the :class:`Callback` hooks, :class:`TimeLimit` (a callback users add),
and the callbacks ``fit`` adds itself from its arguments: early stopping (:class:`Monitor`),
best-state restore (:class:`BestState`), checkpoint writing (:class:`Checkpoints`), the NaN
stop (:class:`StopOnNonFinite`) and the progress bar (:class:`ProgressBar`). Each carries its
own state; the loop only calls hooks.

KL schedules, aggressive encoder training, the collapse diagnostics, the trackers and the
discrete-estimator callbacks build on these without importing the training loop.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyro
import torch
from torch import nn

from .. import validation
from .batching import differentiable_loss
from ..checkpoint import (CHECKPOINT_FORMAT, atomic_json_save, atomic_torch_save, decode_param_store,
                          encode_param_store, load_best_or_last, rng_state)
from ..traces import restore, snapshot

if TYPE_CHECKING:
    from .distributed import RankContext


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
    param_names: list[str] = field(default_factory=list)  # one per tensor of ``params``
    epoch: int = 0
    step: int = 0
    history: History = field(default_factory=History)
    logs: dict[str, Any] = field(default_factory=dict)
    stop: bool = False
    rank: RankContext | None = None  # set on each process of a strategy="ddp" run
    train_data: Any = None  # what fit() was given, for callbacks that draw their own batches
    valid_data: Any = None
    checkpoint_dir: Path | None = None  # fit()'s, for callbacks that write beside the checkpoints
    datapoints: int = 0  # in the current step's batch (all ranks together)
    grad_norm: torch.Tensor | None = None  # the current step's global gradient norm, before clipping

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

    def on_before_backward(self, state: TrainState, batch: Any, loss: float) -> None:
        """The step's loss is known (``loss``: its value, summed over ranks), the gradients are
        cleared and no parameter has changed yet. Raising here leaves the parameters as they were."""

    def on_after_backward(self, state: TrainState, batch: Any) -> None:
        """Gradients are in ``.grad`` and not yet clipped or applied (e.g. all-reduce them here)."""

    def on_before_optimizer_step(self, state: TrainState, batch: Any) -> None:
        """Gradients are clipped (``state.grad_norm`` holds their norm before clipping) and not
        yet applied. Raising here leaves the parameters as they were."""

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
        validation.positive_number("seconds", seconds)
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


class TrainingDivergedError(FloatingPointError):
    """The loss or a gradient became NaN/inf; parameters were not updated by that step."""


# ----------------------------------------------------------------------------- what fit adds itself

class Monitor(Callback):
    """Tracks ``monitor``'s best value; stops after ``patience`` epochs without improvement
    (early stopping). ``improved`` says whether the epoch just recorded was the best so far.
    Its state is saved at the top level of fit's checkpoints (``best_value``, ``bad_epochs``)."""

    def __init__(self, monitor: str, mode: str, patience: int | None, required: bool):
        self.monitor, self.mode, self.patience, self.required = monitor, mode, patience, required
        self.best_value: float | None = None
        self.bad_epochs = 0
        self.improved = False

    def on_epoch_end(self, state: TrainState) -> None:
        self.improved = False
        if self.monitor not in state.logs:
            if self.required:
                raise ValueError(f"monitor {self.monitor!r} was not logged; logged keys: {sorted(state.logs)}")
            return
        value = float(state.logs[self.monitor])
        if self.best_value is None or (value < self.best_value if self.mode == "min" else value > self.best_value):
            self.best_value, self.bad_epochs, self.improved = value, 0, True
        else:
            self.bad_epochs += 1
        if self.patience is not None and self.bad_epochs >= self.patience:
            state.stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.best_value, self.bad_epochs = saved.get("best_value"), saved.get("bad_epochs", 0)


class BestState(Callback):
    """Keeps the parameters of the best epoch (by :class:`Monitor`) and puts them back at the end."""

    def __init__(self, monitor: Monitor):
        self.monitor = monitor
        self.best: dict | None = None  # a snapshot; resume reads it back from best.pt (load_best)

    def on_epoch_end(self, state: TrainState) -> None:
        if self.monitor.improved:
            self.best = snapshot(state.pair)

    def on_train_end(self, state: TrainState) -> None:
        if self.best is not None:
            restore(state.pair, self.best)

    def load_best(self, folder: Path, device: torch.device) -> None:
        """On resume: the best epoch so far is the one ``folder/best.pt`` holds (if any)."""
        if (folder / "best.pt").is_file():
            best, _ = load_best_or_last(folder, map_location=device)
            self.best = {"pair": best["pair"], "param_store": decode_param_store(best["param_store"])}


def save_checkpoint(path: Path, state: TrainState, callbacks: list[Callback], extra: dict) -> None:
    """Write fit's checkpoint of ``state`` to ``path`` atomically: counters, pair, param store,
    optimiser (its state indexed like ``state.param_names``), random streams, history, and the
    ``state_dict`` of each of the user's ``callbacks``; ``extra`` goes in at the top level."""
    atomic_torch_save(
        {
            "format": CHECKPOINT_FORMAT,
            "epoch": state.epoch,
            "step": state.step,
            "pair": state.pair.state_dict() if isinstance(state.pair, nn.Module) else None,
            "param_store": encode_param_store(pyro.get_param_store().get_state()),
            "optimizer": state.optimizer.state_dict() if state.optimizer is not None else None,
            "param_names": list(state.param_names),
            "rng": rng_state(),
            "history": state.history.epochs,
            "callbacks": [cb.state_dict() for cb in callbacks],
            **extra,
        },
        path,
    )


class Checkpoints(Callback):
    """Writes ``best.pt`` when the monitored value improves, ``last.pt`` every ``every`` epochs
    and at the end, and ``history.json``; the state of every callback goes into the file."""

    def __init__(self, folder: Path, every: int, epochs: int, monitor: Monitor, callbacks: list[Callback],
                 options: dict):
        self.folder, self.every, self.epochs, self.monitor = folder, every, epochs, monitor
        self.callbacks, self.options = callbacks, options

    def save(self, name: str, state: TrainState) -> None:
        save_checkpoint(self.folder / name, state, self.callbacks, {"options": self.options, **self.monitor.state_dict()})

    def on_epoch_end(self, state: TrainState) -> None:
        if self.monitor.improved:
            self.save("best.pt", state)
        if (state.epoch + 1) % self.every == 0 or state.stop or state.epoch + 1 == self.epochs:
            self.save("last.pt", state)
        state.history.save(self.folder / "history.json")


class StopOnNonFinite(Callback):
    """Raises :class:`TrainingDivergedError` when a step's loss or gradient norm is NaN/inf,
    before the optimiser applies it: the parameters stay as before that step, and the message
    names the step and the last good checkpoint."""

    def __init__(self) -> None:
        self.seen = 0  # datapoints trained on in this epoch before the current step

    def on_epoch_begin(self, state: TrainState) -> None:
        self.seen = 0

    def on_before_backward(self, state: TrainState, batch: Any, loss: float) -> None:
        if not math.isfinite(loss):
            raise TrainingDivergedError(f"loss became {loss} at {self._where(state)}")

    def on_before_optimizer_step(self, state: TrainState, batch: Any) -> None:
        if state.grad_norm is not None and not bool(torch.isfinite(state.grad_norm)):
            raise TrainingDivergedError(f"gradient norm became {float(state.grad_norm)} at {self._where(state)}")

    def on_step_end(self, state: TrainState, batch: Any, loss: float) -> None:
        self.seen += state.datapoints

    def _where(self, state: TrainState) -> str:
        folder = state.checkpoint_dir
        if folder is None:
            last = "No checkpoint was kept (pass checkpoint_dir= to keep one)."
        elif (folder / "last.pt").is_file():
            last = f"The last good checkpoint is {folder / 'last.pt'}."
        else:
            last = f"No checkpoint was written to {folder} yet (the first is written at the end of an epoch)."
        return (f"step {state.step + 1} (epoch {state.epoch + 1}, {self.seen} datapoints into it); "
                f"parameters left as before that step. {last}")


class ProgressBar(Callback):
    """A tqdm bar per epoch: batches done, the loss per datapoint of the last step."""

    def __init__(self, epochs: int, batches_per_epoch: int | None):
        self.epochs, self.total, self.bar = epochs, batches_per_epoch, None

    def on_epoch_begin(self, state: TrainState) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(desc=f"epoch {state.epoch + 1}/{self.epochs}", leave=False, total=self.total)

    def on_step_end(self, state: TrainState, batch: Any, loss: float) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss / max(state.datapoints, 1):.3f}")

    def on_epoch_end(self, state: TrainState) -> None:
        self.bar.close()
