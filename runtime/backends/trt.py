"""TensorRT backend: one :class:`TensorRTRunner` per engine, torch CUDA tensors in and out.

TensorRT 10 API used (TensorRT Python API reference: IExecutionContext, ICudaEngine, Runtime; bound in
NVIDIA/TensorRT python/src/infer/pyCore.cpp, release/10.x):

- ``Runtime.deserialize_cuda_engine(bytes)`` -> engine or None;
- ``engine.num_io_tensors`` / ``get_tensor_name(i)`` / ``get_tensor_mode(name)`` /
  ``get_tensor_dtype(name)``;
- per call: ``context.set_input_shape(name, shape)`` -> bool (only when the shape changed),
  ``context.set_tensor_address(name, ptr)`` -> bool, ``context.infer_shapes()`` -> names still
  unspecified, ``context.get_tensor_shape(name)`` for each output, ``execute_async_v3(stream)`` -> bool.

All buffers are torch CUDA tensors and TensorRT runs on one torch CUDA stream shared by the backend's
runners; the stream waits for the caller's current stream before each run and the caller's stream
waits for it after, so callers need no synchronization of their own.

CUDA graphs (``cuda_graphs=True``): one ``torch.cuda.CUDAGraph`` per input-shape bucket (the tuple of
input shapes). A captured graph replays fixed addresses, so each bucket owns static input buffers
(the feed is copied in) and static outputs. TensorRT requires one *non-captured* ``enqueueV3`` after
input shapes change before a capture (TensorRT developer guide, "CUDA Graphs": the first enqueue
after a shape change may do deferred work that cannot be captured), so the first call of a bucket
runs normally and captures, later calls replay. Pruned token counts change every frame, so capture
only pays when the tracker rounds K/M up to a few buckets; ``max_graphs`` bounds the number kept.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..config import ModelConfig
from ..specs import ROUTER, GraphSpec, graph_specs
from .base import Backend, StageError, StageRunner

# trt.DataType member names -> numpy/torch dtype names.
TRT_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT32": "int32",
    "INT64": "int64",
    "INT8": "int8",
    "UINT8": "uint8",
    "BOOL": "bool",
}


def manifest_sha256(path: Path) -> str:
    """sha256 of an export's manifest.json bytes (what engine metadata records)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def engine_io_problems(engine_io: dict[str, tuple[str, str]], spec: GraphSpec) -> list[str]:
    """Differences between an engine's IO ({name: (mode "input"/"output", dtype)}) and ``spec``."""
    problems = []
    for mode, tensors in (("input", spec.inputs), ("output", spec.outputs)):
        want = {t.name: t.dtype for t in tensors}
        got = {n: d for n, (m, d) in engine_io.items() if m == mode}
        missing = [n for n in want if n not in got]
        extra = [n for n in got if n not in want]
        if missing:
            problems.append(f"engine lacks {mode}s {missing}")
        if extra:
            problems.append(f"engine has {mode}s {extra} that the spec does not declare")
        for name in want:
            if name in got and got[name] != want[name]:
                problems.append(f"{mode} {name} is {got[name]} in the engine, {want[name]} in the spec")
    return problems


@dataclass
class _Bucket:
    """Static buffers and the captured graph of one input-shape bucket."""

    inputs: dict[str, Any]
    outputs: dict[str, Any]
    graph: Any = None


class TensorRTRunner(StageRunner):
    """Runs one serialized TensorRT engine. Feeds and outputs are torch CUDA tensors.

    ``expected_manifest_sha256``: the export the engine must come from (checked against the
    ``<engine>.json`` metadata, with the TensorRT version and GPU, before deserializing).
    ``reuse_outputs``: return the runner's cached output buffers (valid until the next call)
    instead of fresh tensors; with CUDA graphs, outputs are otherwise cloned from the static ones.
    """

    def __init__(
        self,
        spec: GraphSpec,
        engine_path: str | Path,
        *,
        device: str = "cuda",
        stream: Any = None,
        cuda_graphs: bool = False,
        max_graphs: int = 16,
        reuse_outputs: bool = False,
        expected_manifest_sha256: str | None = None,
        check_metadata: bool = True,
        check_inputs: bool = True,
    ):
        super().__init__(spec, check_inputs=check_inputs)
        self.engine_path = Path(engine_path)
        self.device_name = device
        self.stream = stream
        self.cuda_graphs = cuda_graphs
        self.max_graphs = max_graphs
        self.reuse_outputs = reuse_outputs
        self.expected_manifest_sha256 = expected_manifest_sha256
        self.check_metadata = check_metadata
        self.engine = self.context = self.runtime = None
        self.metadata = None
        self._output_cache: dict[tuple, dict[str, Any]] = {}
        self._buckets: dict[tuple, _Bucket] = {}
        self._uncapturable: set[tuple] = set()

    # -- lifecycle -------------------------------------------------------------------------------
    def activate_impl(self) -> None:
        import tensorrt as trt
        import torch

        from fastsam2.export.trt.builder import trt_logger
        from fastsam2.export.trt.metadata import EngineMetadata, check_engine_metadata, metadata_path

        self.torch = torch
        self.device = torch.device(self.device_name)
        if self.device.type != "cuda":
            raise StageError(f"{self.spec.name}: TensorRT runs on CUDA devices, not {self.device}")
        if not self.engine_path.is_file():
            raise StageError(f"{self.spec.name}: no engine at {self.engine_path}")
        if self.check_metadata:
            # Before deserializing: a stale engine gets a one-line rebuild hint, not a TRT error.
            self.metadata = EngineMetadata.load(metadata_path(self.engine_path))
            major, minor = torch.cuda.get_device_capability(self.device)
            check_engine_metadata(
                self.metadata,
                tensorrt_version=trt.__version__,
                gpu_name=torch.cuda.get_device_name(self.device),
                compute_capability=f"{major}.{minor}",
                manifest_sha256=self.expected_manifest_sha256,
            )
        with torch.cuda.device(self.device):
            self.runtime = trt.Runtime(trt_logger())
            self.engine = self.runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if self.engine is None:
                raise StageError(
                    f"{self.spec.name}: TensorRT could not deserialize {self.engine_path}; "
                    "see the TensorRT log above (built by another TensorRT version?)"
                )
            io = {}
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                mode = "input" if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
                dtype = self.engine.get_tensor_dtype(name).name
                io[name] = (mode, TRT_DTYPES.get(dtype, dtype))
            problems = engine_io_problems(io, self.spec)
            if problems:
                raise StageError(f"{self.spec.name}: engine {self.engine_path} does not match the spec: " + "; ".join(problems))
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise StageError(f"{self.spec.name}: could not create an execution context (GPU memory?)")
            if self.stream is None:
                self.stream = torch.cuda.Stream(self.device)

    def deactivate_impl(self) -> None:
        self._buckets.clear()
        self._output_cache.clear()
        self.context = self.engine = self.runtime = None

    # -- inference -------------------------------------------------------------------------------
    def infer_impl(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        torch = self.torch
        inputs = {}
        for name in self.spec.input_names:
            t = feed[name]
            if not isinstance(t, torch.Tensor) or t.device != self.device:
                where = t.device if isinstance(t, torch.Tensor) else type(t).__name__
                raise StageError(f"{self.spec.name}: input {name} must be a torch tensor on {self.device}, got {where}")
            inputs[name] = t.contiguous()
        key = tuple(tuple(inputs[n].shape) for n in self.spec.input_names)
        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            if self.cuda_graphs and key not in self._uncapturable:
                outputs = self._run_graph(key, inputs)
            else:
                outputs = self._run(key, inputs, self._outputs_for(key, inputs))
        caller.wait_stream(self.stream)
        for t in (*inputs.values(), *outputs.values()):
            t.record_stream(self.stream)  # the caching allocator must not recycle them early
        return outputs

    def _set_inputs(self, inputs: dict[str, Any]) -> None:
        for name, t in inputs.items():
            shape = tuple(t.shape)
            if tuple(self.context.get_tensor_shape(name)) != shape:
                if not self.context.set_input_shape(name, shape):
                    ranges = ""
                    if self.metadata is not None and self.metadata.profiles:
                        p = self.metadata.profiles[0].get(name)
                        ranges = f" (profile min {p['min']}, max {p['max']})" if p else ""
                    raise StageError(
                        f"{self.spec.name}: TensorRT rejected shape {shape} for input {name}{ranges}"
                    )
            if not self.context.set_tensor_address(name, t.data_ptr()):
                raise StageError(f"{self.spec.name}: set_tensor_address failed for input {name}")
        unresolved = self.context.infer_shapes()
        if unresolved:
            raise StageError(f"{self.spec.name}: TensorRT could not infer shapes; unspecified: {list(unresolved)}")

    def _outputs_for(self, key: tuple, inputs: dict[str, Any]) -> dict[str, Any]:
        """Output buffers for this input-shape key (cached when reuse_outputs)."""
        if self.reuse_outputs and key in self._output_cache:
            self._set_inputs(inputs)
            return self._output_cache[key]
        self._set_inputs(inputs)
        outputs = {}
        for t in self.spec.outputs:
            shape = tuple(self.context.get_tensor_shape(t.name))
            if any(d < 0 for d in shape):
                raise StageError(f"{self.spec.name}: output {t.name} shape {shape} unresolved after setting inputs")
            outputs[t.name] = self.torch.empty(shape, dtype=getattr(self.torch, t.dtype), device=self.device)
        if self.reuse_outputs:
            self._output_cache[key] = outputs
        return outputs

    def _run(self, key: tuple, inputs: dict[str, Any], outputs: dict[str, Any], *, inputs_set: bool = True) -> dict[str, Any]:
        if not inputs_set:
            self._set_inputs(inputs)
        for name, t in outputs.items():
            if not self.context.set_tensor_address(name, t.data_ptr()):
                raise StageError(f"{self.spec.name}: set_tensor_address failed for output {name}")
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise StageError(f"{self.spec.name}: execute_async_v3 failed; see the TensorRT log above")
        return outputs

    def _run_graph(self, key: tuple, inputs: dict[str, Any]) -> dict[str, Any]:
        torch = self.torch
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_graphs:
                self._uncapturable.add(key)  # over budget: this shape runs without a graph
                return self._run(key, inputs, self._outputs_for(key, inputs))
            static_in = {n: t.clone() for n, t in inputs.items()}
            # Reuse off: fresh outputs; the bucket's own static outputs are allocated here.
            saved, self.reuse_outputs = self.reuse_outputs, False
            try:
                static_out = self._outputs_for(key, static_in)
            finally:
                self.reuse_outputs = saved
            # The non-captured run TensorRT needs after a shape change; it also answers this call.
            self._run(key, static_in, static_out)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph, stream=self.stream):
                    ok = self.context.execute_async_v3(self.stream.cuda_stream)
                if not ok:
                    raise RuntimeError("execute_async_v3 returned False during capture")
            except RuntimeError:
                # Some engines cannot be captured; that shape keeps running without a graph.
                self._uncapturable.add(key)
                graph = None
            bucket = _Bucket(static_in, static_out, graph)
            if graph is not None:
                self._buckets[key] = bucket
            return self._finish(bucket.outputs)
        for name, t in inputs.items():
            bucket.inputs[name].copy_(t, non_blocking=True)
        bucket.graph.replay()
        return self._finish(bucket.outputs)

    def _finish(self, outputs: dict[str, Any]) -> dict[str, Any]:
        if self.reuse_outputs:
            return outputs
        return {n: t.clone() for n, t in outputs.items()}


# -- backend -----------------------------------------------------------------------------------------
def load_trt_backend(engine_dir: str | Path, *, device: str = "cuda", cuda_graphs: bool = False) -> Backend:
    """A :class:`Backend` over ``engine_dir/<graph>.engine`` for every graph in the manifest.

    ``engine_dir/manifest.json`` gives the model config (key "model_config") and optionally
    "text_dim"; ``constants.npz`` beside it the loop constants. Each engine's metadata must match
    this TensorRT, this GPU and this manifest (sha256 of manifest.json's bytes).
    """
    import torch

    from .torch_ops import TorchOps

    engine_dir = Path(engine_dir)
    manifest_path = engine_dir / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found: is {engine_dir} a fastsam2 export directory?")
    manifest = json.loads(manifest_path.read_text())
    if "model_config" not in manifest:
        raise ValueError(f"{manifest_path} has no 'model_config'")
    config = ModelConfig.from_json(manifest["model_config"])
    constants_path = engine_dir / "constants.npz"
    constants = {}
    if constants_path.is_file():
        with np.load(constants_path, allow_pickle=False) as data:
            constants = {k: data[k] for k in data.files}
    specs = graph_specs(config.spec_dims(text_dim=int(manifest.get("text_dim", 512))))
    sha = manifest_sha256(manifest_path)
    stream = torch.cuda.Stream(torch.device(device))
    runners = {}
    for name, spec in specs.items():
        path = engine_dir / f"{name}.engine"
        if name == ROUTER and not path.is_file():
            continue  # an export without router: tracking works at keep_ratio 1.0 only
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found; build the engines with "
                f"`fastsam2-export --config {config.config_name} --out {engine_dir} --trt ...`"
            )
        runners[name] = TensorRTRunner(
            spec, path, device=device, stream=stream, cuda_graphs=cuda_graphs, expected_manifest_sha256=sha
        )
    for runner in runners.values():
        runner.activate()  # fail at load time, not at the first frame
    ops = TorchOps(device)
    return Backend(
        name="tensorrt",
        runners=runners,
        ops=ops,
        config=config,
        constants=constants,
        description=f"TensorRT {device}" + (" cuda-graphs" if cuda_graphs else ""),
    )


# -- engine vs ONNX check ------------------------------------------------------------------------------
# Float inputs that are flags (0/1) rather than data.
_FLAG_INPUTS = {"has_mask_input", "binarize", "multimask_output"}
POINT_LABELS = (-1, 0, 1, 2, 3)


def dummy_feed(spec: GraphSpec, shapes: Mapping[str, tuple[int, ...]], config: ModelConfig, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid random inputs for ``spec`` at ``shapes`` (e.g. a profile's opt shapes).

    Index inputs stay in range: kept_idx sorted unique < H*W, memory_pos_idx < H*W,
    memory_tpos_idx < num_maskmem, point_labels in {-1,0,1,2,3}; point coordinates inside the
    image; flags in {0,1}. An integer input without a rule is an error, so a new spec gets one.
    """
    rng = np.random.default_rng(seed)
    hw = config.num_tokens
    feed = {}
    for t in spec.inputs:
        shape = tuple(shapes[t.name])
        if t.name == "kept_idx":
            if shape[0] > hw:
                raise ValueError(f"kept_idx length {shape[0]} exceeds the {hw} grid tokens")
            value = np.sort(rng.choice(hw, size=shape[0], replace=False))
        elif t.name == "memory_pos_idx":
            value = rng.integers(0, hw, size=shape)
        elif t.name == "memory_tpos_idx":
            value = rng.integers(0, config.num_maskmem, size=shape)
        elif t.name == "point_labels":
            value = rng.choice(POINT_LABELS, size=shape)
        elif t.name == "point_coords":
            value = rng.uniform(0, config.image_size, size=shape)
        elif t.name in _FLAG_INPUTS:
            value = rng.integers(0, 2, size=shape)
        elif t.name == "obj_ptr_tpos":
            value = rng.uniform(-1, 1, size=shape)
        elif t.dtype.startswith("float"):
            value = rng.standard_normal(size=shape)
        else:
            raise ValueError(f"{spec.name}: no dummy-input rule for integer input {t.name!r}")
        feed[t.name] = np.ascontiguousarray(value.astype(t.dtype))
    return feed


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
        rows.append(CheckRow(graph, name, bool(res), float(res.max_absdiff), float(res.mean_absdiff), atol.get(name, atol.get(""))))
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

    from fastsam2.export.trt.metadata import EngineMetadata, metadata_path

    engine_dir, onnx_dir = Path(engine_dir), Path(onnx_dir)
    manifest_path = next((d / "manifest.json" for d in (engine_dir, onnx_dir) if (d / "manifest.json").is_file()), None)
    if manifest_path is None:
        raise FileNotFoundError(f"no manifest.json in {engine_dir} or {onnx_dir}")
    manifest = json.loads(manifest_path.read_text())
    config = ModelConfig.from_json(manifest["model_config"])
    specs = graph_specs(config.spec_dims(text_dim=int(manifest.get("text_dim", 512))))
    rows: list[CheckRow] = []
    for name, spec in specs.items():
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
        feed = dummy_feed(spec, profiles[0].shapes("opt"), config)
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
