"""The one CUDA timing loop of the bench scripts (run as ``python3 bench/<script>.py``: this folder
is on their path)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


def median_us(fn: Callable[..., Any], *args: Any, warmup: int = 5, calls: int = 50) -> float:
    """Median µs of ``fn(*args)`` on the current CUDA stream (CUDA events around each call)."""
    import torch

    for _ in range(warmup):
        fn(*args)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ms = []
    for _ in range(calls):
        start.record()
        fn(*args)
        end.record()
        end.synchronize()
        ms.append(start.elapsed_time(end))
    return float(np.median(ms)) * 1e3
