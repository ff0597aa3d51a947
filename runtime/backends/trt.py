"""TensorRT backend: one :class:`TensorRTRunner` per engine, torch CUDA tensors in and out.

The same code runs engines of TensorRT (JetPack 6: 10.3; desktop 10.x/11.x) and TensorRT-RTX 1.x:
the module is found by ``fastsam2.runtime.backends.trt_api.tensorrt_flavor`` and the one difference at run time
(TensorRT-RTX's runtime cache of just-in-time kernels) is in that adapter.

TensorRT 10 API used (TensorRT Python API reference: IExecutionContext, ICudaEngine, Runtime):

- ``Runtime.deserialize_cuda_engine(bytes)`` -> engine or None;
- ``engine.num_io_tensors`` / ``get_tensor_name(i)`` / ``get_tensor_mode(name)`` /
  ``get_tensor_dtype(name)`` / ``get_tensor_profile_shape(name, 0)`` (the profile's min/opt/max);
- per call: ``context.set_input_shape(name, shape)`` -> bool (only when the shape changed),
  ``context.set_tensor_address(name, ptr)`` -> bool, ``context.infer_shapes()`` -> names still
  unspecified, ``context.get_tensor_shape(name)`` for each output, ``execute_async_v3(stream)`` -> bool.

Profile limits are read from the engine at activation: a feed outside them is refused before TensorRT
sees it, with the symbol, the engine's range and what to change; :func:`load_trt_backend` also caps the
tracker's conditioning frames in attention (SAM2's ``max_cond_frames_in_attn``) to what the memory
attention engine's profile holds, and refuses keep ratios below its minimum K.

All buffers are torch CUDA tensors and TensorRT runs on one torch CUDA stream shared by the backend's
runners; the stream waits for the caller's current stream before each run and the caller's stream
waits for it after, so callers need no synchronization of their own.

CUDA graphs (``cuda_graphs=True``): one ``torch.cuda.CUDAGraph`` per input-shape bucket (the tuple of
input shapes), each with its OWN execution context: a captured graph replays the context's kernels
with the shapes and addresses it had at capture, and an execution context holds one set of shapes
(and shape-dependent scratch), so a context shared by buckets would replay bucket A's graph with
bucket B's shapes. The contexts of one runner share one device-memory block (USER_MANAGED
allocation, sized for the profile maximum): they never run concurrently (one stream). Each bucket
owns static input buffers (the feed is copied in) and static outputs. TensorRT requires one
*non-captured* ``enqueueV3`` after input shapes change before a capture (TensorRT developer guide,
"CUDA Graphs"), so the first call of a bucket runs normally and captures, later calls replay.
Pruned token counts change every frame, so capture only pays when the tracker rounds K/M up to a few
buckets; ``max_graphs`` bounds the number kept.

Tests drive this runner on CPU (and, marked ``gpu``, on CUDA) with a STAND-IN engine that runs the
same ONNX graph in ONNX Runtime (``tests/trt_standin.py``): shapes, addresses, profile limits,
buckets and error paths are tested there; TensorRT execution itself is not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from ..encoder_region import RegionEncoder, has_region_graphs
from ..config import ModelConfig
from ..manifest import ExportDir, GraphLoadError
from ..specs import BATCH, MEMORY_ATTENTION, ROUTER, GraphSpec
from .base import MAX_CUDA_GRAPHS, Backend, StageError, StageRunner
from .torch_device import ShapeBuckets

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


def engine_io_problems(engine_io: dict[str, tuple[str, str]], spec: GraphSpec) -> list[str]:
    """Differences between an engine's IO ({name: (mode "input"/"output", dtype)}) and ``spec``."""
    return spec.io_problems(engine_io, "engine")


@dataclass
class _Bucket:
    """Static buffers, the execution context and the captured graph of one input-shape bucket."""

    inputs: dict[str, Any]
    outputs: dict[str, Any]
    context: Any = None
    graph: Any = None


class ProfileLimitError(StageError):
    """A feed is outside the engine's optimization profile (one line: input, axis, range, remedy)."""


# What to change when a dynamic axis is outside the engine's profile.
_REMEDY = {
    "kept_tokens": "keep ratio (--keep)",
    "memory_tokens": "memory frames: fewer conditioning frames in attention (max_cond_frames_in_attn)",
    "object_pointers": "object pointers: fewer conditioning frames in attention (max_cond_frames_in_attn)",
    "num_points": "number of prompt points",
    "batch": "number of objects tracked at once",
}


def profile_problem(spec: GraphSpec, limits: Mapping[str, tuple], shapes: Mapping[str, tuple]) -> str | None:
    """Why ``shapes`` ({input: shape}) is outside ``limits`` ({input: (min, opt, max)}), or None."""
    for t in spec.inputs:
        if t.name not in limits or t.name not in shapes:
            continue
        lo, _, hi = limits[t.name]
        shape = tuple(shapes[t.name])
        for axis, (got, a, b) in enumerate(zip(shape, lo, hi)):
            if a <= got <= b:
                continue
            sym = t.shape[axis] if axis < len(t.shape) else axis
            remedy = _REMEDY.get(sym, "input size") if isinstance(sym, str) else "input size"
            return (
                f"{spec.name}: input {t.name} has {sym} = {got}, outside the engine's profile "
                f"{a}..{b}; change the {remedy}, or rebuild the engines with a profile that covers it "
                "(fastsam2-export --trt --profile desktop)"
            )
    return None


class _CudaGraph:
    """torch.cuda.CUDAGraph capture/replay of one enqueue (what the runner uses on CUDA)."""

    def __init__(self, torch, stream):
        self.torch, self.stream, self.graph = torch, stream, None

    def capture(self, enqueue) -> None:
        self.graph = self.torch.cuda.CUDAGraph()
        with self.torch.cuda.graph(self.graph, stream=self.stream):
            if not enqueue():
                raise RuntimeError("execute_async_v3 returned False during capture")

    def replay(self) -> None:
        self.graph.replay()


class TensorRTRunner(StageRunner):
    """Runs one serialized TensorRT engine. Feeds and outputs are torch CUDA tensors.

    ``expected_manifest_sha256``: the export the engine must come from (checked against the
    ``<engine>.json`` metadata, with the TensorRT version and GPU, before deserializing).
    ``reuse_outputs``: return the runner's cached output buffers (valid until the next call)
    instead of fresh tensors; with CUDA graphs, outputs are otherwise cloned from the static ones.
    ``engine_loader`` / ``graph_factory``: a deserialized-engine provider and a CUDA-graph
    implementation; default TensorRT and torch.cuda.CUDAGraph. Tests pass stand-ins.
    """

    def __init__(
        self,
        spec: GraphSpec,
        engine_path: str | Path,
        *,
        device: str = "cuda",
        stream: Any = None,
        cuda_graphs: bool = False,
        max_graphs: int = MAX_CUDA_GRAPHS,
        reuse_outputs: bool = False,
        expected_manifest_sha256: str | None = None,
        check_metadata: bool = True,
        check_inputs: bool = True,
        engine_loader: Callable[[], Any] | None = None,
        graph_factory: Callable[[Any], Any] | None = None,
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
        self.engine_loader = engine_loader
        self.graph_factory = graph_factory
        self.engine = self.context = self.runtime = None
        self.metadata = None
        self.profile_limits: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}
        self._output_cache: dict[tuple, dict[str, Any]] = {}
        self._buckets: ShapeBuckets[_Bucket] = ShapeBuckets(max_graphs)
        self._device_memory = None
        self._runtime_cache = None

    # -- lifecycle -------------------------------------------------------------------------------
    def activate_impl(self) -> None:
        import torch

        self.torch = torch
        device = torch.device(self.device_name)
        if device.type == "cuda" and device.index is None:
            # Tensors report cuda:0, never bare "cuda": compare against the concrete device.
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self._cuda = device.type == "cuda"
        if self.engine_loader is None:
            if not self._cuda:
                raise StageError(f"{self.spec.name}: TensorRT runs on CUDA devices, not {self.device}")
            self.engine = self._load_engine()
        else:
            self.engine = self.engine_loader()
        io = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            mode = "input" if self.engine.get_tensor_mode(name).name == "INPUT" else "output"
            dtype = self.engine.get_tensor_dtype(name).name
            io[name] = (mode, TRT_DTYPES.get(dtype, dtype))
        problems = engine_io_problems(io, self.spec)
        if problems:
            raise StageError(f"{self.spec.name}: engine {self.engine_path} does not match the spec: " + "; ".join(problems))
        self.profile_limits = {
            t.name: tuple(tuple(int(d) for d in s) for s in self.engine.get_tensor_profile_shape(t.name, 0))
            for t in self.spec.inputs
        }
        self.context = self._new_context()
        if self._cuda and self.stream is None:
            self.stream = torch.cuda.Stream(self.device)

    def _load_engine(self) -> Any:
        torch = self.torch
        from .trt_api import tensorrt_flavor
        from .trt_metadata import EngineMetadata, check_engine_metadata, metadata_path

        flavor = tensorrt_flavor()
        self.flavor = flavor
        if not self.engine_path.is_file():
            raise StageError(f"{self.spec.name}: no engine at {self.engine_path}")
        if self.check_metadata:
            # Before deserializing: a stale engine gets a one-line rebuild hint, not a TRT error.
            self.metadata = EngineMetadata.load(metadata_path(self.engine_path))
            major, minor = torch.cuda.get_device_capability(self.device)
            check_engine_metadata(
                self.metadata,
                tensorrt_version=flavor.version,
                gpu_name=torch.cuda.get_device_name(self.device),
                compute_capability=f"{major}.{minor}",
                manifest_sha256=self.expected_manifest_sha256,
                tensorrt_flavor=flavor.name,
            )
        with torch.cuda.device(self.device):
            self.runtime = flavor.trt.Runtime(flavor.logger())
            engine = self.runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if engine is None:
            raise StageError(
                f"{self.spec.name}: {flavor.label} could not deserialize {self.engine_path}; "
                "see the TensorRT log above (built by another TensorRT version?)"
            )
        return engine

    def _new_context(self) -> Any:
        """An execution context; on real engines with CUDA graphs, all of a runner's contexts share
        one device-memory block (they run one at a time on the runner's stream)."""
        flavor = getattr(self, "flavor", None)
        if flavor is None:  # a stand-in engine
            context = self.engine.create_execution_context()
        elif self.cuda_graphs:
            trt = flavor.trt
            context = self.engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            if context is not None:
                if self._device_memory is None:
                    size = int(self.engine.device_memory_size_v2)
                    self._device_memory = self.torch.empty(max(size, 1), dtype=self.torch.uint8, device=self.device)
                context.set_device_memory(self._device_memory.data_ptr(), self._device_memory.numel())
        else:
            cache_path = self.engine_path.with_name(self.engine_path.name + ".runtime_cache")
            context, self._runtime_cache = flavor.create_context(self.engine, cache_path)
        if context is None:
            raise StageError(f"{self.spec.name}: could not create an execution context (GPU memory?)")
        return context

    def deactivate_impl(self) -> None:
        self._buckets.clear()
        self._output_cache.clear()
        self._device_memory = None
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
        problem = profile_problem(self.spec, self.profile_limits, {n: tuple(t.shape) for n, t in inputs.items()})
        if problem:
            raise ProfileLimitError(problem)
        key = tuple(tuple(inputs[n].shape) for n in self.spec.input_names)
        if not self._cuda:
            if self.cuda_graphs and not self._buckets.eager(key):
                return self._run_graph(key, inputs)
            return self._run(self.context, inputs, self._outputs_for(self.context, key, inputs))
        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            if self.cuda_graphs and not self._buckets.eager(key):
                outputs = self._run_graph(key, inputs)
            else:
                outputs = self._run(self.context, inputs, self._outputs_for(self.context, key, inputs))
        caller.wait_stream(self.stream)
        for t in (*inputs.values(), *outputs.values()):
            t.record_stream(self.stream)  # the caching allocator must not recycle them early
        return outputs

    @property
    def _stream_handle(self) -> int:
        return self.stream.cuda_stream if self._cuda else 0

    def _set_inputs(self, context: Any, inputs: dict[str, Any]) -> None:
        for name, t in inputs.items():
            shape = tuple(t.shape)
            if tuple(context.get_tensor_shape(name)) != shape:
                if not context.set_input_shape(name, shape):
                    lo, _, hi = self.profile_limits.get(name, ((), (), ()))
                    raise StageError(
                        f"{self.spec.name}: TensorRT rejected shape {shape} for input {name} "
                        f"(profile min {list(lo)}, max {list(hi)})"
                    )
            if not context.set_tensor_address(name, t.data_ptr()):
                raise StageError(f"{self.spec.name}: set_tensor_address failed for input {name}")
        unresolved = context.infer_shapes()
        if unresolved:
            raise StageError(f"{self.spec.name}: TensorRT could not infer shapes; unspecified: {list(unresolved)}")

    def _outputs_for(self, context: Any, key: tuple, inputs: dict[str, Any], *, cache: bool = True) -> dict[str, Any]:
        """Set ``inputs`` on ``context``; output buffers for this input-shape key (cached when
        reuse_outputs)."""
        self._set_inputs(context, inputs)
        if cache and self.reuse_outputs and key in self._output_cache:
            return self._output_cache[key]
        outputs = {}
        for t in self.spec.outputs:
            shape = tuple(context.get_tensor_shape(t.name))
            if any(d < 0 for d in shape):
                raise StageError(f"{self.spec.name}: output {t.name} shape {shape} unresolved after setting inputs")
            outputs[t.name] = self.torch.empty(shape, dtype=getattr(self.torch, t.dtype), device=self.device)
        if cache and self.reuse_outputs:
            self._output_cache[key] = outputs
        return outputs

    def _run(self, context: Any, inputs: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
        for name, t in outputs.items():
            if not context.set_tensor_address(name, t.data_ptr()):
                raise StageError(f"{self.spec.name}: set_tensor_address failed for output {name}")
        if not context.execute_async_v3(self._stream_handle):
            raise StageError(f"{self.spec.name}: execute_async_v3 failed; see the TensorRT log above")
        return outputs

    def _run_graph(self, key: tuple, inputs: dict[str, Any]) -> dict[str, Any]:
        bucket = self._buckets.get(key)
        if bucket is None:
            # The bucket's own context: its shapes and addresses stay those of the capture.
            context = self._new_context()
            static_in = {n: t.clone() for n, t in inputs.items()}
            static_out = self._outputs_for(context, key, static_in, cache=False)
            # The non-captured run TensorRT needs after a shape change; it also answers this call.
            self._run(context, static_in, static_out)
            factory = self.graph_factory or (lambda runner: _CudaGraph(runner.torch, runner.stream))
            graph = factory(self)
            try:
                graph.capture(lambda: context.execute_async_v3(self._stream_handle))
            except RuntimeError:
                # Some engines cannot be captured; that shape keeps running without a graph.
                graph = None
            bucket = _Bucket(static_in, static_out, context, graph)
            self._buckets.add(key, bucket if graph is not None else None)
            return self._finish(bucket.outputs)
        for name, t in inputs.items():
            bucket.inputs[name].copy_(t, non_blocking=True)
        bucket.graph.replay()
        return self._finish(bucket.outputs)

    @property
    def contexts(self) -> list[Any]:
        """The execution contexts in use: the runner's own and one per captured bucket."""
        return [self.context, *(b.context for b in self._buckets.values())]

    def _finish(self, outputs: dict[str, Any]) -> dict[str, Any]:
        if self.reuse_outputs:
            return outputs
        return {n: t.clone() for n, t in outputs.items()}


# -- backend -----------------------------------------------------------------------------------------
def tracker_limits(config: ModelConfig, runners: Mapping[str, "TensorRTRunner"]) -> tuple[ModelConfig, dict[str, Any]]:
    """The config the tracker must run with to stay inside the engines' profiles, and the limits.

    Memory attention's profile maximum of memory tokens M and object pointers P bounds the frames it
    can attend to: (num_maskmem - 1) recent frames plus c conditioning frames of up to H*W tokens, and
    c + max_obj_ptrs_in_encoder - 1 pointers. SAM2's ``max_cond_frames_in_attn`` is capped to that c
    (SAM2 then attends to the temporally closest conditioning frames, as its predictor does); the
    minimum K of memory attention's profile is the lowest keep ratio the engines take.
    """
    limits: dict[str, Any] = {}
    ma = runners.get(MEMORY_ATTENTION)
    if ma is None or not ma.profile_limits:
        return config, limits
    hw = config.num_tokens
    m_max = ma.profile_limits["memory"][2][1]
    p_max = ma.profile_limits["obj_ptrs"][2][1]
    k_min = ma.profile_limits["kept_idx"][0][1]
    cond = min(m_max // hw - (config.num_maskmem - 1), p_max - config.max_obj_ptrs_in_encoder + 1)
    if cond < 2:  # SAM2's selection of conditioning frames needs two (or all: -1)
        raise StageError(
            f"memory_attention engine's profile holds {m_max} memory tokens and {p_max} object pointers: "
            f"fewer than 2 conditioning frames besides {config.num_maskmem - 1} recent frames; rebuild it "
            "(fastsam2-export --trt --profile desktop)"
        )
    limits["max_cond_frames_in_attn"] = cond
    limits["min_keep_ratio"] = k_min / hw
    # rows per call (objects, or images): the smallest batch maximum of the engines' profiles
    limits["max_batch"] = min(
        r.profile_limits[t.name][2][0]
        for r in runners.values() if r.profile_limits
        for t in r.spec.inputs if t.shape and t.shape[0] == BATCH
    )
    current = config.max_cond_frames_in_attn
    if current == -1 or current > cond:
        # The tracker's selection keeps the closest frames; with one frame it keeps the prompted one.
        config = replace(config, max_cond_frames_in_attn=cond)
    return config, limits


def load_trt_backend(engine_dir: str | Path, *, device: str = "cuda", cuda_graphs: bool = False) -> Backend:
    """A :class:`Backend` over ``engine_dir/<graph>.engine`` for every graph in the manifest.

    ``engine_dir`` is an export directory (:class:`~fastsam2.runtime.manifest.ExportDir`: manifest,
    constants, specs) with ``<graph>.engine`` beside the ONNX graphs. Each engine's metadata must match
    this TensorRT, this GPU and this manifest (sha256 of manifest.json's bytes). The config is capped
    to the engines' profiles (:func:`tracker_limits`).
    """
    import torch

    engine_dir = Path(engine_dir)
    export = ExportDir.open(engine_dir)  # the manifest, checked against this fastsam2's specs and version
    config = export.config
    sha = export.manifest_sha256()
    stream = torch.cuda.Stream(torch.device(device))
    runners = {}
    for name, entry in export.manifest.graphs.items():
        path = engine_dir / f"{name}.engine"
        if name == ROUTER and not path.is_file():
            continue  # engines built without the router: tracking works at keep_ratio 1.0 only
        if not path.is_file():
            raise GraphLoadError(
                f"{path} not found; build the engines with "
                f"`fastsam2-export --config {config.config_name} --out {engine_dir} --trt ...`"
            )
        runners[name] = TensorRTRunner(
            entry.spec, path, device=device, stream=stream, cuda_graphs=cuda_graphs, expected_manifest_sha256=sha
        )
    backend = backend_from_runners(runners, config, export.constants(), device=device,
                                   description=f"TensorRT {device}" + (" cuda-graphs" if cuda_graphs else ""))
    backend.weights = export.manifest.weights
    backend.router_weights = export.manifest.router_weights if ROUTER in runners else None
    return backend


def backend_from_runners(
    runners: dict[str, "TensorRTRunner"], config: ModelConfig, constants: dict[str, Any], *, device: str,
    description: str,
) -> Backend:
    """Activate ``runners`` (failing at load time, not at the first frame) and make the Backend, its
    config capped to the engines' profiles. Its ops preprocess frames on ``device``
    (:class:`~fastsam2.runtime.backends.torch_device.DeviceTorchOps`)."""
    from .torch_device import DeviceTorchOps

    for runner in runners.values():
        runner.activate()
    config, limits = tracker_limits(config, runners)
    flavor = next((getattr(r, "flavor", None) for r in runners.values()), None)
    label = flavor.label if flavor is not None else "TensorRT"
    ops = DeviceTorchOps(device)
    return Backend(
        name="tensorrt",
        runners=runners,
        ops=ops,
        config=config,
        constants=constants,
        description=description.replace("TensorRT", label, 1),
        limits=limits,
        region_encoder=RegionEncoder(runners, ops, config) if has_region_graphs(runners) else None,
    )
