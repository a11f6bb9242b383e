"""Argument checks for the public functions and the command line: one rule per kind of argument.

A bad value is refused here, with pyro_lvm's own message naming the argument, the value and
what to pass instead, before it can fail deep inside torch or Pyro::

    >>> fit(vae, x, batch_size=0)
    InvalidArgumentError: batch_size must be a positive int, got 0

The rules are small objects (:class:`Integer`, :class:`Number`, :class:`Choice`, ...). A rule
called as ``rule(name, value)`` checks a Python value and returns it normalised;
``rule.cli`` is the same rule as an ``argparse`` ``type=`` (it parses the text first), so
an option of ``pyro-lvm`` and the argument of the function it feeds obey one rule.
:data:`RULES` names the rule of each common argument name; :func:`check` applies it, and
:func:`inputs` checks the ``(pair, data, ...)`` arguments of the evaluation functions.
"""

from __future__ import annotations

import argparse
import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch.utils.data import DataLoader, Dataset


class InvalidArgumentError(ValueError, TypeError):
    """A bad argument: the message names it, says what it was and what it must be.

    It is both a ``ValueError`` and a ``TypeError``, so code that caught either before keeps working.
    """


def _refuse(name: str, value: Any, need: str, fix: str = "") -> InvalidArgumentError:
    shown = _show(value)
    return InvalidArgumentError(f"{name} must be {need}, got {shown}" + (f"; {fix}" if fix else ""))


def _show(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Rule:
    """A check of one kind of argument; subclasses define ``need``, ``__call__`` and ``parse``."""

    need = "valid"

    def __call__(self, name: str, value: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def parse(self, text: str) -> Any:
        return text

    @property
    def cli(self) -> Callable[[str], Any]:
        """This rule as an ``argparse`` ``type=``: the message says what the option must be."""

        def parse_option(text: str) -> Any:
            try:
                return self("value", self.parse(text))
            except (InvalidArgumentError, ValueError) as e:
                raise argparse.ArgumentTypeError(f"must be {self.need}, got {text!r}") from e

        parse_option.__name__ = type(self).__name__.lower()
        return parse_option


@dataclass(frozen=True)
class Integer(_Rule):
    """An int (not a bool) ``>= minimum``; ``optional`` also allows None."""

    minimum: int | None = 1
    optional: bool = False
    maximum: int | None = None

    @property
    def need(self) -> str:  # type: ignore[override]
        if self.minimum == 1 and self.maximum is None:
            text = "a positive int"
        elif self.minimum == 0 and self.maximum is None:
            text = "a non-negative int"
        elif self.minimum is None and self.maximum is None:
            text = "an int"
        elif self.maximum is None:
            text = f"an int >= {self.minimum}"
        else:
            text = f"an int in [{self.minimum}, {self.maximum}]"
        return text + (" or None" if self.optional else "")

    def __call__(self, name: str, value: Any) -> int | None:
        if value is None and self.optional:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise _refuse(name, value, self.need)
        value = int(value)
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise _refuse(name, value, self.need)
        return value

    def parse(self, text: str) -> int:
        return int(text)


@dataclass(frozen=True)
class Number(_Rule):
    """A finite real number (int or float, not a bool) above ``minimum`` (or at it when not
    ``strict``) and at most ``maximum``; ``optional`` also allows None."""

    minimum: float | None = 0.0
    strict: bool = True
    maximum: float | None = None
    optional: bool = False

    @property
    def need(self) -> str:  # type: ignore[override]
        if self.maximum is not None:
            low = "(" if self.strict else "["
            text = f"a number in {low}{self.minimum:g}, {self.maximum:g}]"
        elif self.minimum == 0 and self.strict:
            text = "a positive finite number"
        elif self.minimum == 0:
            text = "a non-negative finite number"
        elif self.minimum is None:
            text = "a finite number"
        else:
            text = f"a finite number {'>' if self.strict else '>='} {self.minimum:g}"
        return text + (" or None" if self.optional else "")

    def __call__(self, name: str, value: Any) -> float | None:
        if value is None and self.optional:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _refuse(name, value, self.need)
        value = float(value)
        low_ok = self.minimum is None or (value > self.minimum if self.strict else value >= self.minimum)
        if not (math.isfinite(value) and low_ok and (self.maximum is None or value <= self.maximum)):
            raise _refuse(name, value, self.need)
        return value

    def parse(self, text: str) -> float:
        return float(text)


@dataclass(frozen=True)
class Choice(_Rule):
    """One of a fixed set of values."""

    options: tuple

    @property
    def need(self) -> str:  # type: ignore[override]
        return "one of " + ", ".join(repr(o) for o in self.options)

    def __call__(self, name: str, value: Any) -> Any:
        if not any(value == o and type(value) is type(o) for o in self.options):
            raise _refuse(name, value, self.need)
        return value


@dataclass(frozen=True)
class Sizes(_Rule):
    """Layer widths: one positive int or a sequence of them (``allow_empty``: also ``()``)."""

    allow_empty: bool = True

    need = "a positive int or a sequence of positive ints"

    def __call__(self, name: str, value: Any) -> tuple[int, ...]:
        items = (value,) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
        if isinstance(items, (str, bytes, torch.Tensor)) or not isinstance(items, Iterable):
            raise _refuse(name, value, self.need)
        items = tuple(items)
        if not items and not self.allow_empty:
            raise _refuse(name, value, "a non-empty sequence of positive ints")
        for i, width in enumerate(items):
            if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 1:
                raise _refuse(name, value, self.need, f"entry {i} is {width!r} (a layer needs at least one unit)")
        return tuple(int(w) for w in items)


@dataclass(frozen=True)
class Text(_Rule):
    """A string; ``optional`` also allows None."""

    optional: bool = False

    @property
    def need(self) -> str:  # type: ignore[override]
        return "a str" + (" or None" if self.optional else "")

    def __call__(self, name: str, value: Any) -> str | None:
        if value is None and self.optional:
            return None
        if not isinstance(value, str):
            raise _refuse(name, value, self.need)
        return value


class Device(_Rule):
    """A device name or ``torch.device`` that exists here: ``cpu``, ``cuda``/``cuda:N`` with
    CUDA present, or ``mps`` on a Mac that has it."""

    need = "'cpu', 'cuda' or 'cuda:N' (a device this machine has)"

    def __call__(self, name: str, value: Any) -> torch.device:
        if not isinstance(value, (str, torch.device)):
            raise _refuse(name, value, self.need)
        try:
            device = torch.device(value)
        except (RuntimeError, ValueError):
            raise _refuse(name, value, self.need) from None
        if device.type == "cpu":
            return device
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise _refuse(name, value, self.need, "CUDA is not available here: use device='cpu'")
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise _refuse(name, value, self.need, f"only {torch.cuda.device_count()} CUDA device(s) exist")
            return device
        if device.type == "mps" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return device
        raise _refuse(name, value, self.need, f"{device.type!r} is not available here or not supported by pyro_lvm")

    @property
    def cli(self) -> Callable[[str], Any]:
        """As an ``argparse`` type: checks the name and keeps it as text (for ``config.json``)."""

        def device_option(text: str) -> str:
            try:
                self("device", text)
            except InvalidArgumentError as e:
                raise argparse.ArgumentTypeError(str(e).replace("device must be", "must be", 1)) from None
            return text

        return device_option


positive_int = Integer(1)
non_negative_int = Integer(0)
positive_number = Number(0.0)
non_negative_number = Number(0.0, strict=False)
probability = Number(0.0, strict=False, maximum=1.0)
sizes = Sizes()
seed_rule = Integer(0, maximum=2**32 - 1)  # numpy's generator takes seeds in [0, 2**32)
device_rule = Device()

#: The rule of each common argument name (for :func:`check`).
RULES: dict[str, _Rule] = {
    "batch_size": positive_int,
    "num_samples": positive_int,
    "global_samples": positive_int,
    "chunk_size": Integer(1, optional=True),
    "epochs": non_negative_int,
    "lr": positive_number,
    "clip_norm": Number(0.0, optional=True),
    "patience": Integer(1, optional=True),
    "checkpoint_every": positive_int,
    "seed": seed_rule,
    "device": device_rule,
    "threshold": non_negative_number,
    "data_plate": Text(optional=True),
    "monitor": Text(),
    "hidden": sizes,
    "every": positive_int,
    "repeats": Integer(2),
    "psis_samples": Integer(0, optional=True),
}


def check(**arguments: Any) -> dict[str, Any]:
    """Check each keyword argument by the rule for its name in :data:`RULES`; returns them
    normalised (ints as ``int``, devices as ``torch.device``, sizes as tuples)."""
    out = {}
    for name, value in arguments.items():
        if name not in RULES:
            raise KeyError(f"pyro_lvm.validation has no rule for an argument named {name!r}")
        out[name] = RULES[name](name, value)
    return out


# ----------------------------------------------------------------------------- pairs and data

def is_function_pair(value: Any) -> bool:
    """Whether ``value`` is ``(model, guide)``: two callables, as Pyro's ``SVI(model, guide, ...)`` takes them."""
    return isinstance(value, (tuple, list)) and len(value) == 2 and all(callable(v) for v in value)


def pair(value: Any, name: str = "pair") -> Any:
    """``value`` if it is a model/guide pair *instance* (callable ``model`` and ``guide``)."""
    if isinstance(value, type):
        raise InvalidArgumentError(f"{name} must be a model/guide pair instance, got the class {value.__name__}; "
                                   f"construct it first, e.g. {value.__name__}(...)")
    if is_function_pair(value):
        raise InvalidArgumentError(
            f"{name} must be a model/guide pair object, got a {type(value).__name__} of two functions; wrap them as "
            "types.SimpleNamespace(model=model, guide=guide) (see docs/write_your_own.md)")
    missing = [m for m in ("model", "guide") if not callable(getattr(value, m, None))]
    if missing:
        raise InvalidArgumentError(
            f"{name} must be a model/guide pair, got a {type(value).__name__} with no callable "
            f"{' or '.join(repr(m) for m in missing)} method; define model(batch) and guide(batch) "
            "in plain Pyro (see docs/write_your_own.md)")
    return value


def _pair_dtype(pair: Any) -> torch.dtype:
    """The floating dtype data should have for ``pair``: its first floating parameter's, or
    torch's default dtype for a pair without module parameters (its ``pyro.param`` sites)."""
    if isinstance(pair, torch.nn.Module):
        for p in pair.parameters():
            if p.is_floating_point():
                return p.dtype
    return torch.get_default_dtype()


def as_tensors(value: Any) -> tuple[torch.Tensor, ...] | None:
    """``value`` as a tuple of tensors (a tensor, or a non-empty tuple/list of them), else None."""
    if isinstance(value, torch.Tensor):
        return (value,)
    if isinstance(value, (tuple, list)) and value and all(isinstance(t, torch.Tensor) for t in value):
        return tuple(value)
    return None


def data(value: Any, name: str = "data", pair: Any = None) -> Any:
    """``value`` if it is usable data: a tensor ``(N, ...)``, a tuple/list of tensors with a
    common ``N >= 1``, a torch ``Dataset`` or a ``DataLoader``.

    Tensors must be finite. A floating tensor whose dtype differs from the pair's parameters
    (typically float64 from NumPy) is cast to their dtype, with a warning naming ``name``.
    Datasets and loaders are checked for emptiness only (their items are read lazily).
    """
    tensors = as_tensors(value)
    if tensors is None:
        if isinstance(value, (DataLoader, Dataset)):
            try:
                n = len(value.dataset if isinstance(value, DataLoader) else value)  # type: ignore[arg-type]
            except TypeError:
                return value  # a stream: checked as it is read
            if n == 0:
                raise InvalidArgumentError(f"{name} is empty (0 datapoints); pass at least one datapoint")
            return value
        raise InvalidArgumentError(
            f"{name} must be a tensor, a tuple of tensors, a torch Dataset or a DataLoader, got {_show(value)}"
            + ("" if not hasattr(value, "__array__") else f"; convert it with torch.as_tensor({name}, dtype=torch.float32)"))
    lengths = {int(t.shape[0]) if t.dim() else -1 for t in tensors}
    if -1 in lengths:
        raise InvalidArgumentError(f"{name} must have a leading datapoint dimension, got a 0-d tensor; "
                                   f"use {name}.reshape(1, -1) for one datapoint")
    if len(lengths) != 1:
        raise InvalidArgumentError(f"{name} holds tensors with different numbers of datapoints, {sorted(lengths)}; "
                                   "they must share their first dimension")
    if lengths == {0}:
        raise InvalidArgumentError(f"{name} is empty (0 datapoints); pass at least one datapoint")
    want = _pair_dtype(pair) if pair is not None else None
    out = []
    for t in tensors:
        if t.is_floating_point():
            if not bool(torch.isfinite(t).all()):
                raise InvalidArgumentError(f"{name} contains NaN or inf values; remove or impute them first")
            if want is not None and t.dtype != want:
                warnings.warn(f"{name} has dtype {t.dtype} but the pair's parameters are {want}: cast to {want} "
                              f"(pass {name}.to({want}) to avoid this copy and warning)", stacklevel=3)
                t = t.to(want)
        out.append(t)
    if isinstance(value, torch.Tensor):
        return out[0]
    return type(value)(out)


def inputs(pair_value: Any, data_value: Any, data_name: str = "data", **arguments: Any) -> Any:
    """The checks at the top of an evaluation function: the pair, its data and the named
    numeric arguments (by :data:`RULES`). Returns the data, cast as :func:`data` says."""
    pair(pair_value)
    check(**arguments)
    return data(data_value, data_name, pair_value)


__all__ = [
    "Choice", "Device", "Integer", "InvalidArgumentError", "Number", "RULES", "Sizes", "Text", "check", "data",
    "device_rule", "inputs", "non_negative_int", "non_negative_number", "pair", "positive_int", "positive_number",
    "probability", "seed_rule", "sizes",
]

