"""Atomic checkpoints and the random-number state that makes resumed runs exact."""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch


def set_seed(seed: int) -> None:
    """Seed Python, NumPy, torch and Pyro in one call (``pyro.set_rng_seed`` does all three)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    pyro.set_rng_seed(seed)


def rng_state() -> dict[str, Any]:
    """Snapshot of every global random-number generator training draws from."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot taken by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    """``torch.save`` that never leaves a half-written file at ``path``."""
    _atomic_write(Path(path), lambda f: torch.save(obj, f))


def atomic_json_save(obj: Any, path: str | os.PathLike) -> None:
    """Write JSON atomically (indented, trailing newline)."""
    _atomic_write(Path(path), lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def atomic_text_save(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` (UTF-8) atomically: readers see the whole file or none."""
    _atomic_write(Path(path), lambda f: f.write(text.encode()))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`pyro_lvm.fit`; ``FileNotFoundError`` names the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    # weights_only=False: checkpoints hold RNG states and Pyro's param-store state
    # (constraints are Python objects). Only load checkpoints you wrote yourself.
    return torch.load(path, map_location=map_location, weights_only=False)
