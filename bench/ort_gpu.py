"""ONNX Runtime's CUDA provider against the torch backend, fp32 / FP16 / INT8(+FP16) graphs, one process.

Stages (each one's failure is recorded in the JSON under its name, and the JSON is rewritten after
every stage, so a late failure loses nothing that ran before it):

1. ``model``: SAM2 (``--config``/``--image-size``, random weights with the object-score bias, or
   ``--checkpoint``, e.g. the shipped ``synthetic`` model);
2. ``export``: the ONNX graphs (or ``--graphs DIR``), then ``precisions``: calibration feeds recorded
   by the torch backend on 4 frames of the pruned loop (``CALIB_KEEP_RATIO``, as ``fastsam2-export
   --int8``: the router is calibrated too), ``fp16/`` and ``int8/`` graphs (INT8 + FP16, what TensorRT
   engines are built from; ``export/trt/precision.py: write_precision_dir``);
3. ``runs``: the same frames, two objects (box + click), through the torch backend (fp32) and ONNX
   Runtime on ``--device`` (fp32 fused attention, fp32 plain, fp16, int8): ms/frame (synchronized
   per frame, after ``--warmup`` untimed frames), peak GPU memory (torch: ``max_memory_allocated``;
   ONNX Runtime: the process's GPU memory from NVML before the backend was opened and after the run,
   minus what torch's caching allocator added meanwhile = the CUDA provider's arena), and mask
   agreement (min/mean mask IoU and max |Δ logits|; fp32 against torch, fp16/int8 against ORT fp32
   plain, the graph they were made from);
4. ``profile`` (``--profile``): ONNX Runtime's profiler (``SessionOptions.enable_profiling``) over a
   short run of each ORT precision, after a warm-up pass: per graph and frame, the session's run
   time, its node time (on the GPU and on the CPU), by op type and the top nodes;
5. ``jf``: with a trained model (``--checkpoint``) and ``fastsam2.runtime.synth``, J&F of every run
   on a generated held-out set (split "hard", first-frame masks as prompts, ``fastsam2 eval``'s
   scoring).

    python bench/ort_gpu.py --out bench/results/ort_gpu.json                       # GPU, tiny@512
    python bench/ort_gpu.py --checkpoint synthetic --out bench/results/ort_gpu_synthetic.json
    python bench/ort_gpu.py --device cpu --image-size 256 --frames 3 --out /tmp/ort_cpu.json   # CPU check
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, when not installed

from fastsam2.runtime.metrics import summarize_ms  # noqa: E402

RUNS = ("torch_fp32", "ort_fp32_fused", "ort_fp32_plain", "ort_fp16", "ort_int8")
# what each run's masks are compared with: the torch backend for the fp32 graphs, the plain fp32
# graphs for the graphs made from them
REFERENCE = {"ort_fp32_fused": "torch_fp32", "ort_fp32_plain": "torch_fp32", "ort_fp16": "ort_fp32_plain",
             "ort_int8": "ort_fp32_plain"}


class Report:
    """The JSON report, rewritten after every stage."""

    def __init__(self, path: Path, data: dict):
        self.path, self.data = path, data

    def stage(self, name: str, fn, *args, **kwargs):
        """Run ``fn``; store its result (or its error) under ``name``; return the result or None."""
        t0 = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
            entry = result if isinstance(result, dict) else {}
            ok = True
        except Exception as e:  # noqa: BLE001 - a benchmark records every failure and goes on
            result, ok = None, False
            entry = {"error": f"{type(e).__name__}: {str(e).strip()[:2000]}",
                     "traceback": traceback.format_exc().splitlines()[-12:]}
            print(f"[{name}] FAILED: {entry['error'][:300]}", file=sys.stderr)
        entry = {**entry, "seconds": round(time.perf_counter() - t0, 2), "ok": ok}
        self.data.setdefault("stages", {})[name] = {k: v for k, v in entry.items() if not k.startswith("_")}
        self.write()
        return result

    def write(self) -> None:
        from fastsam2.runtime.outdir import write_text_atomic

        write_text_atomic(self.path, json.dumps(self.data, indent=2, default=str) + "\n")


# -- GPU memory --------------------------------------------------------------------------------------


class GpuMemory:
    """This process's GPU memory from NVML (all allocators: torch's cache, ONNX Runtime's arenas,
    cuDNN/cuBLAS workspaces), or None where NVML is missing."""

    def __init__(self, index: int):
        self.handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as e:  # noqa: BLE001 - NVML is optional: report why it is absent
            self.why = f"{type(e).__name__}: {e}"

    def process_mib(self) -> float | None:
        if self.handle is None:
            return None
        pid = os.getpid()
        for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            for p in getattr(self.nvml, getter)(self.handle):
                if p.pid == pid and p.usedGpuMemory is not None:
                    return p.usedGpuMemory / 2**20
        # in a container NVML may not map pids: the device's used memory instead
        return self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2**20


# -- tracking ---------------------------------------------------------------------------------------


def two_objects():
    from fastsam2.runtime.tracker import Prompt
    from fastsam2.tools.bench import BENCH_OBJECTS

    return {i + 1: Prompt(points=[list(point)], labels=[1], box=list(box))
            for i, (box, point) in enumerate(BENCH_OBJECTS[:2])}


def track_timed(backend, frames, n: int, warmup: int) -> tuple[list[np.ndarray], list[float]]:
    """Logits [O,H,W] of ``n`` frames and their ms (synchronized per frame), after ``warmup``
    untimed frames of the same clip (CUDA kernels chosen, arenas grown)."""
    from fastsam2.runtime.tracker import SAM2Tracker, TrackerOptions

    tracker = SAM2Tracker(backend, TrackerOptions(fill_hole_area=0, profile_stages=False))
    for t in range(warmup):
        tracker.track(frames.image(t), two_objects() if t == 0 else None)
    backend.ops.synchronize()
    tracker.reset()
    logits, ms = [], []
    for t in range(n):
        t0 = time.perf_counter()
        res = tracker.track(frames.image(t), two_objects() if t == 0 else None)
        backend.ops.synchronize()
        ms.append((time.perf_counter() - t0) * 1e3)
        logits.append(np.asarray(res.logits, np.float32))
    return logits, ms


def agreement(ref: list[np.ndarray], ours: list[np.ndarray]) -> dict:
    """Mask IoU (logits > 0; frames/objects with an empty union count as 1) and max |Δ logits|."""
    from fastsam2.calibration.ort_quant import mask_stats

    min_iou, mean_iou, worst = mask_stats(ref, ours)
    return {"min_iou": round(min_iou, 5), "mean_iou": round(mean_iou, 5),
            "max_abs_logit_diff": float(f"{worst:.3g}"), "finite": bool(all(np.isfinite(x).all() for x in ours))}


# -- the stages -------------------------------------------------------------------------------------


def build_model(args, device: str):
    from fastsam2.export.models import build_sam2

    if args.checkpoint:
        return build_sam2(args.config, args.checkpoint, device=device, image_size=args.image_size, quiet=True)
    return build_sam2(args.config or "tiny", device=device, image_size=args.image_size, object_score_bias=5.0,
                      quiet=True, seed=0)


def export(model, out: Path) -> dict:
    import torch

    from fastsam2.export.onnx_export import export_graphs
    from fastsam2.export.router import TokenRouter

    router = TokenRouter.for_model(model)
    router.fastsam2_weights = "default-weights"
    threads = torch.get_num_threads()
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    try:
        manifest = export_graphs(model, out, router_stage=router, validate=False, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    return {"dir": str(out), "config": manifest.config_name, "weights": manifest.weights}


def precisions(graphs: Path, torch_backend, frames_dir: str, work: Path) -> dict:
    from fastsam2.runtime.backends.ort import read_precision_report

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/, also when loaded by file path
    from precision_graphs import make_precision_dirs

    missing = [p for p in ("fp16", "int8") if read_precision_report(graphs, p) is None]
    make_precision_dirs(graphs, torch_backend, frames_dir, missing, work / "calib_feeds", n_frames=4)
    out = {}
    for precision in ("fp16", "int8"):
        report = read_precision_report(graphs, precision)
        out[precision] = {g: {"accepted": v["accepted"], **v.get("conversion", {}),
                              **({"max_rel_error": v["int8"]["max_rel_error"]} if "int8" in v else {})}
                          for g, v in report["graphs"].items()}
    return out


def open_run(name: str, args, graphs: Path | None, torch_model, profile_prefix: str | None = None):
    if name == "torch_fp32":
        from fastsam2.export.torch_backend import build_torch_backend

        return build_torch_backend(torch_model)
    from fastsam2.runtime.backends.ort import load_ort_backend

    precision = name.split("_")[1]
    attention = "fused" if name == "ort_fp32_fused" else "plain"
    return load_ort_backend(graphs, device=args.device, precision=precision, attention=attention,
                            profile_prefix=profile_prefix)


def one_run(name: str, args, graphs, torch_model, frames, gpu: GpuMemory | None, logits: dict) -> dict:
    cuda = args.device.startswith("cuda")
    if cuda:
        import torch

        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before_process, before_reserved = gpu.process_mib() if gpu else None, torch.cuda.memory_reserved() / 2**20
    backend = open_run(name, args, graphs, torch_model)
    try:
        out, ms = track_timed(backend, frames, args.frames, args.warmup)
        entry: dict = {"backend": backend.description or backend.name, "precisions": backend.precisions,
                       "ms_per_frame": summarize_ms(ms)}
        if cuda:
            import torch

            torch.cuda.synchronize()
            entry["torch_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            if gpu is not None and before_process is not None:
                after = gpu.process_mib()
                reserved_growth = torch.cuda.memory_reserved() / 2**20 - before_reserved
                entry["process_gpu_mib_before_after"] = [round(before_process, 1), round(after, 1)]
                if name != "torch_fp32":
                    # the CUDA provider's arena (+ cuDNN/cuBLAS workspaces): the process's growth
                    # that torch's caching allocator does not account for
                    entry["ort_arena_mib"] = round(after - before_process - reserved_growth, 1)
    finally:
        backend.close()
        del backend
    logits[name] = out
    ref = REFERENCE.get(name)
    if ref in logits:
        entry[f"vs_{ref}"] = agreement(logits[ref], out)
    return entry


def profile_runs(args, graphs: Path, frames, work: Path) -> dict:
    """ONNX Runtime's profiler over each ORT precision: the same ``n = min(--frames, 8)`` frames twice,
    the tracker reset in between, and only the second pass summarized (the first holds cuDNN's
    algorithm search on each convolution's first call and the arena's growth). Per graph: ms per
    frame of the session runs and of their nodes, node time by op type, the ten slowest nodes."""
    n = min(args.frames, 8)
    out = {}
    for name in RUNS[1:]:
        prefix = str(work / "profile" / name)
        (work / "profile").mkdir(exist_ok=True)
        backend = open_run(name, args, graphs, None, profile_prefix=prefix)
        try:
            track_timed(backend, frames, n, n)
            traces = {g: r.end_profiling() for g, r in backend.runners.items()}
        finally:
            backend.close()
        out[name] = {g: summarize_trace(Path(t), n) for g, t in traces.items() if t}
    return out


def summarize_trace(path: Path, frames: int) -> dict:
    """One session's trace of two equal passes over ``frames`` frames: the second pass's session runs
    (the later half of them) and the node events inside them, in ms per frame."""
    events = json.loads(path.read_text())
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    second = runs[len(runs) // 2:]
    start = second[0]["ts"] if second else float("inf")
    by_op: dict[str, float] = {}
    by_node: dict[str, float] = {}
    for e in events:
        if e.get("cat") != "Node" or e.get("ts", 0) < start or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        a = e.get("args", {})
        ms = e.get("dur", 0) / 1e3 / frames
        op = f"{a.get('op_name', '?')}@{a.get('provider', '?').replace('ExecutionProvider', '')}"
        by_op[op] = by_op.get(op, 0.0) + ms
        node = e["name"].removesuffix("_kernel_time")
        by_node[node] = by_node.get(node, 0.0) + ms
    top = lambda d, k: {key: round(v, 3) for key, v in sorted(d.items(), key=lambda kv: -kv[1])[:k]}  # noqa: E731
    return {"frames": frames, "runs": len(second),
            "run_ms_per_frame": round(sum(e.get("dur", 0) for e in second) / 1e3 / frames, 3),
            "node_ms_per_frame": round(sum(by_op.values()), 3),
            "node_ms_on_cpu_per_frame": round(sum(v for k, v in by_op.items() if k.endswith("@CPU")), 3),
            "by_op": top(by_op, 16), "top_nodes": top(by_node, 10), "trace": str(path)}


def jf(args, graphs: Path, torch_model, work: Path) -> dict:
    """J&F of every run on a generated held-out set (first-frame ground-truth masks as prompts)."""
    from fastsam2.runtime import synth
    from fastsam2.runtime.evaluation import evaluate_dirs
    from fastsam2.runtime.frames import open_frames
    from fastsam2.runtime.output import labels_from_masks, save_indexed_png
    from fastsam2.runtime.tracker import SAM2Tracker, TrackerOptions
    from fastsam2.tools.eval_run import dataset_layout, first_frame_ids
    from fastsam2.tools.video_jobs import prompts_for_tracker

    data = synth.write_dataset(work / "heldout", videos=args.jf_videos, frames=args.jf_frames, seed=1234,
                               split="hard", size=args.image_size or 512)
    images, annos = dataset_layout(data)
    seqs = sorted(p.name for p in annos.iterdir() if p.is_dir())
    out = {"dataset": {"videos": len(seqs), "frames": args.jf_frames, "split": "hard", "seed": 1234}}
    for name in RUNS:
        backend = open_run(name, args, graphs, torch_model)
        try:
            tracker = SAM2Tracker(backend, TrackerOptions(fill_hole_area=0, profile_stages=False))
            pred = work / "pred" / name
            for seq in seqs:
                png, ids = first_frame_ids(annos / seq)
                prompts = prompts_for_tracker({i: {"mask": str(png)} for i in ids})
                tracker.reset()
                with open_frames(str(images / seq)) as source:
                    for frame in source:
                        res = tracker.track(frame.image, prompts if frame.index == 0 else None)
                        save_indexed_png(pred / seq / f"{frame.name}.png",
                                         labels_from_masks(res.masks, shape=frame.image.shape[:2]))
        finally:
            backend.close()
        report = evaluate_dirs(pred, annos, seqs)
        out[name] = {"jf_mean": round(report.jf_mean, 4), "j_mean": round(report.j_mean, 4),
                     "f_mean": round(report.f_mean, 4)}
    return out


def environment(args) -> dict:
    import onnxruntime as ort
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "onnxruntime": ort.__version__,
           "providers": ort.get_available_providers(), "host": platform.node(), "cpus": os.cpu_count(),
           "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
    return env


def main(argv: list[str] | None = None) -> int:
    from fastsam2.tools.bench import DEFAULT_FRAMES_DIR, SampleFrames

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the JSON report")
    p.add_argument("--device", default="cuda", help="cuda[:N] (default) or cpu (the CPU provider: a check of this script)")
    p.add_argument("--config", default=None, help="SAM2 config (default tiny; with --checkpoint synthetic its own)")
    p.add_argument("--checkpoint", default=None, help="weights (.pt/.safetensors or a shipped model name, e.g. synthetic)")
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--graphs", default=None, help="an export directory to use instead of exporting")
    p.add_argument("--frames", type=int, default=24, help="timed frames per run")
    p.add_argument("--warmup", type=int, default=4, help="untimed frames before each timed run")
    p.add_argument("--frames-dir", default=str(DEFAULT_FRAMES_DIR))
    p.add_argument("--profile", action="store_true", help="ONNX Runtime profiler over a short run of each ORT precision")
    p.add_argument("--jf-videos", type=int, default=4, help="held-out generated videos for J&F (trained model only)")
    p.add_argument("--jf-frames", type=int, default=12)
    p.add_argument("--work", default=None, help="scratch directory (default: a temporary one)")
    args = p.parse_args(argv)
    if args.checkpoint is None and args.config is None:
        args.config = "tiny"

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ort_gpu_"))
    work.mkdir(parents=True, exist_ok=True)
    report = Report(Path(args.out), {"args": vars(args), "work": str(work)})
    report.data["environment"] = report.stage("environment", environment, args)
    cuda = args.device.startswith("cuda")
    if cuda:
        import torch

        # fp32 means FP32 on both sides (the CUDA provider runs with use_tf32=0)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    cpu_model = report.stage("model", build_model, args, "cpu")
    graphs = Path(args.graphs) if args.graphs else None
    if graphs is None and cpu_model is not None:
        if report.stage("export", export, cpu_model, work / "export") is not None:
            graphs = work / "export"
    torch_model = None
    if cpu_model is not None:  # moved to the device after the export traced it on the CPU
        torch_model = cpu_model.to(args.device) if cuda else cpu_model
    if graphs is not None and torch_model is not None:
        from fastsam2.export.torch_backend import build_torch_backend

        report.data["precision_graphs"] = report.stage(
            "precisions", precisions, graphs, build_torch_backend(torch_model), args.frames_dir, work)
    frames = SampleFrames(args.frames_dir)
    gpu = GpuMemory(int(args.device.partition(":")[2] or 0)) if cuda else None
    if gpu is not None and gpu.handle is None:
        report.data["nvml"] = getattr(gpu, "why", "unavailable")
    logits: dict = {}
    report.data["runs"] = {}
    for name in RUNS:
        if (name == "torch_fp32" and torch_model is None) or (name != "torch_fp32" and graphs is None):
            continue
        report.data["runs"][name] = report.stage(f"run_{name}", one_run, name, args, graphs, torch_model, frames,
                                                 gpu, logits)
    if args.profile and graphs is not None:
        report.data["profile"] = report.stage("profile", profile_runs, args, graphs, frames, work)
    if args.checkpoint and graphs is not None:
        report.data["jf"] = report.stage("jf", jf, args, graphs, torch_model, work)
    report.write()
    for name, entry in (report.data.get("runs") or {}).items():
        if not entry:
            continue
        vs = next((v for k, v in entry.items() if k.startswith("vs_")), {})
        print(f"{name:16s} {entry['ms_per_frame']['median_ms']:8.1f} ms/frame  "
              f"torch peak {entry.get('torch_peak_allocated_mib', '-')} MiB  ORT arena {entry.get('ort_arena_mib', '-')} MiB  "
              f"min IoU {vs.get('min_iou', '-')}")
    failed = [k for k, v in report.data["stages"].items() if not v["ok"]]
    print(f"wrote {args.out}" + (f"; FAILED stages: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
