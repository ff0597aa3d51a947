"""Frame sources: a folder of JPEG/PNG files, a video file, or a live stream, read one frame at a time.

Every source yields :class:`Frame` objects holding an ``HxWx3 uint8 RGB`` image. Nothing here reads the
whole video into memory. Folders are decoded with PIL exactly as SAM2's own loader does, so a folder
gives bit-identical pixels to ``np.array(Image.open(p).convert("RGB"))``. Video files and streams need
OpenCV (``pip install fastsam2[video]``), imported only when such a source is opened.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Iterator

import numpy as np
from .errors import MissingDependency, UserError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
BAD_FRAME_POLICIES = ("stop", "skip")

# "rtsp://...", "http://...", "udp://..."; a Windows drive letter ("C:\\") has no "//" so never matches.
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


class FrameSourceError(UserError, ValueError):
    """A frame source cannot be opened or read; the message names the path and the problem."""


class BadFrameError(FrameSourceError):
    """One frame in the middle of a source cannot be decoded (or has a different size)."""

    def __init__(self, message: str, *, index: int, name: str):
        super().__init__(message)
        self.index = index
        self.name = name


def require_cv2(purpose: str) -> ModuleType:
    """Import OpenCV lazily: runtime installs may lack it, and only some features need it."""
    try:
        import cv2
    except ImportError:
        raise MissingDependency(f"{purpose} needs OpenCV: pip install fastsam2[video]") from None
    return cv2


def has_cv2() -> bool:
    """Whether OpenCV can be imported (without importing it twice: a found module is reused)."""
    import importlib.util

    try:
        return importlib.util.find_spec("cv2") is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``image`` is HxWx3 uint8 RGB; ``name`` is the file stem or a 5-digit index."""

    index: int
    image: np.ndarray
    name: str


class FrameSource:
    """Base class: ``height``/``width`` come from the first frame (decoded at open).

    ``on_bad_frame`` says what iteration does with an undecodable frame: ``"stop"`` raises
    :class:`BadFrameError`; ``"skip"`` warns, appends its index to ``self.skipped`` and goes on, so later
    frames keep their own indices (the output just has a gap).
    """

    height: int
    width: int
    num_frames: int | None
    name: str

    def __init__(self, *, on_bad_frame: str = "stop"):
        if on_bad_frame not in BAD_FRAME_POLICIES:
            raise ValueError(f"on_bad_frame must be one of {BAD_FRAME_POLICIES}, got {on_bad_frame!r}")
        self.on_bad_frame = on_bad_frame
        self.skipped: list[int] = []

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def iter_from(self, start: int) -> Iterator[Frame]:
        """Frames with index >= ``start``, in order (seekable sources override this to seek)."""
        for frame in self:
            if frame.index >= start:
                yield frame

    def get(self, index: int) -> Frame:
        """Random access to frame ``index``; sources that cannot seek raise FrameSourceError."""
        raise FrameSourceError(f"{self.name}: random access is not supported by {type(self).__name__}")

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        pass

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        if self.num_frames is None:
            raise TypeError(f"{self.name}: the number of frames is unknown (live stream or no frame count)")
        return self.num_frames

    def _handle_bad(self, err: BadFrameError) -> None:
        """Apply the on_bad_frame policy during iteration: raise, or warn and record the index."""
        if self.on_bad_frame == "stop":
            raise err
        self.skipped.append(err.index)
        logger.warning("skipping frame %d (%s): %s", err.index, err.name, err)
        warnings.warn(f"skipping bad frame {err.index} ({err.name}): {err}", stacklevel=3)

    def _check_size(self, image: np.ndarray, index: int, name: str) -> None:
        if image.shape[:2] != (self.height, self.width):
            raise BadFrameError(
                f"{name}: frame {index} is {image.shape[1]}x{image.shape[0]}, "
                f"but the first frame is {self.width}x{self.height}",
                index=index,
                name=name,
            )


# -- folder of images --------------------------------------------------------------------------------
def _natural_key(name: str) -> list[int | str]:
    # Digit runs compare as numbers so "frame2" < "frame10"; text parts compare case-insensitively.
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def sort_frame_files(paths: list[Path]) -> list[Path]:
    """Numeric order when every stem is an integer (SAM2's rule: 0, 1, 10), else natural order."""
    if all(p.stem.isdigit() for p in paths):
        # Tie-break on the name so "1.jpg"/"01.jpg" have a stable order.
        return sorted(paths, key=lambda p: (int(p.stem), p.name))
    return sorted(paths, key=lambda p: (_natural_key(p.name), p.name))


def image_to_rgb8(img) -> np.ndarray:
    """A PIL image as HxWx3 uint8 RGB; 16-bit grayscale is scaled to 8 bits (PIL's convert would clip it)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        wide = np.asarray(img).astype(np.int64)
        if wide.min() < 0 or wide.max() > 65535:
            raise ValueError(f"{img.mode} pixel values outside 0..65535")
        gray = ((wide * 255 + 32767) // 65535).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    return np.array(img.convert("RGB"))


def read_image(path: str | Path) -> np.ndarray:
    """Decode one JPEG/PNG file to HxWx3 uint8 RGB, as SAM2's loader does (PIL); the one frame decoder.

    A file PIL cannot fully decode raises :class:`BadFrameError` (with ``index`` -1)."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as img:
            # convert() forces a full decode, so a truncated JPEG raises here (as long as
            # ImageFile.LOAD_TRUNCATED_IMAGES is False, PIL's default) instead of yielding gray rows.
            return image_to_rgb8(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadFrameError(str(e), index=-1, name=path.stem) from e


class FolderSource(FrameSource):
    """A folder of .jpg/.jpeg/.png files (any case; hidden files ignored), decoded with PIL."""

    def __init__(self, path: str | Path, *, on_bad_frame: str = "stop"):
        super().__init__(on_bad_frame=on_bad_frame)
        self.path = Path(path)
        self.name = self.path.name or str(self.path)
        if not self.path.is_dir():
            raise FrameSourceError(f"frame folder not found: {self.path}")
        # A name that is not a folder is a frame, even where it cannot be opened (a dangling
        # symbolic link, no permission): that frame fails to decode and --on-bad-frame decides.
        files = [
            p
            for p in self.path.iterdir()
            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and not p.is_dir()
        ]
        if not files:
            raise FrameSourceError(f"{self.path}: no .jpg/.jpeg/.png frames in folder")
        self.files = sort_frame_files(files)
        by_stem: dict[str, Path] = {}
        for f in self.files:  # masks are written as <stem>.png: two frames may not share a stem
            if f.stem in by_stem:
                raise FrameSourceError(
                    f"{self.path}: {by_stem[f.stem].name} and {f.name} are both frame {f.stem!r} "
                    "(results are named by the file's stem): keep one of them"
                )
            by_stem[f.stem] = f
        self.num_frames = len(self.files)
        first = self._decode(0)
        self.height, self.width = first.shape[:2]

    def _decode(self, index: int) -> np.ndarray:
        path = self.files[index]
        try:
            return read_image(path)
        except BadFrameError as e:
            raise BadFrameError(f"{path}: cannot decode frame {index}: {e}", index=index, name=path.stem) from e

    def get(self, index: int) -> Frame:
        """Decode frame ``index``; a bad frame raises BadFrameError whatever ``on_bad_frame`` says."""
        if not -self.num_frames <= index < self.num_frames:
            raise IndexError(f"{self.path}: frame {index} out of range (0..{self.num_frames - 1})")
        index %= self.num_frames
        image = self._decode(index)
        self._check_size(image, index, str(self.files[index]))
        return Frame(index, image, self.files[index].stem)

    def __iter__(self) -> Iterator[Frame]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[Frame]:
        for index in range(max(start, 0), self.num_frames):
            try:
                yield self.get(index)
            except BadFrameError as e:
                self._handle_bad(e)


# -- OpenCV sources ------------------------------------------------------------------------------------
class _CaptureSource(FrameSource):
    """Shared cv2.VideoCapture plumbing; the first frame is decoded at open and kept for frame 0."""

    def _open_capture(self, target: str | int, label: str) -> None:
        cv2 = require_cv2(f"reading {label}")
        self._cv2 = cv2
        self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            self._cap.release()
            raise FrameSourceError(f"cannot open {label}: {target}")
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            self._cap.release()
            raise FrameSourceError(f"{target}: no frames could be decoded from {label}")
        self._first = self._to_rgb(bgr)
        self.height, self.width = self._first.shape[:2]
        self._pos = 1  # index of the frame the next read() returns

    def _to_rgb(self, bgr: np.ndarray) -> np.ndarray:
        if bgr.ndim == 2:  # some backends return gray frames
            return np.ascontiguousarray(np.repeat(bgr[:, :, None], 3, axis=2))
        return np.ascontiguousarray(bgr[:, :, 2::-1])

    def _read_next(self) -> np.ndarray | None:
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            return None
        self._pos += 1
        return self._to_rgb(bgr)

    def _iter_capture(self) -> Iterator[Frame]:
        yield Frame(0, self._first.copy(), f"{0:05d}")
        if self._pos != 1:
            self._seek(1)
        while True:
            index = self._pos
            image = self._read_next()
            if image is None:
                image, index = self._after_failed_read(index)
                if image is None:
                    return
            try:
                self._check_size(image, index, f"{self.name} frame {index}")
            except BadFrameError as e:
                self._handle_bad(e)
                continue
            yield Frame(index, image, f"{index:05d}")

    def _after_failed_read(self, index: int) -> tuple[np.ndarray | None, int]:
        """A read failed at ``index``: the end, or frames the container has but cannot decode.

        Containers' frame counts can be estimates, so a failure within the last 1% (at least 2
        frames) of the reported count is the end. Earlier, it is a bad frame for ``on_bad_frame``:
        ``stop`` raises; ``skip`` reads on and resumes at the next decodable frame (each frame in
        between is skipped), or records the rest as skipped if none decodes. Returns (image, index)
        of the frame to resume with, or (None, index) at the end.
        """
        count = self.num_frames
        if count is None or count - index <= max(2, count // 100):
            if count is not None and index < count:
                logger.warning("%s: decoded %d frames, container reported %d", self.name, index, count)
            return None, index
        bad = BadFrameError(
            f"{self.name}: frame {index} of the {count} the container reports cannot be decoded "
            "(corrupt or truncated video)",
            index=index,
            name=f"{index:05d}",
        )
        self._handle_bad(bad)  # raises for "stop"
        for later in range(index + 1, count):
            ok, bgr = self._cap.read()
            if ok and bgr is not None:
                self._pos = later + 1
                return self._to_rgb(bgr), later
            self.skipped.append(later)
        self._pos = count
        return None, count

    def _seek(self, index: int) -> None:
        raise FrameSourceError(f"{self.name}: cannot seek in a live stream")

    def close(self) -> None:
        cap = getattr(self, "_cap", None)
        if cap is not None:
            cap.release()
            self._cap = None


class VideoFileSource(_CaptureSource):
    """A video file read with OpenCV (BGR converted to RGB); frame names are 5-digit indices.

    ``num_frames`` is the container's CAP_PROP_FRAME_COUNT, which can be approximate (it is derived
    from duration x fps for some formats); iteration simply stops at the last decodable frame. It is
    None when the container does not report a count.
    """

    def __init__(self, path: str | Path, *, on_bad_frame: str = "stop"):
        super().__init__(on_bad_frame=on_bad_frame)
        self.path = Path(path)
        self.name = self.path.name
        if not self.path.is_file():
            raise FrameSourceError(f"video not found: {self.path}")
        self._open_capture(str(self.path), "a video file")
        count = int(self._cap.get(self._cv2.CAP_PROP_FRAME_COUNT))
        self.num_frames = count if count > 0 else None
        fps = self._cap.get(self._cv2.CAP_PROP_FPS)
        self.fps: float | None = fps if fps > 0 else None

    def _seek(self, index: int) -> None:
        cv2 = self._cv2
        if self._cap.set(cv2.CAP_PROP_POS_FRAMES, index) and int(self._cap.get(cv2.CAP_PROP_POS_FRAMES)) == index:
            self._pos = index
            return
        # The backend could not seek exactly: rewind and decode forward, slow but correct.
        self._cap.release()
        self._cap = cv2.VideoCapture(str(self.path))
        self._pos = 0
        while self._pos < index:
            if not self._cap.grab():
                raise IndexError(f"{self.path}: frame {index} is past the end of the video")
            self._pos += 1

    def get(self, index: int) -> Frame:
        """Seek to frame ``index`` (0-based) and decode it; past the end raises IndexError."""
        if index < 0:
            raise IndexError(f"{self.path}: negative frame index {index}")
        if index == 0:
            return Frame(0, self._first.copy(), f"{0:05d}")
        if self._pos != index:
            self._seek(index)
        image = self._read_next()
        if image is None:
            raise IndexError(f"{self.path}: cannot read frame {index} (the video may have fewer frames)")
        self._check_size(image, index, f"{self.path} frame {index}")
        return Frame(index, image, f"{index:05d}")

    def __iter__(self) -> Iterator[Frame]:
        return self._iter_capture()


class StreamSource(_CaptureSource):
    """A camera (index ``0`` or ``"0"``) or network stream URL (rtsp://, http(s)://, udp://, ...).

    ``num_frames`` is None and there is no random access; iteration ends when the stream does.
    Iterate only once: a live stream cannot be rewound.
    """

    def __init__(self, url_or_index: str | int, *, on_bad_frame: str = "stop"):
        super().__init__(on_bad_frame=on_bad_frame)
        target: str | int = url_or_index
        if isinstance(target, str) and target.strip().isdigit():
            target = int(target)
        self.name = f"camera {target}" if isinstance(target, int) else str(target)
        self._open_capture(target, "a camera" if isinstance(target, int) else "a stream")
        self.num_frames = None
        self._iterated = False

    def __iter__(self) -> Iterator[Frame]:
        if self._iterated:
            raise FrameSourceError(f"{self.name}: a live stream can be iterated only once")
        self._iterated = True
        return self._iter_capture()


def open_frames(source: str | int | Path, *, on_bad_frame: str = "stop") -> FrameSource:
    """Open ``source``: an int or digit string is a camera, ``scheme://`` a stream, a directory a
    folder of frames, any other existing file a video."""
    if isinstance(source, bool):
        raise TypeError(f"frame source must be a path, URL or camera index, got {source!r}")
    if isinstance(source, int) or (isinstance(source, str) and source.strip().isdigit()):
        return StreamSource(source, on_bad_frame=on_bad_frame)
    if isinstance(source, str) and _URL_RE.match(source):
        if source.lower().startswith("file://"):
            source = source[len("file://") :]
        else:
            return StreamSource(source, on_bad_frame=on_bad_frame)
    path = Path(source).expanduser()
    if path.is_dir():
        return FolderSource(path, on_bad_frame=on_bad_frame)
    if path.is_file():
        return VideoFileSource(path, on_bad_frame=on_bad_frame)
    raise FrameSourceError(f"video not found: {path}")
