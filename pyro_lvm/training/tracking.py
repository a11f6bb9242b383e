"""Experiment tracking: :func:`~pyro_lvm.fit` callbacks that write runs to TensorBoard or MLflow.

    fit(pair, data, callbacks=[TensorBoardLogger("runs/tb")])        # tensorboard --logdir runs/tb
    fit(pair, data, callbacks=[MLflowLogger("runs/mlflow")])         # a local store in that folder

Each ``fit`` call a logger is attached to becomes one *run*, named after the call's
``checkpoint_dir`` folder (else the pair's class; ``-2``, ``-3``, ... on repeats). At every
epoch the logger writes every key of the history record (step = the record's ``epoch``):
numbers as scalars/metrics; lists and dicts of numbers one level down as ``key/0``,
``key/name`` (e.g. ``kl_per_dim/z/3``); anything else (a string) as text (TensorBoard) or a
tag (MLflow). Keys that callbacks listed after the logger add are written when the next
epoch begins, so the run holds exactly the history whatever the callbacks' order. ``config``
(a dict of hyperparameters), the pair's class and the ELBO's class become TensorBoard
hparams and MLflow parameters.

A :class:`Session` (what ``pyro-lvm train ... --tensorboard DIR`` / ``--mlflow URI`` opens)
attaches the loggers to every ``fit`` call inside it and adds one run for the whole command:
its options, the final metrics of ``metrics.json`` and the figures the task wrote.

Both loggers work offline. They need optional packages: ``pip install 'pyro_lvm[tensorboard]'``
or ``'pyro_lvm[mlflow]'``; without them the constructor raises ``ImportError`` saying so.
"""

from __future__ import annotations

import argparse
import json
import numbers
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from .distributed import is_main_process
from .loop import Callback, DefaultELBO, TrainState, added_callbacks


def flatten(record: Mapping[str, Any], prefix: str = "", lists: bool = True) -> dict[str, Any]:
    """Nested dicts (and lists, unless ``lists=False``) as one level, keys joined by ``/``:
    ``{"kl": {"z": [1, 2]}}`` -> ``{"kl/z/0": 1, "kl/z/1": 2}``. Other values are kept as they are."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, (list, tuple)) and lists:
            value = {str(i): v for i, v in enumerate(value)}
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}/", lists))
        else:
            out[name] = value
    return out


def is_number(value: Any) -> bool:
    """A real number that a tracker can plot (``bool`` counts as 0/1; ``None`` and strings do not)."""
    return isinstance(value, numbers.Real)


def split_record(record: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """A history record as ``(numbers, texts)``, flattened; ``None`` values are left out."""
    scalars, texts = {}, {}
    for key, value in flatten(record).items():
        if is_number(value):
            scalars[key] = float(value)
        elif value is not None:
            texts[key] = str(value)
    return scalars, texts


def _figures(out: Path, since: float) -> list[Path]:
    """PNG files under ``out`` written at or after ``since`` (a session's figures, not stale ones)."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.rglob("*.png") if p.stat().st_mtime >= since - 1)


class TrackingLogger(Callback):
    """What both loggers share: run naming, the history-to-run bookkeeping and sessions.

    Subclasses write through ``_open_run``, ``_log``, ``_close_run`` and the session hooks.
    """

    extra = ""  # the pyro_lvm extra to install

    def __init__(self, config: Mapping[str, Any] | None = None):
        if config is not None and not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict of hyperparameters, got {type(config).__name__}")
        self.config = dict(config or {})
        self._names: Counter[str] = Counter()
        self._run: Any = None           # the open fit run (backend handle)
        self._logged: dict[int, set[str]] = {}  # epoch -> keys written for it
        self._session: Any = None        # the open session run (backend handle)
        self._pid = os.getpid()

    # ---------------------------------------------------------------- fit hooks
    def _active(self, state: TrainState) -> bool:
        return state.rank is None or state.rank.is_main

    def on_train_begin(self, state: TrainState) -> None:
        if not self._active(state):
            return
        base = state.checkpoint_dir.name if state.checkpoint_dir is not None else type(state.pair).__name__
        self._names[base] += 1
        name = base if self._names[base] == 1 else f"{base}-{self._names[base]}"
        params = {**flatten(self.config, lists=False), "pair": type(state.pair).__name__, "elbo": _elbo_name(state.elbo)}
        self._run = self._open_run(name, params)
        # A resumed fit starts with the earlier epochs in its history: they are not written again.
        self._logged = {int(e["epoch"]): set(e) for e in state.history.epochs if "epoch" in e}

    def on_epoch_begin(self, state: TrainState) -> None:
        self._catch_up(state)

    def on_epoch_end(self, state: TrainState) -> None:
        if self._run is None:
            return
        epoch = int(state.logs.get("epoch", state.epoch))
        self._write(epoch, state.logs, set())

    def on_train_end(self, state: TrainState) -> None:
        if self._run is None:
            return
        self._catch_up(state)
        last = state.history.last()
        self._close_run(self._run, split_record(last)[0] if last else {}, "FINISHED")
        self._run = None

    def _catch_up(self, state: TrainState) -> None:
        """Write what callbacks after this one added to the last finished epoch."""
        if self._run is None or not state.history.epochs:
            return
        record = state.history.epochs[-1]
        epoch = int(record.get("epoch", len(state.history) - 1))
        self._write(epoch, record, self._logged.get(epoch, set()))

    def _write(self, epoch: int, record: Mapping[str, Any], done: set[str]) -> None:
        todo = {k: v for k, v in record.items() if k not in done and k != "epoch"}
        self._logged.setdefault(epoch, set()).update(record)
        if todo:
            self._log(self._run, epoch, *split_record(todo))

    # ---------------------------------------------------------------- sessions
    def begin_session(self, name: str, config: Mapping[str, Any]) -> None:
        """Open the run of a whole command; the fit runs inside it are its children."""
        self._session = self._open_session(name, flatten(config, lists=False))

    def end_session(self, metrics: Mapping[str, Any], figures: Sequence[Path], files: Sequence[Path],
                    failed: bool = False) -> None:
        """Write the command's final ``metrics`` (flattened, numbers only), its ``figures``
        (PNG files) and other ``files`` (reports) to the session run and close it; a fit run
        that an error left open is closed as failed."""
        if self._run is not None:
            self._close_run(self._run, {}, "FAILED")
            self._run = None
        if self._session is None:
            return
        scalars = {k: float(v) for k, v in flatten(metrics).items() if is_number(v)}
        self._close_session(self._session, scalars, list(figures), list(files), "FAILED" if failed else "FINISHED")
        self._session = None

    # ---------------------------------------------------------------- backend (subclasses)
    def _open_run(self, name: str, params: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _log(self, run: Any, step: int, scalars: dict[str, float], texts: dict[str, str]) -> None:
        raise NotImplementedError

    def _close_run(self, run: Any, final: dict[str, float], status: str) -> None:
        raise NotImplementedError

    def _open_session(self, name: str, params: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _close_session(self, run: Any, metrics: dict[str, float], figures: list[Path], files: list[Path],
                       status: str) -> None:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        # Open writers and clients stay in the process that made them (a spawned ddp worker
        # opens its own).
        return {**self.__dict__, "_run": None, "_session": None}


def _missing(cls: str, package: str, extra: str) -> ImportError:
    return ImportError(f"{cls} needs the {package} package: pip install 'pyro_lvm[{extra}]'")


# ----------------------------------------------------------------------------- TensorBoard

def _hparam_value(value: Any) -> bool | int | float | str:
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def _markdown_table(values: Mapping[str, Any]) -> str:
    rows = [f"| {k} | {str(v).replace('|', '/')} |" for k, v in values.items()]
    return "\n".join(["| key | value |", "|---|---|", *rows])


class TensorBoardLogger(TrackingLogger):
    """Write each ``fit`` run to ``log_dir/<run name>`` as TensorBoard event files
    (``torch.utils.tensorboard``). View with ``tensorboard --logdir log_dir``.

    Args:
        log_dir: folder of the runs (made if missing).
        config: hyperparameters, shown in the HParams tab and as a ``config`` text table.
    """

    extra = "tensorboard"

    def __init__(self, log_dir: str | os.PathLike, config: Mapping[str, Any] | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401 (checks the tensorboard package)
        except ImportError:
            raise _missing("TensorBoardLogger", "tensorboard", self.extra) from None
        super().__init__(config)
        self.log_dir = Path(log_dir)

    def _writer(self, folder: Path) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(folder))

    def _open_run(self, name: str, params: dict[str, Any]) -> Any:
        writer = self._writer(self.log_dir / name)
        writer.add_text("config", _markdown_table(params), 0)
        return {"writer": writer, "params": params}

    def _log(self, run: Any, step: int, scalars: dict[str, float], texts: dict[str, str]) -> None:
        for key, value in scalars.items():
            run["writer"].add_scalar(key, value, step)
        for key, value in texts.items():
            run["writer"].add_text(key, value, step)
        run["writer"].flush()  # a live view sees each epoch as it ends

    def _close_run(self, run: Any, final: dict[str, float], status: str) -> None:
        self._hparams(run["writer"], run["params"], final)
        run["writer"].close()

    @staticmethod
    def _hparams(writer: Any, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """HParams-tab entry linking ``params`` to the run's scalars named in ``metrics``."""
        from torch.utils.tensorboard.summary import hparams

        for summary in hparams({k: _hparam_value(v) for k, v in params.items()}, metrics):
            writer.file_writer.add_summary(summary)

    def _open_session(self, name: str, params: dict[str, Any]) -> Any:
        writer = self._writer(self.log_dir)
        writer.add_text("config", _markdown_table(params), 0)
        return {"writer": writer, "params": params}

    def _close_session(self, run: Any, metrics: dict[str, float], figures: list[Path], files: list[Path],
                       status: str) -> None:
        writer = run["writer"]
        for key, value in metrics.items():
            writer.add_scalar(f"metrics/{key}", value, 0)
        if figures:
            from matplotlib.image import imread  # the task wrote its figures with matplotlib

            for path in figures:
                writer.add_image(path.stem, imread(path), 0, dataformats="HWC")
        writer.add_text("status", status, 0)
        self._hparams(writer, run["params"], {f"metrics/{k}": v for k, v in metrics.items()})
        writer.close()


# ----------------------------------------------------------------------------- MLflow

# MLflow allows letters, digits and "_-. :/" in metric, parameter and tag names.
_MLFLOW_NAME = re.compile(r"[^\w\-. :/]")
_MLFLOW_PARAM_CHARS = 6000  # MLflow's longest parameter value


def mlflow_uri(uri: str | os.PathLike | None) -> tuple[str | None, Path | None]:
    """``(tracking URI, artifact folder)`` for ``--mlflow``: a URI with a scheme (``sqlite:///``,
    ``http://``, ``file:``, ``databricks``) as it is; a plain folder as a local store in it
    (``FOLDER/mlflow.db`` and ``FOLDER/artifacts``); ``None``: MLflow's own default."""
    if uri is None:
        return None, None
    text = os.fspath(uri)
    if re.match(r"^[A-Za-z][\w+.-]*:", text) and not re.match(r"^[A-Za-z]:[\\/]", text):  # not C:\...
        return text, None
    folder = Path(text).resolve()
    return f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts"


class MLflowLogger(TrackingLogger):
    """Write each ``fit`` run to MLflow (an MLflow run per ``fit`` call, in ``experiment``).

    Args:
        tracking_uri: a folder (a local store there: ``mlflow.db`` and ``artifacts/``, no
            server), any MLflow tracking URI, or ``None`` for MLflow's default (the
            ``MLFLOW_TRACKING_URI`` variable, else ``sqlite:///mlflow.db`` here).
        experiment: the experiment's name (made if missing).
        config: hyperparameters, logged as the runs' parameters.
    """

    extra = "mlflow"

    def __init__(self, tracking_uri: str | os.PathLike | None = None, experiment: str = "pyro_lvm",
                 config: Mapping[str, Any] | None = None):
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise _missing("MLflowLogger", "mlflow-skinny", self.extra) from None
        self.tracking_uri, self.artifact_dir = mlflow_uri(tracking_uri)
        if (self.tracking_uri or "sqlite").startswith("sqlite"):
            try:
                import alembic  # noqa: F401
                import sqlalchemy  # noqa: F401
            except ImportError:
                raise _missing("MLflowLogger's local store", "sqlalchemy and alembic", self.extra) from None
        if not experiment:
            raise ValueError("experiment must be a non-empty name")
        super().__init__(config)
        self.experiment = experiment
        self._client_obj: Any = None
        self._experiment_id: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_client_obj": None}

    @property
    def client(self) -> Any:
        """The ``mlflow.MlflowClient`` of this process (a forked ddp worker makes its own)."""
        if self._client_obj is None or self._pid != os.getpid():
            from mlflow import MlflowClient

            self._client_obj, self._pid = MlflowClient(self.tracking_uri), os.getpid()
        return self._client_obj

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is not None:
                self._experiment_id = found.experiment_id
            else:
                where = (self.artifact_dir / self.experiment).as_uri() if self.artifact_dir else None
                self._experiment_id = self.client.create_experiment(self.experiment, artifact_location=where)
        return self._experiment_id

    def _create(self, name: str, params: dict[str, Any], parent: str | None) -> str:
        from mlflow.entities import Param

        tags = {"mlflow.parentRunId": parent} if parent else {}
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        if params:
            self.client.log_batch(run_id, params=[Param(_MLFLOW_NAME.sub("_", k), str(v)[:_MLFLOW_PARAM_CHARS])
                                                  for k, v in params.items()])
        return run_id

    def _log_metrics(self, run_id: str, step: int, scalars: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(_MLFLOW_NAME.sub("_", k), v, now, step) for k, v in scalars.items()]
        for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a call
            self.client.log_batch(run_id, metrics=metrics[start:start + 1000])

    def _open_run(self, name: str, params: dict[str, Any]) -> Any:
        return self._create(name, params, self._session)

    def _log(self, run: Any, step: int, scalars: dict[str, float], texts: dict[str, str]) -> None:
        self._log_metrics(run, step, scalars)
        for key, value in texts.items():  # a tag holds one value: the latest epoch's
            self.client.set_tag(run, _MLFLOW_NAME.sub("_", key), value[:_MLFLOW_PARAM_CHARS])

    def _close_run(self, run: Any, final: dict[str, float], status: str) -> None:
        self.client.set_terminated(run, status)

    def _open_session(self, name: str, params: dict[str, Any]) -> Any:
        return self._create(name, params, None)

    def _close_session(self, run: Any, metrics: dict[str, float], figures: list[Path], files: list[Path],
                       status: str) -> None:
        self._log_metrics(run, 0, metrics)
        for path in figures:
            self.client.log_artifact(run, str(path), "figures")
        for path in files:
            self.client.log_artifact(run, str(path))
        self.client.set_terminated(run, status)


# ----------------------------------------------------------------------------- sessions and the CLI

class Session:
    """Attach ``loggers`` to every ``fit`` call inside the ``with`` block and give the whole
    command one run of its own (``name``, ``config``); at the end it holds the final metrics
    of ``out/metrics.json``, the figures written under ``out`` during the block and the
    top-level JSON/text reports of ``out``.

        with Session([TensorBoardLogger("runs/tb")], "vae", config, out="runs/vae"):
            task.main(args)
    """

    def __init__(self, loggers: Sequence[TrackingLogger], name: str, config: Mapping[str, Any],
                 out: str | os.PathLike | None = None):
        self.loggers, self.name, self.config = list(loggers), name, dict(config)
        self.out = Path(out) if out is not None else None
        self._scope: Any = None
        self._start = 0.0

    def __enter__(self) -> "Session":
        self._start = time.time()
        if is_main_process():  # under torchrun only rank 0 writes
            for logger in self.loggers:
                logger.begin_session(self.name, self.config)
        self._scope = added_callbacks(*self.loggers)
        self._scope.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._scope.__exit__(exc_type, exc, tb)
        metrics: dict[str, Any] = {}
        figures: list[Path] = []
        files: list[Path] = []
        if self.out is not None and self.out.is_dir():
            report = self.out / "metrics.json"
            if report.is_file():
                metrics = json.loads(report.read_text())
            figures = _figures(self.out, self._start)
            files = sorted(p for p in self.out.iterdir() if p.suffix in (".json", ".txt") and p.is_file())
        for logger in self.loggers:
            logger.end_session(metrics, figures, files, failed=exc_type is not None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tensorboard DIR`` and ``--mlflow URI`` (for every ``pyro-lvm train`` task)."""
    group = parser.add_argument_group("experiment tracking")
    group.add_argument("--tensorboard", metavar="DIR", default=None,
                       help="also write the run to TensorBoard event files under DIR (pip install 'pyro_lvm[tensorboard]')")
    group.add_argument("--mlflow", metavar="URI", default=None,
                       help="also write the run to MLflow: a folder (a local store there) or a tracking URI "
                            "(pip install 'pyro_lvm[mlflow]')")


TRACKING_OPTIONS = ("tensorboard", "mlflow")


def session_from_args(args: argparse.Namespace, name: str) -> Session | None:
    """The :class:`Session` that ``--tensorboard``/``--mlflow`` ask for, or ``None``. The
    command's options (without these two) are the session's configuration."""
    loggers: list[TrackingLogger] = []
    config = {k: v for k, v in vars(args).items() if k not in TRACKING_OPTIONS and not callable(v)}
    if getattr(args, "tensorboard", None):
        loggers.append(TensorBoardLogger(args.tensorboard, config=config))
    if getattr(args, "mlflow", None):
        loggers.append(MLflowLogger(args.mlflow, experiment=name, config=config))
    if not loggers:
        return None
    # Every task writes under --out; the topic tasks default to runs/<task> when it is not given.
    out = getattr(args, "out", None) or Path("runs") / name
    return Session(loggers, name, config, out)


def _elbo_name(elbo: Any) -> str:
    """The objective's name; fit's default decides at the first step, so say what it chooses."""
    if isinstance(elbo, DefaultELBO) and elbo.inner is None:
        return "Trace_ELBO (TraceEnum_ELBO where sites are marked for enumeration)"
    return type(elbo.inner if isinstance(elbo, DefaultELBO) else elbo).__name__
