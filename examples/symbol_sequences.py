"""Sentences through a code of L discrete symbols from an alphabet of K (the lecture's latent
"language"), trained with a discrete estimator by name; what the codes carry.

    python examples/symbol_sequences.py --subset 2000 --epochs 2             # embedded corpus, offline
    python examples/symbol_sequences.py --estimator score-function-baseline  # or gumbel, enumerate (small codes), ...
    python examples/symbol_sequences.py --corpus masc_tagged.zip --compare   # your copy of MASC: symbol/POS alignment

Writes metrics.json, codes.txt, model.pt and checkpoints under --out. Same code as
`pyro-lvm train symbol-sequences`.
"""

import argparse

from pyro_lvm.tasks import symbol_sequences


def main(args: argparse.Namespace) -> dict:
    return symbol_sequences.main(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    symbol_sequences.add_arguments(parser)
    main(parser.parse_args())
