"""fastsam2 train-router (self-distillation, exact resume) and fit-text-projection, end to end on a few
bedroom frames with random SAM2 weights at image size 256.

Random weights: the object-score head gets +5 (build_sam2's object_score_bias) or every mask is
empty; the masks are then large meaningless blobs, which is enough to exercise the pipeline."""

from __future__ import annotations

import json
import shutil
import types

import numpy as np
import pytest
import torch

from fastsam2.export.router import TokenRouter, load_router
from fastsam2.tools.cli import main
from fastsam2.runtime.router import read_router_file
from fastsam2.tools.train_router import SampleStore, TrainConfig, router_loss, train_mlp


ARGS = ["--config", "tiny", "--image-size", "256", "--frames-per-video", "3", "--objects-per-video", "1",
        "--batch-size", "2", "--ckpt-every", "2", "--lr", "0.05",
        "--max-area", "0.97"]  # random weights: masks are frame-filling blobs


@pytest.fixture(scope="module")
def videos(bedroom, tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    (root / "bed").mkdir()
    for f in sorted(bedroom.glob("*.jpg"))[:3]:
        shutil.copy(f, root / "bed" / f.name)
    return root


def mlp_tensors(path):
    return {k: v.copy() for k, v in read_router_file(path).mlp.items()}


def test_train_router_end_to_end_and_exact_resume(videos, tmp_path, capsys):
    full = tmp_path / "full.safetensors"
    assert main(["train-router", "--videos", str(videos), "--out", str(full), "--steps", "6", *ARGS]) == 0
    err = capsys.readouterr().err
    assert "final loss" in err and "2 samples" in err and "2 frames" in err
    assert (tmp_path / "full.safetensors.ckpt").is_file()
    trained = mlp_tensors(full)
    default = {f"router.{k}": v.numpy() for k, v in TokenRouter(image_size=256).mlp.state_dict().items()}
    assert any(not np.array_equal(trained[k], default[k]) for k in default)
    shim = types.SimpleNamespace(image_size=256, backbone_stride=16, hidden_dim=256, mem_dim=64)
    loaded = load_router(full, shim)  # loads back into a router
    assert np.array_equal(loaded.mlp[2].weight.detach().numpy(), trained["router.2.weight"])

    part = tmp_path / "part.safetensors"
    assert main(["train-router", "--videos", str(videos), "--out", str(part), "--steps", "6", "--stop-after", "3",
                 *ARGS]) == 0
    assert "stopped at step 3 of 6" in capsys.readouterr().err
    assert not part.exists() and (tmp_path / "part.safetensors.ckpt").is_file()
    # other options than the checkpoint's are refused
    assert main(["train-router", "--videos", str(videos), "--out", str(part), "--steps", "7", "--resume", *ARGS]) == 1
    assert "differs in: steps" in capsys.readouterr().err  # refused before the teacher runs
    assert main(["train-router", "--videos", str(videos), "--out", str(part), "--steps", "6", "--resume", *ARGS]) == 0
    resumed = mlp_tensors(part)
    for k in trained:
        assert np.array_equal(resumed[k], trained[k]), k


def synthetic_store(n=10, hw=64, seed=0):
    rng = np.random.default_rng(seed)
    store = SampleStore(max_bytes=4 * (7 * hw * 4 + hw))  # 4 in memory, the rest spilled to disk
    for _ in range(n):
        target = (rng.random(hw) < 0.2).astype(np.uint8)
        cues = rng.random((7, hw)).astype(np.float32)
        cues[5] = target * 0.8 + 0.1 * cues[5]  # the "near" cue predicts the target
        store.add(cues, target)
    return store


def test_train_mlp_resume_is_exact_and_spills_to_disk(tmp_path):
    store = synthetic_store()
    assert store.spilled == 6 and np.array_equal(store.get(7)[1], store.get(7)[1])
    cfg = dict(steps=12, lr=0.05, batch_size=3, listwise=0.1, seed=1, ckpt_every=5)
    fp = {"data": store.digest.hexdigest()}
    a = TokenRouter(image_size=128)
    res_a = train_mlp(a, store, TrainConfig(**cfg), tmp_path / "a.ckpt", fp, resume=False)
    b = TokenRouter(image_size=128)
    train_mlp(b, store, TrainConfig(**cfg, stop_after=6), tmp_path / "b.ckpt", fp, resume=False)
    c = TokenRouter(image_size=128)  # a fresh process would start from the defaults, too
    res_c = train_mlp(c, store, TrainConfig(**cfg), tmp_path / "b.ckpt", fp, resume=True)
    assert res_c["step"] == 12 and res_c["loss"] == res_a["loss"]
    for pa, pc in zip(a.mlp.parameters(), c.mlp.parameters()):
        assert torch.equal(pa, pc)
    assert res_a["pos_weight"] == pytest.approx((store.tokens - store.positives) / store.positives)
    store.close()


def test_router_loss_terms():
    targets = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    good = torch.tensor([[5.0, -5.0, -5.0, -5.0], [-5.0] * 4])
    bad = -good
    lg, bg, wg = router_loss(good, targets, pos_weight=3.0, listwise=1.0)
    lb, bb, wb = router_loss(bad, targets, pos_weight=3.0, listwise=1.0)
    assert lg < lb and bg < bb and wg < wb
    assert torch.isclose(lg, bg + wg)
    # the empty-target sample has no listwise term: only row 0 counts
    assert torch.isclose(wg, -torch.log_softmax(good[0], 0)[0])


def test_train_router_bad_input(tmp_path, capsys):
    out = str(tmp_path / "r.safetensors")
    assert main(["train-router", "--videos", str(tmp_path / "nope"), "--config", "tiny", "--out", out]) == 1
    assert "videos folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["train-router", "--videos", str(tmp_path / "empty"), "--config", "tiny", "--out", out]) == 1
    assert "no videos in" in capsys.readouterr().err
    (tmp_path / "v" / "a").mkdir(parents=True)
    (tmp_path / "v" / "a" / "0.jpg").write_bytes(b"")
    assert main(["train-router", "--videos", str(tmp_path / "v"), "--config", "huge", "--out", out]) == 1
    err = capsys.readouterr().err
    assert "unknown config 'huge'" in err and len(err.strip().splitlines()) == 1


def make_davis(root, bedroom, frames=2):
    """A DAVIS-layout dataset: 2 bedroom frames of one sequence with two synthetic objects."""
    from PIL import Image

    img_dir, ann_dir = root / "JPEGImages" / "480p" / "bed", root / "Annotations" / "480p" / "bed"
    img_dir.mkdir(parents=True)
    ann_dir.mkdir(parents=True)
    for i, f in enumerate(sorted(bedroom.glob("*.jpg"))[:frames]):
        im = Image.open(f).convert("RGB")
        im.save(img_dir / f"{i:05d}.jpg")
        ids = np.zeros((im.height, im.width), np.uint8)
        ids[100:300, 200 + 10 * i : 500] = 1
        ids[350:500, 600:900] = 2
        ids[0:3, 0:3] = 3  # smaller than a token: skipped
        png = Image.fromarray(ids, mode="L").convert("P")
        png.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
        png.save(ann_dir / f"{i:05d}.png")
    return root


def test_fit_text_projection(bedroom, tmp_path, capsys):
    from fastsam2.export.text import save_text_embeddings

    data = make_davis(tmp_path / "davis", bedroom)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3, 32)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    texts = tmp_path / "texts.npz"
    save_text_embeddings(texts, ["bed", "lamp", "dust"], emb, "random", "random-init")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"bed/1": "bed", "bed/2": "lamp", "bed/3": "dust"}))
    out = tmp_path / "router.safetensors"
    args = ["fit-text-projection", "--dataset", str(data), "--labels", str(labels), "--texts", str(texts),
            "--config", "tiny", "--image-size", "256", "--out", str(out), "--ridge", "0.1"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "fitted on 4 pairs from 2 frames" in err and "2 masks smaller than a token" in err
    weights = read_router_file(out)
    assert weights.text_proj_weight.shape == (32, 256)
    default = TokenRouter(image_size=256).mlp.state_dict()
    assert np.array_equal(weights.mlp["router.2.weight"], default["2.weight"].numpy())
    # two texts, two different mean tokens: the projection separates them
    v_bed, v_lamp = weights.project(emb[0]), weights.project(emb[1])
    assert np.linalg.norm(v_bed - v_lamp) > 1e-3 * np.linalg.norm(v_bed)

    labels.write_text(json.dumps({"bed/1": "sofa"}))
    assert main(args) == 1
    assert "not in" in capsys.readouterr().err
    assert main([*args[:2], str(tmp_path / "nope"), *args[3:]]) == 1
    assert "dataset folder not found" in capsys.readouterr().err
