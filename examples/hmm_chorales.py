"""A hidden Markov model over piano rolls of Bach chorales: Baum-Welch (or Adam through
``fit``), the exact test negative log-likelihood per time step, a Viterbi state path.

    python examples/hmm_chorales.py                        # 60 of music21's chorales, offline, ~5 CPU-seconds
    python examples/hmm_chorales.py --limit 0 --states 32  # all 408 (first parse ~1 minute, then cached)
    python examples/hmm_chorales.py --trainer adam         # the same pair trained by SVI with fit
    python examples/hmm_chorales.py --data DATA/jsb_chorales.pickle   # your copy of JSB (docs/data.md)

(CPU time with the scores already parsed: music21's scores are parsed once, then cached.)

The story: each chorale is a (T, 88) 0/1 roll, one frame per quarter note; padded into one
batch with a mask. The pair is the library's HMM: a chain of K states, each emitting 88
independent keys. Baum-Welch alternates an exact E-step (forward-backward) with a closed-form
M-step; ``--trainer adam`` instead runs ``fit`` on the pair's own objective
(``hmm.objective(num_datapoints=N)``: the states are summed out exactly, so the ELBO is
log p(x), and each batch of 32 chorales estimates the whole training set's). Prints the NLL per frame on each
split and writes ``viterbi_roll.png`` and ``transition_matrix.png`` under ``--out``. The
full program (factorial, second-order, neural emissions, JSB protocols, run folders) is
``pyro-lvm train hmm_chorales``.
"""

import argparse
from pathlib import Path

import torch
from tqdm import tqdm

from pyro_lvm import fit, plots, set_seed
from pyro_lvm.data import load_jsb_pickle, load_music21_chorales, pad_rolls
from pyro_lvm.models import HMM, BernoulliEmission


def main(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    set_seed(args.seed)

    # 1. Data: lists of (T_i, 88) rolls -> padded (N, T, 88) and a mask (N, T) of real frames.
    data = load_jsb_pickle(args.data) if args.data else load_music21_chorales(args.limit or None)
    splits = {name: pad_rolls(getattr(data, name)) for name in ("train", "valid", "test")}
    x, mask = splits["train"]
    print(f"{data.source}: {len(data.train)} train / {len(data.valid)} valid / {len(data.test)} test chorales")

    # 2. The pair: p(z_1) p(x_1 | z_1) prod_t p(z_t | z_{t-1}) p(x_t | z_t), x_t 88 Bernoulli keys.
    hmm = HMM(BernoulliEmission(args.states, x.shape[-1]))
    frames = float(mask.sum())

    # 3. Training: Baum-Welch, or Adam on the pair's objective (the chain is summed out exactly).
    if args.trainer == "em":
        bar = tqdm(total=args.iterations, desc="Baum-Welch")

        def report(i, log_lik):
            bar.update()
            bar.set_postfix(nll_per_step=f"{-log_lik / frames:.3f}")

        hmm.em_fit([(x, mask)], args.iterations, callback=report)
        bar.close()
    else:
        fit(hmm, (x, mask), elbo=hmm.objective(num_datapoints=len(x)), epochs=args.iterations, batch_size=32,
            lr=0.03, seed=args.seed, progress=True)

    # 4. Evaluation: exact -log p(x) by the forward algorithm, per frame, on each split.
    with torch.no_grad():
        nll = {name: float(-hmm.log_likelihood(xs, ms).sum() / ms.sum()) for name, (xs, ms) in splits.items()}
    for name, value in nll.items():
        print(f"{name} NLL per step: {value:.3f} nats")

    # 5. What the states do: the most probable state path of a test chorale, and the chain.
    roll = data.test[0]
    states, _ = hmm.viterbi(roll.unsqueeze(0))
    plots.roll_with_states(roll, states[0], out / "viterbi_roll.png")
    plots.transition_matrix(hmm, out / "transition_matrix.png")
    print(f"figures in {out}/")
    return nll


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="your copy of jsb_chorales.pickle; omitted: music21's chorales")
    parser.add_argument("--limit", type=int, default=60, help="music21: the first N chorales (0: all)")
    parser.add_argument("--states", type=int, default=16)
    parser.add_argument("--trainer", default="em", choices=["em", "adam"])
    parser.add_argument("--iterations", type=int, default=30, help="EM iterations or Adam epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/example_hmm_chorales")
    main(parser.parse_args())
