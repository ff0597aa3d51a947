"""`fastsam2 track --backend ort` and `fastsam2 demo` (export + pruned ONNX Runtime tracking)."""

from __future__ import annotations

import json
import shutil

import numpy as np
from PIL import Image

from fastsam2.tools.cli import main


def test_track_with_ort_graphs_pruned(onnx_tiny512, bedroom, tmp_path, capsys):
    clip = tmp_path / "clip"
    clip.mkdir()
    for f in sorted(bedroom.glob("*.jpg"))[:4]:
        shutil.copy(f, clip / f.name)
    out = tmp_path / "out"
    code = main(["track", "--backend", "ort", "--graphs", str(onnx_tiny512), "--video", str(clip),
                 "--point", "480,300", "--keep", "0.3", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["backend"] == "ort" and report["weights"] == "random-init" and "note" in report
    assert report["kept_tokens_mean"] == np.ceil(0.3 * 32 * 32)  # tracked frames keep K tokens
    assert report["per_stage_ms_per_frame"]["router"] > 0
    assert len(list((out / "masks").glob("*.png"))) == 4


def test_track_with_missing_graphs_dir(tmp_path, bedroom, capsys):
    out = tmp_path / "out"
    code = main(["track", "--backend", "ort", "--graphs", str(tmp_path / "none"), "--video", str(bedroom),
                 "--point", "480,300", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and not out.exists()


def test_demo_with_a_config_exports_and_tracks_the_sample_clip_pruned_with_ort(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--config", "tiny", "--out", str(out), "--image-size", "256", "--max-frames", "3"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "RANDOM" in err
    assert (out / "graphs" / "manifest.json").is_file() and (out / "graphs" / "router.onnx").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["backend"] == "ort" and report["keep_ratio"] == 0.3 and report["frames"] == 3
    # ONNX Runtime ran the fused-attention variants the export wrote beside the TensorRT graphs
    assert (out / "graphs" / "image_encoder.onnx").is_file()
    assert "image_encoder.ort.onnx" in report["runtime"] and "memory_attention.ort.onnx" in report["runtime"]
    assert report["threads"]["threads"] >= 1 and report["threads"]["source"] == "idle cores"
    assert report["peak_rss_mb"] > 0
    labels = np.array(Image.open(out / "masks" / "00002.png"))
    assert labels.shape == (540, 960) and set(np.unique(labels)) <= {0, 1, 2}
    assert (out / "overlay.mp4").stat().st_size > 1000
