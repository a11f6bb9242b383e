"""Probabilistic PCA (Tipping & Bishop 1999): a latent-variable model with an exact marginal.

    z ~ Normal(0, I)                (z_dim,)
    x ~ Normal(W z + b, sigma^2 I)  (x_dim,)   =>   x ~ Normal(b, W W^T + sigma^2 I)

Because ``log p(x)`` has a closed form, this pair is the yardstick for the importance-sampled
log-likelihood and for gradient estimators: their answers can be checked to the last nat.
The guide is an amortised diagonal Gaussian (linear in x), deliberately not the exact
posterior (which has a full covariance), so the ELBO is strictly below ``log p(x)``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..validation import positive_number


class PPCA(nn.Module):
    """Linear-Gaussian model/guide pair with :meth:`exact_log_likelihood`.

    Args:
        x_dim, z_dim: observed and latent sizes.
        sigma: observation noise (fixed, not learned).
    """

    def __init__(self, x_dim: int = 5, z_dim: int = 2, sigma: float = 0.5):
        super().__init__()
        positive_number("sigma", sigma)
        self.x_dim, self.z_dim, self.sigma = x_dim, z_dim, float(sigma)
        self.W = nn.Parameter(torch.randn(x_dim, z_dim))
        self.b = nn.Parameter(torch.randn(x_dim) * 0.1)
        self.enc = nn.Linear(x_dim, 2 * z_dim)

    def objective(self) -> pyro.infer.ELBO:
        """The ELBO this pair is meant for: ``Trace_ELBO`` (reparameterised ``z``)."""
        return pyro.infer.Trace_ELBO()

    def model(self, x: torch.Tensor) -> None:
        """``x: (batch, x_dim)``."""
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.sigma).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """``x: (batch, x_dim)``; ``z: (batch, z_dim)``."""
        loc, raw = self.enc(x).chunk(2, dim=-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))

    def marginal(self) -> dist.MultivariateNormal:
        """The exact ``p(x) = Normal(b, W W^T + sigma^2 I)``."""
        cov = self.W @ self.W.T + self.sigma ** 2 * torch.eye(self.x_dim, dtype=self.W.dtype, device=self.W.device)
        return dist.MultivariateNormal(self.b, covariance_matrix=cov)

    @torch.no_grad()
    def exact_log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` per datapoint: ``(batch, x_dim) -> (batch,)``."""
        return self.marginal().log_prob(x)

    @torch.no_grad()
    def exact_posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """``p(z | x)``, a full-covariance Gaussian with batch shape ``(batch,)``."""
        precision = torch.eye(self.z_dim, dtype=x.dtype, device=x.device) + self.W.T @ self.W / self.sigma ** 2
        cov = torch.linalg.inv(precision)
        loc = (x - self.b) @ self.W @ cov.T / self.sigma ** 2
        return dist.MultivariateNormal(loc, covariance_matrix=cov)
