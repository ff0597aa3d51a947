"""The quantities tests/test_accuracy.py bounds, measured with that file's own clips and helpers.

    PYTHONPATH=$PWD python bench/accuracy_test_margins.py

Prints, for the shipped synthetic model on the test's four held-out clips: keep 1.0 J&F, the still
baseline (first-frame masks copied), the built-in router at keep 0.3, random tokens at keep 0.3 and
0.1, and kept tokens rotated by the wrong RoPE positions at keep 0.3, with the gaps the bounds guard.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import test_accuracy as T

    from fastsam2.export import stages
    from fastsam2.runtime.synth import write_dataset

    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="accuracy_margins_") as tmp:
        root = Path(tmp)
        dataset = write_dataset(root / "hard", **T.CLIPS)
        cells = T._sweep(dataset, root / "sweep", "1,0.3,0.1", "builtin,random")
        full = cells[("all-tokens", 1.0)]["jf_mean"]
        still = T.still_baseline(dataset, root / "still")
        router = cells[("builtin", 0.3)]["jf_mean"]
        random03, random01 = cells[("random", 0.3)]["jf_mean"], cells[("random", 0.1)]["jf_mean"]
        stages.rope_positions = T._rank_positions  # the fault the RoPE test injects
        broken = T._sweep(dataset, root / "broken", "0.3", "builtin")[("builtin", 0.3)]["jf_mean"]
    print(json.dumps({
        "keep1": full, "still": still, "keep1_over_still": full - still,
        "router_03": router, "keep1_minus_router_03": full - router,
        "random_03": random03, "router_03_minus_random_03": router - random03,
        "random_01": random01, "keep1_minus_random_01": full - random01,
        "rope_fault_03": broken, "keep1_minus_rope_fault_03": full - broken,
        "seconds": round(time.time() - t0, 1),
    }, indent=1))


if __name__ == "__main__":
    main()
