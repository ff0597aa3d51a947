#!/usr/bin/env python3
"""Print the ``trtexec`` command lines equivalent to ``build_engines.py`` for every graph.

    python3 jetson/print_trtexec_commands.py --graphs graphs/ --out engines/ --fp16 > build.sh

The min/opt/max shapes come from the same place as the Python build
(:func:`fastsam2.export.trt.profiles.profiles_for` with the same kind, via ``engine_plan``), never
written by hand, so the two stay in sync. Use these commands to inspect or reproduce a build with
NVIDIA's tool (``--verbose``, ``--dumpLayerInfo``, ``--exportProfile``...). Engines that trtexec
writes have no fastsam2 metadata (``<graph>.engine.json``), so the fastsam2 TensorRT backend refuses
them: build the engines you deploy with ``build_engines.py``.

trtexec flags used (TensorRT 10 ``trtexec --help``; TensorRT "Command-Line Programs" reference and
"Migrating trtexec Usage from TensorRT 8.x to 10.x",
https://docs.nvidia.com/deeplearning/tensorrt/latest/reference/command-line-programs.html):

- ``--onnx=F``, ``--saveEngine=F``, ``--skipInference`` (build only; replaces ``--buildOnly``);
- ``--minShapes/--optShapes/--maxShapes=name:AxBxC,...`` for every *dynamic* input (an input of
  fixed shape takes its ONNX shape; the Python build gives it min = opt = max, the same thing);
- ``--memPoolSize=workspace:N`` (N in MiB; TensorRT 10 removed ``--workspace``);
- ``--fp16``; ``--int8 --calib=CACHE`` (trtexec cannot run a calibrator from data: it reads the
  calibration cache that ``build_engines.py --int8`` writes to ``ENGINES/calib/<graph>.cache``);
- ``--timingCacheFile=F`` (read and updated, shared by all graphs, like the Python build);
- ``--precisionConstraints=obey --layerPrecisions=L:fp32,... --layerOutputTypes=L:fp32,...``: the
  layers the Python build pins to FP32 (``DEFAULT_FP32_LAYERS``). The Python build matches those
  patterns against TensorRT's layer names after parsing; here they are matched against the ONNX node
  names, output names and op types (TensorRT's ONNX parser names a layer after its ONNX node), which
  is an approximation: a node that the parser expands into several layers is pinned only in the
  layer that carries the node's name.

Not run here (no TensorRT on this machine): the commands are generated and unit-tested for shape
syntax and coverage only.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Iterable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fastsam2.export.trt.plan import DEFAULT_WORKSPACE_MIB, BuildPlan, GraphPlan, PlanError, make_plan  # noqa: E402

from fastsam2.export.trt.profiles import Profile  # noqa: E402
from fastsam2.runtime.specs import GraphSpec  # noqa: E402

# TensorRT layer types of the "type:..." FP32 patterns -> the ONNX ops the parser turns into them.
ONNX_OPS_FOR_LAYER_TYPE = {
    "NORMALIZATION": ("LayerNormalization", "InstanceNormalization", "GroupNormalization"),
    "SOFTMAX": ("Softmax",),
}


def shape_str(shape: Iterable[int]) -> str:
    """(1, 256, 64, 64) -> "1x256x64x64" (trtexec's shape syntax)."""
    dims = [int(d) for d in shape]
    if not dims:
        raise ValueError("trtexec cannot express a rank-0 shape in --*Shapes")
    return "x".join(str(d) for d in dims)


def dynamic_inputs(spec: GraphSpec) -> list[str]:
    return [t.name for t in spec.inputs if t.dynamic_axes]


def shapes_arg(spec: GraphSpec, profile: Profile, which: str) -> str:
    """``name:AxB,name2:C`` over the spec's dynamic inputs at the profile's ``which`` shapes."""
    shapes = profile.shapes(which)
    missing = [n for n in dynamic_inputs(spec) if n not in shapes]
    if missing:
        raise ValueError(f"{spec.name}: the profile does not cover the dynamic inputs {missing}")
    return ",".join(f"{n}:{shape_str(shapes[n])}" for n in dynamic_inputs(spec))


def onnx_fp32_layers(onnx_path: Path, patterns: Iterable[str]) -> list[tuple[str, int]] | None:
    """(node name, number of outputs) of the ONNX nodes matching the builder's FP32 patterns, or
    None when the onnx package is missing."""
    try:
        import onnx
    except ImportError:
        return None
    from fastsam2.export.trt.builder import compile_patterns, match_fp32_pattern

    compiled = compile_patterns(patterns)
    model = onnx.load(str(onnx_path), load_external_data=False)
    op_to_type = {op: t for t, ops in ONNX_OPS_FOR_LAYER_TYPE.items() for op in ops}
    names = []
    for node in model.graph.node:
        if not node.name:
            continue
        layer_type = op_to_type.get(node.op_type, node.op_type.upper())
        if match_fp32_pattern(node.name, layer_type, list(node.output), compiled) is not None:
            names.append((node.name, len(node.output)))
    # trtexec splits the spec on "," and ":"; a name containing them cannot be expressed.
    return [(n, k) for n, k in names if "," not in n and ":" not in n]


def trtexec_command(
    graph: GraphPlan,
    plan: BuildPlan,
    *,
    trtexec: str = "trtexec",
    fp32_layers: list[tuple[str, int]] | None = None,
) -> list[str]:
    """The argv of one trtexec build. ``fp32_layers``: (layer name, number of outputs) to pin."""
    if len(graph.profiles) != 1:
        raise ValueError(f"{graph.name}: trtexec's --*Shapes express one profile, got {len(graph.profiles)}")
    profile = graph.profiles[0]
    argv = [
        trtexec,
        f"--onnx={graph.onnx_path}",
        f"--saveEngine={graph.engine_path}",
    ]
    if dynamic_inputs(graph.spec):
        argv += [
            f"--minShapes={shapes_arg(graph.spec, profile, 'min')}",
            f"--optShapes={shapes_arg(graph.spec, profile, 'opt')}",
            f"--maxShapes={shapes_arg(graph.spec, profile, 'max')}",
        ]
    argv.append(f"--memPoolSize=workspace:{plan.workspace_mib}")
    argv.append(f"--timingCacheFile={plan.timing_cache}")
    if plan.precision in ("fp16", "int8"):
        argv.append("--fp16")  # int8 also allows fp16, as builder_flag_names does
    if plan.precision == "int8":
        argv += ["--int8", f"--calib={graph.calib_cache}"]
    if plan.precision != "fp32" and fp32_layers:
        entries = fp32_layers
        argv += [
            "--precisionConstraints=obey",
            "--layerPrecisions=" + ",".join(f"{n}:fp32" for n, _ in entries),
            "--layerOutputTypes=" + ",".join(f"{n}:" + "+".join(["fp32"] * int(k)) for n, k in entries),
        ]
    argv.append("--skipInference")
    return argv


def format_command(argv: Sequence[str]) -> str:
    """One shell command, one flag per line."""
    return " \\\n    ".join(shlex.quote(a) for a in argv)


def commands_for(plan: BuildPlan, *, trtexec: str = "trtexec", fp32: bool = True) -> list[tuple[GraphPlan, list[str], str]]:
    """(graph, argv, note) for every graph of ``plan``."""
    from fastsam2.export.trt.builder import DEFAULT_FP32_LAYERS

    out = []
    for g in plan.graphs:
        note = ""
        layers = None
        if fp32 and plan.precision != "fp32":
            layers = onnx_fp32_layers(g.onnx_path, DEFAULT_FP32_LAYERS) if g.onnx_path.is_file() else None
            if layers is None:
                note = "FP32 layer pins omitted (needs the onnx package and the .onnx file)"
        out.append((g, trtexec_command(g, plan, trtexec=trtexec, fp32_layers=layers), note))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--graphs", required=True, metavar="DIR", help="ONNX export directory (manifest.json)")
    p.add_argument("--out", metavar="DIR", help="engine directory (default: --graphs)")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp16", dest="precision", action="store_const", const="fp16", help="FP16 (default)")
    prec.add_argument("--int8", dest="precision", action="store_const", const="int8", help="INT8 (+FP16)")
    prec.add_argument("--fp32", dest="precision", action="store_const", const="fp32", help="FP32 only")
    p.set_defaults(precision="fp16")
    p.add_argument("--workspace", type=int, default=DEFAULT_WORKSPACE_MIB, metavar="MiB")
    p.add_argument("--profile", choices=("edge", "desktop"), default="edge", help="shape profile kind (default edge)")
    p.add_argument("--only", nargs="+", metavar="GRAPH", help="only these graphs")
    p.add_argument("--trtexec", default="trtexec", help="trtexec path (JetPack: /usr/src/tensorrt/bin/trtexec)")
    p.add_argument("--no-fp32-layers", action="store_true", help="do not pin any layer to FP32")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = make_plan(args.graphs, args.out, kind=args.profile, precision=args.precision,
                         workspace_mib=args.workspace, graphs=args.only)
    except PlanError as e:
        print(f"print_trtexec_commands: error: {e}", file=sys.stderr)
        return 1
    print("#!/usr/bin/env bash")
    print(f"# fastsam2 {plan.manifest.config_name}: {plan.precision}, profile {plan.kind}; generated from "
          "fastsam2.export.trt.profiles.profiles_for (do not edit the shapes by hand)")
    print("set -euo pipefail")
    print(f"mkdir -p {shlex.quote(str(plan.out_dir))}")
    for graph, cmd, note in commands_for(plan, trtexec=args.trtexec, fp32=not args.no_fp32_layers):
        print(f"\n# {graph.name}" + (f"  ({note})" if note else ""))
        print(format_command(cmd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
