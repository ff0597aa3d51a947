"""``fastsam2-export``: SAM2 (+ token router) → ONNX graphs, manifest, validation; ``text`` and ``describe`` subcommands.

    fastsam2-export --config tiny --checkpoint sam2.1_hiera_tiny.pt --out out/tiny --validate
    fastsam2-export --config tiny --image-size 512 --out out/t512 --trt      # + TensorRT static check
    fastsam2-export text "red car" "person" -o texts.npz
    fastsam2-export describe frame.jpg --box 100,80,300,260 --pretrained clip.bin   # names for --text

User errors (unknown config, unreadable checkpoint, existing --out without --overwrite, a failed
validation) end with one line on stderr and exit code 1, and leave no output directory behind;
bugs keep their traceback.

``--trt`` writes the ONNX graphs, runs the static TensorRT-10 compatibility check on each, writes
``trt_compat.json`` and builds one strongly typed engine per graph with whichever TensorRT is
installed (``tensorrt``, else TensorRT-RTX; see ``runtime/backends/trt_api.py``): ``--fp16`` builds from
mixed-precision graphs (``export/trt/precision.py``), ``--int8 --calib FRAMES`` from QDQ graphs
calibrated on feeds recorded while tracking those frames (``calibration/qdq.py``). Without any
TensorRT it says so and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from fastsam2.runtime.args import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, ArgumentParser, cli_main, image_size, positive
from fastsam2.runtime.errors import UsageError, UserError, one_line, out_of_memory_as_error
from fastsam2.runtime.outdir import check_output_dir

PROG = "fastsam2-export"


def compute_capability(text: str) -> str:
    """A CUDA compute capability "MAJOR.MINOR" (e.g. 8.6), as TensorRT-RTX's build targets take it."""
    import re

    if not re.fullmatch(r"\d{1,2}\.\d", text):
        raise argparse.ArgumentTypeError(f"expected a compute capability like 8.6, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    from fastsam2.export.models import CONFIG_NAMES
    from fastsam2.runtime.config import CHECKPOINT_HELP, FILL_MODES

    p = ArgumentParser(
        prog=PROG,
        description="Export SAM2 video tracking to ONNX graphs (+ manifest, validation). "
        f"Subcommand: `{PROG} text ...` encodes object descriptions with CLIP.",
    )
    p.add_argument("--config", default=None,
                   help=f"SAM2 config: {', '.join(CONFIG_NAMES)}, or a sam2 config .yaml "
                   "(default: tiny, or the --checkpoint model's)")
    p.add_argument("--checkpoint", metavar="PATH", help=CHECKPOINT_HELP)
    p.add_argument("--router", metavar="PATH",
                   help="token-router weights (.safetensors); default: the built-in hand-set weights")
    p.add_argument("--no-router", action="store_true",
                   help="export without router.onnx (tracking then runs at keep ratio 1.0 only)")
    p.add_argument("--image-size", type=image_size, metavar="N",
                   help=f"model input size, a multiple of 64 in {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} "
                        "(default: the config's 1024)")
    p.add_argument("--encoder-region", action="store_true",
                   help="also export the image encoder as three graphs (embed, trunk on a rectangle, head), so "
                   "that fastsam2 track --encoder-region runs on these graphs and engines")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (17..20; default 17)")
    p.add_argument("--fill", choices=FILL_MODES, default="norm", help="fill of pruned tokens (default norm)")
    p.add_argument("--validate", action="store_true", help="compare every graph in ONNX Runtime with torch")
    p.add_argument("--frames", metavar="DIR", help="frames for --validate (default: a synthetic image)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    trt = p.add_argument_group("TensorRT engines (built beside the ONNX graphs in --out)")
    trt.add_argument("--trt", action="store_true",
                     help="static TensorRT compatibility check, then build <graph>.engine for every graph")
    trt.add_argument("--fp16", action="store_true",
                     help="FP16 engines from mixed-precision graphs (norms, reductions, softmax, RoPE, mask logits kept FP32)")
    trt.add_argument("--int8", action="store_true",
                     help="INT8 engines from QDQ graphs calibrated on --calib frames (needs --calib)")
    trt.add_argument("--fp8", action="store_true",
                     help="FP8 (E4M3) image-encoder engine, the rest FP16, from QDQ graphs calibrated on --calib "
                     "frames (needs --calib; FP8 runs on Ada/Hopper and newer: with TensorRT-RTX add --trt-target 8.9 "
                     "or 12.0)")
    trt.add_argument("--calib", metavar="FRAMES_DIR", help="real frames to calibrate INT8/FP8 with (the same reader as ORT INT8)")
    trt.add_argument("--calib-frames", type=positive(int), default=12, help="frames tracked to record calibration feeds (default 12)")
    trt.add_argument("--workspace", type=positive(int), metavar="MiB",
                     help="TensorRT workspace limit in MiB (default: TensorRT's, the device memory)")
    trt.add_argument("--tf32", action="store_true", help="allow TF32 in FP32 layers (default: strict FP32)")
    trt.add_argument("--trt-target", action="append", metavar="CC", type=compute_capability,
                     help="TensorRT-RTX only: compute capability to build for, e.g. 7.5 for Turing "
                          "(repeatable; default: TensorRT-RTX's portable set 8.0-12.x)")
    trt.add_argument("--profile", choices=("edge", "desktop"), default="desktop",
                     help="shape profiles: edge (Jetson: fewer memory frames) or desktop (default)")
    trt.add_argument("--max-batch", type=positive(int), default=1, metavar="N",
                     help="objects (or camera streams) one engine call takes; the tracker batches up to N "
                          "(default 1; activation memory grows with N)")
    return p


def _check_args(args: argparse.Namespace) -> None:
    trt_only = [f for f, on in (("--fp16", args.fp16), ("--int8", args.int8), ("--fp8", args.fp8), ("--calib", args.calib),
                                ("--workspace", args.workspace is not None), ("--tf32", args.tf32),
                                ("--trt-target", bool(args.trt_target)), ("--max-batch", args.max_batch != 1))
                if on]
    if trt_only and not args.trt:
        raise UsageError(f"{', '.join(trt_only)} only apply with --trt")
    if sum((args.fp16, args.int8, args.fp8)) > 1:
        raise UsageError("choose one of --fp16, --int8 and --fp8 (quantized engines fall back to FP16 kernels where faster)")
    if args.calib and not (args.int8 or args.fp8):
        raise UsageError("--calib only applies with --int8 or --fp8")
    if args.tf32 and (args.fp16 or args.int8 or args.fp8):
        raise UsageError("--tf32 applies to fp32 engines; drop it or --fp16/--int8/--fp8")
    if args.workspace is not None and args.workspace < 1:
        raise UsageError(f"--workspace must be >= 1 MiB, got {args.workspace}")
    if (args.int8 or args.fp8) and not args.calib:
        raise UsageError(f"--{'int8' if args.int8 else 'fp8'} needs --calib FRAMES_DIR")
    for flag, folder in (("--calib", args.calib), ("--frames", args.frames)):
        if folder:  # open it now: a bad frame folder fails before minutes of export, not after
            from fastsam2.runtime.frames import open_frames

            try:
                open_frames(folder).close()
            except UserError as e:
                raise UsageError(f"{flag}: {e}") from None
    from fastsam2.runtime.config import resolve_model

    config, checkpoint = resolve_model(args.config, args.checkpoint)
    if args.router and args.no_router:
        raise UsageError("--router and --no-router contradict each other")
    if args.router:  # a broken router file is refused before the model is built
        from fastsam2.runtime.router import read_router_file

        read_router_file(args.router)
    if not 17 <= args.opset <= 20:
        raise UsageError(f"--opset must be in 17..20 (TensorRT 10 parser range, LayerNormalization), got {args.opset}")
    check_output_dir(args.out, overwrite=args.overwrite,
                     protect=[config, checkpoint, args.router, args.frames, args.calib])


def _trt_step(manifest, out: Path, args: argparse.Namespace) -> int:
    """Static TensorRT check of every graph (report written next to the graphs); engines later."""
    from fastsam2.export.onnx_export import trt_compat_report

    reports = {}
    for name, g in manifest.graphs.items():
        report = trt_compat_report(out / g.file, g.spec, manifest.model_config)
        reports[name] = {"ok": report.ok, "problems": report.problems, "ops": sorted(report.ops_used)}
        print(report.format())
    (out / "trt_compat.json").write_text(json.dumps(reports, indent=2) + "\n")
    if not all(r["ok"] for r in reports.values()):
        print(f"{PROG}: error: TensorRT compatibility problems (see {out / 'trt_compat.json'})", file=sys.stderr)
        return 1
    from fastsam2.runtime.backends.trt_api import TensorRTMissing, tensorrt_flavor

    try:
        flavor = tensorrt_flavor()
    except TensorRTMissing as e:
        print(
            f"{PROG}: error: {e}; wrote the ONNX graphs and the compatibility "
            f"report ({out / 'trt_compat.json'}); build engines on the target device",
            file=sys.stderr,
        )
        return 1
    if args.trt_target and not flavor.is_rtx:
        print(f"{PROG}: error: --trt-target is a TensorRT-RTX option; {flavor.label} builds for this GPU",
              file=sys.stderr)
        return 1
    return _build_engines(manifest, out, args)


def _build_engines(manifest, out: Path, args: argparse.Namespace) -> int:
    """Engines for every graph through the shared build plan (also used by jetson/build_engines.py)."""
    from fastsam2.export.trt.builder import BuildError
    from fastsam2.export.trt.plan import DEFAULT_WORKSPACE_MIB, PlanError, build_all, check_calib_dir, make_plan
    from fastsam2.calibration.qdq import QuantizeError

    precision = "int8" if args.int8 else "fp8" if args.fp8 else "fp16" if args.fp16 else "fp32"
    quantized = precision in ("int8", "fp8")
    try:
        plan = make_plan(out, out, kind=args.profile, precision=precision, max_batch=args.max_batch,
                         workspace_mib=args.workspace if args.workspace is not None else DEFAULT_WORKSPACE_MIB)
        calib_dir = None
        if quantized:
            from fastsam2.calibration.ort_quant import CALIB_KEEP_RATIO, record_feeds
            from fastsam2.export.torch_backend import build_torch_backend

            from fastsam2.export.models import build_sam2

            calib_dir = out / "calib_feeds"
            model = build_sam2(args.config, args.checkpoint, image_size=args.image_size, quiet=True)
            record_feeds(build_torch_backend(model), Path(args.calib), calib_dir, n_frames=args.calib_frames,
                         keep_ratio=CALIB_KEEP_RATIO)
            check_calib_dir(plan, calib_dir, hint=f"track more calibration frames (--calib-frames, now "
                            f"{args.calib_frames}, over a --calib folder with at least that many), or build "
                            f"without --{precision} (--fp16)")
        build_all(plan, calib_dir=calib_dir, tf32=args.tf32,
                  targets=tuple(args.trt_target) if args.trt_target else None,
                  log=lambda msg: print(msg, file=sys.stderr))
    except (PlanError, BuildError, QuantizeError, ValueError) as e:
        if quantized:
            _discard_quantized_output(out, precision)
        print(f"{PROG}: error: {one_line(e)}", file=sys.stderr)
        return 1
    except BaseException:
        if quantized:
            _discard_quantized_output(out, precision)
        raise
    print(f"built {len(plan.graphs)} {precision} TensorRT engines in {out} (profile {args.profile}); "
          f"verify them with: fastsam2 check-engines {out}")
    return 0


def _discard_quantized_output(out: Path, precision: str) -> None:
    """A failed INT8 / FP8 build leaves nothing: this run's graphs, recorded feeds and engines go (an
    export is one unit; a rerun without --int8/--fp8 or with other calibration frames starts clean)."""
    from fastsam2.runtime.outdir import remove_output_dir

    remove_output_dir(out)
    print(f"{PROG}: removed {out} (the {precision.upper()} build failed)", file=sys.stderr)


def run_export(args: argparse.Namespace) -> int:
    from fastsam2.export.models import build_sam2
    from fastsam2.export.onnx_export import export_graphs, export_summary
    from fastsam2.export.validate import ValidationError

    try:
        _check_args(args)
        with out_of_memory_as_error(f"exporting {args.config!r} at image size {args.image_size or 1024}"):
            model = build_sam2(args.config, args.checkpoint, image_size=args.image_size)
            router = None
            if args.router:
                from fastsam2.export.router import load_router

                router = load_router(args.router, model)
            elif not args.no_router:
                from fastsam2.export.router import TokenRouter

                router = TokenRouter.for_model(model)
            manifest = export_graphs(
                model,
                args.out,
                opset=args.opset,
                fill=args.fill,
                router_stage=router,
                router_weights=args.router,
                encoder_region=args.encoder_region,
                validate=args.validate,
                frames=args.frames,
                overwrite=args.overwrite,
                log=lambda msg: print(msg, file=sys.stderr),
            )
    except ValidationError as e:
        raise UsageError("validation failed: " + "; ".join(e.report.failures)) from None
    out = Path(args.out)
    print(f"wrote {len(manifest.graphs)} graphs to {out} (config {manifest.config_name}, "
          f"weights {manifest.weights[:16]}, opset {manifest.opset})")
    for line in export_summary(manifest, out):
        print("  " + line)
    if args.trt:
        return _trt_step(manifest, out, args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        # the console script: the process is the export's, and freed trace activations leave it
        from fastsam2.runtime.metrics import mmap_large_allocations

        mmap_large_allocations()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("text", "describe"):
        from fastsam2.export.text import add_describe_parser, add_text_parser

        parser = ArgumentParser(prog=PROG)
        commands = parser.add_subparsers(dest="command", required=True)
        add_text_parser(commands)
        add_describe_parser(commands)
        return cli_main(PROG, parser, argv)  # errors name the subcommand: "fastsam2-export text: error: ..."
    return cli_main(PROG, build_parser(), argv, run=run_export_checked)


def run_export_checked(args: argparse.Namespace) -> int:
    """:func:`run_export`, or one line naming the extra when the export stack is not installed."""
    from fastsam2.runtime.args import import_deferring_signals

    try:
        import_deferring_signals("torch", "onnx", "sam2", "onnxscript")
    except ImportError as e:
        raise UsageError(f"{PROG} needs torch, sam2 and onnx (pip install fastsam2[export]): {e}") from None
    return run_export(args)


if __name__ == "__main__":
    sys.exit(main())
