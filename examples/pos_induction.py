"""Unsupervised part-of-speech induction with an HMM, scored against gold tags.

    python examples/pos_induction.py                         # synthetic toy corpus, offline, seconds
    python examples/pos_induction.py --data-path ../shared/data/masc_tagged.zip --iterations 300 --tol 1e-5 --restarts 3
    python examples/pos_induction.py --data-path ../shared/data/masc_tagged.zip --emission features --iterations 100
    python examples/pos_induction.py --data-path ../shared/data/masc_tagged.zip --emission embedding \\
        --vector-ptb ../shared/data/ptb.zip --vector-wikipedia --flow-layers 4 --flow-epochs 10 --lr 0.01
    python examples/pos_induction.py --data-path ../shared/data/masc_tagged.zip --emission neural --lr 0.003 --iterations 15
    python examples/pos_induction.py --data-path en_ewt-ud-train.conllu --tag-column xpos   # your CoNLL-U file
    python examples/pos_induction.py --data-path wsj_0001.pos                              # word/TAG text

Writes metrics.json (many-to-one, one-to-one accuracy, V-measure, training time, restarts),
transition_matrix.png and state_tag_counts.png under --out. Same code as `pyro-lvm train pos_induction`."""

import argparse

from pyro_lvm.tasks import pos_induction


def main(args: argparse.Namespace) -> dict:
    return pos_induction.main(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pos_induction.add_arguments(parser)
    main(parser.parse_args())
