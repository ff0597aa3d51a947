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
