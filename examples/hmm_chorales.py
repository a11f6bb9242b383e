"""Pyro's HMM family over piano rolls of Bach chorales: exact log-likelihood, Viterbi state path, transition matrix.

    python examples/hmm_chorales.py                          # music21's chorales (offline; first parse ~1 min, then cached)
    python examples/hmm_chorales.py --limit 12 --iterations 3  # seconds
    python examples/hmm_chorales.py --data-path ../shared/data/jsb_chorales.pickle --protocol used-keys
    python examples/hmm_chorales.py --emission autoregressive             # arHMM, Baum-Welch
    python examples/hmm_chorales.py --chain fhmm --sizes 4 4 --iterations 100 --lr 0.05   # factorial HMM, Adam
    python examples/hmm_chorales.py --chain pfhmm --sizes 4 4 --iterations 100 --lr 0.05  # partially factorial
    python examples/hmm_chorales.py --chain 2hmm --raftery --iterations 100 --lr 0.05     # second order
    python examples/hmm_chorales.py --emission neural --hidden 48 --within-frame --iterations 200 --lr 0.02 --patience 25

Writes metrics.json (NLL in nats per time step on train/valid/test, seconds per epoch),
viterbi_roll.png and transition_matrix.png under --out. Same code as `pyro-lvm train hmm_chorales`."""

import argparse

from pyro_lvm.tasks import hmm_chorales


def main(args: argparse.Namespace) -> dict:
    return hmm_chorales.main(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    hmm_chorales.add_arguments(parser)
    main(parser.parse_args())
