"""Polyphonic music as 88-key piano rolls at one frame per quarter note.

Two sources:

* :func:`load_music21_chorales`: Bach chorales bundled with music21 (offline; an optional
  extra, ``pip install pyro_lvm[music]``). The first parse of all 408 files takes about a
  minute; rolls are cached under ``~/.cache/pyro_lvm`` (or ``cache_dir``) and only
  files missing from the cache are parsed later.
* :func:`load_jsb_pickle`: the standard JSB chorales set (Boulanger-Lewandowski et al. 2012) as
  the ``jsb_chorales.pickle`` that Pyro's ``polyphonic_data_loader`` fetches, given its path.

Both return :class:`MusicData` with ``train/valid/test`` lists of ``(T_i, 88)`` float rolls;
:func:`pad_rolls` turns a list into ``(x (N, T, 88), mask (N, T))`` for the HMM.
Key index ``i`` is MIDI pitch ``21 + i`` (A0 .. C8).
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from ..validation import Integer

NUM_KEYS = 88
LOWEST_MIDI = 21
CACHE_VERSION = 1


@dataclass
class MusicData:
    """Train/valid/test lists of ``(T_i, 88)`` piano rolls plus the name of the source."""

    train: list[torch.Tensor]
    valid: list[torch.Tensor]
    test: list[torch.Tensor]
    source: str

    def summary(self) -> dict:
        return {"source": self.source, **{f"num_{s}": len(getattr(self, s)) for s in ("train", "valid", "test")},
                "train_frames": int(sum(len(r) for r in self.train))}


def notes_to_roll(frames: list, offset: int = LOWEST_MIDI) -> torch.Tensor:
    """``[(midi pitches of frame 0), (frame 1), ...]`` -> ``(T, 88)`` 0/1 roll.

    Raises ``ValueError`` for an empty sequence or a pitch outside the piano (key index not in 0..87).
    """
    if len(frames) == 0:
        raise ValueError("a sequence of length 0 cannot become a piano roll")
    roll = torch.zeros(len(frames), NUM_KEYS)
    for t, notes in enumerate(frames):
        for note in notes:
            key = int(note) - offset
            if not 0 <= key < NUM_KEYS:
                raise ValueError(f"note {int(note)} at frame {t} is outside the 88 piano keys "
                                 f"(key index {key} not in 0..87)")
            roll[t, key] = 1.0
    return roll


def pad_rolls(rolls: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of ``(T_i, D)`` rolls -> ``(x (N, T_max, D), mask (N, T_max) bool)``, zero-padded."""
    if not rolls:
        raise ValueError("no sequences to pad")
    for i, r in enumerate(rolls):
        if r.dim() != 2 or r.shape[0] == 0:
            raise ValueError(f"sequence {i} has shape {tuple(r.shape)}; need (T >= 1, D)")
    lengths = torch.tensor([len(r) for r in rolls])
    x = torch.nn.utils.rnn.pad_sequence(rolls, batch_first=True)
    return x, torch.arange(x.shape[1]) < lengths.unsqueeze(1)


class _Refused(pickle.UnpicklingError):
    """The file asks for something beyond containers and numbers."""


class _NotesUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, tuples, numbers and strings, and NumPy integer scalars (how the
    JSB file stores pitches); any other class or function in the file is refused, so reading
    it cannot run code."""

    def find_class(self, module: str, name: str):
        import numpy as np

        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        if (module, name) == ("_codecs", "encode"):  # how protocol 2 stores bytes (the scalars' data)
            def encode(text, encoding="latin1"):
                if not isinstance(text, str) or encoding != "latin1":
                    raise _Refused(f"refused _codecs.encode({type(text).__name__}, {encoding!r})")
                return text.encode("latin1")
            return encode
        if name == "scalar" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            def scalar(dtype, data=None):
                if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf":
                    raise _Refused(f"refused a NumPy scalar of dtype {dtype!r} (only numbers are allowed)")
                if isinstance(data, str):  # a Python 2 pickle stores the bytes as a latin-1 str
                    data = data.encode("latin1")
                return np.frombuffer(data, dtype=dtype, count=1)[0]
            return scalar
        raise _Refused(f"refused {module}.{name}: this file may only hold numbers and containers")


def load_jsb_pickle(path: str | Path) -> MusicData:
    """The JSB chorales pickle (keys ``train/valid/test``; lists of tuples of MIDI pitches).

    Read with an unpickler that builds only containers and numbers: a pickle that asks for
    anything else (a function to call, a class to build) is refused with ``ValueError``
    naming the file, before anything in it runs.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "jsb_chorales.pickle"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass the path of jsb_chorales.pickle "
                                "(the file Pyro's polyphonic_data_loader downloads)")
    try:
        with open(path, "rb") as f:
            raw = _NotesUnpickler(f).load()
    except _Refused as e:
        raise ValueError(f"{path} was refused: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            MemoryError) as e:
        raise ValueError(f"{path} is not a readable pickle of the JSB chorales ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict) or not all(isinstance(raw.get(s), list) for s in ("train", "valid", "test")):
        raise ValueError(f"{path} does not hold the JSB chorales: expected a dict with lists 'train', 'valid', 'test'")
    try:
        rolls = [[notes_to_roll(seq) for seq in raw[s]] for s in ("train", "valid", "test")]
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
    return MusicData(*rolls, source=f"jsb:{path}")


def _music21():
    try:
        import music21
    except ImportError:
        raise ImportError("the music21 Bach chorales need music21: pip install 'pyro_lvm[music]' "
                          "(or pip install music21); or use the JSB pickle via --data-path") from None
    return music21


def chorale_paths() -> list[Path]:
    """music21's bundled Bach scores (``.mxl``), sorted by name."""
    return sorted(Path(p) for p in _music21().corpus.getComposer("bach") if str(p).endswith(".mxl"))


def parse_score(path: str | Path) -> torch.Tensor:
    """One score -> ``(T, 88)`` roll: a key is on in frame ``q`` when a note sounds at quarter beat ``q``."""
    score = _music21().corpus.parse(str(path))
    frames = [[] for _ in range(max(1, math.ceil(float(score.highestTime))))]
    for element in score.flatten().notes:
        start, end = float(element.offset), float(element.offset + element.quarterLength)
        for q in range(math.ceil(start), min(math.ceil(end), len(frames))):
            frames[q].extend(p.midi for p in element.pitches)
    return notes_to_roll(frames)


def load_music21_chorales(limit: int | None = None, cache_dir: str | Path | None = None,
                          fractions: tuple[float, float] = (0.8, 0.1), seed: int = 0) -> MusicData:
    """Bach chorales from music21's corpus as piano rolls, split deterministically.

    ``limit`` keeps the first ``limit`` scores by name (a quick subset for smoke tests).
    The split shuffles the kept scores with ``seed`` and cuts ``fractions`` for train and
    valid (test gets the rest; each split holds at least one score).
    """
    paths = chorale_paths()
    if limit is not None:
        Integer(3)("limit (one score per split at least)", limit)
        paths = paths[:limit]
    cache_file = Path(cache_dir or Path.home() / ".cache" / "pyro_lvm") / f"music21_bach_rolls_v{CACHE_VERSION}.pt"
    cache = _read_cache(cache_file)
    missing = [p for p in paths if p.name not in cache]
    for p in missing:
        cache[p.name] = parse_score(p).to(torch.uint8)
    if missing:
        from ..checkpoint import atomic_torch_save
        atomic_torch_save(cache, cache_file)
    rolls = [cache[p.name].float() for p in paths]
    order = torch.randperm(len(rolls), generator=torch.Generator().manual_seed(seed)).tolist()
    n_train = max(1, int(fractions[0] * len(rolls)))
    n_valid = max(1, int(fractions[1] * len(rolls)))
    n_train = min(n_train, len(rolls) - n_valid - 1)
    split = [[rolls[i] for i in order[a:b]] for a, b in
             ((0, n_train), (n_train, n_train + n_valid), (n_train + n_valid, len(rolls)))]
    return MusicData(*split, source=f"music21 bach ({len(rolls)} scores)")


def _read_cache(path: Path) -> dict:
    """The parse cache (uint8 rolls by file name), or ``{}`` when it is missing or unreadable
    (it is rebuilt); read with ``weights_only=True`` like every pyro_lvm file."""
    if not path.is_file():
        return {}
    try:
        cache = torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001 - a broken cache is only a cache: parse again
        return {}
    return cache if isinstance(cache, dict) else {}


def keep_used_keys(data: MusicData) -> tuple[MusicData, torch.Tensor]:
    """Drop the keys never played in the training split (Pyro ``examples/hmm.py``'s protocol);
    returns the reduced data and the kept key indices."""
    used = torch.stack([r.amax(0) for r in data.train]).amax(0).bool()
    keys = used.nonzero().squeeze(1)
    cut = lambda rolls: [r[:, keys] for r in rolls]  # noqa: E731
    return MusicData(cut(data.train), cut(data.valid), cut(data.test), data.source + f" ({len(keys)} keys)"), keys
