"""Topic models on bag-of-words counts: ProdLDA and LDA (enumerated or collapsed assignments).

Every model takes one batch ``counts (B, V)``: float word counts of B documents over a
vocabulary of V words (:mod:`pyro_lvm.data.bow`). Words are modelled as an *ordered*
sequence drawn i.i.d. given the document, so a document's likelihood is
``sum_v counts_v * log p(v | document)`` with no multinomial coefficient; this is what
per-word perplexity uses and what per-word enumeration sums.

* :class:`ProdLDA` (Srivastava & Sutton 2017): an encoder network gives q(theta | counts);
  the decoder is a product of experts, ``p(w | theta) = softmax(BN(W theta))`` with
  unnormalised topic-word logits ``W``. ``posterior="logistic-normal"`` draws
  ``logtheta ~ Normal`` under the Laplace approximation of a Dirichlet(alpha) prior in the
  softmax basis (:func:`laplace_dirichlet_prior`); ``posterior="dirichlet"`` draws
  ``theta ~ Dirichlet`` directly (Pyro's Dirichlet is reparameterised) under the true prior.
  Train with ``TraceMeanField_ELBO`` (both KLs are closed form).
* :class:`LDA` (Blei et al. 2003) with global topic-word distributions ``phi_k ~
  Dirichlet(eta)`` (variational posterior ``Dirichlet(lambda_k)``), document proportions
  ``theta_d ~ Dirichlet(alpha)`` (amortised posterior ``Dirichlet(encoder(counts_d))``) and
  one topic assignment ``z_dn`` per word. ``assignments="enumerated"`` keeps ``z`` as a
  sample site that ``TraceEnum_ELBO(max_plate_nesting=2)`` sums out exactly, word by word;
  ``assignments="collapsed"`` writes the sum analytically, ``p(w | theta, phi) = theta @ phi``.
  The two give the same log-likelihood for the same theta and phi (tested to float
  precision) and so the same ELBO.

Shapes: ``K`` topics, ``V`` words, ``B`` documents in a batch, ``L`` the longest document.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from torch import nn

from .. import validation
from ..data.bow import check_counts
from ..scaling import full_data_elbo

_TINY = torch.finfo(torch.float32).tiny

DOCUMENTS = "documents"  # the data plate: one document per datapoint


def laplace_dirichlet_prior(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Laplace approximation of ``Dirichlet(alpha)`` in the softmax basis: ``(mu, sigma2)``, each ``(K,)``.

    ``mu_k = log alpha_k - mean_i log alpha_i`` and
    ``sigma2_k = (1/alpha_k)(1 - 2/K) + (1/K^2) sum_i 1/alpha_i`` (MacKay 1998; Hennig et al.
    2012): ``softmax(h)`` with ``h ~ Normal(mu, sigma2)`` approximates ``theta ~ Dirichlet(alpha)``.
    ``sigma2`` is the diagonal of ``P diag(1/alpha) P`` (``P`` centres a vector), a generalised
    inverse of the Hessian of ``-log Dirichlet`` at its mode in that basis.
    """
    alpha = torch.as_tensor(alpha)
    if alpha.dim() != 1 or alpha.numel() < 2:
        raise ValueError(f"alpha must be a vector of K >= 2 concentrations, got shape {tuple(alpha.shape)}")
    if not bool((alpha > 0).all()):
        raise ValueError("alpha must be positive")
    k = alpha.numel()
    mu = alpha.log() - alpha.log().mean()
    sigma2 = (1.0 / alpha) * (1 - 2.0 / k) + (1.0 / alpha).sum() / k ** 2
    return mu, sigma2


class BagOfWords(TorchDistribution):
    """Word counts of a document whose words are i.i.d. ``Categorical(logits)``.

    ``log_prob(x) = sum_v x_v log softmax(logits)_v``: the probability of the ordered word
    sequence (no multinomial coefficient). ``batch_shape = logits.shape[:-1]``, event ``(V,)``.
    Sampling needs ``total_count`` (words per document, broadcastable to the batch shape).
    """

    arg_constraints = {"logits": constraints.real_vector}
    support = constraints.independent(constraints.nonnegative_integer, 1)

    def __init__(self, logits: torch.Tensor, total_count: torch.Tensor | None = None, validate_args=None):
        self.logits = logits
        self.total_count = total_count
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> "BagOfWords":
        batch_shape = torch.Size(batch_shape)
        total = None if self.total_count is None else torch.as_tensor(self.total_count).expand(batch_shape)
        return BagOfWords(self.logits.expand(batch_shape + self.event_shape), total, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return (value * self.logits.log_softmax(-1)).sum(-1)

    def sample(self, sample_shape: Sequence[int] = torch.Size()) -> torch.Tensor:
        if self.total_count is None:
            raise ValueError("BagOfWords needs total_count (words per document) to sample")
        shape = torch.Size(sample_shape) + self.batch_shape
        total = torch.as_tensor(self.total_count, device=self.logits.device).expand(shape).long()
        n = int(total.max()) if total.numel() else 0
        with torch.no_grad():
            words = dist.Categorical(logits=self.logits.expand(shape + self.event_shape)).sample((max(n, 1),))
            keep = (torch.arange(max(n, 1), device=total.device).view(-1, *([1] * len(shape))) < total).to(self.logits.dtype)
            counts = torch.zeros(shape + self.event_shape, dtype=self.logits.dtype, device=self.logits.device)
            counts.scatter_add_(-1, words.movedim(0, -1), keep.movedim(0, -1))
        return counts


class WordGivenTopic(TorchDistribution):
    """``w | z ~ Categorical(exp(log_phi[z]))`` for word ids, evaluated by indexing: ``log_prob(w) =
    log_phi[z, w]``. (``Categorical(logits=log_phi[z]).log_prob`` would broadcast the word ids
    against a ``(..., V)`` table and allocate ``K x B x L x V`` numbers under enumeration.)
    ``log_phi`` ``(K, V)`` rows must be normalised; ``batch_shape = z.shape``."""

    arg_constraints = {}
    has_enumerate_support = False

    def __init__(self, log_phi: torch.Tensor, z: torch.Tensor, validate_args=None):
        self.log_phi, self.z = log_phi, z
        super().__init__(z.shape, torch.Size(), validate_args=validate_args)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:
        return constraints.integer_interval(0, self.log_phi.shape[-1] - 1)

    def expand(self, batch_shape: Sequence[int], _instance: Any = None) -> "WordGivenTopic":
        return WordGivenTopic(self.log_phi, self.z.expand(batch_shape), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.log_phi[self.z, value.long()]

    def sample(self, sample_shape: Sequence[int] = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return dist.Categorical(logits=self.log_phi[self.z]).sample(sample_shape)


def counts_to_tokens(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts ``(B, V)`` -> word ids ``(B, L)`` (int64) and mask ``(B, L)`` (bool), L = longest document.

    Words of a document come in vocabulary order (order does not matter to a bag of words);
    padded positions hold word 0 and mask ``False``.
    """
    b, v = counts.shape
    c = counts.long()
    lengths = c.sum(1)
    length = max(int(lengths.max()), 1) if b else 1
    words = torch.arange(v, device=counts.device).expand(b, v).reshape(-1)
    flat_words = torch.repeat_interleave(words, c.reshape(-1))
    doc = torch.repeat_interleave(torch.arange(b, device=counts.device), lengths)
    pos = torch.arange(flat_words.numel(), device=counts.device) - (lengths.cumsum(0) - lengths)[doc]
    tokens = torch.zeros(b, length, dtype=torch.long, device=counts.device)
    mask = torch.zeros(b, length, dtype=torch.bool, device=counts.device)
    tokens[doc, pos] = flat_words
    mask[doc, pos] = True
    return tokens, mask


def _batch_norm(layer: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm over every leading dim (vectorised samples ``(S, B, C)`` too); a batch of one
    document in training uses the running statistics instead of failing."""
    flat = x.reshape(-1, x.shape[-1])
    use_batch = layer.training and flat.shape[0] > 1
    out = F.batch_norm(flat, layer.running_mean, layer.running_var, layer.weight, layer.bias,
                       use_batch, layer.momentum, layer.eps)
    return out.reshape(x.shape)


class Encoder(nn.Module):
    """counts ``(B, V)`` -> two ``(B, K)`` outputs through 2 softplus layers, dropout and batch norm
    (the encoder of Srivastava & Sutton; batch norm without affine terms)."""

    def __init__(self, vocab_size: int, num_topics: int, hidden: int = 100, dropout: float = 0.2):
        super().__init__()
        hidden = validation.positive_int("hidden", hidden)
        dropout = validation.Number(0.0, strict=False, maximum=0.99)("dropout", dropout)
        self.fc1 = nn.Linear(vocab_size, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(dropout)
        self.fc_a = nn.Linear(hidden, num_topics)
        self.fc_b = nn.Linear(hidden, num_topics)
        self.bn_a = nn.BatchNorm1d(num_topics, affine=False)
        self.bn_b = nn.BatchNorm1d(num_topics, affine=False)

    def forward(self, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.drop(F.softplus(self.fc2(F.softplus(self.fc1(counts)))))
        return _batch_norm(self.bn_a, self.fc_a(h)), _batch_norm(self.bn_b, self.fc_b(h))


def _check_topics(vocab_size: int, num_topics: int) -> None:
    validation.Integer(2)("num_topics (K < 2 is not a topic model)", num_topics)
    validation.Integer(2)("vocab_size", vocab_size)


def _alpha_vector(alpha: float | torch.Tensor, k: int, what: str = "alpha") -> torch.Tensor:
    a = torch.as_tensor(alpha, dtype=torch.float32)
    a = a.expand(k).clone() if a.dim() == 0 else a
    if a.shape != (k,) or not bool((a > 0).all()):
        raise ValueError(f"{what} must be a positive number or a ({k},) vector of positive numbers")
    return a


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
        _check_topics(vocab_size, num_topics)
        if posterior not in self.POSTERIORS:
            raise ValueError(f"posterior must be one of {self.POSTERIORS}, got {posterior!r}")
        self.vocab_size, self.num_topics, self.posterior = vocab_size, num_topics, posterior
        self.encoder = Encoder(vocab_size, num_topics, hidden, dropout)
        self.beta = nn.Linear(num_topics, vocab_size, bias=False)   # unnormalised topic-word logits
        self.bn_beta = nn.BatchNorm1d(vocab_size, affine=False)
        self.drop_theta = nn.Dropout(dropout)
        self.register_buffer("alpha", _alpha_vector(alpha, num_topics))
        mu, sigma2 = laplace_dirichlet_prior(self.alpha)
        self.register_buffer("prior_loc", mu)
        self.register_buffer("prior_scale", sigma2.sqrt())

    # -- pieces
    def word_log_probs(self, theta: torch.Tensor) -> torch.Tensor:
        """Proportions ``(..., K)`` -> log p(word | theta) ``(..., V)``."""
        return _batch_norm(self.bn_beta, self.beta(self.drop_theta(theta))).log_softmax(-1)

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
            pyro.sample("words", BagOfWords(self.word_log_probs(theta), counts.sum(-1)), obs=counts)

    def guide(self, counts: torch.Tensor) -> None:
        check_counts(counts, self.vocab_size)
        with pyro.plate(DOCUMENTS, counts.shape[0]):
            pyro.sample(self.local_site, self.local_posterior(counts))


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
        _check_topics(vocab_size, num_topics)
        if assignments not in self.ASSIGNMENTS:
            raise ValueError(f"assignments must be one of {self.ASSIGNMENTS}, got {assignments!r}")
        validation.positive_number("eta", eta)
        if num_docs is not None:
            warnings.warn("LDA(num_docs=N) is deprecated: train with elbo=lda.objective(num_datapoints=N), the "
                          "shared full-data scaling (pyro_lvm.scaling.full_data_elbo). Until it goes, the model "
                          "subsamples a plate of N documents, which scales the same way", DeprecationWarning,
                          stacklevel=2)
        validation.Integer(1, optional=True)("num_docs", num_docs)
        self.vocab_size, self.num_topics, self.assignments = vocab_size, num_topics, assignments
        self.num_docs, self.eta = num_docs, float(eta)
        self.register_buffer("alpha", _alpha_vector(alpha, num_topics))
        self.encoder = Encoder(vocab_size, num_topics, hidden, dropout)
        # q(phi_k) = Dirichlet(softplus(raw)); start near 1 + noise so topics differ
        init = 1.0 + torch.rand(num_topics, vocab_size)
        self.phi_raw = nn.Parameter(init.expm1().log())
        self.local_site = "theta"

    @property
    def max_plate_nesting(self) -> int:
        return 2 if self.assignments == "enumerated" else 1

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
        return (theta @ phi).clamp_min(_TINY).log()

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
            log_phi = phi.clamp_min(_TINY).log().log_softmax(-1)
            with pyro.plate("words", tokens.shape[1], dim=-1):
                # z is enumerated: its value is (K, 1, 1) under TraceEnum_ELBO, (B, L) otherwise.
                z = pyro.sample("z", dist.Categorical(logits=theta.clamp_min(_TINY).log()),
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
        estimates the whole corpus's by the shared rule of :func:`~pyro_lvm.scaling.full_data_elbo`
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
