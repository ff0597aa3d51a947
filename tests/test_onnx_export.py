"""ONNX export of the SAM2 stages: graph checks, manifest, validation against torch, CLI errors.

tiny@512 with seeded random weights is exported once per session (shared with test_ort_backend.py
through a fixed folder under pytest's session temp dir; the export is atomic, so whichever file runs
first writes it and the other reuses it).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from fastsam2.export.onnx_export import (
    ExportError,
    dummy_inputs,
    export_graphs,
    frozen_axes,
    trt_compat_report,
)
from fastsam2.export.stages import build_stages, model_constants
from fastsam2.export.validate import RealInputs, ValidationError, validate_graphs
from fastsam2.runtime.manifest import Manifest
from fastsam2.runtime.specs import BATCH, KEPT, MEMORY, POINTERS, graph_specs

SAM2_GRAPHS = ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder")
ALL_GRAPHS = (*SAM2_GRAPHS, "router")


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def export_dir(onnx_tiny512) -> Path:
    return onnx_tiny512


@pytest.fixture(scope="module")
def stages(tiny512):
    from fastsam2.export.router import TokenRouter

    return {**build_stages(tiny512), "router": TokenRouter.for_model(tiny512).eval()}


def test_every_graph_passes_checker_and_trt_check(export_dir, tiny512):
    manifest = Manifest.read(export_dir)
    assert sorted(manifest.graphs) == sorted(ALL_GRAPHS)
    for name, entry in manifest.graphs.items():
        path = export_dir / entry.file
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path), load_external_data=False)
        ops = {n.op_type for n in model.graph.node}
        assert not ops & {"If", "Loop", "Tile"}, (name, ops & {"If", "Loop", "Tile"})
        report = trt_compat_report(model, entry.spec, manifest.model_config)
        assert report.ok, report.format()
        # IO declared exactly as the spec: fixed sizes and named dynamic axes
        io = {v.name: v for v in (*model.graph.input, *model.graph.output)}
        for t in (*entry.spec.inputs, *entry.spec.outputs):
            dims = tuple(d.dim_param or d.dim_value for d in io[t.name].type.tensor_type.shape.dim)
            assert dims == t.shape, (name, t.name, dims, t.shape)
        assert not frozen_axes(model, entry.spec)


def test_manifest_records_everything(export_dir, tiny512):
    from fastsam2.export.models import file_sha256, model_config

    manifest = Manifest.read(export_dir)
    assert manifest.config_name == "tiny"
    assert manifest.weights == "random-init"
    assert manifest.router_weights == "default-weights"
    assert manifest.opset == 17 and manifest.fill == "norm"
    assert manifest.model_config == model_config(tiny512)
    assert manifest.model_config.image_size == 512
    assert set(manifest.versions) >= {"torch", "sam2", "onnx", "onnxruntime"}
    specs = graph_specs(manifest.model_config.spec_dims())
    for name, entry in manifest.graphs.items():
        assert entry.sha256 == file_sha256(export_dir / entry.file)
        assert (entry.spec.inputs, entry.spec.outputs) == (specs[name].inputs, specs[name].outputs)
    with np.load(export_dir / "constants.npz") as data:
        for k, v in model_constants(tiny512).items():
            np.testing.assert_array_equal(data[k], v)
    leftovers = [p.name for p in export_dir.parent.iterdir() if ".tmp-" in p.name]
    assert not leftovers


def test_dummy_inputs_are_valid(tiny512, stages):
    from fastsam2.export.models import model_config

    cfg = model_config(tiny512)
    for stage in stages.values():
        spec = stage.spec
        assert all(v > 1 for v in spec.trace_sizes.values())
        feeds = dummy_inputs(spec)
        for t in spec.inputs:
            assert str(feeds[t.name].dtype).removeprefix("torch.") == t.dtype
        if "kept_idx" in feeds:
            assert int(feeds["kept_idx"].max()) < cfg.num_tokens
        if "memory_pos_idx" in feeds:
            assert int(feeds["memory_pos_idx"].max()) < cfg.num_tokens
            assert int(feeds["memory_tpos_idx"].max()) < cfg.num_maskmem
        if "point_labels" in feeds:
            assert set(feeds["point_labels"].flatten().tolist()) <= {-1, 0, 1, 2, 3}


def test_validation_on_real_frames(export_dir, stages, bedroom):
    """Every graph in ORT vs torch at two shape sets (K=H*W and ceil(0.3*H*W), B 1 and 2)."""
    report = validate_graphs(export_dir, stages, bedroom, intra_op_threads=1)
    assert report.ok
    assert len(report.sizes_list) == 2
    assert report.sizes_list[1][KEPT] == math.ceil(0.3 * 32 * 32)
    print("\n" + report.format())
    # the ONNX Runtime variants (fused attention) are validated beside the plain graphs
    assert {"image_encoder[ort]", "memory_attention[ort]", "mask_decoder[ort]"} <= set(report.max_abs_diff)
    for graph, diffs in report.max_abs_diff.items():
        spec = stages[graph.split("[")[0]].spec
        for out, d in diffs.items():
            assert d <= spec.atol[out], (graph, out, d)


def test_memory_attention_one_session_three_shapes(export_dir, stages, tiny512, bedroom):
    import onnxruntime as ort

    from fastsam2.export.models import model_config

    cfg = model_config(tiny512)
    hw = cfg.num_tokens
    stage = stages["memory_attention"]
    real = RealInputs(stages, cfg, bedroom)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(
        str(export_dir / "memory_attention.onnx"), opts, providers=["CPUExecutionProvider"]
    )
    worst = 0.0
    for K, M, P in ((hw, hw, 2), (math.ceil(0.3 * hw), 3 * hw + 11, 9), (97, 40, 16)):
        feed = real.feed(stage.spec, {BATCH: 1, KEPT: K, MEMORY: M, POINTERS: P})
        (ours,) = sess.run(None, feed)
        with torch.inference_mode():
            ref = stage(**{k: torch.from_numpy(v) for k, v in feed.items()}).numpy()
        assert ours.shape == ref.shape == (1, 256, 32, 32)
        worst = max(worst, float(np.abs(ours - ref).max()))
    print(f"memory_attention, 3 shape sets in one session: max |Δ| {worst:.2e}")
    assert worst <= stage.spec.atol["pix_feat"]


def test_validation_collects_every_failure(export_dir, stages, tiny512):
    """A torch stage that differs from its graph: one error listing every output, with max |Δ|."""
    manifest = Manifest.read(export_dir)
    manifest.graphs = {"mask_decoder": manifest.graphs["mask_decoder"]}
    decoder = stages["mask_decoder"]

    class Shifted(torch.nn.Module):
        spec = decoder.spec

        def forward(self, **kw):
            return tuple(o + 1.0 if o.is_floating_point() else o for o in decoder(**kw))

    shifted = dict(stages, mask_decoder=Shifted())
    with pytest.raises(ValidationError, match=r"mask_decoder\.low_res_masks: max \|Δ\| 1\.00e\+00") as e:
        validate_graphs(export_dir, shifted, None, manifest=manifest, intra_op_threads=1)
    failures = e.value.report.failures
    # every output of both files of the graph: the plain one and ONNX Runtime's variant
    assert len(failures) == 2 * len(decoder.spec.outputs)
    assert all("max |Δ|" in f for f in failures)
    assert sum(f.startswith("mask_decoder[ort].") for f in failures) == len(decoder.spec.outputs)


def test_failed_export_leaves_nothing(tmp_path, tiny512):
    from fastsam2.export.models import model_config

    spec = graph_specs(model_config(tiny512).spec_dims())["router"]

    class BrokenRouter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.spec = spec

        def forward(self, *inputs):
            raise RuntimeError("boom")

    out = tmp_path / "export"
    with pytest.raises(RuntimeError, match="boom"):
        export_graphs(tiny512, out, validate=False, router_stage=BrokenRouter())
    assert list(tmp_path.iterdir()) == []


def test_existing_out_dir_is_refused(tmp_path, tiny512):
    (tmp_path / "x").mkdir()
    from fastsam2.runtime.outdir import OutputError

    with pytest.raises(OutputError, match="already exists"):
        export_graphs(tiny512, tmp_path / "x", validate=False)
    assert [p.name for p in tmp_path.iterdir()] == ["x"]


# -- CLI -------------------------------------------------------------------------------------------


def test_cli_unknown_config(tmp_path, capsys):
    from fastsam2.tools.export_cli import main

    assert main(["--config", "huge", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown config 'huge'" in err[0]
    assert not (tmp_path / "o").exists()


def test_cli_existing_out_and_bad_checkpoint(tmp_path, capsys):
    from fastsam2.tools.export_cli import main

    (tmp_path / "o").mkdir()
    assert main(["--config", "tiny", "--out", str(tmp_path / "o")]) == 1
    assert "already exists" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["--config", "tiny", "--checkpoint", str(bad), "--out", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read checkpoint" in err[0]
    assert not (tmp_path / "p").exists()
    assert main(["--config", "tiny", "--int8", "--out", str(tmp_path / "q")]) == 1
    assert "only apply with --trt" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--trt", "--calib", "."], "--calib only applies with --int8"),
        (["--trt", "--fp16", "--tf32"], "--tf32 applies to fp32 engines"),
        (["--trt", "--fp8"], "--fp8 needs --calib"),
        (["--trt", "--fp8", "--int8", "--calib", "."], "choose one of --fp16, --int8 and --fp8"),
        (["--fp8"], "only apply with --trt"),
        (["--trt", "--workspace", "0"], "argument --workspace: must be > 0"),
        (["--tf32"], "only apply with --trt"),
        (["--trt-target", "7.5"], "only apply with --trt"),
        (["--max-batch", "4"], "only apply with --trt"),
        (["--trt", "--max-batch", "0"], "argument --max-batch: must be > 0"),
    ],
)
def test_cli_trt_option_errors_are_one_line(tmp_path, capsys, argv, needle):
    from fastsam2.tools.export_cli import main

    assert main(["--config", "tiny", "--out", str(tmp_path / "o"), *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "o").exists()
