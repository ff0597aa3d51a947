"""INT8 for ONNX Runtime on CPU: record real feeds, quantize statically, keep what the report accepts.

    feeds = record_feeds(build_torch_backend(model), "frames/", "calib/", n_frames=12)          # torch tracker + FeedRecorder
    report = build_int8(export_dir, "calib/", "frames/")                  # writes export_dir/int8/
    backend = load_ort_backend(export_dir, precision="int8")

Steps:

1. Calibration feeds: the torch reference tracker runs over real frames (one point prompt) with every
   runner wrapped in :class:`~fastsam2.calibration.reader.FeedRecorder`, so the feeds are exactly
   what the tracker gives each graph (memory of several frames, object pointers, prompts).
2. ``onnxruntime.quantization.quantize_static`` per graph: QDQ format, uint8 activations / int8
   weights (ORT's recommended pair on x86 CPUs), per-channel weights, MinMax ranges from the feeds;
   only MatMul/Conv/Gemm are quantized (where the int8 kernels are; LayerNorm/Softmax stay fp32).
3. Report per graph: ORT ms fp32 vs int8 (median of ``timing_runs`` on one recorded feed, on this
   machine) and, with that one graph in int8 and the others fp32, the ORT tracker's masks on the
   evaluation frames vs the all-fp32 ORT tracker (min mask IoU over frames and objects, max |Δ|
   logits). A graph is accepted when min IoU >= ``min_iou`` and int8 is faster than fp32 by
   ``min_speedup``; everything else stays fp32. ``int8/report.json`` is what
   ``load_ort_backend(dir, precision="int8")`` reads.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fastsam2.runtime.backends.ort import INT8_DIR, INT8_REPORT, load_ort_backend
from fastsam2.runtime.manifest import MANIFEST_NAME, ORT_VARIANT, Manifest, file_sha256
from fastsam2.runtime.specs import IMAGE_ENCODER, MASK_DECODER, MEMORY_ATTENTION, MEMORY_ENCODER

from .reader import DirectoryCalibrationReader, FeedRecorder

DEFAULT_GRAPHS = (IMAGE_ENCODER, MEMORY_ATTENTION, MASK_DECODER, MEMORY_ENCODER)
DEFAULT_POINT = (480.0, 300.0)
CALIB_KEEP_RATIO = 0.5
"""Keep ratio of the pruned loop that records INT8 calibration feeds (``fastsam2-export --int8``): below
1 the router runs, so it is calibrated with the SAM2 graphs (0.5: the desktop profile's opt keep)."""


@dataclass
class QuantOptions:
    """What to quantize and how to decide."""

    graphs: tuple[str, ...] = DEFAULT_GRAPHS
    per_channel: bool = True
    reduce_range: bool = False
    op_types: tuple[str, ...] = ("MatMul", "Conv", "Gemm")
    min_iou: float = 0.95  # min mask IoU vs fp32 in the full tracker
    min_speedup: float = 1.0  # int8 must be faster than this factor
    timing_runs: int = 5
    eval_frames: int = 8
    intra_op_threads: int | None = None
    # "ort": ONNX Runtime's quantize_static (uint8 activations with zero points: CPU only; TensorRT
    # refuses it). "tensorrt": fastsam2.calibration.qdq.quantize_qdq, the symmetric per-channel
    # QDQ graphs the TensorRT engines are built from, so one calibration serves both runtimes.
    quantizer: str = "ort"

    def __post_init__(self) -> None:
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")


QUANTIZERS = ("ort", "tensorrt")


@dataclass
class GraphQuantResult:
    file: str
    sha256: str
    fp32_ms: float
    int8_ms: float
    min_iou: float
    mean_iou: float
    max_abs_diff: float
    accepted: bool
    reason: str

    @property
    def speedup(self) -> float:
        return self.fp32_ms / self.int8_ms if self.int8_ms > 0 else 0.0


@dataclass
class Int8Report:
    manifest_sha256: str
    options: dict[str, Any]
    frames: str
    graphs: dict[str, GraphQuantResult] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "manifest_sha256": self.manifest_sha256,
            "options": self.options,
            "frames": self.frames,
            "graphs": {n: {**asdict(g), "speedup": g.speedup} for n, g in self.graphs.items()},
        }

    def format(self) -> str:
        lines = []
        for n, g in self.graphs.items():
            lines.append(
                f"{n:17s} fp32 {g.fp32_ms:8.1f} ms  int8 {g.int8_ms:8.1f} ms  x{g.speedup:4.2f}  "
                f"IoU min {g.min_iou:.4f} mean {g.mean_iou:.4f}  max|Δ| {g.max_abs_diff:8.3f}  "
                f"{'INT8' if g.accepted else 'fp32'} ({g.reason})"
            )
        return "\n".join(lines)


# -- 1. feeds -------------------------------------------------------------------------------------


def _frames(frames: Any, n: int) -> list[np.ndarray]:
    from fastsam2.runtime.frames import open_frames

    if not isinstance(frames, (str, Path)):
        return [np.asarray(f) for f in list(frames)[:n]]
    out = []
    with open_frames(str(frames)) as src:
        for frame in src:
            if len(out) == n:
                break
            out.append(frame.image)
    if not out:
        raise ValueError(f"no frames in {frames}")
    return out


def track_frames(tracker, frames: Sequence[np.ndarray], point=DEFAULT_POINT) -> list[np.ndarray]:
    """Streaming tracking of one object from a positive click on the first frame: logits [O,H,W]."""
    from fastsam2.runtime.tracker import Prompt

    tracker.reset()
    out = []
    for i, image in enumerate(frames):
        prompts = {1: Prompt(points=[list(point)], labels=[1])} if i == 0 else None
        out.append(tracker.track(image, prompts).logits)
    return out


def record_feeds(
    backend: Any,
    frames: Any,
    calib_dir: str | Path,
    *,
    n_frames: int = 12,
    max_feeds: int = 16,
    graphs: Sequence[str] = DEFAULT_GRAPHS,
    keep_ratio: float = 1.0,
    point: tuple[float, float] = DEFAULT_POINT,
) -> Path:
    """Run the reference tracker over ``backend`` (usually the torch backend:
    ``fastsam2.export.torch_backend.build_torch_backend(model)``) on ``n_frames`` real frames with
    FeedRecorder-wrapped runners; the feeds land in ``calib_dir/<graph>/*.npz`` (at most ``max_feeds``
    per graph). With ``keep_ratio < 1`` the pruned loop runs (default router) and the router's feeds are
    recorded too. ``point``: the positive click (x, y) that prompts the object on the first frame.
    The backend's runners are wrapped for the run and restored after it."""
    from fastsam2.runtime.specs import ROUTER
    from fastsam2.runtime.tracker import SAM2Tracker

    names = list(graphs) + ([ROUTER] if keep_ratio < 1.0 and ROUTER not in graphs else [])
    originals = dict(backend.runners)
    for name in names:
        backend.runners[name] = FeedRecorder(backend.runners[name], calib_dir, max_feeds=max_feeds)
    try:
        tracker = SAM2Tracker.from_backend(backend, keep=keep_ratio, fill_hole_area=0, profile_stages=False)
        track_frames(tracker, _frames(frames, n_frames), point)
    finally:
        backend.runners.update(originals)
    return Path(calib_dir)


# -- 2. quantize ----------------------------------------------------------------------------------


class _OrtReader:
    """Adapts our CalibrationDataReader to ONNX Runtime's base class."""

    def __new__(cls, reader):
        from onnxruntime.quantization import CalibrationDataReader

        class Reader(CalibrationDataReader):
            def get_next(self):
                return reader.get_next()

            def rewind(self):
                reader.rewind()

        return Reader()


def quantize_graph(src: Path, dst: Path, reader: Any, options: QuantOptions) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if options.quantizer == "tensorrt":
        from fastsam2.calibration.qdq import quantize_qdq

        quantize_qdq(src, dst, reader)
        return
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(src),
        str(dst),
        _OrtReader(reader),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(options.op_types),
        per_channel=options.per_channel,
        reduce_range=options.reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )


# -- 3. evaluate ----------------------------------------------------------------------------------


def _median_ms(runner, feed: dict[str, np.ndarray], runs: int) -> float:
    runner.infer(feed)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        runner.infer(feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def mask_stats(ref: list[np.ndarray], ours: list[np.ndarray]) -> tuple[float, float, float]:
    """(min IoU, mean IoU, max |Δ|) of two lists of logits [O, ...] per frame: masks are logits > 0,
    and an object empty in both counts as IoU 1."""
    ious, worst = [], 0.0
    for a, b in zip(ref, ours):
        worst = max(worst, float(np.abs(a - b).max()))
        for i in range(a.shape[0]):
            ma, mb = a[i] > 0, b[i] > 0
            union = (ma | mb).sum()
            ious.append(1.0 if union == 0 else float((ma & mb).sum() / union))
    return min(ious), float(np.mean(ious)), worst


def build_int8(
    export_dir: str | Path,
    calib_dir: str | Path,
    frames: Any,
    *,
    options: QuantOptions | None = None,
    log: Any = None,
    point: tuple[float, float] = DEFAULT_POINT,
) -> Int8Report:
    """Quantize ``options.graphs`` of ``export_dir`` with the feeds in ``calib_dir``, evaluate each
    in the full ORT tracker on ``frames`` (one object, clicked at ``point`` on the first frame), write
    ``export_dir/int8/*.onnx`` and ``report.json``."""
    from fastsam2.runtime.tracker import SAM2Tracker

    options = options or QuantOptions()
    say = log or (lambda msg: None)
    export_dir = Path(export_dir)
    manifest = Manifest.read(export_dir)
    out = export_dir / INT8_DIR
    tmp = export_dir / (INT8_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        eval_frames = _frames(frames, options.eval_frames)
        fp32 = load_ort_backend(export_dir, intra_op_threads=options.intra_op_threads)
        topts = dict(fill_hole_area=0, profile_stages=False)
        ref = track_frames(SAM2Tracker.from_backend(fp32, **topts), eval_frames, point)
        report = Int8Report(
            manifest_sha256=file_sha256(export_dir / MANIFEST_NAME),
            options=asdict(options),
            frames=str(frames) if isinstance(frames, (str, Path)) else f"{len(eval_frames)} arrays",
        )
        for name in options.graphs:
            entry = manifest.graphs[name]
            dst = tmp / entry.file
            say(f"quantizing {name}")
            # ORT's quantizer starts from ONNX Runtime's variant (fused attention stays fp32); the
            # TensorRT QDQ graphs from the plain graph TensorRT builds
            src = entry.file_for(ORT_VARIANT if options.quantizer == "ort" else None)[0]
            quantize_graph(export_dir / src, dst, DirectoryCalibrationReader(calib_dir, name), options)
            from fastsam2.runtime.backends.ort import OrtStageRunner

            q = OrtStageRunner(entry.spec, dst, intra_op_threads=options.intra_op_threads)
            q.activate()
            feed = DirectoryCalibrationReader(calib_dir, name).get_next()
            fp32_ms = _median_ms(fp32.runners[name], feed, options.timing_runs)
            int8_ms = _median_ms(q, feed, options.timing_runs)
            mixed = load_ort_backend(export_dir, intra_op_threads=options.intra_op_threads, graphs=[
                g for g in manifest.graphs if g != name
            ])
            mixed.runners[name] = q
            ours = track_frames(SAM2Tracker.from_backend(mixed, **topts), eval_frames, point)
            min_iou, mean_iou, worst = mask_stats(ref, ours)
            why = []
            if not min_iou >= options.min_iou:
                why.append(f"min IoU {min_iou:.4f} < {options.min_iou}")
            if not int8_ms * options.min_speedup < fp32_ms:
                why.append(f"not faster ({int8_ms:.1f} vs {fp32_ms:.1f} ms)")
            report.graphs[name] = GraphQuantResult(
                file=entry.file,
                sha256=file_sha256(dst),
                fp32_ms=fp32_ms,
                int8_ms=int8_ms,
                min_iou=min_iou,
                mean_iou=mean_iou,
                max_abs_diff=worst,
                accepted=not why,
                reason="; ".join(why) or "faster and within IoU",
            )
            say(report.format().splitlines()[-1])
        (tmp / INT8_REPORT).write_text(json.dumps(report.to_json(), indent=2) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report
