"""Aggressive inference-network training (He et al. 2019, "Lagging inference networks").

Early in training the guide lags behind the true posterior, and the model learns to ignore
``z``. He et al.'s remedy: before each joint update, optimise the *encoder only* until its
loss stops improving, so ``q(z|x)`` catches up with the current ``p(z|x)``; stop doing so
once the validation mutual information ``I_q(x; z)`` stops rising.

:class:`AggressiveTraining` is a ``fit()`` callback. While active, at each step's beginning:

1. inner loop: encoder-only steps on the step's batch, then on random training batches,
   up to ``max_inner_steps`` (default 100); every ``check_every`` (15) steps the mean loss
   per datapoint of those steps is compared with the previous window's, and the loop ends
   when it did not decrease (the released code's rule);
2. ``fit()`` then takes its ordinary joint step.

At each epoch's end the MI is measured; when it is lower than at the previous epoch the
aggressive phase ends for good (logged as ``"aggressive"`` 1/0, ``"aggressive_mi"``,
``"aggressive_inner_steps"``).

Under ``fit(strategy="ddp")`` each rank takes inner steps on its shard (and its own random
batches); encoder gradients and losses are summed over ranks, as in the joint step, and rank
0's MI ends the phase for all, so ranks stay identical.

Encoder parameters are found for any pair: those the guide's computation reaches and the
model's does not (by autograd connectivity on one batch); a parameter both use (a shared
embedding, say) counts as decoder and is left alone. Inner steps compute gradients with
``torch.autograd.grad`` for the encoder only and step a separate optimiser of the same kind
as ``fit``'s: decoder values, their ``.grad`` and the main optimiser's state are untouched.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import pyro.poutine as poutine
import torch
from torch.utils.data import DataLoader, Dataset

from ..base import batch_args, batch_size as _batch_size, batch_to
from ..traces import (detached, discover_parameters, is_auxiliary, is_latent_site, is_random, local_and_global,
                      preserved_rng, replay_model)
from ..training.callbacks import Callback, TrainState
from ..validation import Number, as_tensors as _as_tensors, check, positive_int


def _reached(output: torch.Tensor, params: list[torch.Tensor]) -> set[int]:
    if not output.requires_grad:
        return set()
    grads = torch.autograd.grad(output, params, allow_unused=True)
    return {id(p) for p, g in zip(params, grads) if g is not None}


def split_parameters(pair: Any, batch: Any, params: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(encoder, decoder)``: parameters only the guide uses, and all the others.

    The guide's reach: everything its latent sites' values and log-densities depend on. The
    model's reach: everything its log-joint depends on with the guide's values held fixed.
    """
    args, kwargs = batch_args(batch)
    guide_trace = poutine.trace(pair.guide).get_trace(*args, **kwargs)
    # Auxiliary sites (an autoguide's unconstrained draws) are part of q: their parameters are the encoder's.
    guide_out = sum(s["fn"].log_prob(s["value"]).sum() + s["value"].float().sum()
                    for s in guide_trace.nodes.values() if is_latent_site(s) or (is_random(s) and is_auxiliary(s)))
    guide_reach = _reached(guide_out, params) if isinstance(guide_out, torch.Tensor) else set()
    model_trace = replay_model(pair.model, detached(guide_trace), args, kwargs)
    model_out = sum(s["fn"].log_prob(s["value"]).sum() for s in model_trace.nodes.values()
                    if is_random(s) and (s["is_observed"] or is_latent_site(s)))
    model_reach = _reached(model_out, params) if isinstance(model_out, torch.Tensor) else set()
    encoder = [p for p in params if id(p) in guide_reach and id(p) not in model_reach]
    decoder = [p for p in params if id(p) not in {id(e) for e in encoder}]
    return encoder, decoder


class AggressiveTraining(Callback):
    """He et al.'s aggressive encoder training as a ``fit()`` callback (see the module docstring).

    Args:
        max_inner_steps: cap on encoder-only steps per joint step (paper: 100).
        check_every: compare the inner loss every this many steps (paper: 15).
        data: where inner steps after the first draw random batches from (tensor, tuple of
            tensors, Dataset or DataLoader; usually the training data). Default: the
            ``train_data`` attribute of fit's state if it has one, else the current batch again.
        valid_data: data for the MI that ends the phase. Default: the ``valid_data`` attribute
            of fit's state if it has one, else the value logged under ``monitor`` this epoch
            (e.g. ``fit(metrics={"mi": mutual_information})``), else the last training
            batches of the epoch (logged ``"aggressive_mi_source": "train"``).
        clip_norm: clip the encoder gradient norm in inner steps (He et al. use 5).
        mi_batch_size: batch size of the MI estimate (its value is at most log of it).
        lr: learning rate of the encoder-only optimiser (default: fit's). Its kind and other
            settings are copied from fit's optimiser; its state is its own.
    """

    def __init__(self, max_inner_steps: int = 100, check_every: int = 15, data: Any = None, valid_data: Any = None,
                 monitor: str = "mi", clip_norm: float | None = None, mi_batch_size: int = 500,
                 recent_batches: int = 10, lr: float | None = None):
        for name, v in (("max_inner_steps", max_inner_steps), ("check_every", check_every),
                        ("mi_batch_size", mi_batch_size), ("recent_batches", recent_batches)):
            positive_int(name, v)
        check(clip_norm=clip_norm)
        Number(0.0, optional=True)("lr", lr)
        self.lr = lr
        self.max_inner_steps, self.check_every = max_inner_steps, check_every
        self.data, self.valid_data, self.monitor = data, valid_data, monitor
        self.clip_norm, self.mi_batch_size, self.recent_batches = clip_norm, mi_batch_size, recent_batches
        self.active = True
        self.prev_mi = 0.0  # He et al. start from pre_mi = 0
        self.encoder: list[torch.Tensor] | None = None
        self.decoder: list[torch.Tensor] | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._iter: Iterator | None = None
        self._recent: list[Any] = []
        self._inner_steps: list[int] = []

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"active": self.active, "prev_mi": self.prev_mi,
                "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.active, self.prev_mi = state["active"], state["prev_mi"]
        self._pending_optimizer = state.get("optimizer")

    # ------------------------------------------------------------------ helpers
    def _setup(self, state: TrainState, batch: Any) -> None:
        from ..evaluation.diagnostics import no_local_sites

        args, kwargs = batch_args(batch)
        with torch.no_grad(), preserved_rng():
            guide_trace = poutine.trace(state.pair.guide).get_trace(*args, **kwargs)
        local, global_ = local_and_global(guide_trace, _batch_size(batch))
        if not local:
            raise no_local_sites(global_, _batch_size(batch), None, "AggressiveTraining and its MI stopping rule",
                                 "Train global latents without AggressiveTraining (He et al.'s remedy is for the "
                                 "encoder of a per-datapoint code), or: ")
        params = state.params or list(discover_parameters(state.pair, lambda: state.loss(batch))[0].values())
        self.encoder, self.decoder = split_parameters(state.pair, batch, params)
        if not self.encoder:
            raise ValueError("aggressive training found no encoder parameters: no parameter is used by the guide "
                             "alone (a guide with no parameters of its own has nothing to train)")
        defaults = {k: v for k, v in state.optimizer.defaults.items() if k not in ("differentiable",)}
        if self.lr is not None:
            defaults["lr"] = self.lr
        self.optimizer = type(state.optimizer)(self.encoder, **defaults)
        pending = getattr(self, "_pending_optimizer", None)
        if pending is not None:
            self.optimizer.load_state_dict(pending)
            self._pending_optimizer = None

    def _random_batch(self, state: TrainState, batch: Any) -> Any:
        source = self.data if self.data is not None else getattr(state, "train_data", None)
        if source is None:
            return batch
        tensors = _as_tensors(source)
        if tensors is not None:
            idx = torch.randint(len(tensors[0]), (_batch_size(batch),))
            chosen = tuple(t[idx.to(t.device)] for t in tensors)
            return batch_to(chosen[0] if len(chosen) == 1 else chosen, state.device)
        if isinstance(source, Dataset) and not isinstance(source, DataLoader):
            source = DataLoader(source, batch_size=_batch_size(batch), shuffle=True)
            self.data = source
        if self._iter is None:
            self._iter = iter(source)
        try:
            out = next(self._iter)
        except StopIteration:
            self._iter = iter(source)
            out = next(self._iter)
        return batch_to(out, state.device)

    def _encoder_step(self, state: TrainState, batch: Any) -> tuple[float, float]:
        """One encoder-only update; ``(loss, datapoints)`` of the step, summed over ranks under ddp."""
        assert self.encoder is not None and self.optimizer is not None
        loss = state.loss(batch)
        value, size = float(loss.detach()), float(_batch_size(batch))
        rank = getattr(state, "rank", None)
        if rank is not None:   # every rank must see the same loss to stop the loop together
            value, size = rank.sum(value, state.device), rank.sum(size, state.device)
        if not math.isfinite(value):
            raise FloatingPointError(f"aggressive inner loss became {value} at step {state.step + 1}")
        grads = torch.autograd.grad(loss, self.encoder, allow_unused=True)
        saved = [p.grad for p in self.encoder]
        for p, g in zip(self.encoder, grads):
            p.grad = g
        if rank is not None:   # shard losses sum to the batch loss, so summed grads are its grads
            rank.sum_gradients(self.encoder)
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for p in self.encoder if p.grad is not None], self.clip_norm)
        self.optimizer.step()
        for p, g in zip(self.encoder, saved):
            p.grad = g
        return value, size

    def inner_loop(self, state: TrainState, batch: Any) -> int:
        """Encoder-only steps from ``batch``; returns how many were taken."""
        if self.encoder is None:
            self._setup(state, batch)
        prev, acc, count = math.inf, 0.0, 0
        k = 0
        for k in range(1, self.max_inner_steps + 1):
            b = batch if k == 1 else self._random_batch(state, batch)
            loss, size = self._encoder_step(state, b)
            acc, count = acc + loss, count + size
            if k % self.check_every == 0:
                current = acc / count
                if prev - current < 0:
                    break
                prev, acc, count = current, 0.0, 0
        return k

    # ------------------------------------------------------------------ hooks
    def on_epoch_begin(self, state: TrainState) -> None:
        self._recent, self._inner_steps = [], []

    def on_step_begin(self, state: TrainState, batch: Any) -> None:
        self._recent = (self._recent + [batch])[-self.recent_batches:]
        # fit() builds its optimiser during the first step; the encoder's copies its kind and
        # settings, so the inner loop starts at the second step.
        if self.active and state.optimizer is not None:
            self._inner_steps.append(self.inner_loop(state, batch))

    def _mutual_information(self, state: TrainState) -> tuple[float, str]:
        from ..evaluation.diagnostics import mutual_information

        data = self.valid_data if self.valid_data is not None else getattr(state, "valid_data", None)
        if data is not None:
            return mutual_information(state.pair, data, batch_size=self.mi_batch_size), "valid"
        if self.monitor in state.logs:
            return float(state.logs[self.monitor]), self.monitor
        total, n = 0.0, 0
        for b in self._recent:
            size = _batch_size(b)
            total += mutual_information(state.pair, b, batch_size=max(size, 1)) * size
            n += size
        return total / max(n, 1), "train"

    def on_epoch_end(self, state: TrainState) -> None:
        state.logs["aggressive"] = int(self.active)
        if not self.active:
            return
        with torch.no_grad():
            mi, source = self._mutual_information(state)
        if getattr(state, "rank", None) is not None:   # MI draws differ by rank; rank 0's decides for all
            mi, source = state.rank.agree((mi, source))
        state.logs["aggressive_mi"] = mi
        state.logs["aggressive_mi_source"] = source
        state.logs["aggressive_inner_steps"] = sum(self._inner_steps) / max(len(self._inner_steps), 1)
        if mi - self.prev_mi < 0:
            self.active = False
        self.prev_mi = mi
