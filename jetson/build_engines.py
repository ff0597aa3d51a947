#!/usr/bin/env python3
"""Build the TensorRT engines of a fastsam2 ONNX export ON the Jetson that will run them.

    python3 jetson/build_engines.py --graphs graphs/ --out engines/                  # FP16, edge
    python3 jetson/build_engines.py --graphs graphs/ --out engines/ --int8 --calib calib/
    python3 jetson/build_engines.py --graphs graphs/ --out engines/ --fp32 --only mask_decoder

Engines are tied to the GPU and the TensorRT version that built them: an engine from a desktop GPU,
or from another JetPack, is refused at load time by the engine metadata check (with a rebuild hint).
So export ONNX anywhere, copy it over, and build here.

Everything goes through the fastsam2 Python API (:func:`fastsam2.export.trt.plan.build_all`): strongly
typed engines with the optimization profiles of :func:`fastsam2.runtime.backends.trt_profiles.profiles_for`
(kind "edge" by default); fp16 builds from the mixed-precision graph of
:func:`fastsam2.export.trt.precision.to_fp16`, int8 from the QDQ graph of
:func:`fastsam2.calibration.qdq.quantize_qdq` calibrated on feeds recorded with
``fastsam2.calibration.reader.FeedRecorder`` (``CALIB/<graph>/*.npz``); a graph whose INT8 error
exceeds the threshold is built FP16 instead (``OUT/precision.json`` says which). A timing cache is
shared by all graphs. ``print_trtexec_commands.py`` prints the equivalent trtexec lines.

Needs: tensorrt (JetPack 6: TensorRT 10.3, python3-libnvinfer), torch with CUDA (device queries),
onnx and onnxruntime (graph conversion, INT8 calibration). Never run on a Jetson (the build plan is the one CI runs
through ``fastsam2-export --trt``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fastsam2.export.trt.plan import (  # noqa: E402
    DEFAULT_WORKSPACE_MIB,
    PlanError,
    build_all,
    check_calib_dir,
    make_plan,
)

from fastsam2.runtime.args import ArgumentParser, cli_main  # noqa: E402

PROG = "build_engines"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--graphs", required=True, metavar="DIR", help="ONNX export directory (manifest.json)")
    p.add_argument("--out", metavar="DIR", help="engine directory (default: --graphs)")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp16", dest="precision", action="store_const", const="fp16", help="FP16 (default)")
    prec.add_argument("--int8", dest="precision", action="store_const", const="int8",
                      help="INT8 QDQ graphs (needs --calib); graphs too far from fp32 fall back to FP16")
    prec.add_argument("--fp32", dest="precision", action="store_const", const="fp32", help="FP32 only")
    p.set_defaults(precision="fp16")
    p.add_argument("--calib", metavar="DIR", help="recorded calibration feeds: DIR/<graph>/*.npz (FeedRecorder)")
    p.add_argument("--workspace", type=int, default=DEFAULT_WORKSPACE_MIB, metavar="MiB",
                   help="TensorRT workspace limit (default: TensorRT's, the device memory)")
    p.add_argument("--profile", choices=("edge", "desktop"), default="edge", help="shape profile kind (default edge)")
    p.add_argument("--max-batch", type=int, default=1, metavar="N",
                   help="objects (or camera streams) one engine call takes (default 1)")
    p.add_argument("--only", nargs="+", metavar="GRAPH", help="build only these graphs")
    p.add_argument("--skip-compat-check", action="store_true", help="skip the static ONNX check (no onnx package)")
    return p


def check_args(args: argparse.Namespace) -> None:
    if args.precision == "int8" and not args.calib:
        raise PlanError("--int8 needs --calib DIR (feeds recorded with FeedRecorder)")
    if args.calib and args.precision != "int8":
        raise PlanError(f"--calib only applies with --int8 (precision is {args.precision})")
    if args.calib and not Path(args.calib).is_dir():
        raise PlanError(f"--calib: not a directory: {args.calib}")


def run(args: argparse.Namespace) -> int:
    check_args(args)
    plan = make_plan(args.graphs, args.out, kind=args.profile, precision=args.precision,
                     workspace_mib=args.workspace, graphs=args.only, max_batch=args.max_batch)
    if args.calib:
        check_calib_dir(plan, Path(args.calib), hint=f"record them into --calib {args.calib}, or build those "
                        "graphs without --int8 (--only GRAPH ...)")
    from fastsam2.runtime.backends.trt_api import TensorRTMissing, tensorrt_flavor

    try:
        tensorrt_flavor()
    except TensorRTMissing as e:
        raise PlanError(f"{e} (on JetPack: sudo apt install python3-libnvinfer, see jetson/README.md)") from None
    build_all(plan, calib_dir=Path(args.calib) if args.calib else None,
              check_compat=not args.skip_compat_check)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """User errors of every room (plan, build, calibration, bad input) are one line and exit 1."""
    return cli_main(PROG, build_parser(), argv, run=run)


if __name__ == "__main__":
    sys.exit(main())
