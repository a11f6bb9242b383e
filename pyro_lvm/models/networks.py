"""Encoder and decoder networks shared by the continuous-latent models.

Every network accepts any number of leading dimensions (``(..., x_dim)``), so the same
model can be evaluated with vectorised importance samples ``(K, batch, z_dim)``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    """``x (..., x_dim) -> (loc, scale)``, each ``(..., z_dim)``, of a diagonal Gaussian."""

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int] = (400,)):
        super().__init__()
        self.body = mlp([x_dim, *hidden], nn.ReLU) if hidden else nn.Identity()
        self.act = nn.ReLU() if hidden else nn.Identity()
        width = hidden[-1] if hidden else x_dim
        self.loc = nn.Linear(width, z_dim)
        self.scale = nn.Linear(width, z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.act(self.body(x))
        # softplus keeps the scale positive without exp's overflow for large inputs
        return self.loc(h), F.softplus(self.scale(h)) + 1e-5


class MLPDecoder(nn.Module):
    """``z (..., z_dim) -> (..., x_dim)`` unnormalised output (logits or means)."""

    def __init__(self, z_dim: int, x_dim: int, hidden: Sequence[int] = (400,)):
        super().__init__()
        self.net = mlp([z_dim, *hidden, x_dim], nn.ReLU)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ConvEncoder(nn.Module):
    """Small convolutional encoder for 28x28 images flattened to ``(..., 784)``."""

    def __init__(self, z_dim: int, channels: int = 32):
        super().__init__()
        c = channels
        self.conv = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1), nn.ReLU(),          # 28 -> 14
            nn.Conv2d(c, 2 * c, 4, 2, 1), nn.ReLU(),      # 14 -> 7
            nn.Flatten(), nn.Linear(2 * c * 7 * 7, 256), nn.ReLU(),
        )
        self.loc = nn.Linear(256, z_dim)
        self.scale = nn.Linear(256, z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lead = x.shape[:-1]
        h = self.conv(x.reshape(-1, 1, 28, 28))
        loc, scale = self.loc(h), F.softplus(self.scale(h)) + 1e-5
        return loc.reshape(*lead, -1), scale.reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: ``z (..., z_dim) -> (..., 784)`` logits."""

    def __init__(self, z_dim: int, channels: int = 32):
        super().__init__()
        c = channels
        self.fc = nn.Sequential(nn.Linear(z_dim, 256), nn.ReLU(), nn.Linear(256, 2 * c * 7 * 7), nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.ReLU(),   # 7 -> 14
            nn.ConvTranspose2d(c, 1, 4, 2, 1),                   # 14 -> 28
        )
        self.c = c

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, 2 * self.c, 7, 7)
        return self.deconv(h).reshape(*lead, 784)
