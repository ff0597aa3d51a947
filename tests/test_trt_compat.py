import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fastsam2.export.trt.compat import TRT10_SUPPORTED_OPS, check_onnx_for_trt
from fastsam2.runtime.backends.trt_profiles import Profile
from fastsam2.runtime.specs import GraphSpec, TensorSpec

# A tiny stand-in spec: x [batch, kept_tokens] float32 -> y [batch, kept_tokens] float32.
SPEC = GraphSpec(
    name="toy",
    inputs=(TensorSpec("x", "float32", ("batch", "kept_tokens")),),
    outputs=(TensorSpec("y", "float32", ("batch", "kept_tokens")),),
)
PROFILES = [Profile().add("x", (1, 4), (1, 8), (2, 4096))]


def _vi(name, elem=TensorProto.FLOAT, shape=("batch", "kept_tokens")):
    return helper.make_tensor_value_info(name, elem, list(shape))


def _model(nodes, inputs=None, outputs=None, initializers=(), opset=17, extra_opsets=()):
    graph = helper.make_graph(
        nodes,
        "g",
        inputs if inputs is not None else [_vi("x")],
        outputs if outputs is not None else [_vi("y")],
        initializer=list(initializers),
    )
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    return helper.make_model(graph, opset_imports=opsets)


def _relu_model(**kw):
    return _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], **kw)


def test_ok_graph_passes_and_lists_ops(tmp_path):
    model = _relu_model()
    onnx.checker.check_model(model)
    path = tmp_path / "toy.onnx"
    onnx.save(model, path)
    report = check_onnx_for_trt(path, SPEC, PROFILES)
    assert report.ok, report.format()
    assert report.ops_used == {"Relu"}
    assert "TensorRT-compatible" in report.format()


def test_supported_list_is_data():
    assert {"MatMul", "Softmax", "LayerNormalization", "TopK"} <= TRT10_SUPPORTED_OPS
    assert "Unique" not in TRT10_SUPPORTED_OPS and "DFT" not in TRT10_SUPPORTED_OPS


def test_custom_domain_and_ml_ops_fail():
    nodes = [
        helper.make_node("MyOp", ["x"], ["t"], name="custom", domain="com.example"),
        helper.make_node("Normalizer", ["t"], ["y"], name="ml", domain="ai.onnx.ml"),
    ]
    model = _model(
        nodes,
        extra_opsets=[helper.make_opsetid("com.example", 1), helper.make_opsetid("ai.onnx.ml", 3)],
    )
    report = check_onnx_for_trt(model, SPEC, PROFILES)
    text = report.format()
    assert not report.ok
    assert "com.example::MyOp node 'custom'" in text
    assert "ai.onnx.ml::Normalizer node 'ml'" in text
    assert len(report.problems) == 2  # collected, not stopped at the first


def test_unsupported_default_domain_op_fails():
    model = _model([helper.make_node("Unique", ["x"], ["y"], name="u")])
    report = check_onnx_for_trt(model, SPEC, PROFILES)
    assert any("Unique node 'u': not supported" in p for p in report.problems)


def _topk_model(k_value=None, k_from_shape=False, k_from_input=False):
    nodes, inits, inputs = [], [], [_vi("x")]
    if k_from_shape:
        nodes += [
            helper.make_node("Shape", ["x"], ["s"], name="shape"),
            helper.make_node("Gather", ["s", "one"], ["k"], name="g", axis=0),
        ]
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
    elif k_from_input:
        inputs.append(helper.make_tensor_value_info("k", TensorProto.INT64, [1]))
    else:
        nodes.append(
            helper.make_node(
                "Constant", [], ["k"], value=numpy_helper.from_array(np.array([k_value], np.int64))
            )
        )
    nodes.append(helper.make_node("TopK", ["x", "k"], ["y", "idx"], name="topk", axis=1))
    outputs = [_vi("y")]
    return _model(nodes, inputs=inputs, outputs=outputs, initializers=inits)


def test_topk_k_bound():
    ok = check_onnx_for_trt(_topk_model(100), SPEC, PROFILES)
    assert ok.ok, ok.format()
    bad = check_onnx_for_trt(_topk_model(4096), SPEC, PROFILES)
    assert any("K = 4096 but TensorRT's TopK needs K < 3840" in p for p in bad.problems)
    at_limit = check_onnx_for_trt(_topk_model(3840), SPEC, PROFILES)
    assert not at_limit.ok


def test_topk_dynamic_k_fails():
    shape = check_onnx_for_trt(_topk_model(k_from_shape=True), SPEC, PROFILES)
    assert any("derived from a tensor shape" in p for p in shape.problems)
    data = _topk_model(k_from_input=True)
    report = check_onnx_for_trt(data, SPEC, PROFILES)
    assert any("data-dependent" in p for p in report.problems)
    assert any("['k'] are not in the spec" in p for p in report.problems)


@pytest.mark.parametrize(
    "elem,needle",
    [
        (TensorProto.COMPLEX64, "complex64"),
        (TensorProto.DOUBLE, "float64"),
        (TensorProto.UINT64, "uint64"),
    ],
)
def test_bad_input_dtypes_fail(elem, needle):
    model = _model(
        [helper.make_node("Identity", ["x"], ["y"], name="id")],
        inputs=[_vi("x", elem)],
        outputs=[_vi("y", elem)],
    )
    report = check_onnx_for_trt(model, SPEC, PROFILES)
    assert any(needle in p for p in report.problems), report.format()
    assert any("spec says float32" in p for p in report.problems)


def test_missing_and_extra_io_names_fail():
    model = _model(
        [helper.make_node("Relu", ["x2"], ["y2"], name="r")],
        inputs=[_vi("x2")],
        outputs=[_vi("y2")],
    )
    text = check_onnx_for_trt(model, SPEC, PROFILES).format()
    assert "graph inputs missing ['x']" in text
    assert "graph inputs ['x2'] are not in the spec" in text
    assert "graph outputs missing ['y']" in text
    assert "graph outputs ['y2'] are not in the spec" in text


def test_opset_13_fails():
    report = check_onnx_for_trt(_relu_model(opset=13), SPEC, PROFILES)
    assert any(p.startswith("opset 13:") for p in report.problems)


def test_uncovered_dynamic_axis_fails():
    report = check_onnx_for_trt(_relu_model(), SPEC, [Profile()])
    assert any("uncovered dynamic inputs ['x']" in p for p in report.problems)
    report = check_onnx_for_trt(_relu_model(), SPEC, [])
    assert any("no optimization profile" in p for p in report.problems)


def test_unnamed_unknown_and_frozen_axes_fail():
    unnamed = _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        inputs=[_vi("x", shape=("batch", None))],
        outputs=[_vi("y", shape=("batch", "weird_dim"))],
    )
    text = check_onnx_for_trt(unnamed, SPEC, PROFILES).format()
    assert "x: axis 1 is dynamic but unnamed" in text
    assert "y: axis 1 is named 'weird_dim', not a declared symbol" in text
    frozen = _model([helper.make_node("Relu", ["x"], ["y"])], inputs=[_vi("x", shape=("batch", 7))])
    assert any("froze it" in p for p in check_onnx_for_trt(frozen, SPEC, PROFILES).problems)


def test_tile_repeats_from_shape_and_onehot_depth_fail():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Div", ["s", "two"], ["reps"], name="div"),
        helper.make_node("Tile", ["x", "reps"], ["t"], name="tile"),
        helper.make_node("ReduceMax", ["s"], ["depth"], name="rmax", keepdims=0),
        helper.make_node("OneHot", ["idx", "depth", "vals"], ["oh"], name="onehot"),
        helper.make_node("Relu", ["x"], ["y"], name="relu"),
    ]
    inits = [
        numpy_helper.from_array(np.array([1, 2], np.int64), "two"),
        numpy_helper.from_array(np.array([0, 1], np.int64), "idx"),
        numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "vals"),
    ]
    report = check_onnx_for_trt(_model(nodes, initializers=inits), SPEC, PROFILES)
    text = report.format()
    assert "Tile node 'tile': repeats is computed from a tensor shape" in text
    assert "OneHot node 'onehot': depth must be a build-time constant" in text
    assert "OneHot node 'onehot': depth is computed from a tensor shape" in text


def test_tile_with_constant_repeats_passes():
    nodes = [helper.make_node("Tile", ["x", "reps"], ["y"], name="tile")]
    inits = [numpy_helper.from_array(np.array([1, 1], np.int64), "reps")]
    assert check_onnx_for_trt(_model(nodes, initializers=inits), SPEC, PROFILES).ok


def test_if_node_flagged():
    then_g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"])], "then", [], [_vi("a")]
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["b"])], "else", [], [_vi("b")]
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["sum"], keepdims=0),
        helper.make_node("Greater", ["sum", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_g, else_branch=else_g),
    ]
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    report = check_onnx_for_trt(_model(nodes, initializers=inits), SPEC, PROFILES)
    assert any("If node 'branch'" in p and "control flow" in p for p in report.problems)
    assert {"Relu", "Neg", "If"} <= report.ops_used  # bodies are walked
