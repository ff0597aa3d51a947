"""GPU smoke check for the fastsam2 torch GPU path (run before the full benchmark).

1. parity on the GPU: fastsam2 fp32 eager vs the official predictor fp32, 12 frames, max |Δ| logits;
2. the GPU path (bf16 + CUDA graphs + device preprocessing + device results + K bucketing) against
   the same settings without graphs: max |Δ| logits over 30 frames at keep 1.0 and 0.3 (graphs must
   replay what eager computes), and ms/frame of both (synchronized per frame, median of frames 20..29);
3. ``--compile``: the same GPU path with every stage through torch.compile against eager (bf16:
   compiled kernels round differently, so max |Δ| and the mask agreement are reported), with the
   compile time, and compiled with frozen weights (``freeze_weights=True``) against without;
   ``--compile-only`` runs this part alone;
4. batching: four objects of one stream, and four streams of one object each (one MultiStreamTracker,
   device preprocessing of the four frames as one batch), against each object / stream tracked on
   its own, fp32 eager: max |Δ| logits (row by row the same arithmetic; only the kernels' batch
   size differs).

    python bench/gpu_smoke.py [--image-size 1024] [--frames 30] [--compile | --compile-only]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastsam2.export.models import build_sam2
from fastsam2.export.torch_backend import build_torch_backend
from fastsam2.tools.bench_inputs import BENCH_OBJECTS, DEFAULT_FRAMES_DIR, SampleFrames
from fastsam2.runtime.tracker import Prompt, SAM2Tracker

PROMPT_BOX, PROMPT_POINT = BENCH_OBJECTS[0]  # the benchmark's first object


def track(backend, frames, n, keep, gpu_path):
    tr = SAM2Tracker.from_backend(
        backend, keep=keep, fill_hole_area=0, profile_stages=False, k_multiple=128 if gpu_path else 1,
        device_results=gpu_path, device_preprocess=gpu_path)
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
    ap.add_argument("--compile", action="store_true", help="also check the torch.compile path")
    ap.add_argument("--compile-only", action="store_true", help="only check the torch.compile path")
    args = ap.parse_args()
    frames = SampleFrames(args.frames_dir)
    model = build_sam2("tiny", device="cuda", image_size=args.image_size, object_score_bias=5.0, quiet=True)
    if args.compile_only:
        compiled(model, frames, args.frames, build_torch_backend(model, autocast_dtype="bfloat16"))
        return
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
    if args.compile:
        compiled(model, frames, args.frames, eager_be)
    batching(model, frames)
    # the same without TF32 convolutions (cuDNN's default): what differs between batch sizes is
    # then only the kernels' summation order
    torch.backends.cudnn.allow_tf32 = False
    batching(model, frames, label="cuDNN TF32 off")
    torch.backends.cudnn.allow_tf32 = True
    print(f"max allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


def compiled(model, frames, n: int, eager_be) -> None:
    """Step 3: compiled + graphs against eager bf16, and frozen weights against unfrozen."""
    t0 = time.perf_counter()
    comp_be = build_torch_backend(model, autocast_dtype="bfloat16", cuda_graphs=True, compile=True)
    c_logits, c_ms = track(comp_be, frames, n, 0.3, True)
    e_logits, e_ms = track(eager_be, frames, n, 0.3, True)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(e_logits, c_logits))
    print(f"keep 0.3: compiled+graphs vs eager bf16 max |dlogit| {diff:.2e}, mask agreement "
          f"{_agreement(e_logits, c_logits):.5f}; first run incl. compile {time.perf_counter() - t0:.0f} s; "
          f"ms/frame median frames 20+: compiled {statistics.median(c_ms[20:]):.2f}")
    frozen = build_torch_backend(model, autocast_dtype="bfloat16", cuda_graphs=True, compile=True,
                                 freeze_weights=True)
    f_logits, f_ms = track(frozen, frames, n, 0.3, True)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(f_logits, c_logits))
    print(f"keep 0.3: compiled with frozen weights vs without max |dlogit| {diff:.2e}, mask agreement "
          f"{_agreement(f_logits, c_logits):.5f}; ms/frame median frames 20+: frozen "
          f"{statistics.median(f_ms[20:]):.2f}, not frozen {statistics.median(c_ms[20:]):.2f}")


def _agreement(a: list, b: list) -> float:
    return float(np.mean([((x > 0) == (y > 0)).mean() for x, y in zip(a, b)]))


def batching(model, frames, n: int = 10, label: str = "cuDNN TF32 on (default)") -> None:
    """Four objects together vs one at a time, and four streams together vs four trackers (fp32)."""
    from fastsam2.runtime.streams import MultiStreamTracker
    from fastsam2.tools.bench_inputs import STREAM_OFFSET, object_prompts

    backend = build_torch_backend(model)
    opts: dict[str, Any] = dict(keep=0.3, fill_hole_area=0, profile_stages=False, device_preprocess=True)
    prompts = {i: Prompt(points=[p], labels=[1], box=list(b)) for i, p, b in object_prompts(4)}
    results = []
    for max_batch in (None, 1):
        tr = SAM2Tracker.from_backend(backend, **opts)
        tr.max_batch = max_batch
        tr.router.max_batch = max_batch
        results.append([tr.track(frames.image(t), prompts if t == 0 else None).logits for t in range(n)])
    d = max(float(np.abs(a - b).max()) for a, b in zip(*results))
    fg = min(float((m > 0).mean()) for lg in results[1] for m in lg)
    print(f"{label}: 4 objects batched vs one at a time, fp32, {n} frames: max |dlogit| = {d:.2e}, "
          f"mask agreement {_agreement(*results):.5f} (min fg {fg:.3f})")
    mst = MultiStreamTracker.from_backend(backend, **opts)
    one = {1: prompts[1]}
    together = {s: [] for s in range(4)}
    for t in range(n):
        res = mst.step({s: frames.image(t + STREAM_OFFSET * s) for s in range(4)},
                       {s: one for s in range(4)} if t == 0 else None)
        for s, r in res.items():
            together[s].append(r.logits)
    worst, agree = 0.0, []
    for s in range(4):
        tr = SAM2Tracker.from_backend(backend, **opts)
        alone = [tr.track(frames.image(t + STREAM_OFFSET * s), one if t == 0 else None).logits for t in range(n)]
        worst = max(worst, max(float(np.abs(a - b).max()) for a, b in zip(alone, together[s])))
        agree.append(_agreement(alone, together[s]))
    print(f"{label}: 4 streams in one MultiStreamTracker vs 4 trackers, fp32, {n} frames: "
          f"max |dlogit| = {worst:.2e}, mask agreement {min(agree):.5f}")


if __name__ == "__main__":
    main()
