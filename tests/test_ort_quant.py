"""ORT static INT8 on CPU: feeds recorded from the torch tracker, QDQ quantization, report-driven choice."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from fastsam2.calibration.ort_quant import QuantOptions, build_int8, record_feeds
from fastsam2.export.torch_backend import build_torch_backend
from fastsam2.runtime.backends.ort import load_ort_backend
from fastsam2.runtime.manifest import ManifestError


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def export_copy(tmp_path_factory, onnx_tiny512) -> Path:
    src = onnx_tiny512
    dst = tmp_path_factory.mktemp("int8") / "export"
    dst.mkdir()
    for f in src.iterdir():
        if f.suffix == ".onnx":
            os.symlink(f, dst / f.name)
        elif f.is_file():
            shutil.copy(f, dst / f.name)
    return dst


def test_int8_memory_encoder_report_and_loading(export_copy, tiny512, bedroom, tmp_path):
    with pytest.raises(ManifestError, match="no int8/report.json"):
        load_ort_backend(export_copy, precision="int8")
    calib = record_feeds(build_torch_backend(tiny512), bedroom, tmp_path / "calib", n_frames=4, graphs=["memory_encoder"])
    assert len(list((calib / "memory_encoder").glob("*.npz"))) >= 4
    # min_speedup=0 / min_iou=0: accept whatever was measured, so the loading path is deterministic
    opts = QuantOptions(graphs=("memory_encoder",), eval_frames=4, timing_runs=3, min_iou=0.0, min_speedup=0.0,
                        intra_op_threads=1)
    report = build_int8(export_copy, calib, bedroom, options=opts)
    print("\n" + report.format())
    g = report.graphs["memory_encoder"]
    assert g.accepted and g.fp32_ms > 0 and g.int8_ms > 0
    assert 0.9 <= g.min_iou <= 1.0  # int8 memory encoder barely moves the masks
    data = json.loads((export_copy / "int8" / "report.json").read_text())
    assert data["graphs"]["memory_encoder"]["accepted"] is True
    backend = load_ort_backend(export_copy, precision="int8")
    assert backend.precisions == {
        "image_encoder": "fp32", "router": "fp32", "memory_attention": "fp32", "mask_decoder": "fp32",
        "memory_encoder": "int8",
    }
    ops = {n.op_type for n in __import__("onnx").load(str(export_copy / "int8" / "memory_encoder.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # a graph the report rejects stays fp32
    data["graphs"]["memory_encoder"]["accepted"] = False
    (export_copy / "int8" / "report.json").write_text(json.dumps(data))
    assert load_ort_backend(export_copy, precision="int8").precisions["memory_encoder"] == "fp32"


def test_ort_int8_path_takes_the_tensorrt_qdq_graphs(export_copy, tiny512, bedroom, tmp_path):
    """quantizer="tensorrt": the ORT INT8 path loads the symmetric QDQ graphs TensorRT is built from."""
    calib = record_feeds(build_torch_backend(tiny512), bedroom, tmp_path / "calib", n_frames=3, graphs=["memory_encoder"])
    opts = QuantOptions(graphs=("memory_encoder",), eval_frames=3, timing_runs=2, min_iou=0.0, min_speedup=0.0,
                        intra_op_threads=1, quantizer="tensorrt")
    report = build_int8(export_copy, calib, bedroom, options=opts)
    g = report.graphs["memory_encoder"]
    assert g.accepted and 0.9 <= g.min_iou <= 1.0
    model = __import__("onnx").load(str(export_copy / "int8" / "memory_encoder.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    zero_points = [n.input[2] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert zero_points and all(inits[z].data_type == 3 for z in zero_points), "int8 (symmetric), not uint8"
    assert load_ort_backend(export_copy, precision="int8").precisions["memory_encoder"] == "int8"
    with pytest.raises(ValueError, match="quantizer must be one of"):
        QuantOptions(quantizer="modelopt")


@pytest.mark.slow
def test_int8_all_graphs_decided_by_report(export_copy, tiny512, bedroom, tmp_path):
    calib = record_feeds(build_torch_backend(tiny512), bedroom, tmp_path / "calib", n_frames=8, max_feeds=8)
    report = build_int8(export_copy, calib, bedroom, options=QuantOptions(eval_frames=6, intra_op_threads=1))
    print("\n" + report.format())
    backend = load_ort_backend(export_copy, precision="int8")
    for name, g in report.graphs.items():
        assert g.accepted == (g.min_iou >= 0.95 and g.int8_ms < g.fp32_ms)
        assert backend.precisions[name] == ("int8" if g.accepted else "fp32")


def test_fp8_image_encoder_emulated_on_ort_cpu(export_copy, tiny512, bedroom, tmp_path):
    """write_precision_dir(..., "fp8"): the image encoder as FP8 E4M3 Q/DQ + FP16 (what an fp8
    TensorRT engine is built from), the other graphs FP16; ONNX Runtime's CPU provider runs it, so
    the tracker's masks with an FP8 encoder are measured here."""
    import numpy as np

    from fastsam2.export.trt.precision import write_precision_dir
    from PIL import Image

    from fastsam2.runtime.tracker import Prompt, SAM2Tracker

    calib = record_feeds(build_torch_backend(tiny512), bedroom, tmp_path / "calib", n_frames=2,
                         graphs=["image_encoder"])
    report = write_precision_dir(export_copy, "fp8", calib_dir=calib, log=lambda *_: None)
    enc = report["graphs"]["image_encoder"]
    assert enc["precision"] == "fp8" and enc["accepted"] == (enc["fp8"]["max_rel_error"] <= enc["fp8"]["threshold"])
    assert enc["accepted"], enc["fp8"]
    backend = load_ort_backend(export_copy, precision="fp8")
    assert backend.precisions == {"image_encoder": "fp8", "router": "fp16", "memory_attention": "fp16",
                                  "mask_decoder": "fp16", "memory_encoder": "fp16"}
    frames = sorted(bedroom.glob("*.jpg"))[:3]
    images = [np.asarray(Image.open(f).convert("RGB")) for f in frames]
    masks = {}
    for name, b in (("fp32", load_ort_backend(export_copy)), ("fp8", backend)):
        tracker = SAM2Tracker.from_backend(b, fill_hole_area=0)
        masks[name] = [tracker.track(im, {1: Prompt(points=[[480.0, 300.0]], labels=[1])} if t == 0 else None).masks[1]
                       for t, im in enumerate(images)]
    for a, b in zip(masks["fp32"], masks["fp8"]):
        assert a.any() and b.any()
        assert (a & b).sum() / (a | b).sum() >= 0.9, "an FP8 encoder moves the masks of random weights little"
