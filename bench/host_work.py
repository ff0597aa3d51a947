"""Host work per frame of the image-encoder step, preprocessing on the host vs on the device.

The torch and TensorRT backends share their device ops (``runtime/backends/torch_device.py``); this
times the tracker's ``encode_images`` on the torch backend (tiny, random weights, bf16 on CUDA) with
``device_preprocess`` off (PIL resize + normalize on the host, then upload) and on (pinned staging,
upload, resize and normalize on the GPU). Reported per frame: the process's CPU time (all host
threads, ``time.process_time``) and wall time until ``encode_images`` returns with the step issued,
and the wall time until the GPU finished it.

    python3 bench/host_work.py --frames-dir .bench_frames/bedroom --frames 60 --json host_work.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    import numpy as np
    import torch
    from PIL import Image

    from fastsam2 import open_backend
    from fastsam2.runtime.tracker import SAM2Tracker, TrackerOptions

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames-dir", required=True)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--batch", default="1,8", help="frames per encoder call")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    paths = sorted(Path(args.frames_dir).glob("*.jpg"))[: args.frames]
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    backend = open_backend("torch", config="tiny", device="cuda", dtype="bfloat16", quiet=True)
    report = {"device": torch.cuda.get_device_name(), "frame_size": list(frames[0].shape[:2]),
              "frames": len(frames), "runs": []}
    for batch in [int(b) for b in args.batch.split(",")]:
        for device_pre in (False, True):
            # no per-stage synchronization: what is timed is the host issuing the step
            tracker = SAM2Tracker(backend, TrackerOptions(device_preprocess=device_pre, profile_stages=False))
            calls = [[(f, i) for i, f in enumerate(frames[s:s + batch], s)] for s in range(0, len(frames), batch)]
            for _ in range(2):  # warm-up: kernels, pinned buffers
                tracker.encode_images(calls[0])
            torch.cuda.synchronize()
            cpu, wall, done = 0.0, 0.0, 0.0
            for c in calls:
                cpu0, wall0 = time.process_time(), time.perf_counter()
                tracker.encode_images(c)  # returns once the step is issued
                cpu += time.process_time() - cpu0
                wall += time.perf_counter() - wall0
                torch.cuda.synchronize()  # the GPU's time is not the host's (spin-waiting excluded)
                done += time.perf_counter() - wall0
            n = sum(len(c) for c in calls)
            row = {"batch": batch, "device_preprocess": device_pre,
                   "host_cpu_ms_per_frame": round(cpu * 1e3 / n, 3),
                   "host_issue_wall_ms_per_frame": round(wall * 1e3 / n, 3),
                   "step_wall_ms_per_frame": round(done * 1e3 / n, 3)}
            report["runs"].append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
