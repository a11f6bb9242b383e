"""Hidden Markov models: the HMM with both inference paths (:mod:`.hmm`), its emissions
(:mod:`.emissions`, word-vector and neural ones in :mod:`.word_emissions`), the factorial and
second-order family (:mod:`.family`), the exact algorithms (forward, Viterbi, FFBS, expected
counts, brute force: :mod:`.inference`) and the scores of induced tags (:mod:`.tagging_metrics`)."""

from pyro_lvm.models.hmm.emissions import (AutoregressiveBernoulliEmission, BernoulliEmission, CategoricalEmission,
                                           FeatureCategoricalEmission, GaussianEmission, NeuralBernoulliEmission)
from pyro_lvm.models.hmm.family import FactorialHMM, PartiallyFactorialHMM, SecondOrderHMM
from pyro_lvm.models.hmm.hmm import HMM, HMMBase, lengths_to_mask
from pyro_lvm.models.hmm.word_emissions import (AdditiveCoupling, EmbeddingGaussianEmission, NeuralCategoricalEmission,
                                                VolumePreservingFlow, char_ids)

__all__ = ["HMM", "HMMBase", "lengths_to_mask",
           "AutoregressiveBernoulliEmission", "BernoulliEmission", "CategoricalEmission", "FeatureCategoricalEmission",
           "GaussianEmission", "NeuralBernoulliEmission",
           "FactorialHMM", "PartiallyFactorialHMM", "SecondOrderHMM",
           "AdditiveCoupling", "EmbeddingGaussianEmission", "NeuralCategoricalEmission", "VolumePreservingFlow",
           "char_ids"]
