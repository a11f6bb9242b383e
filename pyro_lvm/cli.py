"""The ``pyro-lvm`` command.

    pyro-lvm demo                         train the VAE and autoencoder on the bundled digits
    pyro-lvm demo sentence                the sentence VAE showcase: samples, homotopies (minutes, offline)
    pyro-lvm train MODEL [options]        MODEL is a task name (pyro-lvm train --help lists them)
    pyro-lvm evaluate RUN                 log-likelihood, ELBO, KL of a trained run folder
    pyro-lvm sample RUN                   draw from the prior of a trained run
    pyro-lvm interpolate RUN              decode points between two inputs' latent codes
    pyro-lvm inspect MODEL                table of a model's variables (observed/latent, ...)
    pyro-lvm upgrade RUN                  rewrite a run's format-1 checkpoints in the current format
    pyro-lvm compare RUN [RUN ...]        configurations, final metrics and learning curves of runs
    pyro-lvm reproduce NAME               re-run a published figure pyro_lvm tracks (--list)

``train MODEL`` runs the task of that name in :data:`pyro_lvm.tasks.REGISTRY` (its full program;
``examples/MODEL.py``, where there is one, is the short readable program of the same model). The verbs
that act on a run folder read ``RUN/config.json`` to find the task that wrote it; a task that
has no such verb says in ``NOT_APPLICABLE`` why it does not apply.

Every verb is one entry of :data:`VERBS`: a function adding its options to its parser and a
function running it, which returns a dict (printed as JSON) or text (printed as it is). Add a
verb by adding an entry.

The error contract: every failure prints one ``pyro-lvm: error: ...`` line on stderr (no
traceback; set ``PYRO_LVM_TRACEBACK=1`` to see one) and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, Sequence

from .training import tracking
from .tasks import TASKS, add_threads_argument, canonical, load_task

PROG = "pyro-lvm"
RUN_VERBS = ("evaluate", "sample", "interpolate")


class CommandError(Exception):
    """A refusal of the command line itself (printed as ``pyro-lvm: error: ...``)."""


def _default_help(args: tuple, kwargs: dict) -> dict:
    """An option's keywords with a help text: ArgumentDefaultsHelpFormatter shows the default
    only of options that have one."""
    if args and str(args[0]).startswith("-") and not kwargs.get("help") and kwargs.get("help") != argparse.SUPPRESS:
        kwargs = {**kwargs, "help": "(default: %(default)s)"}
    return kwargs


class Parser(argparse.ArgumentParser):
    """``argparse`` with the project's conventions: defaults shown in ``--help`` for every
    option, and usage errors in the ``pyro-lvm: error: ...`` form (exit status 2)."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        return super().add_argument(*args, **_default_help(args, kwargs))

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        group = super().add_argument_group(*args, **kwargs)
        add = group.add_argument
        group.add_argument = lambda *a, **kw: add(*a, **_default_help(a, kw))  # type: ignore[method-assign]
        return group

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        where = self.prog[len(PROG):].strip()
        self.exit(2, f"{PROG}: error: {where + ': ' if where else ''}{message}\n")


class _DescribedDefaults(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in ``--help`` and the description printed as written (the tool verbs' docstrings)."""


def summary(module: Any, name: str | None = None) -> str:
    """A task module's one-line summary: the first sentence of its docstring, without the
    ``Task ``name``:`` prefix and reStructuredText markup."""
    doc = " ".join((module.__doc__ or "").strip().split("\n\n")[0].split())
    doc = re.sub(r"^Tasks? ``[\w-]+``(?: and ``[\w-]+``)?:\s*", "", doc)
    doc = re.sub(r":\w+:`~?([^`]+)`", r"\1", doc).replace("``", "")
    # A sentence ends at ". " unless the dot closes an abbreviation such as "et al." or "e.g.".
    match = re.search(r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)(?<!\bvs)\.(\s|$)", doc)
    return (doc[:match.start()] if match else doc).strip()


def _not_applicable(task: str, module: Any, verb: str) -> str:
    reason = getattr(module, "NOT_APPLICABLE", {}).get(verb)
    return f"'{verb}' does not apply to a {task} run" + (f": {reason}" if reason else "")


def _task_options(parser: argparse.ArgumentParser, module: Any) -> None:
    """A task's own options, then the ones every task run shares."""
    module.add_arguments(parser)
    tracking.add_arguments(parser)
    add_threads_argument(parser)


def _demo_arguments(demo: argparse.ArgumentParser) -> None:
    _task_options(demo, load_task("vae"))
    showcases = demo.add_subparsers(dest="showcase", metavar="{sentence}", parser_class=Parser)
    try:
        sentence_task = load_task("sentence_vae")
    except ImportError as e:  # an optional dependency is missing: say so when it is used
        showcases.add_parser("sentence", help=f"(unavailable: {e})")
        return
    sentence = showcases.add_parser("sentence", help=summary(sentence_task), description=sentence_task.SHOWCASE)
    _task_options(sentence, sentence_task)
    sentence.set_defaults(out="runs/demo_sentence")


def _train_arguments(train: argparse.ArgumentParser) -> None:
    models = train.add_subparsers(dest="task", required=True, metavar="MODEL", parser_class=Parser)
    for name in sorted(TASKS):
        aliases = [name.replace("_", "-")] if "_" in name else []  # train ss-vae == train ss_vae
        try:
            module = load_task(name)
        except ImportError as e:  # an optional dependency is missing: say so when it is used
            models.add_parser(name, aliases=aliases, help=f"(unavailable: {e})")
            continue
        _task_options(models.add_parser(name, aliases=aliases, help=summary(module), description=summary(module)),
                      module)


def _run_folder_arguments(sub: argparse.ArgumentParser) -> None:
    from . import validation

    sub.add_argument("run", help="run folder written by 'pyro-lvm train'")
    sub.add_argument("--seed", type=validation.seed_rule.cli, default=0, help="seed of every random draw")


def _evaluate_arguments(sub: argparse.ArgumentParser) -> None:
    from . import validation

    _run_folder_arguments(sub)
    sub.add_argument("--samples", type=validation.positive_int.cli, default=1000,
                     help="importance samples per datapoint (the ELBO uses one draw; see elbo_samples)")
    sub.add_argument("--split", default=None, choices=["train", "valid", "test"],
                     help="default: the task's held-out split (test; valid for a pair run, which holds out one part)")


def _sample_arguments(sub: argparse.ArgumentParser) -> None:
    from . import validation

    _run_folder_arguments(sub)
    sub.add_argument("-n", "--num", type=validation.positive_int.cli, default=32)
    sub.add_argument("--out", default=None, help="output path (default: a file in RUN)")


def _interpolate_arguments(sub: argparse.ArgumentParser) -> None:
    from . import validation

    _run_folder_arguments(sub)
    sub.add_argument("--a", type=validation.non_negative_int.cli, default=0, help="index of the first test input")
    sub.add_argument("--b", type=validation.non_negative_int.cli, default=1, help="index of the second test input")
    sub.add_argument("--sentences", nargs=2, default=None, help="two sentences (text models only)")
    sub.add_argument("--steps", type=validation.Integer(2).cli, default=8)
    sub.add_argument("--out", default=None, help="PNG path (image models)")


def _upgrade_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("run", help="run folder (every *.pt below it is checked)")


@dataclass(frozen=True)
class Verb:
    """One ``pyro-lvm`` verb.

    Attributes:
        arguments: ``"module:function"`` adding the verb's options to its parser.
        run: ``"module:function"`` running it on the parsed arguments; it returns a dict
            (printed as JSON) or text (printed as it is).
        help: the line in ``pyro-lvm --help``; None: the first sentence of ``run``'s module.
        described: show ``run``'s module docstring as the verb's ``--help`` description.
    """

    arguments: str
    run: str
    help: str | None = None
    described: bool = False

    def function(self, which: str) -> Callable:
        module, name = getattr(self, which).split(":")
        return getattr(importlib.import_module(module), name)


VERBS: dict[str, Verb] = {
    "demo": Verb("pyro_lvm.cli:_demo_arguments", "pyro_lvm.cli:_demo",
                 "train the VAE and autoencoder on scikit-learn's digits (offline); 'demo sentence': the sentence VAE "
                 "showcase"),
    "train": Verb("pyro_lvm.cli:_train_arguments", "pyro_lvm.cli:_train",
                  "train a model (pyro-lvm train MODEL --help) or your own pair (pyro-lvm train FILE.py:FUNCTION)"),
    "evaluate": Verb("pyro_lvm.cli:_evaluate_arguments", "pyro_lvm.cli:_run_verb", "evaluate a trained run folder"),
    "sample": Verb("pyro_lvm.cli:_sample_arguments", "pyro_lvm.cli:_run_verb", "sample a trained run folder"),
    "interpolate": Verb("pyro_lvm.cli:_interpolate_arguments", "pyro_lvm.cli:_run_verb",
                        "interpolate a trained run folder"),
    "inspect": Verb("pyro_lvm.tasks.inspect_task:add_inspect_arguments", "pyro_lvm.tasks.inspect_task:cli_inspect",
                    "table of a model's variables (observed/latent, random/deterministic, guide)"),
    "upgrade": Verb("pyro_lvm.cli:_upgrade_arguments", "pyro_lvm.cli:_upgrade",
                    "rewrite a run folder's format-1 checkpoints in the current safe format"),
    "compare-estimators": Verb("pyro_lvm.cli:_compare_estimators_arguments",
                               "pyro_lvm.tasks.compare_estimators:cli_compare_estimators"),
    "compare": Verb("pyro_lvm.evaluation.compare_runs:add_arguments", "pyro_lvm.evaluation.compare_runs:run",
                    described=True),
    "reproduce": Verb("pyro_lvm.reproduce:add_arguments", "pyro_lvm.reproduce:run", described=True),
}


def _compare_estimators_arguments(sub: argparse.ArgumentParser) -> None:
    load_task("compare_estimators").add_compare_estimators_arguments(sub)
    add_threads_argument(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="Latent-variable models in Pyro.")
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=Parser)
    for name, verb in VERBS.items():
        module = importlib.import_module(verb.run.split(":")[0])
        help_line = verb.help or re.sub(r"^``[^`]*``:\s*", "", summary(module))
        extra = {"description": module.__doc__, "formatter_class": _DescribedDefaults} if verb.described else {}
        verb.function("arguments")(verbs.add_parser(name, help=help_line, **extra))
    return parser


def _demo(args: argparse.Namespace) -> Any:
    if getattr(args, "showcase", None) == "sentence":
        task = load_task("sentence_vae")
        return task.report(_tracked(args, "sentence_vae", task.main))  # a report, not JSON
    return _tracked(args, "demo", load_task("vae").main)


def _train(args: argparse.Namespace) -> Any:
    return _tracked(args, canonical(args.task), load_task(args.task).main)


def _run_verb(args: argparse.Namespace) -> Any:
    from .checkpoint import set_seed
    from .training.runs import read_config

    config = read_config(args.run)
    task = config["task"]
    try:
        module = load_task(task)
    except ValueError:
        raise CommandError(f"{Path(args.run) / 'config.json'} names the task {task!r}, which this pyro-lvm does not "
                           f"know (known: {', '.join(sorted(TASKS))})") from None
    fn = getattr(module, args.verb, None)
    if fn is None:
        raise CommandError(_not_applicable(task, module, args.verb))
    if getattr(args, "split", "") is None:
        args.split = getattr(module, "HELD_OUT_SPLIT", "test")
    set_seed(args.seed)  # one place that honours --seed for every task's verb
    return fn(args)


def _upgrade(args: argparse.Namespace) -> dict[str, Any]:
    from .checkpoint import upgrade_checkpoint
    from .training.runs import locked

    run = Path(args.run)
    if not run.is_dir():
        raise FileNotFoundError(f"{run} is not a folder")
    with locked(run):
        upgraded = [str(p) for p in sorted(run.rglob("*.pt")) if upgrade_checkpoint(p)]
    return {"upgraded": upgraded}


def _message(e: BaseException) -> str:
    """One line for an exception: its own words, the file where the OS names one."""
    if isinstance(e, OSError) and not isinstance(e, FileNotFoundError) and e.filename:
        return f"{e.filename}: {e.strerror or e}"
    if isinstance(e, KeyError):
        return f"missing key {e}"
    text = str(e).strip() or type(e).__name__
    if "Traceback (most recent call last)" in text:  # e.g. a ddp rank's failure: keep its own words only
        text = text[:text.index("Traceback (most recent call last)")].strip() + " (set PYRO_LVM_TRACEBACK=1 for details)"
    return text


# Errors in what the user gave (files, options, data, a diverging run) rather than bugs.
_EXPECTED = (ValueError, TypeError, OSError, ImportError, NotImplementedError, ArithmeticError, CommandError,
             KeyError, RuntimeError)


def _tracked(args: argparse.Namespace, name: str, run: Any) -> Any:
    """``run(args)`` inside the ``--tensorboard``/``--mlflow`` session it asks for, if any."""
    session = tracking.session_from_args(args, name)
    if session is None:
        return run(args)
    with session:
        return run(args)


def _pair_shorthand(argv: Sequence[str]) -> list[str]:
    """``train FILE.py:FUNCTION ...`` is ``train pair --pair FILE.py:FUNCTION ...``."""
    argv = list(argv)
    if len(argv) > 1 and argv[0] == "train" and ".py:" in argv[1]:
        return ["train", "pair", "--pair", *argv[1:]]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(_pair_shorthand(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # --help (0) or a usage error (2, already printed)
        return int(e.code or 0)
    if getattr(args, "threads", None):  # the one place the command sets torch's thread count
        import torch

        torch.set_num_threads(args.threads)
    try:
        result = VERBS[args.verb].function("run")(args)
    except KeyboardInterrupt:
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the contract: one line and status 2, never a traceback
        if os.environ.get("PYRO_LVM_TRACEBACK"):
            raise
        line = _message(e)
        if not isinstance(e, _EXPECTED):
            line = f"{type(e).__name__}: {line} (unexpected; set PYRO_LVM_TRACEBACK=1 to see where it happened)"
        print(f"{PROG}: error: {line}", file=sys.stderr)
        return 2
    print(result if isinstance(result, str) else json.dumps(result, indent=2, default=str),
          end="" if isinstance(result, str) and result.endswith("\n") else "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
