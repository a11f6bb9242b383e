"""One rule for data files that cannot be read: the error names the file and what it should be.

Loaders wrap their reading in :func:`reading`; a decoding error, a broken archive or a line
that does not parse becomes a ``ValueError`` such as
``"train.amat is not a binarized MNIST .amat file: could not convert string to float: 'x'"``
instead of a message that names no file.
"""

from __future__ import annotations

import contextlib
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

_UNREADABLE = (UnicodeDecodeError, zipfile.BadZipFile, zlib.error, EOFError, struct.error, ValueError, IndexError,
               KeyError)


@contextlib.contextmanager
def reading(path: str | Path, what: str) -> Iterator[None]:
    """Turn errors from reading ``path`` into ``ValueError("<path> is not <what>: <reason>")``.

    Errors that already name the file (pyro_lvm's own checks, ``FileNotFoundError``) pass unchanged.
    """
    try:
        yield
    except FileNotFoundError:
        raise
    except _UNREADABLE as e:
        text = str(e)
        if str(path) in text:
            raise
        if isinstance(e, UnicodeDecodeError):
            text = f"not UTF-8 text (byte {e.start}: {e.reason})"
        elif isinstance(e, (zipfile.BadZipFile, zlib.error)):
            text = f"a broken zip archive ({text})"
        elif isinstance(e, KeyError):
            text = f"missing {text}"
        raise ValueError(f"{path} is not {what}: {text or type(e).__name__}") from None
    except OSError as e:
        raise ValueError(f"{path} could not be read as {what}: {e.strerror or e}") from None
