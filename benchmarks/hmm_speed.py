"""HMM speed: loss + gradient over the whole JSB training set, by inference path and state count.

    python benchmarks/hmm_speed.py --data DATA            # ~3 minutes, one thread

The fast path, the pyro.markov path, Pyro's DiscreteHMM, a hand-written PyTorch forward (the
baseline of the ratios) and hmmlearn's C E-step on the same parameters and data, interleaved
rounds, process CPU time; then the fast path's scaling in sequence length. The code is
pyro_lvm/reproduce/hmm_speed.py, shared with `pyro-lvm reproduce hmm-speed`.
Writes ``benchmarks/results/hmm_speed.json``.
"""

import sys
from pathlib import Path

from pyro_lvm.checkpoint import atomic_json_save
from pyro_lvm.reproduce.hmm_speed import parser, run

RESULTS = Path(__file__).resolve().parent / "results"


def main(args) -> dict:
    result = {"command": "python " + " ".join(sys.argv), **run(args)}
    atomic_json_save(result, RESULTS / "hmm_speed.json")
    print("wrote", RESULTS / "hmm_speed.json")
    return result


if __name__ == "__main__":
    main(parser().parse_args())
