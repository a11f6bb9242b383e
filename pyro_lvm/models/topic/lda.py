""":class:`LDA` (Blei et al. 2003) with global topic-word distributions ``phi_k ~
Dirichlet(eta)`` (variational posterior ``Dirichlet(lambda_k)``), document proportions
``theta_d ~ Dirichlet(alpha)`` (amortised posterior ``Dirichlet(encoder(counts_d))``) and
one topic assignment ``z_dn`` per word. ``assignments="enumerated"`` keeps ``z`` as a
sample site that ``TraceEnum_ELBO(max_plate_nesting=2)`` sums out exactly, word by word;
``assignments="collapsed"`` writes the sum analytically, ``p(w | theta, phi) = theta @ phi``.
The two give the same log-likelihood for the same theta and phi (tested to float
precision) and so the same ELBO.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from torch import nn

from ... import validation
from ...data.bow import check_counts
from ...infer.scaling import full_data_elbo
from .bag_of_words import BagOfWords, DOCUMENTS, Encoder, TINY, WordGivenTopic, alpha_vector, check_topics, counts_to_tokens


class LDA(nn.Module):
    """LDA with a variational Dirichlet posterior over topics and an amortised one over proportions.

    Args:
        vocab_size: V.
        num_topics: K >= 2.
        assignments: ``"enumerated"`` (site ``z`` per word, for ``TraceEnum_ELBO`` with
            ``max_plate_nesting=2``) or ``"collapsed"`` (``z`` summed out analytically; any ELBO,
            ``TraceMeanField_ELBO`` gives closed-form KLs).
        alpha: prior concentration of theta (number or ``(K,)``).
        eta: prior concentration of each topic's word distribution.
        num_docs: deprecated (train with ``elbo=lda.objective(num_datapoints=N)``, the shared
            full-data scaling); until it goes, the model subsamples a plate of ``num_docs``
            documents, which scales a batch's local sites by ``num_docs / B`` as that does.
        hidden, dropout: the encoder of q(theta | counts).

    Sites: ``phi (K, V)`` in plate ``topics``; ``theta`` in plate ``documents`` (``(B, K)``
    collapsed, ``(B, 1, K)`` enumerated: documents sit at dim -2 there, words at dim -1);
    ``z (B, L)`` and observed ``w (B, L)`` (enumerated) or observed ``words (B, V)`` (collapsed).
    """

    ASSIGNMENTS = ("enumerated", "collapsed")

    def __init__(self, vocab_size: int, num_topics: int, assignments: str = "collapsed",
                 alpha: float | torch.Tensor = 1.0, eta: float = 0.1, num_docs: int | None = None,
                 hidden: int = 100, dropout: float = 0.2):
        super().__init__()
        check_topics(vocab_size, num_topics)
        if assignments not in self.ASSIGNMENTS:
            raise ValueError(f"assignments must be one of {self.ASSIGNMENTS}, got {assignments!r}")
        validation.positive_number("eta", eta)
        if num_docs is not None:
            warnings.warn("LDA(num_docs=N) is deprecated: train with elbo=lda.objective(num_datapoints=N), the "
                          "shared full-data scaling (pyro_lvm.infer.scaling.full_data_elbo). Until it goes, the model "
                          "subsamples a plate of N documents, which scales the same way", DeprecationWarning,
                          stacklevel=2)
        validation.Integer(1, optional=True)("num_docs", num_docs)
        self.vocab_size, self.num_topics, self.assignments = vocab_size, num_topics, assignments
        self.num_docs, self.eta = num_docs, float(eta)
        self.register_buffer("alpha", alpha_vector(alpha, num_topics))
        self.encoder = Encoder(vocab_size, num_topics, hidden, dropout)
        # q(phi_k) = Dirichlet(softplus(raw)); start near 1 + noise so topics differ
        init = 1.0 + torch.rand(num_topics, vocab_size)
        self.phi_raw = nn.Parameter(init.expm1().log())
        self.local_site = "theta"

    def phi_concentration(self) -> torch.Tensor:
        return F.softplus(self.phi_raw) + 1e-4

    def topic_word_probs(self) -> torch.Tensor:
        """Posterior mean of phi, ``(K, V)``."""
        c = self.phi_concentration().detach()
        return c / c.sum(-1, keepdim=True)

    def topic_word_logits(self) -> torch.Tensor:
        return self.topic_word_probs().log()

    def to_theta(self, latent: torch.Tensor) -> torch.Tensor:
        return latent

    def local_prior(self, batch: int) -> dist.Distribution:
        return dist.Dirichlet(self.alpha.expand(batch, self.num_topics))

    def local_posterior(self, counts: torch.Tensor) -> dist.Distribution:
        a, _ = self.encoder(counts)
        # concentration >= e^-1: smaller ones let float32 draws underflow to exact zeros, whose
        # log-density is infinite under the Monte Carlo objectives (Trace_ELBO, TraceEnum_ELBO)
        return dist.Dirichlet(a.clamp(-1.0, 6.0).exp())

    def word_log_probs(self, theta: torch.Tensor, phi: torch.Tensor | None = None) -> torch.Tensor:
        """``log (theta @ phi)``: ``(..., K)`` -> ``(..., V)``; phi defaults to its posterior mean."""
        phi = self.topic_word_probs() if phi is None else phi
        return (theta @ phi).clamp_min(TINY).log()

    def _documents(self, b: int, device: torch.device):
        dim = -2 if self.assignments == "enumerated" else -1
        if self.num_docs is None:
            return pyro.plate(DOCUMENTS, b, dim=dim)
        return pyro.plate(DOCUMENTS, self.num_docs, subsample=torch.arange(b, device=device), dim=dim)

    def model(self, counts: torch.Tensor) -> None:
        check_counts(counts, self.vocab_size)
        b, k, v = counts.shape[0], self.num_topics, self.vocab_size
        with pyro.plate("topics", k, dim=-1):
            phi = pyro.sample("phi", dist.Dirichlet(counts.new_full((v,), self.eta)))
        with self._documents(b, counts.device):
            if self.assignments == "collapsed":
                theta = pyro.sample("theta", dist.Dirichlet(self.alpha))                 # (B, K)
                pyro.sample("words", BagOfWords(self.word_log_probs(theta, phi), counts.sum(-1)), obs=counts)
                return
            theta = pyro.sample("theta", dist.Dirichlet(self.alpha))                     # (B, 1, K)
            tokens, mask = counts_to_tokens(counts)                                     # (B, L)
            log_phi = phi.clamp_min(TINY).log().log_softmax(-1)
            with pyro.plate("words", tokens.shape[1], dim=-1):
                # z is enumerated: its value is (K, 1, 1) under TraceEnum_ELBO, (B, L) otherwise.
                z = pyro.sample("z", dist.Categorical(logits=theta.clamp_min(TINY).log()),
                                infer={"enumerate": "parallel"})
                # Mask only the word: a padded z then sums to 1 over topics and adds exactly 0.
                with poutine.mask(mask=mask):
                    pyro.sample("w", WordGivenTopic(log_phi, z), obs=tokens)

    def guide(self, counts: torch.Tensor) -> None:
        check_counts(counts, self.vocab_size)
        with pyro.plate("topics", self.num_topics, dim=-1):
            pyro.sample("phi", dist.Dirichlet(self.phi_concentration()))
        with self._documents(counts.shape[0], counts.device):
            conc = self.local_posterior(counts).concentration
            if self.assignments == "enumerated":
                conc = conc.unsqueeze(-2)
            pyro.sample("theta", dist.Dirichlet(conc))

    def objective(self, num_datapoints: int | None = None, **kwargs: Any) -> Any:
        """The matching objective: ``TraceEnum_ELBO(max_plate_nesting=2)`` or ``TraceMeanField_ELBO``
        (``kwargs`` go to it); with ``num_datapoints`` (the training corpus's size) a batch's loss
        estimates the whole corpus's by the shared rule of :func:`~pyro_lvm.infer.scaling.full_data_elbo`
        (local sites times ``N / B``, the topics once)."""
        if self.assignments == "enumerated":
            elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=2, **kwargs)
        else:
            elbo = pyro.infer.TraceMeanField_ELBO(**kwargs)
        return elbo if num_datapoints is None else full_data_elbo(elbo, num_datapoints, data_plate=DOCUMENTS)

    def elbo(self, **kwargs: Any) -> Any:
        """Deprecated name of :meth:`objective`."""
        warnings.warn("LDA.elbo() is deprecated: use lda.objective(), the name every pyro_lvm pair has",
                      DeprecationWarning, stacklevel=2)
        return self.objective(**kwargs)


def log_likelihood_enumerated_brute_force(counts: torch.Tensor, theta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """``log p(words | theta, phi)`` of one small document by summing over every assignment
    vector ``z`` explicitly (``K ** L`` terms; for tests). counts ``(V,)``, theta ``(K,)``, phi ``(K, V)``."""
    import itertools

    tokens, _ = counts_to_tokens(counts[None])
    words = tokens[0, : int(counts.sum())].tolist()
    total = []
    for z in itertools.product(range(theta.numel()), repeat=len(words)):
        total.append(sum(math.log(theta[k]) + math.log(phi[k, w]) for k, w in zip(z, words)))
    return torch.logsumexp(torch.tensor(total, dtype=torch.float64), 0)
