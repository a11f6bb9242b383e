"""A small synthetic task where a plain VAE collapses (after He et al. 2019, Sec. 6.1).

Data: a one-dimensional latent ``z`` drawn from a mixture of Gaussians sets the initial
state of a *random* LSTM and enters its input at every step; the LSTM emits a token
sequence autoregressively. Each sequence
carries information about its ``z``, but an autoregressive decoder can also guess most of it
from the sequence's first tokens, so a plain VAE learns to ignore ``z``: ``KL -> 0``. With 50
token types it does so fully in 2 of 3 seeds of ``benchmarks/collapse_synthetic.py`` and every
remedy keeps KL > 0.5 nats; with He et al.'s 1,000 (``--vocab 1000``) it collapses in every
seed and only free bits reliably keeps a code (``docs/posterior_collapse.md``).

The pair :class:`SequenceVAE`, for tokens ``x: (batch, length)`` (long)::

    z ~ Normal(0, 1)                                      (batch, z_dim)
    x_t ~ Categorical(softmax(W h_t)),  h_t = LSTM([emb(x_{t-1}); z], h_{t-1}),  h_0 = tanh(U z)
    q(z | x) = Normal(mu(LSTM(x)), sigma(LSTM(x)))        (He et al.'s LSTM encoder)
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def lstm_sequences(n: int, vocab: int = 50, length: int = 10, hidden: int = 32, components: int = 8,
                   spread: float = 4.0, out_scale: float = 1.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``n`` sequences from a random LSTM driven by a 1-d latent.

    Returns ``(tokens (n, length) long, z (n,))``. The same ``seed`` gives the same LSTM and
    data, so train/valid/test splits come from one call (see :func:`toy_splits`).
    """
    if n < 1 or vocab < 2 or length < 1 or components < 1:
        raise ValueError(f"need n >= 1, vocab >= 2, length >= 1, components >= 1; got {n}, {vocab}, {length}, {components}")
    g = torch.Generator().manual_seed(seed)
    means = torch.linspace(-spread, spread, components)
    z = means[torch.randint(components, (n,), generator=g)] + 0.5 * torch.randn(n, generator=g)
    cell = nn.LSTMCell(vocab + 2, hidden)     # input: one-hot previous token (+ <bos>) and z
    for p in cell.parameters():                 # random weights, larger than init: peaky outputs
        p.copy_(torch.randn(p.shape, generator=g) * 0.8)
    w_z = torch.randn(1, hidden, generator=g)
    w_out = torch.randn(hidden, vocab, generator=g) * out_scale
    h = torch.tanh(z.unsqueeze(-1) * w_z)
    c = torch.zeros_like(h)
    prev = torch.zeros(n, vocab + 1)
    prev[:, vocab] = 1.0                         # <bos>
    out = torch.empty(n, length, dtype=torch.long)
    for t in range(length):
        h, c = cell(torch.cat([prev, z.unsqueeze(-1)], -1), (h, c))
        tok = torch.multinomial(F.softmax(h @ w_out, -1), 1, generator=g).squeeze(-1)
        out[:, t] = tok
        prev = F.one_hot(tok, vocab + 1).float()
    return out, z


def toy_splits(n_train: int = 2000, n_valid: int = 500, n_test: int = 500, seed: int = 0, **kwargs):
    """``{"train", "valid", "test"}`` token tensors from one random LSTM (and ``"z_*"`` true latents)."""
    tokens, z = lstm_sequences(n_train + n_valid + n_test, seed=seed, **kwargs)
    a, b = n_train, n_train + n_valid
    return {"train": tokens[:a], "valid": tokens[a:b], "test": tokens[b:],
            "z_train": z[:a], "z_valid": z[a:b], "z_test": z[b:]}


class SequenceVAE(nn.Module):
    """LSTM-encoder / LSTM-decoder VAE over fixed-length token sequences.

    Args:
        vocab: number of token types; ``x`` holds ints in ``[0, vocab)``.
        z_dim: latent size (1 in the collapse demonstration).
        emb, hidden: embedding and LSTM sizes (shared by encoder and decoder shapes, not weights).
    """

    def __init__(self, vocab: int = 50, z_dim: int = 1, emb: int = 16, hidden: int = 64):
        super().__init__()
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
