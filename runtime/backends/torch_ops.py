"""The tracker loop's array operations on torch tensors (CPU or CUDA): the ops of the torch and
TensorRT backends, whose buffers are torch tensors. The numpy twin is ``fastsam2.runtime.ops.NumpyOps``."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


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

    def marker(self) -> Any:
        """A point in the device's queue of issued work: a recorded ``torch.cuda.Event`` on CUDA
        (``synchronize()``, ``query()``); on the CPU work is done when issued."""
        if self.device.type != "cuda":
            from fastsam2.runtime.ops import Reached

            return Reached()
        event = self.torch.cuda.Event()
        event.record()
        return event

    def to_host_async(self, x: Any) -> Any:
        """Start copying ``x`` to (pinned) host memory behind the work issued so far; read it once a
        later :meth:`marker` is reached. A CPU tensor is returned as it is."""
        return x.to("cpu", non_blocking=True) if x.device.type != "cpu" else x

    def asarray(self, x: Any, dtype: str | None = None):
        t = self.torch.as_tensor(x) if not isinstance(x, self.torch.Tensor) else x
        if dtype is not None:
            t = t.to(getattr(self.torch, dtype))
        return t.to(self.device, non_blocking=True)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.cpu().numpy()

    def cat(self, xs: Sequence[Any], axis: int = 0):
        return xs[0] if len(xs) == 1 else self.torch.cat(list(xs), dim=axis)

    def mask_boxes(self, masks):
        """Bounding boxes of mask logits [N,1,h,w] > 0 → int64 [N,4] (x0, y0, x1, y1 exclusive;
        -1: empty), computed and left where the masks are (a small copy back: ``to_host_async``)."""
        torch = self.torch
        with torch.inference_mode():
            m = masks[:, 0] > 0
            h, w = m.shape[1:]
            rows, cols = m.any(2), m.any(1)  # [N, h], [N, w]
            boxes = torch.stack([cols.int().argmax(1), rows.int().argmax(1), w - cols.flip(1).int().argmax(1),
                                 h - rows.flip(1).int().argmax(1)], 1)
            boxes = torch.where(rows.any(1, keepdim=True), boxes, -1)
            return boxes.long()

    def copy(self, x):
        """A new tensor equal to x."""
        return x.clone()

    def paste(self, dst, src, rows: slice, cols: slice) -> None:
        """dst[..., rows, cols] = src, in place (the stages' outputs are inference tensors)."""
        with self.torch.inference_mode():
            dst[..., rows, cols] = src

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
        """Indices [..., k] int64 of the k largest scores along the last axis, ascending."""
        n = scores.shape[-1]
        if k >= n:
            return self.arange(n).expand(scores.shape).clone()
        idx = self.torch.topk(scores, k, dim=-1, sorted=False).indices
        return self.torch.sort(idx, dim=-1).values

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
