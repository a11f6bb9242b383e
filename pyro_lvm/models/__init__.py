"""Model/guide pairs, one module per family."""

from .collapse_toy import SequenceVAE, toy_splits
from .discrete_vae import CategoricalVAE
from .hmm import HMM
from .hmm_emissions import BernoulliEmission, CategoricalEmission
from .mixture import CategoricalMixture
from .ppca import PPCA
from .sentence_vae import SentenceVAE
from .ssvae import SSVAE, SemiSupervisedBatches, split_labelled
from .symbol_sequences import SymbolSequenceAutoencoder
from .topic import LDA, ProdLDA
from .vae import VAE, Autoencoder

__all__ = ["VAE", "Autoencoder", "PPCA", "LDA", "ProdLDA", "CategoricalVAE", "CategoricalMixture",
           "SSVAE", "SemiSupervisedBatches", "split_labelled", "SequenceVAE", "toy_splits",
           "HMM", "BernoulliEmission", "CategoricalEmission", "SentenceVAE", "SymbolSequenceAutoencoder"]
