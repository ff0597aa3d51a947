"""Frame and prompt preprocessing, equal to what SAM2's video predictor does."""

from __future__ import annotations

import numpy as np


def preprocess_frame(
    image: np.ndarray,
    image_size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> np.ndarray:
    """RGB uint8 [H,W,3] → normalized float32 [1,3,S,S].

    Uses PIL's default ``resize`` like sam2's frame loader, so that a frame gives bit-identical model
    input to the official predictor.
    """
    from PIL import Image

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"frames must be RGB uint8 arrays of shape [H, W, 3], got {image.dtype} {image.shape}"
        )
    resized = np.asarray(Image.fromarray(image).resize((image_size, image_size)))
    x = (resized / 255.0).astype(np.float32).transpose(2, 0, 1)
    x -= np.asarray(mean, dtype=np.float32)[:, None, None]
    x /= np.asarray(std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray(x[None])


def points_to_model(
    points: np.ndarray, video_hw: tuple[int, int], image_size: int
) -> np.ndarray:
    """Pixel (x, y) points in the video frame [N,2] → SAM2 model-input coordinates [N,2] float32,
    computed in the same order of operations as SAM2 (normalize, then scale)."""
    h, w = video_hw
    pts = np.asarray(points, dtype=np.float32) / np.asarray([w, h], dtype=np.float32)
    return (pts * np.float32(image_size)).astype(np.float32)
