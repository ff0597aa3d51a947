"""The FP8 trunk's linear layers one by one on a GPU: bf16 ``F.linear`` against the FP8 scaled matmul
alone (inputs already E4M3) and against :class:`fastsam2.export.fp8.Fp8Linear` (per-token
quantization + the scaled matmul), eager and compiled.

    python3 bench/fp8_matmul.py --batch 16 --json fp8_matmul.json

Shapes: Hiera-tiny at 1024 px, its stages 3 (64 x 64 tokens, dim 384) and 4 (32 x 32, dim 768);
CUDA events, median of ``--iters`` calls after warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch
import torch.nn.functional as F

from fastsam2.export.fp8 import Fp8Linear

# (stage, layer, tokens per frame, in, out) of Hiera-tiny at 1024 px
LAYERS = [
    (3, "qkv", 64 * 64, 384, 1152), (3, "attn.proj", 64 * 64, 384, 384),
    (3, "mlp.0", 64 * 64, 384, 1536), (3, "mlp.1", 64 * 64, 1536, 384),
    (4, "qkv", 32 * 32, 768, 2304), (4, "attn.proj", 32 * 32, 768, 768),
    (4, "mlp.0", 32 * 32, 768, 3072), (4, "mlp.1", 32 * 32, 3072, 768),
]


def _time(fn, iters: int) -> float:
    """Median microseconds of ``fn()`` (CUDA events)."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("fp8_matmul: needs a CUDA GPU", file=sys.stderr)
        return 1
    rows = []
    for stage, name, tokens, k, n in LAYERS:
        m = args.batch * tokens
        lin = torch.nn.Linear(k, n).cuda()
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        w16, b16 = lin.weight.to(torch.bfloat16), lin.bias.to(torch.bfloat16)
        fp8 = Fp8Linear(lin).cuda()
        xs = x.float().abs().amax(1, keepdim=True) / 448
        xq = (x.float() / xs).to(torch.float8_e4m3fn)
        compiled = torch.compile(fp8)

        def under_autocast(f):
            def run():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return f(x)
            return run

        us = {
            "bf16_linear": _time(lambda: F.linear(x, w16, b16), args.iters),
            "fp8_gemm_only": _time(lambda: torch._scaled_mm(xq, fp8.weight_fp8.t(), scale_a=xs,
                                                            scale_b=fp8.weight_scale, bias=b16,
                                                            out_dtype=torch.bfloat16), args.iters),
            "fp8_linear_eager": _time(under_autocast(fp8), args.iters),
            "fp8_linear_compiled": _time(under_autocast(compiled), args.iters),
        }
        flop = 2 * m * k * n
        row = {"stage": stage, "layer": name, "m": m, "k": k, "n": n, "us": us,
               "tflops": {key: flop / (v * 1e-6) / 1e12 for key, v in us.items()}}
        rows.append(row)
        print(f"stage {stage} {name:<10} M={m:>6} K={k:>4} N={n:>4}: "
              + ", ".join(f"{key} {v:7.1f} us ({row['tflops'][key]:5.0f} TF/s)" for key, v in us.items()), flush=True)
    total = {key: sum(r["us"][key] for r in rows) for key in rows[0]["us"]}
    print("sum over the eight layers (us): " + ", ".join(f"{k} {v:.0f}" for k, v in total.items()))
    with open(args.json, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": args.batch,
                   "layers": rows, "total_us": total}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
