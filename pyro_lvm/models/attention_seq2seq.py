"""A tiny attentional sequence-to-sequence model, written to answer the lecture's quiz with a trace.

The quiz (Neubig, CMU CS11-747, "Latent random variables"): in an attentional encoder-decoder
trained by maximum likelihood with teacher forcing, are the input word ids ``f``, the
encoder hidden states ``h``, the attention values ``a`` and the output word ids ``e``
observed or latent, deterministic or random?

Written as a Pyro model of ``p(e | f)`` (Bahdanau, Cho & Bengio 2015; dot-product attention
of Luong, Pham & Manning 2015)::

    h   = GRU encoder(embed(f))                      (batch, S, H)   pyro.deterministic
    s   = GRU decoder(embed(<bos>, e_1..e_{T-1}))      (batch, T, H)   pyro.deterministic (teacher forcing)
    a   = softmax(s h^T)                               (batch, T, S)   pyro.deterministic
    e_t ~ Categorical(softmax(W [s_t; a_t h]))                        observed (obs=e)

``f`` is an argument the model conditions on (it is discriminative: nothing generates
``f``); :func:`pyro_lvm.inspection.inspect_pair` shows it as an observed, given input. The
guide is empty: the model has no latent random variable, which is the quiz's point.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..validation import Integer

__all__ = ["AttentionSeq2Seq"]


class AttentionSeq2Seq(nn.Module):
    """Encoder-decoder with dot-product attention as a model/guide pair over ``(f, e)``.

    Args:
        src_vocab: source vocabulary size.
        tgt_vocab: target vocabulary size (id 0 is also the decoder's ``<bos>`` input).
        hidden: embedding and GRU width H.
    """

    def __init__(self, src_vocab: int = 12, tgt_vocab: int = 12, hidden: int = 16):
        super().__init__()
        for name, v in (("src_vocab", src_vocab), ("tgt_vocab", tgt_vocab), ("hidden", hidden)):
            Integer(2)(name, v)
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.src_embed = nn.Embedding(src_vocab, hidden)
        self.tgt_embed = nn.Embedding(tgt_vocab, hidden)
        self.encoder = nn.GRU(hidden, hidden, batch_first=True)
        self.decoder = nn.GRU(hidden, hidden, batch_first=True)
        self.out = nn.Linear(2 * hidden, tgt_vocab)

    def _check(self, f: torch.Tensor, e: torch.Tensor) -> None:
        for name, ids, vocab in (("f", f, self.src_vocab), ("e", e, self.tgt_vocab)):
            if not isinstance(ids, torch.Tensor) or ids.dtype != torch.long or ids.dim() != 2:
                raise ValueError(f"{name} must be a (batch, length) long tensor of word ids, got "
                                 f"{getattr(ids, 'dtype', type(ids).__name__)} {tuple(getattr(ids, 'shape', ()))}")
            if bool(((ids < 0) | (ids >= vocab)).any()):
                raise ValueError(f"{name} has ids outside [0, {vocab})")
        if f.shape[0] != e.shape[0]:
            raise ValueError(f"f and e must hold the same number of sentences, got {f.shape[0]} and {e.shape[0]}")

    def objective(self) -> pyro.infer.ELBO:
        """The ELBO this pair is meant for: ``Trace_ELBO`` (no latent site: it is the exact log-likelihood)."""
        return pyro.infer.Trace_ELBO()

    def model(self, f: torch.Tensor, e: torch.Tensor) -> None:
        """``f: (batch, S)`` source ids, ``e: (batch, T)`` target ids (both long)."""
        self._check(f, e)
        with pyro.plate("sentences", f.shape[0]):
            h = pyro.deterministic("h", self.encoder(self.src_embed(f))[0], event_dim=2)
            # Teacher forcing: the decoder reads the *observed* previous word, not its own guess.
            previous = torch.cat([e.new_zeros(e.shape[0], 1), e[:, :-1]], dim=1)
            s = pyro.deterministic("s", self.decoder(self.tgt_embed(previous))[0], event_dim=2)
            a = pyro.deterministic("a", torch.softmax(s @ h.transpose(1, 2), dim=-1), event_dim=2)
            logits = self.out(torch.cat([s, a @ h], dim=-1))  # (batch, T, tgt_vocab)
            pyro.sample("e", dist.Categorical(logits=logits).to_event(1), obs=e)

    def guide(self, f: torch.Tensor, e: torch.Tensor) -> None:
        """Nothing to infer: every random variable of the model is observed."""
