"""Unsupervised part-of-speech induction with an HMM (categorical word emissions), scored against gold tags.

    python examples/pos_induction.py                         # synthetic toy corpus, offline, seconds
    python examples/pos_induction.py --data-path ../shared/data/masc_tagged.zip --states 45 --iterations 150
    python examples/pos_induction.py --data-path ../shared/data/masc_tagged.zip --emission features --iterations 100

Writes metrics.json (many-to-one, one-to-one accuracy, V-measure), transition_matrix.png and
state_tag_counts.png under --out. Same code as `pyro-lvm train pos_induction`."""

import argparse

from pyro_lvm.tasks import pos_induction


def main(args: argparse.Namespace) -> dict:
    return pos_induction.main(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pos_induction.add_arguments(parser)
    main(parser.parse_args())
