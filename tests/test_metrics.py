"""Process memory: freed large blocks leave the resident set once mmap_large_allocations() is on."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

CHILD = r"""
import sys
import numpy as np
from fastsam2.runtime.metrics import mmap_large_allocations, rss_mb
if sys.argv[1] == "on":
    assert mmap_large_allocations()
big = np.ones(16 << 20, np.uint8)
del big  # glibc now serves blocks below 16 MiB from the heap (its dynamic threshold)
start = rss_mb()
kept, freed = [], []
for _ in range(50):  # 4 MiB blocks, each followed by a small block that stays
    freed.append(np.ones(4 << 20, np.uint8))
    kept.append(np.ones(100_000, np.uint8))
del freed
print(rss_mb() - start)
"""


def _retained_mb(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt(M_MMAP_THRESHOLD) is glibc's")
def test_freed_large_blocks_leave_the_resident_set():
    # 200 MiB freed between live blocks: glibc's default keeps most of it resident, the fixed
    # threshold unmaps every block (what remains is the kept small blocks, 5 MiB)
    assert _retained_mb("off") > 100
    assert _retained_mb("on") < 20
