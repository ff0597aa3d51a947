"""Real TensorRT builds: every graph of tiny@1024 through ``fastsam2-export --trt`` in fp32, fp16 and
int8, with the TensorRT the environment has (in CI: TensorRT-RTX 1.7 from the `test` extra, which
parses and builds without a GPU). The engines cannot be deserialized here (no GPU), so precision is
checked on the strongly typed network TensorRT parsed from the very graph each engine was built from
(``build_options["onnx_file"]``): that network's layer types ARE the engine's, by strong typing.

In CI (CI=true) a missing TensorRT fails these tests; elsewhere they are skipped with the reason.
The module takes minutes on 2 CPU cores (three exports and builds).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fastsam2.runtime.backends.trt_api import tensorrt_available
from fastsam2.runtime.specs import GRAPH_NAMES

pytestmark = pytest.mark.trt

if not tensorrt_available():
    if os.environ.get("CI"):
        pytest.fail("CI installs TensorRT-RTX (the `test` extra): no TensorRT module is importable",
                    pytrace=False)
    pytest.skip("no TensorRT (pip install tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings)",
                allow_module_level=True)

from fastsam2.export.trt.builder import BuildError, layer_precisions, parse_network  # noqa: E402
from fastsam2.runtime.backends.trt_metadata import EngineMetadata, metadata_path  # noqa: E402
from fastsam2.export.trt.precision import fp32_nodes  # noqa: E402


def _export(out: Path, *extra: str) -> Path:
    import torch

    from fastsam2.tools.export_cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc = main(["--config", "tiny", "--out", str(out), "--trt", *extra])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0, f"fastsam2-export --trt {' '.join(extra)} failed (rc {rc})"
    return out


@pytest.fixture(scope="module")
def engines_fp32(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("trt") / "fp32")


@pytest.fixture(scope="module")
def engines_fp16(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("trt") / "fp16", "--fp16")


@pytest.fixture(scope="module")
def engines_int8(tmp_path_factory, bedroom):
    return _export(tmp_path_factory.mktemp("trt") / "int8", "--int8", "--calib", str(bedroom),
                   "--calib-frames", "2")


def _metas(engines: Path) -> dict[str, EngineMetadata]:
    metas = {}
    for name in GRAPH_NAMES:
        engine = engines / f"{name}.engine"
        assert engine.is_file() and engine.stat().st_size > 100_000, f"{name}: no engine"
        metas[name] = EngineMetadata.load(metadata_path(engine))
    return metas


def _network_layers(engines: Path, meta: EngineMetadata):
    flavor, _, network, parser = parse_network(engines / meta.build_options["onnx_file"], meta.graph)
    info = layer_precisions(network, flavor.trt)
    del parser
    return flavor, info["layers"]


def _check_common(engines: Path, metas: dict[str, EngineMetadata], precision: str) -> None:
    from fastsam2.runtime.backends.trt_api import tensorrt_flavor

    flavor = tensorrt_flavor()
    for name, meta in metas.items():
        assert meta.precision == precision, f"{name} was built {meta.precision}"
        assert meta.tensorrt_flavor == flavor.name and meta.tensorrt_version == flavor.version
        bo = meta.build_options
        assert bo["strongly_typed"] is True and bo["tf32"] is False
        assert bo["workspace_mib"] is None, "default workspace = TensorRT's"
        assert bo["activation_bytes"] and bo["largest_activation"]["mib"] > 0
    report = json.loads((engines / "precision.json").read_text())
    assert set(report) == set(GRAPH_NAMES)


def test_fp32_engines_are_fp32(engines_fp32):
    metas = _metas(engines_fp32)
    _check_common(engines_fp32, metas, "fp32")
    for name, meta in metas.items():
        assert set(meta.build_options["layer_precisions"]["float_layers"]) == {"FLOAT"}, name
    # The desktop memory-attention build needs more than a 1024 MiB workspace.
    ma = metas["memory_attention"].build_options
    assert ma["activation_bytes"] > 1024 << 20
    assert ma["largest_activation"]["shape"] == [1, 1, 4096, 40960 + 4 * 19]


def test_fp16_engines_keep_the_fp32_set(engines_fp16):
    import onnx

    metas = _metas(engines_fp16)
    _check_common(engines_fp16, metas, "fp16")
    for name, meta in metas.items():
        assert meta.build_options["onnx_file"] == f"{name}.fp16.onnx"
        _, layers = _network_layers(engines_fp16, meta)
        by_name = {l[0]: l for l in layers}
        # every node of the FP32 set is a layer computing FP32 (the parser names layers after nodes)
        rules = fp32_nodes(onnx.load(str(engines_fp16 / f"{name}.onnx"), load_external_data=False))
        kept = set().union(*rules.values())
        float_kept = [by_name[n] for n in kept if n in by_name and by_name[n][2]
                      and by_name[n][2][0] in ("FLOAT", "HALF")]
        assert float_kept, f"{name}: no FP32-set node found among the network layers"
        wrong = [l[0] for l in float_kept if l[2][0] != "FLOAT"]
        assert not wrong, f"{name}: FP32-set layers computing FP16: {wrong[:5]}"
        for l in layers:
            if l[1] in ("NORMALIZATION", "SOFTMAX", "REDUCE") and l[2][0] in ("FLOAT", "HALF"):
                assert l[2] == ["FLOAT"], f"{name}: {l}"
        compute = [l for l in layers if l[1] in ("CONVOLUTION", "MATRIX_MULTIPLY")]
        half = [l for l in compute if l[2] == ["HALF"]]
        assert len(half) >= 0.8 * len(compute), f"{name}: only {len(half)}/{len(compute)} conv/matmul in FP16"
    # the mask logits stay FP32 up to the last matmul
    mask_kept = fp32_nodes(onnx.load(str(engines_fp16 / "mask_decoder.onnx"), load_external_data=False))
    assert any("MatMul" in n for n in mask_kept["mask_logits"])


def test_int8_engines_run_conv_and_matmul_in_int8(engines_int8):
    metas = _metas(engines_int8)
    _check_common(engines_int8, metas, "int8")
    report = json.loads((engines_int8 / "precision.json").read_text())
    for name, meta in metas.items():
        assert meta.build_options["onnx_file"] == f"{name}.int8.onnx"
        q = report[name]["int8"]
        assert q["kept"] == "int8" and q["calibration_feeds"] >= 1 and q["max_rel_error"] <= q["threshold"]
        _, layers = _network_layers(engines_int8, meta)
        weighted = [l for l in layers if l[1] in ("CONVOLUTION", "MATRIX_MULTIPLY") and l[3]]
        assert len(weighted) == q["quantized_nodes"] > 0, f"{name}: INT8-fed conv/matmul {len(weighted)}"
        assert meta.build_options["layer_precisions"]["compute_layers_int8"] == q["quantized_nodes"]
        _check_int8_fp16(name, layers, set(report[name]["int8_fp16"]["fp32_set"]))


COMPUTE_LAYERS = ("CONVOLUTION", "MATRIX_MULTIPLY", "DECONVOLUTION", "ELEMENTWISE")


def _check_int8_fp16(name: str, layers: list, fp32_set: set[str]) -> None:
    """INT8 + FP16: INT8-fed conv/matmul layers present, HALF layers present, and no FLOAT
    conv/matmul/elementwise layer outside the declared FP32 set (layers are named after ONNX nodes)."""
    float_compute = [l[0] for l in layers if l[1] in COMPUTE_LAYERS and l[2] and l[2][0] == "FLOAT"]
    outside = sorted(n for n in float_compute if n not in fp32_set)
    assert not outside, f"{name}: {len(outside)} FLOAT compute layers outside the FP32 set: {outside[:5]}"
    assert any(l[3] for l in layers if l[1] in ("CONVOLUTION", "MATRIX_MULTIPLY")), f"{name}: no INT8 layer"
    half = [l for l in layers if l[2] and l[2][0] == "HALF"]
    assert half, f"{name}: no HALF layer"
    int8_half = [l for l in layers if l[3] and l[1] in ("CONVOLUTION", "MATRIX_MULTIPLY") and l[2] == ["HALF"]]
    assert int8_half, f"{name}: no INT8 conv/matmul with FP16 output"


def test_int8_fp16_network_of_a_small_graph(tmp_path):
    """The same checks on a hand-made graph (conv, LayerNorm2d, position table, softmax, mask-logit
    matmul): fast, so the INT8 + FP16 rewrite is checked against TensorRT's parser on every run."""
    import onnx

    from fastsam2.calibration.qdq import quantize_qdq
    from fastsam2.calibration.reader import ListCalibrationReader
    from fastsam2.export.trt.precision import to_qdq_fp16
    from test_trt_precision import _feed, toy_model

    src, qdq, out = tmp_path / "toy.onnx", tmp_path / "toy.qdq.onnx", tmp_path / "toy.int8.onnx"
    onnx.save(toy_model(), src)
    quantize_qdq(src, qdq, ListCalibrationReader([_feed(s) for s in range(2)]))
    report = to_qdq_fp16(qdq, out)
    fp32_set = set().union(*report.fp32.values())
    flavor, _, network, parser = parse_network(out, "toy")
    layers = layer_precisions(network, flavor.trt)["layers"]
    del parser
    _check_int8_fp16("toy", layers, fp32_set)
    by_name = {l[0]: l for l in layers}
    assert by_name["/conv/Conv"][2] == ["HALF"] and by_name["/conv/Conv"][3]
    assert by_name["/mlp/MatMul"][2] == ["HALF"] and by_name["/mlp/MatMul"][3]
    assert by_name["/head/MatMul"][2] == ["FLOAT"] and by_name["/head/MatMul"][3]  # mask logits: INT8 in, FP32 out
    assert by_name["/Softmax"][2] == ["FLOAT"]
    # the plain QDQ graph (fp32 base) is what the check catches
    flavor, _, network, parser = parse_network(qdq, "toy")
    with pytest.raises(AssertionError, match="FLOAT compute layers outside the FP32 set"):
        _check_int8_fp16("toy", layer_precisions(network, flavor.trt)["layers"], fp32_set)
    del parser


def test_memory_attention_builds_with_the_default_workspace_on_both_profiles(engines_fp32, tmp_path):
    from fastsam2.export.trt.plan import build_all, make_plan

    for kind in ("edge", "desktop"):
        plan = make_plan(engines_fp32, tmp_path / kind, kind=kind, precision="fp32", graphs=["memory_attention"])
        (meta,) = build_all(plan, calib_dir=None, log=lambda *_: None)
        assert meta.build_options["workspace_mib"] is None
        assert (tmp_path / kind / "memory_attention.engine").stat().st_size > 0
    # A 1024 MiB cap is below the fused attention's scratch: refused with a reason.
    plan = make_plan(engines_fp32, tmp_path / "capped", kind="desktop", precision="fp32",
                     workspace_mib=1024, graphs=["memory_attention"])
    with pytest.raises(BuildError, match="workspace limit \\(1024 MiB\\) is below"):
        build_all(plan, calib_dir=None, log=lambda *_: None)


def test_static_check_agrees_with_the_parser(tmp_path):
    """The compat check's verdict on small graphs matches what TensorRT's parser does with them."""
    import onnx
    from onnx import TensorProto, helper

    from fastsam2.export.trt.compat import check_onnx_for_trt
    from fastsam2.runtime.backends.trt_profiles import Profile
    from fastsam2.runtime.specs import GraphSpec, TensorSpec

    spec = GraphSpec("toy", (TensorSpec("x", "float32", ("batch", "kept_tokens")),),
                     (TensorSpec("y", "float32", ("batch", "kept_tokens")),))
    profiles = [Profile().add("x", (1, 4), (1, 8), (2, 64))]
    cases = {
        "Relu": helper.make_node("Relu", ["x"], ["y"], name="n"),
        "Unique": helper.make_node("Unique", ["x"], ["y"], name="n"),
        "custom": helper.make_node("MyOp", ["x"], ["y"], name="n", domain="com.example"),
    }
    for case, node in cases.items():
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "kept_tokens"])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "kept_tokens"])])
        opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.example", 1)] if case == "custom" else [])
        path = tmp_path / f"{case}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
        static_ok = check_onnx_for_trt(path, spec, profiles).ok
        try:
            parse_network(path, case)
            parsed = True
        except BuildError:
            parsed = False
        assert static_ok == parsed, f"{case}: static check says {static_ok}, TensorRT's parser {parsed}"


def test_compat_check_passes_every_built_graph(engines_fp16, engines_int8):
    from fastsam2.export.trt.compat import check_onnx_for_trt
    from fastsam2.export.trt.plan import make_plan

    for engines, precision in ((engines_fp16, "fp16"), (engines_int8, "int8")):
        for g in make_plan(engines, engines, precision=precision).graphs:
            report = check_onnx_for_trt(g.build_onnx, g.spec, g.profiles)
            assert report.ok, report.format()


def test_region_graphs_build_with_profiles_over_every_rectangle_side(tmp_path):
    """fastsam2-export --encoder-region --trt: the three region graphs become engines too, the trunk's
    profile spanning every side a rectangle can have (tiny at 256 px: 8, 56 or 64 tokens)."""
    import torch

    from fastsam2.runtime.specs import REGION_GRAPHS
    from fastsam2.tools.export_cli import main

    out = tmp_path / "engines"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["--config", "tiny", "--image-size", "256", "--encoder-region", "--out", str(out), "--trt"]) == 0
    finally:
        torch.set_num_threads(threads)
    for name in REGION_GRAPHS:
        meta = EngineMetadata.load(metadata_path(out / f"{name}.engine"))
        assert meta.precision == "fp32" and meta.graph == name
    (profile,) = EngineMetadata.load(metadata_path(out / "encoder_trunk.engine")).profiles
    assert profile["tokens"]["min"][1:3] == [8, 8] and profile["tokens"]["max"][1:3] == [64, 64]
    # the head runs on the same rectangles: its levels from 8 / s to 64 / s a side
    (profile,) = EngineMetadata.load(metadata_path(out / "encoder_head.engine")).profiles
    assert profile["level3"]["min"][2:4] == [1, 1] and profile["level3"]["max"][2:4] == [8, 8]


def test_fp8_fp16_network_of_a_small_graph(tmp_path):
    """FP8 + FP16 on the hand-made graph through TensorRT's parser: the weighted conv/matmuls take FP8
    through their Q/DQ pairs, the rest is FP16 except the FP32 set, none is INT8."""
    import onnx

    from fastsam2.calibration.qdq import quantize_qdq
    from fastsam2.calibration.reader import ListCalibrationReader
    from fastsam2.export.trt.precision import to_qdq_fp16
    from test_trt_precision import _feed, toy_model

    src, qdq, out = tmp_path / "toy.onnx", tmp_path / "toy.qdq.onnx", tmp_path / "toy.fp8.onnx"
    onnx.save(toy_model(), src)
    quantize_qdq(src, qdq, ListCalibrationReader([_feed(s) for s in range(2)]), fmt="fp8")
    report = to_qdq_fp16(qdq, out)
    fp32_set = set().union(*report.fp32.values())
    flavor, _, network, parser = parse_network(out, "toy")
    layers = layer_precisions(network, flavor.trt)["layers"]
    del parser
    by_name = {l[0]: l for l in layers}
    assert by_name["/conv/Conv"][2:] == (["HALF"], False, True)
    assert by_name["/mlp/MatMul"][2:] == (["HALF"], False, True)
    assert by_name["/head/MatMul"][2:] == (["FLOAT"], False, True)  # mask logits: FP8 in, FP32 out
    float_compute = [l[0] for l in layers if l[1] in COMPUTE_LAYERS and l[2] and l[2][0] == "FLOAT"]
    assert not [n for n in float_compute if n not in fp32_set]
