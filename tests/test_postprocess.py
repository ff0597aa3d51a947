from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from tolerances import interpolation_atol

from fastsam2.runtime.postprocess import (
    HOLE_FILL_SCORE,
    bf16_round,
    fill_holes,
    from_bf16_bits,
    non_overlapping,
    resize_bilinear,
    resize_bilinear_antialias,
    to_bf16_bits,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional

SIZE_PAIRS = [
    ((256, 256), (540, 960)),  # low-res logits -> video size (up)
    ((540, 960), (1024, 1024)),  # mask prompt -> model input (mixed: h up, w up non-integer)
    ((1024, 1024), (256, 256)),  # model input -> low-res (down x4)
    ((100, 37), (33, 111)),  # mixed: h down, w up, non-integer factors
    ((61, 47), (20, 17)),  # non-integer down
    ((7, 5), (7, 5)),  # identity
    ((1, 1), (4, 3)),
    ((9, 9), (1, 1)),
]


def _torch_resize(x: np.ndarray, size, antialias: bool) -> np.ndarray:
    t = torch.from_numpy(x)
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=antialias).numpy()


@pytest.mark.parametrize("in_size,out_size", SIZE_PAIRS)
@pytest.mark.parametrize("antialias", [False, True])
def test_resize_matches_torch(in_size, out_size, antialias):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, *in_size)).astype(np.float32)
    fn = resize_bilinear_antialias if antialias else resize_bilinear
    got = fn(x, out_size)
    ref = _torch_resize(x, out_size, antialias)
    assert got.shape == ref.shape and got.dtype == np.float32
    # torch's kernel may fuse multiply-adds (machine-dependent): tap weights then differ by an ulp of
    # the source coordinate. The bound is ~2.6e-3 at 540 -> 1024 with |x| <= 5; align_corners=True or
    # nearest instead of bilinear changes outputs by O(|x|) and fails it (test below).
    np.testing.assert_allclose(got, ref, rtol=0, atol=interpolation_atol(x, max(in_size)))


def test_resize_accepts_any_leading_dims_and_does_not_alias():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    np.testing.assert_allclose(resize_bilinear(x[0], (8, 3)), _torch_resize(x, (8, 3), False)[0], rtol=0,
                               atol=interpolation_atol(x, 5))
    same = resize_bilinear_antialias(x, (4, 5))
    same[...] = 0
    assert x.any()  # an identity resize returns a copy, not the input


def test_antialias_differs_from_plain_when_downsampling():
    # Guards against the antialias path silently falling back to two-tap bilinear.
    x = np.random.default_rng(1).standard_normal((1, 1, 64, 64)).astype(np.float32)
    assert np.abs(resize_bilinear_antialias(x, (16, 16)) - resize_bilinear(x, (16, 16))).max() > 0.1


def test_resize_rejects_bad_size():
    with pytest.raises(ValueError, match="positive"):
        resize_bilinear(np.zeros((4, 4), np.float32), (0, 3))


def test_tolerance_catches_a_wrong_interpolation():
    # The derived tolerance must still tell bilinear from its look-alikes.
    x = np.random.default_rng(2).standard_normal((1, 1, 256, 256)).astype(np.float32)
    got = resize_bilinear(x, (540, 960))
    tol = interpolation_atol(x, 256)
    t = torch.from_numpy(x)
    for wrong in (F.interpolate(t, size=(540, 960), mode="bilinear", align_corners=True),
                  F.interpolate(t, size=(540, 960), mode="nearest"),
                  F.interpolate(t, size=(540, 960), mode="bicubic", align_corners=False)):
        assert np.abs(got - wrong.numpy()).max() > 10 * tol


def test_resize_indices_are_cached():
    # The per-frame upsample reuses its index/weight tables (no timing: shared CI cores).
    from fastsam2.runtime.postprocess import _linear_taps

    x = np.zeros((1, 1, 256, 256), np.float32)
    resize_bilinear(x, (540, 960))
    before = _linear_taps.cache_info().hits
    resize_bilinear(x, (540, 960))
    assert _linear_taps.cache_info().hits >= before + 2  # both axes


def _logits_with(background: np.ndarray) -> np.ndarray:
    """[1, 1, h, w] logits: +5 on foreground, -3 on background pixels (bool mask)."""
    return np.where(background, -3.0, 5.0).astype(np.float32)[None, None]


def test_fill_single_pixel_hole():
    bg = np.ones((12, 12), bool)
    bg[2:9, 2:9] = False  # object
    bg[5, 5] = True  # 1-pixel hole in it
    out = fill_holes(_logits_with(bg), max_area=8)
    assert out[0, 0, 5, 5] == np.float32(HOLE_FILL_SCORE)
    # The big outer background stays as it was; foreground is untouched.
    assert out[0, 0, 0, 0] == -3.0 and out[0, 0, 3, 3] == 5.0
    assert (out != _logits_with(bg)).sum() == 1


def test_hole_larger_than_max_area_stays():
    bg = np.ones((14, 14), bool)
    bg[1:12, 1:12] = False
    bg[4:7, 4:7] = True  # 9-pixel hole
    logits = _logits_with(bg)
    np.testing.assert_array_equal(fill_holes(logits, max_area=8), logits)
    assert (fill_holes(logits, max_area=9)[0, 0, 4:7, 4:7] == np.float32(HOLE_FILL_SCORE)).all()


def test_small_background_at_border_is_filled_too():
    # SAM2 fills every small background component, including ones touching the image border.
    bg = np.zeros((10, 10), bool)
    bg[0, 0:3] = True  # 3-pixel background region on the top edge
    bg[9, 9] = True
    out = fill_holes(_logits_with(bg), max_area=8)
    assert (out[0, 0, 0, 0:3] == np.float32(HOLE_FILL_SCORE)).all() and out[0, 0, 9, 9] == np.float32(HOLE_FILL_SCORE)


def test_fill_holes_uses_8_connectivity_and_zero_is_background():
    # Two diagonal-touching background pixels form one 2-pixel component (8-connectivity); with
    # max_area=1 it is not a hole. A logit of exactly 0 counts as background (<= 0).
    logits = np.full((1, 1, 8, 8), 4.0, np.float32)
    logits[0, 0, 3, 3] = -1.0
    logits[0, 0, 4, 4] = 0.0
    np.testing.assert_array_equal(fill_holes(logits, max_area=1), logits)
    filled = fill_holes(logits, max_area=2)
    assert filled[0, 0, 3, 3] == filled[0, 0, 4, 4] == np.float32(HOLE_FILL_SCORE)


def test_fill_holes_per_batch_item_and_shape_checks():
    a = np.ones((10, 10), bool)
    a[2:8, 2:8] = False
    a[4, 4] = True
    b = np.ones((10, 10), bool)  # all background: one big component, untouched
    logits = np.concatenate([_logits_with(a), _logits_with(b)])
    out = fill_holes(logits, max_area=4)
    assert out[0, 0, 4, 4] == np.float32(HOLE_FILL_SCORE)
    np.testing.assert_array_equal(out[1], logits[1])
    with pytest.raises(ValueError, match=r"\[B, 1, h, w\]"):
        fill_holes(logits[:, 0], max_area=4)
    with pytest.raises(ValueError, match="max_area"):
        fill_holes(logits, max_area=-1)


def _torch_non_overlapping(pred_masks):
    # Copied from SAM2VideoPredictor._apply_non_overlapping_constraints.
    batch_size = pred_masks.size(0)
    if batch_size == 1:
        return pred_masks
    max_obj_inds = torch.argmax(pred_masks, dim=0, keepdim=True)
    batch_obj_inds = torch.arange(batch_size)[:, None, None, None]
    keep = max_obj_inds == batch_obj_inds
    return torch.where(keep, pred_masks, torch.clamp(pred_masks, max=-10.0))


def test_non_overlapping_matches_sam2():
    rng = np.random.default_rng(2)
    masks = (rng.standard_normal((3, 1, 16, 16)) * 15).astype(np.float32)
    masks[:, :, 0, 0] = 7.0  # a tie: SAM2's argmax keeps the first object
    got = non_overlapping(masks)
    np.testing.assert_array_equal(got, _torch_non_overlapping(torch.from_numpy(masks)).numpy())
    assert got[0, 0, 0, 0] == 7.0 and got[1, 0, 0, 0] == -10.0
    single = masks[:1]
    assert non_overlapping(single) is single


def _torch_bf16(x: np.ndarray) -> np.ndarray:
    return torch.from_numpy(x).to(torch.bfloat16).float().numpy()


def test_bf16_round_bit_exact_vs_torch():
    rng = np.random.default_rng(3)
    random = (rng.standard_normal(20000) * 10.0 ** rng.uniform(-40, 38, 20000)).astype(np.float32)
    # Exact ties (lower 16 bits 0x8000) with both even and odd kept bits, and near-ties around them.
    upper = rng.integers(0, 0x7F7F, 2000, dtype=np.uint32) << 16
    ties = np.concatenate([upper | 0x8000, upper | 0x7FFF, upper | 0x8001, (upper | 0x8000) | (1 << 31)])
    special = np.array([0.0, -0.0, np.inf, -np.inf, 3.3895314e38, -3.4028235e38, 1e-45, -1e-40], np.float32)
    x = np.concatenate([random, ties.view(np.float32), special])
    got = bf16_round(x)
    ref = _torch_bf16(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32))


def test_bf16_nan_and_bits_roundtrip():
    x = np.array([np.nan, -np.nan, 1.0, np.float32(np.uint32(0xFFFFFFFF).view(np.float32))], np.float32)
    bits = to_bf16_bits(x)
    assert bits.dtype == np.uint16 and bits.nbytes == x.nbytes // 2
    back = from_bf16_bits(bits)
    assert np.isnan(back[[0, 1, 3]]).all() and back[2] == 1.0
    assert np.isnan(_torch_bf16(x)[[0, 1, 3]]).all()
    # bf16 values survive a bits round trip exactly.
    y = bf16_round(np.random.default_rng(4).standard_normal((4, 64)).astype(np.float32))
    np.testing.assert_array_equal(from_bf16_bits(to_bf16_bits(y)), y)
    with pytest.raises(ValueError, match="uint16"):
        from_bf16_bits(bits.astype(np.int32))


def test_runtime_modules_import_without_torch_or_cv2():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['cv2'] = None\n"
        "import fastsam2.runtime.frames, fastsam2.runtime.postprocess, fastsam2.runtime.output\n"
        "import numpy as np\n"
        "from fastsam2.runtime.output import overlay\n"
        "img = np.zeros((4, 4, 3), np.uint8); lab = np.ones((4, 4), np.uint8)\n"
        "assert (overlay(img, lab) != 0).any()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("density", [0.1, 0.5, 0.9])
def test_numpy_holes_equal_opencv_holes(density):
    """The runtime's numpy labelling (no OpenCV installed) finds exactly OpenCV's holes."""
    from fastsam2.runtime.postprocess import _holes, _holes_cv2, connected_components

    rng = np.random.default_rng(int(density * 10))
    spiral = np.zeros((64, 64), bool)  # nested L-shapes, each one long thin component
    for i in range(0, 32, 2):
        spiral[i, i:64 - i] = spiral[i:64 - i, 63 - i] = True
    for background in (rng.random((96, 80)) < density, spiral, ~spiral):
        for max_area in (1, 8, 100, background.size):
            np.testing.assert_array_equal(_holes(background, max_area), _holes_cv2(background, max_area))
    labels = connected_components(spiral)
    assert len(np.unique(labels[spiral])) == 16 and (labels[~spiral] == spiral.size).all()
