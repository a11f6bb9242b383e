"""Topic-model evaluation: top words, NPMI coherence, diversity, held-out perplexity.

* :func:`top_words` ranks each topic's words by its topic-word weights ``(K, V)``.
* :func:`npmi_coherence`: for each topic, the mean over pairs of its top ``n`` words of the
  normalised pointwise mutual information (Bouma 2009; Lau et al. 2014)

      NPMI(i, j) = log(P(i, j) / (P(i) P(j))) / -log P(i, j),

  with probabilities estimated from *document* co-occurrence in a reference corpus
  (``P(i)`` = share of documents containing word i, ``P(i, j)`` = share containing both).
  A pair that never co-occurs scores -1; a pair in every document scores 1.
* :func:`topic_diversity`: share of unique words among the top 25 words of all topics
  (Dieng et al. 2020); 1 = no topic repeats another's words.
* :func:`heldout_log_likelihood` / :func:`perplexity`: per-document held-out ELBO and
  importance-sampled ``log p(words)`` over document proportions, for any model with the
  small protocol of :mod:`pyro_lvm.models.topic` (``local_posterior``, ``local_prior``,
  ``to_theta``, ``word_log_probs``); global topic-word parameters are held at their point
  value (ProdLDA's decoder, LDA's posterior mean). Perplexity is
  ``exp(-sum_d log p(w_d) / sum_d N_d)``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ...data.bow import check_counts
from ...validation import check


def top_word_ids(topic_word: torch.Tensor, n: int = 10) -> torch.Tensor:
    """``(K, n)`` ids of each topic's ``n`` highest-weight words."""
    if topic_word.dim() != 2:
        raise ValueError(f"topic_word must be (topics, vocabulary), got shape {tuple(topic_word.shape)}")
    if not 1 <= n <= topic_word.shape[1]:
        raise ValueError(f"n must be in 1..{topic_word.shape[1]}, got {n}")
    return topic_word.topk(n, dim=1).indices


def top_words(topic_word: torch.Tensor, vocab: Sequence[str], n: int = 10) -> list[list[str]]:
    """Each topic's ``n`` top words, best first."""
    if topic_word.shape[1] != len(vocab):
        raise ValueError(f"vocabulary mismatch: topic_word has {topic_word.shape[1]} columns, vocab {len(vocab)} words")
    return [[vocab[i] for i in row] for row in top_word_ids(topic_word, n).tolist()]


def format_topics(topic_word: torch.Tensor, vocab: Sequence[str], n: int = 10,
                  scores: Sequence[float] | None = None) -> str:
    """A plain-text table, one line per topic: ``topic  [score]  word word ...``."""
    lines = []
    for k, words in enumerate(top_words(topic_word, vocab, n)):
        score = f"{scores[k]:+.3f}  " if scores is not None else ""
        lines.append(f"{k:>3}  {score}{' '.join(words)}")
    return "\n".join(lines)


def npmi_coherence(top_ids: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """NPMI coherence of each topic, ``(K,)``, from document co-occurrence in ``reference``.

    Args:
        top_ids: ``(K, n)`` word ids per topic (n >= 2), e.g. :func:`top_word_ids`.
        reference: ``(D, V)`` counts (only presence matters) of the reference documents.
    """
    check_counts(reference, what="reference counts")
    top_ids = torch.as_tensor(top_ids, dtype=torch.long)
    if top_ids.dim() != 2 or top_ids.shape[1] < 2:
        raise ValueError(f"top_ids must be (topics, n >= 2), got shape {tuple(top_ids.shape)}")
    if int(top_ids.max()) >= reference.shape[1] or int(top_ids.min()) < 0:
        raise ValueError(f"word ids outside the reference vocabulary of {reference.shape[1]} words")
    present = (reference > 0).to(torch.float64)                     # (D, V)
    d = present.shape[0]
    n = top_ids.shape[1]
    iu = torch.triu_indices(n, n, offset=1)
    out = []
    for ids in top_ids:
        x = present[:, ids]                                        # (D, n)
        joint = (x.t() @ x) / d                                    # (n, n) P(i, j); diagonal P(i)
        p = joint.diagonal()
        pij = joint[iu[0], iu[1]]
        pi, pj = p[iu[0]], p[iu[1]]
        with torch.no_grad():
            pmi = torch.log(pij) - torch.log(pi) - torch.log(pj)
            npmi = pmi / -torch.log(pij)
        npmi = torch.where(pij == 0, torch.full_like(npmi, -1.0), npmi)
        npmi = torch.where(pij == 1, torch.ones_like(npmi), npmi)
        out.append(npmi.mean())
    return torch.stack(out).float()


def topic_diversity(topic_word: torch.Tensor, n: int = 25) -> float:
    """Share of unique words among the top ``n`` words of all topics (1 = all distinct)."""
    ids = top_word_ids(topic_word, min(n, topic_word.shape[1]))
    return float(ids.unique().numel() / ids.numel())


@torch.no_grad()
def heldout_log_likelihood(model: Any, counts: torch.Tensor, num_samples: int = 100,
                           batch_size: int = 200) -> dict[str, torch.Tensor]:
    """Per-document held-out ``"elbo"`` and importance-sampled ``"log_lik"`` (``(D,)`` each, nats),
    with ``"words"`` (``(D,)`` document lengths).

    For ``s = 1..S`` draw ``u_s ~ q(u | counts)`` (the model's local latent), weight
    ``log w_s = log p(counts | theta(u_s)) + log p(u_s) - log q(u_s | counts)``; the ELBO is
    ``mean_s log w_s`` and ``log p(counts) ~= logsumexp_s log w_s - log S`` (a lower bound
    in expectation that tightens as S grows). The model is put in eval mode.
    """
    check(num_samples=num_samples)
    check_counts(counts, getattr(model, "vocab_size", None), what="held-out counts")
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    elbos, lls = [], []
    try:
        for start in range(0, counts.shape[0], batch_size):
            x = counts[start:start + batch_size]
            q = model.local_posterior(x)
            p = model.local_prior(x.shape[0])
            u = q.sample((num_samples,))                                   # (S, B, K)
            log_lik = (x * model.word_log_probs(model.to_theta(u))).sum(-1)  # (S, B)
            log_w = log_lik + p.log_prob(u) - q.log_prob(u)
            elbos.append(log_w.mean(0))
            lls.append(torch.logsumexp(log_w, 0) - math.log(num_samples))
    finally:
        if was_training:
            model.train()
    return {"elbo": torch.cat(elbos), "log_lik": torch.cat(lls), "words": counts.sum(-1)}


def perplexity(log_lik: torch.Tensor, words: torch.Tensor) -> float:
    """Corpus perplexity ``exp(-sum log p(w_d) / sum N_d)`` from per-document values."""
    total = float(words.sum())
    if total <= 0:
        raise ValueError("no words to compute a perplexity over")
    return math.exp(-float(log_lik.sum()) / total)


def topic_report(topic_word: torch.Tensor, vocab: Sequence[str], reference: torch.Tensor,
                 n_npmi: int = 10, n_diversity: int = 25) -> dict[str, Any]:
    """NPMI per topic and mean, diversity and top words, as plain JSON-able values."""
    npmi = npmi_coherence(top_word_ids(topic_word, n_npmi), reference)
    return {"npmi": float(npmi.mean()), "npmi_per_topic": [round(float(v), 4) for v in npmi],
            "diversity": topic_diversity(topic_word, n_diversity),
            "top_words": top_words(topic_word, vocab, n_npmi)}
