"""Reading a user's or an export's ``.npz`` file, where any damage is one line naming the file.

numpy raises a different exception for each way an archive can be damaged (``zipfile.BadZipFile`` for
a truncated or garbage file, ``zlib.error`` for corrupt compressed data, ``ValueError`` for pickled
object arrays, ``EOFError`` or ``OSError`` for a short member); :func:`read_npz` turns all of them
into the caller's :class:`~fastsam2.runtime.errors.UserError`.
"""

from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

from .errors import UserError


def read_npz(path: str | os.PathLike, *, what: str, error: type[UserError] = UserError) -> dict[str, np.ndarray]:
    """Every array of the .npz at ``path`` ({name: array}, read in full now, pickles refused);
    ``error("cannot read <what> <path>: <reason>")`` for a missing, truncated or corrupt file."""
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        reason = "file not found" if not os.path.exists(path) else "not an .npz archive"
        raise error(f"cannot read {what} {path}: {reason}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        kind = "zlib.error" if isinstance(e, zlib.error) else type(e).__name__
        reason = "it holds pickled objects" if "pickle" in str(e) else f"damaged ({kind}: {e})"
        raise error(f"cannot read {what} {path}: {reason}") from None
