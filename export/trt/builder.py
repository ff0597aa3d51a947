"""Build a TensorRT engine from one exported ONNX graph.

TensorRT 10 Python API as documented in the TensorRT Python API reference (Builder, IBuilderConfig,
IOptimizationProfile, OnnxParser, ITimingCache, ILayer) and bound in NVIDIA/TensorRT
python/src/infer/pyCore.cpp, pyGraph.cpp, python/src/parsers/pyOnnx.cpp (release/10.x):

- networks are always explicit-batch in TensorRT 10 (``EXPLICIT_BATCH`` is deprecated and ignored),
  so ``create_network(0)``; the network is weakly typed so that FP16 and layer precisions apply;
- ``OnnxParser.parse_from_file`` returns a bool, errors via ``num_errors`` / ``get_error(i)``;
- ``IOptimizationProfile.set_shape`` raises RuntimeError on inconsistent shapes;
  ``IBuilderConfig.add_optimization_profile`` returns the profile index or -1;
- ``IBuilderConfig.set_timing_cache(cache, ignore_mismatch)`` and ``set_calibration_profile`` return
  bools; ``Builder.build_serialized_network`` returns None on failure.

Every boolean return is checked and turned into a :class:`BuildError` naming the graph and the step.
The translation pieces (flags, fp32 layer matching, profiles) take the TensorRT objects as
arguments so they are unit-tested with fakes.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from fastsam2.runtime.specs import GraphSpec

from .calibrator import read_cache, write_atomic
from .compat import check_onnx_for_trt
from .metadata import PRECISIONS, EngineMetadata, metadata_path
from .profiles import Profile, check_profiles_cover
from fastsam2.runtime.errors import UserError

# Kept in FP32 under FP16/INT8: each pattern is a regular expression searched in the layer's name
# and in its output tensor names (the ONNX parser names layers and tensors after the ONNX nodes and
# outputs, e.g. "/memory_attention/layers.0/norm1/ReduceMean"), or "type:<LayerType>" to match a
# TensorRT layer type. Defaults: normalization (LayerNormalization -> NORMALIZATION layer, and the
# ReduceMean/Sub/Pow/Sqrt/Div/Add pieces of SAM2's LayerNorm2d), softmax, and the RoPE angle
# computations (Sin/Cos and the products inside rotary-embedding scopes), whose FP16 rounding
# visibly degrades masks.
DEFAULT_FP32_LAYERS = frozenset({
    "type:NORMALIZATION",
    "type:SOFTMAX",
    r"norm[^/]*/(ReduceMean|Sub|Pow|Sqrt|Div|Add)(_\d+)?(_output_\d+)?$",
    r"(^|/)(Sin|Cos)(_\d+)?(_output_\d+)?$",
    r"(rope|rotary|freqs)[^/]*/.*(Mul|Sin|Cos)(_\d+)?(_output_\d+)?$",
})  # fmt: skip


class BuildError(UserError, RuntimeError):
    """TensorRT could not build the engine; the message names the graph and the failing step."""


@dataclass(frozen=True)
class BuildSource:
    """Where the ONNX graph came from, recorded in the engine metadata."""

    manifest_sha256: str
    config_name: str = ""
    profile_kind: str = "desktop"


# -- pure translation pieces ---------------------------------------------------------------------
def builder_flag_names(precision: str, *, has_fp32_layers: bool, has_calibrator: bool) -> list[str]:
    """Names of the ``trt.BuilderFlag`` members to set for ``precision``.

    INT8 also enables FP16 so layers without INT8 kernels fall back to FP16 rather than FP32.
    Contradictory options are refused, not rewritten.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and not has_calibrator:
        raise ValueError("precision int8 needs a calibrator (record feeds with FeedRecorder first)")
    if precision != "int8" and has_calibrator:
        raise ValueError(f"a calibrator was given but precision is {precision}; use int8 or drop it")
    flags = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}[precision]
    if flags and has_fp32_layers:
        # Without it, TensorRT treats layer precisions as hints and may still pick FP16 kernels.
        flags.append("OBEY_PRECISION_CONSTRAINTS")
    return flags


def compile_patterns(patterns: Iterable[str]) -> list[tuple[str, re.Pattern | None, str | None]]:
    """(pattern, regex or None, layer type name or None) for each pattern; bad regexes are errors."""
    compiled = []
    for p in sorted(patterns):
        if p.startswith("type:"):
            compiled.append((p, None, p[len("type:"):].upper()))
            continue
        try:
            compiled.append((p, re.compile(p), None))
        except re.error as err:
            raise ValueError(f"fp32 layer pattern {p!r} is not a valid regular expression: {err}") from None
    return compiled


def match_fp32_pattern(
    layer_name: str, layer_type: str, output_names: Iterable[str], compiled
) -> str | None:
    """The first pattern matching a layer (by type, name or output tensor name), or None."""
    names = [layer_name, *output_names]
    for pattern, regex, type_name in compiled:
        if type_name is not None:
            if layer_type == type_name:
                return pattern
        elif any(regex.search(n) for n in names if n):
            return pattern
    return None


def pin_fp32_layers(network: Any, patterns: Iterable[str], trt: Any) -> dict[str, str]:
    """Set FP32 precision (and FP32 float outputs) on every layer matching ``patterns``.

    Returns {layer name: matching pattern}. Only float outputs are retyped: index and shape
    tensors keep their integer types.
    """
    compiled = compile_patterns(patterns)
    if not compiled:
        return {}
    floats = (trt.float32, trt.float16)
    pinned = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        pattern = match_fp32_pattern(
            layer.name, layer.type.name, [o.name for o in outputs if o is not None], compiled
        )
        if pattern is None:
            continue
        float_outputs = [j for j, o in enumerate(outputs) if o is not None and o.dtype in floats]
        if not float_outputs:
            continue
        layer.precision = trt.float32
        for j in float_outputs:
            layer.set_output_type(j, trt.float32)
        pinned[layer.name] = pattern
    return pinned


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


def calibration_profile(builder: Any, shapes: dict[str, tuple[int, ...]], graph: str) -> Any:
    """An IOptimizationProfile with min = opt = max = the calibration shapes."""
    trt_profile = builder.create_optimization_profile()
    for name, shape in shapes.items():
        try:
            trt_profile.set_shape(name, shape, shape, shape)
        except RuntimeError as err:
            raise BuildError(f"{graph}: calibration shape {shape} of {name} rejected: {err}") from None
    return trt_profile


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
_LOGGER = None


def trt_logger() -> Any:
    """One process-wide ``trt.Logger`` (TensorRT expects a single logger)."""
    global _LOGGER
    if _LOGGER is None:
        import tensorrt as trt

        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def device_facts() -> tuple[str, str]:
    """(GPU name, "major.minor" compute capability) of the current CUDA device."""
    import torch

    if not torch.cuda.is_available():
        raise BuildError("no CUDA device: TensorRT engines are built and run on the target GPU")
    major, minor = torch.cuda.get_device_capability()
    return torch.cuda.get_device_name(), f"{major}.{minor}"


def build_engine(
    onnx_path: Path,
    spec: GraphSpec,
    profiles: list[Profile],
    *,
    engine_path: Path,
    metadata: BuildSource,
    precision: str = "fp16",
    workspace_mib: int = 2048,
    fp32_layers: Iterable[str] | None = None,
    calibrator: Any = None,
    timing_cache_path: Path | None = None,
    check_compat: bool = True,
) -> EngineMetadata:
    """Build ``engine_path`` from ``onnx_path`` and write ``<engine>.json`` metadata beside it.

    ``fp32_layers``: patterns of layers kept in FP32 under fp16/int8 (default
    :data:`DEFAULT_FP32_LAYERS`; pass ``()`` for none). ``calibrator``: from
    :func:`~.calibrator.make_entropy_calibrator`, required for (and only for) int8.
    ``timing_cache_path``: loaded if present, saved after the build (shared by all graphs).
    Both files are written atomically. Returns the metadata.
    """
    import tensorrt as trt

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    graph = spec.name
    patterns = sorted(DEFAULT_FP32_LAYERS if fp32_layers is None else fp32_layers)
    if precision == "fp32":
        patterns = []
    flag_names = builder_flag_names(
        precision, has_fp32_layers=bool(patterns), has_calibrator=calibrator is not None
    )
    if workspace_mib < 1:
        raise ValueError(f"workspace_mib must be >= 1, got {workspace_mib}")
    check_profiles_cover(spec, profiles)
    if not onnx_path.is_file():
        raise BuildError(f"{graph}: no ONNX file at {onnx_path}")
    if check_compat:
        report = check_onnx_for_trt(onnx_path, spec, profiles)
        if not report.ok:
            raise BuildError(report.format())
    gpu_name, capability = device_facts()

    logger = trt_logger()
    builder = trt.Builder(logger)
    if builder is None:
        raise BuildError(f"{graph}: trt.Builder could not be created (CUDA/TensorRT setup?)")
    network = builder.create_network(0)
    if network is None:
        raise BuildError(f"{graph}: builder.create_network failed")
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(
            f"{graph}: TensorRT's ONNX parser failed on {onnx_path} with {len(errors)} error(s):\n  "
            + "\n  ".join(errors or ["(no parser error recorded; see the TensorRT log above)"])
        )
    check_network_io(network, spec)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    for name in flag_names:
        config.set_flag(getattr(trt.BuilderFlag, name))
    pinned = pin_fp32_layers(network, patterns, trt) if patterns else {}
    add_profiles(builder, network, config, profiles, graph)

    if calibrator is not None:
        config.int8_calibrator = calibrator
        if not config.set_calibration_profile(calibration_profile(builder, calibrator.shapes, graph)):
            raise BuildError(f"{graph}: TensorRT rejected the calibration profile {calibrator.shapes}")

    if timing_cache_path is not None:
        cache = config.create_timing_cache(read_cache(timing_cache_path) or b"")
        if cache is None:
            raise BuildError(f"{graph}: could not create a timing cache from {timing_cache_path}")
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            raise BuildError(
                f"{graph}: timing cache {timing_cache_path} does not match this TensorRT/GPU; "
                "delete it to start a new one"
            )

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if calibrator is not None and getattr(calibrator, "error", None) is not None:
        raise BuildError(f"{graph}: INT8 calibration failed: {calibrator.error}") from calibrator.error
    if serialized is None:
        raise BuildError(f"{graph}: build_serialized_network failed; see the TensorRT log above")
    write_atomic(engine_path, bytes(serialized))

    if timing_cache_path is not None:
        write_atomic(Path(timing_cache_path), bytes(config.get_timing_cache().serialize()))

    build_options: dict[str, Any] = {
        "workspace_mib": workspace_mib,
        "builder_flags": flag_names,
        "fp32_layers": patterns,
        "fp32_layers_matched": len(pinned),
        "obey_precision_constraints": "OBEY_PRECISION_CONSTRAINTS" in flag_names,
        "profile_kind": metadata.profile_kind,
        "timing_cache": str(timing_cache_path) if timing_cache_path is not None else None,
        "build_seconds": round(seconds, 1),
    }
    if calibrator is not None:
        build_options["calibration_shapes"] = {n: list(s) for n, s in calibrator.shapes.items()}
        build_options["calibration_cache"] = str(getattr(calibrator, "cache_path", "") or "")
    meta = EngineMetadata(
        graph=graph,
        precision=precision,
        tensorrt_version=trt.__version__,
        gpu_name=gpu_name,
        compute_capability=capability,
        manifest_sha256=metadata.manifest_sha256,
        profiles=[p.to_json() for p in profiles],
        build_options=build_options,
        config_name=metadata.config_name,
    )
    meta.save(metadata_path(engine_path))
    return meta
