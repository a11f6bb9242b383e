"""Topic models on a bag-of-words corpus: ProdLDA or LDA, top words, coherence, ArviZ summary.

    python examples/topic_model.py                       # ProdLDA on gensim's Lee news corpus, offline
    python examples/topic_model.py --model lda --assignments enumerated --epochs 50
    python examples/topic_model.py --dataset 20ng --data-path DATA/20ng.zip --topics 50

Prints the top words per topic; writes metrics.json (held-out perplexity, NPMI, diversity),
topics.txt, theta_summary.csv (az.summary of document-topic proportions) and figures
(coherence per topic, forest plot of theta, training curve) under --out. Same code as
`pyro-lvm train prodlda` / `pyro-lvm train lda`.
"""

import argparse

from pyro_lvm.tasks import topic


def main(args: argparse.Namespace) -> dict:
    return topic.main(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    topic.add_arguments(parser)
    main(parser.parse_args())
