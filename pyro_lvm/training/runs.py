"""Run folders: the rules for writing training output into a folder, so one is never left inconsistent.

* **No accidental reuse.** A folder that already holds a run is only written into when asked:
  ``resume`` continues it, ``overwrite`` replaces it; otherwise :class:`RunFolderError`.
* **One writer.** The writing process holds a lock on the folder (the ``filelock`` package,
  lock file :data:`LOCK_NAME`); a second process is refused with :class:`RunFolderInUseError`.
* **No debris.** Temporaries of atomic writes that a killed process left behind are removed
  when the next writer starts.
* **Checked before written.** Callers check every option first; nothing here writes until
  the folder is claimed, so a refused command leaves the folder as it was. A new run that
  fails before its first checkpoint (a refusal at the first step) is cleared again.

:func:`claim` applies the rules to any folder (``fit(checkpoint_dir=...)`` claims its
checkpoint folder); :func:`start_run` is what a ``pyro-lvm train`` task calls around its work.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..checkpoint import atomic_json_save, temporary_files

LOCK_NAME = ".pyro_lvm.lock"


class RunFolderError(ValueError):
    """Writing into this folder was refused (it holds a run, or is not a run folder); nothing was changed."""


class RunFolderInUseError(RunFolderError):
    """Another process is writing into this folder."""


def _in_use(folder: str | os.PathLike) -> RunFolderInUseError:
    return RunFolderInUseError(f"{folder} is in use by another process (it holds the lock {Path(folder) / LOCK_NAME}); "
                               "wait for that run to finish, or write to another folder")


# realpath -> [lock, depth, pid]: one process may claim a folder again (a task and the fit() it runs).
_held: dict[str, list] = {}


@contextlib.contextmanager
def locked(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the folder's lock (creating the folder); re-entrant within a process."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    key = os.path.realpath(folder)
    if key in _held and _held[key][2] == os.getpid():
        _held[key][1] += 1
        try:
            yield folder
        finally:
            _held[key][1] -= 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise _in_use(folder) from None
    _held[key] = [lock, 1, os.getpid()]
    try:
        yield folder
    finally:
        del _held[key]
        lock.release()


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the half-written temporaries a killed writer left in ``folder`` and its
    subfolders; call only while holding the folder's lock. Returns what was removed."""
    folder = Path(folder)
    removed = []
    for sub in [folder, *[p for p in folder.rglob("*") if p.is_dir()]] if folder.is_dir() else []:
        for tmp in temporary_files(sub):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def in_use(folder: str | os.PathLike) -> bool:
    """Whether another process holds ``folder``'s lock (probing an existing lock file creates nothing)."""
    from filelock import FileLock, Timeout

    path = Path(folder) / LOCK_NAME
    if not path.is_file() or os.path.realpath(folder) in _held:
        return False
    probe = FileLock(str(path), timeout=0)
    try:
        probe.acquire()
    except Timeout:
        return True
    probe.release()
    return False


def check_free(folder: str | os.PathLike, existing: Sequence[Path], *, resume: bool, overwrite: bool,
               resume_flag: str | None, overwrite_flag: str) -> None:
    """Refuse to start in a folder that holds ``existing`` files unless resuming or overwriting."""
    if resume and overwrite:
        raise RunFolderError(f"{resume_flag} and {overwrite_flag} contradict each other: continue the run in "
                             f"{folder}, or replace it, not both")
    if existing and not (resume or overwrite):
        if in_use(folder):
            raise _in_use(folder)
        shown = ", ".join(p.name for p in existing[:4]) + (", ..." if len(existing) > 4 else "")
        continue_it = f"{resume_flag} to continue it or " if resume_flag else ""
        raise RunFolderError(f"{folder} already holds a run ({shown}); pass {continue_it}{overwrite_flag} to "
                             "replace it, or choose another folder")


@contextlib.contextmanager
def claim(folder: str | os.PathLike, existing: Callable[[Path], list[Path]], *, resume: bool, overwrite: bool,
          remove: Callable[[Path], None], resume_flag: str | None = "resume=True",
          overwrite_flag: str = "overwrite=True") -> Iterator[Path]:
    """Check the rules, lock ``folder``, remove stale temporaries and, with ``overwrite``,
    the old run (``remove(folder)``); yields the folder while it is held."""
    folder = Path(folder)
    check_free(folder, existing(folder), resume=resume, overwrite=overwrite, resume_flag=resume_flag,
               overwrite_flag=overwrite_flag)
    with locked(folder):
        check_free(folder, existing(folder), resume=resume, overwrite=overwrite, resume_flag=resume_flag,
                   overwrite_flag=overwrite_flag)  # again under the lock: another writer may have finished
        remove_stale_temporaries(folder)
        if overwrite and existing(folder):
            remove(folder)
        yield folder


# ----------------------------------------------------------------------------- pyro-lvm train runs

def _run_contents(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name != LOCK_NAME) if folder.is_dir() else []


def _clear_run(folder: Path) -> None:
    for p in _run_contents(folder):
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def read_config(run: str | os.PathLike) -> dict[str, Any]:
    """``RUN/config.json`` of a run folder; errors name the file and what is wrong with it."""
    path = Path(run) / "config.json"
    if not Path(run).is_dir():
        raise FileNotFoundError(f"{run} is not a folder: RUN must be a folder written by 'pyro-lvm train'")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: RUN must be a folder written by 'pyro-lvm train'")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start}): not a config.json written by pyro-lvm") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(config, dict) or not isinstance(config.get("task"), str):
        raise ValueError(f"{path} names no task (no \"task\" string in it): not a config.json written by pyro-lvm")
    return config


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Where two configurations disagree (keys present in both), as ``"key: run has A, now B"``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in old.keys() & new.keys():
            out += config_differences(old[k], new[k], f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: the run has {old!r}, now {new!r}"]


@contextlib.contextmanager
def start_run(out: str | os.PathLike, config: dict[str, Any], *, resume: bool | None = None, overwrite: bool = False,
              main_process: bool = True) -> Iterator[Path]:
    """Claim the output folder of a ``pyro-lvm train`` task and write its ``config.json``.

    Call it after every option is checked and the data are read. It refuses a folder that
    holds files unless ``resume`` (the saved config must then agree with ``config``: a
    resumed run keeps its model and data) or ``overwrite`` (only a folder with a
    ``config.json`` is cleared); holds the folder's lock while the task runs. On ranks other
    than 0 of a data-parallel run (``main_process=False``) it writes nothing. ``resume=None``:
    the task cannot continue a run (its messages offer only ``--overwrite``).
    """
    can_resume, resume = resume is not None, bool(resume)
    out = Path(out)
    if not main_process:
        yield out
        return
    if overwrite and _run_contents(out) and not (out / "config.json").is_file():
        raise RunFolderError(f"--overwrite refused: {out} holds files but no config.json, so it is not a "
                             "pyro-lvm run folder; nothing was removed. Choose an empty or new folder")
    if resume and (out / "config.json").is_file():
        # "options" records how the run was started (shown by `pyro-lvm compare`); a resumed run
        # may change those that fit applies (epochs, lr, ...), so only the rest must agree.
        differences = config_differences({**read_config(out), "options": None},
                                         {**json.loads(json.dumps(config, default=str)), "options": None})
        if differences:
            raise RunFolderError(f"--resume refused: the options differ from the run in {out}: "
                                 + "; ".join(differences) + ". Drop those options to continue it, or use --overwrite")
    with claim(out, _run_contents, resume=resume, overwrite=overwrite, remove=_clear_run,
               resume_flag="--resume" if can_resume else None, overwrite_flag="--overwrite"):
        fresh = not _run_contents(out)
        atomic_json_save(json.loads(json.dumps(config, default=str)), out / "config.json")
        try:
            yield out
        except BaseException:
            # Refused or killed before its first checkpoint: nothing to resume, so the folder goes
            # back to empty and the same command can be run again without --overwrite.
            if fresh and not any(out.rglob("*.pt")):
                _clear_run(out)
            raise


def add_run_arguments(parser: Any, resume: bool) -> None:
    """``--overwrite`` (and ``--resume`` when the task can continue a run) for a task's parser."""
    if resume:
        parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in --out (a folder with a config.json) instead of refusing")
