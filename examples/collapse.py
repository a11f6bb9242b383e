"""Posterior collapse on synthetic LSTM sequences: plain VAE vs KL annealing, free bits,
aggressive encoder training (one table of ELBO, NLL, KL, MI, active units).

    python examples/collapse.py                          # all methods, ~5 minutes on one core
    python examples/collapse.py --methods vae free-bits --epochs 10

Same code as `pyro-lvm train collapse`; see docs/posterior_collapse.md.
"""

import argparse

from pyro_lvm.tasks import collapse


def main(args: argparse.Namespace) -> dict:
    return collapse.main(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    collapse.add_arguments(parser)
    main(parser.parse_args())
