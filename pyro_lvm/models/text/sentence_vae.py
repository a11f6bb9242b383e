"""Sentence VAE (Bowman et al. 2016, "Generating Sentences from a Continuous Space") and its
two baselines, as model/guide pairs over padded token batches.

A batch is ``tokens: LongTensor (B, T)`` with rows ``<bos> w_1 ... w_n <eos> <pad> ...``
(:func:`pyro_lvm.data.text.encode_sentences`). The decoder reads ``tokens[:, :-1]`` and
predicts ``tokens[:, 1:]``; positions whose target is ``<pad>`` are masked out of the
likelihood, so padding never changes the loss.

Generative model of :class:`SentenceVAE`, per sentence::

    z ~ Normal(0, I)                                   (z_dim,)
    x_t ~ Categorical(softmax(W h_t)),  h_t = LSTM(h_{t-1}, [emb(x_{t-1}); z])   t = 1..n+1

with ``z`` entering through the decoder's initial state (``conditioning="init"``), through
concatenation to every input embedding (``"concat"``) or both. Guide: an LSTM or GRU reads
the sentence; its last hidden state gives ``q(z | x) = Normal(mu, diag sigma^2)``.

**Word dropout** (Bowman et al. Sec. 3.2, decoder weakening): while training, each decoder
input word is kept with probability ``word_keep`` and otherwise replaced by ``<unk>``, so the
decoder must get more of the sentence from ``z``. ``<bos>`` and padding are never dropped.
Evaluation (``model.eval()``) sees all words.

Baselines trained by the same ``fit``: :class:`SentenceAutoencoder` (point-mass guide and a
flat "prior": reconstruction only, as :class:`pyro_lvm.models.Autoencoder`) and
:class:`LSTMLanguageModel` (the same decoder without ``z``; its guide has no latent sites,
so its negative ELBO *is* its exact negative log-likelihood).

**The decoder network** is an LSTM (``decoder="lstm"``) or Yang et al.'s causal dilated CNN with
a limited receptive field (``decoder="cnn"``, ``receptive_field=R``;
:mod:`pyro_lvm.models.text.cnn_decoder`), which sees only the last R inputs and takes ``z`` at every
position: the same pair, likelihood and decoders otherwise.

Every model also exposes ``init_state``/``step`` for the decoders in
:mod:`pyro_lvm.models.text.decoding` (greedy, sampling, beam search, homotopies).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from torch import nn

from ... import validation
from ...data.text import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from .cnn_decoder import build_decoder, resolve_conditioning

CONDITIONINGS = ("init", "concat", "both")
ENCODERS = ("lstm", "gru")


def check_tokens(tokens: torch.Tensor, vocab_size: int, full: bool = False) -> None:
    """Raise ``ValueError`` unless ``tokens`` is a ``(B, T >= 2)`` LongTensor of ids in range.

    ``full`` also checks the layout of every row: ``<bos>`` first, one ``<eos>``, then only padding.
    """
    if not isinstance(tokens, torch.Tensor):
        raise ValueError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
    if tokens.dtype != torch.long or tokens.dim() != 2:
        raise ValueError(f"tokens must be a (batch, length) LongTensor, got dtype {tokens.dtype} and shape {tuple(tokens.shape)}")
    if tokens.shape[0] == 0 or tokens.shape[1] < 2:
        raise ValueError(f"tokens needs at least one sentence and two columns (<bos>, <eos>), got shape {tuple(tokens.shape)}")
    if not full:
        return
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"token ids must lie in [0, {vocab_size}) (the vocabulary size), got ids from {lo} to {hi}")
    if bool((tokens[:, 0] != BOS_ID).any()):
        raise ValueError(f"every row must start with <bos> (id {BOS_ID}); use pyro_lvm.data.text.encode_sentences")
    real = tokens != PAD_ID
    n_real = real.sum(1)
    if bool((real[:, 1:] & ~real[:, :-1]).any()):
        raise ValueError("padding (id 0) must come only at the end of a row")
    last = tokens.gather(1, (n_real - 1).unsqueeze(1)).squeeze(1)
    if bool((last != EOS_ID).any()) or bool(((tokens == EOS_ID).sum(1) != 1).any()):
        raise ValueError(f"every row must hold exactly one <eos> (id {EOS_ID}), as its last real token")
    if bool((n_real < 3).any()):
        raise ValueError("a row needs at least one word between <bos> and <eos> (empty sentence)")


def word_dropout(inputs: torch.Tensor, keep: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each word of ``inputs (B, T)`` by ``<unk>`` with probability ``1 - keep``.

    ``<bos>`` and ``<pad>`` stay. ``keep == 1`` returns ``inputs`` itself (no random draw).
    """
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"word keep rate must be in [0, 1], got {keep!r}")
    if keep == 1.0:
        return inputs
    droppable = (inputs != PAD_ID) & (inputs != BOS_ID)
    drop = torch.rand(inputs.shape, generator=generator, device=inputs.device) >= keep
    return inputs.masked_fill(droppable & drop, UNK_ID)


class WordCategorical(dist.Categorical):
    """``Categorical(logits=...)`` normalised by one fused ``log_softmax``.

    Same distribution, same ``log_prob``; torch's constructor instead subtracts a
    ``logsumexp``, which with a 10,000-word vocabulary made the loss and its gradient about
    2.8x slower than ``F.cross_entropy`` (measured: 180 vs 65 ms for 32 x 30 x 10,000 logits).
    """

    def __init__(self, logits: torch.Tensor, validate_args: bool | None = None):
        if logits.dim() < 1:
            raise ValueError("logits must have at least one dimension (the vocabulary)")
        self.logits = logits.log_softmax(-1)  # what torch's Categorical stores, computed in one kernel
        self._param = self.logits
        self._num_events = self.logits.shape[-1]
        torch.distributions.Distribution.__init__(self, self.logits.shape[:-1], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        # Pyro's plates expand distributions; the logits are normalised already.
        new = self._get_checked_instance(WordCategorical, _instance)
        new.logits = self.logits.expand(torch.Size(batch_shape) + self.logits.shape[-1:])
        new._param, new._num_events = new.logits, self._num_events
        torch.distributions.Distribution.__init__(new, torch.Size(batch_shape), validate_args=False)
        new._validate_args = self._validate_args
        return new


class _SentenceModel(nn.Module):
    """Embedding, LSTM decoder and output layer shared by the three models; optional encoder."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, z_dim: int, encoder: str | None,
                 conditioning: str | None, word_keep: float, max_len: int, dropout: float = 0.0,
                 decoder: str = "lstm", receptive_field: int | str | None = None):
        super().__init__()
        conditioning = resolve_conditioning(decoder, conditioning)
        for name, v in (("vocab_size", vocab_size), ("embed_dim", embed_dim), ("hidden_dim", hidden_dim), ("max_len", max_len)):
            validation.positive_int(name, v)
        if vocab_size < 5:
            raise ValueError(f"vocab_size must be > 4 (4 special tokens plus words), got {vocab_size}")
        if not isinstance(z_dim, int) or z_dim < 0:
            raise ValueError(f"z_dim must be a non-negative int, got {z_dim!r}")
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        if encoder is not None and encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        if not (isinstance(word_keep, (int, float)) and 0.0 <= word_keep <= 1.0):
            raise ValueError(f"word_keep must be in [0, 1], got {word_keep!r}")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.vocab_size, self.embed_dim, self.hidden_dim, self.z_dim = vocab_size, embed_dim, hidden_dim, z_dim
        self.conditioning, self.word_keep, self.max_len = conditioning, float(word_keep), max_len
        self.dropout = float(dropout)
        self.drop = nn.Dropout(dropout)  # on embeddings and decoder outputs, in training only
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        concat = z_dim > 0 and conditioning in ("concat", "both")
        # The LSTM, or Yang et al.'s dilated CNN (pyro_lvm.models.text.cnn_decoder): same interface.
        self.decoder_type, self.receptive_field = decoder, receptive_field
        self.decoder_rnn = build_decoder(decoder, embed_dim + (z_dim if concat else 0), hidden_dim, receptive_field,
                                         max_len)
        self.z_to_state = nn.Linear(z_dim, 2 * hidden_dim) if z_dim > 0 and conditioning in ("init", "both") else None
        self.output = nn.Linear(hidden_dim, vocab_size)
        if encoder is not None:
            rnn = nn.LSTM if encoder == "lstm" else nn.GRU
            self.encoder_rnn = rnn(embed_dim, hidden_dim, batch_first=True)
            self.to_loc = nn.Linear(hidden_dim, z_dim)
            self.to_scale = nn.Linear(hidden_dim, z_dim)

    def objective(self) -> pyro.infer.ELBO:
        """The ELBO these pairs are meant for: ``TraceMeanField_ELBO`` (the KL of the Gaussian
        code in closed form; for the autoencoder and the language model it is the exact
        reconstruction / log-likelihood term), as the sentence task trains them."""
        return pyro.infer.TraceMeanField_ELBO()

    def config(self) -> dict:
        """Constructor arguments (saved with checkpoints)."""
        raise NotImplementedError

    def _decoder_config(self) -> dict:
        return {"decoder": self.decoder_type, "receptive_field": self.receptive_field}

    # -------------------------------------------------------------- checks and pieces
    def _check(self, tokens: torch.Tensor) -> None:
        # Shapes always; the full scan of ids and layout only while Pyro validation is on
        # (fit() enables it for its first step).
        check_tokens(tokens, self.vocab_size, full=pyro.poutine.util.is_validation_enabled())

    @staticmethod
    def split(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, T)`` -> decoder inputs, targets ``(B, T-1)`` and the bool mask of real targets."""
        targets = tokens[:, 1:]
        return tokens[:, :-1], targets, targets != PAD_ID

    def encode_dist(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(z | x)`` parameters ``loc, scale: (B, z_dim)`` from the encoder's last real state."""
        words = tokens[:, 1:]  # w_1 .. w_n <eos>: the encoder reads the sentence, not <bos>
        out, _ = self.encoder_rnn(self.drop(self.embedding(words)))
        # The RNN is causal, so its output at the last real position is unaffected by any
        # padding after it: no packing needed, and extra padding changes nothing.
        last = ((words != PAD_ID).sum(1) - 1).clamp(min=0)
        h = out[torch.arange(out.shape[0], device=out.device), last]
        return self.to_loc(h), F.softplus(self.to_scale(h)) + 1e-4

    def init_state(self, z: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Initial decoder ``(h, c)`` from ``z (N, z_dim)``, each ``(1, N, hidden)``; ``None`` means zeros."""
        if self.z_to_state is None or z is None:
            return None
        h, c = self.z_to_state(z).chunk(2, dim=-1)
        return torch.tanh(h).unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()

    def _decoder_inputs(self, inputs: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        emb = self.drop(self.embedding(inputs))
        if z is not None and self.z_dim > 0 and self.conditioning in ("concat", "both"):
            emb = torch.cat([emb, z.unsqueeze(-2).expand(*emb.shape[:-1], z.shape[-1])], dim=-1)
        return emb

    def decoder_logits(self, inputs: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """Next-token logits for decoder ``inputs (B, T)`` given ``z (*S, B, z_dim)`` or ``None``.

        Returns ``(*S, B, T, vocab)``; leading sample dims of ``z`` (e.g. importance-sampling
        particles) are folded into the LSTM batch.
        """
        if z is None:
            lead: tuple[int, ...] = ()
            zf = None
            x = inputs
        else:
            lead = tuple(z.shape[:-2])
            zf = z.reshape(-1, z.shape[-1])
            x = inputs.expand(*lead, *inputs.shape).reshape(-1, inputs.shape[-1])
        out, _ = self.decoder_rnn(self._decoder_inputs(x, zf), self.init_state(zf))
        logits = self.output(self.drop(out))
        return logits.reshape(*lead, *inputs.shape, self.vocab_size)

    def likelihood(self, tokens: torch.Tensor, z: torch.Tensor | None) -> dist.TorchDistribution:
        """``p(x | z)`` with batch shape ``(*S, B)`` and event shape ``(T-1,)``; padding masked out."""
        inputs, _, mask = self.split(tokens)
        if self.training:
            inputs = word_dropout(inputs, self.word_keep)
        logits = self.decoder_logits(inputs, z)
        # The mask is what poutine.mask would apply: masked positions add 0 to log p.
        return WordCategorical(logits).mask(mask).to_event(1)

    @torch.no_grad()
    def step(self, prev: torch.Tensor, state, z: torch.Tensor | None):
        """One decoding step: ``prev (N,)`` ids -> ``(logits (N, vocab), new state)``."""
        x = self._decoder_inputs(prev.unsqueeze(1), z)
        out, state = self.decoder_rnn(x, state)
        return self.output(out[:, 0]), state

    @torch.no_grad()
    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codes used for reconstruction and interpolation: ``(B, T) -> (B, z_dim)`` (the mean)."""
        if self.z_dim == 0:
            raise ValueError(f"{type(self).__name__} has no latent code to encode into")
        check_tokens(tokens, self.vocab_size, full=True)
        return self.encode_dist(tokens)[0]


class SentenceVAE(_SentenceModel):
    """Bowman et al.'s sentence VAE as a model/guide pair (see the module docstring).

    Args:
        vocab_size: number of token ids (including the 4 special tokens).
        embed_dim, hidden_dim: word embedding and LSTM sizes (encoder and decoder alike).
        z_dim: latent dimension.
        encoder: ``"lstm"`` or ``"gru"``.
        conditioning: how ``z`` enters the decoder: ``"init"`` (initial state), ``"concat"``
            (appended to every input), ``"both"``; default ``"init"`` for the LSTM decoder,
            ``"concat"`` for the CNN (the only choice it has).
        word_keep: word-dropout keep rate k (1 = no word dropout, 0 = the decoder sees only
            ``<unk>``: Bowman et al.'s "inputless" decoder).
        max_len: longest sentence the decoders generate (words, without ``<eos>``).
        decoder: ``"lstm"`` or ``"cnn"`` (Yang et al.'s dilated convolutions,
            :mod:`pyro_lvm.models.text.cnn_decoder`).
        receptive_field: the CNN's context in positions, or ``"small"``/``"medium"``/``"large"``
            (default ``"small"``, 15 positions).
        dropout: dropout rate on the word embeddings (encoder and decoder) and on the decoder's
            outputs while training (0 = none); it regularises small corpora.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 256, hidden_dim: int = 256, z_dim: int = 32,
                 encoder: str = "lstm", conditioning: str | None = None, word_keep: float = 1.0, max_len: int = 60,
                 dropout: float = 0.0, decoder: str = "lstm", receptive_field: int | str | None = None):
        if z_dim < 1:
            raise ValueError(f"z_dim must be >= 1 for a VAE, got {z_dim!r} (use LSTMLanguageModel for no z)")
        super().__init__(vocab_size, embed_dim, hidden_dim, z_dim, encoder, conditioning, word_keep, max_len,
                         dropout, decoder, receptive_field)
        self.encoder_type = encoder
        self.register_buffer("prior_loc", torch.zeros(z_dim))
        self.register_buffer("prior_scale", torch.ones(z_dim))

    def config(self) -> dict:
        return {"vocab_size": self.vocab_size, "embed_dim": self.embed_dim, "hidden_dim": self.hidden_dim,
                "z_dim": self.z_dim, "encoder": self.encoder_type, "conditioning": self.conditioning,
                "word_keep": self.word_keep, "max_len": self.max_len, "dropout": self.dropout,
                **self._decoder_config()}

    def prior(self) -> dist.TorchDistribution:
        return dist.Normal(self.prior_loc, self.prior_scale).to_event(1)

    def model(self, tokens: torch.Tensor) -> None:
        """``tokens: (B, T)``; latent ``z: (B, z_dim)``; observed ``x = tokens[:, 1:]``."""
        self._check(tokens)
        with pyro.plate("data", tokens.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(tokens, z), obs=tokens[:, 1:])

    def guide(self, tokens: torch.Tensor) -> None:
        """``q(z | x) = Normal(mu(x), sigma(x))``, ``(B, z_dim)``."""
        self._check(tokens)
        with pyro.plate("data", tokens.shape[0]):
            loc, scale = self.encode_dist(tokens)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def sample_prior_codes(self, n: int) -> torch.Tensor:
        """``n`` codes from ``p(z)``: ``(n, z_dim)``."""
        return self.prior().sample((validation.positive_int("n", n),))


class SentenceAutoencoder(SentenceVAE):
    """Deterministic autoencoder with the VAE's networks: guide ``z = mu(x)`` (a point mass),
    flat improper "prior", so the loss is the reconstruction ``-log p(x | mu(x))`` only.
    It has no prior to sample from and no likelihood (the evaluation functions refuse)."""

    def model(self, tokens: torch.Tensor) -> None:
        self._check(tokens)
        with pyro.plate("data", tokens.shape[0]):
            z = pyro.sample("z", dist.ImproperUniform(constraints.real, (), (self.z_dim,)))
            pyro.sample("x", self.likelihood(tokens, z), obs=tokens[:, 1:])

    def guide(self, tokens: torch.Tensor) -> None:
        self._check(tokens)
        with pyro.plate("data", tokens.shape[0]):
            pyro.sample("z", dist.Delta(self.encode_dist(tokens)[0]).to_event(1))

    def sample_prior_codes(self, n: int) -> torch.Tensor:
        raise NotImplementedError("an autoencoder has no prior over z to sample sentences from; use a SentenceVAE")


class LSTMLanguageModel(_SentenceModel):
    """The VAE's decoder without ``z``: an LSTM language model as a model/guide pair whose
    guide has no latent sites (so the ELBO is the exact log-likelihood)."""

    def __init__(self, vocab_size: int, embed_dim: int = 256, hidden_dim: int = 256, word_keep: float = 1.0,
                 max_len: int = 60, dropout: float = 0.0, decoder: str = "lstm",
                 receptive_field: int | str | None = None):
        super().__init__(vocab_size, embed_dim, hidden_dim, 0, None, None, word_keep, max_len, dropout, decoder,
                         receptive_field)

    def config(self) -> dict:
        return {"vocab_size": self.vocab_size, "embed_dim": self.embed_dim, "hidden_dim": self.hidden_dim,
                "word_keep": self.word_keep, "max_len": self.max_len, "dropout": self.dropout,
                **self._decoder_config()}

    def model(self, tokens: torch.Tensor) -> None:
        self._check(tokens)
        with pyro.plate("data", tokens.shape[0]):
            pyro.sample("x", self.likelihood(tokens, None), obs=tokens[:, 1:])

    def guide(self, tokens: torch.Tensor) -> None:
        """Nothing is latent; checks the input like the model does."""
        self._check(tokens)


MODELS = {"vae": SentenceVAE, "ae": SentenceAutoencoder, "lm": LSTMLanguageModel}


def build_model(kind: str, config: dict) -> _SentenceModel:
    """``kind`` in ``MODELS`` with a :meth:`config` dict (as saved in a checkpoint)."""
    if kind not in MODELS:
        raise ValueError(f"unknown sentence model kind {kind!r}; known: {sorted(MODELS)}")
    return MODELS[kind](**config)


def _kind_of(model: _SentenceModel) -> str:
    return next(k for k, cls in MODELS.items() if type(model) is cls)


def save_sentence_model(model: _SentenceModel, vocab, path) -> None:
    """One file with the model's kind, constructor config, weights and vocabulary."""
    from ...checkpoint import atomic_torch_save

    if len(vocab) != model.vocab_size:
        raise ValueError(f"the vocabulary has {len(vocab)} tokens but the model was built for {model.vocab_size}")
    atomic_torch_save({"format": "pyro_lvm.sentence_model/1", "kind": _kind_of(model), "config": model.config(),
                       "state_dict": model.state_dict(), "vocab": vocab.to_dict()}, path)


def load_sentence_model(path, vocab=None):
    """Inverse of :func:`save_sentence_model`: returns ``(model in eval mode, vocabulary)``.

    When ``vocab`` is given it must equal the saved one (``ValueError`` says how they differ):
    token ids of data encoded with another vocabulary would silently mean other words.
    """
    from ...checkpoint import load_checkpoint
    from ...data.text import Vocabulary

    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "pyro_lvm.sentence_model/1":
        raise ValueError(f"{path} is not a sentence-model file written by save_sentence_model")
    saved = Vocabulary.from_dict(ckpt["vocab"])
    if vocab is not None:
        vocab.check_same(saved, where=f"checkpoint {path}")
    model = build_model(ckpt["kind"], ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), saved
