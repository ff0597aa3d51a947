"""Where the image encoder's time goes, block by block, against the card's roofline.

For each Hiera block, the FPN neck and the patch embedding: FLOPs (``torch.utils.flop_counter``),
the bytes a perfect kernel must move (inputs + outputs + weights, bf16), the time (CUDA events,
median), achieved TFLOP/s and GB/s, and the floor ``max(FLOPs / peak, bytes / bandwidth)``; eager
bf16 and, with ``--compile``, each block compiled on its own.

``--regions 1,2,3``: the cost side of encoder regions (``runtime/encoder_region.py``): the whole encoder
(the torch backend's ``image_encoder`` runner) against its region encoder (the ``encoder_embed`` /
``encoder_trunk`` / ``encoder_head`` runners) on frames encoded whole and on k x k-unit rectangles,
each frame of the batch its own rectangle position; both compiled with ``--compile``, both captured
per shape with ``--cuda-graphs``.

    python3 bench/encoder_profile.py --config tiny --image-size 1024 --batch 1,8 --compile --json out.json
    python3 bench/encoder_profile.py --batch 1,8,16 --regions 1,2,3 --skip-blocks --json regions.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cuda_timing import median_us  # noqa: E402

# dense bf16 tensor-core peak (TFLOP/s) and HBM bandwidth (TB/s) of the SXM parts
PEAKS = {"H100": (989.0, 3.35), "H200": (989.0, 4.8)}


def card_peaks(name: str) -> tuple[float, float]:
    for key, val in PEAKS.items():
        if key in name:
            return val
    raise SystemExit(f"no peak figures for {name!r}; add them to PEAKS")


def count_flops(fn, *args) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn(*args)
    return int(fc.get_total_flops())


def nbytes(*tensors) -> int:
    import torch

    return sum(t.numel() * 2 for t in tensors if isinstance(t, torch.Tensor))


def profile_regions(model, batch: int, sizes: list[int], image_size: int, compile: bool,
                    cuda_graphs: bool = False) -> dict:
    """ms of the image-encoder runner vs the region encoder (whole, k x k units), bf16, the same
    backend options for both."""
    import torch

    from fastsam2.export.torch_backend import build_torch_backend

    backend = build_torch_backend(model, autocast_dtype="bfloat16", compile=compile, cuda_graphs=cuda_graphs,
                                  attention="sdpa", check_inputs=False)
    stage, enc = backend.runners["image_encoder"], backend.region_encoder
    x = torch.randn(batch, 3, image_size, image_size, device="cuda")
    xs = list(x.split(1))  # the region encoder takes each frame's pixels

    def run_stage():
        return stage.infer({"image": x})

    (_, _, whole_feats), cache = enc.encode(xs, [None] * batch, [None] * batch)
    out = {"unit_px": enc.unit_px, "grid": enc.grid,
           "whole_vs_stage_max_abs": float((whole_feats - run_stage()["vision_feats"]).abs().max()),
           "stage_ms": round(median_us(run_stage, warmup=3, calls=20) / 1e3, 3),
           "region_whole_ms": round(median_us(lambda: enc.encode(xs, [None] * batch, [None] * batch),
                                              warmup=3, calls=20) / 1e3, 3)}
    for k in sizes:
        if k >= enc.grid:
            continue
        # frames at different positions of whole units (one shape: one batched call)
        last = enc.grid - k if enc.tokens % enc.align == 0 else enc.grid - 1 - k
        if last < 0:
            continue
        rects = []
        for b in range(batch):
            r0, c0 = (b * 7) % (last + 1), (b * 3) % (last + 1)
            rects.append((r0, r0 + k, c0, c0 + k))
        out[f"{k}x{k}_ms"] = round(median_us(lambda: enc.encode(xs, rects, cache), warmup=3, calls=20) / 1e3, 3)
        out[f"{k}x{k}_area"] = round(sum((min(r[1] * enc.unit_px, image_size) - r[0] * enc.unit_px)
                                         * (min(r[3] * enc.unit_px, image_size) - r[2] * enc.unit_px)
                                         for r in rects) / (batch * image_size ** 2), 3)
    print(json.dumps({"batch": batch, "regions": out}), flush=True)
    return out


def main() -> int:
    import torch

    from fastsam2.export.models import build_sam2

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--compile", action="store_true", help="also time each block compiled on its own")
    ap.add_argument("--regions", default="", help="k x k-unit rectangles to time the region encoder on, e.g. 1,2,3")
    ap.add_argument("--skip-blocks", action="store_true", help="only the --regions timings")
    ap.add_argument("--cuda-graphs", action="store_true", help="--regions: both encoders captured per input shape")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    name = torch.cuda.get_device_name()
    peak_tf, peak_tb = card_peaks(name)
    model = build_sam2(args.config, None, device="cuda", image_size=args.image_size, quiet=True)
    enc = model.image_encoder
    trunk = enc.trunk
    for p in model.parameters():
        p.requires_grad_(False)
    report = {"device": name, "config": args.config, "image_size": args.image_size, "torch": torch.__version__,
              "peak_bf16_tflops": peak_tf, "peak_tbps": peak_tb, "batches": {}}
    for batch in [int(b) for b in args.batch.split(",")]:
        report["batches"][str(batch)] = {}
        if args.regions:
            report["batches"][str(batch)]["regions"] = profile_regions(
                model, batch, [int(k) for k in args.regions.split(",")], args.image_size, args.compile,
                args.cuda_graphs)
        if args.skip_blocks:
            continue
        rows = []
        x0 = torch.randn(batch, 3, args.image_size, args.image_size, device="cuda")

        def row(label, fn, inputs, weights_bytes, compiled=None):
            with torch.autocast("cuda", dtype=torch.bfloat16), torch.no_grad():
                out = fn(*inputs)
                flops = count_flops(fn, *inputs)
                us = median_us(fn, *inputs)
                us_c = median_us(compiled, *inputs) if compiled is not None else None
            outs = out if isinstance(out, (list, tuple)) else [out]
            moved = nbytes(*inputs, *outs) + weights_bytes
            floor_us = max(flops / (peak_tf * 1e12), moved / (peak_tb * 1e12)) * 1e6
            best = us_c if us_c is not None else us
            r = {"stage": label, "gflop": round(flops / 1e9, 2), "mbytes": round(moved / 1e6, 1),
                 "us_eager": round(us, 1), "us_compiled": None if us_c is None else round(us_c, 1),
                 "tflops": round(flops / best / 1e6, 1), "gbps": round(moved / best / 1e3, 1),
                 "floor_us": round(floor_us, 1), "x_floor": round(best / floor_us, 1)}
            rows.append(r)
            print(json.dumps({"batch": batch, **r}), flush=True)
            return out

        def wbytes(mod) -> int:
            return sum(p.numel() * 2 for p in mod.parameters())

        def maybe_compile(fn):
            return torch.compile(fn, dynamic=False) if args.compile else None

        def embed(x):
            y = trunk.patch_embed(x)
            return y + trunk._get_pos_embed(y.shape[1:3])

        x = row("patch_embed", embed, [x0], wbytes(trunk.patch_embed), maybe_compile(embed))
        feats = []
        for i, blk in enumerate(trunk.blocks):
            label = f"block{i} ws{blk.window_size}{' pool' if blk.q_stride else ''} d{blk.dim_out}"
            x = row(label, blk, [x], wbytes(blk), maybe_compile(blk))
            if i in trunk.stage_ends:
                feats.append(x.permute(0, 3, 1, 2))

        def neck(*fs):
            return enc.neck(list(fs))[0]

        row("neck", neck, feats, wbytes(enc.neck), maybe_compile(neck))
        total_e = sum(r["us_eager"] for r in rows)
        total_c = sum(r["us_compiled"] or 0 for r in rows) if args.compile else None
        report["batches"][str(batch)] |= {"rows": rows, "us_eager": round(total_e, 1),
                                         "us_compiled": None if total_c is None else round(total_c, 1),
                                         "floor_us": round(sum(r["floor_us"] for r in rows), 1)}
        print(f"batch {batch}: eager {total_e / 1e3:.2f} ms, compiled {total_c and total_c / 1e3} ms, "
              f"floor {sum(r['floor_us'] for r in rows) / 1e3:.2f} ms", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
