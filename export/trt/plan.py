"""What to build for each graph of an export: ONNX in, engine out, optimization profile, precision.

Shared by ``fastsam2-export --trt``, ``jetson/build_engines.py`` (both build through
:func:`build_all`) and ``jetson/print_trtexec_commands.py`` (prints the equivalent ``trtexec``
lines), so that all read the shapes from the same place: :func:`fastsam2.runtime.backends.trt_profiles.profiles_for` over the graph specs
recorded in the export's ``manifest.json``. Nothing here imports TensorRT, torch or onnxruntime.

Engine directory layout (what :func:`fastsam2.runtime.backends.trt.load_trt_backend` reads)::

    ENGINES/manifest.json        byte-identical copy of the export's (engine metadata hashes it)
    ENGINES/constants.npz        copy of the export's loop constants
    ENGINES/<graph>.engine       serialized engine
    ENGINES/<graph>.engine.json  engine metadata (TensorRT version, GPU, profile, build options)
    ENGINES/jetson_build.json    profile kind and the tracker limits the edge profile implies
    ENGINES/timing.cache         TensorRT timing cache shared by all graphs (not TensorRT-RTX)
    ENGINES/<graph>.fp16.onnx    the mixed-precision graph an fp16 engine is built from
    ENGINES/<graph>.int8.onnx    the QDQ INT8 + FP16 graph an int8 engine is built from (also runs in ONNX Runtime)
    ENGINES/<graph>.fp8.onnx     the same in FP8 E4M3, for the image encoder graphs of an fp8 build
    ENGINES/precision.json       per graph: FP32 nodes kept, INT8/FP8 accuracy vs fp32, precision kept
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from fastsam2.runtime.backends.trt_profiles import KINDS, Profile, profiles_for, symbol_ranges
from fastsam2.runtime.manifest import CONSTANTS_NAME, MANIFEST_NAME, Manifest
from fastsam2.runtime.specs import GraphSpec
from fastsam2.runtime.errors import UserError

PRECISIONS = ("fp32", "fp16", "int8", "fp8")
QUANTIZED = ("int8", "fp8")  # precisions built from QDQ graphs calibrated on recorded feeds
BUILD_INFO = "jetson_build.json"
TIMING_CACHE = "timing.cache"
PRECISION_REPORT = "precision.json"
# None: TensorRT's default pool limit (the device's memory). A 1024 MiB cap makes memory attention fail
# on both profiles (its fused attention scratch is 1122 MiB on edge, 1394 MiB on desktop in FP32;
# see builder.py); --workspace still caps it.
DEFAULT_WORKSPACE_MIB = None


class PlanError(UserError, ValueError):
    """The export directory or the options cannot make a build plan (one-line message)."""


@dataclass(frozen=True)
class GraphPlan:
    """One engine to build."""

    name: str
    spec: GraphSpec
    onnx_path: Path
    engine_path: Path
    profiles: list[Profile]
    build_onnx: Path  # the graph the engine is built from: onnx_path (fp32) or <graph>.<precision>.onnx


@dataclass(frozen=True)
class BuildPlan:
    graphs_dir: Path
    out_dir: Path
    manifest: Manifest
    kind: str
    precision: str
    workspace_mib: int | None
    timing_cache: Path
    graphs: list[GraphPlan]
    max_batch: int = 1

    def build_info(self) -> dict:
        """What the tracker must know about these engines (written to ``jetson_build.json``)."""
        limits = symbol_ranges(self.manifest.model_config, kind=self.kind, max_batch=self.max_batch)
        return {
            "config_name": self.manifest.config_name,
            "profile_kind": self.kind,
            "precision": self.precision,
            "graphs": [g.name for g in self.graphs],
            # The edge profile sizes memory attention for this many conditioning frames: the tracker
            # must not attend to more (TrackerOptions.max_cond_frames_in_attn).
            "max_cond_frames_in_attn": limits.max_cond_frames,
            "max_memory_frames": limits.max_memory_frames,
            "min_keep_ratio": limits.ranges["kept_tokens"][0] / self.manifest.model_config.num_tokens,
            # objects (and camera streams) one engine call takes: the tracker batches up to this many
            "max_batch": self.max_batch,
        }


def make_plan(
    graphs_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    kind: str = "edge",
    precision: str = "fp16",
    workspace_mib: int | None = DEFAULT_WORKSPACE_MIB,
    graphs: Sequence[str] | None = None,
    max_batch: int = 1,
) -> BuildPlan:
    """The build plan for every graph of the export in ``graphs_dir`` (or only ``graphs``);
    ``max_batch``: the batch maximum of every profile (objects or streams per engine call)."""
    graphs_dir = Path(graphs_dir)
    out_dir = Path(out_dir) if out_dir is not None else graphs_dir
    if kind not in KINDS:
        raise PlanError(f"profile kind must be one of {KINDS}, got {kind!r}")
    if precision not in PRECISIONS:
        raise PlanError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if workspace_mib is not None and workspace_mib < 1:
        raise PlanError(f"workspace must be >= 1 MiB, got {workspace_mib}")
    if max_batch < 1:
        raise PlanError(f"max batch must be >= 1, got {max_batch}")
    if not (graphs_dir / MANIFEST_NAME).is_file():
        raise PlanError(f"no {MANIFEST_NAME} in {graphs_dir}: export the ONNX graphs first (fastsam2-export)")
    manifest = Manifest.read(graphs_dir)
    names = list(graphs) if graphs else list(manifest.graphs)
    unknown = [n for n in names if n not in manifest.graphs]
    if unknown:
        raise PlanError(f"graphs {unknown} are not in {graphs_dir / MANIFEST_NAME} (it has {list(manifest.graphs)})")
    from .precision import quantizes

    plans = []
    for name in names:
        entry = manifest.graphs[name]
        plans.append(
            GraphPlan(
                name=name,
                spec=entry.spec,
                onnx_path=graphs_dir / entry.file,
                engine_path=out_dir / f"{name}.engine",
                profiles=profiles_for(entry.spec, manifest.model_config, kind=kind, max_batch=max_batch),
                build_onnx=(graphs_dir / entry.file if precision == "fp32"
                            else out_dir / f"{name}.{precision if quantizes(precision, name) else 'fp16'}.onnx"),
            )
        )
    return BuildPlan(
        graphs_dir=graphs_dir,
        out_dir=out_dir,
        manifest=manifest,
        kind=kind,
        precision=precision,
        workspace_mib=workspace_mib,
        timing_cache=out_dir / TIMING_CACHE,
        graphs=plans,
        max_batch=max_batch,
    )


def write_build_info(plan: BuildPlan) -> Path:
    path = plan.out_dir / BUILD_INFO
    path.write_text(json.dumps(plan.build_info(), indent=2) + "\n")
    return path


def read_build_info(engine_dir: str | Path) -> dict | None:
    """``jetson_build.json`` of an engine directory, or None when it has none."""
    path = Path(engine_dir) / BUILD_INFO
    return json.loads(path.read_text()) if path.is_file() else None


def copy_export_files(plan: BuildPlan) -> None:
    """manifest.json and constants.npz beside the engines (byte-identical: metadata hashes them)."""
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST_NAME, CONSTANTS_NAME):
        src, dst = plan.graphs_dir / name, plan.out_dir / name
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)


def check_calib_dir(plan: BuildPlan, calib_dir: Path, *, hint: str) -> None:
    """Every graph the build quantizes needs recorded feeds: refuse before the first (slow) build.
    ``hint``: what the caller's user can do about it, in the caller's own options."""
    from .precision import quantizes

    missing = [g.name for g in plan.graphs if quantizes(plan.precision, g.name)
               and not any((calib_dir / g.name).glob("[0-9]*.npz"))]
    if missing:
        raise PlanError(
            f"no recorded feeds for {missing} in {calib_dir} (expected <graph>/*.npz from "
            f"fastsam2.calibration.reader.FeedRecorder): {hint}"
        )


def prepare_graph(g: GraphPlan, precision: str, calib_dir: Path | None, log=print) -> tuple[str, Path, dict]:
    """Write the graph ``g``'s engine is built from; returns (precision kept, ONNX path, report).

    fp16: :func:`~.precision.to_fp16`. int8: :func:`~fastsam2.calibration.qdq.quantize_qdq` on the
    recorded feeds, its unquantized layers then put in FP16 (:func:`~.precision.to_qdq_fp16`), then
    :func:`~fastsam2.calibration.qdq.accuracy_check` of that graph against fp32; a graph over the threshold falls back to
    its fp16 graph (and is reported so). fp8: the same in FP8 for the image encoder
    (:data:`~.precision.FP8_GRAPHS`). A graph the precision does not quantize
    (:func:`~.precision.quantizes`) is fp16."""
    if precision == "fp32":
        return "fp32", g.onnx_path, {}
    from .precision import quantizes, to_fp16

    fp16_path = g.engine_path.with_name(f"{g.name}.fp16.onnx")
    report = {"fp16": to_fp16(g.onnx_path, fp16_path).to_json()}
    if not quantizes(precision, g.name):
        return "fp16", fp16_path, report
    from fastsam2.calibration.reader import DirectoryCalibrationReader

    from fastsam2.calibration.qdq import accuracy_check, quantize_qdq

    reader = DirectoryCalibrationReader(calib_dir, g.name)
    from .precision import to_qdq_fp16

    qdq_path = g.engine_path.with_name(f"{g.name}.qdq_fp32.onnx")
    q = quantize_qdq(g.onnx_path, qdq_path, reader, fmt=precision)
    try:
        converted = to_qdq_fp16(qdq_path, g.build_onnx)
        # the declared FP32 set by name: what a FLOAT compute layer of the engine must belong to
        report[f"{precision}_fp16"] = {**converted.to_json(), "fp32_set": sorted(set().union(*converted.fp32.values()))}
    finally:
        qdq_path.unlink(missing_ok=True)
    q = accuracy_check(g.onnx_path, g.build_onnx, reader, q, fallback="fp16")
    report[precision] = q.to_json()
    log(f"[{g.name}] {precision.upper()}: {q.quantized_nodes} conv/matmul quantized, {q.calibration_feeds} feeds, "
        f"max relative error vs fp32 {q.max_rel_error:.4f} (threshold {q.threshold}) -> {q.kept}")
    if q.kept == precision:
        return precision, g.build_onnx, report
    return "fp16", fp16_path, report


def build_all(
    plan: BuildPlan,
    *,
    calib_dir: Path | None,
    check_compat: bool = True,
    tf32: bool = False,
    targets: tuple[str, ...] | None = None,
    log=print,
) -> list:
    """Build every engine of ``plan``; returns the EngineMetadata of each. Writes ``precision.json``."""
    from fastsam2.export.trt.builder import BuildSource, build_engine
    from fastsam2.runtime.manifest import file_sha256

    if plan.precision in QUANTIZED and calib_dir is None:
        raise PlanError(f"{plan.precision} needs recorded calibration feeds (--calib)")
    copy_export_files(plan)
    source = BuildSource(
        manifest_sha256=file_sha256(plan.graphs_dir / MANIFEST_NAME),
        config_name=plan.manifest.config_name,
        profile_kind=plan.kind,
    )
    metas = []
    reports = {}
    for g in plan.graphs:
        kept, onnx_path, report = prepare_graph(g, plan.precision, calib_dir, log=log)
        log(f"[{g.name}] building {kept} engine (profile {plan.kind}) from {onnx_path} ...")
        meta = build_engine(
            onnx_path,
            g.spec,
            g.profiles,
            engine_path=g.engine_path,
            metadata=source,
            precision=kept,
            workspace_mib=plan.workspace_mib,
            tf32=tf32,
            targets=targets,
            timing_cache_path=plan.timing_cache,
            check_compat=check_compat,
            precision_report=report,
        )
        bo = meta.build_options
        lp = bo["layer_precisions"]
        reports[g.name] = {"precision": kept, **report, "engine_layers": lp,
                           "engine_mib": round(g.engine_path.stat().st_size / 2**20, 1),
                           "build_seconds": bo["build_seconds"]}
        act = bo.get("activation_bytes")
        largest = bo.get("largest_activation") or {}
        log(f"[{g.name}] wrote {g.engine_path} ({reports[g.name]['engine_mib']} MiB, {bo['build_seconds']} s; "
            f"float layers {lp['float_layers']}, INT8 conv/matmul {lp['compute_layers_int8']}/{lp['compute_layers']}, "
            f"FP8 {lp['compute_layers_fp8']}; "
            f"workspace limit {bo['workspace_limit_bytes'] >> 20} MiB, activations "
            f"{'?' if act is None else act >> 20} MiB, largest tensor {largest.get('name')} "
            f"{largest.get('shape')} {largest.get('mib')} MiB)")
        metas.append(meta)
    info = write_build_info(plan)
    from fastsam2.runtime.outdir import write_bytes_atomic

    write_bytes_atomic(plan.out_dir / PRECISION_REPORT, (json.dumps(reports, indent=2) + "\n").encode())
    if metas:
        m = metas[0]
        where = m.gpu_name or f"compute capabilities {m.compute_capability}"
        log(f"wrote {info}; {m.tensorrt_flavor} {m.tensorrt_version}, for {where}")
    return metas
