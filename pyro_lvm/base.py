"""The model/guide convention every part of pyro_lvm works with.

A *pair* is any object with two methods written in plain Pyro::

    class MyPair(nn.Module):
        def model(self, x): ...   # priors, plates, likelihood with obs=x
        def guide(self, x): ...   # q(z | x), same latent site names as the model

Nothing else is required: no base class to inherit, no registration calls. When the pair
is an ``nn.Module`` its parameters are trained directly (calling ``pyro.module`` inside
``model``/``guide`` is allowed but unnecessary); parameters created with ``pyro.param``
are picked up from Pyro's param store.

A *batch* is whatever a data loader yields. It is passed on as Pyro's ``SVI`` would:
a tuple or list is splatted (``model(*batch)``), a dict is passed as keywords
(``model(**batch)``), anything else (usually one tensor) is passed as the single argument.
"""

from __future__ import annotations

import itertools
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class ModelGuidePair(Protocol):
    """Structural type of a model/guide pair (see the module docstring)."""

    def model(self, *args: Any, **kwargs: Any) -> Any: ...

    def guide(self, *args: Any, **kwargs: Any) -> Any: ...


def check_pair(pair: Any) -> ModelGuidePair:
    """Return ``pair`` unchanged, or raise :class:`~pyro_lvm.validation.InvalidArgumentError`
    (a ``TypeError``) saying what is missing."""
    from .validation import pair as check

    return check(pair)


def batch_args(batch: Any) -> tuple[tuple, dict]:
    """Split a batch into ``(args, kwargs)`` for ``model(*args, **kwargs)``."""
    if isinstance(batch, dict):
        return (), dict(batch)
    if isinstance(batch, (tuple, list)):
        return tuple(batch), {}
    return (batch,), {}


def batch_size(batch: Any) -> int:
    """Number of datapoints in a batch: the length of its first tensor."""
    args, kwargs = batch_args(batch)
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise ValueError("cannot tell the batch size: the batch holds no tensor with a leading dimension")


def batch_to(batch: Any, device: torch.device | str) -> Any:
    """Move every tensor in a batch to ``device`` (other values are left as they are)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: batch_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(batch_to(v, device) for v in batch)
    return batch


def pair_device(pair: Any) -> torch.device | None:
    """Where a pair's tensors live: the device of its first parameter or buffer (an
    ``nn.Module``), or None for a pair that holds none (its data decide)."""
    if isinstance(pair, torch.nn.Module):
        for t in itertools.chain(pair.parameters(), pair.buffers()):
            return t.device
    return None


def batch_plate_frames(cond_indep_stack: Any, batch_size: int, data_plate: str | None = None,
                       exclude: tuple[str, ...] = ()) -> list[Any]:
    """The frames of a site's plate over the batch's datapoints: the vectorised plate named
    ``data_plate``, or else every vectorised plate of size ``batch_size`` (names in ``exclude``,
    such as a particle plate, never count).

    This one rule tells per-datapoint sites from global ones for evaluation, the collapse
    diagnostics and the data-parallel and full-data scaling.
    """
    frames = [f for f in cond_indep_stack if f.vectorized and f.name not in exclude]
    if data_plate is not None:
        return [f for f in frames if f.name == data_plate]
    return [f for f in frames if f.size == batch_size]
