"""What every fastsam2 command line shares: one-line errors, exit codes and checked argument types.

``ArgumentParser`` turns argparse's usage errors into :class:`~fastsam2.runtime.errors.UsageError`,
and :func:`run_cli` prints any user error as one line and exits 1 (130 on Ctrl-C), so a bad value
given to any option of any tool ends the same way. The types below refuse NaN, infinities and
out-of-range numbers at parse time.
"""

from __future__ import annotations

import argparse
import math
import sys

from .errors import UsageError, UserError, one_line


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are :class:`UsageError` (one line, exit 1) instead of usage + exit 2."""

    def error(self, message: str):
        err = UsageError(message)
        err.prog = self.prog  # type: ignore[attr-defined]
        raise err


def run_cli(prog: str, func, *args) -> int:
    """Call ``func(*args)``; a :class:`UserError` becomes one line on stderr and exit 1, Ctrl-C exit 130."""
    try:
        return int(func(*args) or 0)
    except UserError as e:
        print(f"{getattr(e, 'prog', None) or prog}: error: {one_line(e)}", file=sys.stderr)
        return 1
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


def bounded(kind: type, *, low: float, inclusive: bool = True):
    """An argparse type: a finite ``kind`` >= ``low`` (> ``low`` when not ``inclusive``)."""

    def parse(text: str):
        value = _number(kind, text)
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"must be {'>=' if inclusive else '>'} {low:g}, got {text!r}")
        return value

    parse.__name__ = f"{kind.__name__} {'>=' if inclusive else '>'} {low:g}"
    return parse


def positive(kind: type):
    """An argparse type: a finite number of ``kind`` > 0."""
    return bounded(kind, low=0, inclusive=False)


non_negative_int = bounded(int, low=0)


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
