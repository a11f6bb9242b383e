"""Task ``ss_vae``: semi-supervised VAE M2 (Kingma et al. 2014) with few labels.

Keeps ``--labels`` labels of the training images (balanced over classes), trains
:class:`~pyro_lvm.models.ss_vae.SSVAE` with the unlabelled class handled by ``--y-estimator``
(enumerated, sampled or relaxed) and the auxiliary classification loss weighted by
``--aux-weight``; reports the classifier's validation accuracy per epoch and its test
accuracy. Pyro's SS-VAE tutorial (MNIST, 3000 labels) measured 0.198 with sampled y,
0.893 enumerated and 0.958 enumerated with the auxiliary loss.

Outputs under ``--out``: ``metrics.json``, ``config.json``, checkpoints and a PNG of
generated digits per class.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from .. import plots, validation as V
from ..training import runs
from ..checkpoint import atomic_json_save, load_best_or_last, load_module_state
from ..data import load_images
from ..infer.discrete.estimators import ESTIMATORS, RELAXED, TemperatureAnnealing
from ..models.ss_vae import SSVAE, SemiSupervisedBatches, split_labelled
from ..training.loop import Callback, fit
from . import begin, run_folder

NOT_APPLICABLE = {"interpolate": "its class y is discrete; sample draws images for each class instead"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", choices=["digits", "mnist"],
                   help="a labelled image set: digits (offline) or mnist (needs --data-path)")
    p.add_argument("--data-path", default=None)
    p.add_argument("--labels", type=V.positive_int.cli, default=100, help="number of labelled training images")
    p.add_argument("--y-estimator", default="enumerate", choices=list(ESTIMATORS))
    p.add_argument("--aux-weight", type=V.non_negative_number.cli, default=10.0,
                   help="alpha of the auxiliary classification loss")
    p.add_argument("--z-dim", type=V.positive_int.cli, default=16)
    p.add_argument("--hidden", type=V.positive_int.cli, nargs="+", default=[128])
    p.add_argument("--epochs", type=V.non_negative_int.cli, default=40)
    p.add_argument("--batch-size", type=V.positive_int.cli, default=100, help="unlabelled images per batch")
    p.add_argument("--labelled-batch-size", type=V.positive_int.cli, default=20)
    p.add_argument("--lr", type=V.positive_number.cli, default=3e-3)
    p.add_argument("--temperature", type=V.positive_number.cli, default=1.0,
                   help="initial temperature of the relaxed estimators")
    p.add_argument("--anneal-rate", type=V.non_negative_number.cli, default=1e-3)
    p.add_argument("--seed", type=V.seed_rule.cli, default=0)
    p.add_argument("--device", default="cpu", type=V.device_rule.cli)
    runs.add_run_arguments(p, resume=False)
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", default="runs/ss_vae")


class ValidAccuracy(Callback):
    """Logs the classifier's accuracy on held-out labelled images as ``valid_accuracy``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def on_epoch_end(self, state) -> None:
        state.logs["valid_accuracy"] = state.pair.accuracy(self.x.to(state.device), self.y.to(state.device))


def _data(config: dict):
    data = load_images(config["dataset"], config["data_path"], binarize=True, seed=config["seed"])
    if data.train_labels is None:
        raise ValueError(f"data set {data.name!r} has no labels; the semi-supervised VAE needs a labelled set")
    return data, int(data.train_labels.max()) + 1


def _build(config: dict, x_dim: int, n_classes: int) -> SSVAE:
    return SSVAE(x_dim, n_classes, config["z_dim"], tuple(config["hidden"]), y_estimator=config["y_estimator"],
                 temperature=config["temperature"], aux_weight=config["aux_weight"])


def main(args: argparse.Namespace) -> dict[str, Any]:
    config = begin(args, "ss_vae")
    pyro.clear_param_store()
    data, n_classes = _data(config)
    x_u, x_l, y_l = split_labelled(data.train, data.train_labels, args.labels, n_classes, seed=args.seed)
    batches = SemiSupervisedBatches(x_u, x_l, y_l, args.batch_size, args.labelled_batch_size, seed=args.seed)
    pair = _build(config, data.x_dim, n_classes)
    with run_folder(args, config) as out:
        return _train(args, out, data, n_classes, batches, pair, len(y_l))


def _train(args: argparse.Namespace, out: Path, data, n_classes: int, batches: SemiSupervisedBatches, pair: SSVAE,
           labels: int) -> dict[str, Any]:
    callbacks: list[Callback] = [ValidAccuracy(data.valid, data.valid_labels)]
    if args.y_estimator in RELAXED:
        callbacks.append(TemperatureAnnealing(args.anneal_rate, 0.5, tau0=args.temperature))
    start = time.perf_counter()
    history = fit(pair, batches.loader(), elbo=pair.objective(), epochs=args.epochs, lr=args.lr, seed=args.seed,
                  device=args.device, callbacks=callbacks, checkpoint_dir=out, progress=args.progress)
    pair.to("cpu").eval()
    metrics: dict[str, Any] = {
        "dataset": data.name, "labels": labels, "y_estimator": args.y_estimator, "aux_weight": args.aux_weight,
        "epochs": len(history), "train_seconds": time.perf_counter() - start,
        "valid_accuracy": history["valid_accuracy"][-1] if len(history) else None,
        "test_accuracy": pair.accuracy(data.test, data.test_labels),
    }
    if not args.no_figures:
        images = pair.generate(torch.arange(n_classes), n_per_class=4)
        metrics["figures"] = [str(plots.images_per_class(images, n_classes, data.image_shape,
                                                         out / "generated_per_class.png",
                                                         "M2: x ~ p(x | y, z) for each class y"))]
    atomic_json_save(metrics, out / "metrics.json")
    return metrics


# ----------------------------------------------------------------------------- CLI verbs on a run folder

def load_run(run: str | Path) -> tuple[SSVAE, Any, dict]:
    """``(pair, data, config)`` of a run folder written by :func:`main`."""
    config = runs.read_config(run)
    data, n_classes = _data(config)
    pair = _build(config, data.x_dim, n_classes)
    ckpt, path = load_best_or_last(run)
    load_module_state(pair, ckpt, path)
    return pair.eval(), data, config


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """The classifier's accuracy on ``--split`` (the task's measure; no likelihood is estimated)."""
    pair, data, _ = load_run(args.run)
    x, y = getattr(data, args.split), getattr(data, f"{args.split}_labels")
    return {"split": args.split, "accuracy": pair.accuracy(x, y), "num_datapoints": len(x), "seed": args.seed}


def sample(args: argparse.Namespace) -> dict[str, Any]:
    """A PNG with ``--num`` generated images for each class, one row per class."""
    pair, data, _ = load_run(args.run)
    k = pair.n_classes
    images = pair.generate(torch.arange(k), n_per_class=args.num)
    path = plots.images_per_class(images, k, data.image_shape, args.out or Path(args.run) / "cli_samples.png",
                                  "x ~ p(x | y, z) for each class y")
    return {"figure": str(path), "num_per_class": args.num}
