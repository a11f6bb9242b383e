"""A sentence VAE (Bowman et al. 2016) on the Wikipedia sample inside gensim's wheel: fit with
free bits so the code is used, test NLL and KL, five sentences from the prior, and the
homotopy between two real held-out sentences.

    python examples/sentence_vae.py                            # 4209 simple sentences, offline, ~100 CPU-seconds
    python examples/sentence_vae.py --free-bits 0              # the plain ELBO: watch the KL collapse to 0
    python examples/sentence_vae.py --subset 1000 --epochs 2   # a quicker look
    python examples/sentence_vae.py --corpus DATA/ptb.zip      # your copy of the Penn Treebank (docs/data.md)

The story: sentences become padded rows <bos> w_1 ... w_n <eos> of word ids, batched by length.
The pair is the library's SentenceVAE: z ~ N(0, I), an LSTM decoder p(x | z) that sees z at
every step, an LSTM encoder q(z | x). A strong decoder can model text without z, so the plain
ELBO drives KL(q || p) to 0 (posterior collapse); FreeBitsELBO lets the first lambda nats per
dimension go unpenalised. After ``fit``: the test NLL by importance sampling (K samples give a
lower bound on log p(x), in expectation, that tightens with K), the KL term, decoded prior
samples and a beam-decoded homotopy. Writes ``training_curves.png`` under
``--out``. The full program (autoencoder and language model beside the VAE, every KL remedy,
the CNN decoder, run folders, resume) is ``pyro-lvm train sentence_vae``.
"""

import argparse
import math
from pathlib import Path

import torch

from pyro_lvm import elbo_terms, fit, log_likelihood, plots, set_seed
from pyro_lvm.models.text import decoding
from pyro_lvm.data import Vocabulary, bucket_loader, encode_sentences, load_corpus
from pyro_lvm.infer import FreeBitsELBO
from pyro_lvm.models import SentenceVAE


def main(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    set_seed(args.seed)

    # 1. Data: the corpus, a vocabulary of the training words, and (N, T) id tensors per split.
    corpus = load_corpus(args.corpus, seed=args.seed)
    if args.subset:
        corpus = corpus.subset(args.subset, args.subset // 10)
    vocab = Vocabulary.build(corpus.train)
    train, valid, test = (encode_sentences(getattr(corpus, s), vocab, max_len=30) for s in ("train", "valid", "test"))
    print(f"{len(train)} / {len(valid)} / {len(test)} sentences, vocabulary {len(vocab)}")

    # 2. The pair, and 3. the objective: the ELBO with lambda nats of KL free per dimension.
    vae = SentenceVAE(len(vocab), embed_dim=args.embed, hidden_dim=args.hidden, z_dim=args.z_dim, max_len=30,
                      conditioning="both")  # z in the initial state and at every step
    elbo = FreeBitsELBO(args.free_bits)

    # 4. Training: batches of similar length, clipped gradients, the best validation epoch kept.
    history = fit(vae, bucket_loader(train, 32, seed=args.seed), bucket_loader(valid, 50, shuffle=False), elbo=elbo,
                  epochs=args.epochs, lr=3e-3, clip_norm=5.0, restore_best=True, seed=args.seed, progress=True)
    vae.eval()

    # 5. Evaluation: -log p(x) by importance sampling with q as proposal, and the KL term.
    with torch.no_grad():
        nll = -log_likelihood(vae, test, num_samples=args.samples, batch_size=20)
        kl = elbo_terms(vae, test)["kl"]
    words = int((test[:, 1:] != 0).sum())  # predicted tokens: words and <eos>
    result = {"nll": float(nll.mean()), "kl": float(kl.mean()), "ppl": math.exp(float(nll.sum()) / words)}
    print(f"test NLL {result['nll']:.2f} nats per sentence (K={args.samples}), perplexity {result['ppl']:.1f}, "
          f"KL {result['kl']:.2f} nats")

    # 6. What the code does: sentences from the prior, and the line between two real sentences.
    print("five sentences from the prior (z ~ N(0, I), nucleus sampling):")
    for sentence in decoding.to_text(vocab, decoding.sample_prior(vae, 5, method="sample", top_p=0.5)):
        print("  ", sentence)
    a, b = decoding.homotopy_endpoints(corpus)   # the first two test sentences of at most 12 words
    print(f"homotopy from {a!r} to {b!r} (beam search):")
    for sentence in decoding.homotopy(vae, vocab, a, b, steps=7, method="beam", beam_size=10, block_ngram=2):
        print("  ", sentence)

    # 7. Figure: the training and validation loss per epoch.
    plots.training_curves({"sentence VAE": history}, out / "training_curves.png")
    print(f"figure in {out}/")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="embedded-simple",
                        help="embedded-simple, embedded, your ptb.zip, or a text file with one sentence per line")
    parser.add_argument("--subset", type=int, default=0, help="the first N training sentences (0: all)")
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--z-dim", type=int, default=32)
    parser.add_argument("--free-bits", type=float, default=0.25, help="lambda, nats per dimension (0: the ELBO)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--samples", type=int, default=10, help="importance samples per test sentence")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/example_sentence_vae")
    main(parser.parse_args())
