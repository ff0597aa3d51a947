#!/usr/bin/env python3
"""Per-stage latency / FPS / memory of the streaming tracker on this device.

    # Jetson, TensorRT engines from build_engines.py, three keep ratios
    python3 jetson/benchmark.py --engines engines/ --source clip.mp4 --frames 200 \
        --keep 1.0 0.5 0.3 --router router.safetensors --json bench.json
    # anywhere, ONNX Runtime on CPU (smoke test)
    python3 jetson/benchmark.py --backend ort --graphs graphs/ --source frames/ --frames 10

One object is prompted on the first frame (``--point X,Y``, ``--box X0,Y0,X1,Y1``; default a click at
the frame centre) and tracked with ``SAM2Tracker.track``. Frames are decoded into memory first (a
camera is read for that many frames), so decoding is not timed; a source shorter than
``--warmup + --frames`` is replayed from its start. The first ``--warmup`` frames (the prompted
frame among them) are not measured.

Per stage (the tracker's ``times``: ``preprocess`` and one entry per graph; GPU backends synchronize
after each stage, so the split is real, at the cost of a little overlap) the median and p90 of the
per-frame milliseconds; ``other`` is the rest of ``track()`` (memory bookkeeping, top-K selection,
upsampling masks to frame size); ``total`` is ``track()`` itself. FPS = 1000 / median total;
throughput = measured frames / their summed time.

Memory: ``torch.cuda.max_memory_allocated`` (torch-owned buffers: TensorRT IO tensors; not the
engines' own activation memory, which TensorRT allocates itself), ``device_used_mib`` from
``torch.cuda.mem_get_info`` (everything on the device; on Jetson the GPU shares system RAM, so this
includes other processes — compare with ``tegrastats``), and the process's peak RSS.

Never run on a Jetson or with TensorRT; the ORT/CPU path is the one exercised.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from fastsam2.runtime.args import ArgumentParser, cli_main  # noqa: E402
from fastsam2.runtime.errors import UserError  # noqa: E402
from fastsam2.runtime.outdir import check_output_file, write_text_atomic  # noqa: E402

STAGE_ORDER = ("preprocess", "image_encoder", "router", "memory_attention", "mask_decoder", "memory_encoder")
PROG = "benchmark"


class BenchError(UserError, ValueError):
    """A setup the benchmark cannot run (one-line message)."""


# -- statistics and the table (pure; unit-tested) ------------------------------------------------
def summarize(values: Sequence[float]) -> dict[str, float]:
    """Per-frame milliseconds summarized as every fastsam2 report does (runtime.metrics.summarize_ms)."""
    from fastsam2.runtime.metrics import summarize_ms

    return summarize_ms(values)


@dataclass
class RunRecord:
    """Per-frame measurements of one keep ratio."""

    keep_ratio: float
    stage_ms: list[dict[str, float]] = field(default_factory=list)  # one {stage: ms} per frame
    stage_calls: list[dict[str, int]] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    kept_tokens: list[int] = field(default_factory=list)
    memory: dict[str, float | None] = field(default_factory=dict)

    def result(self) -> dict[str, Any]:
        names = [s for s in STAGE_ORDER if any(s in f for f in self.stage_ms)]
        names += sorted({s for f in self.stage_ms for s in f} - set(names))
        n = len(self.total_ms)
        stages = {}
        for s in names:
            stats = summarize([f.get(s, 0.0) for f in self.stage_ms])
            stats["calls_per_frame"] = sum(c.get(s, 0) for c in self.stage_calls) / max(n, 1)
            stages[s] = stats
        stages["other"] = summarize([t - sum(f.values()) for t, f in zip(self.total_ms, self.stage_ms)])
        total = summarize(self.total_ms)
        return {
            "keep_ratio": self.keep_ratio,
            "frames": n,
            "stages": stages,
            "total": total,
            "fps": 1000.0 / total["median_ms"] if n else float("nan"),
            "throughput_fps": 1000.0 * n / sum(self.total_ms) if n else float("nan"),
            "mean_kept_tokens": float(np.mean(self.kept_tokens)) if self.kept_tokens else None,
            "memory": dict(self.memory),
        }


def _mib(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def format_table(results: Sequence[dict[str, Any]], header: str = "") -> str:
    """A plain-text table: one block per keep ratio, one row per stage, then total / FPS / memory."""
    lines = [header] if header else []
    lines.append(f"{'keep':>5}  {'stage':<18}{'median ms':>10}{'p90 ms':>10}{'calls/frame':>13}")
    for r in results:
        keep = f"{r['keep_ratio']:.2f}"
        rows = [(name, s) for name, s in r["stages"].items()] + [("total", r["total"])]
        for i, (name, s) in enumerate(rows):
            calls = s.get("calls_per_frame")
            lines.append(
                f"{keep if i == 0 else '':>5}  {name:<18}{s['median_ms']:>10.2f}{s['p90_ms']:>10.2f}"
                f"{'' if calls is None else f'{calls:.1f}':>13}"
            )
        mem = r.get("memory", {})
        kept = r.get("mean_kept_tokens")
        lines.append(
            f"{'':>5}  FPS {r['fps']:.1f} (median), throughput {r['throughput_fps']:.1f} over {r['frames']} frames"
            + (f"; kept tokens {kept:.0f}" if kept is not None else "")
        )
        lines.append(
            f"{'':>5}  memory MiB: torch max allocated {_mib(mem.get('torch_max_allocated_mib'))}, "
            f"device used {_mib(mem.get('device_used_mib'))}, peak RSS {_mib(mem.get('peak_rss_mib'))}"
        )
    return "\n".join(lines)


def parse_floats(text: str, n: int, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise BenchError(f"{what} must be {n} comma-separated numbers, got {text!r}") from None
    if len(values) != n:
        raise BenchError(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return values


# -- running -------------------------------------------------------------------------------------
def load_frames(source: str, n: int) -> tuple[list[np.ndarray], bool]:
    """``n`` RGB frames from ``source`` (replayed from the start if shorter); (frames, replayed)."""
    from fastsam2.runtime.frames import open_frames

    frames: list[np.ndarray] = []
    with open_frames(source) as src:
        for frame in src:
            frames.append(frame.image)
            if len(frames) == n:
                break
    if not frames:
        raise BenchError(f"no frames in {source}")
    replayed = len(frames) < n
    while len(frames) < n:
        frames.append(frames[len(frames) % max(1, len(frames))])
    return frames, replayed


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def load_backend(args: argparse.Namespace):
    from fastsam2 import open_backend

    if args.backend == "trt":
        return open_backend("trt", args.engines, device=args.device, cuda_graphs=args.cuda_graphs,
                            router=args.router)
    providers = None
    if args.ort_provider == "cuda":
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    elif args.ort_provider == "tensorrt":
        providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    return open_backend("ort", args.graphs, providers=providers, threads=args.threads, router=args.router)


def run_keep(tracker_factory, frames: list[np.ndarray], prompt, keep: float, warmup: int, torch=None) -> RunRecord:
    """Track ``frames`` with a fresh tracker at ``keep``; per-frame times after ``warmup`` frames."""
    tracker = tracker_factory(keep)
    rec = RunRecord(keep_ratio=keep)
    if torch is not None:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for i, frame in enumerate(frames):
        before_ms, before_calls = dict(tracker.times.ms), dict(tracker.times.calls)
        result = tracker.track(frame, {1: prompt} if i == 0 else None)
        if i < warmup:
            continue
        calls = {s: c - before_calls.get(s, 0) for s, c in tracker.times.calls.items()}
        rec.stage_ms.append({s: tracker.times.ms[s] - before_ms.get(s, 0.0) for s, c in calls.items() if c})
        rec.stage_calls.append({s: c for s, c in calls.items() if c})
        rec.total_ms.append(result.ms)
        if result.kept_tokens:
            rec.kept_tokens.append(int(sum(result.kept_tokens.values())))
    if torch is not None:
        free, total = torch.cuda.mem_get_info()
        rec.memory["torch_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        rec.memory["device_used_mib"] = (total - free) / 2**20
    else:
        rec.memory["torch_max_allocated_mib"] = rec.memory["device_used_mib"] = None
    # ru_maxrss is KiB on Linux.
    rec.memory["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return rec


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from fastsam2.runtime.tracker import Prompt, SAM2Tracker

    keeps = sorted(set(args.keep), reverse=True)
    bad = [k for k in keeps if not 0.0 < k <= 1.0]
    if bad:
        raise BenchError(f"--keep values must be in (0, 1], got {bad}")
    frames, replayed = load_frames(args.source, args.warmup + args.frames)
    h, w = frames[0].shape[:2]
    if args.box:
        prompt = Prompt(box=parse_floats(args.box, 4, "--box"))
    else:
        x, y = parse_floats(args.point, 2, "--point") if args.point else (w / 2, h / 2)
        prompt = Prompt(points=[[x, y]], labels=[1])

    backend = load_backend(args)
    # the engines' profile limits (lowest keep ratio, conditioning frames) are the backend's
    min_keep = backend.limits.get("min_keep_ratio", 0.0)
    if keeps[-1] < min_keep - 1e-9:
        backend.close()
        raise BenchError(
            f"--keep {keeps[-1]} is below the engines' profile minimum {min_keep:.3f} "
            "(the memory-attention engine has no kernel for fewer kept tokens)"
        )
    torch = _torch_cuda() if (args.backend == "trt" or args.ort_provider != "cpu") else None

    def make_tracker(keep: float):
        return SAM2Tracker.from_backend(backend, keep=keep, text=args.text, texts=args.texts, router=args.router)

    results = []
    try:
        for keep in keeps:
            rec = run_keep(make_tracker, frames, prompt, keep, args.warmup, torch)
            results.append(rec.result())
    finally:
        close = getattr(backend, "close", None)
        if close is not None:
            close()
    cfg = backend.config
    return {
        "backend": backend.name,
        "backend_description": getattr(backend, "description", ""),
        "config_name": cfg.config_name,
        "image_size": cfg.image_size,
        "source": str(args.source),
        "frame_size": [w, h],
        "frames_measured": args.frames,
        "warmup": args.warmup,
        "source_replayed": replayed,
        "engine_limits": backend.limits,
        "host": {"machine": platform.machine(), "python": platform.python_version(), "node": platform.node()},
        "jetson": read_jetson_facts(),
        "results": results,
    }


def read_jetson_facts() -> dict[str, str] | None:
    """L4T release and power mode, when on a Jetson (files/commands documented by Jetson Linux)."""
    facts: dict[str, str] = {}
    release = Path("/etc/nv_tegra_release")
    if release.is_file():
        facts["nv_tegra_release"] = release.read_text().splitlines()[0].strip()
    model = Path("/proc/device-tree/model")
    if model.is_file():
        facts["model"] = model.read_bytes().rstrip(b"\x00").decode(errors="replace")
    if facts:
        import shutil
        import subprocess

        if shutil.which("nvpmodel"):
            try:
                out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=5).stdout
                facts["nvpmodel"] = " ".join(out.split())
            except (OSError, subprocess.SubprocessError):
                pass
    return facts or None


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=("trt", "ort"), default="trt", help="default trt")
    p.add_argument("--engines", metavar="DIR", help="engine directory (trt; from build_engines.py)")
    p.add_argument("--graphs", metavar="DIR", help="ONNX export directory (ort)")
    p.add_argument("--source", required=True, help="frame folder, video file, or camera index")
    p.add_argument("--frames", type=int, default=100, help="measured frames (default 100)")
    p.add_argument("--warmup", type=int, default=5, help="unmeasured first frames (default 5, >= 1)")
    p.add_argument("--keep", type=float, nargs="+", default=[1.0], help="keep ratios (default 1.0)")
    p.add_argument("--point", metavar="X,Y", help="positive click on the first frame (default: centre)")
    p.add_argument("--box", metavar="X0,Y0,X1,Y1", help="box prompt on the first frame")
    p.add_argument("--router", metavar="FILE", help="router weights (.safetensors) for keep < 1")
    p.add_argument("--text", help="object description for the router's text cue")
    p.add_argument("--texts", metavar="FILE.npz", help="text embeddings from `fastsam2-export text`")
    p.add_argument("--device", default="cuda", help="trt: CUDA device (default cuda)")
    p.add_argument("--cuda-graphs", action="store_true", help="trt: replay CUDA graphs per shape bucket")
    p.add_argument("--ort-provider", choices=("cpu", "cuda", "tensorrt"), default="cpu", help="ort: execution provider")
    p.add_argument("--threads", type=int, help="ort: intra-op threads")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    return p


def check_args(args: argparse.Namespace) -> None:
    if args.backend == "trt" and not args.engines:
        raise BenchError("--backend trt needs --engines DIR (build them with jetson/build_engines.py)")
    if args.backend == "ort" and not args.graphs:
        raise BenchError("--backend ort needs --graphs DIR (an ONNX export)")
    if args.backend == "trt" and (args.graphs or args.ort_provider != "cpu" or args.threads):
        raise BenchError("--graphs/--ort-provider/--threads apply to --backend ort")
    if args.backend == "ort" and (args.engines or args.cuda_graphs):
        raise BenchError("--engines/--cuda-graphs apply to --backend trt")
    if args.threads is not None:
        from fastsam2.runtime.threads import plan_threads

        try:
            plan_threads(args.threads)  # refuses 0 and more threads than cores, as every fastsam2 command
        except ValueError as e:
            raise BenchError(str(e)) from None
    if args.frames < 1:
        raise BenchError(f"--frames must be >= 1, got {args.frames}")
    if args.warmup < 1:
        raise BenchError(f"--warmup must be >= 1 (the prompted frame is never measured), got {args.warmup}")
    if args.point and args.box:
        raise BenchError("give --point or --box, not both")


def main(argv: Sequence[str] | None = None) -> int:
    """User errors of every room (bad options, frames, exports, engines) are one line and exit 1."""
    return cli_main(PROG, build_parser(), argv, run=run)


def run(args: argparse.Namespace) -> int:
    check_args(args)
    if args.json:
        check_output_file(args.json, create_parent=True,
                          protect=[args.engines, args.graphs, args.source, args.router, args.texts])
    t0 = time.perf_counter()
    report = benchmark(args)
    header = (f"{report['backend_description'] or report['backend']}, {report['config_name']} "
              f"@{report['image_size']}, frames {report['frame_size'][0]}x{report['frame_size'][1]}, "
              f"{args.frames} measured after {args.warmup} warm-up"
              + (" (source replayed)" if report["source_replayed"] else ""))
    print(format_table(report["results"], header))
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
