"""Build a strongly typed TensorRT (or TensorRT-RTX) engine from one exported ONNX graph.

TensorRT 10 Python API (TensorRT Python API reference; the same calls in TensorRT-RTX 1.x), through the
one adapter :mod:`.api` for what differs between the two:

- the network is created ``STRONGLY_TYPED``: every layer computes in the types of the ONNX graph, so
  precision is decided by the graph (:mod:`.precision` writes FP16 graphs, :mod:`fastsam2.calibration.qdq` QDQ INT8
  graphs); no ``BuilderFlag.FP16/INT8``, ``layer.precision`` or calibrator (removed in TensorRT 11);
- ``OnnxParser.parse_from_file`` returns a bool, errors via ``num_errors`` / ``get_error(i)``;
- ``IOptimizationProfile.set_shape`` raises RuntimeError on inconsistent shapes;
  ``IBuilderConfig.add_optimization_profile`` returns the profile index or -1;
- TF32 (on by default in TensorRT) is cleared unless asked for: fp32 means FP32;
- ``Builder.build_serialized_network`` returns None on failure.

Every boolean return is checked and turned into a :class:`BuildError` naming the graph and the step.

Workspace: by default none is set, i.e. TensorRT's own default (the device's memory; 64 GiB in a
TensorRT-RTX build without a GPU). TensorRT fuses memory attention into one kernel region whose
scratch, at the profile maximum, holds one cross-attention score matrix and its softmax
(2 x 4 bytes x K 4096 x (M 40960 + 4 P 19) = 1282 MiB on the desktop profile, 1026 MiB on edge) and
counts it against the workspace pool: a 1024 MiB cap makes that build fail with "OutOfMemory
(Requested size was ... bytes)" (TensorRT reports the limit plus the weights).
The build report records the limit, TensorRT's "Total Activation Memory" and the largest tensor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastsam2.runtime.specs import GraphSpec

from fastsam2.runtime.outdir import write_bytes_atomic

from .compat import check_onnx_for_trt
from fastsam2.runtime.backends.trt_metadata import PRECISIONS, EngineMetadata, metadata_path
from fastsam2.runtime.backends.trt_profiles import Profile, check_profiles_cover
from fastsam2.runtime.errors import UserError


class BuildError(UserError, RuntimeError):
    """TensorRT could not build the engine; the message names the graph and the failing step."""


@dataclass(frozen=True)
class BuildSource:
    """Where the ONNX graph came from, recorded in the engine metadata."""

    manifest_sha256: str
    config_name: str = ""
    profile_kind: str = "desktop"


# -- pure pieces -----------------------------------------------------------------------------------

def read_timing_cache(path: Path | None) -> bytes | None:
    """A timing cache's bytes, or None when there is none (no path, a missing or an empty file)."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    return path.read_bytes()

def layer_precisions(network: Any, trt: Any) -> dict[str, Any]:
    """What a strongly typed network computes in, read from its layers before the build.

    Returns {"layers": [(name, type, [output dtype names], fed_by_int8, fed_by_fp8)], "counts":
    {dtype: layers whose first float output has it}}. A layer is "fed by INT8" (FP8) when one of its
    inputs is the output of a DEQUANTIZE layer whose own input is INT8 (FP8): an explicit-quantization
    QDQ pair.
    """
    producers = {}
    layers = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            out = layer.get_output(j)
            if out is not None:
                producers[out.name] = layer
    counts: dict[str, int] = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        dtypes = [o.dtype.name for o in outs if o is not None]
        fed: set[str] = set()
        for j in range(layer.num_inputs):
            t = layer.get_input(j)
            p = producers.get(t.name) if t is not None else None
            if p is not None and p.type.name == "DEQUANTIZE" and p.get_input(0) is not None:
                fed.add(p.get_input(0).dtype.name)
        layers.append((layer.name, layer.type.name, dtypes, "INT8" in fed, "FP8" in fed))
        first_float = next((d for d in dtypes if d in ("FLOAT", "HALF", "BF16")), None)
        if first_float:
            counts[first_float] = counts.get(first_float, 0) + 1
    return {"layers": layers, "counts": counts}


def precision_summary(info: dict[str, Any]) -> dict[str, Any]:
    """Counts for the build report: float layers by output type, and INT8- / FP8-fed conv/matmul layers."""
    compute = [l for l in info["layers"] if l[1] in ("CONVOLUTION", "MATRIX_MULTIPLY", "DECONVOLUTION")]
    return {
        "float_layers": dict(info["counts"]),
        "compute_layers": len(compute),
        "compute_layers_int8": sum(1 for l in compute if l[3]),
        "compute_layers_fp8": sum(1 for l in compute if l[4]),
        "compute_layers_fp16": sum(1 for l in compute if "HALF" in l[2]),
    }


def largest_activation(onnx_path: Path, profile: Profile) -> dict[str, Any] | None:
    """The largest intermediate tensor of the graph at the profile's max shapes, by ONNX shape
    inference: {"name", "shape", "mib"}, or None when no intermediate shape could be inferred."""
    import numpy as np
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    maxima = profile.shapes("max")
    for i in model.graph.input:
        if i.name in maxima:
            for dim, v in zip(i.type.tensor_type.shape.dim, maxima[i.name]):
                dim.Clear()
                dim.dim_value = int(v)
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    size = {1: 4, 10: 2, 7: 8, 6: 4, 9: 1, 3: 1, 2: 1, 11: 8, 16: 2}
    best = None
    for vi in model.graph.value_info:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        if not dims or None in dims:
            continue
        nbytes = int(np.prod(dims)) * size.get(vi.type.tensor_type.elem_type, 4)
        if best is None or nbytes > best[0]:
            best = (nbytes, vi.name, dims)
    if best is None:
        return None
    return {"name": best[1], "shape": best[2], "mib": round(best[0] / 2**20, 1)}


def add_profiles(builder: Any, network: Any, config: Any, profiles: list[Profile], graph: str) -> None:
    """Translate each :class:`Profile` into an ``IOptimizationProfile`` on ``config``."""
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    for index, profile in enumerate(profiles):
        unknown = [n for n in profile if n not in inputs]
        missing = [n for n in inputs if n not in profile]
        if unknown or missing:
            raise BuildError(
                f"{graph}: profile {index} does not match the network inputs {inputs}: "
                f"unknown {unknown}, missing {missing}"
            )
        trt_profile = builder.create_optimization_profile()
        for name in inputs:
            shapes = profile[name]
            try:
                trt_profile.set_shape(name, shapes.min, shapes.opt, shapes.max)
            except RuntimeError as err:
                raise BuildError(
                    f"{graph}: profile {index} input {name}: TensorRT rejected min {shapes.min}, "
                    f"opt {shapes.opt}, max {shapes.max}: {err}"
                ) from None
        if config.add_optimization_profile(trt_profile) < 0:
            raise BuildError(f"{graph}: TensorRT rejected optimization profile {index}: {profile}")


def check_network_io(network: Any, spec: GraphSpec) -> None:
    """Network input/output names must be the spec's (the parser takes them from the ONNX graph)."""
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    problems = []
    for kind, got, want in (("inputs", inputs, spec.input_names), ("outputs", outputs, spec.output_names)):
        if sorted(got) != sorted(want):
            problems.append(f"network {kind} {got}, spec {kind} {want}")
    if problems:
        raise BuildError(f"{spec.name}: " + "; ".join(problems))




# -- TensorRT --------------------------------------------------------------------------------------
def parse_network(onnx_path: Path, graph: str) -> tuple[Any, Any, Any, Any]:
    """(flavor, builder, network, parser) with ``onnx_path`` parsed into a strongly typed network.
    The parser is returned because the network refers to weights it owns."""
    from fastsam2.runtime.backends.trt_api import tensorrt_flavor

    flavor = tensorrt_flavor()
    trt, logger = flavor.trt, flavor.logger()
    builder = trt.Builder(logger)
    if builder is None:
        raise BuildError(f"{graph}: trt.Builder could not be created (CUDA/TensorRT setup?)")
    network = flavor.strongly_typed_network(builder)
    if network is None:
        raise BuildError(f"{graph}: builder.create_network(STRONGLY_TYPED) failed")
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(
            f"{graph}: {flavor.label}'s ONNX parser failed on {onnx_path} with {len(errors)} error(s):\n  "
            + "\n  ".join(errors or ["(no parser error recorded; see the TensorRT log above)"])
        )
    return flavor, builder, network, parser


def build_engine(
    onnx_path: Path,
    spec: GraphSpec,
    profiles: list[Profile],
    *,
    engine_path: Path,
    metadata: BuildSource,
    precision: str = "fp32",
    workspace_mib: int | None = None,
    tf32: bool = False,
    targets: tuple[str, ...] | None = None,
    timing_cache_path: Path | None = None,
    check_compat: bool = True,
    precision_report: dict[str, Any] | None = None,
) -> EngineMetadata:
    """Build ``engine_path`` from ``onnx_path`` (already in ``precision``: an fp32, fp16 or QDQ INT8
    graph) and write ``<engine>.json`` metadata beside it. Both files are written atomically.

    ``workspace_mib``: None keeps TensorRT's default. ``tf32``: allow TF32 in FP32 layers.
    ``targets``: TensorRT-RTX compute capabilities (default: its portable set).
    ``timing_cache_path``: TensorRT only; loaded if present, saved after the build.
    ``precision_report``: what the graph conversion kept in FP32 / quantized (stored in the metadata).
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    graph = spec.name
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if workspace_mib is not None and workspace_mib < 1:
        raise ValueError(f"workspace_mib must be >= 1, got {workspace_mib}")
    check_profiles_cover(spec, profiles)
    if not onnx_path.is_file():
        raise BuildError(f"{graph}: no ONNX file at {onnx_path}")
    if check_compat:
        report = check_onnx_for_trt(onnx_path, spec, profiles)
        if not report.ok:
            raise BuildError(report.format())

    flavor, builder, network, parser = parse_network(onnx_path, graph)
    trt, logger = flavor.trt, flavor.logger()
    check_network_io(network, spec)
    layers = layer_precisions(network, trt)

    config = builder.create_builder_config()
    if workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    workspace_bytes = int(config.get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE))
    flavor.set_tf32(config, tf32)
    try:
        built_for = flavor.build_targets(config, targets)
    except RuntimeError as err:
        raise BuildError(f"{graph}: {err}") from None
    add_profiles(builder, network, config, profiles, graph)

    use_timing_cache = timing_cache_path is not None and flavor.uses_timing_cache
    if use_timing_cache:
        cache = config.create_timing_cache(read_timing_cache(timing_cache_path) or b"")
        if cache is None:
            raise BuildError(f"{graph}: could not create a timing cache from {timing_cache_path}")
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            raise BuildError(
                f"{graph}: timing cache {timing_cache_path} does not match this TensorRT/GPU; "
                "delete it to start a new one"
            )

    logger.clear()
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        errors = logger.errors()
        why = errors[-1] if errors else "see the TensorRT log above"
        hint = ""
        if any("OutOfMemory" in e for e in errors):
            hint = (f"; the workspace limit ({workspace_bytes >> 20} MiB) is below what this graph needs "
                    "at the profile maximum: raise --workspace or leave it unset")
        raise BuildError(f"{graph}: build_serialized_network failed: {why}{hint}")
    write_bytes_atomic(engine_path, bytes(serialized))
    if use_timing_cache:
        write_bytes_atomic(Path(timing_cache_path), bytes(config.get_timing_cache().serialize()))

    try:
        largest = largest_activation(onnx_path, profiles[0])
    except Exception as err:  # a report field: never fail a finished build over it
        largest = {"error": f"{type(err).__name__}: {err}"}
    build_options: dict[str, Any] = {
        "strongly_typed": True,
        "workspace_mib": workspace_mib,
        "workspace_limit_bytes": workspace_bytes,
        "activation_bytes": logger.activation_bytes(),
        "largest_activation": largest,
        "tf32": tf32,
        "layer_precisions": precision_summary(layers),
        "graph_conversion": precision_report or {},
        "onnx_file": onnx_path.name,
        "profile_kind": metadata.profile_kind,
        "timing_cache": str(timing_cache_path) if use_timing_cache else None,
        "build_seconds": round(seconds, 1),
    }
    if flavor.needs_gpu_to_build:
        from fastsam2.runtime.backends.trt_api import current_gpu

        gpu_name, capability = current_gpu()
    else:
        gpu_name, capability = "", ",".join(built_for)
    meta = EngineMetadata(
        graph=graph,
        precision=precision,
        tensorrt_version=flavor.version,
        gpu_name=gpu_name,
        compute_capability=capability,
        manifest_sha256=metadata.manifest_sha256,
        profiles=[p.to_json() for p in profiles],
        build_options=build_options,
        config_name=metadata.config_name,
        tensorrt_flavor=flavor.name,
    )
    meta.save(metadata_path(engine_path))
    return meta
