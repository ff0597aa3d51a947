#!/usr/bin/env python3
"""Print the ``trtexec`` command lines equivalent to ``build_engines.py`` for every graph.

    python3 jetson/print_trtexec_commands.py --graphs graphs/ --out engines/ --fp16 > build.sh

The min/opt/max shapes come from the same place as the Python build
(:func:`fastsam2.runtime.backends.trt_profiles.profiles_for` with the same kind, via ``engine_plan``), never
written by hand, so the two stay in sync. Use these commands to inspect or reproduce a build with
NVIDIA's tool (``--verbose``, ``--dumpLayerInfo``, ``--exportProfile``...). Engines that trtexec
writes have no fastsam2 metadata (``<graph>.engine.json``), so the fastsam2 TensorRT backend refuses
them: build the engines you deploy with ``build_engines.py``.

trtexec flags used (TensorRT 10 ``trtexec --help``; TensorRT "Command-Line Programs" reference,
https://docs.nvidia.com/deeplearning/tensorrt/latest/reference/command-line-programs.html):

- ``--onnx=F``, ``--saveEngine=F``, ``--skipInference`` (build only; replaces ``--buildOnly``);
- ``--stronglyTyped``: precision comes from the graph, as in the Python build. fp16 and int8 builds
  read ``ENGINES/<graph>.fp16.onnx`` / ``<graph>.int8.onnx`` (mixed-precision and QDQ graphs written
  by ``fastsam2-export --trt`` / ``build_engines.py``); there is no ``--fp16``/``--int8``/``--calib``
  (weak typing and implicit calibration are deprecated since TensorRT 10.12 and gone in 11);
- ``--minShapes/--optShapes/--maxShapes=name:AxBxC,...`` for every *dynamic* input (an input of
  fixed shape takes its ONNX shape; the Python build gives it min = opt = max, the same thing);
- ``--memPoolSize=workspace:N`` (N in MiB) only when a workspace limit is given;
- ``--noTF32`` for fp32 builds (the Python build clears TF32 too);
- ``--timingCacheFile=F`` (read and updated, shared by all graphs, like the Python build).

Never run through trtexec: the commands are generated and unit-tested for shape
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

from fastsam2.runtime.backends.trt_profiles import Profile  # noqa: E402
from fastsam2.runtime.specs import GraphSpec  # noqa: E402
from fastsam2.runtime.args import ArgumentParser, cli_main  # noqa: E402

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


def trtexec_command(graph: GraphPlan, plan: BuildPlan, *, trtexec: str = "trtexec") -> list[str]:
    """The argv of one strongly typed trtexec build of ``graph.build_onnx``."""
    if len(graph.profiles) != 1:
        raise ValueError(f"{graph.name}: trtexec's --*Shapes express one profile, got {len(graph.profiles)}")
    profile = graph.profiles[0]
    argv = [
        trtexec,
        f"--onnx={graph.build_onnx}",
        f"--saveEngine={graph.engine_path}",
        "--stronglyTyped",
    ]
    if dynamic_inputs(graph.spec):
        argv += [
            f"--minShapes={shapes_arg(graph.spec, profile, 'min')}",
            f"--optShapes={shapes_arg(graph.spec, profile, 'opt')}",
            f"--maxShapes={shapes_arg(graph.spec, profile, 'max')}",
        ]
    if plan.workspace_mib is not None:
        argv.append(f"--memPoolSize=workspace:{plan.workspace_mib}")
    if plan.precision == "fp32":
        argv.append("--noTF32")
    argv.append(f"--timingCacheFile={plan.timing_cache}")
    argv.append("--skipInference")
    return argv


def format_command(argv: Sequence[str]) -> str:
    """One shell command, one flag per line."""
    return " \\\n    ".join(shlex.quote(a) for a in argv)


def commands_for(plan: BuildPlan, *, trtexec: str = "trtexec") -> list[tuple[GraphPlan, list[str], str]]:
    """(graph, argv, note) for every graph of ``plan``; the note says when the fp16/int8 graph a
    command reads has not been written yet."""
    out = []
    for g in plan.graphs:
        note = ""
        if plan.precision != "fp32" and not g.build_onnx.is_file():
            note = (f"{g.build_onnx.name} not written yet: run build_engines.py or fastsam2-export --trt "
                    f"--{plan.precision} first")
        out.append((g, trtexec_command(g, plan, trtexec=trtexec), note))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="print_trtexec_commands", description=__doc__.split("\n\n")[0])
    p.add_argument("--graphs", required=True, metavar="DIR", help="ONNX export directory (manifest.json)")
    p.add_argument("--out", metavar="DIR", help="engine directory (default: --graphs)")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp16", dest="precision", action="store_const", const="fp16", help="FP16 (default)")
    prec.add_argument("--int8", dest="precision", action="store_const", const="int8", help="INT8 (QDQ graph)")
    prec.add_argument("--fp32", dest="precision", action="store_const", const="fp32", help="FP32 only")
    p.set_defaults(precision="fp16")
    p.add_argument("--workspace", type=int, default=DEFAULT_WORKSPACE_MIB, metavar="MiB",
                   help="workspace limit (default: TensorRT's)")
    p.add_argument("--profile", choices=("edge", "desktop"), default="edge", help="shape profile kind (default edge)")
    p.add_argument("--only", nargs="+", metavar="GRAPH", help="only these graphs")
    p.add_argument("--trtexec", default="trtexec", help="trtexec path (JetPack: /usr/src/tensorrt/bin/trtexec)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main("print_trtexec_commands", build_parser(), argv, run=run)


def run(args: argparse.Namespace) -> int:
    plan = make_plan(args.graphs, args.out, kind=args.profile, precision=args.precision,
                     workspace_mib=args.workspace, graphs=args.only)
    print("#!/usr/bin/env bash")
    print(f"# fastsam2 {plan.manifest.config_name}: {plan.precision}, profile {plan.kind}; generated from "
          "fastsam2.runtime.backends.trt_profiles.profiles_for (do not edit the shapes by hand)")
    print("set -euo pipefail")
    print(f"mkdir -p {shlex.quote(str(plan.out_dir))}")
    for graph, cmd, note in commands_for(plan, trtexec=args.trtexec):
        print(f"\n# {graph.name}" + (f"  ({note})" if note else ""))
        print(format_command(cmd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
