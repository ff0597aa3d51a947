"""TensorRT INT8 entropy calibration fed from a :class:`CalibrationDataReader`.

TensorRT 10 API (python/src/infer/pyInt8.cpp and python/docstrings/infer/pyInt8Doc.h of
NVIDIA/TensorRT release/10.x; "IInt8EntropyCalibrator2" in the TensorRT Python API reference):

- ``get_batch(names)`` returns device pointers in the order of ``names``, or None/[] when done.
- ``read_calibration_cache()`` returns the cache bytes or None; ``write_calibration_cache(cache)``
  receives a memoryview.
- Exceptions raised inside these callbacks are caught by the bindings and only printed to stderr,
  so the calibrator keeps the first error in ``.error`` and :func:`~.builder.build_engine` raises it
  after the build.
- With dynamic shapes, calibration runs at the calibration profile's OPT shapes
  (``IBuilderConfig.set_calibration_profile``: "MIN and MAX values will be overwritten by OPT").
  Every feed must therefore have the same shapes: :func:`calibration_shapes` picks the most common
  shape set among the recorded feeds, and feeds of other shapes are skipped (and counted).

Implicit INT8 calibration is deprecated since TensorRT 10.1 and removed in TensorRT 11 (use explicit
quantization there); JetPack 6 ships TensorRT 10.3, where it works.

The non-TensorRT logic (shape choice, feed order and name matching, the cache file) is in plain
helpers that are unit-tested without TensorRT.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from fastsam2.runtime.specs import GraphSpec
from fastsam2.runtime.errors import UserError

Shapes = dict[str, tuple[int, ...]]


class CalibrationError(UserError, RuntimeError):
    """The calibration data cannot drive a TensorRT calibration."""


def _signature(feed: dict[str, np.ndarray], spec: GraphSpec) -> tuple:
    return tuple((n, tuple(np.shape(feed[n]))) for n in spec.input_names if n in feed)


def check_calibration_feed(feed: dict[str, Any], spec: GraphSpec, index: int) -> None:
    """Raise CalibrationError naming the feed and tensor when ``feed`` does not fit ``spec``."""
    problems = spec.check_feed(
        {k: (tuple(np.shape(v)), np.asarray(v).dtype.name) for k, v in feed.items()}
    )
    if problems:
        raise CalibrationError(f"{spec.name} calibration feed {index}: " + "; ".join(problems))


def calibration_shapes(reader: Any, spec: GraphSpec) -> Shapes:
    """The most common shape set among the reader's feeds (ties: the first seen); rewinds the reader.

    Raises CalibrationError when the reader yields nothing or a feed does not fit the spec.
    """
    reader.rewind()
    counts: Counter = Counter()
    index = 0
    while (feed := reader.get_next()) is not None:
        check_calibration_feed(feed, spec, index)
        counts[_signature(feed, spec)] += 1
        index += 1
    reader.rewind()
    if not counts:
        raise CalibrationError(f"No data is collected for {spec.name} calibration: the reader is empty")
    best = max(counts.values())
    signature = next(sig for sig, n in counts.items() if n == best)  # Counter keeps insertion order
    return dict(signature)


class FeedQueue:
    """Hands out the reader's feeds that match ``shapes``, as arrays ordered like TensorRT's
    ``names``; counts used and skipped feeds."""

    def __init__(self, reader: Any, spec: GraphSpec, shapes: Shapes):
        self.reader = reader
        self.spec = spec
        self.shapes = {n: tuple(s) for n, s in shapes.items()}
        self.used = 0
        self.skipped = 0
        self._index = 0

    def rewind(self) -> None:
        self.reader.rewind()
        self.used = self.skipped = self._index = 0

    def next_batch(self, names: list[str]) -> list[np.ndarray] | None:
        unknown = [n for n in names if n not in self.spec.input_names]
        if unknown:
            raise CalibrationError(
                f"TensorRT asks for inputs {unknown} that {self.spec.name}'s spec does not declare "
                f"(spec inputs: {self.spec.input_names}); was the engine built from another graph?"
            )
        while (feed := self.reader.get_next()) is not None:
            index, self._index = self._index, self._index + 1
            missing = [n for n in names if n not in feed]
            if missing:
                raise CalibrationError(
                    f"{self.spec.name} calibration feed {index} lacks inputs {missing} "
                    f"(it has {sorted(feed)})"
                )
            check_calibration_feed(feed, self.spec, index)
            if any(tuple(np.shape(feed[n])) != self.shapes.get(n) for n in names):
                self.skipped += 1
                continue
            self.used += 1
            return [np.ascontiguousarray(feed[n]) for n in names]
        if self.used == 0:
            raise CalibrationError(
                f"No data is collected for {self.spec.name} calibration: none of {self._index} feeds "
                f"has the calibration shapes {self.shapes}"
            )
        return None


def read_cache(path: Path | None) -> bytes | None:
    """The calibration cache's bytes, or None when there is none (missing or empty file)."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    return path.read_bytes()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename, so
    a crash never leaves a truncated cache or engine that a later build would trust."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_entropy_calibrator(
    reader: Any,
    spec: GraphSpec,
    cache_path: Path | None,
    *,
    shapes: Shapes | None = None,
    device: str = "cuda",
) -> Any:
    """An ``IInt8EntropyCalibrator2`` that feeds the reader's feeds (batch size 1) from torch CUDA
    buffers, and reads/writes ``cache_path`` (reused by later builds; delete it to recalibrate).

    ``shapes`` are the calibration shapes (the calibration profile's OPT); by default the most
    common shapes among the feeds. The result has ``.shapes``, ``.queue`` (used/skipped counts) and
    ``.error`` (the first exception raised in a callback, or None).
    """
    import tensorrt as trt
    import torch

    if shapes is None:
        # Even with a cache (TensorRT then asks for no batch) the calibration profile needs shapes.
        shapes = calibration_shapes(reader, spec)

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            # The bindings require the base __init__ to be called explicitly.
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.spec = spec
            self.shapes = dict(shapes)
            self.queue = FeedQueue(reader, spec, self.shapes)
            self.cache_path = Path(cache_path) if cache_path is not None else None
            self.device = torch.device(device)
            self.buffers: dict[str, torch.Tensor] = {}
            self.error: BaseException | None = None
            self.queue.rewind()

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.error is not None:
                return None
            try:
                arrays = self.queue.next_batch(list(names))
                if arrays is None:
                    self.buffers.clear()
                    return None
                pointers = []
                for name, array in zip(names, arrays):
                    host = torch.from_numpy(array)
                    buf = self.buffers.get(name)
                    if buf is None or buf.shape != host.shape or buf.dtype != host.dtype:
                        buf = torch.empty(host.shape, dtype=host.dtype, device=self.device)
                        self.buffers[name] = buf
                    buf.copy_(host)
                    pointers.append(int(buf.data_ptr()))
                # TensorRT reads the buffers on its own stream right after this returns.
                torch.cuda.synchronize(self.device)
                return pointers
            except BaseException as err:  # the bindings would only print it
                self.error = err
                return None

        def read_calibration_cache(self) -> bytes | None:
            try:
                return read_cache(self.cache_path)
            except BaseException as err:
                self.error = err
                return None

        def write_calibration_cache(self, cache: Any) -> None:
            if self.cache_path is None:
                return
            try:
                write_atomic(self.cache_path, bytes(cache))
            except BaseException as err:
                self.error = err

    return EntropyCalibrator()
