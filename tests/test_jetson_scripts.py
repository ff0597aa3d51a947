"""jetson/: trtexec command generation (shapes from profiles_for), the engine build driver with a fake
builder, benchmark arguments/statistics/table, and the ROS 2 package's pure helpers and node plumbing
with a stub rclpy. Nothing here needs TensorRT, a GPU or ROS 2."""

from __future__ import annotations

import array
import importlib.util
import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from fastsam2.runtime.backends.trt_profiles import profiles_for
from fastsam2.runtime.config import ModelConfig
from fastsam2.runtime.manifest import GraphEntry, Manifest
from fastsam2.runtime.specs import graph_specs

REPO = Path(__file__).resolve().parents[1]
JETSON = REPO / "jetson"
ROS_PKG = JETSON / "ros2" / "fastsam2_ros"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


sys.path.insert(0, str(JETSON))
from fastsam2.export.trt import plan as engine_plan  # noqa: E402
trtexec = _load("print_trtexec_commands", JETSON / "print_trtexec_commands.py")
build_engines = _load("build_engines", JETSON / "build_engines.py")
benchmark = _load("jetson_benchmark", JETSON / "benchmark.py")
sys.path.insert(0, str(ROS_PKG))
from fastsam2_ros import image_conversions as ic  # noqa: E402
from fastsam2_ros import prompts  # noqa: E402

SHAPES_RE = re.compile(r"^[A-Za-z_][\w./-]*:\d+(x\d+)*$")


@pytest.fixture(params=[1024, 512])
def fake_export(request, tmp_path) -> Path:
    """A manifest + constants + empty .onnx files: all that the build plan reads."""
    cfg = ModelConfig(image_size=request.param)
    specs = graph_specs(cfg.spec_dims())
    graphs = {}
    for name, spec in specs.items():
        (tmp_path / f"{name}.onnx").write_bytes(b"")
        graphs[name] = GraphEntry(name=name, file=f"{name}.onnx", sha256="0" * 64, spec=spec)
    Manifest(config_name="tiny", model_config=cfg, weights="random-init", opset=17, fill="norm",
             graphs=graphs).write(tmp_path)
    np.savez(tmp_path / "constants.npz", no_mem_embed=np.zeros(256, np.float32))
    return tmp_path


def _flag(argv: list[str], name: str) -> str | None:
    hits = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    assert len(hits) <= 1, f"--{name} given twice"
    return hits[0] if hits else None


def _parse_shapes(text: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for item in text.split(","):
        assert SHAPES_RE.match(item), f"malformed shape spec {item!r}"
        name, dims = item.split(":")
        out[name] = tuple(int(d) for d in dims.split("x"))
    return out


# -- trtexec commands ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["edge", "desktop"])
def test_trtexec_shapes_are_the_profiles(fake_export, kind):
    plan = engine_plan.make_plan(fake_export, fake_export / "engines", kind=kind)
    cfg = plan.manifest.model_config
    assert [g.name for g in plan.graphs] == list(plan.manifest.graphs)
    for graph, argv, _ in trtexec.commands_for(plan):
        spec = graph.spec
        dynamic = [t.name for t in spec.inputs if t.dynamic_axes]
        assert dynamic, f"{spec.name} has no dynamic input: the test would check nothing"
        shapes = {w: _parse_shapes(_flag(argv, f"{w}Shapes")) for w in ("min", "opt", "max")}
        profile = profiles_for(spec, cfg, kind=kind)[0]  # computed independently of the script
        for which, got in shapes.items():
            assert list(got) == dynamic, f"{spec.name} --{which}Shapes inputs"
            for name, shape in got.items():
                assert shape == getattr(profile[name], which), f"{spec.name} {name} {which}"
                assert len(shape) == len(spec.input(name).shape)
        for name in dynamic:
            lo, mid, hi = shapes["min"][name], shapes["opt"][name], shapes["max"][name]
            assert all(a <= b <= c for a, b, c in zip(lo, mid, hi)), f"{name}: {lo} {mid} {hi}"
            assert _flag(argv, "onnx") == str(fake_export / "engines" / f"{spec.name}.fp16.onnx")  # default fp16
        assert _flag(argv, "saveEngine") == str(fake_export / "engines" / f"{spec.name}.engine")


def test_trtexec_edge_memory_max_follows_the_edge_cond_frames(fake_export):
    plan = engine_plan.make_plan(fake_export, kind="edge")
    cfg = plan.manifest.model_config
    g = next(g for g in plan.graphs if g.name == "memory_attention")
    argv = trtexec.trtexec_command(g, plan)
    mem = _parse_shapes(_flag(argv, "maxShapes"))["memory"]
    assert mem[1] == (cfg.num_maskmem - 1 + 2) * cfg.num_tokens
    assert plan.build_info()["max_cond_frames_in_attn"] == 2


def test_max_batch_reaches_every_profile_and_the_build_info(fake_export):
    """Engines for several objects or camera streams per call: every profile's batch maximum."""
    plan = engine_plan.make_plan(fake_export, kind="desktop", max_batch=4)
    for g in plan.graphs:
        (profile,) = g.profiles
        batched = [t.name for t in g.spec.inputs if t.shape[0] == "batch"]
        assert batched and all(profile[n].max[0] == 4 and profile[n].min[0] == 1 for n in batched)
    argv = trtexec.trtexec_command(plan.graphs[0], plan)
    assert all(shape[0] == 4 for name, shape in _parse_shapes(_flag(argv, "maxShapes")).items()
               if name in [t.name for t in plan.graphs[0].spec.inputs if t.shape[0] == "batch"])
    assert plan.build_info()["max_batch"] == 4
    with pytest.raises(engine_plan.PlanError, match="max batch must be >= 1"):
        engine_plan.make_plan(fake_export, max_batch=0)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "fp8"])
def test_trtexec_precision_and_build_flags(fake_export, precision):
    from fastsam2.export.trt.precision import quantizes

    plan = engine_plan.make_plan(fake_export, kind="edge", precision=precision, workspace_mib=768)
    for graph, argv, note in trtexec.commands_for(plan, trtexec="/usr/src/tensorrt/bin/trtexec"):
        assert argv[0] == "/usr/src/tensorrt/bin/trtexec"
        assert "--stronglyTyped" in argv
        assert "--memPoolSize=workspace:768" in argv
        assert _flag(argv, "timingCacheFile") == str(fake_export / "timing.cache")
        # weak typing and implicit calibration do not exist on TensorRT 11
        for gone in ("--fp16", "--int8", "--best", "--precisionConstraints"):
            assert not any(a.startswith(gone) for a in argv), gone
        assert _flag(argv, "calib") is None and _flag(argv, "layerPrecisions") is None
        # a graph an int8 / fp8 build does not quantize (the encoder-region graphs; for fp8 all but the
        # image encoder) is built from its fp16 graph
        built = precision if precision in ("fp32", "fp16") or quantizes(precision, graph.name) else "fp16"
        want = f"{graph.name}.onnx" if built == "fp32" else f"{graph.name}.{built}.onnx"
        assert _flag(argv, "onnx") == str(fake_export / want)
        assert ("--noTF32" in argv) == (precision == "fp32")
        assert ("not written yet" in note) == (precision != "fp32")
        assert argv[-1] == "--skipInference"
        assert not any(a.startswith("--workspace") for a in argv), "removed in TensorRT 10"


def test_trtexec_default_workspace_is_tensorrts(fake_export):
    plan = engine_plan.make_plan(fake_export, kind="desktop")
    assert plan.workspace_mib is None
    for _, argv, _ in trtexec.commands_for(plan):
        assert _flag(argv, "memPoolSize") is None


def test_shape_helpers_refuse_bad_input():
    assert trtexec.shape_str((1, 256, 64, 64)) == "1x256x64x64"
    with pytest.raises(ValueError, match="rank-0"):
        trtexec.shape_str(())
    spec = graph_specs()["memory_attention"]
    profile = profiles_for(spec, ModelConfig(), kind="edge")[0]
    from fastsam2.runtime.backends.trt_profiles import Profile

    partial = Profile([(n, t) for n, t in profile.items() if n != "memory"])
    with pytest.raises(ValueError, match="memory"):
        trtexec.shapes_arg(spec, partial, "min")


def test_print_trtexec_commands_main(fake_export, capsys):
    assert trtexec.main(["--graphs", str(fake_export), "--out", str(fake_export / "e"), "--only", "mask_decoder"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("#!/usr/bin/env bash") and "# mask_decoder" in out and "# router" not in out
    assert trtexec.main(["--graphs", str(fake_export), "--only", "nope"]) == 1
    assert "not in" in capsys.readouterr().err


def test_plan_errors(fake_export, tmp_path):
    with pytest.raises(engine_plan.PlanError, match="manifest.json"):
        engine_plan.make_plan(tmp_path / "missing")
    with pytest.raises(engine_plan.PlanError, match="kind"):
        engine_plan.make_plan(fake_export, kind="jetson")
    with pytest.raises(engine_plan.PlanError, match="workspace"):
        engine_plan.make_plan(fake_export, workspace_mib=0)


# -- build_engines with a fake builder -------------------------------------------------------------
def test_build_engines_drives_the_builder(fake_export, monkeypatch):
    import fastsam2.export.trt.builder as builder

    calls = []

    def fake_build(onnx_path, spec, profiles, *, engine_path, metadata, precision, workspace_mib,
                   tf32, targets, timing_cache_path, check_compat, precision_report):
        calls.append((spec.name, precision, workspace_mib, metadata.profile_kind, profiles, timing_cache_path,
                      Path(onnx_path).name))
        Path(engine_path).write_bytes(b"engine")
        return types.SimpleNamespace(
            build_options={"build_seconds": 1.0, "workspace_limit_bytes": 512 << 20, "activation_bytes": 1 << 20,
                           "largest_activation": None,
                           "layer_precisions": {"float_layers": {"FLOAT": 3}, "compute_layers": 1,
                                                "compute_layers_int8": 0, "compute_layers_fp8": 0, "compute_layers_fp16": 0}},
            tensorrt_version="10.3.0", tensorrt_flavor="tensorrt", gpu_name="Orin", compute_capability="8.7")

    monkeypatch.setattr(builder, "build_engine", fake_build)
    out = fake_export / "engines"
    plan = engine_plan.make_plan(fake_export, out, precision="fp32", workspace_mib=512)
    engine_plan.build_all(plan, calib_dir=None, log=lambda *_: None)
    assert [c[0] for c in calls] == list(plan.manifest.graphs)
    cfg = plan.manifest.model_config
    for name, precision, ws, kind, profiles, cache, onnx_name in calls:
        assert (precision, ws, kind, cache, onnx_name) == ("fp32", 512, "edge", out / "timing.cache", f"{name}.onnx")
        assert profiles == profiles_for(plan.manifest.graphs[name].spec, cfg, kind="edge")
    # the runtime's engine directory: byte-identical manifest (metadata hashes it), constants, info
    assert (out / "manifest.json").read_bytes() == (fake_export / "manifest.json").read_bytes()
    assert (out / "constants.npz").is_file()
    info = engine_plan.read_build_info(out)
    assert info["profile_kind"] == "edge" and info["max_cond_frames_in_attn"] == 2
    assert abs(info["min_keep_ratio"] - 0.1) < 0.01
    report = json.loads((out / "precision.json").read_text())
    assert set(report) == set(plan.manifest.graphs) and report["router"]["precision"] == "fp32"


def test_build_engines_refuses_bad_options(fake_export, tmp_path, capsys):
    assert build_engines.main(["--graphs", str(fake_export), "--int8"]) == 1
    assert "--calib" in capsys.readouterr().err
    assert build_engines.main(["--graphs", str(fake_export), "--calib", str(tmp_path)]) == 1
    assert "only applies with --int8" in capsys.readouterr().err
    (tmp_path / "calib" / "mask_decoder").mkdir(parents=True)
    (tmp_path / "calib" / "mask_decoder" / "00000.npz").write_bytes(b"")
    argv = ["--graphs", str(fake_export), "--int8", "--calib", str(tmp_path / "calib")]
    assert build_engines.main(argv) == 1
    err = capsys.readouterr().err
    assert "no recorded feeds" in err and "image_encoder" in err and "'mask_decoder'" not in err


# -- benchmark -----------------------------------------------------------------------------------
def test_benchmark_arguments():
    parse = benchmark.build_parser().parse_args
    args = parse(["--engines", "e", "--source", "0", "--keep", "1.0", "0.5", "0.3", "--json", "b.json"])
    assert (args.backend, args.frames, args.warmup, args.keep) == ("trt", 100, 5, [1.0, 0.5, 0.3])
    benchmark.check_args(args)
    for argv, match in [
        (["--source", "x"], "needs --engines"),
        (["--backend", "ort", "--source", "x"], "needs --graphs"),
        (["--backend", "ort", "--graphs", "g", "--engines", "e", "--source", "x"], "apply to --backend trt"),
        (["--engines", "e", "--ort-provider", "cuda", "--source", "x"], "apply to --backend ort"),
        (["--engines", "e", "--source", "x", "--warmup", "0"], "warmup"),
        (["--engines", "e", "--source", "x", "--point", "1,2", "--box", "1,2,3,4"], "not both"),
    ]:
        with pytest.raises(benchmark.BenchError, match=match):
            benchmark.check_args(parse(argv))
    assert benchmark.parse_floats("1, 2.5", 2, "--point") == [1.0, 2.5]
    with pytest.raises(benchmark.BenchError, match="4 comma"):
        benchmark.parse_floats("1,2", 4, "--box")


def test_benchmark_statistics_and_table():
    rec = benchmark.RunRecord(keep_ratio=0.5)
    for i in range(10):
        rec.stage_ms.append({"image_encoder": 10.0 + i, "memory_attention": 5.0, "preprocess": 1.0})
        rec.stage_calls.append({"image_encoder": 1, "memory_attention": 2, "preprocess": 1})
        rec.total_ms.append(20.0 + i)
        rec.kept_tokens.append(2048)
    rec.memory = {"torch_max_allocated_mib": 123.4, "device_used_mib": None, "peak_rss_mib": 800.0}
    r = rec.result()
    assert list(r["stages"]) == ["preprocess", "image_encoder", "memory_attention", "other"]
    enc = r["stages"]["image_encoder"]
    assert enc["median_ms"] == pytest.approx(14.5) and enc["p90_ms"] == pytest.approx(18.1)
    assert r["stages"]["memory_attention"]["calls_per_frame"] == 2.0
    assert r["stages"]["other"]["median_ms"] == pytest.approx(4.0)  # total - stages
    assert r["fps"] == pytest.approx(1000 / 24.5)
    assert r["throughput_fps"] == pytest.approx(1000 * 10 / sum(rec.total_ms))
    json.dumps(r)  # JSON-serializable
    table = benchmark.format_table([r], "header")
    lines = table.splitlines()
    assert lines[0] == "header" and "median ms" in lines[1] and "p90 ms" in lines[1]
    assert re.search(r"^\s+0\.50\s+preprocess\s+1\.00\s+1\.00\s+1\.0$", lines[2])
    assert any(re.search(r"total\s+24\.50\s+28\.10", ln) for ln in lines)
    assert "FPS 40.8 (median)" in table and "kept tokens 2048" in table
    assert "torch max allocated 123, device used -, peak RSS 800" in table
    assert benchmark.summarize([])["median_ms"] != benchmark.summarize([])["median_ms"]  # nan


def test_benchmark_ort_smoke(tmp_path, onnx_tiny512, bedroom):
    """The CPU path end to end on the session's ONNX export (tiny@512)."""
    export = str(onnx_tiny512)
    out = tmp_path / "b.json"
    argv = ["--backend", "ort", "--graphs", export, "--source", str(bedroom), "--frames", "2",
            "--warmup", "1", "--json", str(out)]
    assert benchmark.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["results"][0]["frames"] == 2 and "image_encoder" in report["results"][0]["stages"]


# -- ROS 2 helpers (no rclpy) ----------------------------------------------------------------------
def _msg(rgb: np.ndarray, encoding: str, pad: int = 0):
    h, w = rgb.shape[:2]
    chans = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "rgba8": np.dstack([rgb, np.full((h, w), 7, np.uint8)]),
             "bgra8": np.dstack([rgb[:, :, ::-1], np.full((h, w), 7, np.uint8)]), "mono8": rgb[:, :, 0]}[encoding]
    rows = np.ascontiguousarray(chans).reshape(h, -1)
    padded = np.concatenate([rows, np.full((h, pad), 255, np.uint8)], axis=1)
    return types.SimpleNamespace(height=h, width=w, encoding=encoding, is_bigendian=0,
                                 step=padded.shape[1], data=array.array("B", padded.tobytes()))


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
@pytest.mark.parametrize("pad", [0, 3])
def test_image_msg_to_rgb(encoding, pad):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = ic.msg_to_rgb(_msg(rgb, encoding, pad))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_mono8_and_unpadded_last_row():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    msg = _msg(np.dstack([gray] * 3), "mono8", pad=2)
    msg.data = msg.data[:-2]  # last row without its padding
    np.testing.assert_array_equal(ic.msg_to_rgb(msg), np.dstack([gray] * 3))


def test_image_conversion_errors():
    rgb = np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(ic.ImageConversionError, match="unsupported image encoding 'yuv422'"):
        ic.msg_to_rgb(types.SimpleNamespace(**{**vars(_msg(rgb, "rgb8")), "encoding": "yuv422"}))
    short = _msg(rgb, "rgb8")
    short.data = short.data[:5]
    with pytest.raises(ic.ImageConversionError, match="bytes"):
        ic.msg_to_rgb(short)
    with pytest.raises(ic.ImageConversionError, match="step"):
        ic.msg_to_rgb(types.SimpleNamespace(**{**vars(_msg(rgb, "rgb8")), "step": 4}))


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_rgb_round_trip(encoding):
    rgb = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    fields = ic.rgb_to_fields(rgb, encoding)
    assert (fields["encoding"], fields["step"], len(fields["data"])) == (encoding, 18, 72)
    np.testing.assert_array_equal(ic.msg_to_rgb(types.SimpleNamespace(**fields)), rgb)
    with pytest.raises(ic.ImageConversionError):
        ic.rgb_to_fields(rgb, "mono8")


def test_label_image_and_overlay():
    logits = np.full((2, 3, 4), -5.0, np.float32)
    logits[0, 0, :2] = 3.0
    logits[1, 0, 1:3] = 4.0  # overlaps object 7 at (0, 1): the higher logit wins
    label = ic.label_image(logits, [7, 200])
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label[0], [7, 200, 200, 0])
    assert not label[1:].any()
    fields = ic.mono8_fields(label)
    assert (fields["encoding"], fields["step"], fields["data"]) == ("mono8", 4, label.tobytes())
    with pytest.raises(ic.ImageConversionError, match="1..255"):
        ic.label_image(logits, [1, 256])
    assert ic.label_image(np.zeros((0, 3, 4)), []).shape == (3, 4)
    rgb = np.full((3, 4, 3), 100, np.uint8)
    shown = ic.overlay(rgb, label, 0.5)
    np.testing.assert_array_equal(shown[1:], rgb[1:])
    assert (shown[0, :3] != 100).any()
    assert ic.palette()[0].tolist() == [0, 0, 0] and len({tuple(c) for c in ic.palette()[1:8]}) == 7


def test_prompt_parsing():
    assert prompts.from_parameters("", "", 1) is None
    box = prompts.from_parameters("10,20,110,220", "", 3)
    assert box.obj_id == 3 and box.as_kwargs() == {"box": [10.0, 20.0, 110.0, 220.0]}
    pt = prompts.from_parameters(" ", "320, 240", 1)
    assert pt.as_kwargs() == {"points": [[320.0, 240.0]], "labels": [1]}
    spec = prompts.from_json('{"obj_id": 2, "points": [[1, 2], [3, 4]], "labels": [1, 0]}')
    assert spec.obj_id == 2 and spec.as_kwargs()["labels"] == [1, 0]
    assert prompts.from_json('{"box": [0, 0, 5, 5]}', default_obj_id=9).obj_id == 9
    for text, match in [
        ("nope", "not JSON"), ("[1]", "JSON object"), ('{"box": [0,0,1,1], "points": [[1,1]]}', "exactly one"),
        ('{"box": [0, 0, 1]}', "4 numbers"), ('{"box": [5, 0, 1, 1]}', "x1 > x0"),
        ('{"points": [[1, 2]], "labels": [2]}', "0 or 1"), ('{"points": []}', "non-empty"),
        ('{"obj_id": 0, "box": [0, 0, 1, 1]}', "1..255"), ('{"obj_id": true, "box": [0, 0, 1, 1]}', "1..255"),
        ('{"box": [0, 0, 1, 1], "colour": 1}', "unknown prompt keys"), ('{"box": [0, 0, "nan", 1]}', "finite"),
    ]:
        with pytest.raises(prompts.PromptError, match=match):
            prompts.from_json(text)
    with pytest.raises(prompts.PromptError, match="not both"):
        prompts.from_parameters("0,0,1,1", "1,1", 1)


def test_node_module_imports_without_rclpy():
    import subprocess

    code = ("import sys; sys.path.insert(0, %r); import fastsam2_ros.fastsam2_node as n; "
            "assert 'rclpy' not in sys.modules and 'fastsam2.runtime.tracker' not in sys.modules; "
            "assert n.PARAMETERS['image_topic'] == '/camera/image_raw'") % str(ROS_PKG)
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ros_package_files():
    pkg = (ROS_PKG / "package.xml").read_text()
    assert "<name>fastsam2_ros</name>" in pkg and "<build_type>ament_python</build_type>" in pkg
    assert (ROS_PKG / "resource" / "fastsam2_ros").is_file()
    assert "fastsam2_node = fastsam2_ros.fastsam2_node:main" in (ROS_PKG / "setup.py").read_text()
    assert "$base/lib/fastsam2_ros" in (ROS_PKG / "setup.cfg").read_text()
    launch = (ROS_PKG / "launch" / "fastsam2.launch.py").read_text()
    compile(launch, "fastsam2.launch.py", "exec")
    from fastsam2_ros.fastsam2_node import PARAMETERS

    declared = set(re.findall(r'^\s+"(\w+)": \(', launch, flags=re.M))
    assert declared <= set(PARAMETERS), f"launch arguments {declared - set(PARAMETERS)} are not node parameters"


def _stub_ros(monkeypatch):
    """Minimal stand-ins for the rclpy / message modules the node uses."""
    class Logger:
        def __init__(self):
            self.lines = []

        def _log(self, msg, **_):
            self.lines.append(msg)

        info = warning = error = _log

    class Node:
        overrides: dict = {}  # what `--ros-args -p name:=value` would set

        def __init__(self, name):
            self._params, self._logger, self.subs, self.pubs, self.services = dict(self.overrides), Logger(), {}, {}, {}

        def declare_parameter(self, name, default):
            self._params.setdefault(name, default)

        def get_parameter(self, name):
            return types.SimpleNamespace(value=self._params[name])

        def create_subscription(self, kind, topic, cb, qos):
            self.subs[topic] = cb

        def create_publisher(self, kind, topic, qos):
            pub = types.SimpleNamespace(msgs=[])
            pub.publish = pub.msgs.append
            self.pubs[topic] = pub
            return pub

        def create_service(self, kind, name, cb):
            self.services[name] = cb

        def get_logger(self):
            return self._logger

        def destroy_node(self):
            pass

    class Image:
        def __init__(self):
            self.header, self.data = None, array.array("B")

    mods = {
        "rclpy": types.ModuleType("rclpy"), "rclpy.node": types.ModuleType("rclpy.node"),
        "rclpy.qos": types.ModuleType("rclpy.qos"), "sensor_msgs": types.ModuleType("sensor_msgs"),
        "sensor_msgs.msg": types.ModuleType("sensor_msgs.msg"), "std_msgs": types.ModuleType("std_msgs"),
        "std_msgs.msg": types.ModuleType("std_msgs.msg"), "std_srvs": types.ModuleType("std_srvs"),
        "std_srvs.srv": types.ModuleType("std_srvs.srv"),
    }
    mods["rclpy.node"].Node = Node
    mods["rclpy.qos"].QoSProfile = lambda **kw: kw
    mods["rclpy.qos"].HistoryPolicy = types.SimpleNamespace(KEEP_LAST="keep_last")
    mods["rclpy.qos"].ReliabilityPolicy = types.SimpleNamespace(BEST_EFFORT="best_effort")
    mods["sensor_msgs.msg"].Image = Image
    mods["std_msgs.msg"].String = object
    mods["std_srvs.srv"].Trigger = object
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)


def test_node_plumbing_with_stub_ros(monkeypatch):
    import threading

    from fastsam2_ros import fastsam2_node

    _stub_ros(monkeypatch)

    class StubTracker:
        def __init__(self):
            self.backend = types.SimpleNamespace(description="stub")
            self.calls, self.stream_state, self.gate = [], None, threading.Event()

        def reset(self):
            self.stream_state = None

        def track(self, frame, prompts):
            self.gate.wait(5)
            self.calls.append((frame.copy(), prompts))
            self.stream_state = types.SimpleNamespace(objects={1: None})
            logits = np.full((1, *frame.shape[:2]), -1.0, np.float32)
            logits[0, 0, 0] = 1.0
            return types.SimpleNamespace(logits=logits, obj_ids=[1], frame_idx=len(self.calls) - 1, ms=1.0)

    tracker = StubTracker()
    monkeypatch.setattr(fastsam2_node, "load_tracker", lambda params: tracker)
    monkeypatch.setattr(fastsam2_node, "to_tracker_prompt", lambda spec: spec.as_kwargs())
    sys.modules["rclpy.node"].Node.overrides = {"engine_dir": "e", "point": "1,1"}
    node_cls = fastsam2_node.make_node_class()
    node = node_cls()
    try:
        frames = [np.full((2, 3, 3), i, np.uint8) for i in range(3)]
        msgs = [types.SimpleNamespace(header=f"h{i}", **ic.rgb_to_fields(f, "bgr8")) for i, f in enumerate(frames)]
        on_image = node.subs["/camera/image_raw"]
        on_image(msgs[0])  # the worker takes it and blocks in track()
        for _ in range(200):
            if node._latest is None:
                break
            threading.Event().wait(0.01)
        on_image(msgs[1])
        on_image(msgs[2])  # replaces msgs[1]: one frame dropped while busy
        tracker.gate.set()
        for _ in range(200):
            if len(node.pubs["~/mask"].msgs) == 2:
                break
            threading.Event().wait(0.01)
        assert node.dropped == 1 and node.received == 3
        assert [c[0][0, 0, 0] for c in tracker.calls] == [0, 2]
        assert tracker.calls[0][1] == {1: {"points": [[1.0, 1.0]], "labels": [1]}} and tracker.calls[1][1] is None
        mask = node.pubs["~/mask"].msgs[-1]
        assert (mask.encoding, mask.header, bytes(mask.data)) == ("mono8", "h2", bytes([1, 0, 0, 0, 0, 0]))
        assert node.pubs["~/overlay"].msgs[-1].encoding == "bgr8"
        reply = node.services["~/reset"](None, types.SimpleNamespace(success=False, message=""))
        assert reply.success and "initial prompt" in reply.message
    finally:
        node.destroy_node()
