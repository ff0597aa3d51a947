"""GPU smoke check for the fastsam2 torch GPU path (run before the full benchmark).

1. parity on the GPU: fastsam2 fp32 eager vs the official predictor fp32, 12 frames, max |Δ| logits;
2. the GPU path (bf16 + CUDA graphs + device preprocessing + device results + K bucketing) against
   the same settings without graphs: max |Δ| logits over 30 frames at keep 1.0 and 0.3 (graphs must
   replay what eager computes), and ms/frame of both (synchronized per frame, median of frames 20..29).

    python bench/gpu_smoke.py [--image-size 1024] [--frames 30]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fastsam2.export.models import build_sam2
from fastsam2.export.torch_backend import build_torch_backend
from fastsam2.tools.bench import DEFAULT_FRAMES_DIR, PROMPT_BOX, PROMPT_POINT, SampleFrames
from fastsam2.runtime.router import make_router
from fastsam2.runtime.tracker import Prompt, SAM2Tracker, TrackerOptions


def track(backend, frames, n, keep, gpu_path):
    router = make_router(backend) if keep < 1 else None
    tr = SAM2Tracker(backend, TrackerOptions(
        keep_ratio=keep, fill_hole_area=0, profile_stages=False, k_multiple=128 if gpu_path else 1,
        device_results=gpu_path, device_preprocess=gpu_path), router=router)
    logits, ms = [], []
    for t in range(n):
        prompts = {1: Prompt(points=[PROMPT_POINT], labels=[1], box=list(PROMPT_BOX))} if t == 0 else None
        t0 = time.perf_counter()
        r = tr.track(frames.image(t), prompts)
        torch.cuda.synchronize()
        ms.append((time.perf_counter() - t0) * 1e3)
        lg = r.logits
        logits.append(lg.float().cpu().numpy() if torch.is_tensor(lg) else lg)
    return logits, ms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--frames-dir", default=str(DEFAULT_FRAMES_DIR))
    args = ap.parse_args()
    frames = SampleFrames(args.frames_dir)
    model = build_sam2("tiny", device="cuda", image_size=args.image_size, object_score_bias=5.0, quiet=True)
    # 1. parity on the GPU (fp32 both sides)
    with tempfile.TemporaryDirectory() as tmp:
        folder = frames.link_folder(12, Path(tmp))
        with torch.inference_mode():
            st = model.init_state(str(folder))
            model.add_new_points_or_box(st, 0, 1, points=[PROMPT_POINT], labels=[1], box=list(PROMPT_BOX))
            ref = {t: m[:, 0].float().cpu().numpy() for t, _, m in model.propagate_in_video(st)}
    ours, _ = track(build_torch_backend(model), frames, 12, 1.0, False)
    d = max(float(np.abs(ref[t] - ours[t]).max()) for t in range(12))
    fg = np.mean([(ref[t] > 0).mean() for t in range(12)])
    print(f"parity fp32 eager vs official on GPU, 12 frames: max |dlogit| = {d:.2e} (official fg {fg:.3f})")
    # 2. graphs vs eager, bf16 GPU path
    eager_be = build_torch_backend(model, autocast_dtype="bfloat16")
    graph_be = build_torch_backend(model, autocast_dtype="bfloat16", cuda_graphs=True)
    for keep in (1.0, 0.3):
        e_logits, e_ms = track(eager_be, frames, args.frames, keep, True)
        g_logits, g_ms = track(graph_be, frames, args.frames, keep, True)
        diff = [float(np.abs(a - b).max()) for a, b in zip(e_logits, g_logits)]
        agree = np.mean([((a > 0) == (b > 0)).mean() for a, b in zip(e_logits, g_logits)])
        tail = slice(20, None)
        print(f"keep {keep}: graphs vs eager bf16 max |dlogit| first 5 frames {max(diff[:5]):.2e}, "
              f"all {max(diff):.2e}, mask agreement {agree:.5f}; ms/frame median frames 20+: "
              f"eager {statistics.median(e_ms[tail]):.2f}, graphs {statistics.median(g_ms[tail]):.2f}")
    counts = {k: len(r.graphs) for k, r in graph_be.runners.items() if getattr(r, "cuda_graphs", False)}
    print("graphs captured per stage:", counts)
    print(f"max allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
