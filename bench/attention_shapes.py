"""Every attention call of a tracking step on the GPU, timed per kernel choice.

    python3 bench/attention_shapes.py --frames-dir DIR [--streams 1,8] [--keep 0.3]

Records the (q, k, v) shapes of each ``scaled_dot_product_attention`` call while the torch backend
(bf16, eager) tracks 10 frames of 1 and of N streams, then times each distinct shape with PyTorch's
default SDPA choice, each SDPA backend (flash, cuDNN, memory-efficient) and the explicit
``softmax(q k^T * scale) v`` (two batched matmuls: all of the GPU for few queries); CUDA events, median
of 50 calls. Random weights; only shapes and times matter.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter

from cuda_timing import median_us


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames-dir", required=True)
    ap.add_argument("--streams", default="1,8")
    ap.add_argument("--keep", type=float, default=0.3)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from fastsam2.export.models import build_sam2
    from fastsam2.tools.bench import BenchOptions, SampleFrames, fastsam2_backend, fastsam2_tracker, run_fastsam2

    sdpa = F.scaled_dot_product_attention
    seen: Counter = Counter()

    def recording(q, k, v, *a, **kw):
        seen[(tuple(q.shape), tuple(k.shape), tuple(v.shape), str(q.dtype))] += 1
        return sdpa(q, k, v, *a, **kw)

    model = build_sam2("tiny", None, device="cuda", seed=0, object_score_bias=5.0, quiet=True)
    frames = SampleFrames(args.frames_dir)
    F.scaled_dot_product_attention = recording
    try:
        for s in [int(x) for x in args.streams.split(",")]:
            opts = BenchOptions(config="tiny", backend="torch", device="cuda", dtype="bfloat16",
                                cuda_graphs=False, k_multiple=128, streams=s, frames_dir=args.frames_dir)
            run_fastsam2(fastsam2_tracker(fastsam2_backend(model, opts, None), args.keep, opts), frames, 10, opts, args.keep)
    finally:
        F.scaled_dot_product_attention = sdpa

    def explicit(q, k, v):
        s = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
        return torch.matmul(s.softmax(-1), v)

    choices = {"default": None, "flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
               "efficient": SDPBackend.EFFICIENT_ATTENTION}
    print(f"{'q':>22} {'k':>22} calls | " + " ".join(f"{c:>9}" for c in choices) + "  explicit   (µs)")
    for (qs, ks, vs, dt), calls in sorted(seen.items(), key=lambda kv: -math.prod(kv[0][0]) * kv[0][1][-2]):
        dtype = getattr(torch, dt.split(".")[-1])
        q, k, v = (torch.randn(s, device="cuda", dtype=dtype) for s in (qs, ks, vs))
        cells = []
        with torch.inference_mode():
            for backend in choices.values():
                try:
                    if backend is None:
                        cells.append(f"{median_us(sdpa, q, k, v):9.1f}")
                    else:
                        with sdpa_kernel([backend]):
                            cells.append(f"{median_us(sdpa, q, k, v):9.1f}")
                except RuntimeError:
                    cells.append(f"{'-':>9}")
            ex = median_us(explicit, q, k, v)
        print(f"{str(qs):>22} {str(ks):>22} {calls:5d} | " + " ".join(cells) + f"  {ex:9.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
