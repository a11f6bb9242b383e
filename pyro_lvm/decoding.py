"""Turning codes into sentences: greedy, sampling with temperature, beam search; sampling
from the prior; homotopies (Bowman et al. 2016, Sec. 5.2) between two sentences' codes.

The functions work with any sentence model of :mod:`pyro_lvm.models.sentence_vae` (they use
its ``init_state``/``step``). ``z`` is ``(N, z_dim)`` for latent-variable models and ``None``
for the language model (then ``n`` says how many sentences). Results are lists of token-id
lists without ``<bos>``/``<eos>``; :func:`to_text` turns them into strings.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .data.text import BOS_ID, EOS_ID, Vocabulary, encode_sentences, tokenize


def _setup(model, z: torch.Tensor | None, n: int | None, max_len: int | None):
    if z is None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"without codes z, n (number of sentences) must be a positive int, got {n!r}")
        if model.z_dim > 0:
            raise ValueError(f"{type(model).__name__} decodes from a latent code: pass z of shape (N, {model.z_dim})")
    else:
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[-1] != model.z_dim:
            raise ValueError(f"z must be a (N, {model.z_dim}) tensor, got {tuple(getattr(z, 'shape', ()))}")
        n = z.shape[0]
    max_len = model.max_len if max_len is None else max_len
    if not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be a positive int, got {max_len!r}")
    return n, max_len


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _ancestral(model, z, n, max_len, pick) -> list[list[int]]:
    n, max_len = _setup(model, z, n, max_len)
    model.eval()
    state = model.init_state(z)
    device = _device(model)
    prev = torch.full((n,), BOS_ID, dtype=torch.long, device=device)
    out = torch.full((n, max_len), EOS_ID, dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    for t in range(max_len):
        logits, state = model.step(prev, state, z)
        prev = pick(logits)
        out[:, t] = torch.where(done, torch.full_like(prev, EOS_ID), prev)
        done |= prev == EOS_ID
        if bool(done.all()):
            break
    return [_until_eos(row) for row in out.tolist()]


def _until_eos(ids: Sequence[int]) -> list[int]:
    ids = list(ids)
    return ids[:ids.index(EOS_ID)] if EOS_ID in ids else ids


def greedy(model, z: torch.Tensor | None = None, n: int | None = None, max_len: int | None = None) -> list[list[int]]:
    """Most probable next word at each step (argmax), until ``<eos>`` or ``max_len`` words."""
    return _ancestral(model, z, n, max_len, lambda logits: logits.argmax(-1))


def sample(model, z: torch.Tensor | None = None, n: int | None = None, temperature: float = 1.0,
           max_len: int | None = None, generator: torch.Generator | None = None) -> list[list[int]]:
    """Draw each word from ``softmax(logits / temperature)`` (1 = the model's own distribution)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return _ancestral(model, z, n, max_len,
                      lambda logits: torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator).squeeze(-1))


@torch.no_grad()
def beam_search(model, z: torch.Tensor | None = None, n: int | None = None, beam_size: int = 5,
                max_len: int | None = None) -> list[list[int]]:
    """Highest-scoring sentence (sum of log-probabilities) found by beam search, per code.

    At each step the ``2 * beam_size`` best extensions are scored; an ``<eos>`` among the top
    ``beam_size`` finishes a sentence, and the best ``beam_size`` other extensions stay alive.
    Search stops when ``beam_size`` sentences are finished, when a finished one scores at
    least as well as every live beam (scores only fall as words are added), or at
    ``max_len`` words. ``beam_size=1`` is exactly greedy decoding.
    """
    if not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive int, got {beam_size!r}")
    n, max_len = _setup(model, z, n, max_len)
    model.eval()
    return [_beam_one(model, None if z is None else z[i:i + 1], beam_size, max_len) for i in range(n)]


def _beam_one(model, z: torch.Tensor | None, beam_size: int, max_len: int) -> list[int]:
    state = model.init_state(z)
    device = _device(model)
    scores = torch.zeros(1, device=device)
    seqs: list[list[int]] = [[]]
    prev = torch.full((1,), BOS_ID, dtype=torch.long, device=device)
    finished: list[tuple[float, list[int]]] = []
    for _t in range(max_len):
        zb = None if z is None else z.expand(len(seqs), -1)
        logits, state = model.step(prev, state, zb)
        cand = (scores.unsqueeze(1) + torch.log_softmax(logits, -1)).reshape(-1)
        top_scores, top_idx = cand.topk(min(2 * beam_size, cand.numel()))
        vocab = logits.shape[-1]
        keep_beams, keep_tokens, keep_scores = [], [], []
        for rank, (s, idx) in enumerate(zip(top_scores.tolist(), top_idx.tolist())):
            beam, token = divmod(idx, vocab)
            if token == EOS_ID:
                # As in fairseq: a sentence finishes only from within the top beam_size.
                if rank < beam_size:
                    finished.append((s, seqs[beam]))
            elif len(keep_beams) < beam_size:
                keep_beams.append(beam)
                keep_tokens.append(token)
                keep_scores.append(s)
        best_done = max((s for s, _ in finished), default=-float("inf"))
        if not keep_beams or len(finished) >= beam_size or best_done >= max(keep_scores):
            break
        index = torch.tensor(keep_beams, device=device)
        state = None if state is None else tuple(x[:, index] for x in state)
        seqs = [seqs[b] + [tok] for b, tok in zip(keep_beams, keep_tokens)]
        scores = torch.tensor(keep_scores, device=device)
        prev = torch.tensor(keep_tokens, device=device)
    else:
        finished.extend(zip(scores.tolist(), seqs))  # max_len reached: unfinished beams compete too
    return max(finished, key=lambda f: f[0])[1]


DECODERS = {"greedy": greedy, "sample": sample, "beam": beam_search}


def decode(model, z: torch.Tensor | None = None, n: int | None = None, method: str = "greedy", **kw) -> list[list[int]]:
    """Dispatch to :func:`greedy`, :func:`sample` (``temperature=``) or :func:`beam_search` (``beam_size=``)."""
    if method not in DECODERS:
        raise ValueError(f"unknown decoding method {method!r}; choose one of {sorted(DECODERS)}")
    return DECODERS[method](model, z, n, **kw)


def to_text(vocab: Vocabulary, sentences: Sequence[Sequence[int]]) -> list[str]:
    """Space-joined words of decoded id lists."""
    return [" ".join(vocab.decode(s)) for s in sentences]


def encode_text(model, vocab: Vocabulary, sentences: Sequence[str]) -> torch.Tensor:
    """Codes (posterior means) of raw sentences: tokenised as the corpus was, OOV -> ``<unk>``."""
    if isinstance(sentences, str) or not sentences:
        raise ValueError("sentences must be a non-empty list of strings")
    token_lists = []
    for s in sentences:
        if not isinstance(s, str):
            raise TypeError(f"each sentence must be a str, got {type(s).__name__}")
        toks = tokenize(s)
        if not toks:
            raise ValueError(f"sentence {s!r} has no tokens")
        token_lists.append(toks)
    return model.encode(encode_sentences(token_lists, vocab, max_len=model.max_len))


def sample_prior(model, n: int, method: str = "greedy", **kw) -> list[list[int]]:
    """New sentences: ``z ~ p(z)`` decoded by ``method``; for a language model, just decoding."""
    if model.z_dim == 0:
        return decode(model, None, n, method, **kw)
    return decode(model, model.sample_prior_codes(n), None, method, **kw)


@torch.no_grad()
def homotopy(model, vocab: Vocabulary, sentence_a: str, sentence_b: str, steps: int = 8,
             method: str = "greedy", **kw) -> list[str]:
    """Decode ``steps`` evenly spaced points on the line between two sentences' codes.

    The first and last lines decode the codes of ``sentence_a`` and ``sentence_b`` themselves.
    """
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    z = encode_text(model, vocab, [sentence_a, sentence_b])
    t = torch.linspace(0, 1, steps).unsqueeze(-1)
    return to_text(vocab, decode(model, (1 - t) * z[0] + t * z[1], None, method, **kw))


@torch.no_grad()
def reconstruction_accuracy(model, data) -> float:
    """Fraction of target tokens (words and ``<eos>``) that the decoder's argmax gets right
    when fed the true previous words and the code ``z = mu(x)`` (teacher forcing).

    ``data``: a token tensor ``(N, T)`` or an iterable of such batches.
    """
    model.eval()
    batches = [data] if isinstance(data, torch.Tensor) else data
    right, total = 0, 0
    for tokens in batches:
        inputs, targets, mask = model.split(tokens)
        z = model.encode(tokens) if model.z_dim > 0 else None
        pred = model.decoder_logits(inputs, z).argmax(-1)
        right += int(((pred == targets) & mask).sum())
        total += int(mask.sum())
    return right / max(total, 1)
