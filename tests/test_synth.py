"""The generated videos (runtime/synth.py, ``fastsam2 synth``): fixed by their seed, masks that are
exactly the visible part of each target, labels that name what is drawn, a DAVIS layout that eval's own
readers accept, one-line refusals of bad arguments, and a hard split that is harder in the ways it
claims."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fastsam2.runtime import synth
from fastsam2.runtime.errors import UsageError
from fastsam2.runtime.output import DAVIS_PALETTE
from fastsam2.runtime.outdir import MARKER
from fastsam2.tools import cli

SIZE = 128  # small frames keep every test here well under a second per clip


def _clips(split: str, n: int, frames: int | None = None) -> list[synth.SynthClip]:
    return [synth.make_clip(7, split=split, frames=frames, size=SIZE, index=i) for i in range(n)]


# -- determinism --------------------------------------------------------------------------------
def test_a_seed_fixes_every_pixel():
    a = synth.make_clip(3, split="train", frames=5, size=SIZE, index=2)
    b = synth.make_clip(3, split="train", frames=5, size=SIZE, index=2)
    assert a.name == b.name == "train_00002"
    assert a.labels == b.labels
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.masks, b.masks)


@pytest.mark.parametrize("other", [dict(seed=4), dict(index=3), dict(split="hard")])
def test_seed_split_and_index_each_change_the_clip(other):
    args = dict(seed=3, split="train", index=2) | other
    base = synth.make_clip(3, split="train", frames=4, size=SIZE, index=2)
    changed = synth.make_clip(args.pop("seed"), frames=4, size=SIZE, **args)
    assert not np.array_equal(base.frames, changed.frames)


def test_shapes_and_dtypes():
    clip = synth.make_clip(0, split="train", frames=3, size=(96, 160))
    assert clip.frames.shape == (3, 96, 160, 3) and clip.frames.dtype == np.uint8
    assert clip.masks.shape == (3, 96, 160) and clip.masks.dtype == np.uint8
    assert clip.name == "train_seed0"
    assert synth.make_clip(0, split="hard", size=SIZE).frames.shape[0] == synth.DEFAULT_FRAMES["hard"]
    assert synth.make_clip(0, size=SIZE).frames.shape[0] == synth.DEFAULT_FRAMES["train"]


# -- masks are the visible part of what was drawn ----------------------------------------------
def _silhouette(obj, t: int, scene) -> np.ndarray:
    """Where ``obj`` alone covers frame t (bool H x W), drawn on an empty canvas."""
    ids = np.zeros((scene.height, scene.width), np.uint8)
    probe = synth._Object(**{**obj.__dict__, "obj_id": 1})
    synth._draw(probe, t, None, ids, (scene.pan[t] - scene.pan[0]).astype(np.float64))
    return ids == 1


@pytest.mark.parametrize("split", synth.SPLITS)
def test_masks_are_the_visible_part_of_each_target(split):
    """Each target's mask = its own silhouette minus the silhouettes of every object drawn above it,
    computed object by object here; and the frame before lighting and blur shows exactly that target's
    colours there (a solid target: one colour; any target: only its palette's shades)."""
    seen_occlusion = False
    for index in range(4):
        clip = synth.make_clip(11, split=split, frames=6, size=SIZE, index=index)
        scene = synth._scene(11, split, 6, SIZE, SIZE, index)
        for t in range(6):
            frame = np.empty((SIZE, SIZE, 3), np.uint8)
            ids = np.zeros((SIZE, SIZE), np.uint8)
            synth._render(scene, t, frame, ids)
            np.testing.assert_array_equal(ids, clip.masks[t])
            sil = [_silhouette(o, t, scene) for o in scene.objects]
            for k, obj in enumerate(scene.objects):
                if not obj.obj_id:
                    continue
                above = np.zeros_like(sil[k])
                for s in sil[k + 1:]:
                    above |= s
                expected = sil[k] & ~above
                np.testing.assert_array_equal(clip.masks[t] == obj.obj_id, expected)
                seen_occlusion |= bool((sil[k] & above).any())
                colour = np.clip(obj.rgb * obj.gain[t] + obj.shift[t], 0, 255)
                colour2 = np.clip(obj.rgb2 * obj.gain[t] + obj.shift[t], 0, 255)
                shades = np.linspace(0, 1, synth._NOISE_LEVELS)[:, None]
                allowed = {tuple(c) for c in np.round(colour + (colour2 - colour) * shades).astype(np.uint8)}
                allowed |= {tuple(np.round(c).astype(np.uint8)) for c in (colour, colour2)}
                drawn = {tuple(p) for p in frame[expected]}
                assert drawn <= allowed, (obj.label, t)
                if obj.texture == "solid" and expected.any():
                    assert len(drawn) == 1
    assert seen_occlusion, "no target was ever occluded in these clips"


def test_first_frame_shows_every_target():
    for split in synth.SPLITS:
        for clip in _clips(split, 6, frames=3):
            ids = sorted(int(i) for i in np.unique(clip.masks[0]) if i)
            assert ids == list(range(1, len(clip.labels) + 1)) == sorted(clip.labels)
            area = np.bincount(clip.masks[0].ravel(), minlength=len(ids) + 1)[1:]
            assert (area >= synth.MIN_FIRST_FRAME_AREA * SIZE * SIZE).all(), (clip.name, area)


# -- labels --------------------------------------------------------------------------------------
def test_labels_name_colour_and_shape_and_distractors_look_alike():
    for split in synth.SPLITS:
        for index in range(6):
            clip = synth.make_clip(5, split=split, frames=3, size=SIZE, index=index)
            scene = synth._scene(5, split, 3, SIZE, SIZE, index)
            targets = [o for o in scene.objects if o.obj_id]
            assert 1 <= len(targets) <= synth.MAX_TARGETS
            assert clip.labels == {o.obj_id: f"{o.colour} {o.shape}" for o in targets}
            for label in clip.labels.values():
                colour, shape = label.split(" ")
                assert colour in synth.COLOURS and shape in synth.SHAPES
            assert len(set(clip.labels.values())) == len(clip.labels), "two targets share a label"
            for d in (o for o in scene.objects if not o.obj_id):
                assert any(d.colour == o.colour or d.shape == o.shape for o in targets), d.label


# -- the two splits ------------------------------------------------------------------------------
def _split_stats(split: str, n: int = 12, frames: int = 8) -> dict[str, float]:
    distractors, both, speeds, hidden = [], 0, [], []
    for index in range(n):
        clip = synth.make_clip(21, split=split, frames=frames, size=SIZE, index=index)
        scene = synth._scene(21, split, frames, SIZE, SIZE, index)
        ds = [o for o in scene.objects if not o.obj_id]
        targets = [o for o in scene.objects if o.obj_id]
        distractors.append(len(ds))
        both += sum(any(d.label == o.label for o in targets) for d in ds)
        for o in targets:  # centroid motion of the visible mask, per frame, in image fractions
            cs = [np.argwhere(m == o.obj_id).mean(0) for m in clip.masks if (m == o.obj_id).sum() > 20]
            speeds += [np.linalg.norm(b - a) / SIZE for a, b in zip(cs, cs[1:])]
            for t in range(frames):
                full = _silhouette(o, t, scene).sum()
                if full:
                    hidden.append(1 - (clip.masks[t] == o.obj_id).sum() / full)
    return dict(distractors=float(np.mean(distractors)), same_label=both, speed=float(np.median(speeds)),
                hidden=float(np.mean(hidden)))


def test_the_hard_split_is_harder():
    train, hard = _split_stats("train"), _split_stats("hard")
    assert hard["distractors"] > train["distractors"] + 1.5, (train, hard)
    assert train["same_label"] == 0 and hard["same_label"] > 0, (train, hard)  # exact look-alikes
    assert hard["speed"] > 1.5 * train["speed"], (train, hard)
    assert hard["hidden"] > 1.5 * train["hidden"], (train, hard)
    assert synth.DEFAULT_FRAMES["hard"] > synth.DEFAULT_FRAMES["train"]


# -- DAVIS layout, read by eval ------------------------------------------------------------------
def test_dataset_is_read_by_eval(tmp_path):
    from fastsam2.runtime.evaluation import evaluate_dirs, read_object_ids
    from fastsam2.tools.eval_run import check_sequence, dataset_layout, first_frame_ids

    out = synth.write_dataset(tmp_path / "ds", videos=2, frames=4, seed=9, split="hard", size=SIZE)
    assert (out / MARKER).is_file()
    images, annos = dataset_layout(out)
    names = sorted(p.name for p in annos.iterdir())
    assert names == ["hard_00000", "hard_00001"]
    labels = json.loads((out / "labels.json").read_text())
    meta = json.loads((out / "meta.json").read_text())
    assert meta["generator_version"] == synth.GENERATOR_VERSION
    assert (meta["seed"], meta["split"], meta["videos"], meta["frames"]) == (9, "hard", 2, 4)
    for index, name in enumerate(names):
        clip = synth.make_clip(9, split="hard", frames=4, size=SIZE, index=index)
        check_sequence(images / name, annos / name)
        png, ids = first_frame_ids(annos / name)
        assert ids == sorted(clip.labels)
        assert labels[name] == {str(k): v for k, v in clip.labels.items()}
        for t in range(4):
            with Image.open(annos / name / f"{t:05d}.png") as im:
                assert im.mode == "P" and im.getpalette() == DAVIS_PALETTE
            np.testing.assert_array_equal(read_object_ids(annos / name / f"{t:05d}.png"), clip.masks[t])
            with Image.open(images / name / f"{t:05d}.jpg") as im:
                decoded = np.asarray(im.convert("RGB"), dtype=np.float64)
            # JPEG at quality 95 is lossy but close: a few levels of 255 on average
            assert np.abs(decoded - clip.frames[t]).mean() < 4.0
    # the ground truth scored against itself through eval's reader: every object perfect
    report = evaluate_dirs(annos, annos)
    assert report.jf_mean == 1.0 and len(report.objects) == sum(len(v) for v in labels.values())


# -- bad arguments -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(split="easy"), "unknown split"),
    (dict(size=32), "at least 64"),
    (dict(size=(128,)), "an int or"),
    (dict(frames=0), "frames must be"),
    (dict(seed=-1), "seed must be"),
    (dict(seed=1.5), "seed must be"),
])
def test_make_clip_refuses_bad_arguments(kwargs, match):
    args = dict(seed=0, size=SIZE) | kwargs
    with pytest.raises(UsageError, match=match):
        synth.make_clip(args.pop("seed"), **args)


def _cli(argv, capsys) -> tuple[int, str]:
    code = cli.main(["synth", *argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv,match", [
    (["--videos", "0"], "--videos"),
    (["--frames", "2"], "--frames"),
    (["--size", "32"], "--size"),
    (["--split", "easy"], "--split"),
    (["--seed", "-3"], "--seed"),
])
def test_cli_refuses_bad_arguments_in_one_line(tmp_path, capsys, argv, match):
    out = tmp_path / "ds"
    code, err = _cli(["--out", str(out), *argv], capsys)
    assert code == 1 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and match in err, err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_cli_writes_and_refuses_to_overwrite_a_users_folder(tmp_path, capsys):
    out = tmp_path / "ds"
    code, err = _cli(["--out", str(out), "--videos", "1", "--frames", "3", "--size", "64", "--seed", "2"],
                     capsys)
    assert code == 0, err
    assert sorted(p.name for p in (out / "JPEGImages" / "train_00000").iterdir()) == \
        ["00000.jpg", "00001.jpg", "00002.jpg"]
    code, err = _cli(["--out", str(out), "--videos", "1", "--frames", "3", "--size", "64"], capsys)
    assert code == 1 and "already exists" in err
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    code, err = _cli(["--out", str(user), "--overwrite", "--videos", "1", "--size", "64"], capsys)
    assert code == 1 and "not written by fastsam2" in err and len(err.strip().splitlines()) == 1
    assert (user / "notes.txt").read_text() == "keep"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
