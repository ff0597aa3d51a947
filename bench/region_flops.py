"""The work of one frame through the image encoder and through encoder regions, counted (no timing).

FLOPs per graph (``torch.utils.flop_counter``, attention through PyTorch's math kernel so that it is
counted as matmuls) of one frame: the ``image_encoder`` stage, and the region encoder's three graphs
(``encoder_embed``, ``encoder_trunk``, ``encoder_head``) on the whole frame and on k x k-unit
rectangles, and the values that cross the graphs' interfaces (each is written by one kernel and
read by the next: at batch, memory traffic); plus the values a stream keeps between frames. The counts do not depend on the weights
or the machine (random weights, CPU, fp32):

    python3 bench/region_flops.py --config tiny --image-size 1024 --units 1,2,3 --json bench/results/region_flops.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class Counted:
    """A runner whose calls' FLOPs are added to ``flops[name]`` and the values of their inputs and
    outputs (what crosses the graph's interface) to ``io[name]``."""

    def __init__(self, runner, name: str, flops: dict[str, int], io: dict[str, int]):
        self.runner, self.name, self.flops, self.io, self.spec = runner, name, flops, io, runner.spec

    def infer(self, feed):
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            out = self.runner.infer(feed)
        self.flops[self.name] = self.flops.get(self.name, 0) + int(fc.get_total_flops())
        values = sum(v.numel() for v in (*feed.values(), *out.values()))
        self.io[self.name] = self.io.get(self.name, 0) + values
        return out


def main() -> int:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from fastsam2.export.models import build_sam2
    from fastsam2.export.torch_backend import build_torch_backend
    from fastsam2.runtime.specs import REGION_GRAPHS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--units", default="1,2,3", help="k x k-unit rectangles, e.g. 1,2,3")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    torch.manual_seed(0)
    model = build_sam2(args.config, None, image_size=args.image_size, quiet=True)
    backend = build_torch_backend(model)
    enc = backend.region_encoder
    flops: dict[str, int] = {}
    io: dict[str, int] = {}
    for name in REGION_GRAPHS:
        setattr(enc, {"encoder_embed": "embed", "encoder_trunk": "trunk", "encoder_head": "head"}[name],
                Counted(backend.runners[name], name, flops, io))
    x = torch.randn(1, 3, args.image_size, args.image_size)
    xs = list(x.split(1))  # the region encoder takes each frame's pixels
    rows = []
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as fc:
            backend.runners["image_encoder"].infer({"image": x})
        stage = int(fc.get_total_flops())
        _, cache = enc.encode(xs, [None], [None])
        rows.append({"rectangle": "whole frame", "share": 1.0, **{k: v / 1e9 for k, v in flops.items()},
                     "io_mvalues": sum(io.values()) / 1e6})
        whole, whole_io = dict(flops), dict(io)
        for k in (int(u) for u in args.units.split(",") if u):
            if k >= enc.grid:
                continue
            rect = (1, 1 + k, 1, 1 + k) if 1 + k <= enc.grid else (0, k, 0, k)
            flops.clear()
            io.clear()
            enc.encode(xs, [rect], cache)
            rows.append({"rectangle": f"{k}x{k} units", "share": round(enc.area(rect), 4),
                         **{n: v / 1e9 for n, v in flops.items()},
                         # the same rectangle with the embedding and the head on the whole frame
                         "embed_head_whole_total": (whole["encoder_embed"] + flops["encoder_trunk"]
                                                    + whole["encoder_head"]) / 1e9,
                         "io_mvalues": sum(io.values()) / 1e6,
                         "embed_head_whole_io_mvalues": (whole_io["encoder_embed"] + io["encoder_trunk"]
                                                         + whole_io["encoder_head"]) / 1e6})
    for r in rows:
        r["total"] = sum(r[n] for n in REGION_GRAPHS)
    kept = sum(t.numel() for t in cache[0])
    levels = sum(c * (args.image_size // model.image_encoder.trunk.patch_embed.proj.stride[0] // s) ** 2
                 for c, s in zip(backend.config.trunk_channels, backend.config.trunk_scales))
    report = {"config": args.config, "image_size": args.image_size, "unit_px": enc.unit_px, "grid": enc.grid,
              "image_encoder_gflop": stage / 1e9, "rows": rows,
              "kept_per_stream_values": kept, "trunk_levels_values": levels}
    print(f"{args.config} @ {args.image_size}: image_encoder {stage / 1e9:.1f} GFLOP per frame; "
          f"{enc.grid} x {enc.grid} units of {enc.unit_px} px")
    print("| rectangle | share of tokens | GFLOP embed | trunk | head | total | with embed + head whole "
          "| M values in and out of the graphs | with embed + head whole |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rectangle']} | {r['share']:.1%} | {r['encoder_embed']:.2f} | {r['encoder_trunk']:.2f} | "
              f"{r['encoder_head']:.2f} | {r['total']:.2f} | {r.get('embed_head_whole_total', r['total']):.2f} | "
              f"{r['io_mvalues']:.1f} | {r.get('embed_head_whole_io_mvalues', r['io_mvalues']):.1f} |")
    print(f"a stream keeps {kept / 1e6:.2f} M values (the trunk's levels would be {levels / 1e6:.2f} M)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
