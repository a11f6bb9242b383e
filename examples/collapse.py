"""Posterior collapse, and three remedies that fight it, on sequences where it happens for sure.

The data are token sequences drawn from a random LSTM driven by a 1-d latent, so a perfect
code carries a known amount of information about each sequence. An LSTM VAE with a 1-d
latent (the library's ``SequenceVAE``) is powerful enough to model the tokens without z: with
the plain ELBO the KL term wins, q(z | x) falls back to the prior and z says nothing
(KL ~ 0, mutual information ~ 0, no active unit). Each remedy changes only the objective or
the training loop, never the pair:

* ``anneal``: KL annealing, the ELBO with its KL weighted by beta rising 0.1 -> 1 (``KLAnnealing``);
* ``free-bits``: the KL of each latent dimension counts only above lambda nats (``FreeBitsELBO``);
* ``aggressive``: He et al.'s inner loop that trains the encoder until it stops improving
  (``AggressiveTraining``; not in the default ``--methods``, as it is the slowest).

Every run logs validation KL, mutual information I_q(x; z) and active units per epoch
(``CollapseDiagnostics``); the test table gives ELBO, importance-sampled NLL, KL, MI and
active units (nats per sequence).

    python examples/collapse.py                               # about 2 CPU-minutes
    python examples/collapse.py --methods vae anneal free-bits aggressive --epochs 10

The full study (seven methods, run folders, ``pyro-lvm evaluate``) is ``pyro-lvm train collapse``;
see docs/posterior_collapse.md.
"""

import argparse
import json
from pathlib import Path

import pyro

from pyro_lvm import fit, set_seed
from pyro_lvm.evaluation.diagnostics import CollapseDiagnostics, collapse_summary, plot_collapse
from pyro_lvm.infer import AggressiveTraining, FreeBitsELBO, KLAnnealing
from pyro_lvm.models import SequenceVAE, toy_splits


def main(args: argparse.Namespace) -> dict:
    # 1. Data: (N, length) token tensors from one random LSTM; "source" is that LSTM.
    data = toy_splits(args.n_train, args.n_valid, args.n_test, seed=args.seed, length=10)
    information = data["source"].mutual_information(data["test"], data["z_test"])
    print(f"a perfect 1-d code would carry I(x; z) = {information:.2f} nats per test sequence")

    # 2. The remedies: an objective and callbacks for fit, each applied to a fresh, unchanged pair.
    #    TraceMeanField_ELBO computes the Gaussian KL in closed form.
    warmup = args.epochs // 2 * -(-args.n_train // args.batch_size)  # half of the training steps
    remedies = {
        "vae": (pyro.infer.TraceMeanField_ELBO(), []),
        "anneal": (pyro.infer.TraceMeanField_ELBO(), [KLAnnealing("linear", start=0.1, steps=max(1, warmup))]),
        "free-bits": (FreeBitsELBO(args.free_bits), []),
        "aggressive": (pyro.infer.TraceMeanField_ELBO(),
                       [AggressiveTraining(data=data["train"], valid_data=data["valid"])]),
    }

    # 3. Train each, logging the collapse diagnostics on the validation set every epoch,
    #    and evaluate it on the test set.
    histories, table = {}, {}
    for method in args.methods:
        set_seed(args.seed)
        pair = SequenceVAE(vocab=50, z_dim=1, hidden=args.hidden)
        objective, callbacks = remedies[method]
        diagnostics = CollapseDiagnostics(data["valid"], per_dimension=False)
        histories[method] = fit(pair, data["train"], data["valid"], elbo=objective,
                                callbacks=[*callbacks, diagnostics], epochs=args.epochs,
                                batch_size=args.batch_size, lr=1e-3, seed=args.seed, progress=True)
        table[method] = collapse_summary(pair.eval(), data["test"], num_samples=args.samples)

    # 4. Results: one row per method, and the diagnostics per epoch as a figure.
    print(f"\n{'method':<12}{'ELBO':>9}{'NLL':>9}{'KL':>7}{'MI':>7}  active units")
    for method, row in table.items():
        print(f"{method:<12}{row['elbo']:>9.2f}{row['nll']:>9.2f}{row['kl']:>7.2f}{row['mi']:>7.2f}"
              f"  {row['active_units']} of {row['units']}")
    out = Path(args.out)
    figure = plot_collapse(histories, out / "collapse_curves.png", title="validation KL, MI, active units; KL weight")
    results = {"information_nats": information, "methods": table, "figures": [str(figure)]}
    (out / "metrics.json").write_text(json.dumps(results, indent=1))
    print(f"figure and metrics.json in {out}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["vae", "anneal", "free-bits"],
                        choices=["vae", "anneal", "free-bits", "aggressive"],
                        help="aggressive is the slowest (an inner loop of encoder steps per step)")
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-valid", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=64, help="LSTM size of the VAE")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--free-bits", type=float, default=0.5, help="lambda, nats per latent dimension")
    parser.add_argument("--samples", type=int, default=100, help="importance samples for the test NLL")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/example_collapse")
    main(parser.parse_args())
