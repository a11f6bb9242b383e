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


def transition_matrix(hmm, path: str | Path) -> Path:
    """Heat map of a :mod:`pyro_lvm.models.hmm` chain's transition matrix ``p(z_t | z_{t-1})``
    under its point parameters (over joint states for factorial and second-order chains)."""
    plt = _pyplot()
    trans = hmm.joint_tables(hmm.point_factors())[1].exp().detach().cpu().numpy()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(trans, cmap="Blues", vmin=0, vmax=1)
    ax.set_xlabel("next state")
    ax.set_ylabel("state")
    ax.set_title("transition matrix p(z_t | z_{t-1})")
    fig.colorbar(im, ax=ax)
    return _save(fig, path)


def roll_with_states(roll: torch.Tensor, states: torch.Tensor, path: str | Path,
                     title: str = "test chorale and its Viterbi state path") -> Path:
    """A piano roll ``(T, keys)`` of 0/1 above its state path ``(T,)`` (e.g. the Viterbi path)."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.imshow(roll.T.cpu().numpy(), aspect="auto", origin="lower", cmap="Greys", interpolation="nearest")
    top.set_ylabel("key")
    top.set_title(title)
    bottom.step(range(roll.shape[0]), states.cpu().numpy(), where="mid")
    bottom.set_ylabel("state")
    bottom.set_xlabel("quarter-note frame")
    return _save(fig, path)


def state_tag_frequencies(table, tags: Sequence[str], path: str | Path) -> Path:
    """``p(tag | state)`` as a heat map, from a ``(states, tags)`` table of co-occurrence counts
    (:func:`pyro_lvm.tagging_metrics.contingency`)."""
    import numpy as np

    plt = _pyplot()
    table = np.asarray(table)
    freq = table / np.maximum(table.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(max(6, len(tags) * 0.2), max(4, table.shape[0] * 0.15)))
    ax.imshow(freq, aspect="auto", cmap="Greys")
    ax.set_xticks(range(len(tags)), tags, rotation=90, fontsize=6)
    ax.set_xlabel("gold tag")
    ax.set_ylabel("HMM state")
    ax.set_title("p(tag | Viterbi state)")
    return _save(fig, path)


def coherence_per_topic(npmi_per_topic: Sequence[float], path: str | Path, title: str = "coherence per topic",
                        mean: float | None = None) -> Path:
    """Bar chart of each topic's NPMI (negative bars red) with the mean (default: of the bars) dashed."""
    plt = _pyplot()
    npmi = list(npmi_per_topic)
    mean = sum(npmi) / len(npmi) if mean is None else mean
    fig, ax = plt.subplots(figsize=(max(4.0, 0.25 * len(npmi) + 2), 3.2))
    ax.bar(range(len(npmi)), npmi, color=["tab:blue" if v >= 0 else "tab:red" for v in npmi])
    ax.axhline(mean, color="k", lw=1, ls="--", label=f"mean {mean:.3f}")
    ax.set_xlabel("topic")
    ax.set_ylabel("NPMI (top words, test documents)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)
