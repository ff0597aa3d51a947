"""ONNX Runtime backend: one :class:`OrtStageRunner` per exported graph, numpy arrays in and out.

Loads an export directory (``manifest.json``, ``constants.npz``, ``<graph>.onnx``) without torch or
sam2: this is the runtime a CPU box or a Jetson without TensorRT gets.

    backend = load_ort_backend("out/tiny", expect_config="tiny")
    tracker = SAM2Tracker(backend)

Providers: CPU by default. With ``CUDAExecutionProvider`` the runner uses IO binding: every input is
bound from its host numpy array (ORT copies it to the device once per call) and every output is
bound to a device allocation that ORT sizes itself (outputs of dynamic shape), then copied to host
with ``copy_outputs_to_cpu()`` — one explicit host→device and device→host copy per input/output
instead of ORT's implicit staging, and no host-side output allocation before the run. On CPU a plain
``session.run`` is already zero-copy for contiguous numpy inputs.

Memory (CPU). By default every session keeps an arena of its own, never given back, plus a memory
pattern planned per input shape: the five sessions' peaks add up, and the per-object graphs change
shape every frame. Here (``arena="shared"``, the default) all sessions of the process allocate from
ONE arena registered with the ONNX Runtime environment (``session.use_env_allocators``), grown in
powers of two, and no memory pattern is planned. Growing by exactly what a run requests instead
left a region per new shape behind (16 GB with plain attention at keep 1.0). Measured by
``bench/ort_memory.py`` on the 2-core CPU (tiny@1024, two objects, 12 frames; peak RSS of the
process, per-session → shared arena), fused attention: keep 0.3 1794 → 933 MB, keep 1.0 2284 → 993 MB,
ms per frame within this machine's run-to-run spread; plain attention at keep 1.0: 5405 → 3128 MB
(bench/results/cpu_ort_memory.*).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..manifest import MANIFEST_NAME, ORT_VARIANT, ExportDir, GraphEntry, GraphLoadError, ManifestError
from ..ops import NumpyOps
from ..specs import ROUTER, GraphSpec
from .base import Backend, StageError, StageRunner

INT8_DIR = "int8"
INT8_REPORT = "report.json"
PRECISIONS = ("fp32", "int8")
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
    """Runs one ``.onnx`` graph in an ``onnxruntime.InferenceSession``; numpy feeds and outputs.

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
    ):
        super().__init__(spec, check_inputs=check_inputs)
        if arena not in ARENAS:
            raise ValueError(f"arena must be one of {ARENAS}, got {arena!r}")
        self.path = Path(path)
        self.providers = list(providers or default_providers())
        self.intra_op_threads = intra_op_threads
        self.arena = arena
        self.session = None
        self.use_io_binding = False

    def activate_impl(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if self.intra_op_threads:
            opts.intra_op_num_threads = int(self.intra_op_threads)
        if self.arena == "shared":
            _register_shared_cpu_arena(ort)
            opts.add_session_config_entry("session.use_env_allocators", "1")
            opts.enable_mem_pattern = False
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
        self.use_io_binding = bool(used) and used[0] == "CUDAExecutionProvider"

    def deactivate_impl(self) -> None:
        self.session = None

    def infer_impl(self, feed: Mapping[str, Any]) -> dict[str, Any]:
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


# -- loading an export directory ------------------------------------------------------------------


def read_int8_report(graph_dir: str | Path) -> dict[str, Any] | None:
    import json

    path = Path(graph_dir) / INT8_DIR / INT8_REPORT
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _graph_path(
    graph_dir: Path, entry: GraphEntry, precision: str, int8: dict | None, variant: str | None
) -> tuple[Path, str | None]:
    """(file to load, sha256 it must have or None) for one graph at ``precision``: an accepted INT8
    graph, else the ``variant`` file where the graph has one, else the plain graph."""
    if precision == "int8" and int8 is not None:
        g = int8.get("graphs", {}).get(entry.name)
        if g and g.get("accepted"):
            return graph_dir / INT8_DIR / g["file"], g.get("sha256")
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
) -> Backend:
    """A :class:`Backend` over the ONNX graphs in ``graph_dir`` (an ``export_graphs`` output).

    ``check``: verify each graph file's sha256 against the manifest (and the int8 report) and the
    manifest's fastsam2 version; ``expect_config``: refuse an export of another config.
    ``precision="int8"``: use ``int8/<graph>.onnx`` for the graphs ``int8/report.json`` accepted,
    fp32 for the rest. ``graphs``: load only these (default: every graph in the manifest).
    ``attention``: "fused" loads each graph's ONNX Runtime variant (``<graph>.ort.onnx``: attention as
    one MultiHeadAttention node, run by ORT's fused kernel) where the export has one; "plain" the
    standard-ONNX graphs TensorRT is built from. ``arena``: "shared" (one CPU arena for all the
    process's sessions, see the module docstring) or "session" (ONNX Runtime's default).
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
    int8 = read_int8_report(graph_dir) if precision == "int8" else None
    if precision == "int8" and int8 is None:
        raise ManifestError(
            f"no {INT8_DIR}/{INT8_REPORT} in {graph_dir}: run fastsam2.calibration.ort_quant first"
        )
    if int8 is not None and check and int8.get("manifest_sha256") != export.manifest_sha256():
        raise ManifestError(f"{graph_dir / INT8_DIR / INT8_REPORT} was made from another export")
    constants = export.constants()

    names = list(graphs) if graphs is not None else list(manifest.graphs)
    runners: dict[str, StageRunner] = {}
    chosen: dict[str, str] = {}
    files: dict[str, str] = {}
    for name in names:
        entry = export.entry(name)
        path, sha = _graph_path(graph_dir, entry, precision, int8, variant)
        export.verified(path, sha, check=check)
        runner = OrtStageRunner(
            entry.spec,
            path,
            providers=providers,
            intra_op_threads=intra_op_threads,
            check_inputs=check_inputs,
            arena=arena,
        )
        runner.activate()
        made_for = runner.session.get_modelmeta().custom_metadata_map.get("fastsam2.config_name")
        if made_for is not None and made_for != manifest.config_name:
            raise ManifestError(
                f"{path.name} was exported from {made_for!r}, but {graph_dir / MANIFEST_NAME} says "
                f"{manifest.config_name!r} (edited?): re-export"
            )
        runners[name] = runner
        chosen[name] = "int8" if path.parent.name == INT8_DIR else "fp32"
        files[name] = str(path.relative_to(graph_dir))
    first = next(iter(runners.values()), None)
    used = first.session.get_providers()[0] if first is not None else "none"
    return Backend(
        name="onnxruntime",
        runners=runners,
        ops=NumpyOps(),
        config=manifest.model_config,
        constants=constants,
        description=f"onnxruntime {used} " + ", ".join(f"{n}:{p} ({files[n]})" for n, p in chosen.items()),
        weights=manifest.weights,
        router_weights=manifest.router_weights if ROUTER in runners else None,
        precisions=chosen,
    )

