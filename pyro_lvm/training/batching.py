"""Batches: how data of every accepted kind becomes mini-batches, and an objective's value over them.

Training (:func:`pyro_lvm.fit`), evaluation (:mod:`pyro_lvm.evaluation.metrics`, :mod:`pyro_lvm.evaluation.psis`)
and the diagnostics all read data through this module, so they agree on the batch
convention of :mod:`pyro_lvm.base` and on the order of every epoch (seeded by
:func:`pyro_lvm.checkpoint.epoch_seed`, which exact resume depends on).
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from .. import validation
from ..base import batch_args, batch_size as _batch_size, batch_to, pair_device
from ..checkpoint import epoch_generator
from ..traces import per_position_sites
from ..validation import as_tensors


class BatchList(Dataset):
    """Data already cut into batches: each item a whole batch (a tensor or a tuple of tensors,
    by the convention of :mod:`pyro_lvm.base`), of any size and shape each, such as
    variable-length sequences sorted by length and padded per batch.

    :func:`pyro_lvm.fit` takes the batches whole (its ``batch_size`` does not apply) and, with
    ``shuffle=True``, visits them in a new order each epoch, drawn from ``(seed, epoch)`` as it
    shuffles datapoints (so resumed runs stay exact); evaluation reads them in order.
    ``len()`` is the number of batches; :func:`num_datapoints` counts their datapoints.

    >>> data = BatchList([torch.zeros(3, 5), torch.zeros(2, 9)])
    >>> len(data), num_datapoints(data)
    (2, 5)
    """

    def __init__(self, batches: Any, shuffle: bool = True):
        self.batches = list(batches)
        if not self.batches:
            raise validation.InvalidArgumentError("BatchList needs at least one batch, got none")
        for i, batch in enumerate(self.batches):
            tensors = as_tensors(batch)
            if tensors is None or any(t.dim() == 0 for t in tensors):
                raise validation.InvalidArgumentError(
                    f"batch {i} of the BatchList must be a tensor or a tuple of tensors with a leading datapoint "
                    f"dimension, got {type(batch).__name__}")
        self.shuffle = shuffle

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Any:
        return self.batches[i]

    def order(self, shuffle: bool, seed: int, epoch: int) -> list[int]:
        """The indices of the batches in the order of epoch ``epoch``."""
        if shuffle and self.shuffle:
            return torch.randperm(len(self.batches), generator=epoch_generator(seed, epoch)).tolist()
        return list(range(len(self.batches)))


def differentiable_loss(elbo: Any, pair: Any, batch: Any) -> torch.Tensor:
    """``elbo.differentiable_loss(pair.model, pair.guide, *batch)`` with the batch convention."""
    args, kwargs = batch_args(batch)
    if not hasattr(elbo, "differentiable_loss"):
        raise TypeError(
            f"{type(elbo).__name__} has no differentiable_loss; fit() needs an ELBO that has one "
            "(Trace_ELBO, TraceMeanField_ELBO, TraceEnum_ELBO, JitTrace_ELBO, ... or pyro_lvm's "
            "objectives). For TraceGraph_ELBO use pyro_lvm.infer.discrete.comparison."
        )
    return elbo.differentiable_loss(pair.model, pair.guide, *args, **kwargs)


def loss_value(elbo: Any, pair: Any, batch: Any) -> float:
    """The objective's value on one batch (summed over its datapoints), without gradients.

    Uses the ELBO's ``loss`` where it has one: some Pyro ELBOs (``TraceEnum_ELBO``) refuse to
    build a ``differentiable_loss`` when nothing requires a gradient, as in evaluation.
    """
    if callable(getattr(elbo, "loss", None)):
        args, kwargs = batch_args(batch)
        with torch.no_grad():
            return float(elbo.loss(pair.model, pair.guide, *args, **kwargs))
    with torch.no_grad():
        return float(differentiable_loss(elbo, pair, batch))


def num_datapoints(data: Any) -> int | None:
    """Number of datapoints, or None for a stream that does not know it (an IterableDataset)."""
    tensors = as_tensors(data)
    if tensors is not None:
        return int(tensors[0].shape[0])
    if isinstance(data, BatchList):
        return sum(_batch_size(batch) for batch in data.batches)
    try:
        return len(data.dataset if isinstance(data, DataLoader) else data)  # type: ignore[arg-type]
    except TypeError:
        return None


def num_batches(data: Any, batch_size: int) -> int | None:
    """Batches per epoch, for the progress bar; None for a stream of unknown length."""
    if isinstance(data, BatchList):
        return len(data)
    if isinstance(data, DataLoader):
        try:
            return len(data)
        except TypeError:  # a DataLoader over an IterableDataset without __len__
            return None
    n = num_datapoints(data)
    return None if n is None else math.ceil(n / batch_size)


def set_epoch(data: Any, epoch: int) -> None:
    """Tell data that reshuffles by epoch (a sampler, a stream) which epoch this is."""
    for obj in (data, getattr(data, "dataset", None), getattr(data, "sampler", None), getattr(data, "batch_sampler", None)):
        if callable(getattr(obj, "set_epoch", None)):
            obj.set_epoch(epoch)


def iterate_batches(data: Any, batch_size: int, shuffle: bool, seed: int, epoch: int) -> Iterator[Any]:
    """Yield mini-batches of ``data`` (a tensor, a tuple of tensors, a :class:`BatchList`, a
    Dataset or a DataLoader).

    Shuffling uses a generator seeded by ``(seed, epoch)``, so the order of an epoch does not
    depend on what ran before it: a resumed run sees the same batches as an uninterrupted one.
    A DataLoader, or an IterableDataset that yields batches, is iterated as it is (it decides
    the order; ``fit`` calls its ``set_epoch`` if it has one).
    """
    tensors = as_tensors(data)
    if tensors is not None:
        n = tensors[0].shape[0]
        if shuffle:
            order = torch.randperm(n, generator=epoch_generator(seed, epoch))
            tensors = tuple(t[order.to(t.device)] for t in tensors)
        for start in range(0, n, batch_size):
            chunk = tuple(t[start:start + batch_size] for t in tensors)
            yield chunk[0] if len(chunk) == 1 else chunk
    elif isinstance(data, BatchList):
        yield from (data[i] for i in data.order(shuffle, seed, epoch))
    elif isinstance(data, (DataLoader, IterableDataset)):
        yield from data  # a stream yields whole batches (e.g. pyro_lvm.data.streaming)
    elif isinstance(data, Dataset):
        yield from DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=epoch_generator(seed, epoch))
    else:
        raise TypeError(
            f"training data must be a tensor, a tuple of tensors, a BatchList, a torch Dataset or a DataLoader; "
            f"got {type(data).__name__}"
        )


def resolve_device(device: str | torch.device) -> torch.device:
    """``torch.device`` for a name, refusing devices this machine does not have (see :mod:`pyro_lvm.validation`)."""
    return validation.device_rule("device", device)


# ----------------------------------------------------------------------------- evaluation

def evaluation_batches(pair: Any, data: Any, batch_size: int, device: str | torch.device | None = None) -> Iterator[Any]:
    """``data`` in order, in batches moved to ``device`` (default: where the pair's parameters
    are), so evaluating a pair trained on a GPU needs no manual moves.

    A pair whose autoguide holds parameters per position of the datapoint plate
    (:func:`~pyro_lvm.traces.per_position_sites`) can only score the datapoints it was fitted
    to, in one batch of that size: such data come as one batch, other data are refused.
    """
    device = device if device is not None else pair_device(pair)
    positions = per_position_sites(pair)
    n = num_datapoints(data) if positions else None
    for name, guide, plate, size in positions:
        if n != size:
            raise validation.InvalidArgumentError(
                f"the guide's site {name!r} comes from {guide}, which holds one parameter per position of the "
                f"plate {plate!r} ({size} of them, the datapoints it was fitted to): it can score those {size} "
                f"datapoints in their order, in one batch, not {n} datapoints. Give {name!r} an amortised guide "
                "(an encoder) to evaluate other data")
        batch_size = max(batch_size, size)
    for batch in iterate_batches(data, batch_size, shuffle=False, seed=0, epoch=0):
        yield batch if device is None else batch_to(batch, device)


def evaluate_loss(pair: Any, data: Any, elbo: Any, batch_size: int = 512, device: str | torch.device | None = None) -> float:
    """Mean loss of ``elbo`` per datapoint over ``data`` (no gradients, no parameter change).

    Any Pyro ELBO works (see :func:`loss_value`), ``TraceEnum_ELBO`` included.
    """
    total, count = 0.0, 0
    for batch in evaluation_batches(pair, data, batch_size, device):
        total += loss_value(elbo, pair, batch)
        count += _batch_size(batch)
    return total / count
