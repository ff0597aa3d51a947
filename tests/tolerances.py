"""Tolerances derived from the dtype and the magnitude of what is compared, never from one run.

Two implementations of the same float32 arithmetic (numpy vs torch, ONNX Runtime vs torch, one CPU's
SIMD width or fused multiply-add vs another's) agree only up to rounding: an elementary result to
half an ulp, a sum of ``n`` terms to about ``n`` ulps of its largest partial sum in the worst case.
Each helper states the arithmetic it bounds and keeps a safety factor; a real bug (a wrong
interpolation mode, a missing term, swapped inputs) moves results by a sizeable fraction of the
magnitude and still fails.
"""

from __future__ import annotations

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7: one ulp at 1.0


def magnitude(x: np.ndarray) -> float:
    """The largest |value| (at least 1, so that tiny references do not make tolerances vanish)."""
    return max(1.0, float(np.abs(np.asarray(x, np.float64)).max()))


def reduction_atol(mag: float, terms: int, *, eps: float = EPS32, safety: float = 4.0) -> float:
    """A sum/dot product of ``terms`` items of size <= ``mag`` evaluated in another order:
    worst case ``terms`` ulps of ``mag``, times ``safety``."""
    return safety * eps * mag * terms


def interpolation_atol(values: np.ndarray, src_size: int, *, eps: float = EPS32, safety: float = 4.0) -> float:
    """Bilinear/antialiased resize: a source coordinate up to ``src_size`` is known to one ulp
    (eps * src_size), which shifts a tap weight by as much and the output by that times the largest
    neighbour difference (2 * max |x|); plus the rounding of the weighted sum itself."""
    mag = magnitude(values)
    return safety * eps * mag * (2.0 * src_size + 4.0)


# Whole-network comparisons (tracker vs tracker over many frames): each stage of the fp32 network
# agrees to ~1e-6 relative between kernels; the memory bank carries differences from frame to frame.
# 512 ulps of the largest logit bounds that with margin (measured: ~0.1 ulp-relative 2.7e-7..7.6e-7
# absolute at |logit| ~ 10-30), while a wrong mask (the failure that matters) differs by O(|logit|).
NETWORK_RTOL = 512 * EPS32  # 6.1e-5


def network_atol(reference: np.ndarray) -> float:
    """Tolerance for comparing mask logits of two fp32 runs of the whole tracker."""
    finite = np.asarray(reference)[np.asarray(reference) > -1000]  # absent objects hold -1024
    return NETWORK_RTOL * (magnitude(finite) if finite.size else 1.0)
