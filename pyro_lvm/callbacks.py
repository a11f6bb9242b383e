"""What :func:`pyro_lvm.fit` shows its callbacks: the per-epoch :class:`History`, the
:class:`TrainState`, the :class:`Callback` hooks, and :class:`TimeLimit`, a callback users add.

KL schedules, aggressive encoder training, the collapse diagnostics, the trackers and the
discrete-estimator callbacks build on these without importing the training loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import validation
from .batching import differentiable_loss
from .checkpoint import atomic_json_save

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
