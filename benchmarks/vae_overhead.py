"""Overhead benchmark: one training step of our VAE versus the same network hand-written.

The VAE is 784-400-20 with a Bernoulli likelihood, batch 128, Adam (lr 1e-3); the variants
(hand-written PyTorch with default and fused Adam, fit with Trace_ELBO and
TraceMeanField_ELBO, stock Pyro SVI) and how they are timed: pyro_lvm/reproduce/vae_overhead.py,
the code this script shares with `pyro-lvm reproduce vae-overhead`. Writes
benchmarks/results/vae_overhead.json.

    python benchmarks/vae_overhead.py --rounds 11
"""

import json
import sys
from pathlib import Path

from pyro_lvm.reproduce.vae_overhead import parser, run


def main(args) -> dict:
    r = run(args)
    result = {"benchmark": r["benchmark"], "command": "python " + " ".join(sys.argv), **r}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(parser().parse_args())
