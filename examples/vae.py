"""Gaussian VAE and a deterministic autoencoder with the same networks, side by side.

    python examples/vae.py                      # scikit-learn digits, offline, ~1 minute
    python examples/vae.py --dataset binarized-mnist --data-path DATA/binarized_mnist \
        --z-dim 20 --hidden 400 --batch-size 128 --lr 1e-3 --epochs 50

Writes metrics.json, checkpoints and figures (reconstructions, prior samples, VAE-vs-AE
interpolation, training curves) under --out. Same code as `pyro-lvm train vae`.
"""

import argparse

from pyro_lvm.tasks import vae


def main(args: argparse.Namespace) -> dict:
    return vae.main(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    vae.add_arguments(parser)
    main(parser.parse_args())
