"""Categorical VAE (20 x 10) on binarized MNIST: one equal training budget per estimator.

Reproduces the setting of Jang et al. (2017), Table 1 (VAE column, -ELBO in nats on
binarized MNIST: SF 110.6, ST Gumbel 107.8, Gumbel-softmax 101.5 after full training) with a
much smaller budget, and checks the *ordering*; also times each estimator's step against a
hand-written PyTorch step of the same estimator. The code is pyro_lvm/reproduce/discrete_mnist.py,
shared with `pyro-lvm reproduce gumbel-mnist`.

    python benchmarks/discrete_mnist.py --data DATA/binarized_mnist   # ~15 min, 1 core
    python benchmarks/discrete_mnist.py --data DATA/binarized_mnist --estimators gumbel --steps 40000 \
        --timing-rounds 3 --out benchmarks/results/discrete_mnist_gumbel_long.json
    python benchmarks/discrete_mnist.py --data DATA/binarized_mnist \
        --estimators rloo gumbel-rao straight-through gumbel --out benchmarks/results/discrete_mnist_unbiased.json

Writes ``benchmarks/results/discrete_mnist.json`` (after every estimator, so a long run keeps
what it has done).
"""

import sys

from pyro_lvm.checkpoint import atomic_json_save
from pyro_lvm.reproduce.discrete_mnist import parser, run


def main(args) -> dict:
    command = {"command": "python " + " ".join(sys.argv)}
    result = {**run(args, save=lambda partial: atomic_json_save({**partial, **command}, args.out)), **command}
    atomic_json_save(result, args.out)
    print("order (best first):", result["order_best_first"], "| Jang ordering reproduced:",
          result["jang_order_reproduced"])
    return result


if __name__ == "__main__":
    main(parser().parse_args())
