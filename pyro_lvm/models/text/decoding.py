"""Turning codes into sentences: greedy, sampling (temperature, nucleus), beam search (length
normalisation, n-gram blocking); sampling from the prior; homotopies (Bowman et al. 2016,
Sec. 5.2) between two sentences' codes.

The functions work with any sentence model of :mod:`pyro_lvm.models.text.sentence_vae` (they use
its ``init_state``/``step``). ``z`` is ``(N, z_dim)`` for latent-variable models and ``None``
for the language model (then ``n`` says how many sentences). Results are lists of token-id
lists without ``<bos>``/``<eos>``; :func:`to_text` turns them into strings.

Why the options: greedy decoding of a small or undertrained decoder falls into loops
("the first time , the first time , ..."), because once a phrase is likely after itself the
argmax keeps choosing it. ``block_ngram=n`` forbids any n-gram a sentence already holds
(fairseq's ``no_repeat_ngram_size``), for every decoder; ``length_penalty`` divides a beam's
log-probability by its length to that power, so the search does not prefer the shortest
sentence; ``top_p`` samples from the smallest set of words holding that much probability
(Holtzman et al. 2020, nucleus sampling), which keeps the unreliable tail out.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch

from ...data.text import BOS_ID, EOS_ID, UNK_ID, Vocabulary, encode_sentences, tokenize_text
from ...validation import Integer, non_negative_int, positive_int, positive_number


def _setup(model, z: torch.Tensor | None, n: int | None, max_len: int | None, block_ngram: int = 0):
    if z is None:
        positive_int("n (the number of sentences, without codes z)", n)
        if model.z_dim > 0:
            raise ValueError(f"{type(model).__name__} decodes from a latent code: pass z of shape (N, {model.z_dim})")
    else:
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[-1] != model.z_dim:
            raise ValueError(f"z must be a (N, {model.z_dim}) tensor, got {tuple(getattr(z, 'shape', ()))}")
        n = z.shape[0]
    max_len = model.max_len if max_len is None else max_len
    positive_int("max_len", max_len)
    non_negative_int("block_ngram (0 = no blocking)", block_ngram)
    return n, max_len


def _device(model) -> torch.device:
    return next(model.parameters()).device


def blocked_tokens(seq: Sequence[int], n: int) -> list[int]:
    """Next tokens that would repeat an ``n``-gram already in ``seq`` (``n = 0``: none).

    ``seq`` holds the words decoded so far (no ``<bos>``); ``<eos>`` is never blocked, so a
    sentence can always end.
    """
    if n < 1 or len(seq) < n - 1:
        return []
    if n == 1:
        return sorted(set(seq))
    prefix = list(seq[len(seq) - n + 1:])
    return sorted({seq[i + n - 1] for i in range(len(seq) - n + 1) if list(seq[i:i + n - 1]) == prefix})


def _block(logits: torch.Tensor, seqs: Sequence[Sequence[int]], n: int) -> torch.Tensor:
    """``logits (N, vocab)`` with each row's blocked tokens set to ``-inf``."""
    if n < 1:
        return logits
    rows, cols = [], []
    for i, seq in enumerate(seqs):
        banned = blocked_tokens(seq, n)
        rows += [i] * len(banned)
        cols += banned
    if rows:
        logits = logits.clone()
        logits[rows, cols] = -float("inf")
    return logits


@torch.no_grad()
def _ancestral(model, z, n, max_len, pick: Callable[[torch.Tensor], torch.Tensor], block_ngram: int = 0) -> list[list[int]]:
    n, max_len = _setup(model, z, n, max_len, block_ngram)
    model.eval()
    state = model.init_state(z)
    device = _device(model)
    prev = torch.full((n,), BOS_ID, dtype=torch.long, device=device)
    seqs: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    for _t in range(max_len):
        logits, state = model.step(prev, state, z)
        prev = pick(_block(logits, seqs, block_ngram))
        for i, tok in enumerate(prev.tolist()):
            if not done[i]:
                done[i] = tok == EOS_ID
                if not done[i]:
                    seqs[i].append(tok)
        if all(done):
            break
    return seqs


def greedy(model, z: torch.Tensor | None = None, n: int | None = None, max_len: int | None = None,
           block_ngram: int = 0) -> list[list[int]]:
    """Most probable next word at each step (argmax), until ``<eos>`` or ``max_len`` words;
    ``block_ngram > 0`` skips words that would repeat an n-gram of the sentence."""
    return _ancestral(model, z, n, max_len, lambda logits: logits.argmax(-1), block_ngram)


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """``probs (N, vocab)`` cut to the smallest top set whose mass reaches ``top_p`` (not renormalised)."""
    if top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(-1, descending=True)
    outside = sorted_p.cumsum(-1) - sorted_p >= top_p  # the mass before a word already reaches top_p
    return probs.scatter(-1, order, sorted_p.masked_fill(outside, 0.0))


def sample(model, z: torch.Tensor | None = None, n: int | None = None, temperature: float = 1.0,
           max_len: int | None = None, generator: torch.Generator | None = None, top_p: float = 1.0,
           block_ngram: int = 0) -> list[list[int]]:
    """Draw each word from ``softmax(logits / temperature)`` (1 = the model's own distribution),
    restricted to the nucleus of mass ``top_p`` (1 = no restriction)."""
    positive_number("temperature", temperature)
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")

    def pick(logits: torch.Tensor) -> torch.Tensor:
        probs = _nucleus(torch.softmax(logits / temperature, -1), top_p)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    return _ancestral(model, z, n, max_len, pick, block_ngram)


@torch.no_grad()
def beam_search(model, z: torch.Tensor | None = None, n: int | None = None, beam_size: int = 5,
                max_len: int | None = None, length_penalty: float = 0.0, block_ngram: int = 0) -> list[list[int]]:
    """Highest-scoring sentence found by beam search, per code.

    A sentence's score is its log-probability (``<eos>`` included) divided by
    ``length ** length_penalty``, with length = words + ``<eos>`` (0 = the plain sum, which
    favours short sentences; 1 = the mean per token). At each step the ``2 * beam_size`` best
    extensions by log-probability are taken; an ``<eos>`` among the top ``beam_size`` finishes
    a sentence, and the best ``beam_size`` other extensions stay alive. ``block_ngram > 0``
    removes extensions that repeat an n-gram of their beam. Search stops at ``max_len`` words,
    when ``beam_size`` sentences are finished, or, with ``length_penalty == 0``, as soon as a
    finished one scores at least as well as every live beam (scores then only fall), which
    makes a beam wider than the number of candidates exact. ``beam_size=1`` without a length
    penalty is exactly greedy decoding.
    """
    positive_int("beam_size", beam_size)
    if not (isinstance(length_penalty, (int, float)) and length_penalty >= 0):
        raise ValueError(f"length_penalty must be a number >= 0, got {length_penalty!r}")
    n, max_len = _setup(model, z, n, max_len, block_ngram)
    model.eval()
    return [_beam_one(model, None if z is None else z[i:i + 1], beam_size, max_len, float(length_penalty), block_ngram)
            for i in range(n)]


def _beam_one(model, z: torch.Tensor | None, beam_size: int, max_len: int, alpha: float, block_ngram: int) -> list[int]:
    state = model.init_state(z)
    device = _device(model)
    scores = torch.zeros(1, device=device)
    seqs: list[list[int]] = [[]]
    prev = torch.full((1,), BOS_ID, dtype=torch.long, device=device)
    finished: list[tuple[float, list[int]]] = []  # (normalised score, words)

    def norm(score: float, length: int) -> float:
        return score / length ** alpha if alpha else score

    for _t in range(max_len):
        zb = None if z is None else z.expand(len(seqs), -1)
        logits, state = model.step(prev, state, zb)
        logp = _block(torch.log_softmax(logits, -1), seqs, block_ngram)
        cand = (scores.unsqueeze(1) + logp).reshape(-1)
        top_scores, top_idx = cand.topk(min(2 * beam_size, cand.numel()))
        vocab = logits.shape[-1]
        keep_beams, keep_tokens, keep_scores = [], [], []
        for rank, (s, idx) in enumerate(zip(top_scores.tolist(), top_idx.tolist())):
            if s == -float("inf"):
                break  # only blocked extensions are left
            beam, token = divmod(idx, vocab)
            if token == EOS_ID:
                # As in fairseq: a sentence finishes only from within the top beam_size.
                if rank < beam_size:
                    finished.append((norm(s, len(seqs[beam]) + 1), seqs[beam]))
            elif len(keep_beams) < beam_size:
                keep_beams.append(beam)
                keep_tokens.append(token)
                keep_scores.append(s)
        if not keep_beams or len(finished) >= beam_size:
            break
        if not alpha and max((s for s, _ in finished), default=-float("inf")) >= max(keep_scores):
            break
        index = torch.tensor(keep_beams, device=device)
        state = None if state is None else tuple(x[:, index] for x in state)
        seqs = [seqs[b] + [tok] for b, tok in zip(keep_beams, keep_tokens)]
        scores = torch.tensor(keep_scores, device=device)
        prev = torch.tensor(keep_tokens, device=device)
    else:
        # max_len reached: unfinished beams compete too
        finished.extend((norm(s, len(q)), q) for s, q in zip(scores.tolist(), seqs))
    return max(finished, key=lambda f: f[0])[1]


DECODERS = {"greedy": greedy, "sample": sample, "beam": beam_search}


def decode(model, z: torch.Tensor | None = None, n: int | None = None, method: str = "greedy", **kw) -> list[list[int]]:
    """Dispatch to :func:`greedy`, :func:`sample` (``temperature=``, ``top_p=``) or :func:`beam_search`
    (``beam_size=``, ``length_penalty=``); every method takes ``block_ngram=`` and ``max_len=``."""
    if method not in DECODERS:
        raise ValueError(f"unknown decoding method {method!r}; choose one of {sorted(DECODERS)}")
    return DECODERS[method](model, z, n, **kw)


def to_text(vocab: Vocabulary, sentences: Sequence[Sequence[int]]) -> list[str]:
    """Space-joined words of decoded id lists."""
    return [" ".join(vocab.decode(s)) for s in sentences]


def tokenize_known(vocab: Vocabulary, sentence: str) -> list[str]:
    """Tokens of a raw sentence, tokenised as the corpus was (lower case, numbers -> ``N``).

    Words outside ``vocab`` will read as ``<unk>``: a warning names them. A sentence made only
    of unknown words is refused (``ValueError`` listing them): its code would be that of a
    row of ``<unk>``, the same for every such sentence.
    """
    if not isinstance(sentence, str):
        raise TypeError(f"each sentence must be a str, got {type(sentence).__name__}")
    toks = tokenize_text(sentence)
    if not toks:
        raise ValueError(f"sentence {sentence!r} has no tokens")
    unknown = [t for t in toks if vocab.encode([t])[0] == UNK_ID]
    if len(unknown) == len(toks):
        raise ValueError(f"every word of {sentence!r} is outside the model's vocabulary of {len(vocab)} tokens "
                         f"(unknown: {', '.join(unknown)}); its code would be that of '<unk> ... <unk>'. "
                         "Use a sentence with words the model was trained on")
    if unknown:
        warnings.warn(f"{sentence!r}: {len(unknown)} of {len(toks)} words are outside the vocabulary and read as "
                      f"<unk>: {', '.join(unknown)}")
    return toks


def encode_text(model, vocab: Vocabulary, sentences: Sequence[str]) -> torch.Tensor:
    """Codes (posterior means) of raw sentences, ``(len(sentences), z_dim)``; each sentence
    passes :func:`tokenize_known` (refused when all its words are unknown)."""
    if isinstance(sentences, str) or not sentences:
        raise ValueError("sentences must be a non-empty list of strings")
    if model.z_dim == 0:
        raise ValueError(f"{type(model).__name__} has no latent code to encode into")
    token_lists = [tokenize_known(vocab, s) for s in sentences]
    return model.encode(encode_sentences(token_lists, vocab, max_len=model.max_len))


def sample_prior(model, n: int, method: str = "greedy", **kw) -> list[list[int]]:
    """New sentences: ``z ~ p(z)`` decoded by ``method``; for a language model, just decoding."""
    if model.z_dim == 0:
        return decode(model, None, n, method, **kw)
    return decode(model, model.sample_prior_codes(n), None, method, **kw)


def homotopy_endpoints(corpus, max_words: int = 12) -> list[str]:
    """Two held-out sentences of a :class:`~pyro_lvm.data.text.TextCorpus` for :func:`homotopy`:
    the first two test sentences of at most ``max_words`` tokens (else the first two test
    sentences, or training ones when the test split has fewer than two)."""
    short = [s for s in corpus.test if len(s) <= max_words]
    pool = short if len(short) >= 2 else corpus.test + corpus.train
    return [" ".join(s) for s in pool[:2]]


@torch.no_grad()
def homotopy(model, vocab: Vocabulary, sentence_a: str, sentence_b: str, steps: int = 8,
             method: str = "greedy", **kw) -> list[str]:
    """Decode ``steps`` evenly spaced points on the line between two sentences' codes.

    The first and last lines decode the codes of ``sentence_a`` and ``sentence_b`` themselves.
    """
    Integer(2)("steps", steps)
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
