"""The runtime install (the wheel + onnxruntime: no torch, no OpenCV) tracks with default options, and
what needs more says which extra in one line before any model is loaded."""

from __future__ import annotations

import json
import textwrap

import numpy as np
from PIL import Image
from test_layout import BLOCK_HEAVY, run_py

BLOCK_RUNTIME = BLOCK_HEAVY.replace('"tensorrt"}', '"tensorrt", "cv2", "scipy", "onnx"}')


def cli(argv: list, module: str = "fastsam2.tools.cli") -> str:
    return BLOCK_RUNTIME + textwrap.dedent(
        f"""
        from {module} import main
        code = main({argv!r})
        assert not any(m.split(".")[0] in BLOCKED for m in sys.modules), "a blocked module was imported"
        raise SystemExit(code)
        """
    )


def test_block_list_holds_opencv():
    r = run_py(BLOCK_RUNTIME + "import cv2")
    assert r.returncode != 0 and "blocked heavy import: cv2" in r.stderr


def test_track_with_default_options_without_torch_and_opencv(onnx_tiny512, bedroom, tmp_path):
    clip = tmp_path / "clip"
    clip.mkdir()
    for f in sorted(bedroom.glob("*.jpg"))[:3]:
        (clip / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "out"
    r = run_py(cli(["track", "--backend", "ort", "--graphs", str(onnx_tiny512), "--video", str(clip),
                    "--point", "480,300", "--threads", "1", "--out", str(out)]))
    assert r.returncode == 0, r.stderr
    assert "no OpenCV" in r.stderr and "RANDOM" in r.stderr
    top = np.asarray(Image.open(sorted((out / "overlay").glob("*.jpg"))[0]))[:20]
    assert top.min() < 40 and top.max() > 180  # the random-weights mark on the overlay itself
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == 3 and report["fill_hole_area"] == 8 and report["overlay"] == "overlay"
    overlay = sorted((out / "overlay").glob("*.jpg"))
    assert len(overlay) == 3 and Image.open(overlay[0]).size == (960, 540)
    labels = np.array(Image.open(out / "masks" / "00000.png"))
    assert labels.shape == (540, 960) and labels.max() == 1


def test_video_file_without_opencv_is_one_line_before_loading(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00" * 64)
    r = run_py(cli(["track", "--backend", "ort", "--graphs", str(tmp_path / "missing"), "--video", str(video),
                    "--point", "1,1", "--out", str(tmp_path / "out")]))
    err = r.stderr.strip()
    assert r.returncode == 1 and len(err.splitlines()) == 1, err
    assert "pip install fastsam2[video]" in err and not (tmp_path / "out").exists()


def test_export_help_and_refusal_without_torch(tmp_path):
    r = run_py(cli(["--help"], "fastsam2.tools.export_cli"))
    assert r.returncode == 0 and "--config" in r.stdout, r.stderr
    r = run_py(cli(["--config", "tiny", "--out", str(tmp_path / "g")], "fastsam2.tools.export_cli"))
    err = r.stderr.strip()
    assert r.returncode == 1 and len(err.splitlines()) == 1 and "fastsam2[export]" in err, err
