"""Categorical VAE (Jang et al. 2017; Maddison et al. 2017): N categorical latents of K classes.

Generative model for a binary image ``x (x_dim,)``::

    z_n ~ Categorical(1/K, ..., 1/K)      n = 1..N, one-hot, z: (N, K)
    x   ~ Bernoulli(logits=f(flatten(z)))

Guide: ``q(z_n | x) = Categorical(softmax(g(x)_n))``, independent over n.

The pair is written in plain discrete Pyro (``OneHotCategorical`` sites). How the gradient
through ``z`` is estimated is the objective's business: :meth:`CategoricalVAE.objective`
returns a :class:`~pyro_lvm.infer.discrete.estimators.DiscreteELBO` for the pair's ``estimator``
(``"gumbel"`` by default; see :data:`~pyro_lvm.infer.discrete.estimators.ESTIMATORS`), and
:class:`~pyro_lvm.infer.discrete.estimators.TemperatureAnnealing` anneals its temperature in ``fit``.
Evaluation always uses the discrete model itself (:meth:`CategoricalVAE.negative_elbo`), so
every estimator is judged by the same bound.
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from .. import validation
from ..infer.discrete.estimators import (ESTIMATORS, DiscreteELBO, TemperatureAnnealing, check_estimator,
                                         check_num_classes, check_temperature)
from .networks import mlp
from .vae import check_images

__all__ = ["CategoricalVAE", "ESTIMATORS", "TemperatureAnnealing"]


class CategoricalVAE(nn.Module):
    """VAE with ``n_latents`` categorical latents of ``n_classes`` classes each.

    Args:
        x_dim: flattened image size (784 for MNIST, 64 for 8x8 digits).
        n_latents, n_classes: N and K (Jang et al. use 20 x 10 = 200 units on MNIST).
        hidden: encoder hidden widths (decoder mirrors them); Jang et al.: 512, 256.
        estimator: gradient estimator name used by :meth:`objective`.
        temperature: initial relaxation temperature.
        max_enum_size: ``estimator="enumerate"`` is refused when ``K ** N`` exceeds this.
    """

    def __init__(self, x_dim: int = 784, n_latents: int = 20, n_classes: int = 10,
                 hidden: Sequence[int] = (512, 256), estimator: str = "gumbel", temperature: float = 1.0,
                 max_enum_size: float = 1e5):
        super().__init__()
        x_dim, n_latents = validation.positive_int("x_dim", x_dim), validation.positive_int("n_latents", n_latents)
        hidden = validation.sizes("hidden", hidden)
        check_num_classes(n_classes, "n_classes")
        self.x_dim, self.n_latents, self.n_classes = x_dim, n_latents, n_classes
        self.max_enum_size = max_enum_size
        self.estimator = estimator
        self.temperature = check_temperature(temperature)
        codes = n_latents * n_classes
        self.encoder = mlp([x_dim, *hidden, codes])
        self.decoder = mlp([codes, *reversed(tuple(hidden)), x_dim])
        # Learned baseline for the score-function estimator (Mnih & Gregor 2014): predicts the
        # ELBO of x; only TraceGraph_ELBO reads it, other objectives leave it untouched.
        self.baseline_net = _Squeeze(mlp([x_dim, 100, 1]))
        self.register_buffer("prior_logits", torch.zeros(n_latents, n_classes))

    @property
    def estimator(self) -> str:
        return self._estimator

    @estimator.setter
    def estimator(self, name: str) -> None:
        check_estimator(name)
        if name == "enumerate":
            size = float(self.n_classes) ** self.n_latents
            if size > self.max_enum_size:
                raise ValueError(
                    f"estimator 'enumerate' refused: {self.n_latents} latents of {self.n_classes} classes "
                    f"have {self.n_classes}^{self.n_latents} = {size:.3g} joint values (limit "
                    f"max_enum_size={self.max_enum_size:.3g})")
        self._estimator = name

    def objective(self, **kwargs) -> DiscreteELBO:
        """The training objective for this pair's estimator and temperature."""
        return DiscreteELBO(self.estimator, self.temperature, max_plate_nesting=1,
                            max_enum_size=self.max_enum_size, **kwargs)

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[-1] != self.x_dim or pyro.poutine.util.is_validation_enabled():
            check_images(x, self.x_dim, "bernoulli")

    def likelihood_dist(self, z: torch.Tensor) -> dist.TorchDistribution:
        """``p(x | z)`` for one-hot (or relaxed) codes ``z (..., N, K)``; event ``(x_dim,)``."""
        logits = self.decoder(z.reshape(*z.shape[:-2], self.n_latents * self.n_classes))
        return dist.Bernoulli(logits=logits, validate_args=False).to_event(1)

    def posterior_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised ``log q(z_n = k | x)``: ``(batch, x_dim) -> (batch, N, K)``."""
        return self.encoder(x).reshape(*x.shape[:-1], self.n_latents, self.n_classes)

    def model(self, x: torch.Tensor) -> None:
        """``x: (batch, x_dim)``; ``z: (batch, N, K)`` one-hot."""
        self._check(x)
        with pyro.plate("data", x.shape[0]):
            prior = dist.OneHotCategorical(logits=self.prior_logits).expand([x.shape[0], self.n_latents])
            z = pyro.sample("z", prior.to_event(1))
            pyro.sample("x", self.likelihood_dist(z), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """``x: (batch, x_dim)``; ``z: (batch, N, K)``."""
        self._check(x)
        with pyro.plate("data", x.shape[0]):
            baseline = {"nn_baseline": self.baseline_net, "nn_baseline_input": x}
            q = dist.OneHotCategorical(logits=self.posterior_logits(x))
            pyro.sample("z", q.to_event(1), infer={"baseline": baseline})

    # ------------------------------------------------------------------ evaluation and use

    @torch.no_grad()
    def negative_elbo(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """``-ELBO`` of the *discrete* model per datapoint, ``(batch,)``.

        ``E_q[-log p(x | z)]`` by ``num_samples`` one-hot samples plus the exact
        ``KL(q(z | x) || p(z))``; the same bound for every training estimator.
        """
        self._check(x)
        logits = self.posterior_logits(x)
        q = dist.OneHotCategorical(logits=logits)
        prior = dist.OneHotCategorical(logits=self.prior_logits.expand_as(logits))
        kl = torch.distributions.kl_divergence(q, prior).sum(-1)
        z = q.sample((num_samples,))
        recon = self.likelihood_dist(z).log_prob(x).mean(0)
        return kl - recon

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Most probable code per latent: ``(batch, x_dim) -> (batch, N)`` class indices."""
        self._check(x)
        return self.posterior_logits(x).argmax(-1)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the most probable code: ``(batch, x_dim) -> (batch, x_dim)`` pixel means."""
        z = torch.nn.functional.one_hot(self.encode(x), self.n_classes).to(x.dtype)
        return self.likelihood_dist(z).mean

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` images' pixel means decoded from prior draws: ``(n, x_dim)``."""
        validation.positive_int("n", n)
        z = dist.OneHotCategorical(logits=self.prior_logits).sample((n,))
        return self.likelihood_dist(z).mean


class _Squeeze(nn.Module):
    """Wraps a network ``(..., 1)``-output as ``(...)``: Pyro's baseline must match the cost's shape."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)
