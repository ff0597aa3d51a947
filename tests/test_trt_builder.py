"""export/trt/builder.py pieces with fakes of the TensorRT objects (no TensorRT needed): profiles,
network IO, the precision read-out of a strongly typed network. Real builds: test_trt_engines.py."""

from types import SimpleNamespace

import pytest

from fastsam2.export.trt.builder import (
    BuildError,
    add_profiles,
    check_network_io,
    layer_precisions,
    precision_summary,
)
from fastsam2.runtime.backends.trt_profiles import Profile, profiles_for
from fastsam2.runtime.config import ModelConfig
from fastsam2.runtime.specs import graph_specs

CONFIG = ModelConfig()
SPECS = graph_specs(CONFIG.spec_dims())

class FakeTensor:
    def __init__(self, name, dtype="HALF"):
        self.name, self.dtype = name, SimpleNamespace(name=dtype)


class FakeLayer:
    def __init__(self, name, type_name, outputs, inputs=()):
        self.name = name
        self.type = SimpleNamespace(name=type_name)
        self._outputs = outputs
        self._inputs = list(inputs)

    num_outputs = property(lambda self: len(self._outputs))
    num_inputs = property(lambda self: len(self._inputs))

    def get_output(self, i):
        return self._outputs[i]

    def get_input(self, i):
        return self._inputs[i]


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


def test_layer_precisions_reads_types_and_quantized_inputs():
    q_in = FakeTensor("x_q", "INT8")
    dq = FakeLayer("x_dq", "DEQUANTIZE", [FakeTensor("x_dq_out", "FLOAT")], [q_in])
    dq_fp = FakeLayer("y_dq", "DEQUANTIZE", [FakeTensor("y_dq_out", "FLOAT")], [FakeTensor("y", "FLOAT")])
    dq_fp8 = FakeLayer("z_dq", "DEQUANTIZE", [FakeTensor("z_dq_out", "HALF")], [FakeTensor("z_q", "FP8")])
    conv = FakeLayer("conv", "CONVOLUTION", [FakeTensor("c", "FLOAT")], [dq.get_output(0)])
    mm = FakeLayer("mm", "MATRIX_MULTIPLY", [FakeTensor("m", "HALF")], [dq_fp.get_output(0)])
    mm8 = FakeLayer("mm8", "MATRIX_MULTIPLY", [FakeTensor("m8", "HALF")], [dq_fp8.get_output(0)])
    norm = FakeLayer("norm", "NORMALIZATION", [FakeTensor("n", "FLOAT")], [mm.get_output(0)])
    shape = FakeLayer("shape", "SHAPE", [FakeTensor("s", "INT64")], [norm.get_output(0)])
    info = layer_precisions(FakeNetwork([dq, dq_fp, dq_fp8, conv, mm, mm8, norm, shape]), None)
    by_name = {l[0]: l for l in info["layers"]}
    assert by_name["conv"][3:] == (True, False), "fed by a DEQUANTIZE of an INT8 tensor"
    assert by_name["mm"][3:] == (False, False), "a DEQUANTIZE of a float tensor is not quantized"
    assert by_name["mm8"][3:] == (False, True), "fed by a DEQUANTIZE of an FP8 tensor"
    assert by_name["norm"][2] == ["FLOAT"] and by_name["shape"][2] == ["INT64"]
    assert info["counts"] == {"FLOAT": 4, "HALF": 3}
    summary = precision_summary(info)
    assert summary == {"float_layers": {"FLOAT": 4, "HALF": 3}, "compute_layers": 3,
                       "compute_layers_int8": 1, "compute_layers_fp8": 1, "compute_layers_fp16": 2}


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
