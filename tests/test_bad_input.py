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
from types import SimpleNamespace
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
    if name.startswith("names of "):  # runtime.args.name_list
        return "bogus-name"
    if name == "image_size":  # beyond the largest size any config is built at
        return "8192"
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
    "--sweep",
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
    Case("synth --size huge", M, lambda t: ["synth", "--out", str(t / "out"), "--videos", "1", "--size", "100000"],
         "must be <= 4096"),
    # options scoring --pred against --gt would silently ignore
    Case("eval --pred --gt --keep", M, lambda t: ["eval", "--pred", str(t / "masks"), "--gt", str(t / "masks"),
                                                  "--keep", "0.5"], "--keep applies to --run"),
    Case("eval --pred --gt --checkpoint", M, lambda t: ["eval", "--pred", str(t / "masks"), "--gt", str(t / "masks"),
                                                        "--checkpoint", "synthetic"], "--checkpoint applies to --run"),
    Case("eval --pred --gt --out", M, lambda t: ["eval", "--pred", str(t / "masks"), "--gt", str(t / "masks"),
                                                 "--out", str(t / "out")], "--out applies to --run"),
    Case("track --no-overlay --fps", M, lambda t: _track(t, "--no-overlay", "--fps", "10"), "writes none"),
    Case("track --selector-seed without random", M, lambda t: _track(t, "--selector-seed", "3"), "draws no random"),
    Case("track --encoder-region on graphs without the region graphs", M,
         lambda t: _track(t, "--encoder-region", "1", "--backend", "ort", "--graphs", _graphs_without_regions(t)),
         "fastsam2-export --encoder-region"),
    Case("track --encoder-refresh without --encoder-region", M, lambda t: _track(t, "--encoder-refresh", "4"),
         "add --encoder-region"),
    Case("track --encoder-region -1", M, lambda t: _track(t, "--encoder-region", "-1"), "--encoder-region"),
    Case("track --encoder-lag without --encoder-region", M, lambda t: _track(t, "--encoder-lag", "1"),
         "which masks --encoder-region follows"),
    Case("track --encoder-lag -1", M, lambda t: _track(t, "--encoder-region", "0", "--encoder-lag", "-1"),
         "--encoder-lag"),
    Case("track --selector random at keep 1.0", M, lambda t: _track(t, "--selector", "random"),
         "keep ratio below 1"),
    Case("bench --encoder-region --backend ort", M,
         lambda t: ["bench", "--backend", "ort", "--graphs", _graphs_without_regions(t), "--encoder-region", "0",
                    "--json", str(t / "b.json")], "fastsam2-export --encoder-region"),
    Case("bench --region-units beyond the grid", M,
         lambda t: ["bench", "--device", "cpu", "--image-size", "256", "--no-official", "--encoder-region", "0",
                    "--region-units", "2", "--json", str(t / "b.json")], "the grid is 2 x 2"),
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
    Case("track --checkpoint unknown name", M, lambda t: _track(t, "--checkpoint", "synthetik"),
         "shipped model: synthetic"),
    Case("track --checkpoint synthetic --config tiny", M, lambda t: _track(t, "--checkpoint", "synthetic", "--config",
                                                                           "tiny"), "comes with its own config"),
    Case("track --config unknown", M, lambda t: _track(t, "--config", "huge"), "unknown config 'huge'"),
    Case("track --config missing.yaml", M, lambda t: _track(t, "--config", str(t / "c.yaml")), "file not found"),
    Case("track --config not-a-SAM2.yaml", M,
         lambda t: _track(t, "--config", str(_written(t / "c.yaml", "model:\n  _target_: sam2.modeling.sam2_base.SAM2Base\n"))),
         "does not build a SAM2 model"),
    Case("export --config not-a-SAM2.yaml", E,
         lambda t: ["--config", str(_written(t / "c.yaml", "model:\n  _target_: collections.OrderedDict\n  x: 1\n")),
                    "--out", str(t / "out"), *FAST], "does not build a SAM2 model"),
    Case("track --config not-a-sam2-config", M, lambda t: _track(t, "--config", str(t / "a_file")), "not a sam2 config"),
    Case("export --checkpoint synthetic --config small", E,
         lambda t: ["--config", "small", "--checkpoint", "synthetic", "--out", str(t / "out")], "comes with its own"),
    Case("bench --checkpoint unknown name", M, lambda t: ["bench", "--checkpoint", "synthetik", "--json",
                                                          str(t / "b.json"), "--plot", str(t / "b.png")], "not found"),
    Case("eval --pred missing", M, lambda t: ["eval", "--pred", str(t / "nope"), "--gt", str(t / "masks")],
         "not found"),
    Case("eval --gt missing", M, lambda t: ["eval", "--pred", str(t / "masks"), "--gt", str(t / "nope")],
         "not found"),
    Case("eval --run --dataset missing", M, lambda t: ["eval", "--run", "--dataset", str(t / "nope"), *FAST],
         "not a DAVIS-layout dataset"),
    Case("eval --sweep <not a dataset>", M, lambda t: ["eval", "--sweep", str(t / "clip"), "--out", str(t / "out"),
                                                       *FAST], "not a DAVIS-layout dataset"),
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
    Case("label --prompts DIR", M, lambda t: ["label", "--videos", str(t), "--prompts", str(t / "user"),
                                              "--out", str(t / "out")], "cannot read prompts file"),
    Case("label --out <user folder>", M, lambda t: ["label", "--videos", str(t), "--prompts", str(t / "a_file"),
                                                    "--out", str(t / "user")], "was not written by fastsam2",
         keep=("user/notes.txt",), out="user"),
    Case("eval --run --out <user folder>", M, lambda t: ["eval", "--run", "--dataset", str(t / "nope"), "--out",
                                                         str(t / "user"), *FAST], "was not written by fastsam2",
         keep=("user/notes.txt",), out="user"),
    Case("text --pretrained missing", E, lambda t: ["text", "red car", "--pretrained", str(t / "clip.bin"),
                                                    "-o", str(t / "t.npz")], "not found"),
    # outputs never overwrite inputs
    Case("eval --json <a GT PNG>", M, lambda t: ["eval", "--pred", str(t / "masks"), "--gt", str(t / "masks"),
                                                 "--json", str(t / "masks" / "00001.png")], "inside the input",
         keep=("masks/00001.png",), out="masks/00001.png"),
    Case("eval --json inside --gt", M, lambda t: ["eval", "--pred", str(t / "masks"), "--gt", str(t / "masks"),
                                                  "--json", str(t / "masks" / "r.json")], "inside the input",
         out="masks/r.json"),
    Case("text -o <--pretrained file>", E, lambda t: ["text", "red car", "--pretrained", str(t / "a_file"),
                                                      "-o", str(t / "a_file")], "is the input", keep=("a_file",),
         out="a_file"),
    Case("train-router --out <an existing file that is not a router>", M,
         lambda t: ["train-router", "--config", "tiny", "--videos", str(t), "--out", str(t / "a_file")],
         "not a router file", keep=("a_file",), out="a_file"),
    Case("train-router --out <--text-projection file>", M,
         lambda t: ["train-router", "--config", "tiny", "--videos", str(t), "--text-projection", str(t / "a_file"),
                    "--out", str(t / "a_file")], "is the input", keep=("a_file",), out="a_file"),
    # damaged files
    Case("track --texts zlib-corrupt.npz", M, lambda t: _track(t, "--texts", str(_damaged_npz(t, "zlib"))),
         "damaged"),
    Case("track --texts garbage.npz", M, lambda t: _track(t, "--texts", str(_damaged_npz(t, "garbage"))),
         "not an .npz archive"),
    Case("track --texts truncated.npz", M, lambda t: _track(t, "--texts", str(_damaged_npz(t, "truncated"))),
         "cannot read text embeddings"),
    Case("track --texts pickled.npz", M, lambda t: _track(t, "--texts", str(_damaged_npz(t, "pickled"))),
         "pickled objects"),
    # limits
    Case("track --threads 999", M, lambda t: _track(t, "--threads", "999"), "give at most"),
    Case("demo --threads 999", M, lambda t: ["demo", "--threads", "999", "--out", str(t / "out")], "give at most"),
    Case("export --image-size 8192", E, lambda t: ["--config", "tiny", "--image-size", "8192", "--out", str(t / "out")],
         "multiple of 64 in 128..2048"),
    Case("track --image-size 8192", M, lambda t: _track(t, "--image-size", "8192"), "multiple of 64 in 128..2048"),
]


def _graphs_without_regions(t: Path) -> str:
    """A manifest listing the four required graphs only (what a plain fastsam2-export writes)."""
    from fastsam2.runtime.config import ModelConfig
    from fastsam2.runtime.manifest import GraphEntry, Manifest
    from fastsam2.runtime.specs import REQUIRED_GRAPHS, graph_specs

    specs = graph_specs(ModelConfig().spec_dims())
    (t / "graphs").mkdir(exist_ok=True)
    Manifest(config_name="tiny", model_config=ModelConfig(), weights="random-init", opset=17, fill="norm",
             graphs={n: GraphEntry(n, f"{n}.onnx", "0" * 64, specs[n]) for n in REQUIRED_GRAPHS}).write(t / "graphs")
    return str(t / "graphs")


def _written(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _damaged_npz(t: Path, how: str) -> Path:
    """A text-embedding .npz damaged in one of the ways numpy reports with its own exception."""
    path = t / f"{how}.npz"
    arrays = {"texts": np.array(["red car"]), "embeddings": np.ones((1, 512), np.float32) / np.sqrt(512),
              "clip_model": np.array("ViT-B-32"), "weights": np.array("random-init"), "dim": np.array(512)}
    if how == "pickled":
        arrays["texts"] = np.array(["red car"], dtype=object)
        np.savez(path, **arrays)
        return path
    np.savez_compressed(path, **arrays)
    data = bytearray(path.read_bytes())
    if how == "zlib":  # the compressed stream of the first member, past its local header
        start = data.index(b"texts.npy") + len(b"texts.npy")
        data[start + 20:start + 60] = bytes(40)
    elif how == "garbage":
        data = bytearray(b"\x00garbage" * 64)
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    return path


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
                        (other_config, "was exported from 'tiny'"),
                        (lambda m: {**m, "model_config": {**m["model_config"], "num_maskmem": 3}},
                         "num_maskmem")):
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


# -- an output that appears while a run writes ------------------------------------------------------
@pytest.mark.parametrize("noreplace", ["renameat2", "mkdir fallback"])
def test_two_runs_on_one_out_the_second_fails_and_nothing_is_replaced(tmp_path, monkeypatch, noreplace):
    from fastsam2.runtime import outdir

    if noreplace == "mkdir fallback":
        monkeypatch.setattr(outdir, "_RENAMEAT2", None)
    elif outdir._RENAMEAT2 is None:
        pytest.fail("renameat2 is missing from this Linux C library")
    out = tmp_path / "out"
    with pytest.raises(outdir.OutputError, match="appeared while this run was writing"):
        with outdir.atomic_output_dir(out, overwrite=False, kind="t") as slow:
            with outdir.atomic_output_dir(out, overwrite=False, kind="t") as fast:  # both checked: no out
                (fast / "a.txt").write_text("first to finish")
                (slow / "b.txt").write_text("second to finish")
            assert (out / "a.txt").is_file()
    assert [p.name for p in out.iterdir()] == sorted([MARKER, "a.txt"])
    # a user's folder created at out during the run, with or without --overwrite, is never replaced
    for overwrite in (False, True):
        user = tmp_path / f"user{overwrite}"
        with pytest.raises(outdir.OutputError):
            with outdir.atomic_output_dir(user, overwrite=overwrite, kind="t") as tmp:
                (tmp / "x").write_text("run")
                user.mkdir()
                (user / "notes.txt").write_text("mine")
        assert (user / "notes.txt").read_text() == "mine" and not (user / "x").exists()
        assert_nothing_beside(user)
    assert_nothing_beside(out)


def test_overwrite_never_removes_a_folder_that_replaced_the_checked_output(tmp_path):
    from fastsam2.runtime import outdir

    out = tmp_path / "out"
    with outdir.atomic_output_dir(out, overwrite=False, kind="t") as tmp:
        (tmp / "old.txt").write_text("old run")
    with pytest.raises(outdir.OutputError, match="changed during the run"):
        with outdir.atomic_output_dir(out, overwrite=True, kind="t") as tmp:  # checked: a fastsam2 output
            (tmp / "new.txt").write_text("new run")
            shutil.rmtree(out)
            out.mkdir()
            (out / "notes.txt").write_text("mine")
    assert (out / "notes.txt").read_text() == "mine"
    assert_nothing_beside(out)
    # the resumable outputs (eval --run, label) take the same care
    with pytest.raises(outdir.OutputError, match="not a fastsam2 output"):
        outdir.open_resumable_dir(out, kind="t", overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_track_keeps_a_folder_created_at_out_during_the_run(work, monkeypatch, capsys):
    import fastsam2.runtime.output as output

    real = output.save_indexed_png
    out = work / "out"

    def someone_else_writes_out(path, labels):
        if not out.exists():
            out.mkdir()
            (out / "notes.txt").write_text("mine")
        real(path, labels)

    monkeypatch.setattr(output, "save_indexed_png", someone_else_writes_out)
    code, err = call(fastsam2_cli.main, _track(work, "--no-overlay"), capsys)
    assert_one_line_error(code, err, "appeared while this run was writing")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert_nothing_beside(out)


# -- every manifest field a backend runs on is checked against the graphs --------------------------
def _edited_value(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, (list, tuple)):
        return [v + 0.01 for v in value]
    raise TypeError(value)


def test_every_model_config_field_of_the_manifest_is_checked(onnx_tiny512, tmp_path):
    from dataclasses import fields

    from fastsam2.runtime.backends.ort import load_ort_backend
    from fastsam2.runtime.config import ModelConfig
    from fastsam2.runtime.manifest import ManifestError

    load_ort_backend(onnx_tiny512, graphs=["memory_encoder"])  # unedited: opens
    d = tmp_path / "edited"
    d.mkdir()
    for f in onnx_tiny512.iterdir():
        os.symlink(f, d / f.name)
    (d / "manifest.json").unlink()
    original = json.loads((onnx_tiny512 / "manifest.json").read_text())
    for field in fields(ModelConfig):
        data = json.loads(json.dumps(original))
        data["model_config"][field.name] = _edited_value(data["model_config"][field.name])
        (d / "manifest.json").write_text(json.dumps(data))
        with pytest.raises(ManifestError) as info:
            load_ort_backend(d, graphs=["memory_encoder"])
        # fields that size the graphs are named by the interface check, the others by the graphs' copy
        assert field.name in str(info.value) or (field.name == "config_name" and "was exported from" in
                                                 str(info.value)), (field.name, info.value)


# -- frames, damaged files, memory, threads ----------------------------------------------------------
def test_dangling_frame_link_is_a_bad_frame(work):
    from fastsam2.runtime.frames import BadFrameError, open_frames

    clip = work / "clip"
    (clip / "00001.jpg").unlink()
    (clip / "00001.jpg").symlink_to(work / "gone.jpg")
    with open_frames(clip) as src, pytest.raises(BadFrameError, match="00001"):
        list(src)
    with open_frames(clip, on_bad_frame="skip") as src, pytest.warns(UserWarning, match="skipping"):
        names = [f.name for f in src]
    assert names == ["00000", "00002"] and src.skipped == [1]


@pytest.mark.parametrize("how", ["garbage", "truncated", "zlib", "pickled", "missing member"])
def test_damaged_constants_npz_is_one_line(tmp_path, how):
    from fastsam2.runtime.manifest import ExportDir, GraphLoadError

    path = _damaged_npz(tmp_path, how if how != "missing member" else "truncated")
    if how == "missing member":  # a valid central directory over a cut member
        np.savez(path, a=np.zeros(1000, np.float32))
        data = path.read_bytes()
        end = data.index(b"PK\x01\x02")  # the central directory: keep it, cut the member before it
        path.write_bytes(data[:200] + data[end:])
    path.rename(tmp_path / "constants.npz")
    with pytest.raises(GraphLoadError, match="cannot read the export's model constants"):
        ExportDir(tmp_path, None).constants()


@pytest.mark.parametrize("arrays, match", [({"a": np.zeros(2, np.float32)}, "'no_mem_embed' missing"),
                                            ({"no_mem_embed": np.zeros(3, np.float32)}, "3 values, expected")])
def test_constants_npz_without_the_tracker_constants_is_one_line(tmp_path, arrays, match):
    from fastsam2.runtime.config import ModelConfig
    from fastsam2.runtime.manifest import ExportDir, GraphLoadError

    full = {"no_mem_embed": np.zeros(8, np.float32), "no_obj_ptr": np.zeros(8, np.float32),
            "mask_downsample_weight": np.zeros((1, 1, 4, 4), np.float32),
            "mask_downsample_bias": np.zeros(1, np.float32)}
    np.savez(tmp_path / "constants.npz", **(arrays if "a" in arrays else {**full, **arrays}))
    manifest = SimpleNamespace(model_config=SimpleNamespace(hidden_dim=8))
    with pytest.raises(GraphLoadError, match=match):
        ExportDir(tmp_path, manifest).constants()


def test_out_of_memory_is_one_line_with_the_size(work, monkeypatch, capsys):
    import fastsam2.export.models as models

    def no_memory(*a, **k):  # hydra wraps torch's allocator error in its own exception
        raise RuntimeError("Error in call to target 'sam2.modeling.sam2_base.SAM2Base':\nRuntimeError('[enforce "
                           "fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to "
                           "allocate 68719476736 bytes.')")

    monkeypatch.setattr(models, "build_sam2", no_memory)
    code, err = call(fastsam2_cli.main, _track(work, "--image-size", "2048"), capsys)
    assert_one_line_error(code, err, "out of memory building 'tiny' at image size 2048: RuntimeError('[enforce fail")
    assert "you tried to allocate 68719476736 bytes" in err
    assert not (work / "out").exists()
    assert_nothing_beside(work / "out")

    def bare():
        raise MemoryError()

    assert cli_args.run_cli("prog", bare) == 1
    assert capsys.readouterr().err.strip() == "prog: error: out of memory: MemoryError"


def test_label_ray_without_ray_creates_no_out(work, monkeypatch, capsys):
    prompts = work / "prompts.json"
    prompts.write_text(json.dumps({"videos": {"clip": {"objects": {"1": {"points": [[10, 10]]}}}}}))
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code, err = call(fastsam2_cli.main, ["label", "--videos", str(work), "--prompts", str(prompts), "--out",
                                         str(work / "out"), "--ray", *FAST], capsys)
    assert_one_line_error(code, err, "--ray needs Ray")
    assert not (work / "out").exists()


def test_failed_int8_calibration_leaves_nothing(work, monkeypatch, capsys):
    import types

    import fastsam2.calibration.ort_quant as ort_quant
    import fastsam2.export.models as models
    import fastsam2.export.torch_backend as torch_backend
    import fastsam2.export.trt.plan as plan_mod
    from fastsam2.runtime import outdir

    out = work / "out"
    with outdir.atomic_output_dir(out, overwrite=False, kind="export") as tmp:
        (tmp / "image_encoder.onnx").write_bytes(b"graph")

    def record_some(backend, frames, calib_dir, **kw):  # feeds for one graph only
        (Path(calib_dir) / "image_encoder").mkdir(parents=True)
        np.savez(Path(calib_dir) / "image_encoder" / "0.npz", x=np.zeros(1))

    graphs = [types.SimpleNamespace(name=n) for n in ("image_encoder", "memory_attention")]
    monkeypatch.setattr(plan_mod, "make_plan", lambda *a, **k: types.SimpleNamespace(graphs=graphs, precision="int8"))
    monkeypatch.setattr(models, "build_sam2", lambda *a, **k: None)
    monkeypatch.setattr(torch_backend, "build_torch_backend", lambda model: None)
    monkeypatch.setattr(ort_quant, "record_feeds", record_some)
    args = export_cli.build_parser().parse_args(["--config", "tiny", "--out", str(out), "--trt", "--int8",
                                                 "--calib", str(work / "clip"), "--calib-frames", "2"])
    assert export_cli._build_engines(None, out, args) == 1
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if ": error: " in x)
    assert "no recorded feeds for ['memory_attention']" in line and "--only" not in line
    options = {o for a in export_cli.build_parser()._actions for o in a.option_strings}
    named = {w.strip("(),") for w in line.split() if w.startswith(("--", "(--"))}
    assert named and named <= options, named - options
    assert not out.exists()
    assert_nothing_beside(out)


def test_eval_run_full_disk_or_one_frame_leaves_no_output(work, monkeypatch, capsys):
    import fastsam2.runtime.output as output

    root = work / "davis"
    frames = root / "JPEGImages" / "480p" / "seq"
    annos = root / "Annotations" / "480p" / "seq"
    frames.mkdir(parents=True)
    annos.mkdir(parents=True)
    shutil.copy(work / "clip" / "00000.jpg", frames / "00000.jpg")
    labels = np.zeros((540, 960), np.uint8)
    labels[100:300, 200:420] = 1
    output.save_indexed_png(annos / "00000.png", labels)
    argv = ["eval", "--run", "--dataset", str(root), "--keeps", "1.0", "--out", str(work / "out"), *FAST]
    code, err = call(fastsam2_cli.main, argv, capsys)  # one frame: J&F has no frame to score
    assert_one_line_error(code, err, "at least 3 are needed")
    assert not (work / "out").exists()
    for i in (1, 2):
        shutil.copy(work / "clip" / f"0000{i}.jpg", frames / f"0000{i}.jpg")
        output.save_indexed_png(annos / f"0000{i}.png", labels)

    def full(path, labels):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(output, "save_indexed_png", full)
    code, err = call(fastsam2_cli.main, argv, capsys)
    assert_one_line_error(code, err, "No space left on device")
    assert not (work / "out").exists()


# -- SIGTERM (timeout, systemd, Docker, Kubernetes) ends every long command like Ctrl-C -----------
def _python_main(module: str) -> list[str]:
    return [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main(sys.argv[1:]))"]


def _small_davis(work: Path) -> Path:
    root = work / "davis"
    for seq in ("a", "b"):
        frames, annos = root / "JPEGImages" / "480p" / seq, root / "Annotations" / "480p" / seq
        frames.mkdir(parents=True)
        annos.mkdir(parents=True)
        for i in range(3):
            shutil.copy(work / "clip" / f"0000{i}.jpg", frames / f"0000{i}.jpg")
            labels = np.zeros((540, 960), np.uint8)
            labels[100:300, 200:420] = 1
            Image.fromarray(labels).save(annos / f"0000{i}.png")
    return root


def _label_prompts(work: Path) -> Path:
    path = work / "prompts.json"
    path.write_text(json.dumps({"videos": {"clip": {"objects": {"1": {"points": [[480, 300]]}}}}}))
    return path


SIGNAL_RUNS = {  # command -> (argv builder, the prog its one line names)
    "track": (lambda w: _python_main("fastsam2.tools.cli") + _track(w, "--no-overlay"), "fastsam2 track"),
    "export": (lambda w: _python_main("fastsam2.tools.export_cli") + ["--config", "tiny", "--out", str(w / "out"),
                                                                      *FAST], "fastsam2-export"),
    "eval --run": (lambda w: _python_main("fastsam2.tools.cli") + [
        "eval", "--run", "--dataset", str(_small_davis(w)), "--keeps", "1.0", "--out", str(w / "out"), *FAST],
        "fastsam2 eval"),
    "label": (lambda w: _python_main("fastsam2.tools.cli") + [
        "label", "--videos", str(w), "--prompts", str(_label_prompts(w)), "--out", str(w / "out"), *FAST],
        "fastsam2 label"),
    "demo": (lambda w: _python_main("fastsam2.tools.cli") + ["demo", "--out", str(w / "out"), "--max-frames", "3",
                                                             *FAST], "fastsam2 demo"),
}


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie has ended; reaping it is its new parent's business


def _scratch_left(*roots: Path) -> list[str]:
    return [str(p) for r in roots for p in r.rglob("*") if ".partial-" in p.name or p.name.startswith(
        "fastsam2_demo_graphs_")]


def _start_and_wait_for_scratch(argv: list[str], work: Path, tmpdir: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmpdir)}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if any(".partial-" in p.name for root in (work, tmpdir) for p in root.rglob(".*")):
            return proc
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"the run never started writing (exit {proc.poll()}): {proc.stderr.read()[-2000:]}")


@pytest.mark.parametrize("command", list(SIGNAL_RUNS))
def test_sigterm_is_one_line_exit_143_and_leaves_no_scratch(command, work):
    tmpdir = work / "tmp"
    tmpdir.mkdir()
    argv, prog = SIGNAL_RUNS[command]
    proc = _start_and_wait_for_scratch(argv(work), work, tmpdir)
    children = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == f"{prog}: terminated", err[-3000:]
    assert not (work / "out").exists()
    assert not _scratch_left(work, tmpdir)
    deadline = time.monotonic() + 30  # multiprocessing's resource tracker ends when its pipe closes
    while time.monotonic() < deadline and not all(_gone(c) for c in children):
        time.sleep(0.1)
    left = [" ".join(Path(f"/proc/{c}/cmdline").read_text().split("\0"))[:120] for c in children if not _gone(c)]
    assert not left, f"child processes outlived the command: {left}"


def test_demo_export_child_dies_with_a_killed_parent(work):
    tmpdir = work / "tmp"
    tmpdir.mkdir()
    proc = _start_and_wait_for_scratch(SIGNAL_RUNS["demo"][0](work), work, tmpdir)
    children = _children(proc.pid)
    assert children, "the demo exports in a child process"
    proc.kill()  # SIGKILL: the parent can clean nothing up
    proc.wait(timeout=60)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (all(_gone(c) for c in children) and not _scratch_left(tmpdir)):
        time.sleep(0.1)
    assert all(_gone(c) for c in children), "the export child outlived its killed parent"
    assert not _scratch_left(tmpdir), _scratch_left(tmpdir)


_SWALLOWING_EXPORT = """
import sys, time
from pathlib import Path

def export(scratch, started):
    (Path(scratch) / "graphs.partial-1").mkdir()
    Path(started).touch()
    end = time.monotonic() + 3
    while time.monotonic() < end:
        try:
            time.sleep(0.05)
        except KeyboardInterrupt:
            pass  # as a __del__ or a C callback does: the death signal is printed and dropped

if __name__ == "__main__":
    from fastsam2.tools.cli import export_in_subprocess
    export_in_subprocess(export, sys.argv[1], sys.argv[2], scratch=Path(sys.argv[1]))
"""


def test_export_child_that_drops_the_death_signal_still_removes_the_scratch(tmp_path):
    """The parent killed, the child's SIGTERM swallowed where exceptions are ignored: the export runs
    to its end, its answer finds the pipe closed, and the child still removes the scratch and exits."""
    script, scratch, started = tmp_path / "parent.py", tmp_path / "scratch", tmp_path / "started"
    script.write_text(_SWALLOWING_EXPORT)
    scratch.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(scratch), str(started)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), proc.stderr.read()
    children = _children(proc.pid)
    assert children
    proc.kill()
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (all(_gone(c) for c in children) and not scratch.exists()):
        time.sleep(0.1)
    assert all(_gone(c) for c in children), "the export child outlived its killed parent"
    assert not scratch.exists(), sorted(p.name for p in scratch.rglob("*"))


def test_signals_deferred_delivers_sigterm_after_the_block():
    """A SIGTERM that lands while a child is handed its work is held until the hand-over is done,
    then unwinds like any other (export_in_subprocess starts its child inside this block)."""
    from fastsam2.runtime.args import Terminated, sigterm_as_interrupt, signals_deferred

    done = []
    with pytest.raises(Terminated):
        with sigterm_as_interrupt():
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # a handler runs between bytecodes: it had every chance to
                done.append("block finished")
    assert done == ["block finished"]


def test_a_sigterm_during_an_import_is_delivered_after_it(tmp_path, monkeypatch):
    """import_deferring_signals: a SIGTERM that lands while a module initialises (for an extension
    module, inside C++ that would abort on the exception) unwinds only once the import is done."""
    from fastsam2.runtime.args import Terminated, import_deferring_signals, sigterm_as_interrupt

    (tmp_path / "slow_module_under_test.py").write_text(
        "import os, signal, time\nos.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(0.05)\nFINISHED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(Terminated):
        with sigterm_as_interrupt():
            import_deferring_signals("slow_module_under_test")
    assert sys.modules["slow_module_under_test"].FINISHED
