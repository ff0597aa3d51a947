"""``fastsam2 bench``: fastsam2 against the official SAM2VideoPredictor, side by side, in one process.

Both sides get the same weights (:func:`fastsam2.export.models.build_sam2`, random unless
``--checkpoint``: speed does not depend on the weights; the object-score head gets a +5 bias so that
masks are non-trivial), the same frames (the sample clip repeated to the asked length: the official
predictor reads a folder of N JPEG links to it) and the same prompt (one object: a box and a positive
click inside it, on frame 0). Per configuration it measures:

* ms per tracked frame (median, p90, mean) after warm-up, and fps = 1000 / median. Each frame is
  timed from the call until its mask logits are ready: ``torch.cuda.synchronize()`` after every frame
  on the GPU, for both sides. Frame 0 (the prompt) and the first ``--skip`` tracked frames are not
  counted. The official predictor decodes and resizes every frame up front in ``init_state`` (its
  ``load_s``, not in its per-frame time); fastsam2 takes raw RGB frames and preprocesses them inside
  its per-frame time.
* per-stage ms per frame, with a synchronization around every stage (forward hooks on the official
  modules): on the GPU over the last ``--profile-frames`` frames of the untimed warm-up run, on the
  CPU over the timed frames themselves.
* peak memory. GPU: ``torch.cuda.max_memory_allocated()`` (and ``max_memory_reserved``), reset
  between configurations after ``empty_cache``; the shared model weights are included in both.
  CPU: the RSS high-water mark sampled every 2 ms over the configuration, minus the RSS just before it
  (after ``gc`` and ``malloc_trim``): the memory the configuration added (all configurations run in
  one process, so the process-wide ``ru_maxrss`` cannot separate them).

Heavy imports (torch, sam2, onnxruntime, matplotlib) happen only when the command runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastsam2.runtime.args import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, image_size, keep_ratios, non_negative_int, positive
from fastsam2.runtime.config import CHECKPOINT_HELP
from fastsam2.runtime.outdir import check_output_file, write_text_atomic
from fastsam2.runtime.errors import UsageError

from .cli import add_encoder_region_args, check_encoder_region_args
from .bench_inputs import BENCH_OBJECTS, DEFAULT_FRAMES_DIR, STREAM_OFFSET, SampleFrames, object_prompts

STAGES_OFFICIAL = ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder")


# ------------------------------------------------------------------------------------------------
# CLI
def _dtypes(text: str) -> list[str]:
    vals = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in vals if v not in ("float32", "bfloat16")]
    if not vals or bad:
        raise argparse.ArgumentTypeError(f"expected float32 and/or bfloat16, got {text!r}")
    return vals


def _int_list(text: str, minimum: int, what: str) -> list[int]:
    """"N,N,.." → [N, ...], each at least ``minimum`` (argparse error naming ``what`` otherwise)."""
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not vals or any(v < minimum for v in vals):
        raise argparse.ArgumentTypeError(f"{what} are >= {minimum}, got {text!r}")
    return vals


def _depths(text: str) -> list[int]:
    return _int_list(text, 0, "steps in flight")


def _ints(text: str) -> list[int]:
    return _int_list(text, 2, "frame counts")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark fastsam2 against the official SAM2VideoPredictor (same weights, frames, prompt)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--config", default=None, help="SAM2 config name or .yaml (default: tiny, or the --checkpoint model's)")
    p.add_argument("--checkpoint", metavar="PATH", help=CHECKPOINT_HELP)
    p.add_argument("--backend", choices=("torch", "ort"), default="torch")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda if available")
    p.add_argument("--keep", type=keep_ratios, default=[1.0, 0.5, 0.3], metavar="R,R,..",
                   help="fastsam2 keep ratios (default 1.0,0.5,0.3)")
    p.add_argument("--frames", type=_ints, default=[60, 200, 1000], metavar="N,N,..",
                   help="video lengths in frames (default 60,200,1000)")
    p.add_argument("--image-size", type=image_size, metavar="N",
                   help=f"model input size, a multiple of 64 in {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} (default: the config's)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="fastsam2 torch autocast dtype (default float32; the official side stays eager fp32 "
                        "as its predictor runs by default)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="fastsam2 GPU path: CUDA graphs per shape bucket, device preprocessing, "
                        "device-resident results, kept count rounded up to --k-multiple")
    p.add_argument("--k-multiple", type=positive(int), default=None, metavar="N",
                   help="round the kept token count up to a multiple of N (default 128 with --cuda-graphs)")
    p.add_argument("--graphs", metavar="DIR", help="ORT: exported graphs (default: export the same model to a temp dir)")
    p.add_argument("--frames-dir", default=str(DEFAULT_FRAMES_DIR), metavar="DIR",
                   help="sample frames, repeated to each video length (default ../shared/data/bedroom)")
    p.add_argument("--warmup-frames", type=non_negative_int, default=None, metavar="N",
                   help="untimed warm-up run per side/keep before timing, its last --profile-frames "
                        "give the per-stage times (default 30 on cuda, 0 on cpu)")
    p.add_argument("--skip", type=non_negative_int, default=None, metavar="N",
                   help="tracked frames not counted at the start of each run (default 5 on cuda, 1 on cpu)")
    p.add_argument("--profile-frames", type=non_negative_int, default=10, metavar="N",
                   help="GPU: warm-up frames timed per stage with synchronization (default 10)")
    p.add_argument("--official-offload", action="store_true",
                   help="also run the official predictor with offload_video_to_cpu=True")
    p.add_argument("--no-official", action="store_true", help="skip the official predictor")
    p.add_argument("--ort-int8", action="store_true",
                   help="ORT: also run the INT8 graphs (quantized and accepted per graph by "
                        "calibration/ort_quant's report; built from --frames-dir if the export has none)")
    p.add_argument("--objects", type=int, choices=range(1, len(BENCH_OBJECTS) + 1), default=1, metavar="N",
                   help=f"objects prompted on frame 0, 1..{len(BENCH_OBJECTS)} (default 1)")
    p.add_argument("--streams", type=positive(int), default=1, metavar="N",
                   help="fastsam2: N streams (the sample clip from N offsets, --objects each) served by one "
                        "MultiStreamTracker, batched; reports aggregate fps and per-stream latency (default 1)")
    p.add_argument("--in-flight", type=_depths, default=[0], metavar="N,N,..",
                   help="fastsam2 on a GPU (--cuda-graphs: results stay on the device): issue each step "
                        "while up to N earlier ones still compute, as MultiStreamTracker.serve does; "
                        "latency is then each step's issue to its results being ready, fps the steps "
                        "finished per second of wall time; several values: a row each, same backend "
                        "(default 0: every step finishes before the next is issued)")
    p.add_argument("--precision", choices=("fp32", "fp8"), default="fp32",
                   help="fastsam2 torch backend: fp8 runs the linear layers of Hiera's last two stages as FP8 "
                        "scaled matmuls (fastsam2.export.fp8; after the official rows, which stay unchanged)")
    p.add_argument("--compile", action="store_true",
                   help="fastsam2 torch backend: every stage through torch.compile (timed after warm-up)")
    add_encoder_region_args(p)  # the rectangles follow the masks: random weights' masks cover the frame
    p.add_argument("--region-units", type=positive(int), default=None, metavar="K",
                   help="with --encoder-region: every tracked frame's rectangle is K x K units at the grid's "
                        "centre instead of the masks' box (still read from the masks, as a real choice "
                        "is): random weights' masks cover the frame, so this times a rectangle of a "
                        "stated size; its J&F is measured by fastsam2 eval on a trained model")
    p.add_argument("--freeze-weights", action="store_true",
                   help="with --compile on CUDA: weights as Inductor constants, cast to bf16 once instead of at "
                        "every call (build_torch_backend's freeze_weights)")
    p.add_argument("--gpu-attention", choices=("by-shape", "sdpa"), default="by-shape",
                   help="fastsam2 torch backend on CUDA, bf16/fp16: attention kernel chosen per shape and "
                        "the patch embedding as one matmul (default), or PyTorch's SDPA choice and sam2's "
                        "convolution")
    p.add_argument("--official-dtype", type=_dtypes, default=["float32"], metavar="D,D",
                   help="the official predictor's modes: float32 (eager, its default) and/or bfloat16 "
                        "(torch.inference_mode + bf16 autocast, as its README runs it); default float32")
    p.add_argument("--official-vos", action="store_true",
                   help="also the official predictor with vos_optimized=True (torch.compile of its "
                        "stages; a failure is reported as a row)")
    p.add_argument("--threads", type=positive(int), default=None, metavar="N",
                   help="intra-op threads of torch (both sides) and ONNX Runtime (default: the CPU cores idle "
                        "at the start)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", required=True, metavar="OUT.json", help="write the results here")
    p.add_argument("--plot", metavar="OUT.png", help="fps vs keep ratio and peak memory vs frames (matplotlib)")
    p.set_defaults(func=run_bench_cli)


@dataclass
class BenchOptions:
    config: str | None = None  # None: tiny, or the shipped checkpoint's
    checkpoint: str | None = None
    backend: str = "torch"
    device: str = "cpu"
    keep: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.3])
    frames: list[int] = field(default_factory=lambda: [60, 200, 1000])
    image_size: int | None = None
    dtype: str = "float32"
    cuda_graphs: bool = False
    k_multiple: int = 1
    graphs: str | None = None
    frames_dir: str = str(DEFAULT_FRAMES_DIR)
    warmup_frames: int = 0
    skip: int = 1
    profile_frames: int = 10
    official: bool = True
    official_offload: bool = False
    objects: int = 1
    streams: int = 1
    in_flight: list[int] = field(default_factory=lambda: [0])
    compile: bool = False
    precision: str = "fp32"  # torch backend: "fp8" converts the model's trunk after the official rows
    encoder_region: int | None = None  # TrackerOptions.encoder_region of the fastsam2 rows
    encoder_refresh: int = 0
    encoder_lag: int = 0
    region_units: int | None = None  # bench only: a fixed K x K rectangle (fixed_rect_for)
    gpu_attention: str = "by-shape"
    freeze_weights: bool = False
    official_dtypes: list[str] = field(default_factory=lambda: ["float32"])
    official_vos: bool = False
    ort_int8: bool = False
    threads: int | None = None
    seed: int = 0
    command: str = ""


def run_bench_cli(args: argparse.Namespace) -> int:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA device")
    if args.ort_int8 and args.backend != "ort":
        raise UsageError("--ort-int8 needs --backend ort")
    if args.precision != "fp32" and args.backend != "torch":
        raise UsageError("--precision fp8 is the torch backend's (ONNX graphs: --ort-int8)")
    if args.precision == "fp8":  # refuse a GPU without FP8 tensor cores before the official rows run
        from fastsam2.export.fp8 import check_fp8_device

        check_fp8_device(device)
    if args.backend == "ort" and (args.cuda_graphs or args.dtype != "float32" or args.compile
                                  or args.gpu_attention != "by-shape"):
        raise UsageError("--cuda-graphs, --compile, --gpu-attention and --dtype are torch-backend options")
    if ("bfloat16" in args.official_dtype or args.official_vos) and device != "cuda":
        raise UsageError("--official-dtype bfloat16 and --official-vos are GPU modes of the official predictor")
    if args.cuda_graphs and device != "cuda":
        raise UsageError("--cuda-graphs needs --device cuda")
    check_encoder_region_args(args)
    if args.freeze_weights and not (args.compile and device == "cuda" and args.dtype != "float32"):
        # build_torch_backend freezes only there: anywhere else the flag would do nothing
        raise UsageError("--freeze-weights is for compiled half-precision stages on CUDA: add --compile "
                         "(with --device cuda and --dtype bfloat16 or float16)")
    if args.region_units is not None and args.encoder_region is None:
        raise UsageError("--region-units fixes the rectangle of --encoder-region: add --encoder-region")
    if any(args.in_flight) and not args.cuda_graphs:
        # a host step finishes inside step(): a later check would add the next step to its latency
        raise UsageError("--in-flight needs the GPU path (--cuda-graphs), whose steps run asynchronously")
    if not Path(args.frames_dir).is_dir():
        raise UsageError(f"frames folder not found: {args.frames_dir}")
    for path in (args.json, args.plot):  # refuse an unwritable report path now, not after the run
        if path:
            check_output_file(path, create_parent=True, protect=(args.checkpoint,))
    on_gpu = device == "cuda"
    opts = BenchOptions(
        config=args.config,
        checkpoint=args.checkpoint,
        backend=args.backend,
        device=device,
        keep=args.keep,
        frames=args.frames,
        image_size=args.image_size,
        dtype=args.dtype,
        cuda_graphs=args.cuda_graphs,
        k_multiple=args.k_multiple if args.k_multiple else (128 if args.cuda_graphs else 1),
        graphs=args.graphs,
        frames_dir=args.frames_dir,
        warmup_frames=args.warmup_frames if args.warmup_frames is not None else (30 if on_gpu else 0),
        skip=args.skip if args.skip is not None else (5 if on_gpu else 1),
        profile_frames=min(args.profile_frames, max(0, (args.warmup_frames or 30) - 17)) if on_gpu else 0,
        official=not args.no_official,
        official_offload=args.official_offload,
        objects=args.objects,
        streams=args.streams,
        in_flight=args.in_flight,
        compile=args.compile,
        precision=args.precision,
        encoder_region=args.encoder_region,
        encoder_refresh=args.encoder_refresh,
        encoder_lag=args.encoder_lag,
        region_units=args.region_units,
        gpu_attention=args.gpu_attention,
        freeze_weights=args.freeze_weights,
        official_dtypes=args.official_dtype,
        official_vos=args.official_vos,
        ort_int8=args.ort_int8,
        threads=args.threads,
        seed=args.seed,
        command=shlex.join(["fastsam2", *sys.argv[1:]]) if "bench" in sys.argv[1:2] else "",
    )
    if max(opts.frames) <= opts.skip + 1:
        raise UsageError(f"--frames must exceed --skip + 1 = {opts.skip + 1} so that some frames are timed")
    report = run_bench(opts, log=lambda m: print(m, file=sys.stderr, flush=True))
    out = write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    print(format_table(report))
    print(f"wrote {out}")
    if args.plot:
        msg = plot_report(report, args.plot)
        print(msg)
    return 0


# ------------------------------------------------------------------------------------------------
# frames
# ------------------------------------------------------------------------------------------------
# memory meters
def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class MemoryMeter:
    """Peak memory of one configuration: CUDA allocator peaks, or sampled RSS above a baseline."""

    def __init__(self, device: str):
        self.device = device
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.base = 0.0
        self.peak = 0.0

    def __enter__(self) -> "MemoryMeter":
        import torch

        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.base = float(torch.cuda.memory_allocated())
        else:
            _malloc_trim()
            from fastsam2.runtime.metrics import rss_mb

            self.base = self.peak = rss_mb() * 2**20
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        from fastsam2.runtime.metrics import rss_mb

        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_mb() * 2**20)

    def __exit__(self, *exc) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = float(torch.cuda.max_memory_allocated())
            self.peak_reserved = float(torch.cuda.max_memory_reserved())
        else:
            from fastsam2.runtime.metrics import rss_mb

            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, rss_mb() * 2**20)

    def fields(self) -> dict[str, float]:
        if self.device == "cuda":
            return {
                "peak_mem_mb": self.peak / 2**20,
                "peak_mem_delta_mb": (self.peak - self.base) / 2**20,
                "peak_reserved_mb": self.peak_reserved / 2**20,
            }
        return {"peak_mem_mb": (self.peak - self.base) / 2**20, "rss_base_mb": self.base / 2**20,
                "peak_rss_mb": self.peak / 2**20}


# ------------------------------------------------------------------------------------------------
# the official predictor
class _OfficialStageTimer:
    """Forward hooks on the official modules that time each stage with a synchronization."""

    MODULES = {
        "image_encoder": "image_encoder",
        "memory_attention": "memory_attention",
        "mask_decoder": "sam_mask_decoder",
        "memory_encoder": "memory_encoder",
    }

    def __init__(self, model, sync):
        self.on = False
        self.sync = sync
        self.ms: dict[str, float] = {}
        self._t0: dict[str, float] = {}
        self.handles = []
        for stage, attr in self.MODULES.items():
            mod = getattr(model, attr)
            self.handles.append(mod.register_forward_pre_hook(self._pre(stage)))
            self.handles.append(mod.register_forward_hook(self._post(stage)))

    def _pre(self, stage):
        def hook(_m, _inp):
            if self.on:
                self.sync()
                self._t0[stage] = time.perf_counter()

        return hook

    def _post(self, stage):
        def hook(_m, _inp, _out):
            if self.on and stage in self._t0:
                self.sync()
                self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - self._t0.pop(stage)) * 1e3

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _stats(ms: list[float]) -> dict[str, float]:
    from fastsam2.runtime.metrics import fps, summarize_ms

    s = summarize_ms(ms)
    return {**s, "fps": fps(s)}


def official_variant(dtype: str = "float32", offload: bool = False, vos: bool = False) -> str:
    """The row name of an official-predictor mode ("official" is its default: eager fp32)."""
    return " ".join(["official"] + (["vos_optimized"] if vos else []) + (["bf16"] if dtype == "bfloat16" else [])
                    + (["offload_video_to_cpu"] if offload else []))


def run_official(model, frames: SampleFrames, n: int, opts: BenchOptions, tmp: Path, *,
                 offload: bool = False, profile_last: int = 0, dtype: str = "float32",
                 vos: bool = False) -> dict[str, Any]:
    """One official run over an n-frame folder: init_state, prompt on frame 0, propagate.

    ``dtype`` "bfloat16": under bf16 autocast (with ``torch.inference_mode``), as SAM2's README runs
    the predictor on a GPU. Per-stage times: over the last ``profile_last`` frames (GPU warm-up run),
    or on the CPU over every tracked frame (synchronizing costs nothing there)."""
    import contextlib

    import torch

    cuda = opts.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    folder = frames.link_folder(n, tmp)
    timer = _OfficialStageTimer(model, sync)
    meter = MemoryMeter(opts.device)
    ms: list[float] = []
    first_profiled = n - profile_last if cuda else 1
    autocast = (torch.autocast(opts.device, dtype=torch.bfloat16) if dtype == "bfloat16"
                else contextlib.nullcontext())
    with meter, torch.inference_mode(), autocast:
        t0 = time.perf_counter()
        state = model.init_state(str(folder), offload_video_to_cpu=offload)
        sync()
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for obj_id, point, box in object_prompts(opts.objects):
            model.add_new_points_or_box(state, 0, obj_id, points=[point], labels=[1], box=list(box))
        sync()
        prompt_ms = (time.perf_counter() - t0) * 1e3
        for t, _ids, _logits in model.propagate_in_video(state):
            sync()
            t1 = time.perf_counter()
            if t > opts.skip:
                ms.append((t1 - t0) * 1e3)
            if t + 1 == first_profiled:
                timer.on = True
            t0 = time.perf_counter()
        mem_bank = _official_bank_bytes(state)
        del state
    timer.close()
    profiled = n - first_profiled
    return {
        "impl": "official",
        "variant": official_variant(dtype, offload, vos),
        "objects": opts.objects,
        "keep": 1.0,
        "frames": n,
        "load_s": load_s,
        "prompt_ms": prompt_ms,
        **_stats(ms),
        "stage_ms": {k: v / profiled for k, v in timer.ms.items()} if profiled > 0 else {},
        **meter.fields(),
        "memory_bank_mb": mem_bank / 2**20,
    }


def _official_bank_bytes(state) -> int:
    """Bytes of the official predictor's per-frame outputs (its memory bank), all objects."""
    total = 0
    seen = set()
    for per_obj in state["output_dict_per_obj"].values():
        for kind in ("cond_frame_outputs", "non_cond_frame_outputs"):
            for out in per_obj[kind].values():
                for v in out.values():
                    if hasattr(v, "element_size") and id(v) not in seen:
                        seen.add(id(v))
                        total += v.numel() * v.element_size()
    return total


# ------------------------------------------------------------------------------------------------
# fastsam2
def fastsam2_backend(model, opts: BenchOptions, graphs_dir: str | None, precision: str = "fp32",
                   threads: int | None = None):
    """The fastsam2 backend over ``model``'s weights (torch stages, or ONNX graphs of ``model``)."""
    if opts.backend == "torch":
        from fastsam2.export.torch_backend import build_torch_backend

        return build_torch_backend(
            model,
            autocast_dtype=None if opts.dtype == "float32" else opts.dtype,
            check_inputs=False,
            cuda_graphs=opts.cuda_graphs,
            compile=opts.compile,
            attention=opts.gpu_attention,
            precision=opts.precision,
            freeze_weights=opts.freeze_weights,
        )
    from fastsam2.runtime.backends.ort import load_ort_backend

    return load_ort_backend(graphs_dir, check_inputs=False, precision=precision, intra_op_threads=threads)


def fixed_rect_for_grid(grid: int, units: int) -> tuple[int, int, int, int]:
    """The ``units`` x ``units`` rectangle at the centre of a ``grid`` x ``grid`` unit grid."""
    if not 1 <= units < grid:
        raise UsageError(f"--region-units: a rectangle of 1..{grid - 1} units a side "
                         f"(the grid is {grid} x {grid}), got {units}")
    r0 = (grid - units) // 2
    return r0, r0 + units, r0, r0 + units


def fixed_rect_for(encoder, units: int):
    """A stand-in for ``encoder.rect_for`` (:class:`RegionEncoder`) giving every frame the same
    ``units`` x ``units`` rectangle at the grid's centre, whatever the masks' box."""
    rect = fixed_rect_for_grid(encoder.grid, units)

    def rect_for(box, margin, previous=None, edge_px=0.0):
        return rect

    return rect_for


def fastsam2_tracker(backend, keep: float, opts: BenchOptions):
    """A MultiStreamTracker over ``backend`` at ``keep`` (one stream is the streaming tracker)."""
    from fastsam2.runtime.streams import MultiStreamTracker

    if opts.region_units is not None and backend.region_encoder is not None:
        backend.region_encoder.rect_for = fixed_rect_for(backend.region_encoder, opts.region_units)

    gpu_path = opts.cuda_graphs
    return MultiStreamTracker.from_backend(
        backend,
        keep=keep,  # the backend's router stage (the built-in weights), graphs too
        # the official predictor skips hole filling without sam2's CUDA extension (as built here)
        fill_hole_area=0,
        profile_stages=False,
        k_multiple=opts.k_multiple,
        device_results=gpu_path,
        device_preprocess=gpu_path,
        encoder_region=opts.encoder_region,
        encoder_refresh=opts.encoder_refresh,
        encoder_lag=opts.encoder_lag,
    )


def run_fastsam2(mst, frames: SampleFrames, n: int, opts: BenchOptions, keep: float,
                 *, profile_last: int = 0, in_flight: int = 0) -> dict[str, Any]:
    """One streaming run over n frames of each of ``opts.streams`` streams (stream i: the sample
    clip from frame STREAM_OFFSET*i; ``opts.objects`` objects prompted on its frame 0), every step
    one batch of all streams (:class:`MultiStreamTracker`). ms per frame is the step's time: each
    stream's latency; ``in_flight`` steps may still compute when the next is issued (then fps is
    steps per wall-clock second). Per-stage times as in run_official."""
    import torch

    from fastsam2.runtime.tracker import Prompt

    cuda = opts.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    prompts = {
        obj_id: Prompt(points=[point], labels=[1], box=list(box))
        for obj_id, point, box in object_prompts(opts.objects)
    }
    streams = list(range(opts.streams))
    first_profiled = n - profile_last if cuda else 1
    frames.preload(n + STREAM_OFFSET * (opts.streams - 1))
    for sid in list(mst.streams):
        mst.remove_stream(sid)
    tracker = mst.tracker
    times = tracker.set_profiling(False)
    meter = MemoryMeter(opts.device)
    ms: list[float] = []

    def batch(t: int) -> dict[int, np.ndarray]:
        return {sid: frames.image(t + STREAM_OFFSET * sid) for sid in streams}

    with meter:
        t0 = time.perf_counter()
        mst.step(batch(0), {sid: prompts for sid in streams})
        sync()
        prompt_ms = (time.perf_counter() - t0) * 1e3
        issued: deque = deque()  # (frame, issue time, marker after its step)
        wall0 = None

        def finish() -> None:
            t, t0, marker = issued.popleft()
            marker.synchronize()
            if t > opts.skip:
                ms.append((time.perf_counter() - t0) * 1e3)

        for t in range(1, n):
            if t == first_profiled:  # (profiling synchronizes every stage: warm-up runs only)
                times = tracker.set_profiling(True)
            t0 = time.perf_counter()
            if t == opts.skip + 1:
                wall0 = t0
            res = mst.step(batch(t))
            issued.append((t, t0, tracker.ops.marker()))
            while len(issued) > in_flight:
                finish()
        while issued:
            finish()
        wall_s = time.perf_counter() - wall0 if wall0 is not None else float("nan")
        kept = res[0].kept_tokens.get(1, 0)
        bank = sum(mst.memory_bytes(sid) for sid in streams)
        shares = [mst.streams[sid].encoder_share for sid in streams]
        del res
    stage_ms = {k: v / (n - first_profiled) for k, v in times.ms.items()} if n > first_profiled else {}
    tracker.set_profiling(False)
    for sid in streams:
        mst.remove_stream(sid)
    stats = _stats(ms)
    if in_flight and ms:  # steps overlap: throughput is steps over wall time, not 1 / latency
        stats["fps"] = len(ms) / wall_s
    mem = meter.fields()
    return {
        "impl": "fastsam2",
        "variant": f"fastsam2 {opts.backend}" + (" compiled" if opts.compile else "")
        + (" sdpa-attention" if opts.gpu_attention == "sdpa" and opts.device == "cuda" else "")
        + (" cuda-graphs" if opts.cuda_graphs else "")
        + (" frozen-weights" if opts.freeze_weights else "")
        + (" fp8-trunk" if opts.precision == "fp8" else "")
        + (f" regions {opts.encoder_region}" if opts.encoder_region is not None and opts.region_units is None else "")
        + (f" region {opts.region_units}x{opts.region_units}" if opts.region_units is not None else "")
        + (f" lag {opts.encoder_lag}" if opts.encoder_lag else "")
        + (f" in-flight {in_flight}" if in_flight else ""),
        "keep": keep,
        "kept_tokens": int(kept),
        "objects": opts.objects,
        "streams": opts.streams,
        "in_flight": in_flight,
        "frames": n,
        "prompt_ms": prompt_ms,
        **stats,
        # every stream gets one frame per step: frames/s over all streams
        "aggregate_fps": stats["fps"] * opts.streams,
        "stage_ms": stage_ms,
        **mem,
        "peak_mem_per_stream_mb": mem["peak_mem_mb"] / opts.streams,
        "memory_bank_mb": bank / 2**20,
        # with encoder regions: the mean share of a frame the trunk computed (the prompted frame whole)
        "encoder_share": sum(shares) / len(shares) if None not in shares else None,
    }


# ------------------------------------------------------------------------------------------------
def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("torch", "sam2", "onnxruntime", "numpy"):
        try:
            mod = __import__(name)
            out[name] = getattr(mod, "__version__", "?")
        except ImportError:
            out[name] = None
    return out


def _loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def run_bench(opts: BenchOptions, log=print) -> dict[str, Any]:
    """Run every configuration; returns the report (see the module docstring for the metrics)."""
    import torch

    from fastsam2.export.models import build_sam2
    from fastsam2.runtime.threads import plan_threads

    os.environ.setdefault("TQDM_DISABLE", "1")  # the official predictor's progress bars
    threads = plan_threads(opts.threads)
    torch.set_num_threads(threads.threads)  # both sides: the official predictor runs torch too
    frames = SampleFrames(opts.frames_dir)
    cuda = opts.device == "cuda"
    t_start = time.perf_counter()
    meta: dict[str, Any] = {
        "command": opts.command,
        "config": opts.config,
        "backend": opts.backend,
        "device": opts.device,
        "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "threads": threads.to_json(),
        "dtype": opts.dtype if opts.backend == "torch" else "float32 (onnx)",
        "official_dtype": "float32 (eager, as SAM2VideoPredictor runs by default)",
        "cuda_graphs": opts.cuda_graphs,
        "k_multiple": opts.k_multiple,
        "encoder_region": opts.encoder_region,
        "encoder_refresh": opts.encoder_refresh,
        "encoder_lag": opts.encoder_lag,
        "freeze_weights": opts.freeze_weights,
        "region_units": opts.region_units,
        "precision": opts.precision,
        "weights": (
            f"RANDOM (seed {opts.seed}, object-score bias +5.0): timings are real, masks meaningless"
            if opts.checkpoint is None else str(opts.checkpoint)
        ),
        "prompt": "; ".join(
            f"object {i} on frame 0: box {list(b)} + positive click {list(p)}"
            for i, p, b in object_prompts(opts.objects)
        ),
        "frames_dir": str(opts.frames_dir),
        "unique_frames": len(frames),
        "warmup_frames": opts.warmup_frames,
        "skip": opts.skip,
        "profile_frames": opts.profile_frames,
        "stage_ms_from": (
            "the last profile_frames frames of the warm-up run (synchronized around every stage)"
            if cuda else "the timed run (every tracked frame)"
        ),
        "timing": "per tracked frame, synchronized; frame 0 and the first `skip` tracked frames excluded",
        "memory": (
            "torch.cuda.max_memory_allocated over the configuration (reset + empty_cache before), "
            "weights included" if cuda else
            "RSS high-water mark (sampled every 2 ms) minus RSS before the configuration, same process"
        ),
        "versions": _versions(),
        "loadavg_start": _loadavg(),
    }
    log(f"bench: {opts.config} {opts.backend} on {meta['device_name']} keep={opts.keep} frames={opts.frames}")
    bias = 5.0 if opts.checkpoint is None else None
    model = build_sam2(opts.config, opts.checkpoint, device=opts.device, image_size=opts.image_size,
                       seed=opts.seed, object_score_bias=bias, quiet=True)
    meta["image_size"] = int(model.image_size)
    meta["config"] = model.fastsam2_config_name
    if opts.region_units is not None:  # refuse a rectangle the grid can't hold before any run
        from fastsam2.export.models import model_config
        from fastsam2.runtime.encoder_region import region_grid

        fixed_rect_for_grid(region_grid(model_config(model)), opts.region_units)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fastsam2-bench-") as tmp_name:
        tmp = Path(tmp_name)
        graphs_dir = opts.graphs
        if opts.backend == "ort" and graphs_dir is None:
            from fastsam2.export.onnx_export import export_graphs
            from fastsam2.export.router import TokenRouter

            graphs_dir = str(tmp / "graphs")
            log("bench: exporting the same model to ONNX (router included) ...")
            cpu_model = model if opts.device == "cpu" else build_sam2(
                opts.config, opts.checkpoint, image_size=opts.image_size, seed=opts.seed,
                object_score_bias=bias, quiet=True)
            export_graphs(cpu_model, graphs_dir, router_stage=TokenRouter.for_model(cpu_model).eval(),
                          validate=False)
        meta["graphs"] = graphs_dir
        precisions = ["fp32"]
        if opts.ort_int8:
            precisions.append("int8")
            if not (Path(graphs_dir) / "int8" / "report.json").is_file():
                from fastsam2.calibration.ort_quant import build_int8, record_feeds
                from fastsam2.export.torch_backend import build_torch_backend

                log("bench: building INT8 graphs (calibration feeds from the torch tracker) ...")
                calib = tmp / "calib_feeds"
                record_feeds(build_torch_backend(model), opts.frames_dir, calib)
                int8_report = build_int8(graphs_dir, calib, opts.frames_dir, log=log)
                meta["int8_report"] = int8_report.to_json()
        # official predictor
        if opts.official:
            modes = [(dtype, False) for dtype in opts.official_dtypes]
            modes += [(dtype, True) for dtype in opts.official_dtypes[:1] if opts.official_offload]
            for dtype, offload in modes:
                rows.extend(_official_rows(model, frames, opts, tmp, log, dtype=dtype, offload=offload))
            if opts.official_vos:
                rows.extend(_official_vos_rows(opts, frames, tmp, log))
        # fastsam2
        backend = None
        for precision, keep in [(p, k) for p in precisions for k in opts.keep]:
            # a fresh backend per keep ratio: CUDA graphs captured for another ratio are released
            if backend is not None:
                backend.close()
                del tracker, backend
                gc.collect()
            backend = fastsam2_backend(model, opts, graphs_dir, precision, threads.threads)
            if opts.compile:
                log("bench: stages through torch.compile (compiled during the warm-up run)")
            tracker = fastsam2_tracker(backend, keep, opts)
            stage_ms = None
            if opts.warmup_frames:
                log(f"bench: fastsam2 keep {keep} warm-up ({opts.warmup_frames} frames)")
                stage_ms = run_fastsam2(tracker, frames, opts.warmup_frames, opts, keep,
                                        profile_last=opts.profile_frames)["stage_ms"]
            for n, depth in [(n, d) for n in opts.frames for d in opts.in_flight]:
                row = run_fastsam2(tracker, frames, n, opts, keep, in_flight=depth)
                if precision != "fp32":
                    row["variant"] += f" {precision} ({backend.precisions})"
                row["precision"] = precision if opts.backend == "ort" else opts.precision
                if stage_ms is not None:
                    row["stage_ms"] = stage_ms
                rows.append(row)
                log(_row_line(row))
            graphs_count = {
                name: len(getattr(r, "graphs", {})) for name, r in backend.runners.items()
                if getattr(r, "cuda_graphs", False)
            }
            if graphs_count:
                meta.setdefault("cuda_graphs_captured", {})[str(keep)] = graphs_count
    meta["loadavg_end"] = _loadavg()
    meta["wall_s"] = time.perf_counter() - t_start
    report = {"meta": meta, "runs": rows}
    report["comparisons"] = compare(rows)
    return report


def _official_rows(model, frames, opts: BenchOptions, tmp: Path, log, *, dtype: str, offload: bool,
                   vos: bool = False) -> list[dict[str, Any]]:
    """The official predictor in one mode: a warm-up run (GPU: its last frames give the per-stage
    times), then one row per video length."""
    stage_ms = None
    if opts.warmup_frames:
        log(f"bench: {official_variant(dtype, offload, vos)} warm-up ({opts.warmup_frames} frames)")
        stage_ms = run_official(model, frames, opts.warmup_frames, opts, tmp, offload=offload, dtype=dtype,
                                vos=vos, profile_last=opts.profile_frames)["stage_ms"]
    rows = []
    for n in opts.frames:
        row = run_official(model, frames, n, opts, tmp, offload=offload, dtype=dtype, vos=vos)
        if stage_ms is not None:
            row["stage_ms"] = stage_ms
        rows.append(row)
        log(_row_line(row))
    return rows


def _official_vos_rows(opts: BenchOptions, frames, tmp: Path, log) -> list[dict[str, Any]]:
    """The official predictor built with ``vos_optimized=True`` (SAM2VideoPredictorVOS: its stages
    through torch.compile) in its bf16 mode. A failure (compile or run) is a row with the error."""
    import torch

    from fastsam2.export.models import build_sam2

    dtype = "bfloat16"
    t0 = time.perf_counter()
    try:
        model = build_sam2(opts.config, opts.checkpoint, device=opts.device, image_size=opts.image_size,
                           seed=opts.seed, object_score_bias=5.0 if opts.checkpoint is None else None,
                           quiet=True, hydra_overrides=[
                               "++model._target_=sam2.sam2_video_predictor.SAM2VideoPredictorVOS",
                               "++model.compile_image_encoder=True"])
        return _official_rows(model, frames, opts, tmp, log, dtype=dtype, offload=False, vos=True)
    except Exception as e:  # noqa: BLE001 - the official mode's failure is a finding, reported as a row
        msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
        log(f"bench: {official_variant(dtype, vos=True)} failed after {time.perf_counter() - t0:.0f} s: {msg}")
        return [{"impl": "official", "variant": official_variant(dtype, vos=True), "keep": 1.0,
                 "objects": opts.objects, "frames": n, "error": msg,
                 "failed_after_s": time.perf_counter() - t0} for n in opts.frames]
    finally:
        if opts.device == "cuda":
            torch.cuda.empty_cache()


def _row_line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"  {r['variant']:<34} frames {r['frames']:>5}: FAILED: {r['error']}"
    streams = f" x{r['streams']} streams" if r.get("streams", 1) > 1 else ""
    return (f"  {r['variant'] + streams:<34} keep {r['keep']:.2f} frames {r['frames']:>5}: "
            f"{r['median_ms']:8.2f} ms median ({r['fps']:7.2f} fps"
            + (f", {r['aggregate_fps']:.1f} fps in all" if streams else "")
            + f"), p90 {r['p90_ms']:8.2f} ms, peak {r['peak_mem_mb']:9.1f} MiB"
            + (f", {r['encoder_share']:.1%} of each frame encoded" if r.get("encoder_share") is not None else ""))


def compare(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """fastsam2 vs every official mode that ran, at each video length: fps ratio (with several
    streams: fastsam2's aggregate fps, the official predictor serving streams one after another
    at its own fps) and peak-memory ratio (per stream). ``fps_ratio`` / ``peak_mem_ratio`` are
    against the default mode ("official", eager fp32), ``vs`` has every mode."""
    official = [r for r in rows if r["impl"] == "official" and "error" not in r]
    out = []
    for r in rows:
        if r["impl"] != "fastsam2":
            continue
        fps = r.get("aggregate_fps", r["fps"])
        mem = r.get("peak_mem_per_stream_mb", r["peak_mem_mb"])
        vs = {}
        for ref in official:
            if ref["frames"] == r["frames"]:
                vs[ref["variant"]] = {
                    "fps_ratio": fps / ref["fps"] if ref["fps"] else None,
                    "peak_mem_ratio": mem / ref["peak_mem_mb"] if ref["peak_mem_mb"] > 0 else None,
                }
        if not vs:
            continue
        default = vs.get("official", {})
        out.append({
            "variant": r["variant"],
            "keep": r["keep"],
            "frames": r["frames"],
            "streams": r.get("streams", 1),
            "objects": r.get("objects", 1),
            "fps_ratio": default.get("fps_ratio"),
            "peak_mem_ratio": default.get("peak_mem_ratio"),
            "vs": vs,
        })
    return out


def format_table(report: dict[str, Any]) -> str:
    """The report as a markdown table: one row per run; speedups against every official mode."""
    m = report["meta"]
    cpu = m["device"] != "cuda"
    threads = m.get("threads") or {}
    modes = [v for v in dict.fromkeys(r["variant"] for r in report["runs"] if r["impl"] == "official")]
    ok_modes = [v for v in modes if any(r["variant"] == v and "error" not in r for r in report["runs"])]
    mem = "peak RSS+ MiB | peak RSS MiB" if cpu else "peak GPU MiB (per stream)"
    head = ["side", "streams x objects", "keep", "frames", "ms/frame median", "p90", "fps (all streams)"]
    lines = [
        f"{m['config']} @ {m['image_size']} on {m['device_name']} ({m['backend']}, {m['dtype']}"
        f"{', cuda graphs' if m['cuda_graphs'] else ''}; {threads.get('threads', '?')} threads "
        f"({threads.get('source', '?')})); weights: {m['weights']}",
        "| " + " | ".join([*head, mem, *(f"speedup / mem ratio vs {v}" for v in ok_modes)]) + " |",
        "|" + "---|" * (len(head) + (2 if cpu else 1) + len(ok_modes)),
    ]
    cmp = {(c["variant"], c["keep"], c["frames"], c.get("streams", 1), c.get("objects", 1)): c
           for c in report["comparisons"]}
    for r in report["runs"]:
        so = f"{r.get('streams', 1)} x {r.get('objects', 1)}"
        if "error" in r:
            lines.append(f"| {r['variant']} | {so} | - | {r['frames']} | FAILED: {r['error']} |")
            continue
        key = (r["variant"], r["keep"], r["frames"], r.get("streams", 1), r.get("objects", 1))
        c = cmp.get(key) if r["impl"] == "fastsam2" else None
        sp = [f"{c['vs'][v]['fps_ratio']:.2f}x / {c['vs'][v]['peak_mem_ratio']:.2f}" if c and v in c["vs"] else "-"
              for v in ok_modes]
        keep = f"{r['keep']:.2f}" + (f" (K={r['kept_tokens']})" if r.get("kept_tokens") else "")
        if cpu:
            memory = f"{r['peak_mem_mb']:.1f} | " + (f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-")
        else:
            memory = f"{r['peak_mem_mb']:.1f}" + (f" ({r['peak_mem_per_stream_mb']:.1f})"
                                                  if r.get("streams", 1) > 1 else "")
        lines.append(
            f"| {r['variant']} | {so} | {keep} | {r['frames']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | "
            f"{r.get('aggregate_fps', r['fps']):.2f} | " + " | ".join([memory, *sp]) + " |"
        )
    return "\n".join(lines)


def plot_report(report: dict[str, Any], path: str | Path) -> str:
    """fps vs keep ratio (at the video length closest to 200) and peak memory vs video length."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (pip install matplotlib)"
    runs, m = [r for r in report["runs"] if "error" not in r], report["meta"]
    lengths = sorted({r["frames"] for r in runs})
    n_ref = min(lengths, key=lambda n: abs(n - 200))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ours = sorted((r for r in runs if r["impl"] == "fastsam2" and r["frames"] == n_ref), key=lambda r: r["keep"])
    a1.plot([r["keep"] for r in ours], [r.get("aggregate_fps", r["fps"]) for r in ours], "o-", label="fastsam2")
    for r in runs:
        if r["impl"] == "official" and r["frames"] == n_ref:
            a1.axhline(r["fps"], ls="--", color="gray" if "offload" not in r["variant"] else "silver",
                       label=r["variant"])
    a1.set_xlabel("keep ratio")
    a1.set_ylabel("frames per second (1000 / median ms)")
    a1.set_title(f"speed, {n_ref}-frame video")
    a1.set_ylim(bottom=0)
    a1.legend()
    variants = sorted({(r["variant"], r["keep"]) for r in runs})
    for variant, keep in variants:
        rs = sorted((r for r in runs if r["variant"] == variant and r["keep"] == keep), key=lambda r: r["frames"])
        label = variant if variant.startswith("official") else f"{variant} keep {keep:g}"
        a2.plot([r["frames"] for r in rs], [r.get("peak_mem_per_stream_mb", r["peak_mem_mb"]) for r in rs], "o-",
                label=label)
    a2.set_xscale("log")
    a2.set_xlabel("video length (frames)")
    a2.set_ylabel("peak GPU memory per stream (MiB)" if m["device"] == "cuda" else "peak RSS increase (MiB)")
    a2.set_title("memory vs video length")
    a2.set_ylim(bottom=0)
    a2.legend(fontsize=7)
    weights = " (random weights)" if str(m.get("weights", "")).startswith("RANDOM") else ""
    fig.suptitle(f"SAM2 {m['config']} @ {m['image_size']}, {m['device_name']}{weights}", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote {path}"
