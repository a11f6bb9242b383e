"""Task ``vae``: train the Gaussian VAE and, with the same networks, a deterministic
autoencoder; evaluate both; draw reconstructions, prior samples, a VAE-vs-autoencoder
interpolation and training curves. This is the README's demo (on scikit-learn's digits).

Outputs under ``--out``: ``metrics.json``, ``config.json``, ``vae/`` and ``ae/`` checkpoint
folders (``last.pt``, ``best.pt``, ``history.json``) and PNG figures.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from .. import validation as V
from ..training import runs
from ..checkpoint import atomic_json_save, load_best_or_last, load_module_state, set_seed
from ..data import ImageData, load_images
from ..training.distributed import is_main_process
from ..evaluation.metrics import elbo_terms
from ..evaluation.report import evaluation_report
from ..models import VAE, Autoencoder
from ..training.loop import evaluate_loss, fit
from . import begin, run_folder


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", choices=["digits", "binarized-mnist", "mnist"],
                   help="digits ships with scikit-learn (offline); the others need --data-path")
    p.add_argument("--data-path", default=None, help="folder with the data files for binarized-mnist/mnist")
    p.add_argument("--z-dim", type=V.positive_int.cli, default=8)
    p.add_argument("--hidden", type=V.positive_int.cli, nargs="+", default=[128], help="hidden layer widths")
    p.add_argument("--likelihood", default="bernoulli", choices=["bernoulli", "gaussian"])
    p.add_argument("--architecture", default="mlp", choices=["mlp", "conv"])
    p.add_argument("--elbo", default="trace", choices=["trace", "meanfield"],
                   help="Trace_ELBO (Monte Carlo KL) or TraceMeanField_ELBO (closed-form KL)")
    p.add_argument("--epochs", type=V.non_negative_int.cli, default=60)
    p.add_argument("--batch-size", type=V.positive_int.cli, default=64)
    p.add_argument("--lr", type=V.positive_number.cli, default=3e-3)
    p.add_argument("--patience", type=V.positive_int.cli, default=None, help="early stopping on the validation loss")
    p.add_argument("--samples", type=V.positive_int.cli, default=1000, help="importance samples for the test log-likelihood")
    p.add_argument("--no-autoencoder", action="store_true", help="skip the autoencoder baseline")
    p.add_argument("--seed", type=V.seed_rule.cli, default=0)
    p.add_argument("--device", default="cpu", type=V.device_rule.cli)
    p.add_argument("--strategy", default="single", choices=["single", "ddp"],
                   help="ddp: data-parallel over --num-processes local processes, or the processes torchrun started")
    p.add_argument("--num-processes", type=V.positive_int.cli, default=1)
    runs.add_run_arguments(p, resume=True)
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--progress", action="store_true", help="show a progress bar per epoch")
    p.add_argument("--out", default="runs/vae")


def _model_config(args: argparse.Namespace, data: ImageData) -> dict[str, Any]:
    return {"x_dim": data.x_dim, "z_dim": args.z_dim, "hidden": list(args.hidden),
            "likelihood": args.likelihood, "architecture": args.architecture}


def _data(args: argparse.Namespace) -> ImageData:
    return load_images(args.dataset, args.data_path, binarize=args.likelihood == "bernoulli", seed=args.seed)


def _elbo(name: str):
    return pyro.infer.TraceMeanField_ELBO() if name == "meanfield" else pyro.infer.Trace_ELBO()


def main(args: argparse.Namespace) -> dict[str, Any]:
    # Everything is checked and read before the first write (runs.start_run).
    data = _data(args)
    config = begin(args, "vae", {"dataset": args.dataset, "data_path": args.data_path, "seed": args.seed,
                                 "elbo": args.elbo, "model": _model_config(args, data)})
    vae = VAE(**config["model"])
    with run_folder(args, config, main_process=is_main_process()) as out:
        return _train(args, out, data, config, vae)


def _train(args: argparse.Namespace, out: Path, data: ImageData, config: dict, vae: VAE) -> dict[str, Any]:
    train_kw = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
                    patience=args.patience, restore_best=True, resume=args.resume, progress=args.progress,
                    strategy=args.strategy, num_processes=args.num_processes)
    t0 = time.perf_counter()
    vae_history = fit(vae, data.train, data.valid, elbo=_elbo(args.elbo), checkpoint_dir=out / "vae", **train_kw)
    vae_seconds = time.perf_counter() - t0
    if not is_main_process():  # under torchrun: rank 0 evaluates and writes the report
        return {}
    vae.cpu()
    metrics: dict[str, Any] = {"data": data.summary(), "model": config["model"], "elbo": args.elbo,
                               "vae": {"epochs": len(vae_history), "train_seconds": round(vae_seconds, 2),
                                       "test": evaluation_report(vae, data.test, num_samples=args.samples)}}
    histories = {"VAE": vae_history}
    ae = None
    if not args.no_autoencoder:
        set_seed(args.seed)
        ae = Autoencoder(**config["model"])
        t0 = time.perf_counter()
        histories["AE"] = fit(ae, data.train, data.valid, checkpoint_dir=out / "ae",
                              **{**train_kw, "strategy": "single", "num_processes": 1})
        ae.cpu()
        metrics["autoencoder"] = {
            "epochs": len(histories["AE"]), "train_seconds": round(time.perf_counter() - t0, 2),
            "test_reconstruction_nll": evaluate_loss(ae, data.test, pyro.infer.Trace_ELBO()),
            "note": "an autoencoder has no prior: no samples, no log-likelihood",
        }
        metrics["vae"]["test_reconstruction_nll_at_mean_code"] = _reconstruction_nll_at_mean(vae, data.test)
    if not args.no_figures:
        metrics["figures"] = [str(p) for p in draw_figures(vae, ae, data, histories, out, args.seed)]
    atomic_json_save(metrics, out / "metrics.json")
    return metrics


@torch.no_grad()
def _reconstruction_nll_at_mean(vae: VAE, x: torch.Tensor) -> float:
    """``-log p(x | z = mu(x))`` averaged: the VAE's reconstruction, comparable with the AE's loss."""
    return float(-vae.likelihood_dist(vae.encode(x)).log_prob(x).mean())


def draw_figures(vae: VAE, ae: Autoencoder | None, data: ImageData, histories: dict, out: Path, seed: int) -> list[Path]:
    from .. import plots

    shape = data.image_shape
    x = data.test[:10]
    rows = {"data": x, "VAE": vae.reconstruct(x)}
    if ae is not None:
        rows["AE"] = ae.reconstruct(x)
    paths = [plots.image_rows(rows, shape, out / "reconstructions.png", "test images and their reconstructions")]
    set_seed(seed)
    paths.append(plots.image_grid(vae.sample(32), shape, out / "samples.png", title="VAE: samples from the prior (means of p(x|z))"))
    a, b = _distinct_pair(data)
    interp = {"VAE": vae.interpolate(a, b, steps=10)}
    if ae is not None:
        interp["AE"] = ae.interpolate(a, b, steps=10)
    paths.append(plots.image_rows(interp, shape, out / "interpolation.png",
                                  "decoding evenly spaced points between the codes of two test images"))
    paths.append(plots.training_curves(histories, out / "training_curves.png"))
    return paths


def _distinct_pair(data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
    """Two test images of different classes when labels exist (a more telling interpolation)."""
    if data.test_labels is not None:
        first = int(data.test_labels[0])
        other = int((data.test_labels != first).nonzero()[0])
        return data.test[0], data.test[other]
    return data.test[0], data.test[1]


# ----------------------------------------------------------------------------- CLI verbs on a run folder

def load_run(run: str | Path, which: str = "vae") -> tuple[VAE | Autoencoder, ImageData, dict]:
    """Rebuild a trained model from a run folder written by :func:`main` (its ``best.pt``, or
    ``last.pt`` with a warning when best.pt is broken)."""
    run = Path(run)
    config = runs.read_config(run)
    cls = {"vae": VAE, "ae": Autoencoder}[which]
    try:
        model = cls(**config["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{run / 'config.json'} does not describe a VAE run ({e})") from None
    ckpt, path = load_best_or_last(run / which)
    load_module_state(model, ckpt, path)
    model.eval()
    args = argparse.Namespace(dataset=config["dataset"], data_path=config["data_path"], seed=config["seed"],
                              likelihood=config["model"]["likelihood"])
    return model, _data(args), config


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    model, data, config = load_run(args.run)
    x = getattr(data, args.split)
    report = evaluation_report(model, x, num_samples=args.samples)
    report["split"] = args.split
    report["seed"] = args.seed
    report["kl_analytic"] = bool(elbo_terms(model, x[:2])["kl_analytic"])
    return report


def sample(args: argparse.Namespace) -> dict[str, Any]:
    from .. import plots

    model, data, _ = load_run(args.run)
    set_seed(args.seed)
    path = plots.image_grid(model.sample(args.num), data.image_shape, args.out or Path(args.run) / "cli_samples.png")
    return {"figure": str(path), "num": args.num}


def interpolate(args: argparse.Namespace) -> dict[str, Any]:
    from .. import plots

    if getattr(args, "sentences", None):
        raise ValueError(f"--sentences is for text runs; {args.run} is a vae run (images): "
                         "choose two test images with --a and --b instead")
    vae, data, _ = load_run(args.run)
    n = len(data.test)
    for i in (args.a, args.b):
        if not 0 <= i < n:
            raise ValueError(f"test image index {i} out of range: the test split has {n} images")
    rows = {"VAE": vae.interpolate(data.test[args.a], data.test[args.b], steps=args.steps)}
    if (Path(args.run) / "ae").is_dir():
        ae, _, _ = load_run(args.run, "ae")
        rows["AE"] = ae.interpolate(data.test[args.a], data.test[args.b], steps=args.steps)
    path = plots.image_rows(rows, data.image_shape, args.out or Path(args.run) / "cli_interpolation.png")
    return {"figure": str(path), "a": args.a, "b": args.b, "steps": args.steps}
