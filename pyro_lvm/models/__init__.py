"""Model/guide pairs, one module per family."""

from .ppca import PPCA
from .topic import LDA, ProdLDA
from .vae import VAE, Autoencoder

__all__ = ["VAE", "Autoencoder", "PPCA", "LDA", "ProdLDA"]
