"""What every fastsam2 command line shares: one-line errors, exit codes and checked argument types.

``ArgumentParser`` turns argparse's usage errors into :class:`~fastsam2.runtime.errors.UsageError`,
and :func:`run_cli` prints any user error as one line and exits 1, so a bad value given to any option
of any tool ends the same way. Ctrl-C (exit 130) and SIGTERM (exit 143: what ``timeout``, systemd,
Docker and Kubernetes send) both unwind the run as a :class:`KeyboardInterrupt`, so every output's
clean-up (``runtime/outdir.py``) runs for both. The types below refuse NaN, infinities and
out-of-range numbers at parse time.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import UsageError, UserError, is_out_of_memory, one_line, oom_line


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are :class:`UsageError` (one line, exit 1) instead of usage + exit 2."""

    def error(self, message: str):
        err = UsageError(message)
        err.prog = self.prog  # type: ignore[attr-defined]
        raise err


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is, so it unwinds (and cleans up) exactly like Ctrl-C."""


def _raise_terminated(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
    raise Terminated()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (elsewhere: no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT are held and delivered (to the handlers in place before
    it) when the block ends: for steps that must not be cut in half, such as handing a spawned child
    its work (cut there, the child would die on half a message). Main thread only (elsewhere: no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for sig in dict.fromkeys(held):
        if callable(previous[sig]):
            previous[sig](sig, None)
        elif previous[sig] == signal.SIG_DFL:
            signal.raise_signal(sig)


def import_deferring_signals(*modules: str) -> None:
    """Import ``modules`` with SIGTERM and SIGINT held (:func:`signals_deferred`): an extension module
    initialises in C++ that calls back into Python, and an exception a signal raises there aborts the
    process (``std::terminate``) instead of unwinding it. The signals are delivered after the imports.
    ImportError propagates."""
    import importlib

    with signals_deferred():
        for name in modules:
            importlib.import_module(name)


def die_with_parent(parent_pid: int) -> None:
    """For a child process of ``parent_pid``: receive SIGTERM when the parent dies (Linux
    ``PR_SET_PDEATHSIG``), even by SIGKILL, and unwind on it like the CLIs do, so the child's scratch
    files go with it."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent was gone before the death signal was armed
        raise Terminated()


def run_cli(prog: str, func, *args) -> int:
    """Call ``func(*args)``; a :class:`UserError` becomes one line on stderr and exit 1, Ctrl-C exit
    130, SIGTERM exit 143 (each one line; the run's scratch outputs are removed as it unwinds)."""
    try:
        with sigterm_as_interrupt():
            return int(func(*args) or 0)
    except UserError as e:
        print(f"{getattr(e, 'prog', None) or prog}: error: {one_line(e)}", file=sys.stderr)
        return 1
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        print(f"{prog}: error: out of memory: {oom_line(e)}", file=sys.stderr)
        return 1
    except Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def cli_main(prog: str, parser: argparse.ArgumentParser, argv, run=None) -> int:
    """Parse ``argv`` and call ``run(args)`` (default: ``args.func(args)``) under :func:`run_cli`.

    ``prog``: the name errors are reported under (a subcommand's parser error names its own prog)."""
    parsed: list[argparse.Namespace] = []
    code = run_cli(prog, lambda: parsed.append(parser.parse_args(argv)))
    if code:
        return code
    args = parsed[0]
    func = run or args.func
    name = f"{prog} {args.command}" if run is None and getattr(args, "command", None) else prog
    return run_cli(name, func, args)


def _number(kind: type, text: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number ({kind.__name__}), got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """A float that is not NaN or infinite."""
    return _number(float, text)


def bounded(kind: type, *, low: float, inclusive: bool = True, high: float | None = None):
    """An argparse type: a finite ``kind`` >= ``low`` (> ``low`` when not ``inclusive``), and <= ``high``
    when given."""

    def parse(text: str):
        value = _number(kind, text)
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"must be {'>=' if inclusive else '>'} {low:g}, got {text!r}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {text!r}")
        return value

    parse.__name__ = f"{kind.__name__} {'>=' if inclusive else '>'} {low:g}"
    return parse


def positive(kind: type):
    """An argparse type: a finite number of ``kind`` > 0."""
    return bounded(kind, low=0, inclusive=False)


non_negative_int = bounded(int, low=0)

# SAM2's configs are trained at 1024 px. Memory attention scores the (S/16)^2 tokens of a frame
# against 7 frames of them: unfused, that float32 matrix is 7 GiB at 2048 and grows with S^4 (1.75 TiB
# at 8192, where a build died partway), so larger sizes are refused before anything is built.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 128, 2048


def image_size_problem(size: int) -> str | None:
    """Why ``size`` is not a model input size fastsam2 builds (None when it is)."""
    if size % 64 or not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        return f"image size must be a multiple of 64 in {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}, got {size}"
    return None


def image_size(text: str) -> int:
    """An argparse type: a model input size (see :func:`image_size_problem`)."""
    value = _number(int, text)
    problem = image_size_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def keep_ratios(text: str) -> list[float]:
    """Comma-separated keep ratios, each in (0, 1] ("1.0,0.5,0.3")."""
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not vals or any(not 0.0 < v <= 1.0 for v in vals):
        raise argparse.ArgumentTypeError(f"keep ratios are in (0, 1], got {text!r}")
    return vals


def name_list(choices: tuple[str, ...]):
    """An argparse type: comma-separated names, each one of ``choices``, no repeats ("torch,ort")."""

    def parse(text: str) -> list[str]:
        names = [v.strip() for v in text.split(",") if v.strip()]
        bad = [n for n in names if n not in choices]
        if not names or bad:
            raise argparse.ArgumentTypeError(
                f"expected names from {', '.join(choices)} separated by commas, got {text!r}")
        if len(set(names)) != len(names):
            raise argparse.ArgumentTypeError(f"a name is repeated in {text!r}")
        return names

    parse.__name__ = "names of " + "|".join(choices)
    return parse
