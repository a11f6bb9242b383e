"""Gradient estimators for discrete latents: variance, bias, speed.

Part 1: the categorical mixture where enumeration gives the exact gradient (variance, bias
against exact with its interval, CPU time, against a hand-written exact gradient). Part 2:
Jang et al. (2017, sec. 4.3)'s speed claim, one M2 step with the label enumerated against one
Gumbel-softmax sample, K = 10 and 100, against a hand-written enumerated step. The code is
pyro_lvm/reproduce/estimator_variance.py, shared with `pyro-lvm reproduce estimator-variance`.

    python benchmarks/estimator_variance.py          # ~2 CPU-minutes on one core
    python benchmarks/estimator_variance.py --parts mixture --classes 10 --curve-steps 0 \
        --estimators enumerate score-function rloo vimco arm disarm straight-through gumbel-rao rebar relax \
        --out benchmarks/results/estimator_variance_zoo.json     # the unbiased estimators and Gumbel-Rao

Writes ``benchmarks/results/estimator_variance.json`` (after each part) and plots under
``benchmarks/results/estimator_variance/``.
"""

import sys
from pathlib import Path

from pyro_lvm.checkpoint import atomic_json_save
from pyro_lvm.reproduce.estimator_variance import parser, run


def main(args) -> dict:
    command = {"command": "python " + " ".join(sys.argv)}
    result = {**run(args, plot_dir=Path(args.out).with_suffix(""),
                    save=lambda partial: atomic_json_save({**partial, **command}, args.out)), **command}
    atomic_json_save(result, args.out)
    return result


if __name__ == "__main__":
    main(parser().parse_args())
