"""Runnable tasks: the full-featured program behind each ``pyro-lvm train`` command.

Each task module defines:

* ``add_arguments(parser)``: its argparse options (with small, fast defaults where possible);
* ``main(args) -> dict``: trains/evaluates, writes its outputs under ``args.out`` and returns
  the metrics it wrote to ``args.out/metrics.json``.

``TASKS`` maps a name used on the command line (``pyro-lvm train NAME``) to its module; the
model's example script, where it has one, has the same name (``examples/NAME.py``), and ``-`` may
stand for ``_``.
Every ``main`` opens the same way, after checking its own options: :func:`begin` (seed, the
run's ``config.json`` entries), then reads its data and builds its pair, then works inside
``with run_folder(args, config) as out:``. The scripts in ``examples/`` are the short readable
programs; these tasks are the full-featured ones (every option, run folders, resume).
"""

from __future__ import annotations

import importlib
from types import ModuleType

TASKS: dict[str, str] = {
    "vae": "pyro_lvm.tasks.vae",
    "sentence_vae": "pyro_lvm.tasks.sentence_vae",
    "symbol_sequences": "pyro_lvm.tasks.symbol_sequences",
    "gumbel_vae": "pyro_lvm.tasks.gumbel_vae",
    "ss_vae": "pyro_lvm.tasks.ss_vae",
    "compare_estimators": "pyro_lvm.tasks.compare_estimators",
    "hmm_chorales": "pyro_lvm.tasks.hmm_chorales",
    "pos_induction": "pyro_lvm.tasks.pos_induction",
    "collapse": "pyro_lvm.tasks.collapse",
    "prodlda": "pyro_lvm.tasks.topic",
    "lda": "pyro_lvm.tasks.topic",
    "pair": "pyro_lvm.tasks.pair",
}


def load_task(name: str) -> ModuleType:
    """Import the module behind a task name, or raise ``ValueError`` listing the known names."""
    name = name.replace("-", "_")
    if name not in TASKS:
        raise ValueError(f"unknown model/task {name!r}; known: {', '.join(sorted(TASKS))}")
    return importlib.import_module(TASKS[name])


def add_threads_argument(parser) -> None:
    """``--threads``, which the ``pyro-lvm`` entry point applies once (``torch.set_num_threads``)
    before it runs a task: tasks leave the process-wide thread count to their caller."""
    from ..validation import positive_int

    parser.add_argument("--threads", type=positive_int.cli, default=1,
                        help="torch CPU threads (one is fastest for these small networks and on shared cores, "
                             "where more threads mostly spin; raise it for large models on a machine of your own)")


def begin(args, task: str, config: dict | None = None, **entries) -> dict:
    """The task prologue, called once its options are checked: seed every generator from
    ``args.seed`` (:func:`pyro_lvm.set_seed`) and return the run's ``config.json`` entries:
    ``{"task": task, **config}`` for a task that names its own, else :func:`run_options` and
    ``"task"``; ``entries`` are added last."""
    from ..checkpoint import set_seed

    set_seed(args.seed)
    base = {**run_options(args), "task": task} if config is None else {"task": task, **config}
    return {**base, **entries}


def run_folder(args, config: dict, out=None, main_process: bool = True):
    """:func:`pyro_lvm.runs.start_run` on ``out`` (default ``args.out``) with the task's
    ``--resume`` (where its parser has one; else the run cannot be continued) and ``--overwrite``:
    a context manager yielding the claimed folder."""
    from .. import runs

    return runs.start_run(args.out if out is None else out, config, resume=getattr(args, "resume", None),
                          overwrite=getattr(args, "overwrite", False), main_process=main_process)


def run_options(args) -> dict:
    """The options of a task's command line as JSON-ready ``config.json`` entries (without
    the command's own bookkeeping: verb, output folder, resume/overwrite, progress)."""
    skip = {"verb", "out", "resume", "overwrite", "progress", "func", "threads"}
    return {k: (str(v) if not isinstance(v, (str, int, float, bool, list, type(None))) else v)
            for k, v in vars(args).items() if k not in skip}
