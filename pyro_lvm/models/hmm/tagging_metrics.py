"""Scoring induced tags (an HMM's states) against gold part-of-speech tags.

The states are unnamed, so a score first maps them to tags: many-to-one maps each state to its
most frequent gold tag (several states may share one), one-to-one finds the best injective map
(the Hungarian algorithm); V-measure (Rosenberg & Hirschberg 2007) needs no map.

    pred, gold = viterbi_tags(hmm, corpus.batches())
    tagging_scores(pred, gold, hmm.num_states, len(corpus.tagset))   # {"many_to_one": ..., ...}
"""

from __future__ import annotations

import numpy as np
import torch


def contingency(pred: np.ndarray, gold: np.ndarray, num_states: int, num_tags: int) -> np.ndarray:
    """``(states, tags)`` co-occurrence counts of two flat label arrays."""
    table = np.zeros((num_states, num_tags), dtype=np.int64)
    np.add.at(table, (pred, gold), 1)
    return table


def tagging_scores(pred: np.ndarray, gold: np.ndarray, num_states: int, num_tags: int) -> dict[str, float]:
    """Many-to-one (each state -> its most frequent tag), one-to-one (best injective map,
    Hungarian algorithm) accuracy and V-measure (Rosenberg & Hirschberg 2007)."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import v_measure_score

    table = contingency(pred, gold, num_states, num_tags)
    rows, cols = linear_sum_assignment(-table)
    return {"many_to_one": float(table.max(axis=1).sum() / len(gold)),
            "one_to_one": float(table[rows, cols].sum() / len(gold)),
            "v_measure": float(v_measure_score(gold, pred))}


@torch.no_grad()
def viterbi_tags(hmm, batches: list) -> tuple[np.ndarray, np.ndarray]:
    """Flat Viterbi states and gold tags over all observed tokens of ``batches``, a list of
    ``(words (B, T), mask (B, T), tags (B, T))`` (:meth:`pyro_lvm.data.tagged_text.TaggedCorpus.batches`)."""
    preds, golds = [], []
    for x, m, tags in batches:
        paths, _ = hmm.viterbi(x, m)
        m = m.cpu()
        preds.append(paths.cpu()[m])
        golds.append(tags[m])
    return torch.cat(preds).numpy(), torch.cat(golds).numpy()
