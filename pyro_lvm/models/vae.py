"""The Gaussian VAE (Kingma & Welling 2014) and a deterministic autoencoder for contrast.

Generative model, for each datapoint ``x`` (a flattened image ``(x_dim,)``)::

    z ~ Normal(0, I)                       (z_dim,)
    x ~ Bernoulli(logits=f(z))             or  Normal(f(z), sigma), sigma learned per pixel

Guide: ``q(z | x) = Normal(mu(x), diag sigma(x)^2)``, sampled by reparameterisation
(``Normal.rsample``), which is what lets the ELBO's gradient flow through ``z``.

The autoencoder uses the same networks but a point-mass guide ``z = mu(x)`` and an improper
flat "prior": training maximises reconstruction only. It can encode, decode and
interpolate, but it has no prior to sample from and assigns no likelihood to data.
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn

from .. import validation
from .networks import ConvDecoder, ConvEncoder, GaussianEncoder, MLPDecoder

LIKELIHOODS = ("bernoulli", "gaussian")
ARCHITECTURES = ("mlp", "conv")


def check_images(x: torch.Tensor, x_dim: int, likelihood: str, name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` is a finite float tensor ``(batch, x_dim)`` in range."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype} (convert with x.float())")
    if x.dim() != 2 or x.shape[-1] != x_dim:
        raise ValueError(f"{name} must have shape (batch, {x_dim}), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (batch of 0)")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf values")
    if likelihood == "bernoulli" and bool(((x < 0) | (x > 1)).any()):
        raise ValueError(
            f"{name} has values outside [0, 1] (min {float(x.min()):.3g}, max {float(x.max()):.3g}); "
            "a Bernoulli likelihood needs pixel intensities in [0, 1]"
        )


class _ImageLatentModel(nn.Module):
    """Networks, validation and decoding shared by :class:`VAE` and :class:`Autoencoder`."""

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int], likelihood: str, architecture: str):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        x_dim, z_dim = validation.positive_int("x_dim", x_dim), validation.positive_int("z_dim", z_dim)
        hidden = validation.sizes("hidden", hidden)
        if architecture == "conv" and x_dim != 784:
            raise ValueError(f"the convolutional architecture is for 28x28 images (x_dim=784), got x_dim={x_dim}")
        self.x_dim, self.z_dim, self.likelihood = x_dim, z_dim, likelihood
        if architecture == "conv":
            self.encoder: nn.Module = ConvEncoder(z_dim)
            self.decoder: nn.Module = ConvDecoder(z_dim)
        else:
            self.encoder = GaussianEncoder(x_dim, z_dim, hidden)
            self.decoder = MLPDecoder(z_dim, x_dim, tuple(reversed(hidden)))
        if likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.full((x_dim,), -1.0))

    def objective(self) -> pyro.infer.ELBO:
        """The ELBO this pair is meant for: ``Trace_ELBO`` (reparameterised ``z``; ``fit``'s
        default before pairs had one, so a run without ``elbo=`` trains as it did)."""
        return pyro.infer.Trace_ELBO()

    def _check(self, x: torch.Tensor) -> None:
        # Shape checks are cheap and always on; the full scan of values runs only while Pyro
        # validation is enabled (fit() enables it for the first step).
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[-1] != self.x_dim or not x.is_floating_point():
            check_images(x, self.x_dim, self.likelihood)
        if pyro.poutine.util.is_validation_enabled():
            check_images(x, self.x_dim, self.likelihood)

    def likelihood_dist(self, z: torch.Tensor) -> dist.TorchDistribution:
        """``p(x | z)`` with event shape ``(x_dim,)`` for codes ``z (..., z_dim)``."""
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            # validate_args=False lets grey-level intensities in [0, 1] act as soft targets,
            # as in Pyro's VAE example; check_images guards the range instead.
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        return dist.Normal(out, self.log_sigma.exp()).to_event(1)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean of ``p(x | z)``: ``(..., z_dim) -> (..., x_dim)``."""
        return self.likelihood_dist(z).mean

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code used for reconstruction and interpolation: ``(batch, x_dim) -> (batch, z_dim)``."""
        self._check(x)
        return self.encoder(x)[0]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the code of each input: ``(batch, x_dim) -> (batch, x_dim)``."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def interpolate(self, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 8) -> torch.Tensor:
        """Decode ``steps`` evenly spaced points between the codes of two inputs ``(x_dim,)``.

        Returns ``(steps, x_dim)``; the first row decodes ``x_a``'s code, the last ``x_b``'s.
        """
        validation.Integer(2)("steps", steps)
        z = self.encode(torch.stack([x_a, x_b]))
        t = torch.linspace(0, 1, steps, device=z.device).unsqueeze(-1)
        return self.decode((1 - t) * z[0] + t * z[1])


class VAE(_ImageLatentModel):
    """Gaussian VAE as a model/guide pair.

    Args:
        x_dim: flattened input size (784 for 28x28, 64 for 8x8 digits).
        z_dim: latent dimension.
        hidden: hidden layer widths of the encoder (the decoder mirrors them).
        likelihood: ``"bernoulli"`` (inputs in [0, 1]) or ``"gaussian"`` (learned per-pixel scale).
        architecture: ``"mlp"`` or ``"conv"`` (28x28 inputs only).
    """

    def __init__(self, x_dim: int = 784, z_dim: int = 20, hidden: Sequence[int] = (400,),
                 likelihood: str = "bernoulli", architecture: str = "mlp"):
        super().__init__(x_dim, z_dim, hidden, likelihood, architecture)
        # Prior parameters as buffers so they follow .to(device) and the data's dtype.
        self.register_buffer("prior_loc", torch.zeros(z_dim))
        self.register_buffer("prior_scale", torch.ones(z_dim))

    def model(self, x: torch.Tensor) -> None:
        """``x: (batch, x_dim)``."""
        self._check(x)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
            pyro.sample("x", self.likelihood_dist(z), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """``x: (batch, x_dim)``; ``z: (batch, z_dim)``."""
        self._check(x)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Draw ``n`` new datapoints' means from the prior: ``(n, x_dim)``."""
        validation.positive_int("n", n)
        z = dist.Normal(self.prior_loc, self.prior_scale).sample((n,))
        return self.decode(z)


class Autoencoder(_ImageLatentModel):
    """Deterministic autoencoder trained by the same loop: reconstruction loss only.

    As a model/guide pair: the guide puts a point mass at ``z = mu(x)`` and the model's
    "prior" on ``z`` is an improper flat density (log density 0), so the negative ELBO is
    exactly the reconstruction loss ``-log p(x | mu(x))``. There is no prior to sample from
    (:meth:`sample` raises) and no likelihood of data (the evaluation functions refuse).
    """

    def __init__(self, x_dim: int = 784, z_dim: int = 20, hidden: Sequence[int] = (400,),
                 likelihood: str = "bernoulli", architecture: str = "mlp"):
        super().__init__(x_dim, z_dim, hidden, likelihood, architecture)

    def model(self, x: torch.Tensor) -> None:
        """``x: (batch, x_dim)``."""
        self._check(x)
        with pyro.plate("data", x.shape[0]):
            flat = dist.ImproperUniform(constraints.real, (), (self.z_dim,))
            z = pyro.sample("z", flat)
            pyro.sample("x", self.likelihood_dist(z), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """``x: (batch, x_dim)``; ``z = mu(x): (batch, z_dim)``."""
        self._check(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(self.encoder(x)[0]).to_event(1))

    def sample(self, n: int) -> torch.Tensor:
        raise NotImplementedError(
            "an autoencoder has no prior over z, so there is nothing to sample new data from; "
            "train a VAE for that (pyro_lvm.models.VAE)"
        )
