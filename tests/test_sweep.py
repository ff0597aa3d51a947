"""Token selectors (random, grid) and ``fastsam2 eval --sweep`` on generated clips with random weights:
the harness itself (cells, per-video scores, resuming, the table and plot, one-line refusals). What
the numbers say about pruning needs the trained model: tests/test_accuracy.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fastsam2.runtime.ops import NumpyOps
from fastsam2.runtime.router import GridSelector, RandomSelector, RouterError, dither_order, make_selector
from fastsam2.runtime.state import FrameFeatures, ObjectState
from fastsam2.tools.cli import main


def _items(pairs):
    return [(ObjectState(obj_id=o), FrameFeatures(frame_idx=t, vision_feats=None, fpn_s0=None, fpn_s1=None))
            for o, t in pairs]


# -- selectors --------------------------------------------------------------------------------------
def test_random_selector_depends_only_on_seed_object_and_frame():
    sel = RandomSelector(NumpyOps(), num_tokens=256, seed=3)
    batch = sel.select(_items([(1, 5), (2, 5), (1, 6)]), 40)
    alone = sel.select(_items([(1, 6)]), 40)
    assert np.array_equal(batch[2], alone[0])  # not a function of what was drawn before
    for idx in batch:
        assert idx.shape == (1, 40) and idx.dtype == np.int64
        assert np.all(np.diff(idx[0]) > 0) and 0 <= idx.min() and idx.max() < 256
    assert not np.array_equal(batch[0], batch[1]) and not np.array_equal(batch[0], batch[2])
    other = RandomSelector(NumpyOps(), num_tokens=256, seed=4).select(_items([(1, 5)]), 40)
    assert not np.array_equal(other[0], batch[0])


@pytest.mark.parametrize("size", [32, 24])
def test_dither_order_spreads_every_prefix_over_the_grid(size):
    order = dither_order(size)
    assert sorted(order.tolist()) == list(range(size * size))
    rows, cols = np.divmod(order, size)
    for k in (size * size // 10, size * size // 3):
        # every 8x8 block gets its share of the first k tokens, up to the block's rounding
        counts = np.zeros((-(-size // 8),) * 2, int)
        np.add.at(counts, (rows[:k] // 8, cols[:k] // 8), 1)
        full = counts[: size // 8, : size // 8]
        assert full.max() - full.min() <= 2, counts
    if size == 32:  # a power of two: the first quarter is every second row and column
        assert np.all(rows[: size * size // 4] % 2 == 0) and np.all(cols[: size * size // 4] % 2 == 0)


def test_grid_selector_is_the_dither_prefix_for_every_object():
    sel = GridSelector(NumpyOps(), feat_size=32)
    a, b = sel.select(_items([(1, 3), (2, 9)]), 256)
    assert np.array_equal(a, b) and np.array_equal(a[0], np.sort(dither_order(32)[:256]))


def test_baseline_selectors_refuse_router_options():
    class FakeBackend:
        from fastsam2.runtime.config import ModelConfig

        config, ops, runners = ModelConfig(image_size=256), NumpyOps(), {}

    with pytest.raises(RouterError, match="uses neither"):
        make_selector(FakeBackend(), "random", weights_path="router.safetensors")
    with pytest.raises(RouterError, match="unknown token selector"):
        make_selector(FakeBackend(), "best")
    assert isinstance(make_selector(FakeBackend(), "grid"), GridSelector)


# -- the sweep ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from fastsam2.runtime.synth import write_dataset

    return write_dataset(tmp_path_factory.mktemp("sweep") / "hard", videos=2, frames=3, seed=0, split="hard",
                         size=128)


SWEEP = ["--keeps", "1,0.3", "--selectors", "builtin,random,grid", "--backends", "torch", "--image-size", "256",
         "--threads", "1"]


def test_sweep_runs_every_cell_scores_each_video_and_resumes(clips, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["eval", "--sweep", str(clips), "--out", str(out), *SWEEP]
    assert main(argv) == 0, capsys.readouterr().err
    data = json.loads((out / "sweep.json").read_text())
    cells = {(c["backend"], c["selector"], c["keep"]): c for c in data["cells"]}
    assert set(cells) == {("torch", "all-tokens", 1.0), ("torch", "builtin", 0.3), ("torch", "random", 0.3),
                          ("torch", "grid", 0.3)}
    for c in cells.values():
        assert [v["name"] for v in c["videos"]] == ["hard_00000", "hard_00001"]
        assert c["jf_mean"] == pytest.approx((c["j_mean"] + c["f_mean"]) / 2)
        assert 0.0 <= c["jf_mean"] <= 1.0 and c["ms_per_frame"] > 0 and c["frames"] == 6
        assert c["made"]["weights"] == "random-init" and c["made"]["backend"] == "torch"
    assert cells[("torch", "random", 0.3)]["made"]["selection"] == "random tokens, seed 0"
    # a cell's J&F is that of its masks, scored again by `fastsam2 eval`
    again = tmp_path / "again.json"
    assert main(["eval", "--pred", str(out / "cells" / "torch" / "grid" / "keep_0.3"),
                 "--gt", str(clips / "Annotations"), "--json", str(again)]) == 0
    assert json.loads(again.read_text())["jf_mean"] == pytest.approx(cells[("torch", "grid", 0.3)]["jf_mean"])
    table = (out / "sweep.md").read_text()
    assert table.count("| torch |") == 4 and "random SAM2 weights" in table
    with Image.open(out / "sweep.png") as png:
        assert png.format == "PNG" and png.width >= 400
    capsys.readouterr()
    assert main(argv) == 0  # resumed: every video is reused, the report is the same
    assert capsys.readouterr().err.count("reused (finished earlier)") == 8
    redo = json.loads((out / "sweep.json").read_text())
    assert [c["jf_mean"] for c in redo["cells"]] == [c["jf_mean"] for c in data["cells"]]


def _one_line(code: int, err: str, match: str) -> None:
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert code == 1 and "Traceback" not in err and len(lines) == 1 and match in lines[0], err


@pytest.mark.parametrize("extra,match", [
    (["--selectors", "trained"], "needs --router FILE"),
    (["--selectors", "text"], "needs --router FILE"),
    (["--backend", "ort"], "use --backends"),
    (["--keep", "0.5"], "use --keeps"),
    (["--texts", "t.npz"], "add text to --selectors"),
])
def test_sweep_refuses_impossible_options_in_one_line(clips, tmp_path, capsys, extra, match):
    code = main(["eval", "--sweep", str(clips), "--out", str(tmp_path / "o"), "--image-size", "256", *extra])
    _one_line(code, capsys.readouterr().err, match)
    assert not (tmp_path / "o").exists()


def test_sweep_text_cue_needs_labels_texts_and_a_projection(clips, tmp_path, capsys):
    router = tmp_path / "router.safetensors"
    router.write_bytes(b"")
    code = main(["eval", "--sweep", str(clips), "--out", str(tmp_path / "o"), "--selectors", "text",
                 "--router", str(router), "--labels", str(tmp_path / "none.json")])
    _one_line(code, capsys.readouterr().err, "none.json not found")
    code = main(["eval", "--sweep", str(clips), "--out", str(tmp_path / "o"), "--selectors", "text",
                 "--router", str(router)])
    _one_line(code, capsys.readouterr().err, "needs --texts")


def test_a_backend_that_cannot_run_here_is_refused_not_skipped(clips, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("onnxruntime") else real(name, *a))
    code = main(["eval", "--sweep", str(clips), "--out", str(tmp_path / "o"), "--backends", "torch,ort-int8"])
    _one_line(code, capsys.readouterr().err, "--backends ort-int8 needs ONNX Runtime")
    assert not (tmp_path / "o").exists()


def test_format_table_and_plot_from_cells():
    from fastsam2.tools.sweep import ALL_TOKENS, Cell, format_table, plot_png

    cells = [Cell("ort", ALL_TOKENS, 1.0, 0.9, 0.8, 0.85, 10, 200.0),
             Cell("ort", "builtin", 0.3, 0.88, 0.8, 0.84, 10, 120.0),
             Cell("ort", "random", 0.3, 0.5, 0.4, 0.45, 10, 118.0,
                  made={"precisions": {"image_encoder": "int8", "router": "fp32"}})]
    table = format_table(cells)
    assert "| ort | builtin | 0.3 | 0.8400 | -0.0100 | +0.0000 |" in table and "| -0.4000 |" in table
    assert "int8 except router (fp32)" in table
    import io

    with Image.open(io.BytesIO(plot_png(cells))) as img:
        px = np.asarray(img.convert("RGB"))
    red = np.all(px == (214, 39, 40), axis=-1)  # the random selector's curve is drawn
    assert red.sum() > 20


@pytest.mark.slow
def test_sweep_onnx_runtime_fp32_int8_fp16(clips, tmp_path, capsys):
    """The three ONNX Runtime variants exported, quantized and converted by the sweep itself, each
    loaded by load_ort_backend at its precision; fp32 ORT scores like torch (same graphs' arithmetic)."""
    out = tmp_path / "sweep"
    argv = ["eval", "--sweep", str(clips), "--out", str(out), "--keeps", "1,0.3", "--selectors", "builtin",
            "--backends", "torch,ort,ort-int8,ort-fp16", "--image-size", "256", "--sequences", "hard_00000"]
    assert main(argv) == 0, capsys.readouterr().err
    cells = {(c["backend"], c["keep"]): c for c in json.loads((out / "sweep.json").read_text())["cells"]}
    sam2_graphs = ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder")
    for backend, precision, router in (("ort", "fp32", "fp32"), ("ort-int8", "int8", "fp32"),
                                       ("ort-fp16", "fp16", "fp16")):
        made = cells[(backend, 0.3)]["made"]
        assert [made["precisions"][g] for g in sam2_graphs] == [precision] * 4 and made["precisions"]["router"] == router
    for keep in (1.0, 0.3):  # the same masks up to pixels whose fp32 logits sit at 0: far below 0.02 of J&F
        assert cells[("ort", keep)]["jf_mean"] == pytest.approx(cells[("torch", keep)]["jf_mean"], abs=0.02)
    assert (out / "graphs" / "builtin" / "int8" / "report.json").is_file()
    assert (out / "graphs" / "builtin" / "fp16" / "report.json").is_file()


def test_track_with_a_baseline_selector(clips, tmp_path, capsys):
    out = tmp_path / "track"
    video = clips / "JPEGImages" / "hard_00000"
    code = main(["track", "--video", str(video), "--box", "10,10,100,100", "--out", str(out), "--no-overlay",
                 "--keep", "0.3", "--selector", "grid", "--image-size", "256", "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["selector"] == "grid" and report["kept_tokens_mean"] == np.ceil(0.3 * 16 * 16)
    code = main(["track", "--video", str(video), "--box", "10,10,100,100", "--out", str(tmp_path / "t2"),
                 "--keep", "0.3", "--selector", "random", "--text", "red star"])
    _one_line(code, capsys.readouterr().err, "--selector random uses none")
