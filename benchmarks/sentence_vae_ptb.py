"""The posterior-collapse table on Penn Treebank (Bowman et al. 2016; He et al. 2019): an LSTM
language model and the sentence VAE with each remedy, trained on ptb.train.txt, reported on
ptb.test.txt. What is measured, the rows and the targets: pyro_lvm/reproduce/sentence_vae_ptb.py,
the code this script shares with `pyro-lvm reproduce ptb-table`.

    # the table (hours on one CPU core; sizes are arguments)
    python benchmarks/sentence_vae_ptb.py --data DATA/ptb.zip --epochs 30 --patience 3 \\
        --embed-dim 256 --hidden-dim 256 --z-dim 32 --samples 500
    # the reduced table of docs/sentence_vae.md (about an hour on one shared core)
    python benchmarks/sentence_vae_ptb.py --data DATA/ptb.zip --embed-dim 128 --hidden-dim 128 \\
        --z-dim 32 --epochs 10 --batches-per-epoch 200 --patience 3 --anneal-steps 1000 --free-bits 0.15 \\
        --aggressive-steps 5 --aggressive-epochs 3 --eval-subset 1000 --samples 50
    # issue 18's rows (Yang et al.'s CNN decoder, Li et al.'s recipe) at the K = 500 table's budget,
    # one process (and one JSON) per row; the commands of docs/sentence_vae.md
    python benchmarks/sentence_vae_ptb.py --data DATA/ptb.zip --embed-dim 128 --hidden-dim 128 \\
        --z-dim 32 --epochs 10 --batches-per-epoch 200 --patience 3 --anneal-steps 1000 --free-bits 0.15 \\
        --samples 500 --rows lm@cnn15 --out benchmarks/results/sentence_vae_ptb_k500_lm_cnn15.json
    # a smoke run of the whole path (< 2 minutes; `pyro-lvm reproduce ptb-table --budget quick`)
    python benchmarks/sentence_vae_ptb.py --data DATA/ptb.zip --subset 500 --eval-subset 100 \\
        --epochs 1 --embed-dim 32 --hidden-dim 32 --z-dim 8 --samples 5 --out /tmp/ptb_smoke.json
"""

import json
import sys
from pathlib import Path

from pyro_lvm.reproduce.sentence_vae_ptb import markdown, parser, run


def main(args) -> dict:
    result = {**run(args), "command": "python " + " ".join(sys.argv)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result["rows"]))
    return result


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--render":  # re-print the table of a results file
        print(markdown(json.loads(Path(sys.argv[2]).read_text())["rows"]))
    else:
        main(parser().parse_args())
