"""Topic models: ProdLDA (:mod:`.prodlda`) and LDA (:mod:`.lda`) over the bag-of-words pieces
they share (:mod:`.bag_of_words`), and topic quality (NPMI, diversity, held-out perplexity:
:mod:`.metrics`)."""

from .bag_of_words import BagOfWords, WordGivenTopic, counts_to_tokens, laplace_dirichlet_prior
from .lda import LDA, log_likelihood_enumerated_brute_force
from .prodlda import ProdLDA

__all__ = ["LDA", "ProdLDA", "BagOfWords", "WordGivenTopic", "counts_to_tokens", "laplace_dirichlet_prior",
           "log_likelihood_enumerated_brute_force"]
