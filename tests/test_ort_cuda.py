"""The ONNX Runtime backend on its CUDA provider (``load_ort_backend(dir, device="cuda")``): IO binding
of torch CUDA tensors, state kept on the GPU between stages, and the fp32 / FP16 / INT8(+FP16)
graphs on the GPU.

GPU only: ``pytest -m gpu tests/test_ort_cuda.py`` with onnxruntime-gpu installed. Asked for with
``-m gpu``, a machine without a CUDA GPU or without the CUDA provider FAILS (a GPU run that silently
tested nothing would read as a pass); in any other run the module is skipped.

- every graph, one call on valid random inputs: the CUDA provider's torch outputs equal the CPU
  provider's numpy outputs within the spec's per-output tolerance;
- the tracker on real frames (bedroom, two objects, point and box, batched in one call per stage):
  fp32 graphs through the CUDA provider equal the torch backend on the same GPU, within a bound
  derived from float32 rounding over the longest reduction of the network;
- FP16 and INT8 + FP16 graphs (those TensorRT engines are built from), calibrated as
  ``fastsam2-export --int8`` calibrates (the router included), through the CUDA provider vs the fp32
  graphs: each graph in the precision the directory's report gives it, finite logits (FP16 overflow
  shows here first); with random weights on the bedroom frames at keep 1.0, mask IoU at least the INT8
  acceptance of ``calibration.ort_quant``; with the shipped trained model on generated clips of its
  domain, at keep 1.0 and with the router running, J&F within the targets of ``docs/accuracy.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tolerances import magnitude, reduction_atol

from test_ort_backend import MIN_IOU, streaming_run

pytestmark = pytest.mark.gpu

N_FRAMES = 12
# generated clips of the trained model's own domain (split "train") from a seed it was not trained on
SYNTH_SEED, SYNTH_CLIPS = 1234, 4
# what a precision may cost in J&F against ONNX Runtime fp32 (docs/accuracy.md)
JF_TARGET = {"fp16": 0.01, "int8": 0.02}
SYNTHETIC = Path(__file__).resolve().parents[1] / "runtime" / "data" / "models" / "synthetic.safetensors"


@pytest.fixture(scope="module")
def cuda(request):
    """The GPU and the CUDA provider, or a loud failure when ``-m gpu`` asked for them."""
    markexpr = request.config.option.markexpr or ""
    if "gpu" not in markexpr or "not gpu" in markexpr:
        pytest.skip("GPU test: run it with pytest -m gpu tests/test_ort_cuda.py")
    import onnxruntime as ort
    import torch

    from fastsam2.runtime.backends.ort import CUDA_PROVIDER

    if not torch.cuda.is_available():
        pytest.fail("-m gpu: torch sees no CUDA GPU on this machine", pytrace=False)
    if CUDA_PROVIDER not in ort.get_available_providers():
        pytest.fail(f"-m gpu: onnxruntime {ort.__version__} has no CUDA provider "
                    f"({ort.get_available_providers()}): install onnxruntime-gpu", pytrace=False)
    # fp32 means FP32 on both sides (the CUDA provider runs with use_tf32=0)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield torch.device("cuda", 0)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def export_model(model, out: Path) -> Path:
    from fastsam2.export.onnx_export import export_graphs
    from fastsam2.export.router import TokenRouter

    router = TokenRouter.for_model(model)
    router.fastsam2_weights = "default-weights"
    export_graphs(model, out, router_stage=router, validate=False)
    return out


def precision_dirs(export: Path, torch_backend, frames) -> Path:
    """``export`` with ``fp16/`` and ``int8/`` (INT8 + FP16), calibrated as ``fastsam2-export --int8``
    calibrates: feeds recorded on 4 tracked ``frames`` (a folder or a list of images) of the pruned loop,
    so the router has feeds too."""
    from fastsam2.calibration.ort_quant import CALIB_KEEP_RATIO, record_feeds
    from fastsam2.export.trt.precision import write_precision_dir

    calib = export / "calib_feeds"
    record_feeds(torch_backend, frames, calib, n_frames=4, keep_ratio=CALIB_KEEP_RATIO)
    write_precision_dir(export, "fp16", log=lambda *_: None)
    report = write_precision_dir(export, "int8", calib_dir=calib, log=lambda *_: None)
    assert report["graphs"], "no graph was quantized"
    return export


def expected_precisions(export: Path, precision: str) -> dict[str, str]:
    """What ``load_ort_backend(export, precision=...)`` must run, by the rule of
    ``write_precision_dir``: fp16 for every graph; int8 for every graph whose INT8 + FP16 graph passed
    its accuracy check (max relative error vs fp32 on the recorded feeds within the threshold), fp32
    for one that did not (the report says by how much). Every graph must have been calibrated (the
    router included: the feeds were recorded with the router running) and the four SAM2 graphs must
    pass, or the INT8 path would not be what is compared below."""
    from fastsam2.calibration.ort_quant import DEFAULT_GRAPHS
    from fastsam2.runtime.backends.ort import read_precision_report
    from fastsam2.runtime.manifest import ExportDir

    graphs = list(ExportDir.open(export).manifest.graphs)
    if precision == "fp16":
        return dict.fromkeys(graphs, "fp16")
    report = read_precision_report(export, "int8")["graphs"]
    assert sorted(report) == sorted(graphs), f"graphs without calibration feeds: {set(graphs) - set(report)}"
    out = {}
    for name, entry in report.items():
        q = entry["int8"]
        assert entry["accepted"] == (q["max_rel_error"] <= q["threshold"]), (name, q)
        out[name] = "int8" if entry["accepted"] else "fp32"
    assert all(out[g] == "int8" for g in DEFAULT_GRAPHS), {g: report[g]["int8"]["max_rel_error"] for g in report}
    return out


def run(backend, frames: Path, n: int = N_FRAMES, keep: float = 1.0) -> dict[int, np.ndarray]:
    """Logits [O,H,W] per frame: the bedroom clip, two objects (a click and a box) on frame 0."""
    from fastsam2.runtime.tracker import SAM2Tracker

    tracker = SAM2Tracker.from_backend(backend, keep=keep, fill_hole_area=0)
    return {t: np.asarray(m) for t, m in streaming_run(tracker, str(frames), n).items()}


def target_ids(clip) -> list[int]:
    """The annotated targets of a generated clip (ids 1..K), all visible on frame 0."""
    return [int(i) for i in np.unique(clip.masks[0]) if i]


def run_clips(backend, clips, keep: float = 1.0) -> dict[tuple[int, int], np.ndarray]:
    """Logits [O,H,W] per (clip, frame) of generated clips (objects in :func:`target_ids` order),
    every target prompted with its ground-truth mask on frame 0 (as ``bench/ort_gpu.py`` scores J&F)."""
    from fastsam2.runtime.tracker import Prompt, SAM2Tracker

    tracker = SAM2Tracker.from_backend(backend, keep=keep, fill_hole_area=0)
    out = {}
    for c, clip in enumerate(clips):
        tracker.reset()
        ids = target_ids(clip)
        prompts = {i: Prompt(mask=clip.masks[0] == i) for i in ids}
        for t, image in enumerate(clip.frames):
            res = tracker.track(image, prompts if t == 0 else None)
            assert list(res.obj_ids) == ids
            out[c, t] = np.asarray(res.logits)
    return out


def clips_jf(clips, masks: dict[tuple[int, int], np.ndarray]) -> float:
    """J&F (DAVIS: mean over objects, first and last frames not scored) of ``masks`` (bool [O,H,W]
    per (clip, frame), as :func:`run_clips` orders them) against the clips' ground truth."""
    from fastsam2.runtime.evaluation import EvalReport, evaluate_sequence

    objects = []
    for c, clip in enumerate(clips):
        ids = target_ids(clip)
        pred = {oid: np.stack([masks[c, t][i] for t in range(len(clip.frames))]) for i, oid in enumerate(ids)}
        objects += evaluate_sequence({oid: clip.masks == oid for oid in ids}, pred, sequence=clip.name)
    return EvalReport.from_objects(objects).jf_mean


def mask_ious(ref: dict, ours: dict) -> list[float]:
    """Mask IoU (masks: logits > 0) per frame and object whose reference mask is non-trivial; most of
    them must be (an all-empty run compares nothing)."""
    ious, pairs = [], 0
    for t in ref:
        for i in range(ref[t].shape[0]):
            a, b = ref[t][i] > 0, ours[t][i] > 0
            pairs += 1
            if not 0.001 < a.mean() < 0.999:
                continue
            ious.append(float((a & b).sum() / max(1, (a | b).sum())))
    assert len(ious) >= 0.5 * pairs, f"only {len(ious)} of {pairs} reference masks are non-trivial"
    return ious


def mask_iou(ref: dict, ours: dict) -> float:
    """The smallest of :func:`mask_ious`."""
    return min(mask_ious(ref, ours))


# -- one call per graph ----------------------------------------------------------------------------


def test_every_graph_on_the_cuda_provider_equals_the_cpu_provider(cuda, onnx_tiny512):
    import torch

    from fastsam2.runtime.backends.ort import load_ort_backend

    cpu = load_ort_backend(onnx_tiny512, intra_op_threads=2)
    gpu = load_ort_backend(onnx_tiny512, device="cuda")
    assert gpu.ops.name == "torch" and "CUDAExecutionProvider" in gpu.description
    rng = np.random.default_rng(0)
    hw = (gpu.config.image_size // 16) ** 2
    # two objects, half the tokens kept, two frames of memory: every dynamic axis away from 1
    sizes = {"batch": 2, "kept_tokens": hw // 2, "memory_tokens": 2 * hw, "object_pointers": 4, "num_points": 2}
    for name, runner in gpu.runners.items():
        spec = runner.spec
        feed = spec.sample(sizes, rng)
        ref = cpu.runners[name].infer(feed)
        out = runner.infer({k: torch.as_tensor(v).to(cuda) for k, v in feed.items()})
        for o in spec.outputs:
            got = out[o.name]
            assert isinstance(got, torch.Tensor) and got.device == cuda, f"{name}.{o.name} left the GPU"
            assert tuple(got.shape) == ref[o.name].shape and str(got.dtype) == f"torch.{o.dtype}"
            diff = float(np.abs(got.cpu().numpy() - ref[o.name]).max())
            assert diff <= spec.atol.get(o.name, 1e-3) * magnitude(ref[o.name]), (name, o.name, diff)
    # a runner's inputs may be numpy (uploaded); the outputs are still CUDA tensors
    out = gpu.runners["mask_decoder"].infer(gpu.runners["mask_decoder"].spec.sample(sizes, rng))
    assert all(v.device == cuda for v in out.values())


# -- the tracker: fp32 vs torch, FP16 / INT8 vs fp32 -----------------------------------------------


@pytest.fixture(scope="module")
def torch_cuda_reference(cuda, clip25) -> dict[int, np.ndarray]:
    from fastsam2.export.models import build_sam2
    from fastsam2.export.torch_backend import build_torch_backend

    model = build_sam2("tiny", image_size=512, object_score_bias=5.0, quiet=True, seed=0, device="cuda")
    return run(build_torch_backend(model), clip25)


@pytest.mark.parametrize("attention", ["fused", "plain"])
def test_fp32_graphs_on_cuda_equal_the_torch_backend(cuda, onnx_tiny512, torch_cuda_reference, clip25, attention):
    from fastsam2.runtime.backends.ort import load_ort_backend

    backend = load_ort_backend(onnx_tiny512, device="cuda", attention=attention)
    ours = run(backend, clip25)
    cfg = backend.config
    # the longest float32 reduction: memory attention over num_maskmem frames of feat x feat tokens
    terms = cfg.num_maskmem * (cfg.image_size // 16) ** 2
    assert sorted(ours) == sorted(torch_cuda_reference)
    for t, ref in torch_cuda_reference.items():
        assert np.isfinite(ours[t]).all()
        diff = float(np.abs(ours[t] - ref).max())
        assert diff <= reduction_atol(magnitude(ref), terms), (t, diff)
    assert mask_iou(torch_cuda_reference, ours) >= MIN_IOU


def _model(name: str, device: str):
    from fastsam2.export.models import build_sam2

    if name == "random":
        return build_sam2("tiny", image_size=512, object_score_bias=5.0, quiet=True, seed=0, device=device)
    if not SYNTHETIC.is_file():
        pytest.skip(f"the shipped trained model is not in this checkout ({SYNTHETIC})")
    return build_sam2(None, "synthetic", quiet=True, device=device)


def precision_masks(export: Path, track, device: str, keeps: tuple[float, ...]) -> dict[tuple[float, str], dict]:
    """Masks (logits > 0) of the fp32, fp16 and INT8 + FP16 graphs through ONNX Runtime on
    ``device``, tracking with ``track(backend, keep)`` at each of ``keeps`` (below 1 the router runs,
    in INT8 where its graph passed): {(keep, precision): {frame: bool [O,H,W]}}. Checks that each
    backend runs the precisions the directory's report promises and that every logit is finite (FP16
    overflow shows here first)."""
    from fastsam2.runtime.backends.ort import load_ort_backend

    backends = {p: load_ort_backend(export, device=device, attention="plain", precision=p)
                for p in ("fp32", "fp16", "int8")}
    try:
        for p in ("fp16", "int8"):
            assert backends[p].precisions == expected_precisions(export, p), backends[p].precisions
        out = {}
        for keep in keeps:
            for p, backend in backends.items():
                logits = track(backend, keep)
                assert all(np.isfinite(v).all() for v in logits.values()), f"{p} keep {keep}: non-finite logits"
                out[keep, p] = {k: v > 0 for k, v in logits.items()}
        return out
    finally:
        for b in backends.values():
            b.close()


def test_fp16_and_int8_graphs_on_cuda_agree_with_fp32(cuda, clip25, tmp_path):
    """Random weights (object-score bias) on the bedroom frames at keep 1.0, against the fp32 graphs'
    masks: every fp16 mask within the project's acceptance IoU (``QuantOptions.min_iou``); the INT8 +
    FP16 masks within it on average. Calibration accepts each graph in INT8 alone at that IoU for its
    worst mask; the four together compound (on an H100 the worst of 24 masks was 0.941), so their worst
    case is printed, not bounded, and the INT8 acceptance on the GPU is the trained model's J&F (next
    test). (With random weights the router's scores are near ties, so which tokens it keeps is no
    measure of a precision: the pruned loop is checked with the trained model.)"""
    from fastsam2.calibration.ort_quant import QuantOptions
    from fastsam2.export.torch_backend import build_torch_backend

    export = export_model(_model("random", "cpu"), tmp_path / "export")
    precision_dirs(export, build_torch_backend(_model("random", "cuda")), clip25)
    masks = precision_masks(export, lambda backend, keep: run(backend, clip25, keep=keep), "cuda", (1.0,))
    min_iou = QuantOptions().min_iou  # the project's acceptance of a reduced-precision graph
    ious = {(keep, p): mask_ious(masks[keep, "fp32"], m) for (keep, p), m in masks.items() if p != "fp32"}
    for (keep, p), v in ious.items():
        print(f"\nrandom weights, {p} keep {keep} on CUDA vs fp32: mask IoU min {min(v):.4f} mean "
              f"{np.mean(v):.4f} over {N_FRAMES} bedroom frames x 2 objects")
    assert min(ious[1.0, "fp16"]) >= min_iou, ious[1.0, "fp16"]
    assert np.mean(ious[1.0, "int8"]) >= min_iou, ious[1.0, "int8"]


def test_fp16_and_int8_graphs_on_cuda_keep_the_trained_models_jf(cuda, tmp_path):
    """The shipped trained model on generated clips of its own domain (on real frames its masks are
    uncertain, and any precision change flips them): the J&F of the fp16 and INT8 + FP16 graphs
    within the project's targets of the fp32 graphs' J&F, at keep 1.0 and with the router (INT8 in
    the INT8 directory) keeping half the tokens. Calibrated on another generated clip."""
    from fastsam2.calibration.ort_quant import CALIB_KEEP_RATIO
    from fastsam2.export.torch_backend import build_torch_backend
    from fastsam2.runtime import synth

    export = export_model(_model("synthetic", "cpu"), tmp_path / "export")
    torch_backend = build_torch_backend(_model("synthetic", "cuda"))
    size = torch_backend.config.image_size
    clips = [synth.make_clip(SYNTH_SEED, split="train", frames=N_FRAMES, size=size, index=i)
             for i in range(SYNTH_CLIPS + 1)]
    clips, calib = clips[:-1], list(clips[-1].frames)
    precision_dirs(export, torch_backend, calib)
    masks = precision_masks(export, lambda backend, keep: run_clips(backend, clips, keep=keep), "cuda",
                            (1.0, CALIB_KEEP_RATIO))
    jf = {key: clips_jf(clips, m) for key, m in masks.items()}
    for (keep, p), v in jf.items():
        print(f"\nsynthetic, {p} keep {keep} on CUDA: J&F {v:.4f} on {SYNTH_CLIPS} generated clips x {N_FRAMES} frames")
    for (keep, p), v in jf.items():
        if p != "fp32":
            assert v >= jf[keep, "fp32"] - JF_TARGET[p], (keep, p, v, jf[keep, "fp32"])
