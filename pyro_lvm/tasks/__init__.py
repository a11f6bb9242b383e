"""Runnable tasks (the programs behind the ``pyro-lvm train`` commands), and the one registry
of the names the ``pyro-lvm`` command knows.

Each task module defines:

* ``add_arguments(parser)``: its argparse options (with small, fast defaults where possible);
* ``main(args) -> dict``: trains/evaluates, writes its outputs under ``args.out`` and returns
  the metrics it wrote to ``args.out/metrics.json``.

:data:`REGISTRY` maps each name to what it stands for: the task behind ``pyro-lvm train NAME``,
the tiny example pair behind ``pyro-lvm inspect NAME``, or both. A model's name is the one its
class, module, task, command and docs use (``categorical_vae``: ``CategoricalVAE`` in
``models/categorical_vae.py``); on the command line ``-`` may stand for ``_``. Add a model or a
task by adding an entry.

Every ``main`` opens the same way, after checking its own options: :func:`begin` (seed, the
run's ``config.json`` entries), then reads its data and builds its pair, then works inside
``with run_folder(args, config) as out:``. A task is the full-featured program of its model
(every option, run folders, resume); the matching ``examples/*.py`` is a short program on the
public API that a user reads top to bottom, and what both need is a public library function
they both call.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable


@dataclass(frozen=True)
class Entry:
    """What a name stands for.

    Attributes:
        task: the module behind ``pyro-lvm train NAME`` (``add_arguments`` + ``main``), or None.
        example: ``"module:function"``, a function of no arguments returning ``(pair, batch)``
            or ``(pair, batch, inspect options)`` for ``pyro-lvm inspect NAME``, or None.
    """

    task: str | None = None
    example: str | None = None


_EXAMPLES = "pyro_lvm.tasks.inspect_task"
REGISTRY: dict[str, Entry] = {
    "vae": Entry("pyro_lvm.tasks.vae", f"{_EXAMPLES}:vae_example"),
    "autoencoder": Entry(None, f"{_EXAMPLES}:autoencoder_example"),  # trained next to the VAE by `train vae`
    "ppca": Entry(None, f"{_EXAMPLES}:ppca_example"),
    "attention_seq2seq": Entry(None, f"{_EXAMPLES}:attention_seq2seq_example"),
    "categorical_mixture": Entry(None, f"{_EXAMPLES}:categorical_mixture_example"),
    "categorical_vae": Entry("pyro_lvm.tasks.categorical_vae", f"{_EXAMPLES}:categorical_vae_example"),
    "ss_vae": Entry("pyro_lvm.tasks.ss_vae", f"{_EXAMPLES}:ss_vae_example"),
    "sentence_vae": Entry("pyro_lvm.tasks.sentence_vae", f"{_EXAMPLES}:sentence_vae_example"),
    "sequence_vae": Entry(None, f"{_EXAMPLES}:sequence_vae_example"),
    "symbol_sequences": Entry("pyro_lvm.tasks.symbol_sequences"),
    "hmm": Entry(None, f"{_EXAMPLES}:hmm_example"),
    "hmm_chorales": Entry("pyro_lvm.tasks.hmm_chorales"),
    "pos_induction": Entry("pyro_lvm.tasks.pos_induction"),
    "prodlda": Entry("pyro_lvm.tasks.topic", f"{_EXAMPLES}:prodlda_example"),
    "lda": Entry("pyro_lvm.tasks.topic", f"{_EXAMPLES}:lda_example"),
    "collapse": Entry("pyro_lvm.tasks.collapse"),
    "compare_estimators": Entry("pyro_lvm.tasks.compare_estimators"),
    "pair": Entry("pyro_lvm.tasks.pair"),
}
# The names that have a task (``pyro-lvm train NAME``) or an example (``pyro-lvm inspect NAME``).
TASKS: dict[str, str] = {name: e.task for name, e in REGISTRY.items() if e.task}
INSPECTABLE: tuple[str, ...] = tuple(name for name, e in REGISTRY.items() if e.example)
# Names of earlier versions: their run folders' config.json and their users' commands still work.
RENAMED = {"gumbel_vae": "categorical_vae", "ae": "autoencoder", "mixture": "categorical_mixture", "ssvae": "ss_vae",
           "seq2seq_quiz": "attention_seq2seq"}


def canonical(name: str) -> str:
    """The registry's spelling of a name given on the command line or in an old run folder."""
    name = name.replace("-", "_")
    return RENAMED.get(name, name)


def load_task(name: str) -> ModuleType:
    """Import the module behind a task name, or raise ``ValueError`` listing the known names."""
    entry = REGISTRY.get(canonical(name))
    if entry is None or entry.task is None:
        raise ValueError(f"unknown model/task {name!r}; known: {', '.join(sorted(TASKS))}")
    return importlib.import_module(entry.task)


def load_example(name: str) -> Callable[[], tuple[Any, ...]]:
    """The example builder behind ``pyro-lvm inspect NAME``, or ``ValueError`` listing the names."""
    entry = REGISTRY.get(canonical(name))
    if entry is None or entry.example is None:
        raise ValueError(f"no inspectable model named {name!r}; known: {', '.join(INSPECTABLE)}")
    module, function = entry.example.split(":")
    return getattr(importlib.import_module(module), function)


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
    """:func:`pyro_lvm.training.runs.start_run` on ``out`` (default ``args.out``) with the task's
    ``--resume`` (where its parser has one; else the run cannot be continued) and ``--overwrite``:
    a context manager yielding the claimed folder."""
    from ..training import runs

    return runs.start_run(args.out if out is None else out, config, resume=getattr(args, "resume", None),
                          overwrite=getattr(args, "overwrite", False), main_process=main_process)


def run_options(args) -> dict:
    """The options of a task's command line as JSON-ready ``config.json`` entries (without
    the command's own bookkeeping: verb, output folder, resume/overwrite, progress)."""
    skip = {"verb", "out", "resume", "overwrite", "progress", "func", "threads"}
    return {k: (str(v) if not isinstance(v, (str, int, float, bool, list, type(None))) else v)
            for k, v in vars(args).items() if k not in skip}
