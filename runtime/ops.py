"""The few array operations the tracker loop does between graphs, for each array library.

The graphs do the heavy lifting; between them the tracker only concatenates memory, picks kept
tokens, stores memory compactly and resizes masks. ONNX Runtime works on numpy arrays
(:class:`NumpyOps`); the torch and TensorRT backends keep everything on the device as torch tensors
(:class:`TorchOps`), so the memory bank never leaves the GPU.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

Array = Any


class NumpyOps:
    """Host arrays. The memory bank holds bf16 bit patterns (uint16): half the bytes of float32 and
    the same rounding SAM2's predictor applies when it stores ``maskmem_features`` as bfloat16."""

    name = "numpy"
    device = "cpu"

    def synchronize(self) -> None:
        """Host arrays: nothing runs asynchronously."""

    def asarray(self, x: np.ndarray, dtype: str | None = None) -> np.ndarray:
        x = np.asarray(x)
        return np.ascontiguousarray(x if dtype is None else x.astype(dtype, copy=False))

    def to_numpy(self, x: Array) -> np.ndarray:
        return np.asarray(x)

    def cat(self, xs: Sequence[np.ndarray], axis: int = 0) -> np.ndarray:
        return xs[0] if len(xs) == 1 else np.concatenate(xs, axis=axis)

    def arange(self, n: int) -> np.ndarray:
        return np.arange(n, dtype=np.int64)

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
        """Indices [k] int64 of the k largest scores of a 1-D array, in ascending index order."""
        if k >= scores.shape[0]:
            return np.arange(scores.shape[0], dtype=np.int64)
        idx = np.argpartition(-scores, k - 1)[:k]
        return np.sort(idx).astype(np.int64)

    def resize_bilinear(self, x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        from .postprocess import resize_bilinear

        return resize_bilinear(x, size)

    def non_overlapping(self, masks: np.ndarray) -> np.ndarray:
        from .postprocess import non_overlapping

        return non_overlapping(masks)

    def nbytes(self, x: np.ndarray) -> int:
        return int(x.nbytes)


class TorchOps:
    """torch tensors on one device (CPU or CUDA); memory stored as bfloat16 like SAM2's predictor."""

    name = "torch"

    def __init__(self, device: str = "cpu"):
        import torch

        self.torch = torch
        self.device = torch.device(device)

    def synchronize(self) -> None:
        """Wait for the device's queued work (timing); a no-op on the CPU."""
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def asarray(self, x: Any, dtype: str | None = None):
        t = self.torch.as_tensor(x) if not isinstance(x, self.torch.Tensor) else x
        if dtype is not None:
            t = t.to(getattr(self.torch, dtype))
        return t.to(self.device, non_blocking=True)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.cpu().numpy()

    def cat(self, xs: Sequence[Any], axis: int = 0):
        return xs[0] if len(xs) == 1 else self.torch.cat(list(xs), dim=axis)

    def arange(self, n: int):
        return self.torch.arange(n, dtype=self.torch.int64, device=self.device)

    def full(self, shape: tuple[int, ...], value: float, dtype: str = "float32"):
        return self.torch.full(shape, value, dtype=getattr(self.torch, dtype), device=self.device)

    def add(self, x, y):
        return x + y

    def clip(self, x, lo: float, hi: float):
        return self.torch.clamp(x, lo, hi)

    def pack_memory(self, x):
        return x.to(self.torch.bfloat16)

    def unpack_memory(self, x):
        return x.float()

    def topk_sorted(self, scores, k: int):
        if k >= scores.shape[0]:
            return self.arange(scores.shape[0])
        idx = self.torch.topk(scores, k, sorted=False).indices
        return self.torch.sort(idx).values

    def resize_bilinear(self, x, size: tuple[int, int]):
        import torch.nn.functional as F

        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def non_overlapping(self, masks):
        """SAM2's _apply_non_overlapping_constraints: [O,1,H,W] logits, only the best object per pixel
        keeps its score, the others are clamped to at most -10."""
        if masks.shape[0] == 1:
            return masks
        winner = self.torch.argmax(masks, dim=0, keepdim=True)
        idx = self.arange(masks.shape[0]).reshape(-1, 1, 1, 1)
        return self.torch.where(winner == idx, masks, self.torch.clamp(masks, max=-10.0))

    def nbytes(self, x) -> int:
        return int(x.numel() * x.element_size())
