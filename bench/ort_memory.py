"""Where ONNX Runtime's memory and time go on the CPU: attention (fused / plain) x arena (shared / one
per session), each configuration in a fresh process (peak RSS is per process).

    python bench/ort_memory.py --graphs DIR [--frames 12] [--objects 2] [--keep 1.0,0.3] --json OUT.json

DIR is a fastsam2 export (``fastsam2-export --config tiny --out DIR``; random weights are fine: time
and memory do not depend on them). Each run tracks the sample clip's first ``--frames`` frames with
``--objects`` objects (the benchmark's prompts) and reports ms per frame (median after the first two
frames), ms per stage and frame, RSS after loading, after the first frame and at the end, and the
process's peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CONFIGS = [("fused", "shared"), ("fused", "session"), ("plain", "shared"), ("plain", "session")]

CHILD = r"""
import json, sys, time
import numpy as np
from fastsam2.runtime.backends.ort import load_ort_backend
from fastsam2.runtime.frames import open_frames
from fastsam2.runtime.metrics import peak_rss_mb, rss_mb
from fastsam2.runtime.threads import plan_threads
from fastsam2.runtime.tracker import Prompt, SAM2Tracker
from fastsam2.tools.bench_inputs import object_prompts
from fastsam2.tools.cli import SAMPLE_CLIP

graphs, attention, arena, keep, n, objects, threads = sys.argv[1:8]
keep, n, objects, threads = float(keep), int(n), int(objects), plan_threads(int(threads) or None)
b = load_ort_backend(graphs, attention=attention, arena=arena, intra_op_threads=threads.threads)
loaded = rss_mb()
tr = SAM2Tracker.from_backend(b, keep=keep, fill_hole_area=0)
prompts = {i: Prompt(points=[p], labels=[1], box=list(bx)) for i, p, bx in object_prompts(objects)}
ms, first = [], None
with open_frames(str(SAMPLE_CLIP)) as src:
    for f in src:
        if f.index >= n:
            break
        t0 = time.perf_counter()
        tr.track(f.image, prompts if f.index == 0 else None)
        ms.append((time.perf_counter() - t0) * 1e3)
        first = first or rss_mb()
print(json.dumps({"attention": attention, "arena": arena, "keep": keep, "frames": n,
                  "objects": objects, "threads": threads.to_json(), "ms_per_frame": float(np.median(ms[2:])),
                  "stage_ms_per_frame": {k: v / n for k, v in tr.times.ms.items()},
                  "rss_loaded_mb": loaded, "rss_first_frame_mb": first, "rss_end_mb": rss_mb(),
                  "peak_rss_mb": peak_rss_mb()}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--graphs", required=True)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--keep", default="1.0,0.3")
    ap.add_argument("--threads", type=int, default=0, help="0: the idle cores, as fastsam2's default")
    ap.add_argument("--configs", default=",".join(f"{a}:{m}" for a, m in CONFIGS),
                    help="attention:arena pairs, comma-separated (default: %(default)s)")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    configs = [tuple(c.split(":")) for c in args.configs.split(",")]
    rows = []
    for keep in [float(k) for k in args.keep.split(",")]:
        for attention, arena in configs:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, args.graphs, attention, arena, str(keep),
                 str(args.frames), str(args.objects), str(args.threads)],
                capture_output=True, text=True, check=True,
            ).stdout.strip().splitlines()[-1]
            row = json.loads(out)
            rows.append(row)
            print(f"keep {keep} attention {attention:5s} arena {arena:14s}: "
                  f"{row['ms_per_frame']:7.0f} ms/frame, RSS loaded {row['rss_loaded_mb']:5.0f} / first frame "
                  f"{row['rss_first_frame_mb']:5.0f} / end {row['rss_end_mb']:5.0f} MB, peak {row['peak_rss_mb']:5.0f} MB; "
                  + ", ".join(f"{k} {v:.0f}" for k, v in row["stage_ms_per_frame"].items()), flush=True)
    Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "runs": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
