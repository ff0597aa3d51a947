"""`eval --run --ray` on a local two-worker Ray cluster: the same masks and scores as the single-process
run, and a job that survives workers killed mid-video and right after a commit (injected failures:
the worker kills itself with os._exit when it finds a marker file, see video_jobs._injected_fault)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastsam2.tools.cli import main
from fastsam2.runtime.output import save_indexed_png
from fastsam2.tools.video_jobs import FAULT_AFTER_COMMIT, FAULT_DIR_ENV, FAULT_MID_VIDEO, PARTIAL_TAG

pytestmark = pytest.mark.usefixtures("single_thread")  # the actors run one torch thread too

SEQS = ("bed", "desk", "wall")
FRAMES = 3  # the fewest DAVIS scoring allows (first and last frame are not scored)
# one intra-op thread on both sides: by default the single process takes the cores idle at its start
# and a Ray actor its one CPU, and another split of a float reduction can flip a pixel at threshold
# (seen on a fresh 2-core machine: one pixel of 1.5 M)
COMMON = ["eval", "--run", "--keeps", "1.0", "--threads", "1", "--image-size", "256"]  # (image size last)


def require_ray():
    """ray, or a skip on a developer machine without it; in CI (CI=true) a missing ray fails."""
    try:
        import ray
    except ImportError:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("ray is not installed but CI must run the Ray tests: pip install -e '.[all]'")
        pytest.skip("ray is not installed (pip install 'fastsam2[ray]')")
    return ray


@pytest.fixture(scope="module")
def davis3(bedroom, tmp_path_factory):
    root = tmp_path_factory.mktemp("davis3")
    frames = sorted(bedroom.glob("*.jpg"))
    for s, seq in enumerate(SEQS):
        img_dir = root / "JPEGImages" / "480p" / seq
        ann_dir = root / "Annotations" / "480p" / seq
        img_dir.mkdir(parents=True)
        for t in range(FRAMES):
            shutil.copy(frames[7 * s + t], img_dir / f"{t:05d}.jpg")
            labels = np.zeros((540, 960), np.uint8)
            labels[100 + 5 * t : 300 + 5 * t, 200 + 40 * s : 420] = 1
            if s != 1:
                labels[320:500, 600 + 3 * t : 800] = 2
            save_indexed_png(ann_dir / f"{t:05d}.png", labels)
    return root


@pytest.fixture(scope="module")
def single_process(davis3, tmp_path_factory):
    """The reference: `eval --run` without Ray."""
    out = tmp_path_factory.mktemp("single") / "eval"
    js = out.parent / "eval.json"
    assert main([*COMMON, "--dataset", str(davis3), "--out", str(out), "--json", str(js)]) == 0
    return out, json.loads(js.read_text())


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray cluster with two CPU slots; its workers see the fault-marker folder (set before
    ray.init so that the raylet and every worker it starts inherit it)."""
    ray = require_ray()
    faults = tmp_path_factory.mktemp("faults")
    os.environ[FAULT_DIR_ENV] = str(faults)
    ray.init(num_cpus=2, include_dashboard=False)
    yield faults
    ray.shutdown()
    os.environ.pop(FAULT_DIR_ENV, None)


def video_files(out) -> dict[str, bytes]:
    """{relative path: bytes} of every mask PNG under out."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def scores(data: dict) -> dict:
    return {
        "keeps": [(r["keep_ratio"], r["jf_mean"], r["j_mean"], r["f_mean"], r["frames"]) for r in data["results"]],
        "videos": [(v["name"], v["keep"], v["frames"], v["jf_mean"], v["j_mean"], v["f_mean"]) for v in data["videos"]],
    }


def run_ray(davis3, out, capsys) -> tuple[dict, str]:
    js = out.parent / f"{out.name}.json"
    code = main([*COMMON, "--dataset", str(davis3), "--out", str(out), "--json", str(js),
                 "--ray", "--workers", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(js.read_text()), captured.err


def assert_each_video_once(out) -> None:
    keep_dir = out / "keep_1"
    assert sorted(p.name for p in keep_dir.iterdir()) == ["bed", "desk", "eval.json", "wall"]  # no partials
    for seq in SEQS:
        files = sorted(p.name for p in (keep_dir / seq).iterdir())
        assert files == [f"{t:05d}.png" for t in range(FRAMES)] + ["video.json"], (seq, files)
    assert not [p for p in out.rglob(f"*{PARTIAL_TAG}*")]


def test_ray_run_equals_single_process(davis3, single_process, ray_cluster, tmp_path, capsys):
    ref_out, ref = single_process
    out = tmp_path / "ray"
    data, err = run_ray(davis3, out, capsys)
    assert video_files(out) == video_files(ref_out)  # every mask PNG, byte for byte
    assert scores(data) == scores(ref)  # J&F per keep and per video, exactly
    assert json.loads((out / "keep_1" / "eval.json").read_text()) == json.loads(
        (ref_out / "keep_1" / "eval.json").read_text())
    pids = {v["worker"]["pid"] for v in data["videos"]}
    assert len(pids) == 2 and os.getpid() not in pids  # both actors worked; the driver did not
    assert data["ray"]["workers"] == 2 and data["job"]["workers"] == 2
    assert data["job"]["videos_run"] == 3 and data["job"]["frames_run"] == 3 * FRAMES
    assert "[3/3 videos]" in err and "frames/s" in err and "ETA" in err
    assert_each_video_once(out)


def test_ray_job_survives_killed_workers(davis3, single_process, ray_cluster, tmp_path, capsys):
    ref_out, ref = single_process
    faults = ray_cluster
    # one worker dies after writing its video's first frame, one right after committing a video
    for point in (FAULT_MID_VIDEO, FAULT_AFTER_COMMIT):
        (faults / point).touch()
    out = tmp_path / "ray_faults"
    data, _ = run_ray(davis3, out, capsys)
    assert not list(faults.iterdir())  # both failures were injected (each marker is consumed by a kill)
    assert_each_video_once(out)
    assert video_files(out) == video_files(ref_out)
    assert scores(data)["keeps"] == scores(ref)["keeps"]
    job = data["job"]
    # the video whose worker died after the commit came back from its retry as already written
    assert job["videos_reused"] == 1 and job["videos_run"] == 2
    # and at least the killed mid-video one was redone by a restarted actor
    assert job["restarted_workers_used"] >= 1
    # a rerun reuses all three and rewrites nothing
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    again, _ = run_ray(davis3, out, capsys)
    assert again["job"]["videos_reused"] == 3 and again["job"]["frames_run"] == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == before
    assert scores(again)["keeps"] == scores(ref)["keeps"]


def test_rerun_with_other_settings_is_refused(davis3, single_process, tmp_path, capsys):
    ref_out, _ = single_process
    out = tmp_path / "copy"
    shutil.copytree(ref_out, out)
    code = main([*COMMON[:-1], "320", "--dataset", str(davis3), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "other settings (image_size differ)" in err and "Traceback" not in err
    assert video_files(out) == video_files(ref_out)


@pytest.mark.parametrize("extra, message", [
    (["--ray", "--workers", "3"], "--workers 3: the Ray cluster has room for 2"),
    (["--workers", "2"], "--workers and --cpus-per-worker need --ray"),
])
def test_bad_worker_counts_are_one_line(davis3, ray_cluster, tmp_path, capsys, extra, message):
    out = tmp_path / "never"
    code = main([*COMMON, "--dataset", str(davis3), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err
    assert not out.exists()


BLOCK_RAY = textwrap.dedent(
    """
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "ray":
                raise ImportError(f"blocked: {name}")
            return None
    sys.meta_path.insert(0, Block())
    """
)


def test_without_ray_the_cli_lists_every_command_and_explains_ray(tmp_path):
    code = BLOCK_RAY + textwrap.dedent(
        f"""
        import fastsam2.tools.distributed, fastsam2.tools.video_jobs, fastsam2.tools.label
        from fastsam2.tools.cli import build_parser, main
        print(build_parser().format_help())
        raise SystemExit(main(["eval", "--run", "--dataset", {str(tmp_path)!r}, "--ray"]))
        """
    )
    (tmp_path / "JPEGImages" / "480p" / "a").mkdir(parents=True)
    (tmp_path / "Annotations" / "480p" / "a").mkdir(parents=True)
    save_indexed_png(tmp_path / "Annotations" / "480p" / "a" / "00000.png", np.ones((8, 8), np.uint8))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    for cmd in ("track", "demo", "eval", "bench", "label", "check-engines"):
        assert cmd in r.stdout
    assert r.returncode == 1 and "--ray needs Ray: pip install 'fastsam2[ray]'" in r.stderr
    assert "Traceback" not in r.stderr
