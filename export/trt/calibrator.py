"""Calibration-feed helpers and atomic file writes shared by the TensorRT build.

INT8 is explicit (QDQ graphs, :mod:`.quantize`): TensorRT 10.1 deprecated and TensorRT 11 removed
implicit calibration (``IInt8EntropyCalibrator2``, ``BuilderFlag.INT8``), so fastsam2 has no
TensorRT calibrator. What stays here is TensorRT-free: checking recorded feeds against a spec, the
most common feed shapes (:func:`calibration_shapes`), a shape-filtered feed queue, and
:func:`fastsam2.runtime.outdir.write_bytes_atomic`, used for engines, metadata and caches.
"""

from __future__ import annotations

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


