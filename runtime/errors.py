"""One root for the errors fastsam2 raises on purpose, with a branch for the user's mistakes.

Every command-line tool catches :class:`UserError` alone (``fastsam2.runtime.args.run_cli``): its
first line is printed as ``<prog>: error: <line>`` and the tool exits 1. Anything else is a bug and keeps its traceback.
Error classes of the other modules derive from :class:`UserError` (bad input, a file that does not
fit, an engine built elsewhere) and, where callers already catch a builtin type, from that type too
(``FrameSourceError`` is still a ``ValueError``, ``OutputError`` an ``OSError``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class FastSam2Error(Exception):
    """Root of every error fastsam2 raises on purpose."""


class UserError(FastSam2Error):
    """A problem with the user's input, files or machine: reported in one line, exit code 1."""


class UsageError(UserError, ValueError):
    """A contradictory or invalid option (the CLIs' own checks)."""


class MissingDependency(UserError, ImportError):
    """An optional package a feature needs is not installed (the message names the extra to install)."""


def one_line(e: BaseException) -> str:
    """The first non-empty line of ``str(e)`` (the type's name when there is none)."""
    for line in str(e).strip().splitlines():
        if line.strip():
            return line.strip()
    return type(e).__name__


class OutOfMemory(UserError, MemoryError):
    """The machine ran out of memory for what the user asked (a size, a batch): one line naming it."""


# How the libraries fastsam2 runs say "out of memory" (torch CPU and CUDA, ONNX Runtime, C++); hydra
# wraps torch's error in its own exception, so the text is what is matched.
_OOM_TEXTS = ("can't allocate memory", "not enough memory", "out of memory", "failed to allocate memory",
              "std::bad_alloc")


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` (or an error it wraps) is an allocation failure."""
    if isinstance(e, MemoryError):
        return True
    if not isinstance(e, Exception) or isinstance(e, FastSam2Error):
        return False
    text = str(e).lower()
    return type(e).__name__ == "OutOfMemoryError" or any(t in text for t in _OOM_TEXTS)


@contextmanager
def out_of_memory_as_error(what: str) -> Iterator[None]:
    """Within the block, an out-of-memory becomes :class:`OutOfMemory` saying ``what`` needed it
    (e.g. "building 'tiny' at image size 2048")."""
    try:
        yield
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        raise OutOfMemory(f"out of memory {what}: {oom_line(e)}") from None


def oom_line(e: BaseException) -> str:
    """The line of ``e``'s message that says what could not be allocated (wrappers put it last)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    said = [line for line in lines if any(t in line.lower() for t in _OOM_TEXTS)]
    return (said[0] if said else one_line(e))[:240]
