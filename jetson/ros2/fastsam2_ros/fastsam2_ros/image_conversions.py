"""sensor_msgs/Image <-> numpy without cv_bridge, and the mask/overlay images (numpy only).

sensor_msgs/msg/Image fields (common_interfaces, sensor_msgs/msg/Image.msg): ``height``, ``width``,
``encoding`` (sensor_msgs/image_encodings.hpp names), ``is_bigendian``, ``step`` (bytes per row, may
include padding), ``data`` (uint8[]: ``array.array('B')`` in rclpy, any buffer works here).

Nothing here imports rclpy: the functions take the message fields (or any object that has them),
so they are unit-tested without ROS. Only 8-bit encodings are handled; anything else (yuv422, bayer,
16-bit) is refused with a hint to convert upstream (image_proc / a camera driver option).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

# encoding -> (channels, index order that turns the channels into RGB; None for mono)
ENCODINGS: dict[str, tuple[int, tuple[int, ...] | None]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, None),
}
OUTPUT_ENCODINGS = ("rgb8", "bgr8")


class ImageConversionError(ValueError):
    """An image message that cannot be converted (one line)."""


def image_to_rgb(
    *, height: int, width: int, encoding: str, step: int, data: Any, is_bigendian: int = 0
) -> np.ndarray:
    """The fields of a sensor_msgs/Image -> RGB uint8 [H, W, 3] (a copy; rows padded by ``step``
    are cropped)."""
    del is_bigendian  # 8-bit encodings only: byte order does not apply
    enc = encoding.lower()
    if enc not in ENCODINGS:
        raise ImageConversionError(
            f"unsupported image encoding {encoding!r}: expected one of {sorted(ENCODINGS)} "
            "(convert upstream, e.g. image_proc, or the camera driver's output format)"
        )
    channels, order = ENCODINGS[enc]
    row = width * channels
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"empty image {width}x{height}")
    if step < row:
        raise ImageConversionError(f"step {step} is less than width*channels {row} for {encoding}")
    buf = np.frombuffer(memoryview(data), dtype=np.uint8)
    if buf.size < step * (height - 1) + row:
        raise ImageConversionError(
            f"image data has {buf.size} bytes, {width}x{height} {encoding} with step {step} needs "
            f"{step * (height - 1) + row}"
        )
    if buf.size < step * height:  # some publishers omit the last row's padding
        buf = np.concatenate([buf, np.zeros(step * height - buf.size, np.uint8)])
    rows = buf[: step * height].reshape(height, step)[:, :row]
    pixels = rows.reshape(height, width, channels)
    if order is None:
        return np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, list(order)])


def msg_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image (or anything with its fields) -> RGB uint8 [H, W, 3]."""
    return image_to_rgb(
        height=int(msg.height),
        width=int(msg.width),
        encoding=str(msg.encoding),
        step=int(msg.step),
        data=msg.data,
        is_bigendian=int(getattr(msg, "is_bigendian", 0)),
    )


def rgb_to_fields(rgb: np.ndarray, encoding: str = "rgb8") -> dict[str, Any]:
    """RGB uint8 [H, W, 3] -> sensor_msgs/Image fields (``data`` as bytes) in rgb8 or bgr8."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageConversionError(f"expected RGB uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    enc = encoding.lower()
    if enc not in OUTPUT_ENCODINGS:
        raise ImageConversionError(f"output encoding must be one of {OUTPUT_ENCODINGS}, got {encoding!r}")
    pixels = rgb if enc == "rgb8" else rgb[:, :, ::-1]
    h, w = rgb.shape[:2]
    return {
        "height": h,
        "width": w,
        "encoding": enc,
        "is_bigendian": 0,
        "step": 3 * w,
        "data": np.ascontiguousarray(pixels).tobytes(),
    }


def mono8_fields(label: np.ndarray) -> dict[str, Any]:
    """uint8 [H, W] -> sensor_msgs/Image fields, encoding mono8."""
    label = np.asarray(label)
    if label.dtype != np.uint8 or label.ndim != 2:
        raise ImageConversionError(f"expected uint8 [H, W], got {label.dtype} {label.shape}")
    h, w = label.shape
    return {"height": h, "width": w, "encoding": "mono8", "is_bigendian": 0, "step": w,
            "data": np.ascontiguousarray(label).tobytes()}


def label_image(logits: np.ndarray, obj_ids: Sequence[int]) -> np.ndarray:
    """Mask logits [O, H, W] -> uint8 [H, W]: each pixel the id of the object with the highest
    positive logit there, 0 where no object's logit is > 0. Ids must be in 1..255."""
    logits = np.asarray(logits)
    ids = [int(i) for i in obj_ids]
    if logits.ndim != 3 or logits.shape[0] != len(ids):
        raise ImageConversionError(f"logits {logits.shape} do not match {len(ids)} object ids")
    bad = [i for i in ids if not 1 <= i <= 255]
    if bad:
        raise ImageConversionError(f"object ids {bad} do not fit a mono8 mask (1..255)")
    h, w = logits.shape[1:]
    if not ids:
        return np.zeros((h, w), np.uint8)
    best = np.argmax(logits, axis=0)
    best_logit = np.take_along_axis(logits, best[None], axis=0)[0]
    lut = np.asarray(ids, np.uint8)
    return np.where(best_logit > 0, lut[best], 0).astype(np.uint8)


def palette(n: int = 256) -> np.ndarray:
    """[n, 3] uint8 colours, 0 black; the PASCAL VOC bit-interleaved palette."""
    out = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[i] = (r, g, b)
    return out


_PALETTE = palette()


def overlay(rgb: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 [H, W, 3] with each labelled pixel blended towards its object's colour."""
    if rgb.shape[:2] != label.shape:
        raise ImageConversionError(f"image {rgb.shape[:2]} and mask {label.shape} differ in size")
    out = rgb.astype(np.float32)
    on = label > 0
    out[on] = (1.0 - alpha) * out[on] + alpha * _PALETTE[label[on]].astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
