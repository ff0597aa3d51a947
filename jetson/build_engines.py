#!/usr/bin/env python3
"""Build the TensorRT engines of a fastsam2 ONNX export ON the Jetson that will run them.

    python3 jetson/build_engines.py --graphs graphs/ --out engines/                  # FP16, edge
    python3 jetson/build_engines.py --graphs graphs/ --out engines/ --int8 --calib calib/
    python3 jetson/build_engines.py --graphs graphs/ --out engines/ --fp32 --only mask_decoder

Engines are tied to the GPU and the TensorRT version that built them: an engine from a desktop GPU,
or from another JetPack, is refused at load time by the engine metadata check (with a rebuild hint).
So export ONNX anywhere, copy it over, and build here.

Everything goes through the fastsam2 Python API: :func:`fastsam2.export.trt.builder.build_engine`
with the optimization profiles of :func:`fastsam2.export.trt.profiles.profiles_for` (kind "edge" by
default), the builder's default FP32 layer set under FP16/INT8, a timing cache shared by all graphs,
and for INT8 the entropy calibrator fed from feeds recorded with
``fastsam2.calibration.reader.FeedRecorder`` (``CALIB/<graph>/*.npz``). The calibration cache lands in
``OUT/calib/<graph>.cache`` (reused by later builds and by ``trtexec --calib``; delete it to
recalibrate). ``print_trtexec_commands.py`` prints the equivalent trtexec lines.

Needs: tensorrt (JetPack's python3-libnvinfer), torch with CUDA (device queries and calibration
buffers), onnx (static compatibility check). Not run here: this machine has no TensorRT and no Jetson.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_plan import (  # noqa: E402
    CALIB_CACHE_DIR,
    DEFAULT_WORKSPACE_MIB,
    BuildPlan,
    PlanError,
    make_plan,
    write_build_info,
)

from fastsam2.export.trt.builder import BuildError  # noqa: E402  (no tensorrt import at module level)
from fastsam2.export.trt.calibrator import CalibrationError  # noqa: E402
from fastsam2.runtime.manifest import CONSTANTS_NAME, MANIFEST_NAME  # noqa: E402

PROG = "build_engines"


def copy_export_files(plan: BuildPlan) -> None:
    """manifest.json and constants.npz beside the engines (byte-identical: metadata hashes them)."""
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST_NAME, CONSTANTS_NAME):
        src, dst = plan.graphs_dir / name, plan.out_dir / name
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)


def check_calib_dir(plan: BuildPlan, calib_dir: Path) -> None:
    """Every graph being built in INT8 needs recorded feeds: refuse before the first (slow) build."""
    missing = [g.name for g in plan.graphs if not any((calib_dir / g.name).glob("[0-9]*.npz"))]
    if missing:
        raise PlanError(
            f"--calib {calib_dir}: no recorded feeds for {missing} (expected {calib_dir}/<graph>/*.npz "
            "from fastsam2.calibration.reader.FeedRecorder); build those graphs without --int8 (--only ...)"
        )


def build_all(plan: BuildPlan, *, calib_dir: Path | None, check_compat: bool = True, log=print) -> list:
    """Build every engine of ``plan``; returns the EngineMetadata of each."""
    from fastsam2.export.trt.builder import BuildSource, build_engine
    from fastsam2.runtime.backends.trt import manifest_sha256

    copy_export_files(plan)
    source = BuildSource(
        manifest_sha256=manifest_sha256(plan.graphs_dir / MANIFEST_NAME),
        config_name=plan.manifest.config_name,
        profile_kind=plan.kind,
    )
    metas = []
    for g in plan.graphs:
        calibrator = None
        if plan.precision == "int8":
            from fastsam2.calibration.reader import DirectoryCalibrationReader
            from fastsam2.export.trt.calibrator import make_entropy_calibrator

            (plan.out_dir / CALIB_CACHE_DIR).mkdir(parents=True, exist_ok=True)
            reader = DirectoryCalibrationReader(calib_dir, g.name)
            calibrator = make_entropy_calibrator(reader, g.spec, g.calib_cache)
        log(f"[{g.name}] building {plan.precision} engine (profile {plan.kind}) from {g.onnx_path} ...")
        t0 = time.perf_counter()
        meta = build_engine(
            g.onnx_path,
            g.spec,
            g.profiles,
            engine_path=g.engine_path,
            metadata=source,
            precision=plan.precision,
            workspace_mib=plan.workspace_mib,
            calibrator=calibrator,
            timing_cache_path=plan.timing_cache,
            check_compat=check_compat,
        )
        size = g.engine_path.stat().st_size / 2**20
        pinned = meta.build_options.get("fp32_layers_matched", 0)
        extra = ""
        if calibrator is not None:
            q = calibrator.queue
            extra = f", calibration feeds used {q.used} skipped {q.skipped} (other shapes)"
        log(f"[{g.name}] wrote {g.engine_path} ({size:.1f} MiB, {time.perf_counter() - t0:.0f} s, "
            f"{pinned} layers pinned to FP32{extra})")
        metas.append(meta)
    info = write_build_info(plan)
    log(f"wrote {info}; TensorRT {metas[0].tensorrt_version if metas else '?'} on "
        f"{metas[0].gpu_name if metas else '?'}")
    return metas


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--graphs", required=True, metavar="DIR", help="ONNX export directory (manifest.json)")
    p.add_argument("--out", metavar="DIR", help="engine directory (default: --graphs)")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp16", dest="precision", action="store_const", const="fp16", help="FP16 (default)")
    prec.add_argument("--int8", dest="precision", action="store_const", const="int8",
                      help="INT8 with FP16 fallback (needs --calib)")
    prec.add_argument("--fp32", dest="precision", action="store_const", const="fp32", help="FP32 only")
    p.set_defaults(precision="fp16")
    p.add_argument("--calib", metavar="DIR", help="recorded calibration feeds: DIR/<graph>/*.npz (FeedRecorder)")
    p.add_argument("--workspace", type=int, default=DEFAULT_WORKSPACE_MIB, metavar="MiB",
                   help=f"TensorRT workspace limit (default {DEFAULT_WORKSPACE_MIB})")
    p.add_argument("--profile", choices=("edge", "desktop"), default="edge", help="shape profile kind (default edge)")
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        plan = make_plan(args.graphs, args.out, kind=args.profile, precision=args.precision,
                         workspace_mib=args.workspace, graphs=args.only)
        if args.calib:
            check_calib_dir(plan, Path(args.calib))
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            raise PlanError("tensorrt is not importable: on JetPack, sudo apt install python3-libnvinfer "
                            "(see jetson/README.md)") from None
        build_all(plan, calib_dir=Path(args.calib) if args.calib else None,
                  check_compat=not args.skip_compat_check)
    except (PlanError, BuildError, CalibrationError, ValueError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
