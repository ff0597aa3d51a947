"""Writing tracking results: DAVIS-style indexed PNGs (pixel value = object id) and overlay videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .frames import require_cv2
from .outdir import OutputError


def _voc_palette() -> list[int]:
    # The PASCAL VOC colormap DAVIS uses: the bits of the index are spread over the high bits of R, G, B.
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


DAVIS_PALETTE: list[int] = _voc_palette()
"""Flat [r0, g0, b0, r1, ...] list of 768 ints: 0 black, 1 (128,0,0), 2 (0,128,0), 3 (128,128,0), ..."""

_PALETTE_RGB = np.array(DAVIS_PALETTE, dtype=np.uint8).reshape(256, 3)


def labels_from_masks(masks: dict[int, np.ndarray], *, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Merge per-object boolean masks into one label image (uint8 HxW, pixel = object id, 0 = none).

    masks: {object id in 1..255: bool HxW} (leading size-1 axes such as [1, H, W] are accepted).
    Where masks overlap, the object later in dict order wins. ``shape`` gives the size when ``masks``
    is empty (a frame where nothing is tracked).
    """
    if not masks and shape is None:
        raise ValueError("labels_from_masks got no masks and no shape")
    labels = None if shape is None else np.zeros(shape, dtype=np.uint8)
    for obj_id, mask in masks.items():
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)) or not 1 <= obj_id <= 255:
            raise ValueError(f"object ids must be ints in 1..255 for a uint8 label image, got {obj_id!r}")
        mask = np.asarray(mask)
        if mask.dtype != np.bool_:
            # Thresholding belongs to the caller: logits cast to bool would make negatives foreground.
            raise ValueError(f"mask of object {obj_id} must be bool, got {mask.dtype}")
        while mask.ndim > 2 and mask.shape[0] == 1:
            mask = mask[0]
        if mask.ndim != 2:
            raise ValueError(f"mask of object {obj_id} must be HxW, got shape {mask.shape}")
        if labels is None:
            labels = np.zeros(mask.shape, dtype=np.uint8)
        elif mask.shape != labels.shape:
            raise ValueError(f"mask of object {obj_id} is {mask.shape}, expected {labels.shape}")
        labels[mask] = obj_id
    return labels


def save_indexed_png(path: str | Path, labels: np.ndarray) -> None:
    """Write labels (uint8 HxW) as a palette ("P" mode) PNG with DAVIS_PALETTE; parents are created."""
    from PIL import Image

    labels = np.asarray(labels)
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise ValueError(f"labels must be uint8 HxW, got {labels.dtype} {labels.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Build the "P" image from raw bytes: fromarray's mode argument is deprecated in newer Pillow.
    img = Image.frombytes("P", (labels.shape[1], labels.shape[0]), np.ascontiguousarray(labels).tobytes())
    img.putpalette(DAVIS_PALETTE)
    try:
        img.save(path, format="PNG")
    except OSError as e:
        raise OutputError(f"{path}: cannot write PNG: {e}") from e


def stamp(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` (uint8 HxWx3 RGB) with ``text`` in white on a black band across its top (Pillow's
    built-in font): a mark that stays with every frame of an overlay, e.g. RANDOM weights."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(image)
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = draw.textbbox((4, 4), text)
    draw.rectangle((0, 0, image.shape[1], bottom + 4), fill=(0, 0, 0))
    draw.text((4, 4), text, fill=(255, 255, 255))
    return np.asarray(img)


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend palette colours over ``image`` where labels > 0 and draw each object's contour.

    image: uint8 HxWx3 RGB; labels: uint8 HxW; returns a new uint8 HxWx3 RGB image. Contours need
    OpenCV and are left out without it (the fill alone still shows the objects).
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 HxWx3, got {image.dtype} {image.shape}")
    if labels.dtype != np.uint8:
        raise ValueError(f"labels must be uint8 object ids, got {labels.dtype}")
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels {labels.shape} do not match image {image.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out = image.copy()
    fg = labels > 0
    if not fg.any():
        return out
    colors = _PALETTE_RGB[labels[fg]].astype(np.float32)
    blended = image[fg].astype(np.float32) * (1.0 - alpha) + colors * alpha
    out[fg] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    try:
        cv2 = require_cv2("contours")
    except ImportError:
        return out
    for obj_id in np.unique(labels[fg]):
        contours, _ = cv2.findContours((labels == obj_id).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        color = tuple(int(c) for c in _PALETTE_RGB[obj_id])
        # White outer line then the object's colour inside it, so the edge reads on any background.
        cv2.drawContours(out, contours, -1, (255, 255, 255), 2)
        cv2.drawContours(out, contours, -1, color, 1)
    return out


def overlay_frame(image: np.ndarray, labels: np.ndarray | None, *, alpha: float = 0.5,
                  banner: str | None = None) -> np.ndarray:
    """One overlay frame: ``image`` uint8 [H, W, 3] RGB with the objects of ``labels`` (uint8 [H, W])
    blended in when given, and ``banner`` stamped on it when given."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"frame must be uint8 HxWx3, got {image.dtype} {image.shape}")
    if labels is not None:
        image = overlay(image, labels, alpha)
    if banner:
        image = stamp(image, banner)
    return image


class OverlayFramesWriter:
    """The overlay as numbered JPEG frames in a folder (what an install without OpenCV can write);
    the same ``write``/``close`` as :class:`OverlayVideoWriter`."""

    def __init__(self, folder: str | Path, *, alpha: float = 0.5, quality: int = 90, banner: str | None = None):
        self.path = Path(folder)
        self.alpha = alpha
        self.banner = banner
        self.quality = quality
        self.num_written = 0

    def write(self, image: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Append one frame: image uint8 HxWx3 RGB; labels uint8 HxW overlays the objects when given."""
        from PIL import Image

        image = overlay_frame(image, labels, alpha=self.alpha, banner=self.banner)
        self.path.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(self.path / f"{self.num_written:05d}.jpg", quality=self.quality)
        self.num_written += 1

    def close(self) -> None:
        pass

    def __enter__(self) -> OverlayFramesWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


OVERLAY_VIDEO, OVERLAY_FRAMES = "overlay.mp4", "overlay"


def overlay_name() -> str:
    """Where this install writes the overlay: ``overlay.mp4`` with OpenCV, else the ``overlay/`` folder."""
    from .frames import has_cv2

    return OVERLAY_VIDEO if has_cv2() else OVERLAY_FRAMES


def open_overlay_writer(out_dir: str | Path, fps: float, *, banner: str | None = None
                        ) -> OverlayVideoWriter | OverlayFramesWriter:
    """The overlay writer of :func:`overlay_name` inside ``out_dir``; ``banner``: text stamped on
    every frame (:func:`stamp`)."""
    name = overlay_name()
    if name == OVERLAY_VIDEO:
        return OverlayVideoWriter(Path(out_dir) / name, fps=fps, banner=banner)
    return OverlayFramesWriter(Path(out_dir) / name, banner=banner)


class OverlayVideoWriter:
    """Writes RGB frames (optionally with a label overlay) to an .mp4 via cv2.VideoWriter ("mp4v").

    The file is opened on the first frame, whose size every later frame must have.
    """

    def __init__(self, path: str | Path, fps: float = 30.0, *, fourcc: str = "mp4v", alpha: float = 0.5,
                 banner: str | None = None):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if len(fourcc) != 4:
            raise ValueError(f"fourcc must be 4 characters, got {fourcc!r}")
        self.path = Path(path)
        self.fps = float(fps)
        self.fourcc = fourcc
        self.alpha = alpha
        self.banner = banner
        self.num_written = 0
        self._writer = None
        self._size: tuple[int, int] | None = None  # (width, height)
        self._cv2 = require_cv2("writing videos")

    def write(self, image: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Append one frame: image uint8 HxWx3 RGB; labels uint8 HxW overlays the objects when given."""
        image = overlay_frame(image, labels, alpha=self.alpha, banner=self.banner)
        h, w = image.shape[:2]
        if self._writer is None:
            self._open(w, h)
        elif (w, h) != self._size:
            raise ValueError(f"{self.path}: frame is {w}x{h}, but the video is {self._size[0]}x{self._size[1]}")
        self._writer.write(np.ascontiguousarray(image[:, :, ::-1]))
        self.num_written += 1

    def _open(self, width: int, height: int) -> None:
        cv2 = self._cv2
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (width, height))
        if not writer.isOpened():
            writer.release()
            raise OutputError(
                f"{self.path}: cannot open a video writer (fourcc {self.fourcc}, {width}x{height} @ {self.fps} fps)"
            )
        self._writer = writer
        self._size = (width, height)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> OverlayVideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
