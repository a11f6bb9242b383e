"""KL-weight schedules: callables ``step -> weight`` of the global optimisation step.

=============  =====================================================================
``constant``   beta-VAE (Higgins et al. 2017): the same weight at every step
``linear``     warm-up from ``start`` to ``end`` over ``steps`` steps, then ``end``
               (He et al. 2019 use 0.1 -> 1 over 10 epochs)
``sigmoid``    Bowman et al. (2016): a logistic curve from ``start`` to ``end``, centred on
               ``steps / 2`` (``rate`` sets its steepness, default ``10 / steps``)
``cyclical``   Fu et al. (2019): ``cycles`` repetitions of a ramp of ``ratio * period``
               steps followed by ``end``; after the last cycle, ``end`` for good
=============  =====================================================================

Every schedule validates its arguments when built and returns a finite weight >= 0.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from ..validation import non_negative_int, non_negative_number, positive_int, positive_number


class Schedule:
    """Base class: ``schedule(step) -> float``."""

    def __call__(self, step: int) -> float:
        return self.weight(non_negative_int("step", step))

    def weight(self, step: int) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Constant(Schedule):
    def __init__(self, value: float = 1.0):
        self.value = non_negative_number("value", value)

    def weight(self, step: int) -> float:
        return self.value


class Linear(Schedule):
    def __init__(self, steps: int, start: float = 0.0, end: float = 1.0):
        self.steps = positive_int("steps", steps)
        self.start, self.end = non_negative_number("start", start), non_negative_number("end", end)

    def weight(self, step: int) -> float:
        t = min(1.0, step / self.steps)
        return self.start + (self.end - self.start) * t


class Sigmoid(Schedule):
    def __init__(self, steps: int, start: float = 0.0, end: float = 1.0, rate: float | None = None):
        self.steps = positive_int("steps", steps)
        self.start, self.end = non_negative_number("start", start), non_negative_number("end", end)
        self.rate = 10.0 / self.steps if rate is None else positive_number("rate", rate)

    def weight(self, step: int) -> float:
        x = self.rate * (step - self.steps / 2)
        s = 1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0
        return self.start + (self.end - self.start) * s


class Cyclical(Schedule):
    def __init__(self, period: int, cycles: int = 4, ratio: float = 0.5, start: float = 0.0, end: float = 1.0):
        self.period = positive_int("period", period)
        self.cycles = positive_int("cycles", cycles)
        self.ratio = positive_number("ratio", ratio)
        if self.ratio > 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
        self.start, self.end = non_negative_number("start", start), non_negative_number("end", end)

    def weight(self, step: int) -> float:
        if step >= self.period * self.cycles:
            return self.end
        tau = (step % self.period) / self.period
        return self.start + (self.end - self.start) * min(1.0, tau / self.ratio)


SCHEDULES: dict[str, type[Schedule]] = {"constant": Constant, "linear": Linear, "sigmoid": Sigmoid, "cyclical": Cyclical}


def make_schedule(schedule: Any = "linear", **kwargs: Any) -> Callable[[int], float]:
    """A schedule by name (keyword arguments of its class) or a callable ``step -> weight``
    passed through (then ``kwargs`` must be empty). A bare number means ``constant``."""
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose one of {sorted(SCHEDULES)} or pass a callable")
        try:
            return SCHEDULES[schedule](**kwargs)
        except TypeError as e:
            raise ValueError(f"bad arguments for the {schedule!r} schedule: {e}") from None
    if isinstance(schedule, (int, float)) and not isinstance(schedule, bool):
        if kwargs:
            raise ValueError(f"a constant schedule takes no arguments, got {sorted(kwargs)}")
        return Constant(schedule)
    if callable(schedule):
        if kwargs:
            raise ValueError(f"schedule is a callable; the arguments {sorted(kwargs)} would be ignored")
        return schedule
    raise ValueError(f"schedule must be a name, a number or a callable step -> weight, got {schedule!r}")
