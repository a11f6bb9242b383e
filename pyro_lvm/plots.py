"""Matplotlib figures of the library, its tasks and its examples.

Every figure goes through the same two helpers: :func:`pyplot` (matplotlib, the ``plots``
extra, imported only when a figure is drawn, with the file-only ``Agg`` backend) and
:func:`save_figure` (folder created, one resolution, the figure closed). Per-epoch curves of
several runs are drawn by :func:`epoch_curves`. Every ``plot``-style function writes a PNG and
returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch


def pyplot():
    """``matplotlib.pyplot`` with the ``Agg`` backend (works on machines without a display)."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("figures need matplotlib: pip install 'pyro_lvm[plots]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (its folder created), close it and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path


def epoch_curves(ax: Any, histories: Mapping[str, Any], key: str, label: str = "{run}", **style: Any) -> bool:
    """Draw ``key`` against the epoch (counted from 1) for each run on ``ax``; return whether
    any run logged it. ``histories`` maps a run's label to a :class:`pyro_lvm.History` or a
    list of epoch dicts; ``label`` is formatted with ``run`` and ``key``. A run's colour is
    its position in ``histories`` (unless ``style`` sets one), so it is the same in every panel
    even where other runs did not log ``key``."""
    drawn = False
    for n, (run, history) in enumerate(histories.items()):
        epochs = history.epochs if hasattr(history, "epochs") else history
        points = [(e.get("epoch", i) + 1, e[key]) for i, e in enumerate(epochs) if e.get(key) is not None]
        if points:
            ax.plot(*zip(*points), label=label.format(run=run, key=key.replace("_", " ")),
                    **{"color": f"C{n % 10}", **style})
            drawn = True
    return drawn


def image_rows(rows: Mapping[str, torch.Tensor], image_shape: Sequence[int], path: str | Path,
               title: str | None = None) -> Path:
    """One labelled row of images per entry; each value is ``(n, height * width)`` in [0, 1]."""
    plt = pyplot()
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
    return save_figure(fig, path)


def image_grid(images: torch.Tensor, image_shape: Sequence[int], path: str | Path, ncol: int = 8,
               title: str | None = None) -> Path:
    """A grid of images ``(n, height * width)``, ``ncol`` per row."""
    # Labels must be unique dict keys yet print as nothing: use runs of spaces.
    rows = {" " * r: images[start:start + ncol] for r, start in enumerate(range(0, len(images), ncol))}
    return image_rows(rows, image_shape, path, title)


def images_per_class(images: torch.Tensor, num_classes: int, image_shape: Sequence[int], path: str | Path,
                     title: str | None = None) -> Path:
    """One row per class, labelled by the class index: ``images`` is ``(num_classes * n, height * width)``,
    class-major (the order of ``SSVAE.generate``)."""
    n = len(images) // num_classes
    return image_rows({str(c): images[n * c:n * (c + 1)] for c in range(num_classes)}, image_shape, path, title)


def image_model_figures(pair: Any, images: torch.Tensor, image_shape: Sequence[int], histories: Mapping[str, Any],
                        out: str | Path, title: str, curve_keys: Sequence[str] = ("train_loss", "valid_loss"),
                        num_samples: int = 32) -> list[Path]:
    """The figure set of an image model with ``reconstruct(x)`` and ``sample(n)``:
    ``reconstructions.png`` (``images`` above their reconstructions), ``samples.png``
    (``num_samples`` draws from the prior) and ``training_curves.png`` (``curve_keys`` per epoch)."""
    out = Path(out)
    return [image_rows({"input": images, "reconstruction": pair.reconstruct(images)}, image_shape,
                       out / "reconstructions.png", title),
            image_grid(pair.sample(num_samples), image_shape, out / "samples.png", title="samples from the prior"),
            training_curves(histories, out / "training_curves.png", keys=curve_keys)]


def training_curves(histories: Mapping[str, Any], path: str | Path,
                    keys: Sequence[str] = ("train_loss", "valid_loss"), ylabel: str = "negative ELBO (nats)") -> Path:
    """Loss per epoch for several runs: ``histories`` maps a label to a :class:`pyro_lvm.History`."""
    fig, ax = pyplot().subplots(figsize=(6, 3.6))
    for n, (run, history) in enumerate(histories.items()):
        for key in keys:  # one colour per run, one line style per split
            epoch_curves(ax, {run: history}, key, label="{run} {key}", color=f"C{n % 10}",
                         linestyle="-" if key.startswith("train") else "--")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)



def transition_matrix(hmm, path: str | Path) -> Path:
    """Heat map of a :mod:`pyro_lvm.models.hmm` chain's transition matrix ``p(z_t | z_{t-1})``
    under its point parameters (over joint states for factorial and second-order chains)."""
    plt = pyplot()
    trans = hmm.joint_tables(hmm.point_factors())[1].exp().detach().cpu().numpy()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(trans, cmap="Blues", vmin=0, vmax=1)
    ax.set_xlabel("next state")
    ax.set_ylabel("state")
    ax.set_title("transition matrix p(z_t | z_{t-1})")
    fig.colorbar(im, ax=ax)
    return save_figure(fig, path)


def roll_with_states(roll: torch.Tensor, states: torch.Tensor, path: str | Path,
                     title: str = "test chorale and its Viterbi state path") -> Path:
    """A piano roll ``(T, keys)`` of 0/1 above its state path ``(T,)`` (e.g. the Viterbi path)."""
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.imshow(roll.T.cpu().numpy(), aspect="auto", origin="lower", cmap="Greys", interpolation="nearest")
    top.set_ylabel("key")
    top.set_title(title)
    bottom.step(range(roll.shape[0]), states.cpu().numpy(), where="mid")
    bottom.set_ylabel("state")
    bottom.set_xlabel("quarter-note frame")
    return save_figure(fig, path)


def state_tag_frequencies(table, tags: Sequence[str], path: str | Path) -> Path:
    """``p(tag | state)`` as a heat map, from a ``(states, tags)`` table of co-occurrence counts
    (:func:`pyro_lvm.models.hmm.tagging_metrics.contingency`)."""
    import numpy as np

    plt = pyplot()
    table = np.asarray(table)
    freq = table / np.maximum(table.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(max(6, len(tags) * 0.2), max(4, table.shape[0] * 0.15)))
    ax.imshow(freq, aspect="auto", cmap="Greys")
    ax.set_xticks(range(len(tags)), tags, rotation=90, fontsize=6)
    ax.set_xlabel("gold tag")
    ax.set_ylabel("HMM state")
    ax.set_title("p(tag | Viterbi state)")
    return save_figure(fig, path)


def coherence_per_topic(npmi_per_topic: Sequence[float], path: str | Path, title: str = "coherence per topic",
                        mean: float | None = None) -> Path:
    """Bar chart of each topic's NPMI (negative bars red) with the mean (default: of the bars) dashed."""
    plt = pyplot()
    npmi = list(npmi_per_topic)
    mean = sum(npmi) / len(npmi) if mean is None else mean
    fig, ax = plt.subplots(figsize=(max(4.0, 0.25 * len(npmi) + 2), 3.2))
    ax.bar(range(len(npmi)), npmi, color=["tab:blue" if v >= 0 else "tab:red" for v in npmi])
    ax.axhline(mean, color="k", lw=1, ls="--", label=f"mean {mean:.3f}")
    ax.set_xlabel("topic")
    ax.set_ylabel("NPMI (top words, test documents)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
