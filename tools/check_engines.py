"""``fastsam2 check-engines DIR``: compare each TensorRT engine with its ONNX twin (polygraphy) and
print a pass/fail table. Runs on the user's machine, where TensorRT is installed; polygraphy and
TensorRT are imported inside the functions that drive them."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from fastsam2.runtime.args import positive
from fastsam2.runtime.manifest import ExportDir
from fastsam2.runtime.specs import GraphSpec


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


# -- engine vs ONNX check ------------------------------------------------------------------------------
POINT_LABELS = (-1, 0, 1, 2, 3)


def dummy_feed(spec: GraphSpec, shapes: Mapping[str, tuple[int, ...]], *, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid random inputs for ``spec`` at ``shapes`` (e.g. a profile's opt shapes):
    :meth:`GraphSpec.sample`, with the values every spec declares."""
    return spec.sample(rng=np.random.default_rng(seed), shapes=dict(shapes))


@dataclass
class CheckRow:
    """One output of one graph compared between an engine and its ONNX twin."""

    graph: str
    output: str
    passed: bool
    max_abs: float | None = None
    mean_abs: float | None = None
    atol: float | None = None
    note: str = ""


def compare_runners(graph: str, runners: list[Any], feed: dict[str, np.ndarray], atol: dict[str, float]) -> list[CheckRow]:
    """Run two polygraphy runners on ``feed`` and compare every output with per-output ``atol``."""
    from polygraphy.comparator import Comparator

    try:
        from polygraphy.comparator import SimpleCompareFunc
    except ImportError:  # polygraphy < 0.53
        from polygraphy.comparator import CompareFunc

        SimpleCompareFunc = CompareFunc.simple
    results = Comparator.run(runners, data_loader=[feed])
    (_, first), (_, second) = list(results.items())
    compare = SimpleCompareFunc(atol=dict(atol), rtol=0.0, check_shapes=True)
    outcome = compare(first[0], second[0])
    rows = []
    for name, res in outcome.items():
        tol = atol.get(name, atol.get(""))
        if isinstance(res, bool):
            # polygraphy returns a bare bool when it could not compare values (shape mismatch)
            rows.append(CheckRow(graph, name, res, atol=tol, note="" if res else "shapes differ: values not compared"))
            continue
        rows.append(CheckRow(graph, name, bool(res), float(res.max_absdiff), float(res.mean_absdiff), tol))
    for name in atol:
        if name and name not in outcome:
            rows.append(CheckRow(graph, name, False, note="output missing from the comparison"))
    return rows


def check_engines(engine_dir: str | Path, onnx_dir: str | Path, *, atol_scale: float = 1.0) -> list[CheckRow]:
    """Compare each ``engine_dir/<graph>.engine`` with ``onnx_dir/<graph>.onnx`` (ONNX Runtime, CPU)
    on valid dummy inputs at the engine's profile opt shapes; tolerances are the spec's ``atol``
    times ``atol_scale`` (FP16 engines usually need a larger scale)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    from fastsam2.runtime.backends.trt_metadata import EngineMetadata, metadata_path

    engine_dir, onnx_dir = Path(engine_dir), Path(onnx_dir)
    export = ExportDir.open(engine_dir if (engine_dir / "manifest.json").is_file() else onnx_dir)
    rows: list[CheckRow] = []
    for name, entry in export.manifest.graphs.items():
        spec = entry.spec
        engine_path, onnx_path = engine_dir / f"{name}.engine", onnx_dir / f"{name}.onnx"
        missing = [str(p) for p in (engine_path, onnx_path) if not p.is_file()]
        if missing:
            rows.append(CheckRow(name, "*", False, note=f"missing {missing}"))
            continue
        meta = EngineMetadata.load(metadata_path(engine_path))
        profiles = meta.profile_objects()
        if not profiles:
            rows.append(CheckRow(name, "*", False, note="engine metadata has no profile"))
            continue
        feed = dummy_feed(spec, profiles[0].shapes("opt"))
        atol = {out: tol * atol_scale for out, tol in spec.atol.items()}
        runners = [
            TrtRunner(EngineFromBytes(engine_path.read_bytes()), name=f"trt-{name}"),
            OnnxrtRunner(SessionFromOnnx(str(onnx_path), providers=["CPUExecutionProvider"]), name=f"ort-{name}"),
        ]
        rows.extend(compare_runners(name, runners, feed, atol))
    return rows


def format_check_table(rows: list[CheckRow]) -> str:
    """A fixed-width pass/fail table, one line per output, and a summary line."""
    header = ("graph", "output", "result", "max |diff|", "mean |diff|", "atol", "note")

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.3g}"

    body = [
        (r.graph, r.output, "PASS" if r.passed else "FAIL", num(r.max_abs), num(r.mean_abs), num(r.atol), r.note)
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in (header, *body)) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in (header, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failed = sum(not r.passed for r in rows)
    lines.append(f"{len(rows) - failed}/{len(rows)} outputs pass" + (f", {failed} FAIL" if failed else ""))
    return "\n".join(lines)
