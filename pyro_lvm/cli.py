"""The ``pyro-lvm`` command.

    pyro-lvm demo                         train the VAE and autoencoder on the bundled digits
    pyro-lvm demo sentence                the sentence VAE showcase: samples, homotopies (minutes, offline)
    pyro-lvm train MODEL [options]        MODEL is a task name (pyro-lvm train --help lists them)
    pyro-lvm evaluate RUN                 log-likelihood, ELBO, KL of a trained run folder
    pyro-lvm sample RUN                   draw from the prior of a trained run
    pyro-lvm interpolate RUN              decode points between two inputs' latent codes
    pyro-lvm inspect MODEL                table of a model's variables (observed/latent, ...)

``train MODEL`` runs the same code as ``examples/MODEL.py`` (see :mod:`pyro_lvm.tasks`).
The verbs that act on a run folder read ``RUN/config.json`` to find the task that wrote it.
Extra verbs come from tasks that define ``add_<verb>_arguments`` and ``cli_<verb>``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from .tasks import TASKS, load_task

RUN_VERBS = ("evaluate", "sample", "interpolate")
# Verbs provided by task modules: verb -> task name.
EXTRA_VERBS = {"compare-estimators": "compare_estimators"}


def _run_task(run: str) -> Any:
    config = Path(run) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found: RUN must be a folder written by 'pyro-lvm train'")
    return load_task(json.loads(config.read_text())["task"])


def _summary(module: Any) -> str:
    """A task module's one-line summary: its docstring's first sentence, without "Task ``name``:"."""
    doc = " ".join((module.__doc__ or "").strip().split("\n\n")[0].split())
    return re.sub(r"^Task ``[\w-]+``:\s*", "", doc).split(". ")[0]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyro-lvm", description="Latent-variable models in Pyro.")
    verbs = parser.add_subparsers(dest="verb", required=True)

    demo = verbs.add_parser("demo", help="train the VAE and autoencoder on scikit-learn's digits (offline); "
                                         "'demo sentence': the sentence VAE showcase")
    load_task("vae").add_arguments(demo)
    showcases = demo.add_subparsers(dest="showcase", metavar="{sentence}")
    try:
        sentence_task = load_task("sentence_vae")
    except ImportError as e:  # an optional dependency is missing: say so when it is used
        showcases.add_parser("sentence", help=f"(unavailable: {e})")
    else:
        sentence = showcases.add_parser("sentence", help=_summary(sentence_task),
                                        description=sentence_task.SHOWCASE)
        sentence_task.add_arguments(sentence)
        sentence.set_defaults(out="runs/demo_sentence")

    train = verbs.add_parser("train", help="train a model: pyro-lvm train MODEL --help")
    models = train.add_subparsers(dest="task", required=True, metavar="MODEL")
    for name in sorted(TASKS):
        aliases = [name.replace("_", "-")] if "_" in name else []  # train ss-vae == train ss_vae
        try:
            module = load_task(name)
        except ImportError as e:  # an optional dependency is missing: say so when it is used
            models.add_parser(name, aliases=aliases, help=f"(unavailable: {e})")
            continue
        sub = models.add_parser(name, aliases=aliases, help=_summary(module))
        module.add_arguments(sub)

    for verb in RUN_VERBS:
        sub = verbs.add_parser(verb, help=f"{verb} a trained run folder")
        sub.add_argument("run", help="run folder written by 'pyro-lvm train'")
        sub.add_argument("--seed", type=int, default=0)
        if verb == "evaluate":
            sub.add_argument("--samples", type=int, default=1000, help="importance samples per datapoint")
            sub.add_argument("--split", default="test", choices=["train", "valid", "test"])
        if verb == "sample":
            sub.add_argument("-n", "--num", type=int, default=32)
            sub.add_argument("--out", default=None, help="PNG path (default RUN/cli_samples.png)")
        if verb == "interpolate":
            sub.add_argument("--a", type=int, default=0, help="index of the first test input")
            sub.add_argument("--b", type=int, default=1, help="index of the second test input")
            sub.add_argument("--sentences", nargs=2, default=None, help="two sentences (text models)")
            sub.add_argument("--steps", type=int, default=8)
            sub.add_argument("--out", default=None, help="PNG path (image models)")

    from .tasks import inspect_task

    inspect = verbs.add_parser("inspect", help="table of a model's variables (observed/latent, random/deterministic, guide)")
    inspect_task.add_inspect_arguments(inspect)

    for verb, task in EXTRA_VERBS.items():
        if task not in TASKS:
            continue
        module = load_task(task)
        sub = verbs.add_parser(verb, help=(module.__doc__ or "").strip().splitlines()[0])
        getattr(module, f"add_{verb.replace('-', '_')}_arguments")(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.verb == "demo" and getattr(args, "showcase", None) == "sentence":
            task = load_task("sentence_vae")
            print(task.report(task.main(args)), end="")  # the showcase prints its report, not JSON
            return 0
        if args.verb == "demo":
            result = load_task("vae").main(args)
        elif args.verb == "train":
            result = load_task(args.task).main(args)
        elif args.verb == "inspect":
            from .tasks import inspect_task

            result = inspect_task.cli_inspect(args)
        elif args.verb in RUN_VERBS:
            result = getattr(_run_task(args.run), args.verb)(args)
        else:
            result = getattr(load_task(EXTRA_VERBS[args.verb]), f"cli_{args.verb.replace('-', '_')}")(args)
    except (ValueError, FileNotFoundError, ImportError, NotImplementedError) as e:
        print(f"pyro-lvm: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
