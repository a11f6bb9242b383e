"""Model/guide pairs, one module per family."""

from .collapse_toy import SequenceVAE, toy_splits
from .categorical_vae import CategoricalVAE
from .hmm import HMM
from .hmm.emissions import BernoulliEmission, CategoricalEmission
from .categorical_mixture import CategoricalMixture
from .ppca import PPCA
from .text.sentence_vae import SentenceVAE
from .ss_vae import SSVAE, SemiSupervisedBatches, split_labelled
from .text.symbol_sequences import SymbolSequenceAutoencoder
from .topic import LDA, ProdLDA
from .vae import VAE, Autoencoder

__all__ = ["VAE", "Autoencoder", "PPCA", "LDA", "ProdLDA", "CategoricalVAE", "CategoricalMixture",
           "SSVAE", "SemiSupervisedBatches", "split_labelled", "SequenceVAE", "toy_splits",
           "HMM", "BernoulliEmission", "CategoricalEmission", "SentenceVAE", "SymbolSequenceAutoencoder"]
