"""Frames/s of the clip generator (runtime/synth.py) on one CPU core, per split and frame size.

The process is pinned to one core (``os.sched_setaffinity``) and numpy's thread pools are limited to one
thread, as in a data-loader worker. Time is process CPU time (so other jobs on a shared machine do not
count) and wall time; the sample photographs are decoded once before timing, as a long-lived worker
would have them. Every clip is a new seed, so backgrounds, objects and effects vary as in training.

    python bench/synth_speed.py --clips 40 --json bench/results/synth_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def measure(split: str, size: int, clips: int, frames: int | None) -> dict:
    from fastsam2.runtime.synth import DEFAULT_FRAMES, make_clip, sample_photos, _sample_photo

    for path in sample_photos():  # decoded once per process, as in a data-loader worker
        _sample_photo(path)
    make_clip(10**6, split=split, frames=2, size=size)
    n = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for seed in range(clips):
        n += make_clip(seed, split=split, frames=frames, size=size).frames.shape[0]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return dict(split=split, size=size, clips=clips, frames=n,
                frames_per_clip=frames or DEFAULT_FRAMES[split],
                cpu_ms_per_frame=1000 * cpu / n, wall_ms_per_frame=1000 * wall / n,
                frames_per_s_cpu=n / cpu, frames_per_s_wall=n / wall)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=40)
    p.add_argument("--sizes", default="512,256")
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default: the split's)")
    p.add_argument("--core", type=int, default=None, help="core to pin to (default: the first allowed)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    core = args.core if args.core is not None else min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    rows = [measure(split, int(size), args.clips, args.frames)
            for size in args.sizes.split(",") for split in ("train", "hard")]
    print(f"{'split':6s} {'size':>5s} {'frames':>7s} {'ms/frame cpu':>13s} {'ms/frame wall':>14s} {'frames/s':>9s}")
    for r in rows:
        print(f"{r['split']:6s} {r['size']:5d} {r['frames']:7d} {r['cpu_ms_per_frame']:13.2f} "
              f"{r['wall_ms_per_frame']:14.2f} {r['frames_per_s_cpu']:9.1f}")
    if args.json:
        info = dict(command=" ".join(["python", *sys.argv]), core=core, cores=os.cpu_count(),
                    cpu=_cpu_name(), load_average=os.getloadavg(), python=platform.python_version(),
                    rows=rows)
        with open(args.json, "w") as f:
            json.dump(info, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
