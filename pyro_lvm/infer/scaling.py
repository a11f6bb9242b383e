"""Rescaling a batch's ELBO terms by where each site sits: per-datapoint or global.

Two uses share the rule for telling the kinds apart (a *batch plate* is a vectorised plate
whose size is the batch's, or the plate named ``data_plate``):

* :class:`DatasetScale` makes a mini-batch loss an unbiased estimate of the *full-data*
  negative ELBO, as ``pyro.plate(size=N, subsample=...)`` would, for a model written with
  ``pyro.plate("data", len(x))``: per-datapoint sites get ``N / n``, global sites stay.
  That is what a stream over a corpus larger than memory needs when the model has global
  latents (topics, transition matrices): their prior must not be outweighed by the data.
* :class:`ShardScale` splits a batch across data-parallel ranks so that the ranks' losses sum
  to the whole batch's (see :mod:`pyro_lvm.training.distributed`).

Both are poutine messengers; :class:`ScaledELBO` runs model and guide under one for every
batch. Entered around the whole model, a messenger sees each site after the model's own
plates have stacked their frames and subsample scales onto it (Pyro applies handlers
innermost first), so it can read both.
"""

from __future__ import annotations

from typing import Any, Callable

from pyro.poutine.messenger import Messenger

from ..base import batch_plate_frames, batch_size as _batch_size
from .handlers import HandledELBO, handled
from ..validation import positive_int


# ``infer`` keys by which the two handlers tell each other what they did to a site, whichever runs first
FULL_DATA_SCALED = "full_data_scaled"
SHARDS = "data_parallel_shards"


class _BatchScale(Messenger):
    def __init__(self, batch_size: int, data_plate: str | None = None):
        super().__init__()
        self.batch_size, self.data_plate = batch_size, data_plate

    def _batch_frames(self, msg: dict) -> list[Any]:
        return batch_plate_frames(msg["cond_indep_stack"], self.batch_size, self.data_plate)


def _subsampled(frames: list[Any]) -> bool:
    return any(f.full_size is not None and f.full_size != f.size for f in frames)


class DatasetScale(_BatchScale):
    """Scale per-datapoint sites of a batch of ``batch_size`` by ``num_datapoints / batch_size``.

    Sites in a plate the model already subsamples (``pyro.plate(size=N, subsample=...)``) are
    left alone: Pyro scales those itself.
    """

    def __init__(self, num_datapoints: int, batch_size: int, data_plate: str | None = None):
        positive_int("num_datapoints", num_datapoints)
        if batch_size > num_datapoints:
            raise ValueError(f"a batch of {batch_size} datapoints is larger than num_datapoints={num_datapoints}")
        super().__init__(batch_size, data_plate)
        self.factor = num_datapoints / batch_size

    def _pyro_sample(self, msg: dict) -> None:
        frames = self._batch_frames(msg)
        if frames and not _subsampled(frames):
            # A shard of a data-parallel batch (marked by ShardScale, when it ran first) shares the
            # batch's factor out among the ranks; marked, ShardScale (when it runs after) does that.
            msg["scale"] = msg["scale"] * self.factor / msg["infer"].get(SHARDS, 1)
            msg["infer"] = {**msg["infer"], FULL_DATA_SCALED: True}


class ShardScale(_BatchScale):
    """Scale sites so that summing the shard losses of ``world_size`` ranks gives the batch's.

    * a site in a batch plate is per-datapoint and the shards partition the batch: unchanged;
    * ... unless it is scaled up to the full data set, by a subsampled plate (Pyro scales it by
      ``N / n_shard``) or by :class:`DatasetScale`: that is ``world_size`` times what one
      process on the whole batch uses, so it gets ``1 / world_size``;
    * a global site gets ``1 / world_size`` so the sum counts it once.
    """

    def __init__(self, world_size: int, shard_size: int, data_plate: str | None = None):
        super().__init__(shard_size, data_plate)
        self.world_size = world_size

    def _pyro_sample(self, msg: dict) -> None:
        if self.world_size == 1:
            return
        frames = self._batch_frames(msg)
        if frames and not _subsampled(frames):
            if msg["infer"].get(FULL_DATA_SCALED):
                msg["scale"] = msg["scale"] / self.world_size
            else:
                msg["infer"] = {**msg["infer"], SHARDS: self.world_size}
            return
        msg["scale"] = msg["scale"] / self.world_size


class ScaledELBO(HandledELBO):
    """An ELBO whose model and guide run under ``make_handler(batch_size)`` for every batch.

    Everything else (``loss``, ``num_particles``, ...) is the wrapped ELBO's.
    """

    def __init__(self, elbo: Any, make_handler: Callable[[int], Messenger]):
        super().__init__(elbo)
        self.make_handler = make_handler

    def programs(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple[Callable, Callable]:
        n = _batch_size(args[0]) if len(args) == 1 and not kwargs else _batch_size(args if args else kwargs)
        return handled(model, lambda: self.make_handler(n)), handled(guide, lambda: self.make_handler(n))


def full_data_elbo(elbo: Any, num_datapoints: int, data_plate: str | None = None) -> ScaledELBO:
    """``elbo`` whose batch loss is an unbiased estimate of the full-data negative ELBO.

    Use it when training on a stream or on mini-batches of a model with global latents::

        fit(pair, stream, elbo=full_data_elbo(Trace_ELBO(), num_datapoints=corpus_size))

    (``train_loss`` in the history is then per datapoint of the batch, times ``N``.)
    """
    DatasetScale(num_datapoints, 1, data_plate)  # validate now, not at the first batch
    return ScaledELBO(elbo, lambda n: DatasetScale(num_datapoints, n, data_plate))
