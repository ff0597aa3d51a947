import os

# Nothing here may reach the network: open_clip must build from random weights / local files only.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import contextlib
import io
import socket
import subprocess
import sys

import numpy as np
import pytest
from tolerances import network_atol, reduction_atol

pytest.importorskip("open_clip")
pytest.importorskip("torch")

from fastsam2.export import text as text_mod
from fastsam2.export.text import (
    NO_WEIGHTS_MESSAGE,
    TextExportError,
    auto_describe,
    crop_box,
    describe_or_none,
    encode_texts,
    load_clip,
    save_text_embeddings,
)
from fastsam2.runtime.text_embeddings import load_text_embeddings, load_vocabulary

SMALL_VOCAB = ["person", "car", "dog", "cup", "robot arm", "traffic cone", "banana", "laptop"]


def _no_network(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args}")


@pytest.fixture(scope="module")
def clip():
    """ViT-B-32 with random weights, built once; its stderr warning kept for a test."""
    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(stderr):
        mp.setattr(socket.socket, "connect", _no_network)
        model, tokenizer, preprocess = load_clip("ViT-B-32", pretrained=None)
    return model, tokenizer, preprocess, stderr.getvalue()


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _no_network)


def test_random_weights_warn_loudly(clip):
    model, _, _, warning = clip
    assert "RANDOM weights" in warning and "MEANINGLESS" in warning
    assert model.fastsam2_weights_id == "random-init"


def test_tokenizer_is_offline(clip):
    _, tokenizer, _, _ = clip
    tokens = tokenizer(["red car", "a person"])
    assert tuple(tokens.shape) == (2, 77)
    assert int(tokens[0, 0]) == 49406  # <start_of_text> from the BPE vocabulary shipped in open_clip


def test_encode_texts_shape_norm_determinism(clip):
    model, tokenizer, _, _ = clip
    texts = ["red car", "person", "a yellow robot arm"]
    emb = encode_texts(texts, model, tokenizer)
    assert emb.shape == (3, 512) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=reduction_atol(1.0, 512, safety=1.0))
    np.testing.assert_array_equal(emb, encode_texts(texts, model, tokenizer))
    # batch of 1 vs 3 through the text transformer: another GEMM order (unit vectors: magnitude 1)
    np.testing.assert_allclose(encode_texts(["person"], model, tokenizer)[0], emb[1], atol=network_atol(emb[1]))
    assert not np.allclose(emb[0], emb[1])
    with pytest.raises(TextExportError, match="no texts"):
        encode_texts([], model, tokenizer)
    with pytest.raises(TextExportError, match="non-empty"):
        encode_texts(["ok", "  "], model, tokenizer)


def test_local_checkpoint_and_errors(clip, tmp_path, capsys):
    from safetensors.torch import save_file

    model, tokenizer, _, _ = clip
    # a non-default state so that loading is visible
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    state["text_projection"] = state["text_projection"].flip(1).contiguous()
    path = tmp_path / "clip.safetensors"
    save_file(state, str(path))

    loaded, tok2, _ = load_clip("ViT-B-32", pretrained=str(path))
    assert "RANDOM" not in capsys.readouterr().err
    assert loaded.fastsam2_weights_id == text_mod.weights_id(path) and len(loaded.fastsam2_weights_id) == 16
    expected = encode_texts(["red car"], model, tokenizer)[0]
    got = encode_texts(["red car"], loaded, tok2)[0]
    ref = model.encode_text(tokenizer(["red car"])).detach().flip(1)
    np.testing.assert_allclose(got, (ref / ref.norm()).numpy()[0], atol=network_atol(got))
    assert not np.allclose(got, expected)

    img = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    described = describe_or_none(img, (8, 8, 40, 40), pretrained=path, vocabulary=SMALL_VOCAB, top_k=2)
    assert len(described) == 2 and described[0][0] in SMALL_VOCAB

    with pytest.raises(TextExportError, match="CLIP checkpoint not found"):
        load_clip("ViT-B-32", pretrained=str(tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(TextExportError, match="cannot load CLIP checkpoint"):
        load_clip("ViT-B-32", pretrained=str(bad))
    with pytest.raises(TextExportError, match="unknown open_clip model"):
        load_clip("ViT-NOPE")
    with pytest.raises(TextExportError, match="HuggingFace"):
        load_clip("roberta-ViT-B-32")


def test_save_and_runtime_load_round_trip(clip, tmp_path):
    model, tokenizer, _, _ = clip
    texts = ["red car", "person", "café au lait mug"]
    emb = encode_texts(texts, model, tokenizer)
    path = tmp_path / "texts.npz"
    save_text_embeddings(path, texts, emb, "ViT-B-32", "random-init")
    assert sorted(os.listdir(tmp_path)) == ["texts.npz"]

    loaded = load_text_embeddings(path)
    assert loaded.texts == texts and loaded.clip_model == "ViT-B-32" and loaded.weights == "random-init"
    assert loaded.dim == 512 and loaded.is_random
    np.testing.assert_array_equal(loaded.embeddings, emb)
    np.testing.assert_array_equal(loaded.get("café au lait mug"), emb[2])
    with pytest.raises(KeyError, match="available.*red car"):
        loaded.get("blue car")
    with np.load(path) as data:
        assert data["texts"].dtype.kind == "U" and data["dim"].shape == () and int(data["dim"]) == 512

    with pytest.raises(TextExportError, match="duplicate"):
        save_text_embeddings(tmp_path / "d.npz", ["a", "a"], emb[:2], "ViT-B-32", "x")
    with pytest.raises(TextExportError, match="expected embeddings"):
        save_text_embeddings(tmp_path / "d.npz", ["a"], emb, "ViT-B-32", "x")
    assert sorted(os.listdir(tmp_path)) == ["texts.npz"]


def test_save_is_atomic(tmp_path, monkeypatch):
    emb = np.eye(2, 4, dtype=np.float32)
    path = tmp_path / "t.npz"
    save_text_embeddings(path, ["a", "b"], emb, "ViT-B-32", "old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        save_text_embeddings(path, ["a", "b"], emb, "ViT-B-32", "new")
    assert sorted(os.listdir(tmp_path)) == ["t.npz"]
    assert load_text_embeddings(path).weights == "old"


def test_runtime_loader_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_text_embeddings(tmp_path / "nope.npz")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, texts=np.array(["a"]), embeddings=np.ones((1, 4), np.float32))
    with pytest.raises(ValueError, match=r"missing keys \['clip_model', 'weights', 'dim'\]"):
        load_text_embeddings(wrong)
    unnorm = tmp_path / "unnorm.npz"
    save_text_embeddings(unnorm, ["a", "b"], np.array([[1, 0], [3, 4]], np.float32), "ViT-B-32", "x")
    with pytest.raises(ValueError, match="not L2-normalized.*row 1"):
        load_text_embeddings(unnorm)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot read"):
        load_text_embeddings(garbage)


def test_runtime_loader_is_torch_free():
    code = (
        "import sys, fastsam2.runtime.text_embeddings as t; t.load_vocabulary();"
        "bad = [m for m in ('torch', 'open_clip') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_shipped_vocabulary():
    vocab = load_vocabulary()
    for name in ("person", "traffic light", "hair drier", "toothbrush", "dining table", "cell phone"):
        assert name in vocab
    assert 200 <= len(vocab) <= 260
    with open(_vocab_path(), encoding="utf-8") as f:
        raw = f.read().splitlines()
    assert len(raw) == len(set(raw)) == len(vocab)
    assert all(n == n.lower().strip() and n for n in raw)


def _vocab_path() -> str:
    from importlib.resources import files

    return str(files("fastsam2.runtime").joinpath("data/vocabulary.txt"))


def test_cli_writes_npz(clip, tmp_path, monkeypatch, capsys):
    import argparse

    model, tokenizer, preprocess, _ = clip
    monkeypatch.setattr(text_mod, "load_clip", lambda name, pretrained, device: (model, tokenizer, preprocess))
    parser = argparse.ArgumentParser(prog="fastsam2-export")
    text_mod.add_text_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "texts.npz"
    args = parser.parse_args(["text", "red car", "person", "--clip", "ViT-B-32", "-o", str(out)])
    assert args.pretrained is None and args.func is text_mod.run_text
    assert args.func(args) == 0
    assert "wrote 2 text embeddings" in capsys.readouterr().out
    loaded = load_text_embeddings(out)
    assert loaded.texts == ["red car", "person"] and loaded.embeddings.shape == (2, 512)

    from fastsam2.tools.export_cli import main

    assert main(["text", "a", "a", "-o", str(tmp_path / "dup.npz")]) == 1
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "duplicate texts" in err


def test_cli_module_missing_checkpoint_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fastsam2.tools.export_cli", "text", "red car",
         "--pretrained", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "t.npz")],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"fastsam2-export text: error: CLIP checkpoint not found: {tmp_path / 'nope.pt'}"
    assert not (tmp_path / "t.npz").exists()


def test_crop_box():
    img = np.arange(100 * 200 * 3, dtype=np.uint8).reshape(100, 200, 3)
    assert crop_box(img, None) is img
    crop = crop_box(img, (50, 20, 150, 60))  # 100x40 box grows 5 px / 2 px per side
    assert crop.shape == (44, 110, 3)
    np.testing.assert_array_equal(crop, img[18:62, 45:155])
    assert crop_box(img, (-30, -30, 10, 10)).shape == (12, 12, 3)  # clamped
    with pytest.raises(ValueError, match="outside"):
        crop_box(img, (300, 10, 400, 50))
    with pytest.raises(ValueError, match="x1 > x0"):
        crop_box(img, (50, 50, 40, 60))
    with pytest.raises(ValueError, match="uint8"):
        crop_box(img.astype(np.float32), None)


def test_auto_describe(clip, monkeypatch):
    model, tokenizer, preprocess, _ = clip
    img = np.random.default_rng(0).integers(0, 256, size=(96, 128, 3), dtype=np.uint8)
    box = (20, 10, 90, 80)
    result = auto_describe(img, box, model, preprocess, tokenizer, vocabulary=SMALL_VOCAB, top_k=3)
    assert len(result) == 3
    names, sims = [n for n, _ in result], [s for _, s in result]
    assert all(n in SMALL_VOCAB for n in names) and len(set(names)) == 3
    assert sims == sorted(sims, reverse=True) and all(-1.0 <= s <= 1.0 for s in sims)

    # deterministic, and the vocabulary embeddings are cached per model
    calls = []
    real_encode = text_mod.encode_texts
    monkeypatch.setattr(text_mod, "encode_texts", lambda *a, **k: calls.append(a) or real_encode(*a, **k))
    assert auto_describe(img, box, model, preprocess, tokenizer, vocabulary=SMALL_VOCAB, top_k=3) == result
    assert calls == []

    # default vocabulary = the shipped one (stubbed short here to keep CPU time low)
    monkeypatch.setattr(text_mod, "load_vocabulary", lambda: SMALL_VOCAB[:4])
    top = auto_describe(img, None, model, preprocess, tokenizer, top_k=10)
    assert len(top) == 4 and top[0][0] in SMALL_VOCAB[:4]

    with pytest.raises(ValueError, match="outside"):
        auto_describe(img, (500, 500, 600, 600), model, preprocess, tokenizer, vocabulary=SMALL_VOCAB)
    with pytest.raises(ValueError, match="top_k"):
        auto_describe(img, box, model, preprocess, tokenizer, vocabulary=SMALL_VOCAB, top_k=0)


def test_describe_or_none_without_weights(capsys):
    img = np.zeros((32, 32, 3), np.uint8)
    assert describe_or_none(img, (0, 0, 10, 10), pretrained=None) is None
    assert capsys.readouterr().err.strip() == NO_WEIGHTS_MESSAGE


def test_describe_command(clip, tmp_path, capsys):
    """`fastsam2-export describe` prints auto_describe's names; a bad box is one line."""
    from PIL import Image
    from safetensors.torch import save_file

    from fastsam2.tools.export_cli import main

    model = clip[0]
    path = tmp_path / "clip.safetensors"
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(path))
    image = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).save(image)
    assert main(["describe", str(image), "--box", "8,8,40,40", "--pretrained", str(path), "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    cosines = [float(line.split()[0]) for line in lines]
    assert len(lines) == 3 and cosines == sorted(cosines, reverse=True)
    assert main(["describe", str(image), "--box", "40,40,8,8", "--pretrained", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "x1 > x0" in err
