#!/usr/bin/env python3
"""TensorRT precision table: per graph and precision, engine size, build time and layers computing
FP32 (TensorRT / TensorRT-RTX builds, no execution), and ONNX Runtime (CPU) accuracy of the fp16 and
int8 graphs against fp32 on real frames, per graph and in the full tracker.

    python bench/trt_precision.py --frames ../shared/data/bedroom --out /tmp/trt_bench \\
        --json bench/results/trt_precision.json --md bench/results/trt_precision.md

One export (tiny@1024, seeded random weights, object-score bias +5 so that masks are non-empty, as
the tests do: no checkpoint can be downloaded here) gives the fp32 graphs; the fp16 graphs are
:func:`~fastsam2.export.trt.precision.to_fp16` of them, the int8 graphs
:func:`~fastsam2.calibration.qdq.quantize_qdq` calibrated on feeds recorded by the torch tracker
on the first ``--calib-frames`` frames (``record_feeds``, as ``fastsam2-export --trt --int8``). Then:

- per graph: the fp32 ONNX Runtime tracker runs on ``--n-frames`` frames with every graph's feeds
  recorded; each fp16/int8 graph is run on the same feeds: max |fp - fp32| per output;
- full tracker: the tracker runs with all graphs in fp16 (or int8) and its masks are compared to the
  fp32 tracker's, frame by frame (IoU of the binary masks, max |logit difference|).

TensorRT engines are only built (no GPU can run them here): their numbers are size and build time.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", required=True)
    p.add_argument("--out", required=True, help="work directory (graphs, engines)")
    p.add_argument("--n-frames", type=int, default=8)
    p.add_argument("--calib-frames", type=int, default=4)
    p.add_argument("--json", required=True)
    p.add_argument("--md", required=True)
    args = p.parse_args(argv)

    import torch
    from PIL import Image

    from fastsam2.calibration.ort_quant import DEFAULT_POINT, record_feeds
    from fastsam2.export.torch_backend import build_torch_backend
    from fastsam2.calibration.reader import DirectoryCalibrationReader, FeedRecorder
    from fastsam2.export.models import build_sam2
    from fastsam2.export.onnx_export import export_graphs
    from fastsam2.runtime.backends.trt_api import tensorrt_flavor
    from fastsam2.export.trt.builder import BuildSource, build_engine
    from fastsam2.export.trt.precision import to_fp16
    from fastsam2.runtime.backends.trt_profiles import profiles_for
    from fastsam2.calibration.qdq import accuracy_check, quantize_qdq
    from fastsam2.runtime.backends.base import Backend
    from fastsam2.runtime.backends.ort import OrtStageRunner
    from fastsam2.runtime.manifest import Manifest
    from fastsam2.runtime.ops import NumpyOps
    from fastsam2.runtime.tracker import Prompt, SAM2Tracker

    torch.set_num_threads(1)
    out = Path(args.out)
    graphs_dir = out / "graphs"
    model = build_sam2("tiny", image_size=1024, object_score_bias=5.0, quiet=True, seed=0)
    if not (graphs_dir / "manifest.json").is_file():
        export_graphs(model, graphs_dir, validate=False, overwrite=True)  # no router: keep 1.0
    manifest = Manifest.read(graphs_dir)
    names = list(manifest.graphs)
    frames = [np.asarray(Image.open(f).convert("RGB"))
              for f in sorted(Path(args.frames).glob("*.jpg"))[: args.n_frames]]
    calib = out / "calib"
    if not calib.is_dir():
        record_feeds(build_torch_backend(model), Path(args.frames), calib, n_frames=args.calib_frames)

    paths = {"fp32": {n: graphs_dir / manifest.graphs[n].file for n in names}, "fp16": {}, "int8": {}}
    conv: dict[str, dict] = {n: {} for n in names}
    for n in names:
        paths["fp16"][n] = out / f"{n}.fp16.onnx"
        conv[n]["fp16"] = to_fp16(paths["fp32"][n], paths["fp16"][n]).to_json()
        paths["int8"][n] = out / f"{n}.int8.onnx"
        reader = DirectoryCalibrationReader(calib, n)
        q = quantize_qdq(paths["fp32"][n], paths["int8"][n], reader)
        conv[n]["int8"] = accuracy_check(paths["fp32"][n], paths["int8"][n], reader, q).to_json()

    # engines (build only)
    flavor = tensorrt_flavor()
    engines: dict[str, dict] = {n: {} for n in names}
    for precision in ("fp32", "fp16", "int8"):
        for n in names:
            spec = manifest.graphs[n].spec
            eng = out / "engines" / precision / f"{n}.engine"
            t0 = time.perf_counter()
            meta = build_engine(paths[precision][n], spec, profiles_for(spec, manifest.model_config),
                                engine_path=eng, metadata=BuildSource("0" * 64, "tiny"), precision=precision,
                                check_compat=False)
            lp = meta.build_options["layer_precisions"]
            engines[n][precision] = {
                "engine_mib": round(eng.stat().st_size / 2**20, 1),
                "build_s": round(meta.build_options["build_seconds"], 1),
                "total_s": round(time.perf_counter() - t0, 1),
                "fp32_layers": lp["float_layers"].get("FLOAT", 0),
                "float_layers": sum(lp["float_layers"].values()),
                "int8_conv_matmul": lp["compute_layers_int8"], "conv_matmul": lp["compute_layers"],
                "activation_mib": round((meta.build_options["activation_bytes"] or 0) / 2**20),
            }
            eng.unlink()

    def backend(precision, record_dir=None):
        runners = {}
        for n in names:
            r = OrtStageRunner(manifest.graphs[n].spec, paths[precision][n], intra_op_threads=1)
            runners[n] = FeedRecorder(r, record_dir, max_feeds=10_000) if record_dir else r
            runners[n].activate()
        consts = dict(np.load(graphs_dir / "constants.npz"))
        return Backend(name="onnxruntime", runners=runners, ops=NumpyOps(), config=manifest.model_config,
                       constants=consts)

    def track(b):
        tracker = SAM2Tracker.from_backend(b, fill_hole_area=0, profile_stages=False)
        logits, t0 = [], time.perf_counter()
        for i, frame in enumerate(frames):
            prompts = {1: Prompt(points=[list(DEFAULT_POINT)], labels=[1])} if i == 0 else None
            logits.append(np.asarray(tracker.track(frame, prompts).logits))
        return logits, (time.perf_counter() - t0) / len(frames)

    feeds_dir = out / "feeds"
    ref, ref_s = track(backend("fp32", feeds_dir))
    per_graph: dict[str, dict] = {n: {} for n in names}
    tracker_rows: dict[str, dict] = {}
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    for precision in ("fp16", "int8"):
        for n in names:
            a = ort.InferenceSession(str(paths["fp32"][n]), so, providers=["CPUExecutionProvider"])
            b = ort.InferenceSession(str(paths[precision][n]), so, providers=["CPUExecutionProvider"])
            worst: dict[str, float] = {}
            reader = DirectoryCalibrationReader(feeds_dir, n)
            while (feed := reader.get_next()) is not None:
                for o, x, y in zip(manifest.graphs[n].spec.output_names, a.run(None, feed), b.run(None, feed)):
                    worst[o] = max(worst.get(o, 0.0), float(np.abs(x.astype(np.float64) - y).max()) if x.size else 0.0)
            per_graph[n][precision] = {"feeds": len(reader), "max_abs": worst}
        got, s = track(backend(precision))
        ious, dmax = [], 0.0
        for x, y in zip(ref, got):
            mx, my = x > 0, y > 0
            union = np.logical_or(mx, my).sum()
            ious.append(1.0 if union == 0 else float(np.logical_and(mx, my).sum() / union))
            dmax = max(dmax, float(np.abs(x - y).max()))
        tracker_rows[precision] = {"mean_iou": round(float(np.mean(ious)), 4), "min_iou": round(float(np.min(ious)), 4),
                                   "max_abs_logit": float(f"{dmax:.3g}"), "s_per_frame": round(s, 2),
                                   "fp32_mask_pixels_frame0": int((ref[0] > 0).sum())}
    tracker_rows["fp32"] = {"s_per_frame": round(ref_s, 2)}

    result = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "tensorrt": flavor.label, "frames": len(frames), "calib_frames": args.calib_frames,
        "weights": "random-init (seed 0, object-score bias +5)",
        "conversion": conv, "engines": engines, "per_graph": per_graph, "tracker": tracker_rows,
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"TensorRT precision table (tiny@1024, {flavor.label} builds without a GPU; ONNX Runtime CPU "
             f"accuracy on {len(frames)} bedroom frames; random weights)", "",
             "| graph | precision | engine MiB | build s | FP32 layers / float layers | INT8 conv+matmul | "
             "ORT max abs diff vs fp32 (per output, real feeds) |",
             "|---|---|---|---|---|---|---|"]
    for n in names:
        for precision in ("fp32", "fp16", "int8"):
            e = engines[n][precision]
            acc = "-" if precision == "fp32" else ", ".join(
                f"{o} {v:.3g}" for o, v in per_graph[n][precision]["max_abs"].items())
            lines.append(f"| {n} | {precision} | {e['engine_mib']} | {e['build_s']} | {e['fp32_layers']} / "
                         f"{e['float_layers']} | {e['int8_conv_matmul']}/{e['conv_matmul']} | {acc} |")
    lines += ["", "| full tracker (ORT CPU) | mean mask IoU vs fp32 | min IoU | max abs logit diff | s/frame |",
              "|---|---|---|---|---|",
              f"| fp32 | 1 | 1 | 0 | {tracker_rows['fp32']['s_per_frame']} |"]
    for precision in ("fp16", "int8"):
        t = tracker_rows[precision]
        lines.append(f"| {precision} | {t['mean_iou']} | {t['min_iou']} | {t['max_abs_logit']} | {t['s_per_frame']} |")
    lines += ["", f"Command: `{result['command']}`"]
    Path(args.md).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
