"""ONNX Runtime backend: one :class:`OrtStageRunner` per exported graph, numpy arrays in and out.

Loads an export directory (``manifest.json``, ``constants.npz``, ``<graph>.onnx``) without torch or
sam2: this is the runtime a CPU box or a Jetson without TensorRT gets.

    backend = load_ort_backend("out/tiny", expect_config="tiny")
    tracker = SAM2Tracker(backend)

Devices. ``device="cpu"`` (default): ONNX Runtime's CPU provider, numpy arrays in and out (a plain
``session.run`` is zero-copy for contiguous numpy inputs). ``device="cuda[:N]"``: the CUDA provider
with IO binding, and the backend's arrays are torch CUDA tensors (:class:`TorchOps`, as the TensorRT
backend), so the tracking state (memory bank, object pointers, features) stays on the GPU between
stages: each input is bound by its device pointer, each output is a torch tensor allocated from the
spec's shape (every output axis is a fixed size or an input's symbol) and bound by pointer, so ONNX
Runtime writes into it; nothing crosses to the host per stage. The runners of one backend share one
CUDA stream, handed to ONNX Runtime as its compute stream (``user_compute_stream``); it waits for the
caller's stream before a run and the caller's stream waits for it after, and ONNX Runtime's
end-of-run stream synchronization is switched off (``disable_synchronize_execution_providers``), so
stages queue behind each other like the TensorRT runner's. TF32 is off (``use_tf32=0``): fp32 graphs
compute FP32, as the torch backend does by default. A CUDA device without the CUDA provider in this
onnxruntime (the CPU wheel), or a session that fell back to the CPU, is a one-line
:class:`ProviderError`.

Memory (CPU). By default every session keeps an arena of its own, never given back, plus a memory
pattern planned per input shape: the five sessions' peaks add up, and the per-object graphs change
shape every frame. Here (``arena="shared"``, the default) all sessions of the process allocate from
ONE arena registered with the ONNX Runtime environment (``session.use_env_allocators``), grown in
powers of two, and no memory pattern is planned: the shared arena holds one peak instead of five,
at the same speed. Growing by exactly what a run requests instead leaves a region per new shape
behind. ``bench/ort_memory.py`` measures each combination (figures in bench/RESULTS.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..encoder_region import RegionEncoder, has_region_graphs
from ..errors import UserError
from ..manifest import (
    ORT_VARIANT,
    ExportDir,
    GraphEntry,
    GraphLoadError,
    ManifestError,
    graph_config_problem,
)
from ..ops import NumpyOps
from ..specs import ROUTER, GraphSpec
from .base import Backend, StageError, StageRunner

INT8_DIR = "int8"
INT8_REPORT = "report.json"
# fp16 / int8 / fp8: <dir>/<precision>/report.json names the graphs made in that precision (graphs.<name>
# .file, .sha256, .accepted); the others stay fp32.
PRECISIONS = ("fp32", "fp16", "int8", "fp8")
CUDA_PROVIDER = "CUDAExecutionProvider"


class ProviderError(UserError, RuntimeError):
    """The requested ONNX Runtime execution provider is not there (one line, with the remedy)."""


def cuda_device_index(device: str) -> int | None:
    """CUDA device index of ``device`` ("cuda" -> 0, "cuda:N" -> N), or None for "cpu"."""
    if device == "cpu":
        return None
    kind, _, index = device.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ProviderError(f"device {device!r}: ONNX Runtime runs on cpu, cuda or cuda:N")
    return int(index or 0)


def cuda_providers(device_id: int, stream_handle: int) -> list[Any]:
    """The provider list of a CUDA session: the CUDA provider on ``device_id`` computing on the CUDA
    stream ``stream_handle`` without TF32, the CPU provider for what it does not implement."""
    options = {"device_id": str(device_id), "user_compute_stream": str(stream_handle), "use_tf32": "0"}
    return [(CUDA_PROVIDER, options), "CPUExecutionProvider"]


def require_cuda_provider(device: str) -> None:
    """Refuse ``device`` in one line where this onnxruntime has no CUDA provider."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if CUDA_PROVIDER not in available:
        raise ProviderError(
            f"--backend ort --device {device} needs onnxruntime-gpu (the CUDA provider); this onnxruntime "
            f"{ort.__version__} has {', '.join(available)}: pip uninstall onnxruntime && pip install onnxruntime-gpu"
        )
ARENAS = ("shared", "session")  # one process-wide arena, or ONNX Runtime's default of one per session
ATTENTION = ("fused", "plain")


def default_providers() -> list[str]:
    return ["CPUExecutionProvider"]


_shared_arena_registered = False


def _register_shared_cpu_arena(ort: Any) -> None:
    """Register, once per process, the CPU arena sessions share (``session.use_env_allocators``)."""
    global _shared_arena_registered
    if _shared_arena_registered:
        return
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    # max_mem 0: no cap; arena_extend_strategy 0: kNextPowerOfTwo (1, kSameAsRequested, leaves a
    # region per new shape behind); -1, -1: ONNX Runtime's initial chunk and dead-bytes defaults
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 0, -1, -1))
    _shared_arena_registered = True


class OrtStageRunner(StageRunner):
    """Runs one ``.onnx`` graph in an ``onnxruntime.InferenceSession``: numpy feeds and outputs on the
    CPU; on ``device="cuda[:N]"`` torch CUDA tensors bound by pointer, computed on ``stream`` (a
    ``torch.cuda.Stream``, shared by a backend's runners; module docstring).

    The session is created in :meth:`activate` (graph optimization level ALL); a file ORT cannot load
    raises :class:`GraphLoadError` naming it. ``intra_op_threads``: ORT's intra-op thread count
    (None: ORT's default, one per physical core). ``arena``: how the session allocates on the CPU
    (:data:`ARENAS`; see the module docstring).
    """

    def __init__(
        self,
        spec: GraphSpec,
        path: str | Path,
        *,
        providers: Sequence[Any] | None = None,
        intra_op_threads: int | None = None,
        check_inputs: bool = True,
        arena: str = "shared",
        device: str = "cpu",
        stream: Any = None,
        profile_prefix: str | None = None,
    ):
        super().__init__(spec, check_inputs=check_inputs)
        self.device_name = device
        self.device_index = cuda_device_index(device)
        self.stream = stream  # torch.cuda.Stream the session computes on (CUDA); made at activation if None
        self.profile_prefix = profile_prefix
        if arena not in ARENAS:
            raise ValueError(f"arena must be one of {ARENAS}, got {arena!r}")
        self.path = Path(path)
        self.providers = list(providers) if providers else None  # None: the device's (activation)
        self.intra_op_threads = intra_op_threads
        self.arena = arena
        self.session = None
        self.use_io_binding = False
        self.run_options = None

    def activate_impl(self) -> None:
        import onnxruntime as ort

        if self.device_index is not None:
            import torch

            self.torch = torch
            self.device = torch.device("cuda", self.device_index)
            if self.stream is None:
                self.stream = torch.cuda.Stream(self.device)
            if self.providers is None:
                self.providers = cuda_providers(self.device_index, self.stream.cuda_stream)
            self.run_options = ort.RunOptions()
            # The caller's stream waits on ours (infer_impl): no host wait at the end of each run.
            self.run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
        elif self.providers is None:
            self.providers = default_providers()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if self.intra_op_threads:
            opts.intra_op_num_threads = int(self.intra_op_threads)
        if self.arena == "shared":
            _register_shared_cpu_arena(ort)
            opts.add_session_config_entry("session.use_env_allocators", "1")
            opts.enable_mem_pattern = False
        if self.profile_prefix:
            opts.enable_profiling = True
            opts.profile_file_prefix = f"{self.profile_prefix}_{self.spec.name}"
        if not self.path.is_file():
            raise GraphLoadError(f"{self.spec.name}: graph file missing: {self.path}")
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=self.providers)
        except Exception as e:  # noqa: BLE001 - ORT raises several types for an unreadable model
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise GraphLoadError(
                f"{self.spec.name}: ONNX Runtime cannot load {self.path} (truncated or corrupt?): {first[:300]}"
            ) from None
        io = {i.name: ("input", None) for i in self.session.get_inputs()}
        io.update({o.name: ("output", None) for o in self.session.get_outputs()})
        problems = self.spec.io_problems(io, f"graph {self.path.name}")
        if problems:
            raise GraphLoadError(f"{self.spec.name}: " + "; ".join(problems))
        used = self.session.get_providers()
        if self.device_index is not None and (not used or used[0] != CUDA_PROVIDER):
            raise ProviderError(
                f"{self.spec.name}: ONNX Runtime could not start the CUDA provider on {self.device} "
                f"(session providers {used}): check that its CUDA/cuDNN libraries load (onnxruntime-gpu "
                "needs the CUDA and cuDNN of its build)"
            )
        self.use_io_binding = bool(used) and used[0] == CUDA_PROVIDER

    def deactivate_impl(self) -> None:
        self.session = None

    def end_profiling(self) -> str | None:
        """Stop ONNX Runtime's profiler (``profile_prefix``) and return the trace file it wrote."""
        if self.session is None or not self.profile_prefix:
            return None
        return self.session.end_profiling()

    def infer_impl(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        if self.device_index is not None:
            return self._infer_device(feed)
        feed = {k: np.ascontiguousarray(v) for k, v in feed.items()}
        try:
            if self.use_io_binding:
                binding = self.session.io_binding()
                for name, value in feed.items():
                    binding.bind_cpu_input(name, value)
                for name in self.spec.output_names:
                    binding.bind_output(name, "cuda")
                self.session.run_with_iobinding(binding)
                outs = binding.copy_outputs_to_cpu()
            else:
                outs = self.session.run(None, feed)
        except Exception as e:  # noqa: BLE001 - surface ORT failures with the graph and shapes
            shapes = {k: tuple(v.shape) for k, v in feed.items()}
            raise StageError(f"{self.spec.name}: ONNX Runtime failed on {shapes}: {e}") from e
        return dict(zip(self.spec.output_names, outs))

    def _infer_device(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        """CUDA: torch CUDA tensors in (numpy inputs are uploaded), torch CUDA tensors out, bound by
        pointer; queued on the runner's stream behind the caller's work."""
        torch = self.torch
        inputs: dict[str, Any] = {}
        sizes: dict[str, int] = {}
        for t in self.spec.inputs:
            x = feed[t.name]
            if not isinstance(x, torch.Tensor):
                x = torch.as_tensor(np.ascontiguousarray(x))
            if x.device != self.device:
                x = x.to(self.device, non_blocking=True)
            inputs[t.name] = x.contiguous()
            for axis, sym in enumerate(t.shape):
                if isinstance(sym, str):
                    sizes[sym] = int(x.shape[axis])
        caller = torch.cuda.current_stream(self.device)
        outputs = {
            t.name: torch.empty(t.concrete(sizes), dtype=getattr(torch, t.dtype), device=self.device)
            for t in self.spec.outputs
        }
        binding = self.session.io_binding()
        for name, x in inputs.items():
            binding.bind_input(name, "cuda", self.device_index, _NP_DTYPES[str(x.dtype)], tuple(x.shape), x.data_ptr())
        for name, y in outputs.items():
            binding.bind_output(name, "cuda", self.device_index, _NP_DTYPES[str(y.dtype)], tuple(y.shape), y.data_ptr())
        self.stream.wait_stream(caller)
        try:
            self.session.run_with_iobinding(binding, self.run_options)
        except Exception as e:  # noqa: BLE001 - surface ORT failures with the graph and shapes
            shapes = {k: tuple(v.shape) for k, v in inputs.items()}
            raise StageError(f"{self.spec.name}: ONNX Runtime (CUDA) failed on {shapes}: {e}") from e
        caller.wait_stream(self.stream)
        for x in (*inputs.values(), *outputs.values()):
            x.record_stream(self.stream)  # the caching allocator must not hand them out before ORT is done
        return outputs


_NP_DTYPES = {"torch.float32": np.float32, "torch.float16": np.float16, "torch.int64": np.int64,
              "torch.int32": np.int32, "torch.bool": np.bool_, "torch.uint8": np.uint8}


def providers_named(providers: Sequence[Any]) -> list[str]:
    """Provider names of an ONNX Runtime provider list (entries are names or (name, options))."""
    return [p[0] if isinstance(p, tuple) else p for p in providers]


# -- loading an export directory ------------------------------------------------------------------


def read_precision_report(graph_dir: str | Path, precision: str = "int8") -> dict[str, Any] | None:
    """``<graph_dir>/<precision>/report.json`` (which graphs exist in that precision), or None."""
    import json

    path = Path(graph_dir) / precision / INT8_REPORT
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _graph_path(
    graph_dir: Path, entry: GraphEntry, precision: str, report: dict | None, variant: str | None
) -> tuple[Path, str | None]:
    """(file to load, sha256 it must have or None) for one graph at ``precision``: the graph the
    precision's report accepted, else the ``variant`` file where the graph has one, else the plain graph."""
    if precision != "fp32" and report is not None:
        g = report.get("graphs", {}).get(entry.name)
        if g and g.get("accepted"):
            return graph_dir / precision / g["file"], g.get("sha256")
    file, sha = entry.file_for(variant)
    return graph_dir / file, sha


def load_ort_backend(
    graph_dir: str | Path,
    *,
    providers: Sequence[Any] | None = None,
    intra_op_threads: int | None = None,
    check: bool = True,
    expect_config: str | None = None,
    precision: str = "fp32",
    graphs: Sequence[str] | None = None,
    check_inputs: bool = True,
    attention: str = "fused",
    arena: str = "shared",
    device: str = "cpu",
    profile_prefix: str | None = None,
) -> Backend:
    """A :class:`Backend` over the ONNX graphs in ``graph_dir`` (an ``export_graphs`` output).

    ``check``: verify each graph file's sha256 against the manifest (and the int8 report) and the
    manifest's fastsam2 version; ``expect_config``: refuse an export of another config.
    ``precision="int8"`` / ``"fp16"``: use ``<precision>/<graph>.onnx`` for the graphs
    ``<precision>/report.json`` accepted, fp32 for the rest. ``graphs``: load only these (default: every graph in the manifest).
    ``attention``: "fused" loads each graph's ONNX Runtime variant (``<graph>.ort.onnx``: attention as
    one MultiHeadAttention node, run by ORT's fused kernel) where the export has one; "plain" the
    standard-ONNX graphs TensorRT is built from. ``arena``: "shared" (one CPU arena for all the
    process's sessions, see the module docstring) or "session" (ONNX Runtime's default).
    ``device``: "cpu", or "cuda[:N]" for the CUDA provider with device-resident torch tensors (module
    docstring; :class:`ProviderError` where this onnxruntime has no CUDA provider). ``profile_prefix``:
    ONNX Runtime's profiler on, one trace per graph at ``<prefix>_<graph>_<date>.json``
    (:meth:`OrtStageRunner.end_profiling`).
    Every problem is one :class:`ManifestError` / :class:`GraphLoadError` line naming the file.
    Sessions are created here, so a corrupt graph fails now, not on the first frame.
    """
    graph_dir = Path(graph_dir)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if attention not in ATTENTION:
        raise ValueError(f"attention must be one of {ATTENTION}, got {attention!r}")
    variant = ORT_VARIANT if attention == "fused" else None
    export = ExportDir.open(graph_dir, expect_config=expect_config, check_version=check)
    manifest = export.manifest
    report = read_precision_report(graph_dir, precision) if precision != "fp32" else None
    if precision != "fp32" and report is None:
        made_by = ("fastsam2.calibration.ort_quant" if precision == "int8"
                   else "fastsam2.export.trt.precision.write_precision_dir")
        raise ManifestError(f"no {precision}/{INT8_REPORT} in {graph_dir}: make it with {made_by} first")
    if report is not None and check and report.get("manifest_sha256") != export.manifest_sha256():
        raise ManifestError(f"{graph_dir / precision / INT8_REPORT} was made from another export")
    index = cuda_device_index(device)
    stream = None
    if index is not None:
        require_cuda_provider(device)
        import torch

        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ProviderError(f"--backend ort --device {device}: torch sees {torch.cuda.device_count()} CUDA device(s)")
        stream = torch.cuda.Stream(torch.device("cuda", index))  # one stream for every stage
    constants = export.constants()

    names = list(graphs) if graphs is not None else list(manifest.graphs)
    runners: dict[str, StageRunner] = {}
    chosen: dict[str, str] = {}
    files: dict[str, str] = {}
    for name in names:
        entry = export.entry(name)
        path, sha = _graph_path(graph_dir, entry, precision, report, variant)
        export.verified(path, sha, check=check)
        runner = OrtStageRunner(
            entry.spec,
            path,
            providers=providers,
            intra_op_threads=intra_op_threads,
            check_inputs=check_inputs,
            arena=arena,
            device=device,
            stream=stream,
            profile_prefix=profile_prefix,
        )
        runner.activate()
        problem = graph_config_problem(runner.session.get_modelmeta().custom_metadata_map, manifest, path.name)
        if problem:
            raise ManifestError(f"{graph_dir}: {problem}")
        runners[name] = runner
        g = (report or {}).get("graphs", {}).get(name, {})
        chosen[name] = g.get("precision", precision) if path.parent.name == precision else "fp32"
        files[name] = str(path.relative_to(graph_dir))
    first = next(iter(runners.values()), None)
    used = first.session.get_providers()[0] if first is not None else "none"
    if index is None:
        ops = NumpyOps()
    else:
        from .torch_ops import TorchOps

        ops = TorchOps(f"cuda:{index}")
    return Backend(
        name="onnxruntime",
        runners=runners,
        ops=ops,
        config=manifest.model_config,
        constants=constants,
        description=f"onnxruntime {used} " + ", ".join(f"{n}:{p} ({files[n]})" for n, p in chosen.items()),
        weights=manifest.weights,
        router_weights=manifest.router_weights if ROUTER in runners else None,
        precisions=chosen,
        region_encoder=RegionEncoder(runners, ops, manifest.model_config) if has_region_graphs(runners) else None,
    )

