"""One root for the errors fastsam2 raises on purpose, with a branch for the user's mistakes.

Every command-line tool catches :class:`UserError` alone (``fastsam2.runtime.args.run_cli``): its
first line is printed as ``<prog>: error: <line>`` and the tool exits 1. Anything else is a bug and keeps its traceback.
Error classes of the other modules derive from :class:`UserError` (bad input, a file that does not
fit, an engine built elsewhere) and, where callers already catch a builtin type, from that type too
(``FrameSourceError`` is still a ``ValueError``, ``OutputError`` an ``OSError``).
"""

from __future__ import annotations



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
