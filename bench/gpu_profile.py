"""Where a multi-stream step's time goes on the GPU: wall time per step against the time the host
spends issuing it, the GPU's busy time (torch.profiler: union of kernel intervals), the top kernels
and the top host functions (cProfile), and preprocessing alone.

    python3 bench/gpu_profile.py --frames-dir DIR [--streams 8] [--keep 0.3] [--compile] [--steps 20]
        [--encoder-region 0 --region-units 2 [--encoder-lag 1]]

Random weights (object-score bias +5, as ``fastsam2 bench``): timings are real, masks meaningless.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames-dir", required=True)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--keep", type=float, default=0.3)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--encoder-region", type=int, default=None, metavar="M",
                    help="encode tracked frames on rectangles (TrackerOptions.encoder_region)")
    ap.add_argument("--region-units", type=int, default=None, metavar="K",
                    help="with --encoder-region: a fixed K x K rectangle (as fastsam2 bench --region-units)")
    ap.add_argument("--encoder-lag", type=int, default=0, metavar="N",
                    help="with --encoder-region: the rectangle from the masks N frames further back")
    ap.add_argument("--trace", default=None, metavar="FILE.json.gz",
                    help="also write a Chrome trace (Python stacks) of 3 steps, for a look at the idle gaps")
    args = ap.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from fastsam2.export.models import build_sam2
    from fastsam2.runtime.tracker import Prompt
    from fastsam2.tools.bench import (STREAM_OFFSET, BenchOptions, SampleFrames, fastsam2_backend, fastsam2_tracker,
                                      object_prompts, run_fastsam2)

    opts = BenchOptions(config="tiny", backend="torch", device="cuda", dtype="bfloat16", cuda_graphs=True,
                        k_multiple=128, compile=args.compile, streams=args.streams, frames_dir=args.frames_dir,
                        encoder_region=args.encoder_region, region_units=args.region_units,
                        encoder_lag=args.encoder_lag)
    model = build_sam2("tiny", None, device="cuda", seed=0, object_score_bias=5.0, quiet=True)
    frames = SampleFrames(args.frames_dir)
    mst = fastsam2_tracker(fastsam2_backend(model, opts, None), args.keep, opts)
    t0 = time.perf_counter()
    run_fastsam2(mst, frames, 30, opts, args.keep)  # warm-up: compiles and captures
    print(f"warm-up {time.perf_counter() - t0:.1f} s", flush=True)

    streams = list(range(args.streams))
    n = 30 + 3 * args.steps
    frames.preload(n + STREAM_OFFSET * streams[-1])

    def batch(t):
        return {sid: frames.image(t + STREAM_OFFSET * sid) for sid in streams}

    prompts = {i: Prompt(points=[p], labels=[1], box=list(b)) for i, p, b in object_prompts(1)}
    mst.step(batch(0), {sid: prompts for sid in streams})
    torch.cuda.synchronize()
    for t in range(1, 25):  # the memory windows fill: shapes settle
        mst.step(batch(t))
    torch.cuda.synchronize()

    wall, issue = [], []
    t = 25
    for _ in range(args.steps):
        t0 = time.perf_counter()
        mst.step(batch(t))
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        wall.append((t2 - t0) * 1e3)
        issue.append((t1 - t0) * 1e3)
        t += 1
    print(f"{args.streams} streams keep {args.keep} compile {args.compile} encoder region {args.encoder_region} "
          f"units {args.region_units} lag {args.encoder_lag}: step wall median "
          f"{np.median(wall):.2f} ms, host returns after {np.median(issue):.2f} ms "
          f"({args.streams * 1e3 / np.median(wall):.1f} frames/s)", flush=True)

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            mst.step(batch(t))
            torch.cuda.synchronize()
            t += 1
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    spans = sorted((e.time_range.start, e.time_range.end) for e in kernels)
    busy, cur_s, cur_e = 0.0, None, None
    for s, e in spans:
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                busy += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        busy += cur_e - cur_s
    print(f"GPU busy per step (union of kernel intervals): {busy / 5 / 1e3:.2f} ms; "
          f"kernels per step: {len(kernels) / 5:.0f}")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))

    # where the GPU waits: per step, the time from the step's call to its first kernel, and the gaps
    # between kernels (each named by the kernels around it)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=bool(args.trace)) as prof:
        for i in range(3):
            with torch.profiler.record_function(f"fastsam2_step_{i}"):
                mst.step(batch(t))
                torch.cuda.synchronize()
            t += 1
    idle_report(prof, torch)
    if args.trace:
        import gzip
        import os
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            raw = os.path.join(tmp, "trace.json")
            prof.export_chrome_trace(raw)
            with open(raw, "rb") as src, gzip.open(args.trace, "wb") as dst:
                dst.write(src.read())
        print(f"wrote {args.trace}")

    pr = cProfile.Profile()
    pr.enable()
    for _ in range(10):
        mst.step(batch(t))
        torch.cuda.synchronize()
        t += 1
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(30)
    print(s.getvalue())

    ops = mst.tracker.ops
    imgs = [frames.image(t + STREAM_OFFSET * sid) for sid in streams]
    cfg = mst.tracker.config
    for _ in range(3):
        ops.preprocess_frames(imgs, cfg.image_size, cfg.img_mean, cfg.img_std)
    torch.cuda.synchronize()
    host, full = [], []
    for _ in range(20):
        t0 = time.perf_counter()
        staged = torch.empty((len(imgs), *imgs[0].shape), dtype=torch.uint8, pin_memory=True)
        arr = staged.numpy()
        for j, im in enumerate(imgs):
            arr[j] = im
        host.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        ops.preprocess_frames(imgs, cfg.image_size, cfg.img_mean, cfg.img_std)
        torch.cuda.synchronize()
        full.append((time.perf_counter() - t0) * 1e3)
    print(f"preprocess {len(imgs)} frames: host staging {np.median(host):.2f} ms, whole (synchronized) "
          f"{np.median(full):.2f} ms")
    return 0


def idle_report(prof, torch, min_gap_us: float = 10.0, top: int = 12) -> None:
    """Print, per profiled step (CPU ranges named ``fastsam2_step_*``), the lead from the call to the
    first kernel, the GPU idle time up to the last kernel, and the largest gaps between kernels."""
    events = prof.events()
    steps = sorted((e.time_range.start, e.time_range.end, e.name) for e in events
                   if e.name.startswith("fastsam2_step_") and e.device_type == torch.autograd.DeviceType.CPU)
    kernels = sorted((e.time_range.start, e.time_range.end, e.name) for e in events
                     if e.device_type == torch.autograd.DeviceType.CUDA)
    for s0, s1, name in steps:
        ks = [k for k in kernels if s0 <= k[0] <= s1]
        if not ks:
            continue
        gaps, end, prev = [], ks[0][1], ks[0][2]
        for ks0, ks1, kname in ks[1:]:
            if ks0 - end > min_gap_us:
                gaps.append((ks0 - end, end - s0, prev, kname))
            if ks1 > end:
                end, prev = ks1, kname
        idle = sum(g[0] for g in gaps)
        print(f"{name}: wall {(s1 - s0) / 1e3:.2f} ms, first kernel after {(ks[0][0] - s0) / 1e3:.2f} ms, "
              f"last ends {(end - s0) / 1e3:.2f} ms, idle between kernels {idle / 1e3:.2f} ms in {len(gaps)} gaps "
              f"> {min_gap_us:.0f} us")
        for gap, at, before, after in sorted(gaps, reverse=True)[:top]:
            print(f"   {gap:8.1f} us at {at / 1e3:6.2f} ms: {before[:50]} -> {after[:50]}")


if __name__ == "__main__":
    raise SystemExit(main())
