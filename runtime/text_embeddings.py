"""Torch-free reader for the CLIP text embeddings written by `fastsam2-export text`.

The .npz holds `texts` [N] unicode, `embeddings` [N, D] float32 (rows L2-normalized) and the 0-d
metadata `clip_model`, `weights` (sha256 prefix of the checkpoint, or "random-init") and `dim`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import UserError

REQUIRED_KEYS = ("texts", "embeddings", "clip_model", "weights", "dim")
# float32 CLIP outputs normalized in float32 are within ~1e-6 of unit norm; 1e-3 only catches real errors.
NORM_TOLERANCE = 1e-3
RANDOM_WEIGHTS_ID = "random-init"


class TextEmbeddingError(UserError, ValueError):
    """A text-embedding file or vocabulary that cannot be used (one line naming the file)."""


@dataclass
class TextEmbeddings:
    """Object descriptions and their CLIP text embeddings [N, D] float32, one L2-normalized row each."""

    texts: list[str]
    embeddings: np.ndarray
    clip_model: str
    weights: str

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def is_random(self) -> bool:
        """True when the embeddings came from random CLIP weights (meaningless for routing)."""
        return self.weights == RANDOM_WEIGHTS_ID

    def get(self, text: str) -> np.ndarray:
        """Embedding [D] float32 of one description; KeyError names the available ones."""
        try:
            idx = self.texts.index(text)
        except ValueError:
            raise KeyError(f"no text embedding for {text!r}; available: {self.texts}") from None
        return self.embeddings[idx]


def load_text_embeddings(path: str | os.PathLike) -> TextEmbeddings:
    """Read and check a text-embedding .npz; any problem is a one-line ValueError."""
    from .npz import read_npz

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise TextEmbeddingError(f"text embeddings file not found: {path}")
    arrays = read_npz(path, what="text embeddings", error=TextEmbeddingError)
    files = list(arrays)
    missing = [k for k in REQUIRED_KEYS if k not in files]
    if missing:
        raise TextEmbeddingError(f"{path} is not a text-embedding file: missing keys {missing} (has {sorted(files)})")

    texts, emb = arrays["texts"], arrays["embeddings"]
    if texts.ndim != 1 or texts.dtype.kind != "U":
        raise TextEmbeddingError(f"{path}: 'texts' must be a 1-D unicode array, got {texts.dtype} {texts.shape}")
    if emb.ndim != 2 or emb.dtype != np.float32:
        raise TextEmbeddingError(f"{path}: 'embeddings' must be [N, D] float32, got {emb.dtype} {emb.shape}")
    if emb.shape[0] != texts.shape[0]:
        raise TextEmbeddingError(f"{path}: {texts.shape[0]} texts but {emb.shape[0]} embedding rows")
    if int(arrays["dim"]) != emb.shape[1]:
        raise TextEmbeddingError(f"{path}: metadata dim={int(arrays['dim'])} but embeddings have D={emb.shape[1]}")
    if not np.all(np.isfinite(emb)):
        raise TextEmbeddingError(f"{path}: embeddings contain NaN or inf")
    norms = np.linalg.norm(emb.astype(np.float64), axis=1)
    bad = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
    if bad.size:
        raise TextEmbeddingError(
            f"{path}: embedding rows are not L2-normalized (row {int(bad[0])} has norm {norms[bad[0]]:.4f})"
        )
    return TextEmbeddings(
        texts=[str(t) for t in texts],
        embeddings=emb,
        clip_model=str(arrays["clip_model"]),
        weights=str(arrays["weights"]),
    )


def load_vocabulary(path: str | os.PathLike | None = None) -> list[str]:
    """Object names, one per line (blank lines and '#' comments skipped); default: the shipped
    COCO + common LVIS/robotics vocabulary in fastsam2/runtime/data/vocabulary.txt."""
    if path is None:
        from importlib.resources import files

        text = files("fastsam2.runtime").joinpath("data/vocabulary.txt").read_text(encoding="utf-8")
    else:
        if not os.path.isfile(path):
            raise TextEmbeddingError(f"vocabulary file not found: {os.fspath(path)}")
        with open(path, encoding="utf-8") as f:
            text = f.read()
    names = [line.strip() for line in text.splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise TextEmbeddingError("vocabulary is empty")
    return list(dict.fromkeys(names))
