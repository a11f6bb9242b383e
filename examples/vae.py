"""A variational autoencoder on handwritten digits, written out from its math.

The model and guide below are the whole VAE: a prior p(z) = N(0, I), a likelihood p(x | z)
that is a Bernoulli per pixel with logits from a decoder network, and an approximate
posterior q(z | x) = N(mu(x), diag sigma(x)^2) from an encoder network. Training maximises

    ELBO(x) = E_q(z|x)[log p(x | z)] - KL(q(z | x) || p(z))  <=  log p(x)

The library trains the pair (``fit``), scores it on test images (ELBO, its two terms, an
importance-sampled log p(x), the PSIS check of the guide, active units) and draws figures.

    python examples/vae.py                  # scikit-learn's 8x8 digits, offline, about a CPU-minute
    python examples/vae.py --dataset binarized-mnist --data-path DATA/binarized_mnist \\
        --z-dim 20 --hidden 400 --epochs 50

(``DATA/``: the folder with your copy of binarized MNIST, see docs/data.md.) The same VAE
with every option (autoencoder baseline, run folders, resume, several processes) is
``pyro-lvm train vae``; see docs/vae.md.
"""

import argparse
import json
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_lvm import evaluation_report, fit, set_seed
from pyro_lvm import plots
from pyro_lvm.data import load_images
from pyro_lvm.evaluation.diagnostics import active_units


class VAE(nn.Module):
    """p(z) p(x | z) with q(z | x): images ``x`` are ``(batch, x_dim)`` in {0, 1}, codes ``z`` ``(batch, z_dim)``."""

    def __init__(self, x_dim: int, z_dim: int, hidden: int):
        super().__init__()
        self.z_dim = z_dim
        # theta: z -> logits of the x_dim pixels of p(x | z)
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.Softplus(), nn.Linear(hidden, x_dim))
        # phi: x -> (mu, log sigma) of q(z | x)
        self.encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.Softplus(), nn.Linear(hidden, 2 * z_dim))

    def model(self, x: torch.Tensor) -> None:
        pyro.module("decoder", self.decoder)  # theta: the generative network's weights
        # Datapoints are independent: log p(x) and the ELBO are sums over the batch.
        with pyro.plate("data", x.shape[0]):
            # p(z) = N(0, I): the prior that the KL term pulls q(z | x) towards
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            # p(x | z) = prod_pixels Bernoulli(sigmoid(decoder(z))): the reconstruction term log p(x | z)
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("encoder", self.encoder)  # phi: the inference network's weights
        mu, log_sigma = self.encoder(x).chunk(2, dim=-1)
        with pyro.plate("data", x.shape[0]):
            # q(z | x) = N(mu(x), diag sigma(x)^2), same site name as the prior's: z is drawn here,
            # reparameterised (z = mu + sigma * eps), so gradients of the ELBO reach phi
            pyro.sample("z", dist.Normal(mu, log_sigma.exp()).to_event(1))

    # What the figures need: the mean image of p(x | z) at the code of x, and draws from the prior.
    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(self.encoder(x).chunk(2, dim=-1)[0]))

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        return torch.sigmoid(self.decoder(torch.randn(n, self.z_dim)))


def main(args: argparse.Namespace) -> dict:
    set_seed(args.seed)
    # 1. Data: binary images as (N, x_dim) tensors, split into train / valid / test.
    data = load_images(args.dataset, args.data_path, binarize=True, seed=args.seed)
    print(f"{data.name}: {len(data.train)} / {len(data.valid)} / {len(data.test)} images of {data.image_shape}")

    # 2. Train: fit maximises the ELBO by SVI (Trace_ELBO: one reparameterised draw of z per image),
    #    logging the negative ELBO per image on the train and validation sets each epoch.
    pair = VAE(data.x_dim, args.z_dim, args.hidden)
    history = fit(pair, data.train, data.valid, elbo=pyro.infer.Trace_ELBO(), epochs=args.epochs,
                  batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=True)

    # 3. Evaluate on the test images (nats per image): ELBO = reconstruction - KL <= log p(x).
    pair.eval()
    report = evaluation_report(pair, data.test, num_samples=args.samples)
    report["active_units"] = int(active_units(pair, data.test))  # dimensions of z the encoder uses
    print(f"test ELBO {report['elbo']:.2f} = reconstruction {report['reconstruction']:.2f} - KL {report['kl']:.2f}")
    print(f"test log p(x) ~ {report['log_likelihood']:.2f} ({args.samples} importance samples), "
          f"PSIS k-hat median {report['psis']['khat_median']:.2f}, active units {report['active_units']} of {args.z_dim}")

    # 4. Figures: test images above their reconstructions, samples from the prior, the loss per epoch.
    out = Path(args.out)
    figures = plots.image_model_figures(pair, data.test[:10], data.image_shape, {"VAE": history}, out,
                                        "test images and their reconstructions")
    results = {"epochs": len(history), "valid_loss": history["valid_loss"], "test": report,
               "figures": [str(p) for p in figures]}
    (out / "metrics.json").write_text(json.dumps(results, indent=1))
    print(f"figures and metrics.json in {out}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits", choices=["digits", "binarized-mnist"])
    parser.add_argument("--data-path", default=None, help="folder of your binarized MNIST copy")
    parser.add_argument("--z-dim", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128, help="width of the encoder's and decoder's hidden layer")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--samples", type=int, default=500, help="importance samples for the test log-likelihood")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/example_vae")
    main(parser.parse_args())
