"""`fastsam2 label`: per-video JSON prompts (points, boxes, first-frame masks), one folder per video,
the same masks as `fastsam2 track` with the same prompts, reruns reuse, bad prompt files are one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from fastsam2.tools.cli import main
from fastsam2.runtime.output import save_indexed_png

pytestmark = pytest.mark.usefixtures("single_thread")
MODEL = ["--image-size", "256"]


@pytest.fixture
def videos(bedroom, tmp_path):
    root = tmp_path / "videos"
    for name, first in (("clicks", 0), ("masked", 9)):
        (root / name).mkdir(parents=True)
        for f in sorted(bedroom.glob("*.jpg"))[first : first + 3]:
            shutil.copy(f, root / name / f.name)
    labels = np.zeros((540, 960), np.uint8)
    labels[100:300, 200:420] = 3
    save_indexed_png(tmp_path / "first.png", labels)
    prompts = {"videos": {
        "clicks": {"objects": {"1": {"points": [[480, 300], [470, 250]], "labels": [1, 0]},
                               "2": {"box": [100, 100, 300, 400]}}},
        "masked": {"objects": {"3": {"mask": "first.png"}}},
    }}
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    return root, tmp_path / "prompts.json"


def test_label_writes_each_video_like_track(videos, tmp_path, capsys):
    root, prompts = videos
    out = tmp_path / "labels"
    assert main(["label", "--videos", str(root), "--prompts", str(prompts), "--out", str(out), *MODEL]) == 0
    summary = json.loads((out / "label.json").read_text())
    assert [v["name"] for v in summary["videos"]] == ["clicks", "masked"]
    assert summary["job"]["videos_run"] == 2 and summary["job"]["frames_run"] == 6
    for name, ids in (("clicks", {1, 2}), ("masked", {3})):
        pngs = sorted((out / name).glob("*.png"))
        assert len(pngs) == 3
        from PIL import Image

        seen = set(np.unique(np.array(Image.open(pngs[0])))) - {0}
        assert seen <= ids and seen  # the prompted objects, and only them
        assert json.loads((out / name / "video.json").read_text())["objects"] == sorted(ids)
    # the same prompts through `fastsam2 track` give the same masks
    track_out = tmp_path / "track"
    assert main(["track", "--video", str(root / "clicks"), "--point", "480,300", "--point", "470,250,0",
                 "--box", "100,100,300,400", "--obj-id", "1", "--obj-id", "1", "--obj-id", "2",
                 "--out", str(track_out), "--no-overlay", *MODEL]) == 0
    for png in sorted((track_out / "masks").glob("*.png")):
        assert (out / "clicks" / png.name).read_bytes() == png.read_bytes()
    # a rerun reuses both videos
    capsys.readouterr()
    assert main(["label", "--videos", str(root), "--prompts", str(prompts), "--out", str(out), *MODEL]) == 0
    assert json.loads((out / "label.json").read_text())["job"]["videos_reused"] == 2
    assert "reused (finished earlier)" in capsys.readouterr().err


@pytest.mark.parametrize("videos_json, message", [
    ('{"videos": {"clicks": {"objects": {"1": {"box": [1, 2, 3]}}}}}', "videos.clicks.objects.1.box: expected 4 numbers"),
    ('{"videos": {"clicks": {"objects": {"0": {"box": [1, 2, 3, 4]}}}}}', "object id '0' is not an integer in 1..255"),
    ('{"videos": {"clicks": {"objects": {"1": {"points": [[2000, 5]]}}}}}', "(2000, 5) is outside the 960x540 first frame"),
    ('{"videos": {"clicks": {"objects": {"1": {"points": [[5, 5]], "labels": [2]}}}}}', "expected one 1 (positive) or 0"),
    ('{"videos": {"clicks": {"objects": {"1": {"mask": "first.png"}}}}}', "has no pixel equal to the object id 1"),
    ('{"videos": {"clicks": {"objects": {"1": {"mask": "nope.png"}}}}}', "file not found"),
    ('{"videos": {"clicks": {"objects": {"1": {"click": [1, 2]}}}}}', "unknown key 'click'"),
    ('{"videos": {"gone": {"objects": {"1": {"box": [1, 2, 3, 4]}}}}}', "video 'gone': neither"),
    ('{"videos": {"clicks": {"objects": {}}}}', "expected at least one object"),
    ('{"videos": {"clicks": {"text": "", "objects": {"1": {"box": [1, 2, 3, 4]}}}}}', "text: expected a non-empty string"),
    ('{"clips": {}}', 'expected {"videos"'),
    ('{"videos": {"clicks": {"text": "a bed", "objects": {"1": {"box": [1, 2, 3, 4]}}}}}', "give --texts FILE.npz"),
    ('{"videos": ', "not valid JSON"),
])
def test_label_bad_prompts_is_one_line(videos, tmp_path, capsys, videos_json, message):
    root, prompts = videos
    prompts.write_text(videos_json)
    out = tmp_path / "labels"
    code = main(["label", "--videos", str(root), "--prompts", str(prompts), "--out", str(out), *MODEL,
                 "--keep", "0.5"])
    err = capsys.readouterr().err
    assert code == 1 and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # nothing written
