"""Li et al. (2019, "A surprisingly effective fix for deep latent variable modeling of text")
for any model/guide pair: pretrain the pair as an autoencoder, reset its decoder, then train
it with free bits.

:func:`pretrain_and_fit` runs two ``fit()`` calls:

1. **pretraining**: ``pretrain_epochs`` epochs with the KL term switched off (``beta = 0``,
   :class:`~pyro_lvm.infer.KLScaledELBO`, the same handler that KL annealing drives), so the
   guide learns to encode what the decoder can use; the logged validation loss is then the
   reconstruction loss, and ``restore_best`` keeps the best autoencoder by it;
2. **decoder reset**: the parameters the model uses and the guide does not (found on one batch
   as :class:`~pyro_lvm.infer.AggressiveTraining` finds them, with
   :func:`~pyro_lvm.infer.split_parameters`) go back to their values from before pretraining
   (``reset="initial"``) or are drawn afresh by their modules' ``reset_parameters()``
   (``reset="fresh"``, as Li et al.'s code does). A parameter both use (a shared word
   embedding) is kept, since resetting it would undo the encoder's pretraining; pass
   ``keep_shared=False`` to reset it too;
3. **training**: ``epochs`` epochs of :class:`~pyro_lvm.infer.FreeBitsELBO` with
   ``free_bits`` nats per latent dimension (``free_bits=0``: the plain ``elbo``), with a fresh
   optimiser; ``callbacks`` (e.g. :class:`~pyro_lvm.infer.KLAnnealing`, which Li et al. use
   from weight 0 over 10 epochs) apply to this phase.

With ``checkpoint_dir`` the pretraining writes to ``checkpoint_dir/pretrain/`` (with
``decoder_initial.pt``, the values an ``"initial"`` reset restores) and the training to
``checkpoint_dir`` itself, so a run resumes in either phase and its ``best.pt`` is the final
model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pyro
import pyro.poutine as poutine
import torch
from torch import nn

from .. import validation
from ..training import runs
from ..base import batch_args
from ..checkpoint import atomic_torch_save, load_checkpoint
from ..training.batching import iterate_batches
from ..training.callbacks import Callback, History
from .aggressive import split_parameters
from .handlers import KLScaledELBO, is_latent_site
from .objectives import FreeBitsELBO

RESETS = ("initial", "fresh")


@dataclass
class PretrainedHistory(History):
    """:class:`~pyro_lvm.training.loop.History` of the training phase, with the pretraining's and the
    names of the parameters that were reset."""

    pretraining: History = field(default_factory=History)
    reset: list[str] = field(default_factory=list)


def _named_parameters(pair: Any, batch: Any) -> list[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of every trainable parameter: module parameters, then ``pyro.param`` sites."""
    args, kwargs = batch_args(batch)
    with poutine.trace(param_only=True) as capture:
        guide_trace = poutine.trace(pair.guide).get_trace(*args, **kwargs)
        poutine.replay(pair.model, trace=guide_trace)(*args, **kwargs)
    named, seen = [], set()
    if isinstance(pair, nn.Module):
        for name, p in pair.named_parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                named.append((name, p))
    for name, site in sorted(capture.trace.nodes.items()):
        p = site["value"].unconstrained()
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            named.append((f"pyro.param {name!r}", p))
    return named


def _guide_reach(pair: Any, batch: Any, params: list[torch.Tensor]) -> set[int]:
    """Ids of the ``params`` that the guide's latent values or densities depend on."""
    if not params:
        return set()
    args, kwargs = batch_args(batch)
    trace = poutine.trace(pair.guide).get_trace(*args, **kwargs)
    out = sum(s["fn"].log_prob(s["value"]).sum() + s["value"].float().sum()
              for s in trace.nodes.values() if is_latent_site(s))
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        return set()
    grads = torch.autograd.grad(out, params, allow_unused=True)
    return {id(p) for p, g in zip(params, grads) if g is not None}


def decoder_parameters(pair: Any, batch: Any, keep_shared: bool = True) -> list[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of the parameters a decoder reset changes, found on ``batch``.

    They are :func:`~pyro_lvm.infer.split_parameters`'s decoder (every parameter that is not
    the guide's alone) less, with ``keep_shared``, those the guide uses too.

    Raises ``ValueError`` when there is none (say, a pair whose every parameter is the guide's).
    """
    named = _named_parameters(pair, batch)
    params = [p for _, p in named]
    encoder, decoder = split_parameters(pair, batch, params)
    chosen = {id(p) for p in decoder}
    if keep_shared:
        chosen -= _guide_reach(pair, batch, decoder)
    out = [(n, p) for n, p in named if id(p) in chosen]
    if not out:
        shared = " (the only ones it uses are shared with the guide; keep_shared=False resets those)" if decoder else ""
        raise ValueError(f"the pair has no decoder parameters to reset: no parameter is used by the model and not "
                         f"by the guide{shared}; pass reset=None to pretrain without a reset")
    return out


def _fresh_resetters(pair: Any, chosen: list[tuple[str, torch.Tensor]]) -> list[nn.Module]:
    """Modules whose ``reset_parameters()`` redraws exactly chosen parameters, covering all of them."""
    ids = {id(p) for _, p in chosen}
    modules: list[nn.Module] = []
    covered: set[int] = set()
    if isinstance(pair, nn.Module):
        for module in pair.modules():
            own = [p for p in module.parameters(recurse=False)]
            if own and callable(getattr(module, "reset_parameters", None)) and all(id(p) in ids for p in own):
                modules.append(module)
                covered |= {id(p) for p in own}
    missing = [n for n, p in chosen if id(p) not in covered]
    if missing:
        raise validation.InvalidArgumentError(
            f"reset='fresh' needs a module with reset_parameters() for every decoder parameter; {missing[:4]} "
            f"{'have' if len(missing) > 1 else 'has'} none (or share a module with parameters that are kept): "
            "use reset='initial' to restore their values from before pretraining")
    return modules


def _files(folder: Path) -> list[Path]:
    from ..training.loop import CHECKPOINT_FILES  # infer sits below the training loop: imported when used

    return [folder / name for name in CHECKPOINT_FILES if (folder / name).exists()]


def pretrain_and_fit(pair: Any, train_data: Any, valid_data: Any = None, *, pretrain_epochs: int,
                     epochs: int = 10, free_bits: float = 0.5, reset: str | None = "initial", keep_shared: bool = True,
                     elbo: Any = None, callbacks: Sequence[Callback] = (), pretrain_callbacks: Sequence[Callback] = (),
                     checkpoint_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
                     batch_size: int = 128, **fit_kwargs: Any) -> PretrainedHistory:
    """Li et al.'s recipe on any pair (see the module docstring); returns the training phase's history.

    Args:
        pair, train_data, valid_data: as for :func:`~pyro_lvm.fit`.
        pretrain_epochs: epochs of autoencoder pretraining (``beta = 0``); >= 1.
        epochs: epochs of training after the reset.
        free_bits: lambda of :class:`~pyro_lvm.infer.FreeBitsELBO`, nats per latent dimension,
            in the training phase; 0 trains with ``elbo`` itself.
        reset: ``"initial"``, ``"fresh"`` or ``None`` (pretraining without a reset).
        keep_shared: leave parameters that the guide uses too (a shared embedding) as pretrained.
        elbo: the base objective (default ``Trace_ELBO()``), scaled to ``beta = 0`` for pretraining.
        callbacks: ``fit`` callbacks of the training phase; ``pretrain_callbacks``: of the pretraining.
        checkpoint_dir, resume, overwrite: as for ``fit``, for both phases (see the module docstring).
        batch_size, **fit_kwargs: passed to both ``fit`` calls (``lr``, ``seed``, ``patience``,
            ``restore_best``, ``clip_norm``, ``device``, ...).

    Raises:
        pyro_lvm.validation.InvalidArgumentError: a bad argument.
        ValueError: ``reset`` on a pair with no decoder parameters (see :func:`decoder_parameters`).
    """
    from ..training.loop import fit  # the recipe is two fit() calls; infer sits below the loop, so imported here

    validation.pair(pair)
    validation.Integer(1)("pretrain_epochs", pretrain_epochs)
    validation.check(epochs=epochs, batch_size=batch_size)
    validation.non_negative_number("free_bits", free_bits)
    if reset is not None:
        validation.Choice(RESETS)("reset", reset)
    base = elbo if elbo is not None else pyro.infer.Trace_ELBO()
    objective = FreeBitsELBO(free_bits) if free_bits > 0 else base
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    pre_folder = folder / "pretrain" if folder is not None else None
    if folder is not None:  # refuse before any training, not after the pretraining
        for f in (pre_folder, folder):
            runs.check_free(f, _files(f), resume=resume, overwrite=overwrite, resume_flag="resume=True",
                            overwrite_flag="overwrite=True")
    training_started = resume and folder is not None and (folder / "last.pt").is_file()

    chosen: list[tuple[str, torch.Tensor]] = []
    resetters: list[nn.Module] = []
    initial: list[torch.Tensor] = []
    if reset is not None:
        train_data = validation.data(train_data, "train_data", pair)
        batch = next(iterate_batches(train_data, batch_size, shuffle=False, seed=0, epoch=0))
        chosen = decoder_parameters(pair, batch, keep_shared)
        if reset == "fresh":
            resetters = _fresh_resetters(pair, chosen)
        else:
            initial = _initial_values(chosen, pre_folder, resume)

    common = dict(batch_size=batch_size, resume=resume, overwrite=overwrite, **fit_kwargs)
    pretraining = fit(pair, train_data, valid_data, elbo=KLScaledELBO(base, beta=0.0), epochs=pretrain_epochs,
                      callbacks=pretrain_callbacks, checkpoint_dir=pre_folder, **common)
    if reset is not None and not training_started:  # a resumed training phase loads its own parameters
        with torch.no_grad():
            for module in resetters:
                module.reset_parameters()
            for (_, p), value in zip(chosen, initial):  # empty for reset='fresh'
                p.copy_(value.to(p.device))
    history = fit(pair, train_data, valid_data, elbo=objective, epochs=epochs, callbacks=callbacks,
                  checkpoint_dir=folder, **common)
    return PretrainedHistory(history.epochs, pretraining=pretraining, reset=[n for n, _ in chosen])


def _initial_values(chosen: list[tuple[str, torch.Tensor]], folder: Path | None, resume: bool) -> list[torch.Tensor]:
    """The chosen parameters' values now, kept in ``folder/decoder_initial.pt`` so that a resumed
    pretraining restores the values from before it started, not the resumed ones."""
    names = [n for n, _ in chosen]
    path = folder / "decoder_initial.pt" if folder is not None else None
    if resume and path is not None and path.is_file():
        saved = load_checkpoint(path)
        if saved.get("names") != names:
            raise ValueError(f"{path} holds initial values of other parameters ({saved.get('names')[:4]}...) than "
                             f"this pair's decoder ({names[:4]}...); pass overwrite=True to start again")
        return list(saved["values"])
    values = [p.detach().clone() for _, p in chosen]
    if path is not None:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"names": names, "values": [v.cpu() for v in values]}, path)
    return values
