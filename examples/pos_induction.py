"""Unsupervised part-of-speech induction with an HMM (Johnson 2007): train on words alone by
EM, decode with Viterbi, score the states against gold tags (many-to-one accuracy).

    python examples/pos_induction.py                          # a toy tagged corpus, offline, ~7 CPU-seconds
    python examples/pos_induction.py --data DATA/masc_tagged.zip --states 45 --iterations 300
    python examples/pos_induction.py --data en_ewt-ud-train.conllu   # your CoNLL-U file (UPOS tags)

The story: sentences become padded word ids (B, T) with a mask, in batches of similar length;
tags are kept aside for scoring only. The pair is the library's HMM with one categorical over
words per state. Baum-Welch maximises log p(words) exactly (forward-backward E-step,
counting M-step). The states have no names, so the score maps each state to the gold tag it
most often meets (many-to-one; one-to-one and V-measure are printed too). Prints the scores and
one tagged sentence; writes ``transition_matrix.png`` and ``state_tag_counts.png`` under
``--out``. The full program (feature, word-vector and neural emissions, restarts, Adam) is
``pyro-lvm train pos_induction``.
"""

import argparse
from pathlib import Path

from tqdm import tqdm

from pyro_lvm import plots, set_seed
from pyro_lvm.data import load_tagged_corpus, toy_corpus
from pyro_lvm.models import HMM, CategoricalEmission
from pyro_lvm.models.hmm.tagging_metrics import contingency, tagging_scores, viterbi_tags


def main(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    set_seed(args.seed)

    # 1. Data: words (B, T), mask (B, T) and gold tags (B, T), in length-sorted batches.
    corpus = load_tagged_corpus(args.data) if args.data else toy_corpus(args.sentences, seed=args.seed)
    batches = corpus.batches()
    print(corpus.summary())

    # 2. The pair: a chain of K states, each with its own categorical over the vocabulary.
    hmm = HMM(CategoricalEmission(args.states, len(corpus.vocab)))

    # 3. Training: EM on the words alone (the tags are never seen).
    bar = tqdm(total=args.iterations, desc="EM")

    def report(i, log_lik):
        bar.update()
        bar.set_postfix(log_lik_per_token=f"{log_lik / corpus.num_tokens:.3f}")

    hmm.em_fit([(x, mask) for x, mask, _ in batches], args.iterations, callback=report)
    bar.close()

    # 4. Evaluation: Viterbi states of every token against the gold tags.
    pred, gold = viterbi_tags(hmm, batches)
    scores = tagging_scores(pred, gold, args.states, len(corpus.tagset))
    print(f"many-to-one accuracy {scores['many_to_one']:.3f}, one-to-one {scores['one_to_one']:.3f}, "
          f"V-measure {scores['v_measure']:.3f}")

    # 5. One sentence, each word with its state and the tag that state stands for.
    table = contingency(pred, gold, args.states, len(corpus.tagset))
    x, mask, _ = batches[-1]                      # the longest sentences come last
    states, _ = hmm.viterbi(x[-1:], mask[-1:])
    print(" ".join(f"{corpus.vocab[w]}/{corpus.tagset[table[s].argmax()]}"
                   for w, s in zip(x[-1][mask[-1]].tolist(), states[0][mask[-1]].tolist())))

    # 6. Figures: the chain, and p(gold tag | state).
    plots.transition_matrix(hmm, out / "transition_matrix.png")
    plots.state_tag_frequencies(table, corpus.tagset, out / "state_tag_counts.png")
    print(f"figures in {out}/")
    return scores


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="your masc_tagged.zip, .conllu or word/TAG file; omitted: toy")
    parser.add_argument("--sentences", type=int, default=400, help="size of the toy corpus")
    parser.add_argument("--states", type=int, default=12)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/example_pos_induction")
    main(parser.parse_args())
