"""Calibration data: record real feeds of a graph while tracking, and read them back.

The protocol is ONNX Runtime's ``CalibrationDataReader`` (onnxruntime/quantization/calibrate.py):
``get_next()`` returns one feed ``{input name: numpy array}`` or None at the end; ``rewind()`` starts
over. The QDQ quantizers (``calibration/qdq.py`` for TensorRT, ``calibration/ort_quant.py``) can
both consume it.

    runner = FeedRecorder(runner, "calib/", max_feeds=64, every=4)   # wrap while tracking videos
    ...
    reader = DirectoryCalibrationReader("calib/", "memory_attention")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np

from fastsam2.runtime.backends.base import StageRunner


@runtime_checkable
class CalibrationDataReader(Protocol):
    """Yields calibration feeds; None ends the stream."""

    def get_next(self) -> dict[str, np.ndarray] | None: ...

    def rewind(self) -> None: ...


def to_numpy(value: Any) -> np.ndarray:
    """A host numpy copy of a numpy array or torch tensor (any device)."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        return value.detach().cpu().numpy()
    return np.asarray(value)


class FeedRecorder(StageRunner):
    """A runner that runs ``runner`` and saves every ``every``-th feed as
    ``out_dir/<graph name>/00000.npz`` (one array per input), at most ``max_feeds`` files.

    Recording stops silently at ``max_feeds``: the wrapped runner keeps working, so a long video
    can be tracked with the recorder in place. Feeds are saved before inference, so a feed that
    crashes the backend is still on disk to reproduce it.
    """

    def __init__(self, runner: StageRunner, out_dir: str | Path, *, max_feeds: int = 64, every: int = 1):
        if max_feeds < 1:
            raise ValueError(f"max_feeds must be >= 1, got {max_feeds}")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        # The wrapped runner checks feeds against the spec itself; checking twice costs a walk.
        super().__init__(runner.spec, check_inputs=False)
        self.runner = runner
        self.dir = Path(out_dir) / runner.spec.name
        self.max_feeds = max_feeds
        self.every = every
        self.calls = 0
        self.saved = 0

    def activate_impl(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        # Continue numbering after feeds already recorded, never overwrite them.
        self.saved = len(list(self.dir.glob("*.npz")))
        self.runner.activate()

    def deactivate_impl(self) -> None:
        self.runner.deactivate()

    def infer_impl(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        if self.calls % self.every == 0 and self.saved < self.max_feeds:
            arrays = {name: to_numpy(value) for name, value in feed.items()}
            path = self.dir / f"{self.saved:05d}.npz"
            tmp = path.with_name(path.stem + ".tmp.npz")
            np.savez(tmp, **arrays)
            tmp.replace(path)
            self.saved += 1
        self.calls += 1
        return self.runner.infer(feed)


class DirectoryCalibrationReader:
    """Reads the feeds a :class:`FeedRecorder` saved for one graph, in file-name order.

    Raises ValueError when the directory is missing or holds no feeds ("No data is collected", as
    ONNX Runtime's calibrator says), so an empty calibration never builds a silently bad engine.
    """

    def __init__(self, calib_dir: str | Path, graph_name: str):
        self.dir = Path(calib_dir) / graph_name
        self.files = sorted(self.dir.glob("[0-9]*.npz")) if self.dir.is_dir() else []
        self.files = [f for f in self.files if not f.name.endswith(".tmp.npz")]
        if not self.files:
            raise ValueError(
                f"No data is collected for {graph_name!r}: no *.npz feeds in {self.dir} "
                "(record some with FeedRecorder first)"
            )
        self.position = 0

    def __len__(self) -> int:
        return len(self.files)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.files):
            return None
        path = self.files[self.position]
        self.position += 1
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

    def rewind(self) -> None:
        self.position = 0


class ListCalibrationReader:
    """A :class:`CalibrationDataReader` over feeds already in memory ({input name: array} each)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds, self.i = list(feeds), 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def rewind(self) -> None:
        self.i = 0
