"""Semi-supervised VAE M2 with few labels: the class is enumerated, sampled or relaxed.

    python examples/ss_vae.py                                   # digits, 100 labels, enumerated y
    python examples/ss_vae.py --y-estimator score-function --aux-weight 0

Writes metrics.json (test accuracy), checkpoints and a figure under --out.
Same code as `pyro-lvm train ss_vae`.
"""

import argparse

from pyro_lvm.tasks import ss_vae


def main(args: argparse.Namespace) -> dict:
    return ss_vae.main(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ss_vae.add_arguments(parser)
    main(parser.parse_args())
