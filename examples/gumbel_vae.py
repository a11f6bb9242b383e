"""Categorical VAE (N x K categorical latents) with a chosen gradient estimator.

    python examples/gumbel_vae.py                               # digits, offline, ~1 minute
    python examples/gumbel_vae.py --estimator score-function    # or straight-through, gumbel-concrete, ...
    python examples/gumbel_vae.py --dataset binarized-mnist --data-path DATA/binarized_mnist \
        --hidden 512 256 --anneal-rate 1.5e-4 --epochs 16

Writes metrics.json, checkpoints and figures under --out. Same code as `pyro-lvm train gumbel_vae`.
"""

import argparse

from pyro_lvm.tasks import gumbel_vae


def main(args: argparse.Namespace) -> dict:
    return gumbel_vae.main(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gumbel_vae.add_arguments(parser)
    main(parser.parse_args())
