"""Semi-supervised VAE "M2" (Kingma et al. 2014): a digit classifier from 100 labels and many unlabelled images.

The pair is the library's ``SSVAE``: p(y) uniform over the K classes, p(z) = N(0, I),
p(x | y, z) Bernoulli pixels from a decoder of (z, one-hot y); the guide has a classifier
q(y | x) and an encoder q(z | x, y). For a labelled image y is observed; for an unlabelled
one it is a discrete latent whose gradient is handled by ``--y-estimator`` (``enumerate``
sums the ELBO over the K classes exactly). ``--aux-weight`` adds Kingma et al.'s
classification term alpha * log q(y | x) on labelled images. The script reports the
classifier's accuracy and draws generated digits for each class (the same z style, y varied).

    python examples/ss_vae.py                              # scikit-learn's digits, 100 labels, offline, a CPU-minute
    python examples/ss_vae.py --y-estimator gumbel         # sample y through a relaxation instead
    python examples/ss_vae.py --dataset mnist --data-path DATA/mnist --labels 3000 --z-dim 50 --hidden 500

(``--dataset mnist`` reads your copy of the MNIST idx files in ``DATA/mnist``.) The same model
with run folders and checkpoints is ``pyro-lvm train ss_vae``; see docs/discrete_latents.md.
"""

import argparse
import json
from pathlib import Path

import torch

from pyro_lvm import fit, set_seed
from pyro_lvm import plots
from pyro_lvm.data import load_images
from pyro_lvm.infer import ESTIMATORS, TemperatureAnnealing
from pyro_lvm.models import SSVAE, SemiSupervisedBatches, split_labelled


def main(args: argparse.Namespace) -> dict:
    set_seed(args.seed)
    # 1. Data: keep --labels labels of the training images (balanced over the classes); the
    #    other training images lose theirs. Each batch pairs unlabelled with labelled images.
    data = load_images(args.dataset, args.data_path, binarize=True, seed=args.seed)
    k = int(data.train_labels.max()) + 1
    x_u, x_l, y_l = split_labelled(data.train, data.train_labels, args.labels, k, seed=args.seed)
    batches = SemiSupervisedBatches(x_u, x_l, y_l, args.batch_size, labelled_batch_size=20, seed=args.seed)
    print(f"{data.name}: {len(x_u)} unlabelled and {len(y_l)} labelled training images, {k} classes")

    # 2. The pair; its objective treats y of unlabelled images with the chosen estimator.
    pair = SSVAE(data.x_dim, k, args.z_dim, tuple(args.hidden), y_estimator=args.y_estimator,
                 aux_weight=args.aux_weight)
    annealing = [TemperatureAnnealing(1e-3, min_temperature=0.5)] if ESTIMATORS[args.y_estimator].temperature else []

    # 3. Train (no validation loss here: the measure that matters is the classifier's accuracy).
    history = fit(pair, batches.loader(), elbo=pair.objective(), callbacks=annealing, epochs=args.epochs,
                  lr=args.lr, seed=args.seed, progress=True)

    # 4. Evaluate: accuracy of q(y | x) on held-out labelled images.
    pair.eval()
    results = {"labels": len(y_l), "y_estimator": args.y_estimator, "epochs": len(history),
               "train_loss": history["train_loss"],
               "valid_accuracy": pair.accuracy(data.valid, data.valid_labels),
               "test_accuracy": pair.accuracy(data.test, data.test_labels)}
    print(f"classifier accuracy from {len(y_l)} labels: valid {results['valid_accuracy']:.3f}, "
          f"test {results['test_accuracy']:.3f}")

    # 5. Figure: x ~ p(x | y, z) with fresh z, four per class, one row per class.
    out = Path(args.out)
    figure = plots.images_per_class(pair.generate(torch.arange(k), n_per_class=4), k, data.image_shape,
                                    out / "generated_per_class.png", "M2: x ~ p(x | y, z) for each class y")
    results["figures"] = [str(figure)]
    (out / "metrics.json").write_text(json.dumps(results, indent=1))
    print(f"figure and metrics.json in {out}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits", choices=["digits", "mnist"])
    parser.add_argument("--data-path", default=None, help="folder of your MNIST copy (idx files)")
    parser.add_argument("--labels", type=int, default=100, help="labelled training images")
    parser.add_argument("--y-estimator", default="enumerate", choices=list(ESTIMATORS))
    parser.add_argument("--aux-weight", type=float, default=10.0, help="alpha of the classification term")
    parser.add_argument("--z-dim", type=int, default=16)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=100, help="unlabelled images per batch")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/example_ss_vae")
    main(parser.parse_args())
