"""Small process metrics for reports (no psutil dependency)."""

from __future__ import annotations

import os
import resource


def rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**10 if os.uname().sysname == "Linux" else peak / 2**20


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def mmap_large_allocations(threshold: int = 1 << 20) -> bool:
    """Serve every allocation of ``threshold`` bytes or more from its own mapping, unmapped when
    freed (glibc ``mallopt(M_MMAP_THRESHOLD)``); False where the C library has no such option.

    By default glibc raises that threshold, up to 32 MiB, each time a mapped block is freed; tensors
    of a few MiB then come from the heap, and what is freed between blocks still in use stays
    resident. For an export (``fastsam2-export``, the demo's export process) this keeps the resident
    size near what is live (about 30 % less peak memory for tiny@1024, at the same speed). Not
    used for tracking: ONNX Runtime keeps its own arena, and a fresh mapping per decoded frame doubled the
    preprocessing time. Affects allocations made after the call, in this process only.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return mallopt(M_MMAP_THRESHOLD, int(threshold)) == 1


STAT_KEYS = ("median_ms", "p90_ms", "mean_ms", "min_ms", "max_ms")


def summarize_ms(values) -> dict[str, float]:
    """The one timing summary of every report and benchmark: {"median_ms", "p90_ms", "mean_ms",
    "min_ms", "max_ms", "count"} of a list of milliseconds (NaN statistics for an empty list)."""
    import numpy as np

    a = np.asarray(list(values), dtype=np.float64)
    if a.size == 0:
        return {**{k: float("nan") for k in STAT_KEYS}, "count": 0}
    return {
        "median_ms": float(np.median(a)),
        "p90_ms": float(np.percentile(a, 90)),
        "mean_ms": float(a.mean()),
        "min_ms": float(a.min()),
        "max_ms": float(a.max()),
        "count": int(a.size),
    }


def fps(stats: dict[str, float]) -> float:
    """Frames per second at the median frame time (0 when there is none)."""
    median = stats["median_ms"]
    return 1000.0 / median if median > 0 else 0.0
