"""Which TensorRT this is, and the few places where TensorRT and TensorRT-RTX differ.

Both expose the same TensorRT 10 Python API (Builder, OnnxParser, IBuilderConfig, Runtime,
IExecutionContext); fastsam2 builds every engine STRONGLY_TYPED (precision comes from the ONNX graph's
types, see :mod:`.precision`), which both support, so the build and run code is shared and this
module only answers the questions whose answers differ:

========================  ===========================================  =====================================
question                  ``tensorrt`` (JetPack 6: 10.3; desktop 10/11) ``tensorrt_rtx`` (TensorRT-RTX 1.x)
========================  ===========================================  =====================================
module                    ``tensorrt``                                 ``tensorrt_rtx``, or the PyPI wheels'
                                                                       ``tensorrt_rtx_bindings``
needs a GPU to build      yes (kernels are timed on it)                no: ahead-of-time build on any machine
engine runs on            the GPU model it was built on                any GPU of :data:`RTX_DEFAULT_TARGETS`
                                                                       (TensorRT-RTX default portability)
timing cache              yes, shared by all graphs                    not used (nothing is timed ahead of time)
runtime (JIT) cache       no such thing                                ``IRuntimeConfig`` runtime cache per
                                                                       context, saved beside the engine
========================  ===========================================  =====================================

TensorRT-RTX compute capabilities: "By default, an engine built by TensorRT-RTX can be run on GPU
devices with compute capability 8.0, 8.6, 8.9, 12.0, and later. To build engines for Turing devices, a
compute capability of 7.5 needs to be specified" (TensorRT-RTX docs, "CPU-Only AOT and TensorRT-RTX
Engines"); Hopper (9.0, e.g. the H200) is not supported: deserializing there fails with "TensorRT-RTX
does not support this compute capability".
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

# Tried in this order: full TensorRT first (Jetson, data centre), then TensorRT-RTX (its SDK's module
# name, then the name the PyPI wheels tensorrt-rtx-cu13-bindings install).
MODULE_NAMES = ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings")
RTX_MODULES = ("tensorrt_rtx", "tensorrt_rtx_bindings")
RTX_DEFAULT_TARGETS = ("8.0", "8.6", "8.9", "12.0", "12.1")


class TensorRTMissing(ImportError):
    """No TensorRT Python package is importable."""


def import_tensorrt(names: tuple[str, ...] = MODULE_NAMES) -> ModuleType:
    """The first importable module of ``names``; TensorRTMissing (one line, install hint) if none."""
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        # A PyPI stub (the `tensorrt` metapackage without its libs) has no Builder.
        if hasattr(module, "Builder"):
            return module
    raise TensorRTMissing(
        "no TensorRT Python package: install TensorRT (JetPack / NVIDIA's index: pip install tensorrt) "
        "or TensorRT-RTX (pip install tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings)"
    )


class CapturingLogger:
    """A ``trt.ILogger`` that forwards warnings and errors to stderr and keeps every message, so the
    build report can quote TensorRT's own numbers ("Total Activation Memory: N bytes")."""

    def __new__(cls, trt: ModuleType, min_print: str = "WARNING"):
        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.messages: list[tuple[str, str]] = []
                self.print_level = int(getattr(trt.ILogger.Severity, min_print))

            def log(self, severity, msg) -> None:  # noqa: D401 - TensorRT callback
                self.messages.append((severity.name, msg))
                if int(severity) <= self.print_level:
                    import sys

                    print(f"[TensorRT] [{severity.name}] {msg}", file=sys.stderr)

            def clear(self) -> None:
                self.messages.clear()

            def activation_bytes(self) -> int | None:
                """TensorRT's "Total Activation Memory" of the last build, if it logged one."""
                found = None
                for _, msg in self.messages:
                    m = re.search(r"Total Activation Memory:\s*(\d+)", msg)
                    if m:
                        found = int(m.group(1))
                return found

            def errors(self) -> list[str]:
                return [m for s, m in self.messages if s in ("ERROR", "INTERNAL_ERROR")]

        return _Logger()


@dataclass
class TensorRTFlavor:
    """The imported TensorRT module and what differs between TensorRT and TensorRT-RTX."""

    trt: ModuleType
    name: str  # "tensorrt" or "tensorrt_rtx"
    module_name: str
    _logger: Any = field(default=None, repr=False)

    @property
    def version(self) -> str:
        return str(self.trt.__version__)

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt_rtx"

    @property
    def label(self) -> str:
        """What engine metadata records, e.g. "TensorRT-RTX 1.7.1.116"."""
        return f"{'TensorRT-RTX' if self.is_rtx else 'TensorRT'} {self.version}"

    @property
    def needs_gpu_to_build(self) -> bool:
        return not self.is_rtx

    @property
    def uses_timing_cache(self) -> bool:
        return not self.is_rtx

    def logger(self) -> Any:
        """One process-wide logger (TensorRT expects a single one)."""
        if self._logger is None:
            self._logger = CapturingLogger(self.trt)
        return self._logger

    def strongly_typed_network(self, builder: Any) -> Any:
        flag = 1 << int(self.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        return builder.create_network(flag)

    def set_tf32(self, config: Any, enabled: bool) -> None:
        """fp32 means FP32: TensorRT enables TF32 matmul/conv by default; clear it unless asked."""
        flag = self.trt.BuilderFlag.TF32
        config.set_flag(flag) if enabled else config.clear_flag(flag)

    def build_targets(self, config: Any, targets: tuple[str, ...] | None) -> tuple[str, ...]:
        """Set the GPUs the engine is for; returns the compute capabilities recorded in the metadata.

        TensorRT: the current GPU (``targets`` must be None). TensorRT-RTX: ``targets`` such as
        ("7.5",) or the default portable set.
        """
        if not self.is_rtx:
            if targets:
                raise ValueError("compute-capability targets are a TensorRT-RTX option; TensorRT builds "
                                 "for the GPU it runs on")
            return (current_gpu()[1],)
        if not targets:
            return RTX_DEFAULT_TARGETS
        members = []
        for cc in targets:
            name = "SM" + cc.replace(".", "")
            if not hasattr(self.trt.ComputeCapability, name):
                known = [m for m in dir(self.trt.ComputeCapability) if m.startswith("SM")]
                raise ValueError(f"TensorRT-RTX {self.version} cannot target compute capability {cc} "
                                 f"(it knows {known})")
            members.append(getattr(self.trt.ComputeCapability, name))
        config.num_compute_capabilities = len(members)
        for i, member in enumerate(members):
            if not config.set_compute_capability(member, i):
                raise ValueError(f"TensorRT-RTX rejected compute capability target {targets[i]}")
        return tuple(targets)

    def create_context(self, engine: Any, runtime_cache_path: Path | None = None) -> tuple[Any, Any]:
        """(execution context, runtime cache or None). TensorRT-RTX compiles kernels just in time on
        the first run; its runtime cache keeps them (loaded from ``runtime_cache_path`` if present)."""
        if not self.is_rtx:
            return engine.create_execution_context(), None
        runtime_config = engine.create_runtime_config()
        cache = runtime_config.create_runtime_cache()
        if runtime_cache_path is not None and Path(runtime_cache_path).is_file():
            cache.deserialize(Path(runtime_cache_path).read_bytes())
        runtime_config.set_runtime_cache(cache)
        return engine.create_execution_context(runtime_config), cache


def current_gpu() -> tuple[str, str]:
    """(GPU name, "major.minor") of the current CUDA device; RuntimeError when there is none."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device: TensorRT (not TensorRT-RTX) builds engines on the target GPU")
    major, minor = torch.cuda.get_device_capability()
    return torch.cuda.get_device_name(), f"{major}.{minor}"


_FLAVOR: TensorRTFlavor | None = None


def tensorrt_flavor() -> TensorRTFlavor:
    """The process-wide :class:`TensorRTFlavor` (TensorRTMissing when no TensorRT is installed)."""
    global _FLAVOR
    if _FLAVOR is None:
        trt = import_tensorrt()
        module_name = trt.__name__.split(".")[0]
        name = "tensorrt_rtx" if module_name in RTX_MODULES else "tensorrt"
        _FLAVOR = TensorRTFlavor(trt=trt, name=name, module_name=module_name)
    return _FLAVOR


def tensorrt_available() -> bool:
    try:
        tensorrt_flavor()
    except TensorRTMissing:
        return False
    return True
