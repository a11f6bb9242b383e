""":class:`ProdLDA` (Srivastava & Sutton 2017): an encoder network gives q(theta | counts);
the decoder is a product of experts, ``p(w | theta) = softmax(BN(W theta))`` with
unnormalised topic-word logits ``W``. ``posterior="logistic-normal"`` draws
``logtheta ~ Normal`` under the Laplace approximation of a Dirichlet(alpha) prior in the
softmax basis (:func:`laplace_dirichlet_prior`); ``posterior="dirichlet"`` draws
``theta ~ Dirichlet`` directly (Pyro's Dirichlet is reparameterised) under the true prior.
Train with ``TraceMeanField_ELBO`` (both KLs are closed form).
"""

from __future__ import annotations


import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ...data.bow import check_counts
from .bag_of_words import BagOfWords, DOCUMENTS, Encoder, alpha_vector, batch_norm, check_topics, laplace_dirichlet_prior


class ProdLDA(nn.Module):
    """ProdLDA: amortised topic proportions, product-of-experts decoder.

    Args:
        vocab_size: V.
        num_topics: K >= 2.
        hidden: encoder width.
        dropout: dropout on the encoder's hidden layer and on theta before decoding.
        alpha: Dirichlet prior concentration (number or ``(K,)``); 1.0 as in the paper.
        posterior: ``"logistic-normal"`` (site ``logtheta``, Laplace prior; ``theta`` is
            recorded with ``pyro.deterministic``) or ``"dirichlet"`` (site ``theta``).

    Sites: ``logtheta`` or ``theta`` ``(B, K)`` in plate ``documents``; ``words`` observed.
    """

    POSTERIORS = ("logistic-normal", "dirichlet")

    def __init__(self, vocab_size: int, num_topics: int, hidden: int = 100, dropout: float = 0.2,
                 alpha: float | torch.Tensor = 1.0, posterior: str = "logistic-normal"):
        super().__init__()
        check_topics(vocab_size, num_topics)
        if posterior not in self.POSTERIORS:
            raise ValueError(f"posterior must be one of {self.POSTERIORS}, got {posterior!r}")
        self.vocab_size, self.num_topics, self.posterior = vocab_size, num_topics, posterior
        self.encoder = Encoder(vocab_size, num_topics, hidden, dropout)
        self.beta = nn.Linear(num_topics, vocab_size, bias=False)   # unnormalised topic-word logits
        self.bn_beta = nn.BatchNorm1d(vocab_size, affine=False)
        self.drop_theta = nn.Dropout(dropout)
        self.register_buffer("alpha", alpha_vector(alpha, num_topics))
        mu, sigma2 = laplace_dirichlet_prior(self.alpha)
        self.register_buffer("prior_loc", mu)
        self.register_buffer("prior_scale", sigma2.sqrt())

    # -- pieces
    def word_logits(self, theta: torch.Tensor) -> torch.Tensor:
        """Proportions ``(..., K)`` -> unnormalised log p(word | theta) ``(..., V)``, ``BN(W theta)``."""
        return batch_norm(self.bn_beta, self.beta(self.drop_theta(theta)))

    def word_log_probs(self, theta: torch.Tensor) -> torch.Tensor:
        """Proportions ``(..., K)`` -> log p(word | theta) ``(..., V)``."""
        return self.word_logits(theta).log_softmax(-1)

    def to_theta(self, latent: torch.Tensor) -> torch.Tensor:
        """Values of the local site -> proportions on the simplex."""
        return latent.softmax(-1) if self.posterior == "logistic-normal" else latent

    @property
    def local_site(self) -> str:
        return "logtheta" if self.posterior == "logistic-normal" else "theta"

    def local_prior(self, batch: int) -> dist.Distribution:
        """p(local latent), batch ``(batch,)``, event ``(K,)``."""
        if self.posterior == "logistic-normal":
            return dist.Normal(self.prior_loc, self.prior_scale).expand([batch, self.num_topics]).to_event(1)
        return dist.Dirichlet(self.alpha.expand(batch, self.num_topics))

    def local_posterior(self, counts: torch.Tensor) -> dist.Distribution:
        """q(local latent | counts), batch ``(B,)``, event ``(K,)``."""
        a, b = self.encoder(counts)
        if self.posterior == "logistic-normal":
            return dist.Normal(a, (0.5 * b).exp()).to_event(1)          # b is a log-variance
        return dist.Dirichlet(a.clamp(-3.0, 6.0).exp())                  # concentration >= 0.05

    def topic_word_logits(self) -> torch.Tensor:
        """``(K, V)`` unnormalised topic-word weights (rows rank each topic's words)."""
        return self.beta.weight.detach().t()

    def objective(self) -> pyro.infer.ELBO:
        """The ELBO this pair is meant for: ``TraceMeanField_ELBO`` (its KL is closed form)."""
        return pyro.infer.TraceMeanField_ELBO()

    # -- the pair
    def model(self, counts: torch.Tensor) -> None:
        check_counts(counts, self.vocab_size)
        with pyro.plate(DOCUMENTS, counts.shape[0]):
            latent = pyro.sample(self.local_site, self.local_prior(counts.shape[0]))
            theta = self.to_theta(latent)
            if self.posterior == "logistic-normal":
                pyro.deterministic("theta", theta, event_dim=1)
            # BagOfWords normalises its logits itself (normalising here too would do it twice)
            pyro.sample("words", BagOfWords(self.word_logits(theta), counts.sum(-1)), obs=counts)

    def guide(self, counts: torch.Tensor) -> None:
        check_counts(counts, self.vocab_size)
        with pyro.plate(DOCUMENTS, counts.shape[0]):
            pyro.sample(self.local_site, self.local_posterior(counts))
