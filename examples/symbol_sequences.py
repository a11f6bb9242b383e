"""Sentences through a code of L discrete symbols from an alphabet of K (the lecture's latent
"language"): a discrete estimator chosen by name, the test NLL (exact when the K**L codes can
be summed), reconstructions, and the words each symbol stands for.

    python examples/symbol_sequences.py                                 # 2000 sentences, offline, ~70 CPU-seconds
    python examples/symbol_sequences.py --estimator score-function-baseline   # or gumbel, rloo, enumerate, ...
    python examples/symbol_sequences.py --kl-weight 0                   # an autoencoder: the code costs nothing
    python examples/symbol_sequences.py --corpus DATA/ptb.zip --subset 0 --epochs 5   # your copy of PTB

The story: sentences become (N, T) word ids. The pair is the library's
SymbolSequenceAutoencoder: z is L one-hot symbols with a uniform prior, an LSTM decoder reads
the code's embedding at every step, a GRU encoder with one attention query per position gives
q(z | x). Its one discrete site is trained by ``DiscreteELBO(estimator)``, and the
``KLScaledELBO`` handler weights its KL term (with weight 1 it is the ELBO, where a code costs
its full L log K nats). After ``fit``: the test -ELBO, NLL and perplexity, the share of
sentences their own code gives back word for word, and the words most associated with each
symbol. Writes ``training_curves.png`` under ``--out``. The full program (MASC symbol/POS
alignment, the estimator comparison, run folders, resume) is ``pyro-lvm train symbol-sequences``.
"""

import argparse
from pathlib import Path

from pyro_lvm import fit, plots, set_seed
from pyro_lvm.data import Vocabulary, bucket_loader, encode_sentences, load_corpus
from pyro_lvm.infer import ESTIMATORS, DiscreteELBO, KLScaledELBO
from pyro_lvm.models import SymbolSequenceAutoencoder
from pyro_lvm.models.text.symbol_sequences import symbol_word_associations
from pyro_lvm.models.text.symbol_metrics import evaluate_model, exact_reconstructions


def main(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    set_seed(args.seed)

    # 1. Data: (N, T) rows <bos> w_1 ... w_n <eos> <pad> ... per split, over the training vocabulary.
    corpus = load_corpus(args.corpus, seed=args.seed)
    if args.subset:
        corpus = corpus.subset(args.subset, args.subset // 10)
    vocab = Vocabulary.build(corpus.train, max_size=5000)
    train, valid, test = (encode_sentences(getattr(corpus, s), vocab, max_len=40) for s in ("train", "valid", "test"))
    print(f"{len(train)} / {len(valid)} / {len(test)} sentences, vocabulary {len(vocab)}")

    # 2. The pair: z (B, L, K) one-hot, p(z) uniform; p(x | z) an LSTM; q(z | x) attention over a GRU.
    model = SymbolSequenceAutoencoder(len(vocab), n_symbols=args.symbols, alphabet=args.alphabet, embed_dim=64,
                                      hidden_dim=128, symbol_dim=32, max_len=40)

    # 3. The objective: a gradient estimator for the discrete site, then a handler on its KL term.
    elbo = DiscreteELBO(args.estimator, args.temperature, max_plate_nesting=1)
    if args.kl_weight != 1:
        elbo = KLScaledELBO(elbo, beta=args.kl_weight)

    # 4. Training, the best validation epoch kept.
    history = fit(model, bucket_loader(train, 64, seed=args.seed), bucket_loader(valid, 100, shuffle=False),
                  elbo=elbo, epochs=args.epochs, lr=2e-3, clip_norm=5.0, restore_best=True, seed=args.seed,
                  progress=True)
    model.eval()

    # 5. Evaluation (always the discrete model's own ELBO and likelihood, whatever trained it).
    result = evaluate_model(model, test, samples=args.samples)
    print(f"test -ELBO {result['neg_elbo']:.2f}, NLL {result['nll']:.2f} nats per sentence ({result['nll_method']}), "
          f"perplexity {result['ppl']:.1f}, KL {result['kl']:.2f} nats (a code holds {result['bits_per_code']:.0f} bits)")
    share, rows = exact_reconstructions(model, vocab, test[:200])
    print(f"{share:.0%} of {len(rows)} test sentences come back word for word from their own code, e.g.")
    for row in rows[:3]:
        print(f"  {row['code']}  {row['sentence']}\n  {' ' * len(str(row['code']))}  -> {row['reconstruction']}")

    # 6. What the symbols carry: the words most associated (PMI) with a symbol anywhere in the code.
    associations = symbol_word_associations(model.symbols(test), corpus.test, min_count=3)
    for k, words in list(associations.items())[:8]:
        print(f"symbol {k:>2}: " + ", ".join(w for w, _ in words))

    # 7. Figure.
    plots.training_curves({args.estimator: history}, out / "training_curves.png")
    print(f"figure in {out}/")
    return {**result, "exact_reconstructions": share, "word_associations": associations}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="embedded", help="embedded (offline), your ptb.zip, or a text file")
    parser.add_argument("--subset", type=int, default=2000, help="the first N training sentences (0: all)")
    parser.add_argument("--symbols", type=int, default=4, help="L, symbols per code")
    parser.add_argument("--alphabet", type=int, default=16, help="K, distinct symbols")
    parser.add_argument("--estimator", default="straight-through", choices=list(ESTIMATORS))
    parser.add_argument("--temperature", type=float, default=1.0, help="of the relaxed estimators")
    parser.add_argument("--kl-weight", type=float, default=1.0, help="1: the ELBO; 0: an autoencoder")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=100, help="importance samples when the codes are too many")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/example_symbol_sequences")
    main(parser.parse_args())
