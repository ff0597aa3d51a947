from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fastsam2.runtime.output import (
    DAVIS_PALETTE,
    OutputError,
    OverlayVideoWriter,
    labels_from_masks,
    overlay,
    save_indexed_png,
)


def _color(i: int) -> tuple[int, int, int]:
    return tuple(DAVIS_PALETTE[3 * i : 3 * i + 3])


def test_davis_palette_values():
    assert len(DAVIS_PALETTE) == 768 and all(0 <= v <= 255 for v in DAVIS_PALETTE)
    assert _color(0) == (0, 0, 0)
    assert _color(1) == (128, 0, 0)
    assert _color(2) == (0, 128, 0)
    assert _color(3) == (128, 128, 0)
    assert _color(4) == (0, 0, 128)
    assert _color(5) == (128, 0, 128)
    assert _color(7) == (128, 128, 128)
    assert _color(8) == (64, 0, 0)
    assert _color(15) == (192, 128, 128)
    assert _color(255) == (224, 224, 192)


def test_labels_from_masks_later_object_wins():
    a = np.zeros((4, 6), bool)
    a[:, :3] = True
    b = np.zeros((4, 6), bool)
    b[:, 2:5] = True
    labels = labels_from_masks({3: a, 7: b[None]})
    assert labels.dtype == np.uint8 and labels.shape == (4, 6)
    np.testing.assert_array_equal(labels[0], [3, 3, 7, 7, 7, 0])
    np.testing.assert_array_equal(labels_from_masks({7: b, 3: a})[0], [3, 3, 3, 7, 7, 0])


def test_labels_from_masks_checks():
    m = np.ones((2, 2), bool)
    for bad_id in (0, 256, -1):
        with pytest.raises(ValueError, match="1..255"):
            labels_from_masks({bad_id: m})
    with pytest.raises(ValueError, match="must be bool"):
        labels_from_masks({1: m.astype(np.float32)})
    with pytest.raises(ValueError, match="expected"):
        labels_from_masks({1: m, 2: np.ones((3, 2), bool)})
    with pytest.raises(ValueError, match="no masks"):
        labels_from_masks({})
    np.testing.assert_array_equal(labels_from_masks({}, shape=(2, 3)), np.zeros((2, 3), np.uint8))


def test_indexed_png_roundtrip(tmp_path):
    labels = np.random.default_rng(0).integers(0, 256, (37, 53)).astype(np.uint8)
    path = tmp_path / "sub" / "00000.png"
    save_indexed_png(path, labels)
    img = Image.open(path)
    assert img.mode == "P"
    assert img.getpalette()[:768] == DAVIS_PALETTE
    np.testing.assert_array_equal(np.array(img), labels)
    with pytest.raises(ValueError, match="uint8"):
        save_indexed_png(path, labels.astype(np.int32))


def test_overlay_changes_only_object_pixels_and_their_edges():
    image = np.full((40, 50, 3), 200, np.uint8)
    labels = np.zeros((40, 50), np.uint8)
    labels[10:20, 10:30] = 1
    out = overlay(image, labels, alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    # Interior: 0.5 * 200 + 0.5 * (128, 0, 0).
    np.testing.assert_array_equal(out[15, 20], [164, 100, 100])
    # Far from the object nothing changes (contours are at most 2 px wide).
    np.testing.assert_array_equal(out[30:, :], image[30:, :])
    np.testing.assert_array_equal(out[:, 35:], image[:, 35:])
    np.testing.assert_array_equal(overlay(image, np.zeros_like(labels)), image)
    with pytest.raises(ValueError, match="do not match"):
        overlay(image, labels[:-1])


def test_mp4_written_and_read_back(tmp_path):
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "out.mp4"
    labels = np.zeros((48, 64), np.uint8)
    labels[10:30, 20:40] = 2
    with OverlayVideoWriter(path, fps=10) as writer:
        for i in range(6):
            writer.write(np.full((48, 64, 3), 20 * i, np.uint8), labels)
        assert writer.num_written == 6
        with pytest.raises(ValueError, match="64x48"):
            writer.write(np.zeros((32, 32, 3), np.uint8))
    cap = cv2.VideoCapture(str(path))
    try:
        assert cap.isOpened()
        assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (64, 48)
        count = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if count == 5:
                # Object 2 is green in the palette: the overlay must come back green, not red (BGR order).
                b, g, r = bgr[20, 30].astype(int)
                assert g > r + 20 and g > b + 20
            count += 1
    finally:
        cap.release()
    assert count == 6


def test_video_writer_open_failure(tmp_path):
    pytest.importorskip("cv2")
    # A directory where the file should go cannot be opened for writing.
    path = tmp_path / "taken.mp4"
    path.mkdir()
    writer = OverlayVideoWriter(path, fps=5)
    with pytest.raises(OutputError, match="cannot open a video writer"):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="fps"):
        OverlayVideoWriter(tmp_path / "x.mp4", fps=0)


def test_random_weights_are_marked_on_every_overlay_frame(tmp_path):
    from fastsam2.runtime.output import OverlayFramesWriter, stamp

    image = np.full((60, 200, 3), 128, np.uint8)
    marked = stamp(image, "RANDOM weights")
    band = marked[:20]
    assert (band == 0).any() and (band > 200).any()  # black band, white (antialiased) text
    assert np.array_equal(marked[30:], image[30:])  # the rest of the frame untouched
    with OverlayFramesWriter(tmp_path / "overlay", banner="RANDOM weights") as w:
        w.write(image, np.zeros((60, 200), np.uint8))
    from PIL import Image

    written = np.asarray(Image.open(tmp_path / "overlay" / "00000.jpg"))
    assert written[:20].min() < 40 and written[:20].max() > 180  # the mark survives JPEG
