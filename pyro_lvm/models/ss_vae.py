"""Semi-supervised VAE "M2" (Kingma, Rezende, Mohamed & Welling 2014).

Generative model for an image ``x (x_dim,)`` with class ``y`` (K classes)::

    y ~ Categorical(1/K, ..., 1/K)     one-hot (K,)
    z ~ Normal(0, I)                   (z_dim,)
    x ~ Bernoulli(logits=f(z, y))

Guide: ``q(y | x) = Categorical(softmax(g(x)))`` (the classifier) and
``q(z | x, y) = Normal(mu(x, y), diag sigma(x, y)^2)``.

A batch is ``(x_u, x_l, y_l)``: unlabelled images ``(n_u, x_dim)``, labelled images
``(n_l, x_dim)`` and their integer labels ``(n_l,)``. For ``x_u``, ``y`` is a latent
variable whose gradient estimator is chosen by name (``y_estimator``: ``"enumerate"`` sums
over the K classes, ``"score-function"`` samples, ``"gumbel"`` relaxes; see
:class:`~pyro_lvm.infer.discrete.estimators.DiscreteELBO`); for ``x_l`` it is observed. With
``aux_weight = alpha > 0`` the model adds Kingma et al.'s auxiliary classification term
``alpha * log q(y_l | x_l)`` (eq. 9), which trains the classifier on labelled data directly.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, IterableDataset

from .. import validation
from ..infer.discrete.estimators import DiscreteELBO, check_estimator, check_num_classes
from .networks import GaussianEncoder, mlp
from .vae import check_images


def _cat(*tensors: torch.Tensor) -> torch.Tensor:
    """Concatenate on the last dim after broadcasting the leading dims (enumerated ``y`` has an extra one)."""
    lead = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(lead + t.shape[-1:]) for t in tensors], -1)


class SSVAE(nn.Module):
    """M2 as a model/guide pair.

    Args:
        x_dim: flattened image size.
        n_classes: K (>= 2).
        z_dim: continuous latent size.
        hidden: hidden widths of the classifier, the z-encoder and (mirrored) the decoder.
        y_estimator: how unlabelled ``y`` is handled (a :data:`~pyro_lvm.infer.discrete.estimators.ESTIMATORS` name).
        temperature: relaxation temperature for relaxed estimators.
        aux_weight: alpha of the auxiliary classification loss (0 turns it off).
    """

    def __init__(self, x_dim: int = 784, n_classes: int = 10, z_dim: int = 50, hidden: Sequence[int] = (500,),
                 y_estimator: str = "enumerate", temperature: float = 1.0, aux_weight: float = 0.0):
        super().__init__()
        check_num_classes(n_classes, "n_classes")
        x_dim, z_dim = validation.positive_int("x_dim", x_dim), validation.positive_int("z_dim", z_dim)
        hidden = validation.sizes("hidden", hidden)
        aux_weight = validation.non_negative_number("aux_weight", aux_weight)
        self.x_dim, self.n_classes, self.z_dim = x_dim, n_classes, z_dim
        self.y_estimator = check_estimator(y_estimator)
        self.temperature, self.aux_weight = temperature, float(aux_weight)
        self.classifier = mlp([x_dim, *hidden, n_classes])
        self.encoder_z = GaussianEncoder(x_dim + n_classes, z_dim, hidden)
        self.decoder = mlp([z_dim + n_classes, *reversed(tuple(hidden)), x_dim])
        self.register_buffer("prior_logits", torch.zeros(n_classes))

    def objective(self, **kwargs: Any) -> DiscreteELBO:
        """The training objective for ``y_estimator`` (enumeration sums over ``y_u`` only)."""
        return DiscreteELBO(self.y_estimator, self.temperature, max_plate_nesting=1, **kwargs)

    def _check(self, x: torch.Tensor | None, name: str) -> None:
        if x is not None and (not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[-1] != self.x_dim
                              or pyro.poutine.util.is_validation_enabled()):
            check_images(x, self.x_dim, "bernoulli", name)

    def _one_hot(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if y.dtype not in (torch.int64, torch.int32) or y.shape != x.shape[:1]:
            raise ValueError(f"y_l must be integer labels of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
        if bool(((y < 0) | (y >= self.n_classes)).any()):
            raise ValueError(f"labels must lie in 0..{self.n_classes - 1}, got min {int(y.min())}, max {int(y.max())}")
        return F.one_hot(y.long(), self.n_classes).to(x.dtype)

    def model(self, x_u: torch.Tensor | None, x_l: torch.Tensor | None = None, y_l: torch.Tensor | None = None) -> None:
        """``x_u: (n_u, x_dim)`` unlabelled; ``x_l: (n_l, x_dim)`` with labels ``y_l: (n_l,)``."""
        # Labelled part first: its auxiliary factor lies outside any plate and must come before
        # the enumerated y_u (TraceEnum_ELBO's plate-independence check).
        for tag, x, y in (("l", x_l, y_l), ("u", x_u, None)):
            if x is None:
                continue
            self._check(x, f"x_{tag}")
            y_obs = self._one_hot(y, x) if tag == "l" else None
            with pyro.plate(f"data_{tag}", x.shape[0]):
                prior = dist.OneHotCategorical(logits=self.prior_logits).expand([x.shape[0]])
                y_val = pyro.sample(f"y_{tag}", prior, obs=y_obs)
                z = pyro.sample(f"z_{tag}", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
                logits = self.decoder(_cat(z, y_val))
                pyro.sample(f"x_{tag}", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)
            if tag == "l" and self.aux_weight > 0:
                # Kingma et al. (2014) eq. 9: alpha * E_labelled[log q(y | x)].
                log_q = torch.log_softmax(self.classifier(x), -1)
                pyro.factor("aux_classification", self.aux_weight * (log_q * y_obs).sum())

    def guide(self, x_u: torch.Tensor | None, x_l: torch.Tensor | None = None, y_l: torch.Tensor | None = None) -> None:
        """``q(y_u | x_u) q(z_u | x_u, y_u) q(z_l | x_l, y_l)``."""
        if x_l is not None:
            with pyro.plate("data_l", x_l.shape[0]):
                loc, scale = self.encoder_z(_cat(x_l, self._one_hot(y_l, x_l)))
                pyro.sample("z_l", dist.Normal(loc, scale).to_event(1))
        if x_u is not None:
            with pyro.plate("data_u", x_u.shape[0]):
                y = pyro.sample("y_u", dist.OneHotCategorical(logits=self.classifier(x_u)))
                loc, scale = self.encoder_z(_cat(x_u, y))
                pyro.sample("z_u", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Most probable class under ``q(y | x)``: ``(batch, x_dim) -> (batch,)``."""
        self._check(x, "x")
        return self.classifier(x).argmax(-1)

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Fraction of ``x`` classified as ``y``."""
        return float((self.classify(x) == y).float().mean())

    @torch.no_grad()
    def generate(self, y: torch.Tensor, n_per_class: int = 1) -> torch.Tensor:
        """Pixel means for classes ``y (m,)`` with fresh ``z``: ``(m * n_per_class, x_dim)`` (analogies)."""
        y = y.repeat_interleave(n_per_class)
        z = torch.randn(len(y), self.z_dim, device=self.prior_logits.device)
        onehot = F.one_hot(y, self.n_classes).to(z.dtype)
        return torch.sigmoid(self.decoder(torch.cat([z, onehot], -1)))


class SemiSupervisedBatches(IterableDataset):
    """Batches ``(x_u, x_l, y_l)``: each unlabelled batch paired with a labelled batch.

    One pass is one epoch of the unlabelled data; the labelled set is cycled (it is usually
    much smaller). The order is reshuffled every pass by a generator seeded once, so runs
    are reproducible. Wrap with :meth:`loader` for :func:`pyro_lvm.fit`.
    """

    def __init__(self, x_u: torch.Tensor, x_l: torch.Tensor, y_l: torch.Tensor, batch_size: int = 100,
                 labelled_batch_size: int = 20, seed: int = 0):
        if len(x_l) != len(y_l) or len(x_l) == 0:
            raise ValueError(f"need a non-empty labelled set with one label per image; got {len(x_l)} images, {len(y_l)} labels")
        if len(x_u) == 0:
            raise ValueError("the unlabelled set is empty")
        self.x_u, self.x_l, self.y_l = x_u, x_l, y_l
        self.batch_size, self.labelled_batch_size = batch_size, min(labelled_batch_size, len(x_l))
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.x_u)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order_u = torch.randperm(len(self.x_u), generator=self.generator)
        order_l = torch.randperm(len(self.x_l), generator=self.generator)
        pos = 0
        for start in range(0, len(order_u), self.batch_size):
            idx_l = order_l[(torch.arange(self.labelled_batch_size) + pos) % len(order_l)]
            pos += self.labelled_batch_size
            yield self.x_u[order_u[start:start + self.batch_size]], self.x_l[idx_l], self.y_l[idx_l]

    def loader(self) -> DataLoader:
        """A ``DataLoader`` yielding these batches as they are (``batch_size=None``)."""
        return DataLoader(self, batch_size=None)


def split_labelled(x: torch.Tensor, y: torch.Tensor, n_labels: int, n_classes: int, seed: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep ``n_labels`` labels, balanced over classes; return ``(x_unlabelled, x_labelled, y_labelled)``.

    The unlabelled set is all the other images (their labels are dropped).
    """
    if not 1 <= n_labels <= len(x):
        raise ValueError(f"n_labels must be between 1 and {len(x)}, got {n_labels}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=g)
    per_class = [order[y[order] == c] for c in range(n_classes)]
    picked, i = [], 0
    while len(picked) < n_labels:
        pool = per_class[i % n_classes]
        k = i // n_classes
        if k < len(pool):
            picked.append(int(pool[k]))
        i += 1
        if i > n_classes * len(x):
            break
    picked_t = torch.tensor(picked, dtype=torch.long)
    mask = torch.ones(len(x), dtype=torch.bool)
    mask[picked_t] = False
    return x[mask], x[picked_t], y[picked_t]
