"""Throughput of data-parallel training: 1 process against 2, ours against hand-written DDP.

The Gaussian VAE (784-400-20, binarized MNIST) with fit(strategy="ddp") and with torch's
DistributedDataParallel, and the sentence VAE with fit on 1 and 2 processes; what is timed
and how: pyro_lvm/reproduce/ddp_throughput.py, the code this script shares with
`pyro-lvm reproduce ddp-throughput`.

    python benchmarks/ddp_throughput.py            # -> benchmarks/results/ddp_throughput.json

Every process uses one torch thread, so 2 processes use both cores of these machines.
"""

import json
import sys
from pathlib import Path

from pyro_lvm.reproduce.ddp_throughput import parser, run


def main(args) -> dict:
    r = run(args)
    result = {"benchmark": r["benchmark"], "command": "python " + " ".join(sys.argv), **r}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["speedups"], indent=2))
    return result


if __name__ == "__main__":
    main(parser().parse_args())
