from types import SimpleNamespace

import pytest

from fastsam2.export.trt.builder import (
    DEFAULT_FP32_LAYERS,
    BuildError,
    BuildSource,
    add_profiles,
    builder_flag_names,
    build_engine,
    check_network_io,
    compile_patterns,
    match_fp32_pattern,
    pin_fp32_layers,
)
from fastsam2.export.trt.profiles import Profile, profiles_for
from fastsam2.runtime.config import ModelConfig
from fastsam2.runtime.specs import graph_specs

CONFIG = ModelConfig()
SPECS = graph_specs(CONFIG.spec_dims())

# A stand-in for the few tensorrt module attributes pin_fp32_layers reads.
FAKE_TRT = SimpleNamespace(float32="f32", float16="f16", int32="i32", int64="i64")


class FakeTensor:
    def __init__(self, name, dtype="f16"):
        self.name, self.dtype = name, dtype


class FakeLayer:
    def __init__(self, name, type_name, outputs):
        self.name = name
        self.type = SimpleNamespace(name=type_name)
        self._outputs = outputs
        self.precision = None
        self.output_types = {}

    @property
    def num_outputs(self):
        return len(self._outputs)

    def get_output(self, i):
        return self._outputs[i]

    def set_output_type(self, i, dtype):
        self.output_types[i] = dtype


class FakeNetwork:
    def __init__(self, layers=(), inputs=(), outputs=()):
        self.layers = list(layers)
        self.inputs = [FakeTensor(n) for n in inputs]
        self.outputs = [FakeTensor(n) for n in outputs]

    num_layers = property(lambda self: len(self.layers))
    num_inputs = property(lambda self: len(self.inputs))
    num_outputs = property(lambda self: len(self.outputs))

    def get_layer(self, i):
        return self.layers[i]

    def get_input(self, i):
        return self.inputs[i]

    def get_output(self, i):
        return self.outputs[i]


def test_flags_per_precision():
    assert builder_flag_names("fp32", has_fp32_layers=True, has_calibrator=False) == []
    assert builder_flag_names("fp16", has_fp32_layers=False, has_calibrator=False) == ["FP16"]
    assert builder_flag_names("fp16", has_fp32_layers=True, has_calibrator=False) == [
        "FP16",
        "OBEY_PRECISION_CONSTRAINTS",
    ]
    assert builder_flag_names("int8", has_fp32_layers=False, has_calibrator=True) == ["INT8", "FP16"]


def test_contradictory_precision_options_are_refused():
    with pytest.raises(ValueError, match="int8 needs a calibrator"):
        builder_flag_names("int8", has_fp32_layers=False, has_calibrator=False)
    with pytest.raises(ValueError, match="calibrator was given but precision is fp16"):
        builder_flag_names("fp16", has_fp32_layers=False, has_calibrator=True)
    with pytest.raises(ValueError, match="precision must be one of"):
        builder_flag_names("tf32", has_fp32_layers=False, has_calibrator=False)


@pytest.mark.parametrize(
    "name,type_name,outputs,expected",
    [
        ("/memory_attention/layers.0/norm1/LayerNormalization", "NORMALIZATION", [], "type:NORMALIZATION"),
        ("/mask_decoder/transformer/layers.0/self_attn/Softmax", "SOFTMAX", [], "type:SOFTMAX"),
        ("/mask_decoder/output_upscaling/output_upscaling.1/norm/ReduceMean", "REDUCE", [], "norm"),
        ("/memory_attention/layers.0/self_attn/Sin", "UNARY", [], "Sin|Cos"),
        ("/memory_attention/layers.0/cross_attn_image/rope/Mul_3", "ELEMENTWISE", [], "rope"),
        ("[ONNX Layer: x]", "ELEMENTWISE", ["/model/freqs/Mul_output_0"], "rope"),
        ("/memory_attention/layers.0/linear1/MatMul", "MATRIX_MULTIPLY", [], None),
        ("/image_encoder/trunk/blocks.0/attn/Mul", "ELEMENTWISE", [], None),
    ],
)
def test_default_fp32_patterns(name, type_name, outputs, expected):
    got = match_fp32_pattern(name, type_name, outputs, compile_patterns(DEFAULT_FP32_LAYERS))
    if expected is None:
        assert got is None
    else:
        assert got is not None and expected in got


def test_pin_fp32_layers_sets_precision_and_float_outputs_only():
    softmax = FakeLayer("attn/Softmax", "SOFTMAX", [FakeTensor("p")])
    sin = FakeLayer("rope/Sin", "UNARY", [FakeTensor("s", "f32")])
    shape_like = FakeLayer("norm/Sqrt", "UNARY", [FakeTensor("i", "i64")])
    matmul = FakeLayer("mlp/MatMul", "MATRIX_MULTIPLY", [FakeTensor("m")])
    net = FakeNetwork([softmax, sin, shape_like, matmul])
    pinned = pin_fp32_layers(net, DEFAULT_FP32_LAYERS, FAKE_TRT)
    assert set(pinned) == {"attn/Softmax", "rope/Sin"}
    assert softmax.precision == "f32" and softmax.output_types == {0: "f32"}
    assert shape_like.precision is None and shape_like.output_types == {}
    assert matmul.precision is None
    # The set is an option: a custom pattern, or none at all.
    assert set(pin_fp32_layers(net, {r"MatMul$"}, FAKE_TRT)) == {"mlp/MatMul"}
    assert pin_fp32_layers(net, set(), FAKE_TRT) == {}


def test_bad_pattern_is_an_error():
    with pytest.raises(ValueError, match="not a valid regular expression"):
        compile_patterns({"norm[("})


class FakeProfile:
    def __init__(self, reject=None):
        self.shapes, self.reject = {}, reject

    def set_shape(self, name, lo, opt, hi):
        if name == self.reject:
            raise RuntimeError("Shape provided for min is inconsistent with other shapes.")
        self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))


class FakeBuilder:
    def __init__(self, reject=None):
        self.reject = reject
        self.created = []

    def create_optimization_profile(self):
        self.created.append(FakeProfile(self.reject))
        return self.created[-1]


class FakeConfig:
    def __init__(self, index=0):
        self.index, self.profiles = index, []

    def add_optimization_profile(self, p):
        self.profiles.append(p)
        return self.index


def test_add_profiles_translates_every_input():
    spec = SPECS["memory_attention"]
    profiles = profiles_for(spec, CONFIG)
    net = FakeNetwork(inputs=spec.input_names)
    builder, config = FakeBuilder(), FakeConfig()
    add_profiles(builder, net, config, profiles, spec.name)
    (p,) = config.profiles
    assert p.shapes["memory"] == ((1, 410, 64), (1, 4096 + 6 * 2048, 64), (1, 40960, 64))
    assert set(p.shapes) == set(spec.input_names)


def test_add_profiles_errors_have_context():
    spec = SPECS["memory_encoder"]
    profiles = profiles_for(spec, CONFIG)
    with pytest.raises(BuildError, match=r"missing \['extra'\]"):
        add_profiles(FakeBuilder(), FakeNetwork(inputs=[*spec.input_names, "extra"]), FakeConfig(), profiles, "g")
    with pytest.raises(BuildError, match="input kept_idx: TensorRT rejected min"):
        add_profiles(FakeBuilder("kept_idx"), FakeNetwork(inputs=spec.input_names), FakeConfig(), profiles, "g")
    with pytest.raises(BuildError, match="rejected optimization profile 0"):
        add_profiles(FakeBuilder(), FakeNetwork(inputs=spec.input_names), FakeConfig(-1), profiles, "g")


def test_check_network_io():
    spec = SPECS["router"]
    check_network_io(FakeNetwork(inputs=spec.input_names[::-1], outputs=spec.output_names), spec)
    with pytest.raises(BuildError, match="network outputs"):
        check_network_io(FakeNetwork(inputs=spec.input_names, outputs=["scores"]), spec)


def test_build_engine_with_tensorrt(tmp_path):
    pytest.importorskip(
        "tensorrt",
        reason="TensorRT not installed on this machine: build_engine's TensorRT calls are untested here",
    )
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT builds need a CUDA device")
    import onnx
    from onnx import TensorProto, helper

    spec = SPECS["router"]
    x = [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.shape)) for t in spec.inputs]
    y = [helper.make_tensor_value_info("token_scores", TensorProto.FLOAT, ["batch", 4096])]
    nodes = [
        helper.make_node("ReduceMean", ["vision_feats", "axes"], ["m"], keepdims=0),
        helper.make_node("Reshape", ["m", "shape"], ["token_scores"]),
    ]
    import numpy as np
    from onnx import numpy_helper

    inits = [
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
        numpy_helper.from_array(np.array([-1, 4096], np.int64), "shape"),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "router", x, y, initializer=inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    path = tmp_path / "router.onnx"
    onnx.save(model, path)
    meta = build_engine(
        path,
        spec,
        profiles_for(spec, CONFIG),
        engine_path=tmp_path / "router.engine",
        metadata=BuildSource(manifest_sha256="0" * 64, config_name="tiny"),
        precision="fp16",
        workspace_mib=256,
        timing_cache_path=tmp_path / "timing.cache",
        check_compat=False,  # unused inputs are fine for this smoke build
    )
    assert (tmp_path / "router.engine").stat().st_size > 0
    assert (tmp_path / "router.engine.json").is_file() and (tmp_path / "timing.cache").is_file()
    assert meta.precision == "fp16"
