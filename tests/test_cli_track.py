"""`fastsam2 track`: outputs, and every bad input ends in one line, exit 1, nothing left behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastsam2.tools.cli import main

FAST = ["--image-size", "256"]  # tiny model at a small input: these tests check plumbing


def run(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code: int, err: str, match: str, out: Path) -> None:
    assert code == 1
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    assert match in errors[0], errors[0]
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.partial-*")), "half-written output left behind"


@pytest.fixture
def clip5(bedroom, tmp_path) -> Path:
    d = tmp_path / "clip5"
    d.mkdir()
    for f in sorted(bedroom.glob("*.jpg"))[:5]:
        shutil.copy(f, d / f.name)
    return d


def test_track_writes_masks_overlay_report(clip5, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run(
        ["track", "--video", str(clip5), "--point", "480,300", "--box", "100,100,300,400",
         "--obj-id", "3", "--obj-id", "7", "--out", str(out), *FAST],
        capsys,
    )
    assert code == 0, err
    assert "RANDOMLY INITIALISED" in err  # random weights are announced loudly
    pngs = sorted((out / "masks").glob("*.png"))
    assert [p.stem for p in pngs] == [f"{i:05d}" for i in range(5)]
    labels = np.array(Image.open(pngs[2]))
    assert Image.open(pngs[2]).mode == "P" and labels.shape == (540, 960)
    assert set(np.unique(labels)) <= {0, 3, 7} and len(np.unique(labels)) > 1
    assert (out / "overlay.mp4").stat().st_size > 1000
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == 5 and report["objects"] == [3, 7]
    assert report["weights"] == "random-init"
    for stage in ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder"):
        assert report["per_stage_ms_per_frame"][stage] > 0
    assert report["ms_per_frame"]["mean_ms"] > 0 and report["rss_mb"]


def test_missing_video(tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run(["track", "--video", str(tmp_path / "nope"), "--point", "1,1", "--out", str(out)], capsys)
    assert_one_line_error(code, err, "video not found", out)


def test_unreadable_video_file(tmp_path, capsys):
    bogus = tmp_path / "clip.mp4"
    bogus.write_bytes(b"this is not a video")
    out = tmp_path / "out"
    code, err = run(["track", "--video", str(bogus), "--point", "1,1", "--out", str(out)], capsys)
    assert_one_line_error(code, err, "clip.mp4", out)


@pytest.fixture
def clip_with_bad_frame(clip5) -> Path:
    (clip5 / "00002.jpg").write_bytes((clip5 / "00002.jpg").read_bytes()[:2000])  # truncated
    return clip5


def test_bad_frame_in_the_middle_stops(clip_with_bad_frame, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run(
        ["track", "--video", str(clip_with_bad_frame), "--point", "480,300", "--out", str(out), *FAST],
        capsys,
    )
    assert_one_line_error(code, err, "00002", out)


def test_bad_frame_in_the_middle_skip(clip_with_bad_frame, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="00002"):
        code, err = run(
            ["track", "--video", str(clip_with_bad_frame), "--point", "480,300", "--out", str(out),
             "--on-bad-frame", "skip", *FAST],
            capsys,
        )
    assert code == 0, err
    assert sorted(p.stem for p in (out / "masks").glob("*.png")) == ["00000", "00001", "00003", "00004"]
    assert json.loads((out / "report.json").read_text())["skipped_frames"] == [2]


@pytest.mark.parametrize(
    "prompt, match",
    [(["--point", "961,10"], "outside the 960x540 frame"),
     (["--box", "10,10,1200,300"], "outside the 960x540 frame"),
     (["--point=-1,10"], "outside")],
)
def test_prompt_outside_frame(clip5, tmp_path, capsys, prompt, match):
    out = tmp_path / "out"
    code, err = run(["track", "--video", str(clip5), *prompt, "--out", str(out)], capsys)
    assert_one_line_error(code, err, match, out)


def test_unknown_config(clip5, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run(["track", "--video", str(clip5), "--point", "1,1", "--config", "huge", "--out", str(out)], capsys)
    assert_one_line_error(code, err, "unknown config 'huge'", out)


def test_checkpoint_of_another_size(clip5, tmp_path, capsys):
    import torch

    from fastsam2.export.models import build_sam2

    small = build_sam2("small", image_size=256, quiet=True)
    ckpt = tmp_path / "sam2.1_hiera_small.pt"
    torch.save({"model": small.state_dict()}, ckpt)
    out = tmp_path / "out"
    code, err = run(
        ["track", "--video", str(clip5), "--point", "1,1", "--config", "tiny", "--checkpoint", str(ckpt),
         "--out", str(out), *FAST],
        capsys,
    )
    assert_one_line_error(code, err, "does not fit config 'tiny' (it looks like 'small')", out)


def test_checkpoint_not_a_sam2_file(clip5, tmp_path, capsys):
    ckpt = tmp_path / "weights.pt"
    ckpt.write_bytes(b"garbage")
    out = tmp_path / "out"
    code, err = run(
        ["track", "--video", str(clip5), "--point", "1,1", "--checkpoint", str(ckpt), "--out", str(out)],
        capsys,
    )
    assert_one_line_error(code, err, "cannot read checkpoint", out)


def test_existing_output_dir_refused_unless_overwrite(clip5, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    code, err = run(["track", "--video", str(clip5), "--point", "480,300", "--out", str(out)], capsys)
    assert code == 1 and "already exists" in err and "Traceback" not in err
    # --overwrite replaces only what fastsam2 wrote: a user's folder is refused, not emptied
    code, err = run(["track", "--video", str(clip5), "--point", "480,300", "--out", str(out), "--overwrite"],
                    capsys)
    assert code == 1 and "was not written by fastsam2" in err and "Traceback" not in err
    assert (out / "keep.txt").read_text() == "user data"
    out2 = tmp_path / "out2"
    argv = ["track", "--video", str(clip5), "--point", "480,300", "--out", str(out2), "--max-frames", "2", *FAST]
    assert run(argv, capsys)[0] == 0
    (out2 / "masks" / "00000.png").unlink()
    assert json.loads((out2 / "report.json").read_text())["fill_hole_area"] == 8  # SAM2VideoPredictor's
    code, err = run([*argv, "--overwrite", "--max-frames", "3", "--fill-hole-area", "0"], capsys)
    assert code == 0, err
    assert len(list((out2 / "masks").glob("*.png"))) == 3
    assert json.loads((out2 / "report.json").read_text())["fill_hole_area"] == 0
