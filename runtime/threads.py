"""Intra-op thread counts for torch and ONNX Runtime, chosen from the cores actually free.

Both libraries default to one thread per core and let idle threads spin. On a shared machine that
is the worst case: threads wait on each other while another process holds a core, and a frame
can take many times longer than with one thread. So fastsam2 decides: an explicit ``--threads N``, else the
cores this process may use (its CPU affinity) that are idle right now, read from ``/proc/stat``
over a short window (the load average lags by minutes), at least one. The choice and what it was
made from go into every report.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

from .errors import UsageError

SAMPLE_S = 0.25  # how long the idle time of the CPUs is sampled


@dataclass(frozen=True)
class ThreadPlan:
    """Intra-op threads for torch and ONNX Runtime, and what they were chosen from."""

    threads: int
    cores: int  # CPUs this process may run on
    idle_cores: float | None  # idle CPUs measured at the choice (None: not measured)
    source: str  # "--threads" (the user's) or "idle cores"

    def to_json(self) -> dict:
        return asdict(self)


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask; a container's cpuset shows here)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(idle + iowait, total) jiffies summed over all CPUs, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:]]
    return values[3] + (values[4] if len(values) > 4 else 0), sum(values[:8])


def idle_cores(window_s: float = SAMPLE_S) -> float | None:
    """Idle CPUs (machine-wide, in CPUs) averaged over ``window_s``; None where /proc/stat is absent."""
    first = _cpu_times()
    if first is None:
        return None
    time.sleep(window_s)
    second = _cpu_times()
    if second is None or second[1] <= first[1]:
        return None
    idle_frac = (second[0] - first[0]) / (second[1] - first[1])
    return idle_frac * (os.cpu_count() or 1)


def plan_threads(requested: int | None = None) -> ThreadPlan:
    """``requested`` threads (a user's ``--threads``, refused above the cores this process may use),
    else the idle CPUs among those, rounded to the nearest whole CPU, at least one."""
    cores = usable_cores()
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be >= 1, got {requested}")
        if requested > cores:
            # more intra-op threads than cores only adds spinning threads (999 made ONNX Runtime
            # start ~5,000 threads and finish no frame): refused, the same for every backend
            raise UsageError(f"--threads {requested}: this process may run on {cores} CPU core(s); "
                             f"give at most {cores} (or leave --threads out)")
        return ThreadPlan(int(requested), cores, None, "--threads")
    idle = idle_cores()
    threads = cores if idle is None else max(1, min(cores, int(idle + 0.5)))
    return ThreadPlan(threads, cores, None if idle is None else round(idle, 2), "idle cores")
