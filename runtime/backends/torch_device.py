"""The device path of every GPU backend (torch, TensorRT), needing only torch: frames preprocessed on
the device (PIL's bicubic resize and SAM2's normalization as tensor arithmetic), host arrays uploaded
through pinned staging memory, and the shape-bucket cache of captured CUDA graphs.

On the CPU the same arithmetic runs on CPU tensors (no pinned memory): the TensorRT runner's tests
drive it through an ONNX Runtime stand-in engine without a GPU.
"""

from __future__ import annotations

import functools
from typing import Any, Generic, Hashable, TypeVar

import numpy as np

from .base import MAX_CUDA_GRAPHS
from .torch_ops import TorchOps

Entry = TypeVar("Entry")


class ShapeBuckets(Generic[Entry]):
    """Captured CUDA graphs keyed by their feed's shapes (``key``: the tuple of input shapes/dtypes),
    at most ``limit`` of them. A shape over the budget, or one whose capture failed, is remembered and
    runs without a graph from then on (:meth:`eager`)."""

    def __init__(self, limit: int = MAX_CUDA_GRAPHS):
        self.limit = limit
        self.entries: dict[Hashable, Entry] = {}
        self._eager: set[Hashable] = set()

    def get(self, key: Hashable) -> Entry | None:
        return self.entries.get(key)

    def eager(self, key: Hashable) -> bool:
        """Whether ``key`` runs without a graph: refused before, or new while the budget is spent."""
        if key in self._eager:
            return True
        if key not in self.entries and len(self.entries) >= self.limit:
            self._eager.add(key)
            return True
        return False

    def add(self, key: Hashable, entry: Entry | None) -> None:
        """Keep ``entry`` for ``key``; None marks the shape as uncapturable."""
        if entry is None:
            self._eager.add(key)
        else:
            self.entries[key] = entry

    def values(self) -> list[Entry]:
        return list(self.entries.values())

    def items(self) -> list[tuple[Hashable, Entry]]:
        return list(self.entries.items())

    def clear(self) -> None:
        self.entries.clear()
        self._eager.clear()

    def __len__(self) -> int:
        return len(self.entries)


class DeviceTorchOps(TorchOps):
    """TorchOps with frames preprocessed on the device (``compile``: that arithmetic through
    ``torch.compile``) and, on CUDA, no hidden host synchronization: host arrays go up through pinned
    memory asynchronously (a pageable copy may wait for the whole stream). On the CPU the same
    arithmetic runs on CPU tensors."""

    def __init__(self, device: str = "cuda", compile: bool = False):
        super().__init__(device)
        # the resize and normalization: one kernel per pass compiled, a gather, product and sum eager
        self._normalize = self.torch.compile(normalize_frames, dynamic=None) if compile else normalize_frames

    @property
    def pinned(self) -> bool:
        return self.device.type == "cuda"

    def asarray(self, x: Any, dtype: str | None = None):
        if not self.pinned:
            return super().asarray(x, dtype)
        torch = self.torch
        if isinstance(x, torch.Tensor):
            t = x if dtype is None else x.to(getattr(torch, dtype))
            if t.device.type == "cpu":
                t = t.contiguous().pin_memory()
        else:
            a = np.asarray(x) if dtype is None else np.asarray(x).astype(dtype, copy=False)
            t = torch.empty(a.shape, dtype=torch.from_numpy(np.empty(0, a.dtype)).dtype, pin_memory=True)
            t.numpy()[...] = a  # one host copy, straight into pinned memory
        # the caching host allocator keeps the pinned block until the copy has run
        return t.to(self.device, non_blocking=True)

    def preprocess_frame(self, image: np.ndarray, image_size: int, mean, std):
        """RGB uint8 [H,W,3] → normalized float32 [1,3,S,S] on the device (see :meth:`preprocess_frames`)."""
        return self.preprocess_frames([image], image_size, mean, std)[0]

    def preprocess_frames(self, images: list[np.ndarray], image_size: int, mean, std,
                          windows: list[tuple[int, int, int, int] | None] | None = None) -> list:
        """RGB uint8 [H,W,3] frames → normalized float32 [1,3,S,S] each, on the device; frames of one
        size are uploaded and resized as one batch (several camera streams: one launch chain).

        ``windows[i]`` (y0, y1, x0, x1): frame i's output is only those rows and columns of the S x S
        frame, [1,3,y1-y0,x1-x0], equal to that part of the whole frame's: each output takes the same
        taps, and only the input pixels the window's taps read are copied up. Frames of one size whose
        windows have one shape share a batch wherever the windows are (each frame its own taps), as
        the region encoder batches their rectangles.

        PIL's default resize (bicubic, a=-0.5), done as PIL does it: horizontal pass, rounded to
        uint8 levels, then vertical pass, rounded (:func:`normalize_frames`): equal to the host path
        except for one uint8 level on ~1e-5 of the values (PIL's fixed-point arithmetic). Each pass
        gathers its few taps per output (:func:`pil_bicubic_taps`, torch's antialiased-bicubic
        weights) instead of calling that kernel, which also runs an identity pass over the other axis.
        """
        torch = self.torch
        for image in images:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(
                    f"frames must be RGB uint8 arrays of shape [H, W, 3], got {image.dtype} {image.shape}"
                )
        s = int(image_size)
        windows = list(windows) if windows is not None else [None] * len(images)
        if len(windows) != len(images):
            raise ValueError(f"{len(images)} frames, {len(windows)} windows")
        key = (tuple(mean), tuple(std))
        if getattr(self, "_norm_key", None) != key:
            self._norm = (
                torch.tensor(mean, dtype=torch.float32, device=self.device).reshape(1, 3, 1, 1),
                torch.tensor(std, dtype=torch.float32, device=self.device).reshape(1, 3, 1, 1),
            )
            self._norm_key = key
        out: list = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for i, (image, win) in enumerate(zip(images, windows)):
            win = (0, s, 0, s) if win is None else tuple(int(v) for v in win)
            if not (0 <= win[0] < win[1] <= s and 0 <= win[2] < win[3] <= s):
                raise ValueError(f"frame {i}: window {win} is not inside the {s} x {s} frame")
            windows[i] = win
            groups.setdefault((image.shape[:2], win[1] - win[0], win[3] - win[2]), []).append(i)
        for ((h, w), *_), idx in groups.items():
            (c0, cw), *taps_w = _batch_taps([window_taps(w, s, *windows[i][2:], self.device) for i in idx], w)
            (r0, rh), *taps_h = _batch_taps([window_taps(h, s, *windows[i][:2], self.device) for i in idx], h)
            # one host copy per frame, straight into pinned memory; each frame's upload starts at
            # once and runs while the next frame is copied
            shape = (len(idx), rh, cw, 3)
            host = torch.empty(shape, dtype=torch.uint8, pin_memory=self.pinned)
            x = torch.empty(shape, dtype=torch.uint8, device=self.device)
            staged = host.numpy()
            for j, i in enumerate(idx):
                staged[j] = images[i][r0[j]:r0[j] + rh, c0[j]:c0[j] + cw]
                x[j].copy_(host[j], non_blocking=True)
            x = self._normalize(x, *taps_w, *taps_h, *self._norm)
            for j, i in enumerate(idx):
                out[i] = x[j : j + 1]
        return out


def window_taps(n_in: int, n_out: int, a: int, b: int, device: Any) -> tuple[tuple[int, int], Any, Any]:
    """Outputs a:b of :func:`pil_bicubic_taps` (n_in → n_out) → ((lo, hi): the input positions
    their taps read, their taps' indices into input[lo:hi], their weights), the weights (and so the
    arithmetic) those outputs have in the whole resize. Cached per sizes and window."""
    return _window_taps(int(n_in), int(n_out), int(a), int(b), str(device))


def _batch_taps(taps: list[tuple[tuple[int, int], Any, Any]], n_in: int) -> tuple[tuple[list[int], int], Any, Any]:
    """:func:`window_taps` of the frames of one batch (windows of one length) → ((each frame's first
    input position, the crop length they share), indices, weights): [n_out, T] when every frame has
    the same taps, else [B, n_out, T], each frame's indices into its own crop. Crops take the
    longest span, moved inside the input where needed; the extra pixels carry no weight (nor do the
    unused taps, whose shifted index stays inside the crop)."""
    import torch

    n = max(hi - lo for (lo, hi), _, _ in taps)
    starts = [min(lo, n_in - n) for (lo, _), _, _ in taps]
    if all(t is taps[0] for t in taps):
        return (starts, n), taps[0][1], taps[0][2]
    idx = torch.stack([i + (lo - s0) for ((lo, _), i, _), s0 in zip(taps, starts)])
    return (starts, n), idx, torch.stack([w for _, _, w in taps])


@functools.lru_cache(maxsize=256)
def _window_taps(n_in: int, n_out: int, a: int, b: int, device: str) -> tuple[tuple[int, int], Any, Any]:
    import torch

    idx, w = _taps(n_in, n_out, device)
    if (a, b) == (0, n_out):
        return (0, n_in), idx, w
    lo, hi = _reads(n_in, n_out, device)
    lo, hi = int(lo[a:b].min()), int(hi[a:b].max())
    # the window's taps, indices shifted into input[lo:hi] (unused taps: index 0, weight 0)
    local = torch.where(w[a:b] != 0, idx[a:b] - lo, 0)
    return (lo, hi), local.contiguous(), w[a:b].contiguous()


@functools.lru_cache(maxsize=32)
def _reads(n_in: int, n_out: int, device: str) -> tuple[np.ndarray, np.ndarray]:
    """Per output of :func:`pil_bicubic_taps`: the first input position its taps read and one past
    the last, on the host (one copy back per sizes, so a new window needs none)."""
    idx, w = (t.cpu().numpy() for t in _taps(n_in, n_out, device))
    used = w != 0
    return np.where(used, idx, n_in).min(1), np.where(used, idx + 1, 0).max(1)


def pil_bicubic_taps(n_in: int, n_out: int, device: Any) -> tuple[Any, Any]:
    """PIL's bicubic resize of one axis (a=-0.5, support widened when shrinking, as torch's
    antialiased bicubic computes it) as taps: int64 indices [n_out, T] into the input axis and
    float32 weights [n_out, T] (unused taps: weight 0). Read off torch's own kernel on ``device``
    by resizing the identity, so the weights are that kernel's, bit for bit. Cached per sizes."""
    return _taps(int(n_in), int(n_out), str(device))


@functools.lru_cache(maxsize=32)
def _taps(n_in: int, n_out: int, device: str) -> tuple[Any, Any]:
    import torch
    import torch.nn.functional as F

    eye = torch.eye(n_in, device=device).reshape(1, 1, n_in, n_in)  # row r: an impulse at r
    weights = F.interpolate(eye, size=(n_in, n_out), mode="bicubic", align_corners=False, antialias=True)[0, 0]
    rows = torch.arange(n_in, device=device)[:, None].expand(n_in, n_out)
    taps = int((weights != 0).sum(0).max())
    # the input positions of each output's nonzero weights, ascending, padded with weight-0 taps
    pos = torch.where(weights != 0, rows, n_in).sort(dim=0).values[:taps]
    used = pos < n_in
    pos = torch.where(used, pos, 0)
    w = torch.where(used, weights.gather(0, pos), 0.0)
    return pos.T.contiguous(), w.T.contiguous()


def resample_axis(x: Any, idx: Any, w: Any, dim: int) -> Any:
    """``x`` float32 [B, ..., n_in at ``dim``, ...] resampled along ``dim`` by taps ``idx``/``w``
    [n_out, T] (:func:`pil_bicubic_taps`), or [B, n_out, T] (frame b's own) → [B, ..., n_out at
    ``dim``, ...]."""
    dim = dim % x.dim()
    after = [1] * (x.dim() - dim - 1)
    if idx.dim() == 2:
        g = x.index_select(dim, idx.reshape(-1)).unflatten(dim, idx.shape)  # [..., n_out, T, ...]
        return (g * w.reshape(*w.shape, *after)).sum(dim + 1)
    b, n_out, t = idx.shape
    before = [1] * (dim - 1)
    index = idx.reshape(b, *before, n_out * t, *after).expand(*x.shape[:dim], n_out * t, *x.shape[dim + 1:])
    g = x.gather(dim, index).unflatten(dim, (n_out, t))  # [B, ..., n_out, T, ...]
    return (g * w.reshape(b, *before, n_out, t, *after)).sum(dim + 1)


def normalize_frames(x: Any, idx_w: Any, w_w: Any, idx_h: Any, w_h: Any, mean: Any, std: Any) -> Any:
    """uint8 frames [B,H,W,3] → normalized float32 [B,3,S,S] as SAM2's loader makes them: PIL's
    bicubic resize (horizontal pass rounded to uint8 levels, then the vertical pass, rounded; taps of
    :func:`pil_bicubic_taps`), then (x/255 - mean) / std (mean/std [1,3,1,1])."""
    x = x.permute(0, 3, 1, 2).float()
    x = resample_axis(x, idx_w, w_w, -1).round().clamp(0.0, 255.0)
    x = resample_axis(x, idx_h, w_h, -2).round().clamp(0.0, 255.0)
    return ((x / 255.0 - mean) / std).contiguous()
