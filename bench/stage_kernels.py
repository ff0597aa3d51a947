"""Alternatives for the slowest single kernels of an eight-stream step, timed on the GPU.

    python3 bench/stage_kernels.py --frames-dir DIR [--batch 8]

- frame preprocessing of a batch of real frames: two calls of torch's antialiased bicubic kernel (the
  old path) against the gathered taps of ``normalize_frames``, eager and compiled;
- Hiera's patch embedding (7x7 stride-4 convolution, 3 -> 96 channels, then B,H,W,C) under bf16
  autocast: as sam2 runs it, channels-last, and as im2col + one matmul;
- the memory encoder's depthwise 7x7 convolution (CXBlock) in bf16: NCHW against channels-last;
- Hiera's small-window attentions at eight frames (q 4 x k 16 and 16 x 64 tokens, d 96): SDPA,
  the two matmuls of ``explicit_attention`` (eager, compiled), and the same arithmetic written as
  broadcast products and sums (compiled: Inductor's reductions, no batched GEMM);
- the whole image encoder stage (bf16 autocast, the backend's GPU kernels) compiled as the
  backend compiles it against ``mode="max-autotune-no-cudagraphs"`` (Triton GEMM templates with the
  GELU/bias epilogues fused; ``--no-autotune`` skips that, it compiles for minutes).
CUDA events, median of 30 calls; each alternative is checked against the first of its group.
Random weights (tiny): only times and agreement matter.
"""

from __future__ import annotations

import argparse

import numpy as np
from cuda_timing import median_us


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames-dir", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--no-autotune", action="store_true")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from fastsam2.export.models import build_sam2
    from fastsam2.export.torch_backend import patch_embed_matmul
    from fastsam2.runtime.backends.torch_device import normalize_frames, pil_bicubic_taps
    from fastsam2.tools.bench_inputs import SampleFrames

    def report(group: str, variants: dict) -> None:
        ref = None
        for name, (fn, x) in variants.items():
            with torch.inference_mode():
                out = fn(*x).float()
                us = median_us(fn, *x, calls=30)
            diff = "" if ref is None else f"  max|diff| vs first {float((out - ref).abs().max()):.3g}"
            ref = out if ref is None else ref
            print(f"{group:<22} {name:<34} {us:9.1f} us{diff}", flush=True)

    dev = "cuda"
    model = build_sam2("tiny", None, device=dev, seed=0, object_score_bias=5.0, quiet=True)
    frames = SampleFrames(args.frames_dir)
    frames.preload(args.batch)
    batch = torch.from_numpy(np.stack([frames.image(i) for i in range(args.batch)])).to(dev)
    h, w = batch.shape[1:3]
    s = model.image_size
    mean = torch.tensor((0.485, 0.456, 0.406), device=dev).reshape(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225), device=dev).reshape(1, 3, 1, 1)
    taps = (*pil_bicubic_taps(w, s, dev), *pil_bicubic_taps(h, s, dev))

    def aa_kernel(x):
        x = x.permute(0, 3, 1, 2).float()
        for size in ((x.shape[2], s), (s, s)):
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
            x = x.round_().clamp_(0.0, 255.0)
        return ((x / 255.0 - mean) / std).contiguous()

    compiled_norm = torch.compile(normalize_frames)
    report(f"preprocess x{args.batch}", {
        "antialiased kernel, two passes": (aa_kernel, (batch,)),
        "gathered taps, eager": (normalize_frames, (batch, *taps, mean, std)),
        "gathered taps, compiled": (compiled_norm, (batch, *taps, mean, std)),
    })

    image = aa_kernel(batch)
    pe = model.image_encoder.trunk.patch_embed
    conv = pe.proj
    k, st, pad = conv.kernel_size[0], conv.stride[0], conv.padding[0]

    def sam2_patch(x):
        with torch.autocast("cuda", torch.bfloat16):
            return pe(x)

    pe_cl = torch.nn.Conv2d(3, conv.out_channels, k, st, pad).to(dev).to(memory_format=torch.channels_last)
    pe_cl.load_state_dict(conv.state_dict())

    def channels_last_patch(x):
        with torch.autocast("cuda", torch.bfloat16):
            return pe_cl(x.contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1)

    def im2col_patch(x):
        with torch.autocast("cuda", torch.bfloat16):
            return patch_embed_matmul(x, conv)  # what the backend runs (gpu_patch_embed)

    report(f"patch embed x{args.batch}", {
        "sam2 (NCHW conv, permute)": (sam2_patch, (image,)),
        "channels-last conv": (channels_last_patch, (image,)),
        "im2col + matmul": (im2col_patch, (image,)),
        "sam2 compiled": (torch.compile(sam2_patch), (image,)),
        "im2col + matmul compiled": (torch.compile(im2col_patch), (image,)),
    })

    dw = model.memory_encoder.fuser.layers[0].dwconv
    feat = torch.randn(args.batch, dw.in_channels, 64, 64, device=dev)
    dw_cl = torch.nn.Conv2d(dw.in_channels, dw.out_channels, dw.kernel_size, dw.stride, dw.padding,
                            groups=dw.groups).to(dev).to(memory_format=torch.channels_last)
    dw_cl.load_state_dict(dw.state_dict())

    def dw_nchw(x):
        with torch.autocast("cuda", torch.bfloat16):
            return dw(x)

    def dw_channels_last(x):
        with torch.autocast("cuda", torch.bfloat16):
            return dw_cl(x.contiguous(memory_format=torch.channels_last))

    report(f"depthwise 7x7 x{args.batch}", {
        "NCHW": (dw_nchw, (feat,)),
        "channels-last": (dw_channels_last, (feat,)),
        "NCHW compiled": (torch.compile(dw_nchw), (feat,)),
    })

    from fastsam2.export.attention import explicit_attention

    def broadcast_attention(q, k, v):
        scores = (q.unsqueeze(-2) * k.unsqueeze(-3)).sum(-1, dtype=torch.float32) * q.shape[-1] ** -0.5
        p = scores.softmax(-1).to(v.dtype)  # [..., Nq, Nk]
        return (p.unsqueeze(-1) * v.unsqueeze(-3)).sum(-2, dtype=torch.float32).to(v.dtype)

    windows = args.batch * 1024
    for heads, nq, nk in ((4, 4, 16), (2, 16, 64), (2, 16, 16)):
        q = torch.randn(windows, heads, nq, 96, device=dev, dtype=torch.bfloat16)
        k = torch.randn(windows, heads, nk, 96, device=dev, dtype=torch.bfloat16)
        v = torch.randn(windows, heads, nk, 96, device=dev, dtype=torch.bfloat16)
        report(f"window attn {heads}x{nq}x{nk}", {
            "SDPA (PyTorch's choice)": (F.scaled_dot_product_attention, (q, k, v)),
            "explicit, eager": (explicit_attention, (q, k, v)),
            "explicit, compiled": (torch.compile(explicit_attention), (q, k, v)),
            "broadcast + sum, compiled": (torch.compile(broadcast_attention), (q, k, v)),
        })

    import time

    from fastsam2.export.attention import gpu_attention
    from fastsam2.export.stages import ImageEncoderStage
    from fastsam2.export.torch_backend import gpu_patch_embed

    stage = ImageEncoderStage(model).eval()

    def encoder(fn):
        def run(x):
            with torch.autocast("cuda", torch.bfloat16), gpu_attention(), gpu_patch_embed():
                return fn(x)[2]  # vision_feats
        return run

    variants = {"eager": (encoder(stage), (image,)), "compiled (backend default)": (encoder(torch.compile(stage)), (image,))}
    if not args.no_autotune:
        variants["compiled max-autotune"] = (
            encoder(torch.compile(stage, mode="max-autotune-no-cudagraphs")), (image,))
    for name, (fn, x) in variants.items():  # compile outside the timing, and say how long it took
        t0 = time.perf_counter()
        with torch.inference_mode():
            fn(*x)
        torch.cuda.synchronize()
        print(f"image encoder x{args.batch}: {name} first call {time.perf_counter() - t0:.1f} s", flush=True)
    report(f"image encoder x{args.batch}", variants)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
