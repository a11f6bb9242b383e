"""Runnable tasks: the programs behind the ``pyro-lvm train`` commands.

Each task module defines:

* ``add_arguments(parser)``: its argparse options (with small, fast defaults where possible);
* ``main(args) -> dict``: trains/evaluates, writes its outputs under ``args.out`` and returns
  the metrics it wrote to ``args.out/metrics.json``.

``TASKS`` maps a name used on the command line (``pyro-lvm train NAME``) to its module;
``-`` may stand for ``_``. A task is the full-featured program of its model; the matching
``examples/*.py`` is a short program on the public API that a user reads top to bottom, and
what both need is a public library function they both call.
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


def run_options(args) -> dict:
    """The options of a task's command line as JSON-ready ``config.json`` entries (without
    the command's own bookkeeping: verb, output folder, resume/overwrite, progress)."""
    skip = {"verb", "out", "resume", "overwrite", "progress", "func", "threads"}
    return {k: (str(v) if not isinstance(v, (str, int, float, bool, list, type(None))) else v)
            for k, v in vars(args).items() if k not in skip}
