"""export/trt/precision.py (FP16 graphs) and calibration/qdq.py (QDQ INT8 graphs) on small
hand-made ONNX graphs, checked with onnx and ONNX Runtime (CPU). No TensorRT needed; the real
graphs of tiny@1024 go through TensorRT-RTX in test_trt_engines.py."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from fastsam2.calibration.reader import ListCalibrationReader as ListReader
from onnx import TensorProto, helper, numpy_helper

from fastsam2.export.trt.precision import F16, F32, fp32_nodes, to_fp16
from fastsam2.calibration.qdq import QuantizeError, accuracy_check, quantize_qdq, quant_targets

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(0)


def _init(name, shape, scale=0.1):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def toy_model() -> onnx.ModelProto:
    """x [1,8,16,16] -> Conv -> LayerNorm2d (written out, as SAM2's) -> flatten -> MatMul -> Softmax,
    plus a position-table Gather by an index input added to the tokens, and a final MatMul that
    produces "low_res_masks"."""
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w_conv", "b_conv"], ["c"], name="/conv/Conv", pads=[1, 1, 1, 1]),
        n("ReduceMean", ["c"], ["u"], name="/ln/ReduceMean", axes=[1]),
        n("Sub", ["c", "u"], ["d"], name="/ln/Sub"),
        n("Pow", ["d", "two"], ["d2"], name="/ln/Pow"),
        n("ReduceMean", ["d2"], ["var"], name="/ln/ReduceMean_1", axes=[1]),
        n("Add", ["var", "eps"], ["ve"], name="/ln/Add"),
        n("Sqrt", ["ve"], ["sd"], name="/ln/Sqrt"),
        n("Div", ["d", "sd"], ["normed"], name="/ln/Div"),
        n("Mul", ["normed", "gamma"], ["scaled"], name="/ln/Mul"),
        n("Reshape", ["scaled", "shape_tokens"], ["tok3"], name="/Reshape"),
        n("Transpose", ["tok3"], ["tok"], name="/Transpose", perm=[0, 2, 1]),  # [1, 256, 8]
        n("Gather", ["pos_table", "pos_idx"], ["pos"], name="/Gather_pos", axis=0),  # [256, 8]
        n("Add", ["tok", "pos"], ["tok_pos"], name="/Add_pos"),
        n("MatMul", ["tok_pos", "w_mm"], ["h"], name="/mlp/MatMul"),
        n("Softmax", ["h"], ["p"], name="/Softmax", axis=-1),
        n("MatMul", ["p", "w_out"], ["m"], name="/head/MatMul"),
        n("Reshape", ["m", "shape_out"], ["low_res_masks"], name="/Reshape_out"),
    ]
    inits = [
        _init("w_conv", (8, 8, 3, 3)), _init("b_conv", (8,)), _init("gamma", (1, 8, 1, 1), 1.0),
        _init("pos_table", (256, 8)), _init("w_mm", (8, 8)), _init("w_out", (8, 1)),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array(1e-6, np.float32), "eps"),
        numpy_helper.from_array(np.array([1, 8, 256], np.int64), "shape_tokens"),
        numpy_helper.from_array(np.array([1, 1, 16, 16], np.int64), "shape_out"),
    ]
    graph = helper.make_graph(
        nodes, "toy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16]),
         helper.make_tensor_value_info("pos_idx", TensorProto.INT64, [256])],
        [helper.make_tensor_value_info("low_res_masks", TensorProto.FLOAT, [1, 1, 16, 16])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feed(seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((1, 8, 16, 16)).astype(np.float32),
            "pos_idx": rng.permutation(256).astype(np.int64)}


def _run(path, feed):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feed)


@pytest.fixture
def toy(tmp_path):
    path = tmp_path / "toy.onnx"
    onnx.save(toy_model(), path)
    return path


def test_fp32_set_rules():
    rules = fp32_nodes(toy_model())
    assert rules["norm"] >= {"/ln/Sub", "/ln/Div", "/ln/Add"}
    assert rules["reduce"] >= {"/ln/ReduceMean", "/ln/ReduceMean_1", "/ln/Pow", "/ln/Sqrt"}
    assert rules["softmax"] == {"/Softmax"}
    assert rules["rope"] == {"/Gather_pos", "/Add_pos"}  # the table row and what combines it
    assert rules["mask_logits"] == {"/Reshape_out", "/head/MatMul"}
    everything = set().union(*rules.values())
    assert "/conv/Conv" not in everything and "/mlp/MatMul" not in everything


def test_to_fp16_types_casts_and_accuracy(toy, tmp_path):
    out = tmp_path / "toy.fp16.onnx"
    report = to_fp16(toy, out)
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in onnx.shape_inference.infer_shapes(model, strict_mode=True).graph.value_info}
    nodes = {n.name: n for n in model.graph.node}
    assert types[nodes["/conv/Conv"].output[0]] == F16 and types[nodes["/mlp/MatMul"].output[0]] == F16
    for kept in ("/ln/ReduceMean", "/ln/Sqrt", "/ln/Div", "/Softmax", "/Add_pos", "/head/MatMul"):
        assert types[nodes[kept].output[0]] == F32, kept
    inits = {i.name: i.data_type for i in model.graph.initializer}
    assert inits["w_conv"] == F16 and inits["w_out"] == F32 and inits["pos_table"] == F32
    # graph IO keeps the spec dtype
    assert model.graph.output[0].type.tensor_type.elem_type == F32
    assert model.graph.input[0].type.tensor_type.elem_type == F32
    assert report.casts_added > 0 and report.fp32_count == sum(report.to_json()["fp32_nodes"].values())
    # runs in ONNX Runtime and stays close to fp32
    feed = _feed()
    ref, got = _run(toy, feed)[0], _run(out, feed)[0]
    assert got.dtype == np.float32
    assert np.abs(ref - got).max() < 2e-2 * max(1.0, np.abs(ref).max())


def test_to_fp16_every_edge_is_one_type(toy, tmp_path):
    """What TensorRT's strongly typed parser refused in onnxconverter-common's output (a Sub of Half
    and Float) cannot happen: every node's float inputs have one type (strict type inference)."""
    out = tmp_path / "toy.fp16.onnx"
    to_fp16(toy, out)
    onnx.shape_inference.infer_shapes(onnx.load(str(out)), strict_mode=True, check_type=True)


def test_qdq_is_symmetric_per_channel_without_bias_quantization(toy, tmp_path):
    out = tmp_path / "toy.int8.onnx"
    reader = ListReader([_feed(s) for s in range(3)])
    report = quantize_qdq(toy, out, reader)
    assert report.quantized_nodes == 3 and report.calibration_feeds == 3  # conv + 2 matmuls
    model = onnx.load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    q_nodes = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert q_nodes
    for n in q_nodes:
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), f"{n.name}: zero point must be 0"
    w_dq = {n.input[0]: n for n in q_nodes if n.input[0] in inits and inits[n.input[0]].dtype == np.int8}
    assert set(w_dq) == {"w_conv__int8", "w_mm__int8", "w_out__int8"}
    axis = {k: next(a.i for a in n.attribute if a.name == "axis") for k, n in w_dq.items()}
    assert axis == {"w_conv__int8": 0, "w_mm__int8": 1, "w_out__int8": 1}
    assert inits["w_conv__scale"].shape == (8,)
    assert "b_conv" in {n.input[2] for n in model.graph.node if n.op_type == "Conv"}, "bias stays float"
    assert inits["b_conv"].dtype == np.float32
    assert np.abs(inits["w_conv__int8"]).max() <= 127
    # runs on ONNX Runtime CPU, and the accuracy check keeps or drops it
    report = accuracy_check(toy, out, reader, report, fallback="fp16")
    assert 0 < report.max_rel_error < 0.1 and report.kept == "int8"
    strict = accuracy_check(toy, out, reader, report, fallback="fp16", threshold=1e-9)
    assert strict.kept == "fp16"


def test_qdq_targets_skip_activation_matmuls_and_empty_reader_fails(toy, tmp_path):
    model = toy_model()
    names = {n.name for n, _, _ in quant_targets(model)}
    assert names == {"/conv/Conv", "/mlp/MatMul", "/head/MatMul"}
    with pytest.raises(QuantizeError, match="No data is collected"):
        quantize_qdq(toy, tmp_path / "x.onnx", ListReader([]))
    assert not (tmp_path / "x.onnx").exists()


def _qdq_fp16(toy, tmp_path):
    from fastsam2.export.trt.precision import to_qdq_fp16

    qdq = tmp_path / "toy.int8.onnx"
    reader = ListReader([_feed(s) for s in range(3)])
    quantize_qdq(toy, qdq, reader)
    out = tmp_path / "toy.int8_fp16.onnx"
    return qdq, out, to_qdq_fp16(qdq, out), reader


def test_int8_fp16_types_opset_and_kept_set(toy, tmp_path):
    """INT8 + FP16: quantized layers take INT8 through FP16-scaled Q/DQ pairs, the other layers compute
    FP16 except the FP32 set of to_fp16, every edge has one type, graph IO stays float32."""
    from fastsam2.export.trt.precision import QDQ_OPSET

    _, out, report, _ = _qdq_fp16(toy, tmp_path)
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == QDQ_OPSET
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, check_type=True)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    nodes = {n.name: n for n in model.graph.node}
    inits = {i.name: i.data_type for i in model.graph.initializer}
    # quantized conv / matmul: FP16 out, fed by an FP16 DequantizeLinear of INT8
    for name in ("/conv/Conv", "/mlp/MatMul"):
        assert types[nodes[name].output[0]] == F16, name
        for i in nodes[name].input[:2]:
            dq = next(n for n in model.graph.node if i in n.output)
            assert dq.op_type == "DequantizeLinear" and types[i] == F16 and inits[dq.input[1]] == F16
    # the FP32 set is the FP16 graph's, plus the Q/DQ pair of the kept mask-logit matmul
    for kept in ("/ln/ReduceMean", "/ln/Sqrt", "/ln/Div", "/Softmax", "/Add_pos", "/head/MatMul"):
        assert types[nodes[kept].output[0]] == F32, kept
    assert set(report.fp32["qdq"]) == {"p__q", "p__dq", "w_out__dq"}
    assert types[nodes["w_out__dq"].output[0]] == F32 and inits["w_out__scale"] == F32
    # unquantized non-kept layers compute FP16 (the LayerNorm2d scale)
    assert types[nodes["/ln/Mul"].output[0]] == F16
    assert model.graph.input[0].type.tensor_type.elem_type == F32
    assert model.graph.output[0].type.tensor_type.elem_type == F32


def test_int8_fp16_runs_on_ort_cpu_close_to_fp32(toy, tmp_path):
    qdq, out, _, reader = _qdq_fp16(toy, tmp_path)
    feed = _feed(7)
    ref, q32, q16 = (_run(p, feed)[0] for p in (toy, qdq, out))
    assert q16.dtype == np.float32 and np.isfinite(q16).all()
    scale = max(1.0, float(np.abs(ref).max()))
    # FP16 adds at most its own rounding (2^-11 relative, a few ops deep) to the INT8 error
    int8_err = float(np.abs(ref - q32).max())
    assert float(np.abs(q16 - q32).max()) <= 8 * 2.0**-11 * scale + 0.5 * int8_err
    report = accuracy_check(toy, out, reader, quantize_qdq(toy, tmp_path / "again.onnx", reader))
    assert report.kept == "int8" and report.max_rel_error < 0.1


def test_int8_fp16_refuses_a_graph_without_qdq(toy, tmp_path):
    from fastsam2.export.trt.precision import to_qdq_fp16

    with pytest.raises(ValueError, match="not a QDQ graph"):
        to_qdq_fp16(toy, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_zero_scale_never_reaches_fp16(tmp_path):
    """A weight channel of zeros gets an FP32 scale below FP16's smallest subnormal: it is raised
    to that subnormal, never rounded to a zero scale (which TensorRT refuses and which divides by 0)."""
    from fastsam2.export.trt.precision import FP16_TINY, to_qdq_fp16

    model = toy_model()
    w = next(i for i in model.graph.initializer if i.name == "w_mm")
    arr = numpy_helper.to_array(w).copy()
    arr[:, 0] = 0.0
    w.CopyFrom(numpy_helper.from_array(arr, "w_mm"))
    src = tmp_path / "zero.onnx"
    onnx.save(model, src)
    quantize_qdq(src, tmp_path / "zero.q.onnx", ListReader([_feed(0)]))
    to_qdq_fp16(tmp_path / "zero.q.onnx", tmp_path / "zero.q16.onnx")
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "zero.q16.onnx")).graph.initializer}
    scale = inits["w_mm__scale"]
    assert scale.dtype == np.float16 and (scale > 0).all() and scale.min() >= np.float16(FP16_TINY)
    assert np.isfinite(_run(tmp_path / "zero.q16.onnx", _feed(1))[0]).all()


def test_fp8_qdq_is_e4m3_per_channel_and_runs_on_ort_cpu(toy, tmp_path):
    """FP8: the same Q/DQ pairs with FLOAT8E4M3FN values (opset 19), weights rounded to E4M3 within
    its range, ONNX Runtime's CPU provider runs it within the FP8 threshold, and a graph whose FP8
    scales are wrong is refused by the accuracy check."""
    import ml_dtypes

    from fastsam2.calibration.qdq import FP8_MAX, FP8_MAX_REL_ERROR

    out = tmp_path / "toy.fp8.onnx"
    reader = ListReader([_feed(s) for s in range(3)])
    report = quantize_qdq(toy, out, reader, fmt="fp8")
    assert report.quantized_nodes == 3 and report.fmt == "fp8"
    model = onnx.load(str(out))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 19
    inits = {i.name: i for i in model.graph.initializer}
    fp8 = onnx.TensorProto.FLOAT8E4M3FN
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert inits[n.input[2]].data_type == fp8, n.name
    w = np.frombuffer(inits["w_mm__fp8"].raw_data, np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    assert inits["w_mm__fp8"].data_type == fp8 and np.abs(w).max() == FP8_MAX  # each channel's max at full scale
    report = accuracy_check(toy, out, reader, report, fallback="fp16")
    assert 0 < report.max_rel_error <= FP8_MAX_REL_ERROR and report.kept == "fp8"
    # teeth: weight scales 8x too small saturate the weights at 448 and the check drops the graph
    for init in model.graph.initializer:
        if init.name.endswith("__scale") and init.name.startswith("w_"):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) / 8, init.name))
    onnx.save(model, str(out))
    assert accuracy_check(toy, out, reader, report, fallback="fp16").kept == "fp16"
