"""A small synthetic task where a plain VAE collapses (after He et al. 2019, Sec. 6.1).

Data (:class:`RandomLSTMSource`): a one-dimensional latent ``z`` drawn from a mixture of
Gaussians sets the initial state of a *random* LSTM and enters its input at every step; the
LSTM emits a token sequence autoregressively. Each sequence carries about 2 nats about its
``z`` (computed exactly from the known generator), but an autoregressive decoder can model
the sequences without it, so a plain VAE learns to ignore ``z``: ``KL -> 0``. At He et al.'s
size (1,000 token types, 20,000 training sequences) it does so in every seed of
``benchmarks/collapse_synthetic.py`` while every remedy keeps a code; with 2,000 training
sequences the picture is less clean (``docs/posterior_collapse.md``).

The pair :class:`SequenceVAE`, for tokens ``x: (batch, length)`` (long)::

    z ~ Normal(0, 1)                                      (batch, z_dim)
    x_t ~ Categorical(softmax(W h_t)),  h_t = LSTM([emb(x_{t-1}); z], h_{t-1}),  h_0 = tanh(U z)
    q(z | x) = Normal(mu(LSTM(x)), sigma(LSTM(x)))        (He et al.'s LSTM encoder)
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .. import validation

COMPONENT_SCALE = 0.5   # standard deviation of each mixture component of the latent's prior


def _draw_mixture(means: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``(n,)`` draws from ``sum_c (1/C) Normal(means_c, COMPONENT_SCALE)``."""
    comp = torch.randint(len(means), (n,), generator=generator)
    return means[comp] + COMPONENT_SCALE * torch.randn(n, generator=generator)


class RandomLSTMSource:
    """The data's true generator: a random LSTM that emits tokens given a 1-d latent ``z``.

    ``z ~ sum_c (1/C) Normal(means_c, COMPONENT_SCALE = 0.5)`` with ``C = components`` means
    evenly spaced on ``[-spread, spread]``; then ``h_0 = tanh(z w_z)`` and, at each step, the LSTM reads the
    previous token (one-hot, ``<bos>`` first) and ``z`` and emits ``x_t ~ softmax(h_t W)``.
    Weights are drawn from ``generator`` (larger than PyTorch's init: peaky outputs).

    Because it is known, the information the data carry about ``z`` can be computed
    (:meth:`mutual_information`): the most nats per sequence a VAE's code could hold.
    """

    def __init__(self, vocab: int, hidden: int, components: int, spread: float, out_scale: float,
                 generator: torch.Generator):
        self.vocab = vocab
        self.means = torch.linspace(-spread, spread, components)
        self.cell = nn.LSTMCell(vocab + 2, hidden)     # input: one-hot previous token (+ <bos>) and z
        with torch.no_grad():
            for p in self.cell.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.8)
        self.w_z = torch.randn(1, hidden, generator=generator)
        self.w_out = torch.randn(hidden, vocab, generator=generator) * out_scale

    def sample_z(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(n,)`` draws from the mixture prior."""
        return _draw_mixture(self.means, n, generator)

    def prior_log_density(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z), elementwise."""
        normal = torch.distributions.Normal(self.means, COMPONENT_SCALE)
        return torch.logsumexp(normal.log_prob(z.unsqueeze(-1)), -1) - math.log(len(self.means))

    def _steps(self, z: torch.Tensor, length: int, tokens: torch.Tensor | None, generator: torch.Generator | None):
        """Run the LSTM for ``length`` steps, teacher-forced on ``tokens`` or sampling (with ``generator``).
        Returns ``(tokens (n, length), log p(tokens | z) (n,))``."""
        n = z.shape[0]
        h = torch.tanh(z.unsqueeze(-1) * self.w_z)
        c = torch.zeros_like(h)
        prev = torch.zeros(n, self.vocab + 1)
        prev[:, self.vocab] = 1.0                         # <bos>
        out = torch.empty(n, length, dtype=torch.long)
        log_p = torch.zeros(n)
        for t in range(length):
            h, c = self.cell(torch.cat([prev, z.unsqueeze(-1)], -1), (h, c))
            logits = h @ self.w_out
            tok = (tokens[:, t] if tokens is not None
                   else torch.multinomial(F.softmax(logits, -1), 1, generator=generator).squeeze(-1))
            log_p += F.log_softmax(logits, -1).gather(1, tok.unsqueeze(-1)).squeeze(-1)
            out[:, t] = tok
            prev = F.one_hot(tok, self.vocab + 1).float()
        return out, log_p

    @torch.no_grad()
    def sample(self, z: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
        """Token sequences ``(n, length)`` long, one per value of ``z (n,)``."""
        return self._steps(z, length, None, generator)[0]

    @torch.no_grad()
    def log_prob(self, tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) ``(n,)`` for tokens ``(n, length)`` and ``z (n,)``."""
        return self._steps(z, tokens.shape[1], tokens, None)[1]

    @torch.no_grad()
    def log_marginal(self, tokens: torch.Tensor, grid: int = 400) -> torch.Tensor:
        """log p(x) ``(n,)``: the 1-d integral over ``z`` by quadrature on ``grid`` points
        spanning the prior's mass (+-6 component scales beyond the outer means)."""
        width = 6 * COMPONENT_SCALE
        zs = torch.linspace(float(self.means.min()) - width, float(self.means.max()) + width, grid)
        log_w = self.prior_log_density(zs)
        log_w = log_w - torch.logsumexp(log_w, 0)          # normalised quadrature weights
        n = tokens.shape[0]
        cond = torch.stack([self.log_prob(tokens, zz.expand(n)) for zz in zs])   # (grid, n)
        return torch.logsumexp(cond + log_w.unsqueeze(-1), 0)

    def mutual_information(self, tokens: torch.Tensor, z: torch.Tensor, grid: int = 400) -> float:
        """I(x; z) in nats per sequence, estimated on pairs ``(tokens, z)`` drawn from this
        source: the mean of ``log p(x|z) - log p(x)`` (exact terms; Monte Carlo over pairs)."""
        return float((self.log_prob(tokens, z) - self.log_marginal(tokens, grid)).mean())


def lstm_source(vocab: int = 50, length: int = 10, hidden: int = 32, components: int = 8, spread: float = 4.0,
                out_scale: float = 1.0, seed: int = 0, n: int = 0) -> tuple[RandomLSTMSource, torch.Generator, torch.Tensor]:
    """The source of :func:`lstm_sequences` for ``seed``, the generator after drawing it, and the ``n`` latents
    drawn before it (the draws come in this order so that data of earlier versions are unchanged)."""
    if n < 0 or vocab < 2 or length < 1 or components < 1:
        raise ValueError(f"need n >= 0, vocab >= 2, length >= 1, components >= 1; got {n}, {vocab}, {length}, {components}")
    g = torch.Generator().manual_seed(seed)
    z = _draw_mixture(torch.linspace(-spread, spread, components), n, g)
    return RandomLSTMSource(vocab, hidden, components, spread, out_scale, g), g, z


@torch.no_grad()
def lstm_sequences(n: int, vocab: int = 50, length: int = 10, hidden: int = 32, components: int = 8,
                   spread: float = 4.0, out_scale: float = 1.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``n`` sequences from a random LSTM driven by a 1-d latent (:class:`RandomLSTMSource`).

    Returns ``(tokens (n, length) long, z (n,))``. The same ``seed`` gives the same LSTM and
    data, so train/valid/test splits come from one call (see :func:`toy_splits`).
    """
    if n < 1:
        raise ValueError(f"need n >= 1 sequences, got {n}")
    source, g, z = lstm_source(vocab, length, hidden, components, spread, out_scale, seed, n)
    return source.sample(z, length, g), z


def toy_splits(n_train: int = 2000, n_valid: int = 500, n_test: int = 500, seed: int = 0, length: int = 10,
               **kwargs: Any) -> dict:
    """``{"train", "valid", "test"}`` token tensors from one random LSTM, ``"z_*"`` their true
    latents, and ``"source"``: the :class:`RandomLSTMSource` that drew them."""
    n = n_train + n_valid + n_test
    if n < 1:
        raise ValueError(f"need at least one sequence, got {n_train}/{n_valid}/{n_test}")
    source, g, z = lstm_source(length=length, seed=seed, n=n, **kwargs)
    tokens = source.sample(z, length, g)
    a, b = n_train, n_train + n_valid
    return {"train": tokens[:a], "valid": tokens[a:b], "test": tokens[b:],
            "z_train": z[:a], "z_valid": z[a:b], "z_test": z[b:], "source": source}


class SequenceVAE(nn.Module):
    """LSTM-encoder / LSTM-decoder VAE over fixed-length token sequences.

    Args:
        vocab: number of token types; ``x`` holds ints in ``[0, vocab)``.
        z_dim: latent size (1 in the collapse demonstration).
        emb, hidden: embedding and LSTM sizes (shared by encoder and decoder shapes, not weights).
    """

    def __init__(self, vocab: int = 50, z_dim: int = 1, emb: int = 16, hidden: int = 64):
        super().__init__()
        vocab, z_dim, emb, hidden = (validation.positive_int(n, v) for n, v in
                                     (("vocab", vocab), ("z_dim", z_dim), ("emb", emb), ("hidden", hidden)))
        self.vocab, self.z_dim = vocab, z_dim
        self.enc_emb = nn.Embedding(vocab, emb)
        self.enc_lstm = nn.LSTM(emb, hidden, batch_first=True)
        self.enc_out = nn.Linear(hidden, 2 * z_dim)
        self.dec_emb = nn.Embedding(vocab + 1, emb)   # + <bos>
        self.dec_init = nn.Linear(z_dim, hidden)
        self.dec_lstm = nn.LSTM(emb + z_dim, hidden, batch_first=True)
        self.dec_out = nn.Linear(hidden, vocab)
        self.register_buffer("prior_loc", torch.zeros(z_dim))
        self.register_buffer("prior_scale", torch.ones(z_dim))

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.dtype != torch.long:
            raise ValueError(f"x must be a long tensor (batch, length), got {getattr(x, 'shape', type(x))}")
        if bool(((x < 0) | (x >= self.vocab)).any()):
            raise ValueError(f"x holds tokens outside [0, {self.vocab})")

    def logits(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(..., batch, length, vocab)`` for codes ``z (..., batch, z_dim)``."""
        lead = z.shape[:-2]
        zf = z.reshape(-1, z.shape[-1])                         # particles folded into the batch
        k = zf.shape[0] // x.shape[0]
        xs = x.repeat(k, 1)
        bos = torch.full((xs.shape[0], 1), self.vocab, dtype=torch.long, device=x.device)
        inp = self.dec_emb(torch.cat([bos, xs[:, :-1]], 1))
        inp = torch.cat([inp, zf.unsqueeze(1).expand(-1, xs.shape[1], -1)], -1)
        h0 = torch.tanh(self.dec_init(zf)).unsqueeze(0)
        out, _ = self.dec_lstm(inp, (h0, torch.zeros_like(h0)))
        return self.dec_out(out).reshape(*lead, x.shape[0], x.shape[1], self.vocab)

    def objective(self) -> pyro.infer.ELBO:
        """The ELBO this pair is meant for: ``TraceMeanField_ELBO`` (Gaussian ``z``, closed-form KL),
        as the collapse task trains it."""
        return pyro.infer.TraceMeanField_ELBO()

    def model(self, x: torch.Tensor) -> None:
        """``x: (batch, length)`` long."""
        self._check(x)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
            pyro.sample("x", dist.Categorical(logits=self.logits(x, z)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        self._check(x)
        _, (h, _) = self.enc_lstm(self.enc_emb(x))
        loc, raw = self.enc_out(h[-1]).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1))
