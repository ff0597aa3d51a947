"""FLOPs and CPU time per frame of pruned propagation, per stage, for SAM2 tiny and large.

    python bench/router_flops.py [--configs tiny large] [--keeps 1.0 0.5 0.3] [--image-size 1024]
                                 [--frames 9] [--large-frames 9] [--out bench/results/router_cpu]

One object (a click at the frame centre) is tracked over the first ``--frames`` frames of
/work/shared/data/bedroom with RANDOM weights (object-score bias +5 so masks are non-empty; timings and
FLOPs do not depend on the weights). SAM2 holds 1 prompted + 6 recent frames in memory, so the memory
bank is full from frame 7 on: FLOPs and token counts are those of the LAST frame (steady state), counted
in a pass of their own (the counter slows the frame down); CPU ms are the median over the other tracked
frames (1 .. frames-2), per stage from ``tracker.times``.

FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` around every stage call. Attention is also counted
by hand (4·B·heads·Nq·Nk·d per ``scaled_dot_product_attention`` call, hooked during the count: Hiera's
image encoder, the mask decoder and memory attention all call it); the hand count is added only if the
counter's per-op table has no SDPA op, and both are reported so they can be compared.

The image encoder does not depend on the keep ratio (same graph, same input): it runs once per frame in
the keep-1.0 pass and its outputs are reused by the other keep ratios; its ms and FLOPs are reported from
that pass for every row.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BEDROOM = REPO.parent / "shared" / "data" / "bedroom"
STAGES = ("preprocess", "image_encoder", "router", "memory_attention", "mask_decoder", "memory_encoder")
SDPA_NAMES = ("scaled_dot_product", "sdpa")


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def wait_for_quiet_cpu(threshold: float, tries: int, sleep_s: float) -> list[float]:
    """Wait (up to tries x sleep_s) for the 1-minute load to drop below threshold; returns the last."""
    for i in range(tries):
        load = loadavg()
        if load[0] < threshold:
            return load
        print(f"load {load[0]:.2f} >= {threshold}: waiting {sleep_s:.0f} s ({i + 1}/{tries})", file=sys.stderr)
        time.sleep(sleep_s)
    return loadavg()


class Counter:
    """Per-stage FLOPs of the calls made while ``active``."""

    def __init__(self):
        self.active = False
        self.flops: dict[str, int] = {}
        self.hand_sdpa: dict[str, int] = {}
        self.counter_sdpa: dict[str, int] = {}


class CountingRunner:
    """Wraps a stage runner: under ``counter.active`` the call runs inside FlopCounterMode with SDPA
    counted by hand as well."""

    def __init__(self, name: str, runner, counter: Counter):
        self.name, self.runner, self.counter = name, runner, counter
        self.feeds: list[dict] = []

    def infer(self, feed):
        if not self.counter.active:
            return self.runner.infer(feed)
        import torch.nn.functional as F
        from torch.utils.flop_counter import FlopCounterMode

        self.feeds.append({k: tuple(v.shape) for k, v in feed.items()})
        hand = [0]
        original = F.scaled_dot_product_attention

        def counted_sdpa(q, k, v, *args, **kwargs):
            batch = int(np.prod(q.shape[:-2]))
            nq, nk, d, dv = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
            hand[0] += 2 * batch * nq * nk * d + 2 * batch * nq * nk * dv
            return original(q, k, v, *args, **kwargs)

        F.scaled_dot_product_attention = counted_sdpa
        try:
            with FlopCounterMode(display=False) as fc:
                out = self.runner.infer(feed)
        finally:
            F.scaled_dot_product_attention = original
        table = fc.get_flop_counts().get("Global", {})
        sdpa_in_table = sum(v for k, v in table.items() if any(s in str(k) for s in SDPA_NAMES))
        total = fc.get_total_flops()
        if sdpa_in_table == 0:
            total += hand[0]
        c = self.counter
        c.flops[self.name] = c.flops.get(self.name, 0) + total
        c.hand_sdpa[self.name] = c.hand_sdpa.get(self.name, 0) + hand[0]
        c.counter_sdpa[self.name] = c.counter_sdpa.get(self.name, 0) + sdpa_in_table
        return out

    def deactivate(self):
        self.runner.deactivate()


class ReusedEncoder:
    """The image encoder run once per distinct input; later keep ratios reuse its outputs."""

    def __init__(self, runner):
        self.runner = runner
        self.cache: dict[str, dict] = {}

    def infer(self, feed):
        key = hashlib.sha1(feed["image"].numpy().tobytes()).hexdigest()
        if key not in self.cache:
            self.cache[key] = self.runner.infer(feed)
        return self.cache[key]

    def deactivate(self):
        self.runner.deactivate()


def run_config(config: str, keeps: list[float], image_size: int, frames: list[np.ndarray]) -> list[dict]:
    from fastsam2.export.models import build_sam2
    from fastsam2.export.torch_backend import build_torch_backend
    from fastsam2.runtime.specs import IMAGE_ENCODER, MEMORY_ATTENTION
    from fastsam2.runtime.tracker import Prompt, SAM2Tracker

    model = build_sam2(config, image_size=image_size, object_score_bias=5.0, quiet=True)
    backend = build_torch_backend(model)  # the router stage included (default weights)
    encoder = ReusedEncoder(backend.runners[IMAGE_ENCODER])
    backend.runners[IMAGE_ENCODER] = encoder
    counter = Counter()
    backend.runners = {n: CountingRunner(n, r, counter) for n, r in backend.runners.items()}
    h, w = frames[0].shape[:2]
    prompt = {1: Prompt(points=[[w / 2, h / 2]], labels=[1])}
    rows = []
    encoder_ms: dict[int, float] = {}
    encoder_flops = None
    for keep in keeps:
        tracker = SAM2Tracker.from_backend(backend, keep=keep, fill_hole_area=0)
        per_frame: list[dict[str, float]] = []
        kept = None
        load_before = loadavg()
        for i, frame in enumerate(frames):
            last = i == len(frames) - 1
            counter.active = last
            counter.flops, counter.hand_sdpa, counter.counter_sdpa = {}, {}, {}
            before = dict(tracker.times.ms)
            t0 = time.perf_counter()
            res = tracker.track(frame, prompt if i == 0 else None)
            total = (time.perf_counter() - t0) * 1e3
            stage_ms = {k: v - before.get(k, 0.0) for k, v in tracker.times.ms.items()}
            if keep == 1.0 and not last:
                encoder_ms[i] = stage_ms.get(IMAGE_ENCODER, 0.0)
            elif not last:  # the encoder output was reused: charge the keep-1.0 measurement
                total += encoder_ms[i] - stage_ms.get(IMAGE_ENCODER, 0.0)
                stage_ms[IMAGE_ENCODER] = encoder_ms[i]
            stage_ms["total"] = total
            if 0 < i and not last:
                per_frame.append(stage_ms)
            if last:
                kept = res.kept_tokens[1]
        counter.active = False
        feed = backend.runners[MEMORY_ATTENTION].feeds[-1]
        flops = dict(counter.flops)
        hand, in_table = dict(counter.hand_sdpa), dict(counter.counter_sdpa)
        if keep == 1.0:
            encoder_flops = (flops[IMAGE_ENCODER], hand[IMAGE_ENCODER], in_table[IMAGE_ENCODER])
        else:
            flops[IMAGE_ENCODER], hand[IMAGE_ENCODER], in_table[IMAGE_ENCODER] = encoder_flops
        memory_spatial = feed["memory"][1]
        ptr_tokens = feed["obj_ptrs"][1] * (model.hidden_dim // model.mem_dim)
        ms = {k: statistics.median(f.get(k, 0.0) for f in per_frame) for k in (*STAGES, "total")}
        rows.append({
            "config": config,
            "keep": keep,
            "image_size": image_size,
            "tokens_per_frame": (image_size // 16) ** 2,
            "kept_tokens": kept,
            "memory_bank_tokens": memory_spatial + ptr_tokens,
            "memory_spatial_tokens": memory_spatial,
            "memory_pointer_tokens": ptr_tokens,
            "gflops": {k: round(v / 1e9, 4) for k, v in flops.items()},
            "gflops_total": round(sum(flops.values()) / 1e9, 3),
            "sdpa_gflops_by_hand": {k: round(v / 1e9, 3) for k, v in hand.items()},
            "sdpa_gflops_in_counter_table": {k: round(v / 1e9, 3) for k, v in in_table.items()},
            "median_ms": {k: round(v, 1) for k, v in ms.items()},
            "timed_frames": len(per_frame),
            "load_before": load_before,
            "load_after": loadavg(),
        })
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Token router: FLOPs and CPU time per frame",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['cpu_model']}, nproc {meta['nproc']}, torch {meta['torch']} "
        f"({meta['torch_threads']} threads), {meta['date']}  ",
        f"Load average (1/5/15 min) at start: {meta['load_start']}, at end: {meta['load_end']} "
        "(the CPU is shared with other engineers: timings are noisy)  ",
        "Random weights; timings do not depend on weights. One object, image size "
        f"{rows[0]['image_size']}, frames of /work/shared/data/bedroom.",
        "",
        "FLOPs and token counts: the last frame (memory bank full: 1 prompted + 6 recent frames). "
        "ms: median over the tracked frames before it. Image encoder: measured in the keep-1.0 pass and "
        "reused (it does not depend on the keep ratio).",
        "",
        "| config | keep | kept tokens | memory-bank tokens | GFLOP encoder | GFLOP router | GFLOP mem-attn "
        "| GFLOP decoder | GFLOP mem-enc | GFLOP total | ms encoder | ms router | ms mem-attn | ms decoder "
        "| ms mem-enc | ms total | timed frames |",
        "|" + "---|" * 17,
    ]
    for r in rows:
        g, m = r["gflops"], r["median_ms"]
        lines.append(
            f"| {r['config']} | {r['keep']} | {r['kept_tokens']} / {r['tokens_per_frame']} | "
            f"{r['memory_bank_tokens']} | {g.get('image_encoder', 0):.1f} | {g.get('router', 0):.3f} | "
            f"{g.get('memory_attention', 0):.1f} | {g.get('mask_decoder', 0):.1f} | "
            f"{g.get('memory_encoder', 0):.1f} | {r['gflops_total']:.1f} | {m['image_encoder']:.0f} | "
            f"{m['router']:.0f} | {m['memory_attention']:.0f} | {m['mask_decoder']:.0f} | "
            f"{m['memory_encoder']:.0f} | {m['total']:.0f} | {r['timed_frames']} |"
        )
    lines += ["", meta["sdpa_note"], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["tiny", "large"])
    p.add_argument("--keeps", nargs="+", type=float, default=[1.0, 0.5, 0.3])
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--frames", type=int, default=9, help="frames per run (>= 9 for a full memory bank)")
    p.add_argument("--large-frames", type=int, default=None, help="frames for 'large' (default --frames)")
    p.add_argument("--video", default=str(BEDROOM))
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "router_cpu"))
    p.add_argument("--max-load", type=float, default=1.5)
    p.add_argument("--load-tries", type=int, default=6)
    p.add_argument("--load-sleep", type=float, default=30.0)
    args = p.parse_args(argv)
    if args.keeps[0] != 1.0:
        print("error: the first --keeps must be 1.0 (its pass measures the image encoder)", file=sys.stderr)
        return 1
    import torch

    from fastsam2.runtime.frames import open_frames

    n_max = max(args.frames, args.large_frames or 0)
    frames = [f.image for f, _ in zip(open_frames(args.video), range(n_max))]
    load_start = wait_for_quiet_cpu(args.max_load, args.load_tries, args.load_sleep)
    rows = []
    for config in args.configs:
        n = args.large_frames if (config == "large" and args.large_frames) else args.frames
        rows += run_config(config, args.keeps, args.image_size, frames[:n])
    sdpa_counted = any(v for r in rows for v in r["sdpa_gflops_in_counter_table"].values())
    meta = {
        "command": "python " + " ".join([os.path.relpath(__file__, REPO), *(argv or sys.argv[1:])]),
        "cpu_model": cpu_model(),
        "nproc": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_start": load_start,
        "load_end": loadavg(),
        "weights": "random weights; timings do not depend on weights",
        "sdpa_note": (
            "SDPA: FlopCounterMode's per-op table on this CPU "
            + ("CONTAINS the SDPA op (aten._scaled_dot_product_flash_attention_for_cpu), so the hand count "
               "(4·B·heads·Nq·Nk·d per call) was not added; both are in the JSON (sdpa_gflops_*)."
               if sdpa_counted else
               "has NO SDPA op, so the hand count (4·B·heads·Nq·Nk·d per call) is added to the totals.")
        ),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
