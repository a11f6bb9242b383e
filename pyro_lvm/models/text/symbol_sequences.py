"""A sentence autoencoder whose latent code is a sequence of discrete symbols (the lecture's
"discover language" models: Miao & Blunsom 2016; Havrylov & Titov 2017).

Generative model, per sentence ``x`` (a row ``<bos> w_1 ... w_n <eos> <pad> ...`` of
:func:`pyro_lvm.data.text.encode_sentences`)::

    z_l ~ Categorical(1/K, ..., 1/K)            l = 1..L, one-hot: z (L, K)
    x_t ~ Categorical(softmax(W h_t)),  h_t = LSTM(h_{t-1}, [e(x_{t-1}); c(z)])   t = 1..n+1

with the code's summary ``c(z) = A flatten(z S + P)`` (``S``: ``(K, d)`` symbol embeddings,
``P``: ``(L, d)`` position embeddings) appended to every decoder input and, through
``(h_0, c_0) = (tanh(B ...), ...)``, in the initial state. Guide: a GRU reads the sentence and
``L`` learned queries attend over its states (one query per symbol position), so that
``q(z_l | x) = Categorical(softmax(U a_l(x)))`` may align positions with words.

The pair is plain discrete Pyro: one ``OneHotCategorical(...).to_event(1)`` site ``"z"`` of
shape ``(batch, L, K)`` in ``pyro.plate("data")``. How its gradient is estimated is the
objective's business: train it with :class:`~pyro_lvm.infer.DiscreteELBO` by estimator name
(``"score-function-baseline"`` reads the guide's ``nn_baseline``; ``"gumbel"`` and
``"straight-through"`` relax the one-hot value; ``"enumerate"`` sums over all ``K**L`` codes,
for small codes). Evaluation uses the discrete model itself.

**Miao & Blunsom's compression prior** (``prior="language_model"``): the symbols are words, symbol
``k`` is token id ``k`` (an alphabet of ``K`` is the vocabulary's 4 special tokens and its ``K - 4``
most frequent words, ``K <= vocab_size``); the prior is an LSTM language model over the code's
words (:mod:`pyro_lvm.models.text.compression_prior`, pretrained on the sentences by
:meth:`SymbolSequenceAutoencoder.pretrain_prior` and then kept fixed, or trained with the ELBO
when ``train_prior=True``); and the guide is a pointer: the same ``L`` queries' attention over
the sentence's word positions (``<eos>`` and padding masked), ``q(z_l = k | x) = sum_t a_lt [x_t = k]``,
so every latent word is a word of the source; words outside the alphabet (``<unk>``) are pointed
at only in a sentence that has no other word.
Positions are chosen independently given the sentence (no monotone order is imposed; the LM
prior is what rewards codes in sentence order). The decoder reads the latent words through the
pair's own word embedding (projected to ``symbol_dim``). The KL to this prior has no closed
form: every estimator, and :meth:`negative_elbo`, uses ``log q(z) - log p(z)`` at the sampled code.

For the decoders of :mod:`pyro_lvm.models.text.decoding` a code is a flat one-hot vector ``(N, L*K)``
(``z_dim = L * K``): :meth:`encode` gives the most probable code of a sentence,
:meth:`sample_prior_codes` uniform random ones, and greedy/sampling/beam decoding,
homotopies and :func:`~pyro_lvm.models.text.decoding.reconstruction_accuracy` work unchanged.

What the codes carry (:func:`symbol_tag_information`, :func:`symbol_word_associations`):
the mutual information between the symbol at each position and the part-of-speech tag at
each word position, and the words most associated with each symbol.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Any, Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ... import validation
from ...data.text import EOS_ID, PAD_ID, UNK_ID
from ...evaluation.metrics import CHUNK_ELEMENTS
from ...infer.discrete.estimators import DiscreteELBO, check_num_classes
from .compression_prior import MASKED, MIN_ALPHABET, LanguageModelPrior, WordLanguageModel, pretrain_language_model, to_symbols
from .sentence_vae import SentenceVAE, WordCategorical, check_tokens

PRIORS = ("uniform", "language_model")


def check_alphabet(prior: str, alphabet: int | None, vocab_size: int) -> int:
    """K for ``prior``: 16 by default with the uniform prior (>= 2), the whole vocabulary with the
    language-model prior (``MIN_ALPHABET <= K <= vocab_size``, the symbols being token ids)."""
    validation.Choice(PRIORS)("prior", prior)
    if prior == "uniform":
        alphabet = 16 if alphabet is None else alphabet
        try:
            return check_num_classes(alphabet, "alphabet (K, the number of symbols)")
        except ValueError as e:
            raise validation.InvalidArgumentError(f"{e}; a one-symbol alphabet carries no information") from None
    if alphabet is None:
        return vocab_size
    validation.Integer(MIN_ALPHABET)("alphabet (K, the latent words: token ids < K, the 4 special tokens and "
                                     "K - 4 words) with prior='language_model'", alphabet)
    if alphabet > vocab_size:
        raise validation.InvalidArgumentError(
            f"alphabet K={alphabet} is larger than the vocabulary ({vocab_size} tokens): with prior='language_model' "
            f"the latent symbols are the vocabulary's words (token ids < K); pass alphabet <= {vocab_size}, "
            "or None for the whole vocabulary")
    return alphabet


class SymbolSequenceAutoencoder(nn.Module):
    """Sentences through a code of ``n_symbols`` (L) symbols from an alphabet of ``alphabet`` (K).

    Args:
        vocab_size: token ids, the 4 special tokens included.
        n_symbols: L, the length of the code (>= 1).
        alphabet: K, the number of distinct symbols (>= 2; one symbol would carry no information;
            default 16). With ``prior="language_model"``: the latent words are the token ids ``< K``
            (default: the whole vocabulary; ``5 <= K <= vocab_size``).
        embed_dim, hidden_dim: word embedding and GRU/LSTM sizes.
        symbol_dim: size of each symbol's embedding in the decoder.
        max_len: longest sentence the decoders generate (words).
        max_codes: :meth:`log_marginal` refuses codes with more than this many values.
        prior: ``"uniform"`` (each symbol 1/K) or ``"language_model"`` (Miao & Blunsom's compression
            prior: latent words from a pointer over the sentence, scored by an LSTM language model).
        train_prior: with ``"language_model"``, train the LM with the ELBO too (default: it is kept
            fixed, as Miao & Blunsom's; train it first with :meth:`pretrain_prior`).
    """

    def __init__(self, vocab_size: int, n_symbols: int = 4, alphabet: int | None = None, embed_dim: int = 64,
                 hidden_dim: int = 128, symbol_dim: int = 32, max_len: int = 40, max_codes: int = 4096,
                 prior: str = "uniform", train_prior: bool = False):
        super().__init__()
        sizes = dict(vocab_size=vocab_size, n_symbols=n_symbols, embed_dim=embed_dim, hidden_dim=hidden_dim,
                     symbol_dim=symbol_dim, max_len=max_len, max_codes=max_codes)
        for name, v in sizes.items():
            validation.positive_int(name, v)
        if vocab_size < 5:
            raise validation.InvalidArgumentError(f"vocab_size must be > 4 (4 special tokens plus words), got {vocab_size}")
        alphabet = check_alphabet(prior, alphabet, vocab_size)
        self.vocab_size, self.n_symbols, self.alphabet = vocab_size, n_symbols, alphabet
        self.embed_dim, self.hidden_dim, self.symbol_dim = embed_dim, hidden_dim, symbol_dim
        self.max_len, self.max_codes = max_len, max_codes
        self.prior_name, self.train_prior = prior, bool(train_prior)
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        # guide
        self.encoder_rnn = nn.GRU(embed_dim, hidden_dim, batch_first=True)
        self.queries = nn.Parameter(torch.randn(n_symbols, hidden_dim) / math.sqrt(hidden_dim))
        # (the uniform prior's layers are made in the order they always were: same seed, same weights)
        self.to_logits = None if self.compresses else nn.Linear(hidden_dim, alphabet)
        self.baseline_net = _SentenceBaseline(vocab_size)
        self._build_code_layers()
        # model
        self.position_embedding = nn.Parameter(torch.randn(n_symbols, symbol_dim) * 0.1)
        self.code_to_context = nn.Linear(n_symbols * symbol_dim, embed_dim)
        self.code_to_state = nn.Linear(n_symbols * symbol_dim, 2 * hidden_dim)
        self.decoder_rnn = nn.LSTM(2 * embed_dim, hidden_dim, batch_first=True)
        self.output = nn.Linear(hidden_dim, vocab_size)

    def _build_code_layers(self) -> None:
        """What else differs between the priors: the decoder's symbol table and the prior."""
        K, d = self.alphabet, self.symbol_dim
        if not self.compresses:
            self.symbol_embedding = nn.Parameter(torch.randn(K, d) * 0.1)
            self.register_buffer("prior_logits", torch.zeros(self.n_symbols, K))
            return
        # the latent words are read through the pair's word embedding (symbol k = token id k)
        self.symbol_projection = nn.Linear(self.embed_dim, d, bias=False)
        self.language_model = WordLanguageModel(K, self.embed_dim, self.hidden_dim)
        self.language_model.requires_grad_(self.train_prior)

    def config(self) -> dict:
        """Constructor arguments."""
        return {"vocab_size": self.vocab_size, "n_symbols": self.n_symbols, "alphabet": self.alphabet,
                "embed_dim": self.embed_dim, "hidden_dim": self.hidden_dim, "symbol_dim": self.symbol_dim,
                "max_len": self.max_len, "max_codes": self.max_codes, "prior": self.prior_name,
                "train_prior": self.train_prior}

    @property
    def compresses(self) -> bool:
        """True with Miao & Blunsom's compression prior (latent words pointed at in the sentence)."""
        return self.prior_name == "language_model"

    @property
    def z_dim(self) -> int:
        """Size of a flat code, ``L * K`` (the convention of :mod:`pyro_lvm.models.text.decoding`)."""
        return self.n_symbols * self.alphabet

    # ------------------------------------------------------------------ pieces
    def _check(self, tokens: torch.Tensor) -> None:
        check_tokens(tokens, self.vocab_size, full=pyro.poutine.util.is_validation_enabled())

    split = staticmethod(SentenceVAE.split)  # (B, T) -> decoder inputs, targets (B, T-1), mask of real targets

    def _attend(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weights (B, L, T-1), encoder states (B, T-1, H))``: each query's attention over the words
        and ``<eos>`` (over the words only for the compression prior's pointer)."""
        words = tokens[:, 1:]
        states, _ = self.encoder_rnn(self.embedding(words))
        scores = torch.einsum("lh,bth->blt", self.queries, states) / math.sqrt(self.hidden_dim)
        hidden = words == PAD_ID
        if self.compresses:
            # the pointer: words only, and words outside the alphabet (<unk>) only where there is no other
            hidden = hidden | (words == EOS_ID)
            rare = hidden | (to_symbols(words, self.alphabet) == UNK_ID)
            hidden = torch.where(rare.all(-1, keepdim=True), hidden, rare)
        return scores.masked_fill(hidden.unsqueeze(1), -math.inf).softmax(-1), states

    def code_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unnormalised ``log q(z_l = k | x)``: ``(B, T) -> (B, L, K)``."""
        weights, states = self._attend(tokens)
        if not self.compresses:
            return self.to_logits(torch.einsum("blt,bth->blh", weights, states))
        # the pointer: a word's probability is the attention on its positions; words absent from the
        # sentence get MASKED (finite, so that relaxed values with no mass there score 0, not NaN)
        ids = to_symbols(tokens[:, 1:], self.alphabet).unsqueeze(1).expand_as(weights)
        probs = weights.new_zeros(*weights.shape[:2], self.alphabet).scatter_add(-1, ids, weights)
        return torch.where(probs > 0, probs.clamp_min(1e-30).log(), torch.full_like(probs, MASKED))

    @torch.no_grad()
    def attention(self, tokens: torch.Tensor) -> torch.Tensor:
        """Where each symbol position looks: ``(B, T) -> (B, L, T-1)`` weights over the words (and ``<eos>``)."""
        return self._attend(tokens)[0]

    def _summary(self, z: torch.Tensor) -> torch.Tensor:
        """Code ``(..., L*K)`` (one-hot or relaxed) -> ``(..., L*d)`` embedded and flattened."""
        codes = z.reshape(*z.shape[:-1], self.n_symbols, self.alphabet)
        return (codes @ self.symbol_table() + self.position_embedding).flatten(-2)

    def symbol_table(self) -> torch.Tensor:
        """``(K, symbol_dim)``: each symbol's vector in the decoder (the projected word vector for latent words)."""
        if self.compresses:
            return self.symbol_projection(self.embedding.weight[:self.alphabet])
        return self.symbol_embedding

    def init_state(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Initial decoder ``(h, c)`` from flat codes ``z (N, L*K)``, each ``(1, N, hidden)``."""
        h, c = self.code_to_state(self._summary(z)).chunk(2, dim=-1)
        return torch.tanh(h).unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()

    def decoder_logits(self, inputs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Next-token logits for ``inputs (B, T)`` given flat codes ``z (*S, B or 1, L*K)``: ``(*S, B, T, vocab)``.

        Leading dims of ``z`` (particles, enumerated codes) are folded into the LSTM batch.
        """
        z = z.expand(*z.shape[:-2], inputs.shape[0], z.shape[-1])
        lead = tuple(z.shape[:-2])
        zf = z.reshape(-1, z.shape[-1])
        x = inputs.expand(*lead, *inputs.shape).reshape(-1, inputs.shape[-1])
        emb = self.embedding(x)
        context = self.code_to_context(self._summary(zf))
        emb = torch.cat([emb, context.unsqueeze(1).expand(-1, emb.shape[1], -1)], dim=-1)
        out, _ = self.decoder_rnn(emb, self.init_state(zf))
        return self.output(out).reshape(*lead, *inputs.shape, self.vocab_size)

    def likelihood(self, tokens: torch.Tensor, z: torch.Tensor) -> dist.TorchDistribution:
        """``p(x | z)`` for codes ``z (*S, B, L, K)``: batch shape ``(*S, B)``, event ``(T-1,)``, padding masked."""
        inputs, _, mask = self.split(tokens)
        logits = self.decoder_logits(inputs, z.reshape(*z.shape[:-2], self.z_dim))
        return WordCategorical(logits).mask(mask).to_event(1)

    def prior(self, batch: int) -> dist.TorchDistribution:
        """``p(z)``: batch shape ``(batch,)``, event ``(L, K)`` one-hot."""
        if self.compresses:
            return LanguageModelPrior(self.language_model, self.n_symbols, (batch,))
        return dist.OneHotCategorical(logits=self.prior_logits).expand([batch, self.n_symbols]).to_event(1)

    # ------------------------------------------------------------------ the pair
    def objective(self, estimator: str = "straight-through", temperature: float = 1.0, **kwargs: Any) -> DiscreteELBO:
        """The objective this pair is meant for: ``DiscreteELBO(estimator)`` (default
        ``"straight-through"``, the task's; ``kwargs`` go to :class:`~pyro_lvm.infer.DiscreteELBO`)."""
        return DiscreteELBO(estimator, temperature, max_plate_nesting=1, **kwargs)

    def model(self, tokens: torch.Tensor) -> None:
        """``tokens: (B, T)``; latent ``z: (B, L, K)`` one-hot; observed ``x = tokens[:, 1:]``."""
        self._check(tokens)
        with pyro.plate("data", tokens.shape[0]):
            z = pyro.sample("z", self.prior(tokens.shape[0]))
            pyro.sample("x", self.likelihood(tokens, z), obs=tokens[:, 1:])

    def guide(self, tokens: torch.Tensor) -> None:
        """``q(z | x)``: ``L`` independent categoricals ``(B, L, K)`` given the sentence."""
        self._check(tokens)
        with pyro.plate("data", tokens.shape[0]):
            baseline = {"nn_baseline": self.baseline_net, "nn_baseline_input": tokens}
            pyro.sample("z", dist.OneHotCategorical(logits=self.code_logits(tokens)).to_event(1),
                        infer={"baseline": baseline})

    # ------------------------------------------------------------------ evaluation and use
    @torch.no_grad()
    def negative_elbo(self, tokens: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """``-ELBO`` per sentence ``(B,)``: ``num_samples`` one-hot codes for ``E_q[-log p(x|z)]``
        plus :meth:`code_kl`. The same bound whatever estimator trained the pair."""
        check_tokens(tokens, self.vocab_size, full=True)
        validation.positive_int("num_samples", num_samples)
        q = dist.OneHotCategorical(logits=self.code_logits(tokens))
        z = q.sample((num_samples,))
        return self.code_kl(tokens, num_samples) - self.likelihood(tokens, z).log_prob(tokens[:, 1:]).mean(0)

    @torch.no_grad()
    def code_kl(self, tokens: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """``KL(q(z|x) || p(z))`` per sentence ``(B,)``: exact for the uniform prior,
        ``sum_l (log K - H(q_l))``; for the language-model prior the mean of ``log q(z) - log p(z)``
        over ``num_samples`` codes from q (it has no closed form)."""
        q = dist.OneHotCategorical(logits=self.code_logits(tokens))
        if not self.compresses:
            return (math.log(self.alphabet) - q.entropy()).sum(-1)
        z = q.sample((num_samples,))
        return (q.log_prob(z).sum(-1) - self.prior(tokens.shape[0]).log_prob(z)).mean(0)

    def all_codes(self) -> torch.Tensor:
        """Every code, ``(K**L, L, K)`` one-hot, in lexicographic order; refused above ``max_codes``."""
        n = self.alphabet ** self.n_symbols
        if n > self.max_codes:
            raise ValueError(f"{self.n_symbols} symbols of {self.alphabet} make {n} codes, more than max_codes="
                             f"{self.max_codes}; exact sums are for small codes (raise max_codes if you must)")
        idx = torch.tensor(list(itertools.product(range(self.alphabet), repeat=self.n_symbols)),
                           device=self.queries.device)
        return F.one_hot(idx, self.alphabet).float()

    @torch.no_grad()
    def log_marginal(self, tokens: torch.Tensor, max_logits: int = CHUNK_ELEMENTS) -> torch.Tensor:
        """Exact ``log p(x) = logsumexp_z [log p(x | z) + log p(z)]`` over all ``K**L`` codes: ``(B,)``.

        The codes go through the decoder in groups whose word logits ``(codes, B, T-1, vocab)``
        hold at most ``max_logits`` numbers (default 64 MB of float32), so memory stays bounded
        however many codes there are; the time grows with ``K**L``."""
        check_tokens(tokens, self.vocab_size, full=True)
        validation.positive_int("max_logits", max_logits)
        codes = self.all_codes().unsqueeze(1)  # (C, 1, L, K): broadcast over the batch
        group = max(1, max_logits // (tokens.numel() * self.vocab_size))
        log_lik = torch.cat([self.likelihood(tokens, part).log_prob(tokens[:, 1:])    # (C, B)
                             for part in codes.split(group)])
        return torch.logsumexp(log_lik + self.prior(1).log_prob(codes), 0)

    @torch.no_grad()
    def symbols(self, tokens: torch.Tensor) -> torch.Tensor:
        """Most probable symbol at each position: ``(B, T) -> (B, L)`` ids in ``[0, K)``."""
        check_tokens(tokens, self.vocab_size, full=True)
        return self.code_logits(tokens).argmax(-1)

    @torch.no_grad()
    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Most probable code as a flat one-hot vector: ``(B, T) -> (B, L*K)``."""
        return F.one_hot(self.symbols(tokens), self.alphabet).float().flatten(-2)

    @torch.no_grad()
    def step(self, prev: torch.Tensor, state, z: torch.Tensor):
        """One decoding step: ``prev (N,)`` ids -> ``(logits (N, vocab), new state)``."""
        emb = torch.cat([self.embedding(prev), self.code_to_context(self._summary(z))], dim=-1).unsqueeze(1)
        out, state = self.decoder_rnn(emb, state)
        return self.output(out[:, 0]), state

    def pretrain_prior(self, tokens: torch.Tensor, epochs: int = 2, batch_size: int = 64, lr: float = 2e-3,
                       seed: int = 0) -> list[float]:
        """Train the language-model prior on sentences ``tokens (N, T)`` (Miao & Blunsom's first step;
        the ELBO's training then leaves it fixed unless ``train_prior``): the loss per epoch, nats per word."""
        if not self.compresses:
            raise validation.InvalidArgumentError("pretrain_prior trains the language-model prior; this pair has "
                                                  "prior='uniform' (build it with prior='language_model')")
        check_tokens(tokens, self.vocab_size, full=True)
        return pretrain_language_model(self.language_model, tokens, epochs, batch_size, lr, seed)

    @torch.no_grad()
    def sample_prior_codes(self, n: int) -> torch.Tensor:
        """``n`` codes drawn from the prior, flat one-hot ``(n, L*K)``."""
        validation.positive_int("n", n)
        return self.prior(n).sample().flatten(-2)


class _SentenceBaseline(nn.Module):
    """Mnih & Gregor's learned baseline: the mean of a sentence's word vectors -> a scalar per sentence.

    Its own embedding, so its regression loss never moves the pair's word vectors.
    """

    def __init__(self, vocab_size: int, dim: int = 32):
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, dim, mode="mean", padding_idx=PAD_ID)
        self.net = nn.Sequential(nn.Linear(dim + 1, 64), nn.Tanh(), nn.Linear(64, 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = (tokens != PAD_ID).sum(-1, keepdim=True).float()
        return self.net(torch.cat([self.embedding(tokens), length / 10], -1)).squeeze(-1)


# ----------------------------------------------------------------------------- what the codes carry

def _entropy(counts: Counter) -> float:
    n = sum(counts.values())
    return -sum(c / n * math.log(c / n) for c in counts.values() if c)


def mutual_information(pairs: Sequence[tuple]) -> float:
    """Plug-in mutual information (nats) of the empirical joint distribution of ``(a, b)`` pairs."""
    if not pairs:
        raise ValueError("mutual information needs at least one (a, b) pair")
    return (_entropy(Counter(a for a, _ in pairs)) + _entropy(Counter(b for _, b in pairs))
            - _entropy(Counter(pairs)))


def symbol_tag_information(symbols: torch.Tensor, tags: Sequence[Sequence[str]], positions: int = 8,
                           seed: int = 0) -> dict[str, list[list[float]]]:
    """How much the symbol at each code position says about the tag at each word position.

    Args:
        symbols: ``(N, L)`` symbol ids of N sentences (:meth:`SymbolSequenceAutoencoder.symbols`).
        tags: the N sentences' tag sequences (e.g. MASC's Penn tags).
        positions: word positions 1..``positions`` considered.
        seed: of the permutation that gives the chance level.

    Returns ``{"mi": L x positions, "chance": L x positions}`` in nats: the plug-in MI over the
    sentences that have a word there, and the same with the codes shuffled across sentences
    (the plug-in estimate's bias with these counts; what alignment must beat).
    """
    if not isinstance(symbols, torch.Tensor) or symbols.dim() != 2:
        raise validation.InvalidArgumentError(f"symbols must be an (N, L) tensor, got {getattr(symbols, 'shape', symbols)!r}")
    if len(tags) != symbols.shape[0]:
        raise validation.InvalidArgumentError(f"tags has {len(tags)} sentences but symbols has {symbols.shape[0]}")
    validation.positive_int("positions", positions)
    rows = symbols.tolist()
    shuffled = [rows[i] for i in torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()]
    out: dict[str, list[list[float]]] = {"mi": [], "chance": []}
    for key, codes in (("mi", rows), ("chance", shuffled)):
        for pos in range(symbols.shape[1]):
            out[key].append([
                mutual_information([(c[pos], t[j]) for c, t in zip(codes, tags) if len(t) > j]) if any(len(t) > j for t in tags)
                else math.nan for j in range(positions)])
    return out


def symbol_word_associations(symbols: torch.Tensor, sentences: Sequence[Sequence[str]], top: int = 5,
                             min_count: int = 5) -> dict[str, list[tuple[str, float]]]:
    """The words most associated with each symbol value (any position): ``{"k": [(word, PMI), ...]}``.

    PMI = log p(word | the code holds k) / p(word), over sentence-level occurrences; words seen
    in fewer than ``min_count`` sentences with the symbol are left out (PMI of rare words is noise);
    equal PMIs are ordered by that count, then alphabetically.
    """
    if not isinstance(symbols, torch.Tensor) or symbols.dim() != 2 or len(sentences) != symbols.shape[0]:
        raise validation.InvalidArgumentError("symbols must be (N, L) with one row per sentence")
    validation.positive_int("top", top)
    validation.positive_int("min_count", min_count)
    word_docs: Counter = Counter()
    joint: dict[int, Counter] = {}
    docs_with: Counter = Counter()
    for code, sent in zip(symbols.tolist(), sentences):
        words = set(sent)
        word_docs.update(words)
        for k in set(code):
            docs_with[k] += 1
            joint.setdefault(k, Counter()).update(words)
    n = len(sentences)
    out = {}
    for k in sorted(joint):
        scored = [(w, math.log((c / docs_with[k]) / (word_docs[w] / n)), c) for w, c in joint[k].items()
                  if c >= min_count]
        # ties in PMI: the word seen more often with the symbol first, then alphabetical (sets have no order)
        out[str(k)] = [(w, pmi) for w, pmi, _ in sorted(scored, key=lambda x: (-x[1], -x[2], x[0]))[:top]]
    return out
