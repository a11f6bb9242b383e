"""A categorical VAE: each image is coded by N one-hot latents of K classes each.

The pair is the library's ``CategoricalVAE``: p(z_n) = Categorical(1/K, ..., 1/K) for each of
the N latents, p(x | z) Bernoulli pixels from a decoder of the N one-hot codes, and
q(z_n | x) = Categorical(softmax(encoder(x))_n). Discrete draws have no reparameterisation,
so the gradient of the ELBO needs an estimator: ``--estimator`` picks one by name (Gumbel-softmax
relaxation by default, with Jang et al.'s temperature annealing tau = max(0.5, exp(-rate * step))).
The script trains it, reports the test -ELBO and an importance-sampled log-likelihood, and
draws reconstructions, prior samples and the loss per epoch.

    python examples/categorical_vae.py                             # scikit-learn's digits, offline, under a CPU-minute
    python examples/categorical_vae.py --estimator score-function  # or straight-through, rloo, relax, ...
    python examples/categorical_vae.py --dataset binarized-mnist --data-path DATA/binarized_mnist \\
        --hidden 512 256 --anneal-rate 1.5e-4 --epochs 16

(``DATA/``: the folder with your copy of binarized MNIST, see docs/data.md.) The same model with
every option, run folders and checkpoints is ``pyro-lvm train categorical_vae``; the estimators are
compared in docs/discrete_latents.md.
"""

import argparse
import json
from pathlib import Path

from pyro_lvm import fit, log_likelihood, set_seed
from pyro_lvm import plots
from pyro_lvm.data import load_images
from pyro_lvm.infer import ESTIMATORS, TemperatureAnnealing
from pyro_lvm.models import CategoricalVAE


def main(args: argparse.Namespace) -> dict:
    set_seed(args.seed)
    # 1. Data: binary images (N, x_dim).
    data = load_images(args.dataset, args.data_path, binarize=True, seed=args.seed)

    # 2. The pair and its objective: a DiscreteELBO for the chosen estimator, with the exact
    #    KL between the categorical q and the uniform prior.
    pair = CategoricalVAE(data.x_dim, args.latents, args.classes, hidden=tuple(args.hidden),
                          estimator=args.estimator, temperature=args.temperature)
    objective = pair.objective()
    # Relaxed estimators run at a temperature, annealed per step (REBAR and RELAX learn theirs).
    annealing = ([TemperatureAnnealing(args.anneal_rate, min_temperature=0.5, tau0=args.temperature)]
                 if ESTIMATORS[args.estimator].temperature and not objective.learns_temperature else [])

    # 3. Train.
    history = fit(pair, data.train, data.valid, elbo=objective, callbacks=annealing, epochs=args.epochs,
                  batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=True)

    # 4. Evaluate the discrete model on test images (nats per image): its -ELBO with exact
    #    one-hot draws, and log p(x) by importance sampling from q.
    pair.eval()
    results = {"estimator": args.estimator, "epochs": len(history),
               "final_temperature": history.last().get("temperature"),
               "test_neg_elbo": float(pair.negative_elbo(data.test, num_samples=10).mean()),
               "test_log_likelihood": float(log_likelihood(pair, data.test, num_samples=args.samples).mean())}
    print(f"{args.latents} x {args.classes} categorical VAE, {args.estimator}: test -ELBO "
          f"{results['test_neg_elbo']:.2f}, log p(x) ~ {results['test_log_likelihood']:.2f} nats "
          f"({args.samples} importance samples)")

    # 5. Figures: reconstructions, samples from the prior, the loss per epoch.
    out = Path(args.out)
    figures = plots.image_model_figures(pair, data.test[:10], data.image_shape, {args.estimator: history}, out,
                                        f"categorical VAE ({args.estimator})")
    results["figures"] = [str(p) for p in figures]
    (out / "metrics.json").write_text(json.dumps(results, indent=1))
    print(f"figures and metrics.json in {out}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits", choices=["digits", "binarized-mnist"])
    parser.add_argument("--data-path", default=None, help="folder of your binarized MNIST copy")
    parser.add_argument("--estimator", default="gumbel", choices=list(ESTIMATORS))
    parser.add_argument("--latents", type=int, default=20, help="N categorical latents")
    parser.add_argument("--classes", type=int, default=10, help="K classes per latent")
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 128], help="encoder widths (Jang et al.: 512 256)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=1.0, help="initial temperature tau0")
    parser.add_argument("--anneal-rate", type=float, default=1e-3)
    parser.add_argument("--samples", type=int, default=100, help="importance samples for the test log-likelihood")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/example_categorical_vae")
    main(parser.parse_args())
