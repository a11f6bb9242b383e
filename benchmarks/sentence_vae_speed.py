"""Training throughput of the sentence VAE: pyro_lvm.fit on the Pyro model/guide pair versus
the same network and loss hand-written in PyTorch, in the same run. What is timed and how:
pyro_lvm/reproduce/sentence_vae_speed.py, the code this script shares with
`pyro-lvm reproduce sentence-vae-speed`. Writes benchmarks/results/sentence_vae_speed.json.

    python benchmarks/sentence_vae_speed.py                     # ~3 minutes on one core
    python benchmarks/sentence_vae_speed.py --rounds 3 --batches 5 --out /tmp/speed.json   # quick
"""

import json
import sys
from pathlib import Path

from pyro_lvm.reproduce.sentence_vae_speed import parser, run


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
