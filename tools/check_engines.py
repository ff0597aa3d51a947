"""``fastsam2 check-engines DIR``: compare each TensorRT engine with its ONNX twin (polygraphy) and
print a pass/fail table. Runs on the user's machine, where TensorRT is installed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastsam2.runtime.args import positive


def add_parser(sub) -> None:
    p = sub.add_parser("check-engines", help="compare TensorRT engines with their ONNX graphs (needs tensorrt)")
    p.add_argument("engines", help="directory with <graph>.engine files (from fastsam2-export --trt)")
    p.add_argument("--onnx", default=None, help="directory with the ONNX graphs (default: the same directory)")
    p.add_argument("--atol-scale", type=positive(float), default=1.0,
                   help="multiply every output's tolerance (FP16/INT8 engines need more, e.g. 10)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastsam2.runtime.errors import UsageError

    try:
        import tensorrt  # noqa: F401
    except ImportError:
        # polygraphy's TrtRunner imports `tensorrt` by name: TensorRT-RTX engines cannot be checked here
        raise UsageError("check-engines needs TensorRT's Python package (tensorrt), which is not installed "
                       "(polygraphy does not drive TensorRT-RTX)") from None
    from fastsam2.runtime.backends.trt import check_engines, format_check_table

    engines = Path(args.engines)
    if not engines.is_dir():
        raise UsageError(f"engine directory not found: {engines}")
    rows = check_engines(engines, Path(args.onnx) if args.onnx else engines, atol_scale=args.atol_scale)
    print(format_check_table(rows))
    failed = [r for r in rows if not r.passed]
    if failed:
        print(f"{len(failed)} of {len(rows)} checks failed", file=sys.stderr)
        return 1
    return 0
