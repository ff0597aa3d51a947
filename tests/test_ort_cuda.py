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
- FP16 and INT8 + FP16 graphs (those TensorRT engines are built from) through the CUDA provider vs
  the fp32 graphs: finite logits (FP16 overflow shows here first) and mask IoU at least the INT8
  acceptance threshold of ``calibration.ort_quant``, on random weights (object-score bias) and, when
  the shipped trained model exists, on ``--checkpoint synthetic``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tolerances import magnitude, reduction_atol

from test_ort_backend import MIN_IOU, streaming_run

pytestmark = pytest.mark.gpu

N_FRAMES = 12
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


def precision_dirs(export: Path, torch_backend, frames: Path) -> Path:
    """``export`` with ``fp16/`` and ``int8/`` (INT8 + FP16, calibrated on 4 tracked frames)."""
    from fastsam2.calibration.ort_quant import record_feeds
    from fastsam2.export.trt.precision import write_precision_dir

    calib = export / "calib_feeds"
    record_feeds(torch_backend, frames, calib, n_frames=4)
    write_precision_dir(export, "fp16", log=lambda *_: None)
    report = write_precision_dir(export, "int8", calib_dir=calib, log=lambda *_: None)
    assert report["graphs"], "no graph was quantized"
    return export


def run(backend, frames: Path, n: int = N_FRAMES) -> dict[int, np.ndarray]:
    from fastsam2.runtime.tracker import SAM2Tracker, TrackerOptions

    return {t: np.asarray(m) for t, m in streaming_run(SAM2Tracker(backend, TrackerOptions(fill_hole_area=0)),
                                                       str(frames), n).items()}


def mask_iou(ref: dict, ours: dict) -> float:
    """Smallest mask IoU (masks: logits > 0) over the frames and objects whose reference mask is
    non-trivial; most of them must be (an all-empty run compares nothing)."""
    worst, pairs, compared = 1.0, 0, 0
    for t in ref:
        for i in range(ref[t].shape[0]):
            a, b = ref[t][i] > 0, ours[t][i] > 0
            pairs += 1
            if not 0.001 < a.mean() < 0.999:
                continue
            compared += 1
            worst = min(worst, float((a & b).sum() / max(1, (a | b).sum())))
    assert compared >= 0.5 * pairs, f"only {compared} of {pairs} reference masks are non-trivial"
    return worst


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


@pytest.mark.parametrize("model_name", ["random", "synthetic"])
def test_fp16_and_int8_graphs_on_cuda_agree_with_fp32(cuda, clip25, tmp_path, model_name):
    from fastsam2.calibration.ort_quant import QuantOptions
    from fastsam2.export.torch_backend import build_torch_backend
    from fastsam2.runtime.backends.ort import load_ort_backend

    export = export_model(_model(model_name, "cpu"), tmp_path / "export")
    precision_dirs(export, build_torch_backend(_model(model_name, "cuda")), clip25)
    ref = run(load_ort_backend(export, device="cuda", attention="plain"), clip25)
    min_iou = QuantOptions().min_iou  # the project's acceptance of a reduced-precision graph
    for precision in ("fp16", "int8"):
        backend = load_ort_backend(export, device="cuda", attention="plain", precision=precision)
        assert set(backend.precisions.values()) == {precision}, backend.precisions
        ours = run(backend, clip25)
        assert all(np.isfinite(v).all() for v in ours.values()), f"{precision}: non-finite logits"
        iou = mask_iou(ref, ours)
        print(f"\n{model_name} {precision} on CUDA vs fp32: min mask IoU {iou:.4f} over {N_FRAMES} frames x 2 objects")
        assert iou >= min_iou, (precision, iou)
