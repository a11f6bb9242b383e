"""Checkpoints that load without running code, atomic writes, and the random-number state
that makes resumed runs exact.

A pyro_lvm checkpoint holds tensors and plain data only (dict, list, tuple, str, int, float,
bool, None), so it loads with ``torch.load(path, weights_only=True)``: the unpickler builds
those and nothing else, and a file that asks for any other Python object is refused before
anything in it runs. What used to need Python objects is stored as plain data instead:

* random-number states as tensors (:func:`rng_state`);
* Pyro's param store as its unconstrained tensors plus each constraint by name
  (:func:`encode_param_store`);
* histories and configurations as lists and dicts of numbers and strings (also written as JSON).

:func:`atomic_torch_save` refuses to write anything else, so every file pyro_lvm writes is
one it can read back safely. Checkpoints of the earlier format 1 (pickled NumPy arrays and
constraint objects) still load: :func:`load_checkpoint` reads them with an allow-list of
exactly those classes (still no code runs) and converts them in memory;
:func:`upgrade_checkpoint` rewrites such a file in the current format once.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import random
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.distributions.constraints as pyro_constraints
import torch
from torch.distributions import constraints as torch_constraints

from .validation import seed_rule

#: Format of the training checkpoints ``fit`` writes (``last.pt``, ``best.pt``).
CHECKPOINT_FORMAT = 2


class CheckpointError(ValueError):
    """A file is not a usable pyro_lvm checkpoint (broken, foreign or unsafe); the message names it."""


def set_seed(seed: int) -> None:
    """Seed Python, NumPy, torch and Pyro in one call (``pyro.set_rng_seed`` does all three)."""
    pyro.set_rng_seed(seed_rule("seed", seed))


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s shuffling in a run seeded ``seed``. It depends on nothing
    else, so a resumed run orders every epoch as an uninterrupted one did (exact resume)."""
    return (seed * 100_003 + epoch) % 2**32  # NumPy's generators take seeds in [0, 2**32)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A torch generator seeded by :func:`epoch_seed`."""
    return torch.Generator().manual_seed(epoch_seed(seed, epoch))


# ----------------------------------------------------------------------------- random-number state

def rng_state() -> dict[str, Any]:
    """Snapshot of every global random-number generator training draws from, as tensors and numbers."""
    version, internal, gauss_next = random.getstate()
    name, key, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
        "numpy": {"bit_generator": name, "key": torch.from_numpy(np.asarray(key, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot taken by :func:`rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state((npy["bit_generator"], npy["key"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# ----------------------------------------------------------------------------- constraints by name

def _constraint_tables() -> tuple[dict[str, Any], dict[str, tuple[type, tuple[str, ...]]]]:
    """``{name: constraint object}`` of the ready-made constraints of torch and Pyro, and
    ``{name: (class, attributes)}`` of the parameterised ones (``interval(lo, hi)``, ...)."""
    named: dict[str, Any] = {}
    for module in (torch_constraints, pyro_constraints):
        for name in dir(module):
            obj = getattr(module, name)
            if not name.startswith("_") and isinstance(obj, torch_constraints.Constraint):
                named.setdefault(name, obj)
    factories = {
        "greater_than": ("lower_bound",), "greater_than_eq": ("lower_bound",), "less_than": ("upper_bound",),
        "interval": ("lower_bound", "upper_bound"), "half_open_interval": ("lower_bound", "upper_bound"),
        "integer_interval": ("lower_bound", "upper_bound"), "multinomial": ("upper_bound",),
        "independent": ("base_constraint", "reinterpreted_batch_ndims"),
    }
    return named, {n: (getattr(torch_constraints, n), a) for n, a in factories.items()
                   if isinstance(getattr(torch_constraints, n, None), type)}


_NAMED, _FACTORIES = _constraint_tables()


def _same_constraint(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    va, vb = vars(a), vars(b)
    if va.keys() != vb.keys():
        return False
    for k in va:
        x, y = va[k], vb[k]
        if isinstance(x, torch_constraints.Constraint):
            if not _same_constraint(x, y):
                return False
        elif isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and torch.equal(x, y)):
                return False
        elif x != y:
            return False
    return True


def encode_constraint(constraint: Any, where: str = "constraint") -> str | dict:
    """A constraint as plain data: its name (``"positive"``) or ``{"name": "interval", "args": [lo, hi]}``."""
    for name, obj in _NAMED.items():
        if obj is constraint:
            return name
    for name, obj in _NAMED.items():  # an unpickled copy of a ready-made constraint
        if _same_constraint(obj, constraint):
            return name
    for name, (cls, attributes) in _FACTORIES.items():
        if type(constraint) is cls:
            args = [getattr(constraint, a) for a in attributes]
            return {"name": name, "args": [encode_constraint(a, where) if isinstance(a, torch_constraints.Constraint)
                                           else a for a in args]}
    raise CheckpointError(
        f"{where} is {constraint!r}, which a checkpoint cannot record by name; use a constraint from "
        "torch.distributions.constraints or pyro.distributions.constraints (real, positive, interval(a, b), ...)")


def decode_constraint(spec: Any, where: str = "constraint") -> Any:
    """Inverse of :func:`encode_constraint`; refuses names it does not know."""
    if isinstance(spec, str) and spec in _NAMED:
        return _NAMED[spec]
    if isinstance(spec, dict) and spec.get("name") in _FACTORIES and isinstance(spec.get("args"), list):
        cls, _ = _FACTORIES[spec["name"]]
        return cls(*[decode_constraint(a, where) if isinstance(a, (str, dict)) else a for a in spec["args"]])
    raise CheckpointError(f"{where}: unknown constraint {spec!r}")


def encode_param_store(state: dict[str, Any]) -> dict[str, Any]:
    """Pyro's ``ParamStoreDict.get_state()`` as plain data: tensors, and constraints by name."""
    return {"params": dict(state["params"]),
            "constraints": {k: encode_constraint(c, f"param {k!r}'s constraint") for k, c in state["constraints"].items()}}


def decode_param_store(state: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`encode_param_store`, ready for ``pyro.get_param_store().set_state``."""
    return {"params": dict(state["params"]),
            "constraints": {k: decode_constraint(c, f"param {k!r}") for k, c in state["constraints"].items()}}


# ----------------------------------------------------------------------------- plain data

_SCALARS = (str, int, float, bool, type(None), torch.dtype, torch.device)


def plain(obj: Any, where: str = "checkpoint") -> Any:
    """``obj`` as tensors and plain containers, or :class:`CheckpointError` naming the part that is not.

    NumPy arrays become tensors and NumPy scalars Python numbers; dicts (with their
    ``state_dict`` metadata), lists and tuples are rebuilt; anything else is refused.
    """
    if isinstance(obj, _SCALARS) or isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj))
    if isinstance(obj, dict):
        out: dict = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool, type(None))):
                raise CheckpointError(f"cannot store {where}: key {k!r} is a {type(k).__name__}; use str or int keys")
            out[k] = plain(v, f"{where}[{k!r}]")
        if hasattr(obj, "_metadata"):  # the module versions of a state_dict
            out._metadata = plain(obj._metadata, f"{where}._metadata")  # type: ignore[attr-defined]
        return out
    if isinstance(obj, (list, tuple)):
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else (torch.Size(items) if isinstance(obj, torch.Size) else tuple(items))
    raise CheckpointError(
        f"cannot store {where}: it is a {type(obj).__name__}. Checkpoints hold only tensors and plain data "
        "(dict, list, tuple, str, int, float, bool, None) so that loading them runs no code; convert it "
        "(e.g. a callback's state_dict should return numbers and tensors)")


# ----------------------------------------------------------------------------- atomic writes

def temporary_files(folder: str | os.PathLike) -> list[Path]:
    """The temporaries :func:`_atomic_write` leaves in ``folder`` when killed mid-write."""
    folder = Path(folder)
    return sorted(folder.glob(".*.tmp")) if folder.is_dir() else []


def _atomic_write(path: Path, write) -> None:
    # Write next to the target and rename: a crash mid-write leaves the old file intact,
    # because os.replace is atomic on POSIX and Windows.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` of plain data (see :func:`plain`) that never leaves a half-written file at ``path``."""
    data = plain(obj, str(path))
    _atomic_write(Path(path), lambda f: torch.save(data, f))


def atomic_json_save(obj: Any, path: str | os.PathLike) -> None:
    """Write JSON atomically (indented, trailing newline)."""
    _atomic_write(Path(path), lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def atomic_text_save(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` (UTF-8) atomically: readers see the whole file or none."""
    _atomic_write(Path(path), lambda f: f.write(text.encode()))


# ----------------------------------------------------------------------------- loading

def _format1_allow_list() -> dict[str, Any]:
    """The classes a format-1 checkpoint pickled, by the name its pickle gives them: NumPy's
    array/dtype/scalar rebuilders (the NumPy RNG state) and the constraint classes of torch
    and Pyro (the param store). Building these runs no code from the file."""
    allowed: dict[str, Any] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            multiarray = importlib.import_module(module)
        except ImportError:
            continue
        for name in ("_reconstruct", "scalar"):
            if hasattr(multiarray, name):
                allowed[f"{module}.{name}"] = getattr(multiarray, name)
    for cls in (type(np.dtype(t)) for t in (np.uint32, np.int32, np.int64, np.float32, np.float64, np.bool_)):
        allowed[f"{cls.__module__}.{cls.__name__}"] = cls
    for module in (torch_constraints, pyro_constraints):
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, torch_constraints.Constraint):
                allowed[f"{obj.__module__}.{obj.__name__}"] = obj
    return allowed


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - not even a readable archive: reported as broken below
        return []


def _read(path: Path, map_location: Any) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        needed = _unsafe_globals(path)
        if not needed:  # not even a pickle it could list the names of: damaged or foreign
            raise
        allowed = _format1_allow_list()
        refused = [g for g in needed if g not in allowed]
        if refused:
            raise CheckpointError(
                f"{path} was refused: it asks for Python objects a checkpoint must not hold ({', '.join(refused)}), "
                "and loading it could run code. pyro_lvm checkpoints hold only tensors and plain data; "
                "only load files from sources you trust") from None
        with torch.serialization.safe_globals([(obj, name) for name, obj in allowed.items()]):
            return torch.load(path, map_location=map_location, weights_only=True)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by pyro_lvm (``fit``'s ``last.pt``/``best.pt``, a sentence
    model's ``model.pt``, ...) without running code from it.

    Raises ``FileNotFoundError`` naming a missing file, and :class:`CheckpointError` naming
    a file that is empty, truncated, not a checkpoint, or asks for Python objects beyond
    tensors and plain data (refused unread). Format-1 training checkpoints are converted to
    the current format in memory.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): it is not a checkpoint (a write that never finished?)")
    try:
        obj = _read(path, map_location)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged file makes torch's reader fail in many ways
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated, or not written by pyro_lvm): "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a pyro_lvm checkpoint (a dict)")
    if obj.get("format") == 1:
        obj = _from_format1(obj, path)
    return obj


def _from_format1(ckpt: dict, path: Path) -> dict:
    """Format 1 (pickled NumPy RNG state and constraint objects) -> the current format."""
    out = dict(ckpt)
    rng = ckpt.get("rng")
    if isinstance(rng, dict) and isinstance(rng.get("python"), tuple):
        version, internal, gauss_next = rng["python"]
        name, key, pos, has_gauss, cached = rng["numpy"]
        out["rng"] = {
            "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
            "numpy": {"bit_generator": str(name), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "torch": rng["torch"], "cuda": list(rng["cuda"]) if rng.get("cuda") is not None else None,
        }
    if isinstance(ckpt.get("param_store"), dict):
        out["param_store"] = encode_param_store(ckpt["param_store"])
    out["format"] = CHECKPOINT_FORMAT
    return plain(out, str(path))


def upgrade_checkpoint(path: str | os.PathLike) -> bool:
    """Rewrite a format-1 checkpoint at ``path`` in the current format (atomically); returns
    whether it needed it. The result loads with ``torch.load(path, weights_only=True)``."""
    path = Path(path)
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        return False
    except pickle.UnpicklingError:
        pass
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint: {type(e).__name__}: {e}") from None
    atomic_torch_save(load_checkpoint(path), path)
    return True


def load_best_or_last(folder: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[dict, Path]:
    """``(checkpoint, its path)`` of ``folder/best.pt``, or of ``folder/last.pt`` (with a
    warning naming the broken file) when best.pt is missing or broken."""
    folder = Path(folder)
    best, last = folder / "best.pt", folder / "last.pt"
    problem = None
    if best.is_file():
        try:
            return load_checkpoint(best, map_location), best
        except CheckpointError as e:
            problem = e
    if not last.is_file():
        if problem is not None:
            raise CheckpointError(f"{problem}; and there is no {last.name} to fall back to") from None
        raise FileNotFoundError(f"no checkpoint in {folder} (neither best.pt nor last.pt)")
    try:
        ckpt = load_checkpoint(last, map_location)
    except CheckpointError as e:
        raise CheckpointError(f"{problem}; and {e}" if problem is not None else str(e)) from None
    if problem is not None:
        warnings.warn(f"{problem}; using {last} instead", stacklevel=2)
    return ckpt, last


def load_module_state(module: torch.nn.Module, ckpt: dict, path: str | os.PathLike, key: str = "pair") -> None:
    """``module.load_state_dict(ckpt[key])``, with errors that name the checkpoint file."""
    state = ckpt.get(key)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no module weights under {key!r}")
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise CheckpointError(f"{path} does not fit this model ({type(module).__name__}): {detail[:300]}") from None
