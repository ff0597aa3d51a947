"""Every command line, every bad input: one line on stderr, exit 1, no traceback, nothing left behind.

Two layers. By construction: every option of every fastsam2 command that takes a typed value is fed
a value its type refuses (a number that is not finite or out of range, an unknown choice), so a new
option gets its bad-input test the day it is added; string options must appear in the table below
or in ``NO_BAD_VALUE`` with the reason. Then the table: the invocations users tried that ended in a
traceback, a silent wrong result or lost data, each checked for the one-line error and for what is
left at and beside the output path.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from fastsam2.runtime import args as cli_args
from fastsam2.tools import cli as fastsam2_cli
from fastsam2.tools import export_cli
from fastsam2.runtime.outdir import MARKER

FAST = ["--image-size", "256"]


def call(main: Callable, argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, match: str) -> None:
    assert code == 1, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    assert match in errors[0], errors[0]


def assert_nothing_beside(out: Path) -> None:
    """No scratch entries (.NAME.partial-*, .old-*, .tmp-*, .probe-*) next to ``out``."""
    left = [p.name for p in out.parent.glob(f".{out.name}.*")]
    assert not left, f"left beside {out}: {left}"


# -- by construction: every typed option refuses a bad value --------------------------------------
def _bad_value(action: argparse.Action) -> str | None:
    t = action.type
    if action.choices is not None:
        return "bogus-choice"
    if t is int:
        return "1.5"
    if t is cli_args.finite_float or t is float:
        return "nan"
    if t is cli_args.keep_ratios:
        return "0.5,1.5"
    if t is fastsam2_cli.parse_xy:
        return "10,inf"
    name = getattr(t, "__name__", "")
    if name.startswith(("int >", "float >")):  # bounded(): the bound itself or below is refused
        return "-1"
    if name == "_ints":
        return "1"
    if name == "_depths":
        return "0,-1"
    if name == "_dtypes":
        return "float16"
    if name == "compute_capability":
        return "sm90"
    return None


def _parsers() -> list[tuple[str, Callable, list[str], argparse.ArgumentParser]]:
    """(name, main, argv prefix, parser) for every command and subcommand."""
    found = []
    top = fastsam2_cli.build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        found.append((f"fastsam2 {name}", fastsam2_cli.main, [name], parser))
    found.append(("fastsam2-export", export_cli.main, [], export_cli.build_parser()))
    text = argparse.ArgumentParser()
    from fastsam2.export.text import add_text_parser

    found.append(("fastsam2-export text", export_cli.main, ["text"],
                  add_text_parser(text.add_subparsers())))
    return found


def _options():
    for name, main, prefix, parser in _parsers():
        for action in parser._actions:
            if action.option_strings and action.nargs != 0 and not isinstance(action, argparse._HelpAction):
                yield name, main, prefix, action


TYPED = [(n, m, p, a) for n, m, p, a in _options() if _bad_value(a) is not None]


@pytest.mark.parametrize("name,main,prefix,action", TYPED, ids=[f"{n} {a.option_strings[-1]}" for n, _, _, a in TYPED])
def test_every_typed_option_refuses_a_bad_value(name, main, prefix, action, capsys):
    opt = action.option_strings[-1]
    code, err = call(main, [*prefix, opt, _bad_value(action)], capsys)
    assert_one_line_error(code, err, opt)


# String options whose values no parser can check; each is either a case of the table below
# (TABLE_COVERS) or listed here with the reason it has no bad value of its own.
NO_BAD_VALUE = {
    "--text": "free text (an unknown one is an error of --texts, tested there)",
    "--sequences": "names, checked against the dataset (tests/test_evaluation.py)",
    "--config": "checked by name in every command (unknown config: tests/test_onnx_export.py, test_cli_track.py)",
    "--clip": "an open_clip model name (tests/test_text.py)",
    "--output": "fastsam2-export text -o: written through the same atomic file path as eval --json",
    "--prompts": "a JSON file checked field by field (tests/test_label.py: 13 bad prompt files)",
    "--ray": "a cluster address; an unreachable one is one line (tools/distributed.py), a local cluster is "
             "tested in tests/test_distributed.py",
}
TABLE_COVERS = {
    "--out", "--overwrite", "--video", "--device", "--backend", "--graphs", "--checkpoint", "--texts",
    "--json", "--pred", "--gt", "--dataset", "--frames", "--calib", "--router", "--point",
    "--videos", "--labels", "--text-projection", "--onnx", "--plot", "--frames-dir", "--pretrained",
}


def test_every_string_option_has_a_bad_input_case():
    untested = sorted({a.option_strings[-1] for _, _, _, a in _options() if _bad_value(a) is None}
                      - set(NO_BAD_VALUE) - TABLE_COVERS)
    assert not untested, f"string options without a bad-input case: {untested}"


# -- the table --------------------------------------------------------------------------------------
@dataclass
class Case:
    """argv(tmp) builds the invocation; ``match`` is in its one error line; ``keep`` are files that
    must still exist afterwards; ``out`` (relative to tmp) must not exist unless it did before."""

    id: str
    main: Callable
    argv: Callable[[Path], list[str]]
    match: str
    keep: tuple[str, ...] = ()
    out: str = "out"


@pytest.fixture
def work(tmp_path, bedroom, monkeypatch) -> Path:
    """tmp_path holding: clip/ (3 real frames), user/ (a user's folder), a_file, and the cwd elsewhere."""
    clip = tmp_path / "clip"
    clip.mkdir()
    for f in sorted(bedroom.glob("*.jpg"))[:3]:
        shutil.copy(f, clip / f.name)
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "link").symlink_to(user)
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(3):
        Image.fromarray(np.ones((8, 8), np.uint8)).save(masks / f"{i:05d}.png")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "thesis.tex").write_text("mine")
    monkeypatch.chdir(cwd)
    return tmp_path


def _has_cuda_provider() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def _track(t: Path, *extra: str, video: str | None = None, out: str | None = None) -> list[str]:
    return ["track", "--video", video or str(t / "clip"), "--point", "480,300",
            "--out", out or str(t / "out"), *FAST, *extra]


M, E = fastsam2_cli.main, export_cli.main
CASES = [
    # data loss: --overwrite may only replace what fastsam2 wrote
    Case("track --out . --overwrite", M, lambda t: _track(t, "--overwrite", out="."), "working directory",
         keep=("cwd/thesis.tex",), out="cwd"),
    Case("track --out cwd-parent --overwrite", M, lambda t: _track(t, "--overwrite", out=str(t)),
         "working directory", keep=("cwd/thesis.tex", "clip/00000.jpg"), out="."),
    Case("track --out <input frames> --overwrite", M, lambda t: _track(t, "--overwrite", out=str(t / "clip")),
         "holds the input", keep=("clip/00000.jpg",), out="clip"),
    Case("track --out <user folder> --overwrite", M, lambda t: _track(t, "--overwrite", out=str(t / "user")),
         "not written by fastsam2", keep=("user/notes.txt",), out="user"),
    Case("demo --out .", M, lambda t: ["demo", "--out", "."], "working directory", keep=("cwd/thesis.tex",),
         out="cwd"),
    Case("export --out <user folder> --overwrite", E,
         lambda t: ["--config", "tiny", "--out", str(t / "user"), "--overwrite"], "not written by fastsam2",
         keep=("user/notes.txt",), out="user"),
    # output paths
    Case("track --out FILE --overwrite", M, lambda t: _track(t, "--overwrite", out=str(t / "a_file")), "is a file",
         keep=("a_file",), out="a_file"),
    Case("export --out FILE --overwrite", E, lambda t: ["--config", "tiny", "--out", str(t / "a_file"), "--overwrite"],
         "is a file", keep=("a_file",), out="a_file"),
    Case("track --out FILE/sub", M, lambda t: _track(t, out=str(t / "a_file" / "sub")), "is not a directory",
         keep=("a_file",), out="a_file/sub"),
    Case("export --out FILE/sub", E, lambda t: ["--config", "tiny", "--out", str(t / "a_file" / "sub")],
         "is not a directory", out="a_file/sub"),
    Case("track --out symlink --overwrite", M, lambda t: _track(t, "--overwrite", out=str(t / "link")),
         "symbolic link", keep=("user/notes.txt", "link"), out="link"),
    Case("eval --json DIR", M, lambda t: ["eval", "--pred", str(t / "masks"), "--gt", str(t / "masks"),
                                          "--json", str(t / "user")], "is a directory", out="user"),
    # devices and backends
    Case("track --device bogus", M, lambda t: _track(t, "--device", "bogus"), "not a device"),
    Case("track --device cuda:99", M, lambda t: _track(t, "--device", "cuda:99"), "CUDA"),
    Case("track --backend trt", M, lambda t: _track(t, "--backend", "trt", "--graphs", str(t / "clip")),
         "CUDA"),
    Case("track --backend ort without --graphs", M, lambda t: _track(t, "--backend", "ort"),
         "needs --graphs"),
    Case("track --backend ort --device bogus", M,
         lambda t: _track(t, "--backend", "ort", "--graphs", str(t / "clip"), "--device", "bogus"),
         "runs on cpu, cuda or cuda:N"),
    # the CPU onnxruntime refuses in one line; with onnxruntime-gpu the next check (the export) does
    Case("track --backend ort --device cuda", M,
         lambda t: _track(t, "--backend", "ort", "--graphs", str(t / "clip"), "--device", "cuda"),
         "needs onnxruntime-gpu" if not _has_cuda_provider() else "no manifest.json"),
    Case("track --graphs with torch", M, lambda t: _track(t, "--graphs", str(t / "clip")), "--graphs is for"),
    Case("track --graphs not an export", M,
         lambda t: ["track", "--video", str(t / "clip"), "--point", "1,1", "--out", str(t / "out"),
                    "--backend", "ort", "--graphs", str(t / "clip")], "no manifest.json"),
    # prompts and numbers
    Case("track --point X,Y,0.7", M, lambda t: _track(t, "--point", "10,10,0.7"), "the label is 1"),
    Case("track --point X,Y,nan", M, lambda t: _track(t, "--point", "10,10,nan"), "finite"),
    Case("track --point outside", M, lambda t: _track(t, "--point", "5000,10"), "outside"),
    # missing files
    Case("track --video missing", M, lambda t: _track(t, video=str(t / "nope")), "video not found"),
    Case("track --texts missing.npz", M, lambda t: _track(t, "--texts", str(t / "missing.npz")), "file not found"),
    Case("track --router missing", M, lambda t: _track(t, "--router", str(t / "r.safetensors")), "file not found"),
    Case("track --checkpoint missing", M, lambda t: _track(t, "--checkpoint", str(t / "c.pt")), "file not found"),
    Case("eval --pred missing", M, lambda t: ["eval", "--pred", str(t / "nope"), "--gt", str(t / "masks")],
         "not found"),
    Case("eval --gt missing", M, lambda t: ["eval", "--pred", str(t / "masks"), "--gt", str(t / "nope")],
         "not found"),
    Case("eval --run --dataset missing", M, lambda t: ["eval", "--run", "--dataset", str(t / "nope"), *FAST],
         "not a DAVIS-layout dataset"),
    Case("export --frames missing", E, lambda t: ["--config", "tiny", "--out", str(t / "out"), "--validate",
                                                   "--frames", str(t / "nope")], "--frames"),
    Case("export --calib missing", E, lambda t: ["--config", "tiny", "--out", str(t / "out"), "--trt", "--int8",
                                                  "--calib", str(t / "nope")], "--calib"),
    Case("export --router missing", E, lambda t: ["--config", "tiny", "--out", str(t / "out"),
                                                   "--router", str(t / "r.safetensors")], "not found"),
    Case("export --checkpoint missing", E, lambda t: ["--config", "tiny", "--out", str(t / "out"),
                                                       "--checkpoint", str(t / "c.pt")], "not found"),
    Case("train-router --videos missing", M, lambda t: ["train-router", "--config", "tiny", "--videos", str(t / "nope"),
                                                        "--out", str(t / "out")], "not found"),
    Case("train-router --labels missing", M, lambda t: ["train-router", "--config", "tiny", "--videos", str(t), "--out",
                                                        str(t / "out"), "--labels", str(t / "l.json"),
                                                        "--texts", str(t / "t.npz")], "not found"),
    Case("train-router --text-projection missing", M,
         lambda t: ["train-router", "--config", "tiny", "--videos", str(t), "--out", str(t / "out"),
                    "--text-projection", str(t / "p.safetensors")], "not found"),
    Case("fit-text-projection --dataset missing", M,
         lambda t: ["fit-text-projection", "--config", "tiny", "--dataset", str(t / "nope"), "--labels", str(t / "l.json"),
                    "--texts", str(t / "t.npz"), "--out", str(t / "out")], "not"),
    Case("check-engines --onnx missing", M, lambda t: ["check-engines", str(t / "nope"), "--onnx", str(t)],
         "not"),
    Case("bench --frames-dir missing", M, lambda t: ["bench", "--frames-dir", str(t / "nope"), "--json",
                                                     str(t / "b.json"), "--plot", str(t / "b.png")], "not found"),
    Case("label --videos missing", M, lambda t: ["label", "--videos", str(t / "nope"), "--prompts", str(t / "p.json"),
                                                 "--out", str(t / "out")], "not found"),
    Case("label --out <user folder>", M, lambda t: ["label", "--videos", str(t), "--prompts", str(t / "a_file"),
                                                    "--out", str(t / "user")], "was not written by fastsam2",
         keep=("user/notes.txt",), out="user"),
    Case("eval --run --out <user folder>", M, lambda t: ["eval", "--run", "--dataset", str(t / "nope"), "--out",
                                                         str(t / "user"), *FAST], "was not written by fastsam2",
         keep=("user/notes.txt",), out="user"),
    Case("text --pretrained missing", E, lambda t: ["text", "red car", "--pretrained", str(t / "clip.bin"),
                                                    "-o", str(t / "t.npz")], "not found"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_invocation(case: Case, work: Path, capsys):
    out = (work / case.out).resolve() if case.out != "." else work
    existed = out.exists() or out.is_symlink()
    code, err = call(case.main, case.argv(work), capsys)
    assert_one_line_error(code, err, case.match)
    for rel in case.keep:
        assert (work / rel).exists() or (work / rel).is_symlink(), f"{rel} was removed"
    if not existed:
        assert not out.exists(), f"{out} was written"
    assert_nothing_beside(out)
    assert "partial" not in err


# -- cases that need more than argv -----------------------------------------------------------------
def test_read_only_output_location(work, monkeypatch, capsys):
    import tempfile

    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)  # what a read-only mount answers, even to root
    for main, argv in ((fastsam2_cli.main, _track(work)),
                       (export_cli.main, ["--config", "tiny", "--out", str(work / "out")]),
                       (fastsam2_cli.main, ["eval", "--pred", str(work / "masks"), "--gt", str(work / "masks"),
                                            "--json", str(work / "r.json")])):
        code, err = call(main, argv, capsys)
        assert_one_line_error(code, err, "Read-only file system")
    assert not (work / "out").exists()


def test_checks_run_before_the_model_is_built(work, monkeypatch, capsys):
    import fastsam2.export.models as models

    def no_model(*a, **k):
        raise AssertionError("the model was built before the inputs were checked")

    monkeypatch.setattr(models, "build_sam2", no_model)
    bad = work / "bad"
    bad.mkdir()
    (bad / "00000.jpg").write_bytes(b"not a jpeg")
    for argv, match in ((["--config", "tiny", "--out", str(work / "out"), "--validate", "--frames", str(bad)], "--frames"),
                        (["--config", "tiny", "--out", str(work / "a_file" / "x")], "not a directory")):
        code, err = call(export_cli.main, argv, capsys)
        assert_one_line_error(code, err, match)


def test_ctrl_c_is_one_line_and_130(work, monkeypatch, capsys):
    import fastsam2.export.onnx_export as onnx_export

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_export, "export_graphs", interrupted)
    code, err = call(export_cli.main, ["--config", "tiny", "--out", str(work / "out"), *FAST], capsys)
    assert code == 130 and "Traceback" not in err and err.strip().splitlines()[-1] == "fastsam2-export: interrupted"
    assert not (work / "out").exists()


def test_write_failure_names_the_output_not_the_scratch_dir(work, monkeypatch, capsys):
    import fastsam2.runtime.output as output

    def full(path, labels):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(output, "save_indexed_png", full)
    out = work / "new" / "deeper" / "out"
    code, err = call(fastsam2_cli.main, _track(work, out=str(out)), capsys)
    assert_one_line_error(code, err, "No space left on device")
    assert str(out) in err and "partial" not in err
    assert not (work / "new").exists(), "the folders made for the output were left behind"


def test_duplicate_frame_names_are_refused(work, capsys):
    clip = work / "clip"
    Image.open(clip / "00001.jpg").save(clip / "00001.png")
    code, err = call(fastsam2_cli.main, _track(work), capsys)
    assert_one_line_error(code, err, "are both frame '00001'")
    assert not (work / "out").exists()


def test_nan_checkpoint_is_refused(work, capsys):
    import torch

    from fastsam2.export.models import build_sam2

    state = build_sam2("tiny", image_size=256, quiet=True).state_dict()
    state["sam_mask_decoder.iou_prediction_head.layers.0.weight"][0, 0] = float("nan")
    torch.save({"model": state}, work / "nan.pt")
    code, err = call(fastsam2_cli.main, _track(work, "--checkpoint", str(work / "nan.pt")), capsys)
    assert_one_line_error(code, err, "NaN or infinite values")
    assert not (work / "out").exists()


@pytest.fixture
def broken_mp4(work) -> Path:
    """A 48-frame mp4 with 4 KB zeroed in its middle: OpenCV stops decoding partway."""
    from fastsam2.runtime.frames import require_cv2

    cv2 = require_cv2("test")
    path = work / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 24, (160, 96))
    rng = np.random.default_rng(0)
    for i in range(48):
        writer.write(rng.integers(0, 255, (96, 160, 3), dtype=np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4096] = bytes(4096)
    path.write_bytes(bytes(data))
    return path


def test_truncated_video_follows_on_bad_frame(broken_mp4, capsys):
    from fastsam2.runtime.frames import BadFrameError, open_frames

    with open_frames(broken_mp4) as src, pytest.raises(BadFrameError, match="cannot be decoded"):
        for _ in src:
            pass
    with open_frames(broken_mp4, on_bad_frame="skip") as src, pytest.warns(UserWarning, match="skipping"):
        names = [f.index for f in src]
    assert src.skipped and len(names) + len(src.skipped) == 48
    assert not set(names) & set(src.skipped)


def test_eval_run_with_mismatched_annotations_leaves_nothing(work, capsys):
    root = work / "davis"
    frames = root / "JPEGImages" / "480p" / "seq"
    annos = root / "Annotations" / "480p" / "seq"
    frames.mkdir(parents=True)
    annos.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(frames / f"{i:05d}.jpg")
    for i in range(3):  # one annotation short
        Image.fromarray(np.ones((64, 96), np.uint8)).save(annos / f"{i:05d}.png")
    code, err = call(fastsam2_cli.main, ["eval", "--run", "--dataset", str(root), "--out", str(work / "out"), *FAST],
                     capsys)
    assert_one_line_error(code, err, "do not match")
    assert not (work / "out").exists()
    assert_nothing_beside(work / "out")


@pytest.mark.parametrize("content", [b"", b"this is text, not a PNG", "truncated"])
def test_eval_unreadable_png(work, content, capsys):
    gt, pred = work / "gt", work / "pred"
    for d in (gt, pred):
        d.mkdir()
        for i in range(3):
            Image.fromarray(np.ones((8, 8), np.uint8)).save(d / f"{i:05d}.png")
    bad = pred / "00001.png"
    bad.write_bytes(bad.read_bytes()[:40] if content == "truncated" else content)
    code, err = call(fastsam2_cli.main, ["eval", "--pred", str(pred), "--gt", str(gt)], capsys)
    assert_one_line_error(code, err, "cannot read the PNG")


def test_manifest_problems_are_one_line(onnx_tiny512, work, capsys):
    def edited(edit) -> Path:
        d = work / f"graphs{len(list(work.glob('graphs*')))}"
        shutil.copytree(onnx_tiny512, d)
        data = json.loads((d / "manifest.json").read_text())
        (d / "manifest.json").write_text(json.dumps(edit(data)))
        return d

    def drop_encoder(m):
        del m["graphs"]["memory_encoder"]
        return m

    def other_config(m):
        m["config_name"] = m["model_config"]["config_name"] = "small"
        return m

    for edit, match in ((drop_encoder, "no memory_encoder graph listed"),
                        (lambda m: [m], "not a fastsam2 manifest"),
                        (lambda m: {**m, "graphs": list(m["graphs"])}, "not a fastsam2 manifest"),
                        (other_config, "was exported from 'tiny'")):
        argv = ["track", "--video", str(work / "clip"), "--point", "1,1", "--out", str(work / "out"),
                "--backend", "ort", "--graphs", str(edited(edit))]
        code, err = call(fastsam2_cli.main, argv, capsys)
        assert_one_line_error(code, err, match)
    # contradictions between the options and the export
    for extra, match in ((["--config", "small"], "are 'tiny'"), (["--image-size", "256"], "take 512"),
                         (["--checkpoint", str(work / "a_file")], "fixed when the graphs were exported")):
        argv = ["track", "--video", str(work / "clip"), "--point", "1,1", "--out", str(work / "out"),
                "--backend", "ort", "--graphs", str(onnx_tiny512), *extra]
        code, err = call(fastsam2_cli.main, argv, capsys)
        assert_one_line_error(code, err, match)
    assert not (work / "out").exists()


# -- runs killed with SIGKILL -----------------------------------------------------------------------
def test_sigkilled_run_leaves_nothing_the_next_run_keeps(work):
    out = work / "out"
    cmd = [sys.executable, "-c", "import sys; from fastsam2.tools.cli import main; sys.exit(main(sys.argv[1:]))",
           *_track(work, "--no-overlay")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 300
        while not list(work.glob(".out.partial-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        partial = list(work.glob(".out.partial-*"))
        assert partial, "the run never started writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists() and all(p.exists() for p in partial)  # what SIGKILL leaves
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    assert not list(work.glob(".out.*")), "the stale partial directory survived the rerun"
    assert (out / MARKER).is_file() and len(list((out / "masks").glob("*.png"))) == 3


# -- one error of each room, through every command line -------------------------------------------
def _room_errors():
    from fastsam2.calibration.qdq import QuantizeError
    from fastsam2.export.models import ModelLoadError
    from fastsam2.runtime.backends.trt_metadata import EngineMismatchError
    from fastsam2.runtime.frames import FrameSourceError
    from fastsam2.tools.video_jobs import VideoJobError

    return {
        "runtime": FrameSourceError("video not found: clip.mp4"),
        "runtime.backends": EngineMismatchError("engine built for sm_87, this GPU is sm_90: rebuild with "
                                                "fastsam2-export --trt"),
        "calibration": QuantizeError("calibration reader gave no feeds"),
        "export": ModelLoadError("checkpoint x.pt does not fit config 'tiny'"),
        "tools": VideoJobError("video a: made with other settings"),
    }


def _jetson(name: str):
    import importlib.util

    key = f"jetson_{name}_for_errors"
    if key not in sys.modules:  # dataclasses resolve their module through sys.modules
        path = Path(__file__).resolve().parents[1] / "jetson" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


CLI_ENTRIES = {  # command line -> (module holding its run function, run function name, argv)
    "fastsam2 track": (lambda: fastsam2_cli, "run_track", ["track", "--video", "v", "--point", "1,1", "--out", "o"]),
    "fastsam2-export": (lambda: export_cli, "run_export", ["--config", "tiny", "--out", "o"]),
    "jetson/build_engines.py": (lambda: _jetson("build_engines"), "run", ["--graphs", "g", "--out", "o"]),
    "jetson/benchmark.py": (lambda: _jetson("benchmark"), "run", ["--source", "s"]),
    "jetson/print_trtexec_commands.py": (lambda: _jetson("print_trtexec_commands"), "run", ["--graphs", "g"]),
}


@pytest.mark.parametrize("room", list(_room_errors()))
@pytest.mark.parametrize("cli", list(CLI_ENTRIES))
def test_every_cli_reports_every_room_error_in_one_line(cli, room, monkeypatch, capsys):
    module_of, attr, argv = CLI_ENTRIES[cli]
    module = module_of()
    error = _room_errors()[room]

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(module, attr, failing)
    code, err = call(module.main, argv, capsys)
    assert_one_line_error(code, err, str(error))
