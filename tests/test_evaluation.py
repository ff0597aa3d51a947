"""DAVIS J&F evaluation: hand-computed expectations on tiny synthetic masks."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastsam2.runtime.evaluation import (
    EvalReport,
    boundary_radius,
    db_eval_boundary,
    db_eval_iou,
    db_statistics,
    evaluate_dirs,
    evaluate_sequence,
    format_table,
    mask_files,
    seg2bmap,
)


def box(h: int, w: int, top: int, left: int, bh: int, bw: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[top : top + bh, left : left + bw] = True
    return m


def pixel(h: int, w: int, y: int, x: int) -> np.ndarray:
    return box(h, w, y, x, 1, 1)


def brute_force_f(gt: np.ndarray, pred: np.ndarray, radius: int) -> float:
    """F with matching by explicit Euclidean distance <= radius (independent of the dilation)."""
    gb, pb = np.argwhere(seg2bmap(gt)), np.argwhere(seg2bmap(pred))
    if len(gb) == 0 and len(pb) == 0:
        return 1.0
    if len(gb) == 0 or len(pb) == 0:
        return 0.0
    d2 = ((gb[:, None, :] - pb[None, :, :]) ** 2).sum(-1)
    recall = np.mean(d2.min(1) <= radius**2)
    precision = np.mean(d2.min(0) <= radius**2)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


# -- per-frame measures ---------------------------------------------------------------------------
def test_both_empty_scores_one():
    empty = np.zeros((20, 20), bool)
    assert db_eval_iou(empty, empty) == 1.0
    assert db_eval_boundary(empty, empty) == 1.0


def test_empty_prediction_scores_zero():
    gt = box(20, 20, 5, 5, 6, 6)
    empty = np.zeros_like(gt)
    assert db_eval_iou(gt, empty) == 0.0
    assert db_eval_boundary(gt, empty) == 0.0
    # And the mirror case: something predicted where the ground truth is empty.
    assert db_eval_iou(empty, gt) == 0.0
    assert db_eval_boundary(empty, gt) == 0.0


def test_seg2bmap_is_offset_towards_origin():
    # A single pixel's contour is the 2x2 block above-left of it, inclusive.
    b = seg2bmap(pixel(6, 6, 3, 3))
    assert np.argwhere(b).tolist() == [[2, 2], [2, 3], [3, 2], [3, 3]]
    # A box [2..4]x[1..3] -> the ring of the rectangle rows 1..4, cols 0..3 (12 pixels).
    b = seg2bmap(box(8, 8, 2, 1, 3, 3))
    ring = box(8, 8, 1, 0, 4, 4) & ~box(8, 8, 2, 1, 2, 2)
    np.testing.assert_array_equal(b, ring)
    # The frame edge is not a contour: a full frame has no boundary.
    assert not seg2bmap(np.ones((5, 7), bool)).any()


def test_boundary_radius_from_diagonal():
    assert boundary_radius(20, 20) == 1  # 0.008 * 28.3 = 0.23
    assert boundary_radius(480, 854) == 8  # 0.008 * 979.6 = 7.84
    assert boundary_radius(480, 854, 3) == 3
    with pytest.raises(ValueError, match="whole"):
        boundary_radius(10, 10, 1.5)
    with pytest.raises(ValueError, match="positive"):
        boundary_radius(10, 10, 0)


def test_one_pixel_objects():
    a = pixel(20, 20, 10, 10)
    assert db_eval_iou(a, a) == 1.0
    assert db_eval_boundary(a, a) == 1.0
    # One pixel to the right: no overlap (J = 0/2). The 2x2 contours then share a column and the
    # other column is 1 px away, within the 1 px tolerance (20x20 frame) -> P = R = 1, F = 1.
    right = pixel(20, 20, 10, 11)
    assert db_eval_iou(a, right) == 0.0
    assert db_eval_boundary(a, right) == 1.0
    # Diagonal shift: contours {9,10}x{9,10} and {10,11}x{10,11}. The far corner of each is at
    # distance sqrt(2) > 1 from the other contour, the other 3 pixels are within 1 -> P = R = 3/4.
    diag = pixel(20, 20, 11, 11)
    assert db_eval_iou(a, diag) == 0.0
    assert db_eval_boundary(a, diag) == pytest.approx(0.75)


def test_square_vs_shifted_square():
    gt = box(40, 40, 10, 10, 10, 10)  # 40x40 -> tolerance 1 px
    # Shift (2, 3): overlap 8x7 = 56, union 100 + 100 - 56 = 144.
    assert db_eval_iou(gt, box(40, 40, 12, 13, 10, 10)) == pytest.approx(56 / 144)
    # Shift 1 right: J = 90/110; each 40-pixel contour ring lies within 1 px of the other -> F = 1.
    one = box(40, 40, 10, 11, 10, 10)
    assert db_eval_iou(gt, one) == pytest.approx(9 / 11)
    assert db_eval_boundary(gt, one) == pytest.approx(1.0)
    # Shift 3 right: J = 70/130. The vertical sides are 3 px apart, so of each 40-pixel ring only
    # 9 top + 9 bottom pixels, plus the 2 side pixels right under/over the other ring's top/bottom
    # row, have the other ring within 1 px -> P = R = 20/40 -> F = 0.5.
    three = box(40, 40, 10, 13, 10, 10)
    assert db_eval_iou(gt, three) == pytest.approx(7 / 13)
    assert db_eval_boundary(gt, three) == pytest.approx(0.5)


@pytest.mark.parametrize("size", [(40, 40), (100, 100), (90, 300)])
def test_boundary_matches_distance_definition(size):
    rng = np.random.default_rng(sum(size))
    h, w = size
    radius = boundary_radius(h, w)
    for _ in range(3):
        gt = box(h, w, *rng.integers(0, h // 2, 1), *rng.integers(0, w // 2, 1), h // 3, w // 4)
        pred = gt.copy()
        pred[rng.random((h, w)) < 0.02] ^= True  # speckle: many small contours
        pred = np.roll(pred, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
        assert db_eval_boundary(gt, pred) == pytest.approx(brute_force_f(gt, pred, radius))


def test_stacked_frames_and_void():
    gt = np.stack([box(20, 20, 2, 2, 4, 4), np.zeros((20, 20), bool)])
    pred = np.stack([box(20, 20, 2, 2, 4, 2), np.zeros((20, 20), bool)])
    np.testing.assert_allclose(db_eval_iou(gt, pred), [0.5, 1.0])
    assert db_eval_boundary(gt, pred).shape == (2,)
    # Void pixels leave both intersection and union: voiding the missed half makes J = 1.
    void = np.zeros_like(gt)
    void[0, 2:6, 4:6] = True
    np.testing.assert_allclose(db_eval_iou(gt, pred, void=void), [1.0, 1.0])
    with pytest.raises(ValueError, match="differ in shape"):
        db_eval_iou(gt, pred[:, :10])


# -- statistics -----------------------------------------------------------------------------------
def test_statistics_bins():
    values = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    # N = 8: edges round(1, 2.75, 4.5, 6.25, 8) - 1 = 0, 2, 4, 5, 7 -> first bin v0..v2 (0.8),
    # last bin v5..v7 (0.3). Recall counts > 0.5 strictly: 4 of 8.
    mean, recall, decay = db_statistics(values)
    assert mean == pytest.approx(0.55)
    assert recall == 0.5
    assert decay == pytest.approx(0.5)
    # N = 5: edges 0..4 -> bins v0..v1 and v3..v4 (overlapping bins).
    assert db_statistics([1, 1, 0, 0.5, 0.5])[2] == pytest.approx(0.5)
    assert db_statistics([0.7])[2] == 0.0
    assert db_statistics([0.7, 0.2])[2] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no frames"):
        db_statistics([])


def test_evaluate_sequence_recall_decay_and_frame_exclusion():
    h = w = 20
    sq = box(h, w, 4, 4, 4, 4)  # 16 px
    gt = np.stack([sq] * 6)
    # Frames 0 and 5 are not scored, so they may be anything.
    pred = np.stack([np.zeros((h, w), bool), sq, sq, box(h, w, 4, 4, 4, 2), np.zeros((h, w), bool),
                     ~sq])
    (score,) = evaluate_sequence({1: gt}, {1: pred}, sequence="s")
    np.testing.assert_allclose(score.j_per_frame, [1, 1, 0.5, 0])
    assert score.j_mean == pytest.approx(0.625)
    assert score.j_recall == 0.5  # 0.5 itself is not > 0.5
    # N = 4: edges round(1, 1.75, 2.5, 3.25, 4) - 1 = 0, 1, 2, 2, 3 -> mean(1, 1) - mean(0.5, 0).
    assert score.j_decay == pytest.approx(0.75)
    assert score.f_per_frame[0] == 1.0 and score.f_per_frame[3] == 0.0
    assert (score.sequence, score.obj_id) == ("s", 1)


def test_object_absent_from_ground_truth_on_some_frames():
    h = w = 20
    empty = np.zeros((h, w), bool)
    obj = box(h, w, 3, 3, 5, 5)
    gt = np.stack([obj, obj, empty, empty, obj])
    pred = np.stack([obj, obj, empty, obj, obj])  # frame 2: both empty; frame 3: false positive
    (score,) = evaluate_sequence({2: gt}, {2: pred})
    np.testing.assert_allclose(score.j_per_frame, [1, 1, 0])
    np.testing.assert_allclose(score.f_per_frame, [1, 1, 0])
    # A missing object is an empty prediction; an unknown id is an error.
    (missing,) = evaluate_sequence({2: gt}, {})
    np.testing.assert_allclose(missing.j_per_frame, [0, 1, 1])
    with pytest.raises(ValueError, match=r"ids \[7\]"):
        evaluate_sequence({2: gt}, {7: pred})
    with pytest.raises(ValueError, match="at least 3"):
        evaluate_sequence({2: gt[:2]}, {2: pred[:2]})


# -- folders --------------------------------------------------------------------------------------
def write_ids(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.frombytes("P", (ids.shape[1], ids.shape[0]), ids.astype(np.uint8).tobytes())
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [128] * (253 * 3))
    im.save(path)


def make_dataset(root: Path) -> dict[str, list[float]]:
    """Two sequences x two objects; returns the expected per-frame J per '<seq>_<obj>'."""
    gt, pred = root / "DAVIS" / "Annotations" / "480p", root / "results"
    # alpha: 4 frames of 32x32, frames 1 and 2 scored.
    h, w = 32, 32
    a1, a2 = box(h, w, 4, 4, 8, 8), box(h, w, 20, 20, 6, 6)
    g = np.zeros((h, w), np.uint8)
    g[a1], g[a2] = 1, 2
    for t in range(4):
        write_ids(gt / "alpha" / f"{t:05d}.png", g)
    p1 = np.zeros((h, w), np.uint8)
    p1[a1] = 1
    p1[box(h, w, 20, 22, 6, 6)] = 2  # obj 2 shifted 2 px: overlap 24, union 48 -> 1/2
    p2 = np.zeros((h, w), np.uint8)
    p2[box(h, w, 8, 4, 8, 8)] = 1  # obj 1 shifted 4 px down: overlap 32, union 96 -> 1/3; obj 2 lost
    write_ids(pred / "alpha" / "00001.png", p1)
    write_ids(pred / "alpha" / "00002.png", p2)
    write_ids(pred / "alpha" / "00003.png", np.zeros((h, w), np.uint8))  # last frame: not scored

    # beta: 5 frames of 24x40, frames 1..3 scored; obj 2 leaves on frame 2; 255 = void strip.
    h, w = 24, 40
    b1, b2, strip = box(h, w, 2, 2, 4, 5), box(h, w, 12, 20, 6, 6), box(h, w, 6, 2, 2, 5)
    for t in range(5):
        g = np.zeros((h, w), np.uint8)
        g[b1], g[strip] = 1, 255
        if t != 2:
            g[b2] = 2
        write_ids(gt / "beta" / f"{t:05d}.png", g)
    for t in (1, 2, 3):
        p = np.zeros((h, w), np.uint8)
        if t == 1:
            p[b1 | strip] = 1  # void counts as background: J = 20 / 30
        elif t == 2:
            p[b1] = 1
        p[b2] = 2 if t != 2 else 0  # t = 3: obj 1 empty -> J = 0
        write_ids(pred / "beta" / f"{t:05d}.png", p)
    return {"alpha_1": [1, 1 / 3], "alpha_2": [0.5, 0], "beta_1": [2 / 3, 1, 0], "beta_2": [1, 1, 1]}


def test_evaluate_dirs_end_to_end(tmp_path):
    expected = make_dataset(tmp_path)
    report = evaluate_dirs(tmp_path / "results", tmp_path / "DAVIS")
    assert report.sequences == ["alpha", "beta"]
    got = {f"{o.sequence}_{o.obj_id}": o for o in report.objects}
    assert sorted(got) == sorted(expected)
    for key, j in expected.items():
        np.testing.assert_allclose(got[key].j_per_frame, j, err_msg=key)
    # F where it follows from the edge cases: exact masks 1, lost objects 0.
    np.testing.assert_allclose(got["alpha_1"].f_per_frame[0], 1)
    np.testing.assert_allclose(got["alpha_2"].f_per_frame[1], 0)
    np.testing.assert_allclose(got["beta_1"].f_per_frame[1:], [1, 0])
    np.testing.assert_allclose(got["beta_2"].f_per_frame, [1, 1, 1])

    j_means = [np.mean(j) for j in expected.values()]
    assert report.j_mean == pytest.approx(np.mean(j_means))  # mean over objects, not sequences
    f_means = [o.f_mean for o in report.objects]
    assert report.f_mean == pytest.approx(np.mean(f_means))
    assert report.jf_mean == pytest.approx((report.j_mean + report.f_mean) / 2)
    assert got["beta_2"].j_recall == 1.0 and got["beta_2"].j_decay == 0.0
    # beta_1, N = 3: edges round(1, 1.5, 2, 2.5, 3) - 1 = 0, 1, 1, 2, 2 -> mean(v0, v1) - v2.
    assert got["beta_1"].j_decay == pytest.approx((2 / 3 + 1) / 2)

    data = json.loads(report.to_json())
    assert data["num_objects"] == 4
    assert data["j_mean"] == pytest.approx(report.j_mean)
    assert data["sequences"]["alpha"]["j_mean"] == pytest.approx((2 / 3 + 0.25) / 2)
    table = format_table(report)
    assert "alpha" in table and "beta" in table and "Global" in table
    assert f"{report.jf_mean:.3f}" in table.splitlines()[-1]

    # The same ground truth given as the folder of sequences, and one sequence on its own.
    plain = evaluate_dirs(tmp_path / "results", tmp_path / "DAVIS/Annotations/480p", ["beta"])
    assert [o.obj_id for o in plain.objects] == [1, 2]
    single = evaluate_dirs(tmp_path / "results/alpha", tmp_path / "DAVIS/Annotations/480p/alpha")
    assert single.j_mean == pytest.approx(np.mean([2 / 3, 0.25]))


def test_missing_prediction_frame_is_named(tmp_path):
    make_dataset(tmp_path)
    missing = tmp_path / "results" / "beta" / "00002.png"
    missing.unlink()
    with pytest.raises(ValueError, match="missing prediction frame") as err:
        evaluate_dirs(tmp_path / "results", tmp_path / "DAVIS")
    assert str(missing) in str(err.value) and "\n" not in str(err.value)


def test_folder_errors(tmp_path):
    make_dataset(tmp_path)
    write_ids(tmp_path / "results" / "alpha" / "00001.png", np.zeros((16, 32), np.uint8))
    with pytest.raises(ValueError, match=r"00001\.png: prediction is 32x16, ground truth is 32x32"):
        evaluate_dirs(tmp_path / "results", tmp_path / "DAVIS", ["alpha"])
    write_ids(tmp_path / "results" / "beta" / "00001.png", np.full((24, 40), 3, np.uint8))
    with pytest.raises(ValueError, match=r"object id 3 is not in the ground truth of 'beta'"):
        evaluate_dirs(tmp_path / "results", tmp_path / "DAVIS", ["beta"])
    with pytest.raises(ValueError, match=r"not in the ground truth"):
        evaluate_dirs(tmp_path / "results", tmp_path / "DAVIS", ["gamma"])
    with pytest.raises(ValueError, match="no predictions for sequence 'alpha'"):
        evaluate_dirs(tmp_path, tmp_path / "DAVIS", ["alpha"])
    with pytest.raises(ValueError, match="no objects"):
        EvalReport.from_objects([])


def test_frames_are_ordered_like_track_reads_them(tmp_path):
    # 1.png ... 12.png: 12 is the last frame (not scored); a name sort would score it and leave 2 out.
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 1
    for i in range(1, 13):
        Image.fromarray(mask).save(gt / f"{i}.png")
        Image.fromarray(mask if i != 12 else np.zeros_like(mask)).save(pred / f"{i}.png")
    report = evaluate_dirs(pred, gt)
    assert report.jf_mean == pytest.approx(1.0)
    assert [p.name for p in mask_files(gt)][:3] == ["1.png", "2.png", "3.png"]
