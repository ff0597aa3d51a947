import json

import numpy as np
import pytest

from fastsam2.runtime.manifest import ManifestError

from fastsam2.runtime.backends.trt_profiles import profiles_for
from fastsam2.runtime.backends.trt import TensorRTRunner, engine_io_problems, load_trt_backend
from fastsam2.tools.check_engines import POINT_LABELS, CheckRow, compare_runners, dummy_feed, format_check_table
from fastsam2.runtime.config import ModelConfig
from fastsam2.runtime.specs import GRAPH_NAMES, GraphSpec, TensorSpec, graph_specs

CONFIG = ModelConfig()
SPECS = graph_specs(CONFIG.spec_dims())
HW = CONFIG.num_tokens


@pytest.mark.parametrize("name", GRAPH_NAMES)
def test_dummy_feed_fits_spec_at_opt_shapes(name):
    spec = SPECS[name]
    (profile,) = profiles_for(spec, CONFIG)
    feed = dummy_feed(spec, profile.shapes("opt"))
    assert spec.check_feed({k: (v.shape, v.dtype.name) for k, v in feed.items()}) == []
    for k, v in feed.items():
        assert v.shape == profile[k].opt


def test_dummy_feed_indices_are_valid():
    spec = SPECS["memory_attention"]
    (profile,) = profiles_for(spec, CONFIG)
    feed = dummy_feed(spec, profile.shapes("opt"), seed=3)
    kept = feed["kept_idx"]
    assert kept.min() >= 0 and kept.max() < HW
    for row in kept:  # each object's positions: distinct, ascending
        assert len(np.unique(row)) == len(row) and np.all(np.diff(row) > 0)
    assert feed["memory_pos_idx"].max() < HW and feed["memory_pos_idx"].min() >= 0
    assert feed["memory_tpos_idx"].max() < CONFIG.num_maskmem and feed["memory_tpos_idx"].min() >= 0
    dec = SPECS["mask_decoder"]
    (p,) = profiles_for(dec, CONFIG, max_points=8)
    shapes = dict(p.shapes("max"))
    feed = dummy_feed(dec, shapes)
    assert set(np.unique(feed["point_labels"])) <= set(POINT_LABELS)
    assert feed["point_labels"].dtype == np.int32
    assert 0 <= feed["point_coords"].min() and feed["point_coords"].max() <= CONFIG.image_size
    assert set(np.unique(feed["has_mask_input"])) <= {0.0, 1.0}


def test_dummy_feed_refuses_unknown_int_input():
    spec = GraphSpec("g", (TensorSpec("frame_idx", "int64", (1,)),), ())
    with pytest.raises(ValueError, match="input 'frame_idx': no allowed values declared for integer input"):
        dummy_feed(spec, {"frame_idx": (1,)})


def test_engine_io_problems():
    spec = SPECS["router"]
    io = {t.name: ("input", t.dtype) for t in spec.inputs}
    io["token_scores"] = ("output", "float32")
    assert engine_io_problems(io, spec) == []
    io["token_scores"] = ("output", "float16")
    io["extra"] = ("output", "float32")
    del io["projected_text"]
    text = "; ".join(engine_io_problems(io, spec))
    assert "engine inputs missing ['projected_text']" in text
    assert "engine outputs ['extra'] are not in the spec" in text
    assert "output token_scores: dtype float16 in the engine, spec says float32" in text


def test_format_check_table():
    rows = [
        CheckRow("router", "token_scores", True, 1.2e-6, 3e-7, 1e-5),
        CheckRow("mask_decoder", "low_res_masks", False, 0.5, 0.01, 2e-3),
        CheckRow("memory_encoder", "*", False, note="missing ['x.engine']"),
    ]
    table = format_check_table(rows)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["graph", "output", "result"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert "router" in lines[2] and "PASS" in lines[2] and "1.2e-06" in lines[2]
    assert "FAIL" in lines[3] and "0.5" in lines[3]
    assert "missing ['x.engine']" in lines[4]
    assert lines[-1] == "1/3 outputs pass, 2 FAIL"


def test_compare_runners_plumbing_with_onnxruntime(tmp_path):
    # Checks the comparison/tolerance plumbing with two ONNX Runtime sessions (no TensorRT involved).
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import TensorProto, helper
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    def save(path, scale):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
        s = helper.make_tensor("s", TensorProto.FLOAT, [], [scale])
        g = helper.make_graph([helper.make_node("Mul", ["x", "s"], ["y"])], "g", [x], [y], initializer=[s])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
        return OnnxrtRunner(SessionFromOnnx(str(path), providers=["CPUExecutionProvider"]), name=path.stem)

    feed = {"x": np.ones((2, 4), np.float32)}
    a, b = save(tmp_path / "a.onnx", 1.0), save(tmp_path / "b.onnx", 1.001)
    (row,) = compare_runners("toy", [a, b], feed, {"y": 1e-2})
    assert row.passed and row.max_abs == pytest.approx(1e-3, rel=1e-3)
    a, b = save(tmp_path / "c.onnx", 1.0), save(tmp_path / "d.onnx", 1.001)
    (row,) = compare_runners("toy", [a, b], feed, {"y": 1e-4})
    assert not row.passed and row.atol == 1e-4


def test_load_trt_backend_missing_manifest(tmp_path):
    pytest.importorskip("torch")
    with pytest.raises(ManifestError, match="no manifest.json in"):
        load_trt_backend(tmp_path)


def test_compare_runners_handles_polygraphys_bare_booleans(tmp_path):
    """On a shape mismatch polygraphy's compare function gives a bare False instead of a result with
    max_absdiff; the row must say FAIL with a note, not crash."""
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import TensorProto, helper
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    def save(path, cols):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, cols])
        starts = helper.make_tensor("st", TensorProto.INT64, [1], [0])
        ends = helper.make_tensor("en", TensorProto.INT64, [1], [cols])
        axes = helper.make_tensor("ax", TensorProto.INT64, [1], [1])
        g = helper.make_graph([helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"])], "g", [x], [y],
                              initializer=[starts, ends, axes])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
        return OnnxrtRunner(SessionFromOnnx(str(path), providers=["CPUExecutionProvider"]), name=path.stem)

    feed = {"x": np.ones((2, 4), np.float32)}
    (row,) = compare_runners("toy", [save(tmp_path / "a.onnx", 4), save(tmp_path / "b.onnx", 3)], feed, {"y": 1e-3})
    assert not row.passed and row.max_abs is None and "shapes differ" in row.note


def test_tensorrt_runner_needs_an_engine(tmp_path):
    from fastsam2.runtime.backends.trt_api import tensorrt_available

    torch = pytest.importorskip("torch")
    if not tensorrt_available() or not torch.cuda.is_available():
        pytest.skip("needs TensorRT and a CUDA device (the runner's logic is tested in test_trt_standin.py)")
    runner = TensorRTRunner(SPECS["router"], tmp_path / "router.engine")
    with pytest.raises(Exception, match="no engine at"):
        runner.activate()
