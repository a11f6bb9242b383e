"""Quality benchmark: Gaussian VAE (784-400-20, Bernoulli) on statically binarized MNIST.

Trains with fit() for a CPU-time budget, keeps the epoch with the best validation ELBO, then
estimates log p(x) on the validation split by importance sampling with K samples (the IWAE
bound; K=5000 by default). Writes benchmarks/results/vae_mnist_quality.json with the curve.

    python benchmarks/vae_mnist_quality.py --data DATA/binarized_mnist --budget-minutes 30

The code is pyro_lvm.reproduce.vae_mnist, shared with `pyro-lvm reproduce vae-mnist`.
Published anchors (test split): about -89.9 nats for a 1-layer VAE (Rezende & Mohamed 2015,
as cited by Pythae); -86.76 (Burda et al. 2016, dynamically binarized, 3280 epochs).
"""

import json
import sys
from pathlib import Path

from pyro_lvm.reproduce.vae_mnist import parser, run


def main(args) -> dict:
    result = {**run(args), "command": "python " + " ".join(sys.argv)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=2))
    return result


if __name__ == "__main__":
    main(parser().parse_args())
