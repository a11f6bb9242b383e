"""A toy categorical mixture where the ELBO and its gradient are exact by enumeration.

For each datapoint ``x (x_dim,)``::

    z ~ Categorical(1/K, ..., 1/K)          one-hot (K,)
    x ~ Normal(z @ locs, scale * I)         locs: (K, x_dim), learned

Guide: ``q(z | x) = Categorical(softmax(W x + b))`` (amortised, linear). With one discrete
latent of K values the ELBO is a sum of K terms per datapoint, so :meth:`exact_elbo` computes
it in closed form in plain PyTorch: the brute-force reference every estimator (enumeration
included) is checked against in ``tests/test_discrete.py``, and the model of the gradient
variance benchmark (``benchmarks/estimator_variance.py``).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..infer.discrete.estimators import DiscreteELBO, check_num_classes
from ..validation import positive_number


class CategoricalMixture(nn.Module):
    """Mixture of K isotropic Gaussians with a categorical latent and a linear guide.

    Args:
        n_classes: K (>= 2).
        x_dim: data dimension.
        scale: the fixed standard deviation of each component.
        spread: standard deviation of the initial component means.
    """

    def __init__(self, n_classes: int = 10, x_dim: int = 2, scale: float = 1.0, spread: float = 3.0):
        super().__init__()
        check_num_classes(n_classes, "n_classes")
        positive_number("scale", scale)
        self.n_classes, self.x_dim, self.scale = n_classes, x_dim, float(scale)
        self.locs = nn.Parameter(spread * torch.randn(n_classes, x_dim))
        self.guide_net = nn.Linear(x_dim, n_classes)
        self.register_buffer("prior_logits", torch.full((n_classes,), -math.log(n_classes)))

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[-1] != self.x_dim:
            raise ValueError(f"x must be a tensor of shape (batch, {self.x_dim}), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")

    def objective(self) -> DiscreteELBO:
        """The objective this pair is meant for: the exact ELBO, summing ``z``'s ``K`` values
        (``DiscreteELBO("enumerate")``)."""
        return DiscreteELBO("enumerate", max_plate_nesting=1)

    def model(self, x: torch.Tensor) -> None:
        """``x: (batch, x_dim)``; ``z: (batch, K)`` one-hot."""
        self._check(x)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.OneHotCategorical(logits=self.prior_logits))
            pyro.sample("x", dist.Normal(z @ self.locs, self.scale).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """``x: (batch, x_dim)``."""
        self._check(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.OneHotCategorical(logits=self.guide_net(x)))

    def exact_elbo(self, x: torch.Tensor) -> torch.Tensor:
        """Closed-form ELBO per datapoint ``(batch,)``: ``sum_k q_k (log p(x|k) + log pi_k - log q_k)``.

        Differentiable; plain PyTorch with no Pyro machinery (the brute-force reference).
        """
        self._check(x)
        log_q = torch.log_softmax(self.guide_net(x), -1)                      # (batch, K)
        log_lik = dist.Normal(self.locs, self.scale).log_prob(x.unsqueeze(-2)).sum(-1)  # (batch, K)
        return (log_q.exp() * (log_lik + self.prior_logits - log_q)).sum(-1)

    @staticmethod
    def simulate(n: int, n_classes: int = 10, x_dim: int = 2, scale: float = 1.0, spread: float = 3.0,
                 seed: int = 0) -> torch.Tensor:
        """``n`` datapoints ``(n, x_dim)`` from a mixture with random means (fixed by ``seed``)."""
        g = torch.Generator().manual_seed(seed)
        locs = spread * torch.randn(n_classes, x_dim, generator=g)
        z = torch.randint(n_classes, (n,), generator=g)
        return locs[z] + scale * torch.randn(n, x_dim, generator=g)
