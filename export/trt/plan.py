"""What to build for each graph of an export: ONNX in, engine out, optimization profile, precision.

Shared by ``fastsam2-export --trt``, ``jetson/build_engines.py`` (both build through
:func:`build_all`) and ``jetson/print_trtexec_commands.py`` (prints the equivalent ``trtexec``
lines), so that all read the shapes from the same place: :func:`fastsam2.export.trt.profiles.profiles_for` over the graph specs
recorded in the export's ``manifest.json``. Nothing here imports TensorRT, torch or onnxruntime.

Engine directory layout (what :func:`fastsam2.runtime.backends.trt.load_trt_backend` reads)::

    ENGINES/manifest.json        byte-identical copy of the export's (engine metadata hashes it)
    ENGINES/constants.npz        copy of the export's loop constants
    ENGINES/<graph>.engine       serialized engine
    ENGINES/<graph>.engine.json  engine metadata (TensorRT version, GPU, profile, build options)
    ENGINES/jetson_build.json    profile kind and the tracker limits the edge profile implies
    ENGINES/timing.cache         TensorRT timing cache shared by all graphs
    ENGINES/calib/<graph>.cache  INT8 calibration caches (int8 builds only)
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from fastsam2.export.trt.profiles import KINDS, Profile, profiles_for, symbol_ranges
from fastsam2.runtime.manifest import CONSTANTS_NAME, MANIFEST_NAME, Manifest
from fastsam2.runtime.specs import GraphSpec
from fastsam2.runtime.errors import UserError

PRECISIONS = ("fp32", "fp16", "int8")
BUILD_INFO = "jetson_build.json"
TIMING_CACHE = "timing.cache"
CALIB_CACHE_DIR = "calib"
DEFAULT_WORKSPACE_MIB = 1024  # Orin Nano 8 GB shares this with the CPU; AGX Orin can take more


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
    calib_cache: Path | None  # INT8 calibration cache (written by the Python build, read by trtexec)


@dataclass(frozen=True)
class BuildPlan:
    graphs_dir: Path
    out_dir: Path
    manifest: Manifest
    kind: str
    precision: str
    workspace_mib: int
    timing_cache: Path
    graphs: list[GraphPlan]

    def build_info(self) -> dict:
        """What the tracker must know about these engines (written to ``jetson_build.json``)."""
        limits = symbol_ranges(self.manifest.model_config, kind=self.kind)
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
        }


def make_plan(
    graphs_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    kind: str = "edge",
    precision: str = "fp16",
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    graphs: Sequence[str] | None = None,
) -> BuildPlan:
    """The build plan for every graph of the export in ``graphs_dir`` (or only ``graphs``)."""
    graphs_dir = Path(graphs_dir)
    out_dir = Path(out_dir) if out_dir is not None else graphs_dir
    if kind not in KINDS:
        raise PlanError(f"profile kind must be one of {KINDS}, got {kind!r}")
    if precision not in PRECISIONS:
        raise PlanError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if workspace_mib < 1:
        raise PlanError(f"workspace must be >= 1 MiB, got {workspace_mib}")
    if not (graphs_dir / MANIFEST_NAME).is_file():
        raise PlanError(f"no {MANIFEST_NAME} in {graphs_dir}: export the ONNX graphs first (fastsam2-export)")
    manifest = Manifest.read(graphs_dir)
    names = list(graphs) if graphs else list(manifest.graphs)
    unknown = [n for n in names if n not in manifest.graphs]
    if unknown:
        raise PlanError(f"graphs {unknown} are not in {graphs_dir / MANIFEST_NAME} (it has {list(manifest.graphs)})")
    plans = []
    for name in names:
        entry = manifest.graphs[name]
        plans.append(
            GraphPlan(
                name=name,
                spec=entry.spec,
                onnx_path=graphs_dir / entry.file,
                engine_path=out_dir / f"{name}.engine",
                profiles=profiles_for(entry.spec, manifest.model_config, kind=kind),
                calib_cache=out_dir / CALIB_CACHE_DIR / f"{name}.cache" if precision == "int8" else None,
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
