"""``FILE.py:FUNCTION``: how every CLI verb that takes a model takes one a user wrote.

``FUNCTION()`` in ``FILE.py`` returns ``(pair, batch)``: a model/guide pair and one example
batch (see :mod:`pyro_lvm.base`). The pair may also be ``(model, guide)``, two functions as
Pyro's ``SVI`` takes them. The file is the user's own code, run as it is given.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

from .. import validation

SPEC_HELP = "your own pair: FUNCTION() in FILE.py returns (pair, batch)"


def load_user_pair(spec: str, option: str = "--pair") -> tuple[Any, Any]:
    """Call ``FUNCTION()`` from ``FILE.py`` given as ``"FILE.py:FUNCTION"``; it returns ``(pair, batch)``.

    Raises ``ValueError`` / ``FileNotFoundError`` saying what is wrong with the spec, the file
    or what the function returned (the CLI prints them as ``pyro-lvm: error: ...``).
    """
    path, sep, name = str(spec).rpartition(":")
    if not sep or not path or not name:
        raise ValueError(f"{option} must look like FILE.py:FUNCTION, got {spec!r}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{option} file not found: {path}")
    # A name of its own, registered while it runs (dataclasses and pickling look modules up by name).
    module_name = f"_pyro_lvm_user_pair_{abs(hash(str(Path(path).resolve())))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"{option}: {path} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # the user's file: say where it broke, in our words
        raise ValueError(f"{option}: running {path} failed: {type(e).__name__}: {e}") from e
    if not callable(getattr(module, name, None)):
        raise ValueError(f"{path} defines no function {name!r}")
    try:
        result = getattr(module, name)()
    except Exception as e:
        raise ValueError(f"{option}: {spec}() failed: {type(e).__name__}: {e}") from e
    if not (isinstance(result, tuple) and len(result) == 2):
        raise ValueError(f"{spec}() must return (pair, batch), got {type(result).__name__}")
    pair = result[0]
    if validation.is_function_pair(pair):   # Pyro's own way to hold a pair: SVI(model, guide, ...)
        pair = types.SimpleNamespace(model=pair[0], guide=pair[1])
        result = (pair, result[1])
    if not (callable(getattr(pair, "model", None)) and callable(getattr(pair, "guide", None))):
        raise ValueError(f"{spec}() returned {type(pair).__name__} as the pair, which has no model and guide methods")
    return result
