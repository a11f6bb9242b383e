"""HMM over 88-key piano rolls of Bach chorales: exact log-likelihood, Viterbi state path, transition matrix.

    python examples/hmm_chorales.py                          # music21's chorales (offline; first parse ~1 min, then cached)
    python examples/hmm_chorales.py --limit 12 --iterations 3  # seconds
    python examples/hmm_chorales.py --data-path ../shared/data/jsb_chorales.pickle --protocol used-keys
    python examples/hmm_chorales.py --emission neural --iterations 100 --lr 0.03

Writes metrics.json (NLL in nats per time step on train/valid/test), viterbi_roll.png and
transition_matrix.png under --out. Same code as `pyro-lvm train hmm_chorales`."""

import argparse

from pyro_lvm.tasks import hmm_chorales


def main(args: argparse.Namespace) -> dict:
    return hmm_chorales.main(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    hmm_chorales.add_arguments(parser)
    main(parser.parse_args())
