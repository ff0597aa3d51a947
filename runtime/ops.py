"""The few array operations the tracker loop does between graphs, for each array library.

The graphs do the heavy lifting; between them the tracker only concatenates memory, picks kept
tokens, stores memory compactly and resizes masks. ONNX Runtime works on numpy arrays
(:class:`NumpyOps`, here); the torch and TensorRT backends keep everything on the device as torch
tensors (:class:`~fastsam2.runtime.backends.torch_ops.TorchOps`, with the backends: it needs torch),
so the memory bank never leaves the GPU. ``tests/test_ops.py`` checks that both compute the same.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

Array = Any


class Reached:
    """A marker (see ``marker()``) for work that is already done: host arrays compute eagerly.
    Device markers (a ``torch.cuda.Event``) have the same two methods."""

    def synchronize(self) -> None:
        """Wait until the work issued before the marker is done."""

    def query(self) -> bool:
        """Whether that work is done, without waiting."""
        return True


class NumpyOps:
    """Host arrays. The memory bank holds bf16 bit patterns (uint16): half the bytes of float32 and
    the same rounding SAM2's predictor applies when it stores ``maskmem_features`` as bfloat16."""

    name = "numpy"
    device = "cpu"

    def synchronize(self) -> None:
        """Host arrays: nothing runs asynchronously."""

    def marker(self) -> Reached:
        """A point in the queue of issued work (``synchronize()``, ``query()``); host: reached."""
        return Reached()

    def to_host_async(self, x: Array) -> np.ndarray:
        """Start copying ``x`` to host memory; read it once a later marker is reached. Host: ``x``."""
        return np.asarray(x)

    def asarray(self, x: np.ndarray, dtype: str | None = None) -> np.ndarray:
        x = np.asarray(x)
        return np.ascontiguousarray(x if dtype is None else x.astype(dtype, copy=False))

    def to_numpy(self, x: Array) -> np.ndarray:
        return np.asarray(x)

    def cat(self, xs: Sequence[np.ndarray], axis: int = 0) -> np.ndarray:
        return xs[0] if len(xs) == 1 else np.concatenate(xs, axis=axis)

    def arange(self, n: int) -> np.ndarray:
        return np.arange(n, dtype=np.int64)

    def mask_boxes(self, masks: np.ndarray) -> np.ndarray:
        """Bounding boxes of mask logits [N,1,h,w] > 0 → int64 [N,4] (x0, y0, x1, y1; x1, y1
        exclusive), all -1 for an empty mask, where the masks are (device ops leave them there)."""
        return mask_boxes(np.asarray(masks)[:, 0] > 0)

    def copy(self, x: np.ndarray) -> np.ndarray:
        """A new array equal to x."""
        return x.copy()

    def paste(self, dst: np.ndarray, src: np.ndarray, rows: slice, cols: slice) -> None:
        """dst[..., rows, cols] = src, in place (dst [1,C,h,w], src [C,h',w'])."""
        dst[..., rows, cols] = src

    def full(self, shape: tuple[int, ...], value: float, dtype: str = "float32") -> np.ndarray:
        return np.full(shape, value, dtype=dtype)

    def add(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x + y).astype(np.float32, copy=False)

    def clip(self, x: np.ndarray, lo: float, hi: float) -> np.ndarray:
        return np.clip(x, lo, hi)

    def pack_memory(self, x: np.ndarray) -> np.ndarray:
        from .postprocess import to_bf16_bits

        return to_bf16_bits(x)

    def unpack_memory(self, x: np.ndarray) -> np.ndarray:
        from .postprocess import from_bf16_bits

        return from_bf16_bits(x)

    def topk_sorted(self, scores: np.ndarray, k: int) -> np.ndarray:
        """Indices [..., k] int64 of the k largest scores along the last axis, ascending."""
        n = scores.shape[-1]
        if k >= n:
            return np.broadcast_to(np.arange(n, dtype=np.int64), scores.shape).copy()
        idx = np.argpartition(-scores, k - 1, axis=-1)[..., :k]
        return np.sort(idx, axis=-1).astype(np.int64)

    def resize_bilinear(self, x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        from .postprocess import resize_bilinear

        return resize_bilinear(x, size)

    def non_overlapping(self, masks: np.ndarray) -> np.ndarray:
        from .postprocess import non_overlapping

        return non_overlapping(masks)

    def nbytes(self, x: np.ndarray) -> int:
        return int(x.nbytes)


def mask_boxes(m: np.ndarray) -> np.ndarray:
    """Boolean masks [N,h,w] → int64 [N,4] bounding boxes (x0, y0, x1, y1 exclusive; -1: empty)."""
    n, h, w = m.shape
    rows, cols = m.any(2), m.any(1)
    boxes = np.stack([cols.argmax(1), rows.argmax(1), w - cols[:, ::-1].argmax(1), h - rows[:, ::-1].argmax(1)], 1)
    boxes[~rows.any(1)] = -1
    return boxes.astype(np.int64)
