"""`fastsam2 eval --run` on a tiny DAVIS-layout dataset, and check-engines without TensorRT."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fastsam2.tools.cli import main
from fastsam2.runtime.output import save_indexed_png


@pytest.fixture
def davis(bedroom, tmp_path):
    root = tmp_path / "davis"
    frames = sorted(bedroom.glob("*.jpg"))
    for s, seq in enumerate(["bed", "wall"]):
        img_dir = root / "JPEGImages" / "480p" / seq
        ann_dir = root / "Annotations" / "480p" / seq
        img_dir.mkdir(parents=True)
        for t in range(4):
            shutil.copy(frames[10 * s + t], img_dir / f"{t:05d}.jpg")
            labels = np.zeros((540, 960), np.uint8)
            labels[100 + 5 * t : 300 + 5 * t, 200:420] = 1
            labels[320:500, 600 + 3 * t : 800] = 2
            save_indexed_png(ann_dir / f"{t:05d}.png", labels)
    return root


def test_eval_run_reports_each_keep_ratio(davis, tmp_path, capsys):
    out, js = tmp_path / "eval", tmp_path / "eval.json"
    code = main(["eval", "--run", "--dataset", str(davis), "--keeps", "1.0,0.5", "--image-size", "256",
                 "--out", str(out), "--json", str(js)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(js.read_text())
    assert [r["keep_ratio"] for r in data["results"]] == [1.0, 0.5]
    first = data["results"][0]
    assert first["delta_jf"] == 0.0 and 0.0 <= first["jf_mean"] <= 1.0
    assert first["frames"] == 8 and first["fps"] > 0 and first["memory_bank_bytes_max"] > 0
    assert data["weights"] == "random-init"
    # masks were written for every frame of every sequence, per keep ratio
    for keep in ("1", "0.5"):
        for seq in ("bed", "wall"):
            assert len(list((out / f"keep_{keep}" / seq).glob("*.png"))) == 4
    # the per-keep J&F equals an independent `fastsam2 eval` of the written masks
    code = main(["eval", "--pred", str(out / "keep_1"), "--gt", str(davis / "Annotations" / "480p"),
                 "--json", str(tmp_path / "again.json")])
    assert code == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["jf_mean"] == pytest.approx(first["jf_mean"])
    assert "| 0.5 |" in captured.out


def test_eval_run_bad_dataset(tmp_path, capsys):
    code = main(["eval", "--run", "--dataset", str(tmp_path), "--image-size", "256"])
    err = capsys.readouterr().err
    assert code == 1 and "not a DAVIS-layout dataset" in err and "Traceback" not in err


def test_eval_missing_prediction_is_one_line(davis, tmp_path, capsys):
    code = main(["eval", "--pred", str(tmp_path / "empty"), "--gt", str(davis / "Annotations" / "480p" / "bed")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed: the real check runs")
def test_check_engines_without_tensorrt(tmp_path, capsys):
    code = main(["check-engines", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "tensorrt" in err and "Traceback" not in err
