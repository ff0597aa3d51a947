"""Numpy versions of the torch ops SAM2's video loop applies around the graphs, so a torch-free runtime
reproduces the reference: bilinear resizes (``F.interpolate``), hole filling, the non-overlap
constraint, and bfloat16 rounding for a half-size memory bank.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# SAM2's placeholder scores: holes become slightly positive foreground; suppressed objects are pushed
# below -10 (sigmoid(-10) = 4.5e-5), see SAM2VideoPredictor / fill_holes_in_mask_scores.
HOLE_FILL_SCORE = 0.1
SUPPRESSED_SCORE = -10.0

_BF16_QUIET_NAN = np.uint16(0x7FC0)


def _check_resize_args(x: np.ndarray, size: tuple[int, int]) -> tuple[int, int]:
    if x.ndim < 2:
        raise ValueError(f"resize needs an array [..., h, w], got shape {x.shape}")
    out_h, out_w = (int(s) for s in size)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"resize output size must be positive, got {tuple(size)}")
    return out_h, out_w


# -- plain bilinear ------------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two-tap indices and weights of torch's bilinear (align_corners=False) along one axis.

    Returns (idx0, idx1, w0, w1), each [out_size]; computed in float32 like torch's CPU kernel.
    """
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    # Half-pixel centres; torch clamps a negative source coordinate to 0 (no reflection). torch's
    # compiled kernel sometimes fuses this multiply-add, so a few weights can differ from these by one
    # float32 ulp of the source coordinate (outputs then differ by ~1e-6 relative).
    src = scale * (np.arange(out_size, dtype=f32) + f32(0.5)) - f32(0.5)
    src = np.maximum(src, f32(0.0))
    idx0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    w1 = np.clip(src - idx0.astype(f32), f32(0.0), f32(1.0)).astype(f32)
    idx1 = np.where(idx0 < in_size - 1, idx0 + 1, idx0)
    w0 = (f32(1.0) - w1).astype(f32)
    for a in (idx0, idx1, w0, w1):
        a.flags.writeable = False  # cached and shared between calls
    return idx0, idx1, w0, w1


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=False)`` in numpy.

    x: float32 [..., h, w]; returns float32 [..., size[0], size[1]].
    """
    out_h, out_w = _check_resize_args(x, size)
    src = np.asarray(x, dtype=np.float32)
    x = src
    h, w = x.shape[-2:]
    # Width first, then height: the same order of float operations as torch's CPU kernel.
    if out_w != w:
        i0, i1, w0, w1 = _linear_taps(w, out_w)
        x = x[..., i0] * w0 + x[..., i1] * w1
    if out_h != h:
        i0, i1, w0, w1 = _linear_taps(h, out_h)
        x = x[..., i0, :] * w0[:, None] + x[..., i1, :] * w1[:, None]
    return x.copy() if x is src else x


# -- antialiased bilinear ------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _aa_weights(in_size: int, out_size: int) -> np.ndarray:
    """Weight matrix [out_size, in_size] of torch's antialiased bilinear resize along one axis.

    Follows PIL's/torch's triangle filter: when downsampling by ``scale`` the support widens to
    ``scale`` input pixels on each side and the filter is stretched by the same factor; each output
    row is normalised to sum to 1. When upsampling this reduces to plain bilinear.
    """
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    support = f32(scale) if scale >= 1.0 else f32(1.0)  # interp_size/2 = 1 for bilinear
    invscale = f32(1.0) / scale if scale >= 1.0 else f32(1.0)
    center = scale * (np.arange(out_size, dtype=f32) + f32(0.5))
    # int64 casts truncate toward zero, as the C++ static_cast does.
    xmin = np.maximum(np.trunc(center - support + f32(0.5)).astype(np.int64), 0)
    xmax = np.minimum(np.trunc(center + support + f32(0.5)).astype(np.int64), in_size)
    max_taps = int(np.ceil(support)) * 2 + 1
    weights = np.zeros((out_size, in_size), dtype=f32)
    rows = np.arange(out_size)
    taps = np.zeros((out_size, max_taps), dtype=f32)
    for j in range(max_taps):
        idx = xmin + j
        t = np.abs(((idx.astype(f32) - center) + f32(0.5)) * invscale)
        taps[:, j] = np.where((idx < xmax) & (t < 1.0), f32(1.0) - t, f32(0.0))
    total = taps.sum(axis=1, dtype=f32)
    taps = np.divide(taps, total[:, None], out=taps, where=total[:, None] != 0)
    for j in range(max_taps):
        idx = xmin + j
        valid = idx < xmax
        weights[rows[valid], idx[valid]] = taps[valid, j]
    weights.flags.writeable = False
    return weights


def resize_bilinear_antialias(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=True)`` in numpy.

    SAM2 uses it to bring mask prompts to the model's input and low-res sizes.
    x: float32 [..., h, w]; returns float32 [..., size[0], size[1]].
    """
    out_h, out_w = _check_resize_args(x, size)
    x = np.asarray(x, dtype=np.float32)
    h, w = x.shape[-2:]
    out = x
    # Horizontal pass first, and unchanged axes skipped, as in torch's separable CPU kernel.
    if out_w != w:
        out = out @ _aa_weights(w, out_w).T
    if out_h != h:
        out = _aa_weights(h, out_h) @ out
    return out.copy() if out is x else np.ascontiguousarray(out, dtype=np.float32)


# -- mask post-processing ------------------------------------------------------------------------------
def fill_holes(mask_logits: np.ndarray, max_area: int) -> np.ndarray:
    """SAM2's ``fill_holes_in_mask_scores``: background (logits <= 0) components of area <= max_area
    become HOLE_FILL_SCORE. Components touching the border count too (SAM2 does not exclude them).

    mask_logits: float32 [B, 1, h, w]; returns a new float32 array of the same shape.
    ``max_area == 0`` fills nothing (SAM2's predictor skips the call then).
    """
    if mask_logits.ndim != 4 or mask_logits.shape[1] != 1:
        raise ValueError(f"fill_holes needs mask logits [B, 1, h, w], got shape {mask_logits.shape}")
    if max_area < 0:
        raise ValueError(f"max_area must be >= 0, got {max_area}")
    out = np.array(mask_logits, dtype=np.float32, copy=True)
    if max_area == 0:
        return out
    from .frames import has_cv2

    fast = has_cv2()  # OpenCV's labelling is ~80x faster; numpy's gives the same holes without it
    for b in range(out.shape[0]):
        background = out[b, 0] <= 0
        out[b, 0][_holes_cv2(background, max_area) if fast else _holes(background, max_area)] = HOLE_FILL_SCORE
    return out


def _holes(background: np.ndarray, max_area: int) -> np.ndarray:
    """bool [h, w]: the pixels of 8-connected background components of area <= max_area."""
    labels = connected_components(background)
    areas = np.bincount(labels[background], minlength=labels.size + 1)  # + the outside label
    return background & (areas[labels] <= max_area)


def _holes_cv2(background: np.ndarray, max_area: int) -> np.ndarray:
    """:func:`_holes` by OpenCV (label 0 is the foreground)."""
    import cv2

    _, labels, stats, _ = cv2.connectedComponentsWithStats(background.astype(np.uint8), connectivity=8)
    is_hole = stats[:, cv2.CC_STAT_AREA] <= max_area
    is_hole[0] = False
    return is_hole[labels]


def connected_components(mask: np.ndarray) -> np.ndarray:
    """8-connected components of a bool mask [h, w]: int64 [h, w], each pixel of the mask labelled with
    the smallest flat index (y * w + x) of its component; pixels outside the mask are ``h * w``.

    Label propagation with pointer jumping, in numpy alone (no OpenCV or SciPy in the runtime): each
    round takes the smallest label among the 8 neighbours, then follows labels to the label of the
    pixel they name, so a component's labels converge in a few rounds per doubling of its extent.
    """
    h, w = mask.shape
    outside = h * w
    flat = np.where(mask.reshape(-1), np.arange(outside, dtype=np.int64), outside)
    labels = flat.reshape(h, w)
    table = np.append(flat, outside)  # table[i]: the label of pixel i; table[outside] = outside
    while True:
        padded = np.pad(labels, 1, constant_values=outside)
        low = labels
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                low = np.minimum(low, padded[dy:dy + h, dx:dx + w])
        low = np.where(mask, low, outside)
        table[:outside] = low.reshape(-1)
        jumped = table[low]
        while True:  # follow each label to its own label until the chain ends
            again = table[jumped]
            if np.array_equal(again, jumped):
                break
            jumped = again
        if np.array_equal(jumped, labels):
            return labels
        labels = jumped


def non_overlapping(masks: np.ndarray) -> np.ndarray:
    """SAM2's ``_apply_non_overlapping_constraints``: at each pixel only the highest-scoring object keeps
    its score; the others are clamped to at most SUPPRESSED_SCORE. Ties go to the lower object index.

    masks: float32 [B, 1, h, w]; B == 1 returns the input itself.
    """
    if masks.ndim != 4:
        raise ValueError(f"non_overlapping needs masks [B, 1, h, w], got shape {masks.shape}")
    if masks.shape[0] == 1:
        return masks
    winner = np.argmax(masks, axis=0)[None]  # [1, 1, h, w]
    keep = winner == np.arange(masks.shape[0])[:, None, None, None]
    return np.where(keep, masks, np.minimum(masks, np.float32(SUPPRESSED_SCORE))).astype(masks.dtype, copy=False)


# -- bfloat16 ------------------------------------------------------------------------------------------
def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16, same shape), rounding to nearest even like torch.

    inf stays inf, values past bf16's max round to inf, and every NaN becomes the quiet NaN 0x7FC0.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    # Adding 0x7FFF plus the lowest kept bit rounds ties to even; the carry propagates into the
    # exponent, which is what turns values above bf16's max into inf.
    rounded = (bits + (((bits >> 16) & 1) + np.uint32(0x7FFF))) >> 16
    out = rounded.astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = _BF16_QUIET_NAN  # the addition above may have overflowed NaN payloads
    return out


def from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32, exactly (bf16 is float32's upper half)."""
    bits = np.asarray(bits)
    if bits.dtype != np.uint16:
        raise ValueError(f"bf16 bits must be uint16, got {bits.dtype}")
    return (bits.astype(np.uint32) << 16).view(np.float32)


def bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 -> float32 rounded to bfloat16, equal to ``t.to(torch.bfloat16).float()``."""
    return from_bf16_bits(to_bf16_bits(x))
