from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastsam2.runtime.frames import (
    BadFrameError,
    FolderSource,
    FrameSourceError,
    StreamSource,
    VideoFileSource,
    open_frames,
    require_cv2,
    sort_frame_files,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BEDROOM = DATA / "bedroom"
BEDROOM_MP4 = DATA / "bedroom.mp4"
needs_bedroom = pytest.mark.skipif(not BEDROOM.is_dir(), reason="shared bedroom frames not available")
needs_mp4 = pytest.mark.skipif(not BEDROOM_MP4.is_file(), reason="shared bedroom.mp4 not available")


def _write_jpegs(folder: Path, names: list[str], size=(32, 24)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    images = []
    for name in names:
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / name, quality=90)
        images.append(arr)
    return images


def test_numeric_sort_like_sam2():
    paths = [Path(n) for n in ["10.jpg", "2.jpg", "0.JPG", "1.png"]]
    assert [p.name for p in sort_frame_files(paths)] == ["0.JPG", "1.png", "2.jpg", "10.jpg"]


def test_natural_sort_for_non_integer_stems():
    paths = [Path(n) for n in ["frame10.jpg", "frame2.jpg", "Frame1.jpg"]]
    assert [p.name for p in sort_frame_files(paths)] == ["Frame1.jpg", "frame2.jpg", "frame10.jpg"]


@needs_bedroom
def test_folder_first_frames_bit_identical_to_pil(tmp_path):
    # A 5-frame copy keeps the test fast; names mimic SAM2's folders (numeric stems).
    for i in range(5):
        shutil.copy(BEDROOM / f"{i:05d}.jpg", tmp_path / f"{i}.jpg")
    (tmp_path / "notes.txt").write_text("not a frame")
    with open_frames(tmp_path) as src:
        assert isinstance(src, FolderSource)
        assert (src.height, src.width, src.num_frames) == (540, 960, 5)
        frames = list(src)
    assert [f.index for f in frames] == list(range(5))
    assert [f.name for f in frames] == [str(i) for i in range(5)]
    for f in frames:
        expected = np.array(Image.open(BEDROOM / f"{f.index:05d}.jpg").convert("RGB"))
        assert f.image.dtype == np.uint8 and f.image.shape == (540, 960, 3)
        np.testing.assert_array_equal(f.image, expected)
    np.testing.assert_array_equal(src.get(3).image, frames[3].image)


def _folder_with_truncated_middle(tmp_path: Path) -> Path:
    _write_jpegs(tmp_path, ["00000.jpg", "00001.jpg", "00002.jpg", "00003.jpg"])
    data = (tmp_path / "00002.jpg").read_bytes()
    (tmp_path / "00002.jpg").write_bytes(data[: len(data) // 2])
    return tmp_path


def test_truncated_jpeg_stops_iteration_naming_the_frame(tmp_path):
    src = FolderSource(_folder_with_truncated_middle(tmp_path))
    seen = []
    with pytest.raises(BadFrameError, match="00002.jpg") as info:
        for frame in src:
            seen.append(frame.index)
    assert seen == [0, 1]
    assert info.value.index == 2 and info.value.name == "00002"


def test_truncated_jpeg_skipped_keeps_indices(tmp_path):
    src = FolderSource(_folder_with_truncated_middle(tmp_path), on_bad_frame="skip")
    with pytest.warns(UserWarning, match="00002"):
        frames = list(src)
    assert [f.index for f in frames] == [0, 1, 3]
    assert [f.name for f in frames] == ["00000", "00001", "00003"]
    assert src.skipped == [2]


def test_frame_of_other_size_is_bad(tmp_path):
    _write_jpegs(tmp_path, ["0.jpg", "1.jpg"])
    _write_jpegs(tmp_path, ["2.png"], size=(16, 16))
    with pytest.raises(BadFrameError, match="16x16"):
        list(FolderSource(tmp_path))


def test_bad_policy_value_rejected(tmp_path):
    _write_jpegs(tmp_path, ["0.jpg"])
    with pytest.raises(ValueError, match="on_bad_frame"):
        FolderSource(tmp_path, on_bad_frame="ignore")


def test_missing_path(tmp_path):
    with pytest.raises(FrameSourceError, match="video not found: .*nope"):
        open_frames(tmp_path / "nope")


def test_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(FrameSourceError, match="no .jpg/.jpeg/.png frames"):
        open_frames(str(tmp_path))


def test_folder_index_out_of_range(tmp_path):
    _write_jpegs(tmp_path, ["0.jpg", "1.jpg"])
    with pytest.raises(IndexError, match="out of range"):
        FolderSource(tmp_path).get(2)


@needs_mp4
def test_video_file_sequential_and_seek():
    with open_frames(BEDROOM_MP4) as src:
        assert isinstance(src, VideoFileSource)
        assert (src.height, src.width) == (540, 960)
        assert src.num_frames == 200
        it = iter(src)
        frames = [next(it) for _ in range(7)]
        assert frames[0].image.shape == (540, 960, 3) and frames[0].image.dtype == np.uint8
        assert [f.index for f in frames] == list(range(7))
        seeked = src.get(5)
        np.testing.assert_array_equal(seeked.image, frames[5].image)
        assert seeked.index == 5 and seeked.name == "00005"
        # Going back to an earlier frame after the seek must still be exact.
        np.testing.assert_array_equal(src.get(2).image, frames[2].image)
        np.testing.assert_array_equal(src.get(0).image, frames[0].image)


@needs_mp4
@needs_bedroom
def test_video_is_rgb_not_bgr():
    # The mp4 was encoded from the JPEG folder: lossy, but channel order must agree.
    with VideoFileSource(BEDROOM_MP4) as src:
        video = src.get(0).image.astype(np.float32)
    jpeg = np.array(Image.open(BEDROOM / "00000.jpg").convert("RGB"), dtype=np.float32)
    assert np.abs(video - jpeg).mean() < np.abs(video[:, :, ::-1] - jpeg).mean()


def test_bogus_video_file(tmp_path):
    bogus = tmp_path / "clip.mp4"
    bogus.write_bytes(b"this is not a video" * 100)
    with pytest.raises(FrameSourceError, match="clip.mp4"):
        open_frames(bogus)


def test_unopenable_stream_is_a_frame_source_error():
    # Port 9 on localhost: nothing listens, so opening fails fast.
    with pytest.raises(FrameSourceError, match="127.0.0.1"):
        StreamSource("udp://127.0.0.1:9?timeout=100000")


def test_dispatch_camera_and_url(monkeypatch):
    opened = []

    def fake_init(self, target, *, on_bad_frame="stop"):
        opened.append(target)

    monkeypatch.setattr(StreamSource, "__init__", fake_init)
    for source in (0, "1", "rtsp://cam.local/stream", "http://host/video"):
        assert isinstance(open_frames(source), StreamSource)
    assert opened == [0, "1", "rtsp://cam.local/stream", "http://host/video"]


def test_stream_has_no_random_access(monkeypatch):
    monkeypatch.setattr(StreamSource, "__init__", lambda self, *a, **k: setattr(self, "name", "camera 0"))
    with pytest.raises(FrameSourceError, match="random access"):
        StreamSource(0).get(3)


def test_missing_cv2_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match=r"pip install fastsam2\[video\]"):
        require_cv2("reading a video file")



def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    # PIL's convert("RGB") clips I;16 to 255 (an all-white video); frames must keep their contrast.
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(ramp).save(tmp_path / "00000.png")
    with FolderSource(tmp_path) as src:
        img = src.get(0).image
    assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
    np.testing.assert_array_equal(img[..., 0], np.round(ramp / 257.0).astype(np.uint8))
    assert img.min() == 0 and (img == 255).mean() < 0.01  # clipping made ~100% white


def test_same_stem_in_two_formats_is_refused(tmp_path):
    for name in ("a.jpg", "a.png", "b.jpg"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name)
    with pytest.raises(FrameSourceError, match="a.jpg and a.png are both frame 'a'"):
        FolderSource(tmp_path)
