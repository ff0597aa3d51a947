"""Closed-form text -> visual projection for the token router.

The router compares each SAM2 visual token (Dv = 256) with the object's CLIP text embedding
(Dt = 512) projected to Dv. The projection is a ridge regression from text embeddings to the mean
visual token inside the object's mask, fitted over (description, annotated frame) pairs:

    W, b = argmin ||X W + b - Y||^2 + ridge ||W||^2     (bias not penalized)

Pairs are accumulated as centered sufficient statistics, so memory is O(Dt^2 + Dt Dv) whatever the
number of annotated frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WEIGHT_KEY = "text_proj.weight"
BIAS_KEY = "text_proj.bias"
RIDGE_KEY = "text_proj.ridge"
NUM_PAIRS_KEY = "text_proj.num_pairs"


@dataclass
class TextProjection:
    """y = x @ weight + bias. weight [Dt, Dv] float32 (x @ W layout, i.e. nn.Linear's weight
    transposed), bias [Dv] float32."""

    weight: np.ndarray
    bias: np.ndarray
    ridge: float
    num_pairs: int

    def __post_init__(self) -> None:
        self.weight = np.asarray(self.weight, dtype=np.float32)
        self.bias = np.asarray(self.bias, dtype=np.float32)
        if self.weight.ndim != 2 or self.bias.shape != (self.weight.shape[1],):
            raise ValueError(
                f"text projection needs weight [Dt, Dv] and bias [Dv], got {self.weight.shape} and {self.bias.shape}"
            )

    @property
    def text_dim(self) -> int:
        return int(self.weight.shape[0])

    @property
    def visual_dim(self) -> int:
        return int(self.weight.shape[1])

    def apply(self, text_emb: np.ndarray) -> np.ndarray:
        """[..., Dt] -> [..., Dv] float32."""
        text_emb = np.asarray(text_emb)
        if text_emb.ndim < 1 or text_emb.shape[-1] != self.text_dim:
            raise ValueError(f"expected text embeddings [..., {self.text_dim}], got {text_emb.shape}")
        return (text_emb.astype(np.float32) @ self.weight + self.bias).astype(np.float32)

    def to_state_dict(self) -> dict[str, np.ndarray]:
        """Arrays for safetensors.numpy.save_file, next to the router weights."""
        return {WEIGHT_KEY: np.ascontiguousarray(self.weight), BIAS_KEY: np.ascontiguousarray(self.bias)}

    def metadata(self) -> dict[str, str]:
        """String metadata for save_file(..., metadata=...): the fit's ridge and number of pairs."""
        return {RIDGE_KEY: repr(float(self.ridge)), NUM_PAIRS_KEY: str(int(self.num_pairs))}

    @classmethod
    def from_state_dict(
        cls, state_dict: dict[str, np.ndarray], metadata: dict[str, str] | None = None
    ) -> TextProjection:
        """Pick `text_proj.*` out of a (possibly larger) state dict; metadata as from metadata()."""
        missing = [k for k in (WEIGHT_KEY, BIAS_KEY) if k not in state_dict]
        if missing:
            raise ValueError(f"state dict has no text projection: missing {missing}")
        metadata = metadata or {}
        return cls(
            weight=np.asarray(state_dict[WEIGHT_KEY]),
            bias=np.asarray(state_dict[BIAS_KEY]),
            ridge=float(metadata.get(RIDGE_KEY, "nan")),
            num_pairs=int(metadata.get(NUM_PAIRS_KEY, "0")),
        )


def _check_pairs(text_embs: np.ndarray, visual_means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(text_embs, dtype=np.float64)
    y = np.asarray(visual_means, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"expected text_embs [N, Dt] and visual_means [N, Dv], got {x.shape} and {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} text embeddings but {y.shape[0]} visual means: pairs must match")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("pairs contain NaN or inf")
    return x, y


def _solve(
    cxx: np.ndarray,
    cxy: np.ndarray,
    mean_x: np.ndarray,
    mean_y: np.ndarray,
    n: int,
    ridge: float,
    fit_bias: bool,
) -> TextProjection:
    """Ridge solution from centered statistics cxx = Xc^T Xc [Dt, Dt], cxy = Xc^T Yc [Dt, Dv]."""
    if not ridge >= 0 or not np.isfinite(ridge):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge}")
    if n == 0:
        raise ValueError("no pairs collected: cannot fit the text projection")
    dt = cxx.shape[0]
    if fit_bias:
        gram, rhs = cxx, cxy
    else:
        gram = cxx + n * np.outer(mean_x, mean_x)
        rhs = cxy + n * np.outer(mean_x, mean_y)
    if ridge == 0:
        needed = dt + 1 if fit_bias else dt
        if n < needed:
            raise ValueError(
                f"ridge=0 needs at least {needed} pairs for {dt}-d text embeddings"
                f"{' with a bias' if fit_bias else ''} (got {n}); pass ridge > 0"
            )
        rank = np.linalg.matrix_rank(gram)
        if rank < dt:
            raise ValueError(
                f"ridge=0 but the text embeddings span only {rank} of {dt} dimensions (singular); pass ridge > 0"
            )
    try:
        weight = np.linalg.solve(gram + ridge * np.eye(dt), rhs)
    except np.linalg.LinAlgError as exc:
        raise ValueError(f"text projection system is singular ({exc}); pass a larger ridge") from None
    bias = mean_y - mean_x @ weight if fit_bias else np.zeros(rhs.shape[1])
    return TextProjection(weight=weight, bias=bias, ridge=float(ridge), num_pairs=int(n))


def fit_text_projection(
    text_embs: np.ndarray, visual_means: np.ndarray, ridge: float = 1e-2, fit_bias: bool = True
) -> TextProjection:
    """Ridge fit of text_embs [N, Dt] -> visual_means [N, Dv] (float64 internally)."""
    x, y = _check_pairs(text_embs, visual_means)
    n = x.shape[0]
    mean_x = x.mean(axis=0) if n else np.zeros(x.shape[1])
    mean_y = y.mean(axis=0) if n else np.zeros(y.shape[1])
    xc, yc = x - mean_x, y - mean_y
    return _solve(xc.T @ xc, xc.T @ yc, mean_x, mean_y, n, ridge, fit_bias)


class PairCollector:
    """Streams (text embedding, mask-mean visual token) pairs into centered sufficient statistics
    (count, means, Xc^T Xc [Dt, Dt], Xc^T Yc [Dt, Dv], float64), merged batch by batch (Chan et al.)
    so that fit() equals fit_text_projection on all pairs without storing them."""

    def __init__(self, text_dim: int | None = None, visual_dim: int | None = None) -> None:
        self.text_dim = text_dim
        self.visual_dim = visual_dim
        self.count = 0
        self._mean_x: np.ndarray | None = None
        self._mean_y: np.ndarray | None = None
        self._cxx: np.ndarray | None = None
        self._cxy: np.ndarray | None = None

    def __len__(self) -> int:
        return self.count

    def add(self, text_emb: np.ndarray, visual_mean: np.ndarray) -> None:
        """One pair: text_emb [Dt], visual_mean [Dv]."""
        text_emb, visual_mean = np.asarray(text_emb), np.asarray(visual_mean)
        if text_emb.ndim != 1 or visual_mean.ndim != 1:
            raise ValueError(f"add() takes text_emb [Dt] and visual_mean [Dv], got {text_emb.shape} and {visual_mean.shape}")
        self.add_batch(text_emb[None], visual_mean[None])

    def add_batch(self, text_embs: np.ndarray, visual_means: np.ndarray) -> None:
        """Pairs text_embs [B, Dt], visual_means [B, Dv]."""
        x, y = _check_pairs(text_embs, visual_means)
        if self.text_dim is None:
            self.text_dim = x.shape[1]
        if self.visual_dim is None:
            self.visual_dim = y.shape[1]
        if x.shape[1] != self.text_dim or y.shape[1] != self.visual_dim:
            raise ValueError(
                f"collector holds [{self.text_dim}] -> [{self.visual_dim}] pairs, got [{x.shape[1]}] -> [{y.shape[1]}]"
            )
        nb = x.shape[0]
        if nb == 0:
            return
        mean_xb, mean_yb = x.mean(axis=0), y.mean(axis=0)
        xc, yc = x - mean_xb, y - mean_yb
        cxx_b, cxy_b = xc.T @ xc, xc.T @ yc
        if self.count == 0:
            self._mean_x, self._mean_y, self._cxx, self._cxy = mean_xb, mean_yb, cxx_b, cxy_b
            self.count = nb
            return
        na, n = self.count, self.count + nb
        dx, dy = mean_xb - self._mean_x, mean_yb - self._mean_y
        scale = na * nb / n
        self._cxx = self._cxx + cxx_b + scale * np.outer(dx, dx)
        self._cxy = self._cxy + cxy_b + scale * np.outer(dx, dy)
        self._mean_x = self._mean_x + dx * (nb / n)
        self._mean_y = self._mean_y + dy * (nb / n)
        self.count = n

    def fit(self, ridge: float = 1e-2, fit_bias: bool = True) -> TextProjection:
        if self.count == 0:
            raise ValueError("no pairs collected: cannot fit the text projection")
        return _solve(self._cxx, self._cxy, self._mean_x, self._mean_y, self.count, ridge, fit_bias)


def mean_token_in_mask(vision_feats: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean [C] float32 of the feature-grid tokens of vision_feats [C, H, W] that the object mask
    [h, w] bool covers by >= 50%: block-averaged when h, w are multiples of H, W, else the mask value
    nearest each token's cell centre."""
    feats = np.asarray(vision_feats)
    mask = np.asarray(mask)
    if feats.ndim != 3 or not np.issubdtype(feats.dtype, np.floating):
        raise ValueError(f"vision_feats must be float [C, H, W], got {feats.dtype} {feats.shape}")
    if mask.ndim != 2 or mask.dtype != np.bool_:
        raise ValueError(f"mask must be bool [h, w] (threshold logits first), got {mask.dtype} {mask.shape}")
    if not mask.any():
        raise ValueError("mask is empty: no object pixels to average over")
    _, H, W = feats.shape
    h, w = mask.shape
    if h % H == 0 and w % W == 0:
        coverage = mask.reshape(H, h // H, W, w // W).mean(axis=(1, 3))
        cells = coverage >= 0.5
    else:
        rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
        cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
        cells = mask[np.ix_(rows, cols)]
    if not cells.any():
        raise ValueError(
            f"mask ({int(mask.sum())} pixels of {h}x{w}) covers no cell of the {H}x{W} feature grid by >= 50%"
        )
    return feats[:, cells].astype(np.float64).mean(axis=1).astype(np.float32)
