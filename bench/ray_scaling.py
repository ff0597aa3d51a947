"""Videos/s of ``fastsam2 eval --run --ray`` with 1, 2, ... workers, in one run on one cluster.

Every run tracks the same videos into a fresh output folder; throughput is the job's own figure
(videos tracked / wall time from the first video handed out to the last one done: actor start-up and
model loading are excluded and reported separately). Without ``--dataset`` a synthetic DAVIS-layout set
is built from ``../shared/data/bedroom`` (``--videos`` sequences of ``--frames`` frames, two objects).

This CPU (2 cores, shared with other jobs; each worker gets 1 CPU and 1 torch thread):

    python bench/ray_scaling.py --workers 1,2 --json bench/results/ray_scaling_cpu.json

A multi-GPU Ray cluster (one actor per GPU; start the cluster first: ``ray start --head`` on the head,
``ray start --address=HEAD:6379`` on every other node, fastsam2 installed on all of them; a real DAVIS
root avoids copying the synthetic set to every node):

    python bench/ray_scaling.py --ray auto --workers 1,2,4,8 --backend torch --device cuda \
        --image-size 1024 --dataset /data/DAVIS --json ray_scaling_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BEDROOM = REPO.parent / "shared" / "data" / "bedroom"


def synthetic_davis(root: Path, videos: int, frames: int) -> Path:
    """A DAVIS-layout set: ``videos`` sequences of ``frames`` bedroom frames, two moving boxes each."""
    from fastsam2.runtime.output import save_indexed_png

    src = sorted(BEDROOM.glob("*.jpg"))
    if len(src) < frames:
        sys.exit(f"need {frames} frames in {BEDROOM}, found {len(src)}")
    for v in range(videos):
        seq = f"seq{v:03d}"
        img_dir, ann_dir = root / "JPEGImages" / "480p" / seq, root / "Annotations" / "480p" / seq
        img_dir.mkdir(parents=True)
        first = (v * 7) % (len(src) - frames + 1)
        for t in range(frames):
            shutil.copy(src[first + t], img_dir / f"{t:05d}.jpg")
            labels = np.zeros((540, 960), np.uint8)
            labels[100 + 3 * t : 300 + 3 * t, 200:420] = 1
            labels[320:500, 600 + 2 * t : 800] = 2
            save_indexed_png(ann_dir / f"{t:05d}.png", labels)
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    ap.add_argument("--ray", default="local", help="'local' (start one here) or a cluster address ('auto')")
    ap.add_argument("--dataset", default=None, help="DAVIS-layout root (default: a synthetic set)")
    ap.add_argument("--videos", type=int, default=8, help="synthetic set: number of videos (default 8)")
    ap.add_argument("--frames", type=int, default=6, help="synthetic set: frames per video (default 6)")
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--graphs", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--keep", default="1.0", help="keep ratios (eval --keeps; default 1.0)")
    ap.add_argument("--json", required=True, help="write the results here")
    args = ap.parse_args()

    import ray

    from fastsam2.tools.cli import main as fastsam2

    counts = [int(w) for w in args.workers.split(",")]
    load_start = os.getloadavg()
    os.environ.setdefault("TQDM_DISABLE", "1")
    if args.ray == "local":
        ray.init(num_cpus=max(counts) if args.device == "cpu" else None, include_dashboard=False)
    else:
        ray.init(address=args.ray)
    work = Path(tempfile.mkdtemp(prefix="fastsam2_ray_scaling_"))
    try:
        dataset = Path(args.dataset) if args.dataset else synthetic_davis(work / "davis", args.videos, args.frames)
        runs = []
        for n in counts:
            js = work / f"w{n}.json"
            cmd = ["eval", "--run", "--dataset", str(dataset), "--keeps", args.keep, "--config", args.config,
                   "--backend", args.backend, "--device", args.device, "--image-size", str(args.image_size),
                   "--out", str(work / f"out_w{n}"), "--json", str(js), "--ray", args.ray, "--workers", str(n)]
            if args.graphs:
                cmd += ["--graphs", args.graphs]
            t0 = time.perf_counter()
            if fastsam2(cmd) != 0:
                return 1
            total = time.perf_counter() - t0
            data = json.loads(js.read_text())
            job = data["job"]
            runs.append({"workers": n, "videos_per_s": job["videos_per_s"], "frames_per_s": job["frames_per_s"],
                         "videos": job["videos_run"], "frames": job["frames_run"], "job_wall_s": job["wall_s"],
                         "command_wall_s": round(total, 3), "jf_mean": data["results"][0]["jf_mean"],
                         "hosts": data["ray"]["hosts"],
                         # per-video tracking speed inside each worker: if it drops as workers are added,
                         # the workers share cores (other load), not wait on the scheduler
                         "per_video_fps_mean": float(np.mean([v["fps"] for v in data["videos"]])),
                         "distinct_worker_pids": len({v["worker"]["pid"] for v in data["videos"]})})
        base = runs[0]["videos_per_s"]
        for r in runs:
            r["speedup_vs_first"] = r["videos_per_s"] / base if base else None
        # the same masks whatever the worker count: the J&F must not move
        same = len({r["jf_mean"] for r in runs}) == 1
        result = {
            "what": "fastsam2 eval --run --ray: videos/s vs number of Ray workers (one run, one cluster)",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "dataset": str(args.dataset or f"synthetic: {args.videos} videos x {args.frames} frames (bedroom)"),
            "model": {"config": args.config, "backend": args.backend, "device": args.device,
                      "image_size": args.image_size, "weights": "random-init" if args.backend == "torch" else None},
            "cluster": {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")},
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__,
                        "loadavg_at_start": load_start, "loadavg_at_end": os.getloadavg()},
            "jf_equal_across_worker_counts": same,
            "runs": runs,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({r["workers"]: round(r["videos_per_s"], 3) for r in runs}), "videos/s;",
              f"speedup {runs[-1]['speedup_vs_first']:.2f}x", file=sys.stderr)
        return 0 if same else 1
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
