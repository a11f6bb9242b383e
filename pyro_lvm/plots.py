"""Matplotlib figures used by the examples and the CLI. Every function writes a PNG and
returns its path; matplotlib (the ``plots`` extra) is imported only when a figure is drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("figures need matplotlib: pip install 'pyro_lvm[plots]'") from e
    matplotlib.use("Agg")  # files only: works on machines without a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def image_rows(rows: Mapping[str, torch.Tensor], image_shape: Sequence[int], path: str | Path,
               title: str | None = None) -> Path:
    """One labelled row of images per entry; each value is ``(n, height * width)`` in [0, 1]."""
    plt = _pyplot()
    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(0.9 * n + 1.2, 1.0 * len(rows) + 0.4), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c < len(images):
                ax.imshow(images[c].detach().cpu().reshape(*image_shape).numpy(), cmap="gray_r", vmin=0, vmax=1)
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def image_grid(images: torch.Tensor, image_shape: Sequence[int], path: str | Path, ncol: int = 8,
               title: str | None = None) -> Path:
    """A grid of images ``(n, height * width)``, ``ncol`` per row."""
    # Labels must be unique dict keys yet print as nothing: use runs of spaces.
    rows = {" " * r: images[start:start + ncol] for r, start in enumerate(range(0, len(images), ncol))}
    return image_rows(rows, image_shape, path, title)


def training_curves(histories: Mapping[str, object], path: str | Path,
                    keys: Sequence[str] = ("train_loss", "valid_loss"), ylabel: str = "negative ELBO (nats)") -> Path:
    """Loss per epoch for several runs: ``histories`` maps a label to a :class:`pyro_lvm.History`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, history in histories.items():
        for key in keys:
            values = history[key]  # type: ignore[index]
            if values:
                ax.plot(range(1, len(values) + 1), values, label=f"{label} {key.replace('_', ' ')}",
                        linestyle="-" if key.startswith("train") else "--")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
