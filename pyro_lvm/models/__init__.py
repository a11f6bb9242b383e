"""Model/guide pairs, one module per family."""

from .hmm import HMM
from .hmm_emissions import BernoulliEmission, CategoricalEmission
from .ppca import PPCA
from .sentence_vae import SentenceVAE
from .symbol_sequences import SymbolSequenceAutoencoder
from .topic import LDA, ProdLDA
from .vae import VAE, Autoencoder

__all__ = ["VAE", "Autoencoder", "PPCA", "LDA", "ProdLDA", "HMM", "BernoulliEmission", "CategoricalEmission",
           "SentenceVAE", "SymbolSequenceAutoencoder"]
