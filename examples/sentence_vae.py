"""Sentence VAE (Bowman et al. 2016) with a deterministic autoencoder and an LSTM language
model on the same text; prior samples and VAE-vs-AE homotopies between two sentences.

    python examples/sentence_vae.py                                    # the showcase: a few minutes, offline
    python examples/sentence_vae.py --remedy none                      # the same, collapsed
    python examples/sentence_vae.py --corpus embedded --epochs 20      # all of the embedded Wikipedia sample
    python examples/sentence_vae.py --corpus DATA/ptb.zip    # Penn Treebank (bring your own copy)
    python examples/sentence_vae.py --decoder cnn --receptive-field small   # Yang et al.'s dilated CNN decoder
    python examples/sentence_vae.py --remedy pretrain+free-bits --pretrain-epochs 2   # Li et al. 2019's recipe

Prints five prior samples, the homotopies and the test metrics (also in report.txt) and writes
metrics.json, samples.txt, interpolation.txt and checkpoints under --out. Same code as
`pyro-lvm train sentence_vae` and `pyro-lvm demo sentence`; `pyro-lvm interpolate RUN
--sentences "a" "b"` prints a homotopy from a finished run.
"""

import argparse

from pyro_lvm.tasks import sentence_vae


def main(args: argparse.Namespace) -> dict:
    metrics = sentence_vae.main(args)
    print(sentence_vae.report(metrics), end="")
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sentence_vae.add_arguments(parser)
    main(parser.parse_args())
