"""What every benchmark of fastsam2 feeds the trackers: the frames (the sample clip, decoded once and
repeated), the benchmark objects and their prompts, the streams' frame offsets. Used by ``fastsam2
bench`` and the scripts in ``bench/``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# the sample clip shipped in the package (runtime/data/sample, 960x540): a benchmark needs no download
DEFAULT_FRAMES_DIR = Path(__file__).resolve().parents[1] / "runtime" / "data" / "sample"
# Benchmark objects: a box (x0, y0, x1, y1, video pixels of the 960x540 sample) and a positive click
# inside it each; --objects N prompts the first N on frame 0 (SAM2 runs memory attention, the mask
# decoder and the memory encoder once per object and frame).
BENCH_OBJECTS = (
    ((100.0, 100.0, 300.0, 400.0), (200.0, 250.0)),
    ((600.0, 150.0, 900.0, 450.0), (750.0, 300.0)),
    ((350.0, 80.0, 550.0, 280.0), (450.0, 180.0)),
    ((380.0, 300.0, 580.0, 500.0), (480.0, 400.0)),
    ((20.0, 380.0, 180.0, 530.0), (100.0, 455.0)),
    ((780.0, 20.0, 940.0, 140.0), (860.0, 80.0)),
    ((620.0, 460.0, 800.0, 530.0), (710.0, 495.0)),
    ((200.0, 20.0, 340.0, 90.0), (270.0, 55.0)),
)
STREAM_OFFSET = 25  # stream i starts at sample frame 25*i: the streams see different frames


def object_prompts(n: int) -> list[tuple[int, tuple[float, float], tuple[float, float, float, float]]]:
    """[(obj_id, click, box)] for the first n benchmark objects."""
    return [(i + 1, point, box) for i, (box, point) in enumerate(BENCH_OBJECTS[:n])]


class SampleFrames:
    """The sample clip's frames, repeated: frame i is file i mod n. Decoded once, kept in RAM."""

    def __init__(self, folder: str | Path):
        from fastsam2.runtime.frames import FolderSource

        self.files = FolderSource(folder).files
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.files)

    def image(self, i: int) -> np.ndarray:
        j = i % len(self.files)
        img = self._cache.get(j)
        if img is None:
            from fastsam2.runtime.frames import read_image

            img = self._cache[j] = read_image(self.files[j])
        return img

    def preload(self, n: int) -> None:
        for i in range(min(n, len(self.files))):
            self.image(i)

    def link_folder(self, n: int, root: Path) -> Path:
        """A folder of ``n`` JPEG symlinks (00000.jpg ...) for the official predictor's loader."""
        folder = root / f"clip{n}"
        if not folder.is_dir():
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{i:05d}.jpg").symlink_to(self.files[i % len(self.files)].resolve())
        return folder
