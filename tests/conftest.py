"""Shared fixtures. Tests build the real SAM2 configs with random weights (no checkpoint can be
downloaded here); the object-score head gets a positive bias so that masks are non-trivial."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout; FASTSAM2_SHARED_DATA elsewhere (a GPU host carries the frames)
SHARED_DATA = Path(os.environ.get("FASTSAM2_SHARED_DATA", REPO.parent / "shared" / "data"))
BEDROOM = SHARED_DATA / "bedroom"


def pytest_configure(config):
    # sam2 warns once per call when its optional CUDA extension is missing (hole filling is then
    # skipped by the official predictor: parity tests disable it on our side too).
    warnings.filterwarnings("ignore", message=".*cannot import name '_C'.*")
    warnings.filterwarnings("ignore", message=".*Skipping the post-processing step.*")


@pytest.fixture(scope="session")
def bedroom() -> Path:
    if not BEDROOM.is_dir():
        pytest.fail(f"test data missing: {BEDROOM} (CI provides ../shared beside the repo)")
    return BEDROOM


def copy_clip(src: Path, dst: Path, n: int) -> Path:
    """The first ``n`` frames of ``src`` in a folder of their own (SAM2's loader reads a whole folder)."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("*.jpg"))[:n]:
        shutil.copy(f, dst / f.name)
    return dst


@pytest.fixture(scope="session")
def clip25(bedroom, tmp_path_factory) -> Path:
    return copy_clip(bedroom, tmp_path_factory.mktemp("clip25"), 25)


@pytest.fixture(scope="session")
def tiny512():
    """Official SAM2VideoPredictor, tiny config at image_size 512, seeded random weights."""
    from fastsam2.export.models import build_sam2

    return build_sam2("tiny", image_size=512, object_score_bias=5.0, quiet=True, seed=0)


@pytest.fixture(scope="session")
def onnx_tiny512(tiny512, tmp_path_factory) -> Path:
    """tiny@512 exported once per session: the four SAM2 graphs and the default-weights router."""
    import torch

    from fastsam2.export.onnx_export import export_graphs
    from fastsam2.export.router import TokenRouter

    out = tmp_path_factory.getbasetemp() / "onnx_tiny512"
    router = TokenRouter.for_model(tiny512)
    router.fastsam2_weights = "default-weights"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        export_graphs(tiny512, out, router_stage=router, validate=False)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op torch thread for a module (use: pytestmark = usefixtures("single_thread")).
    Under contention OpenMP threads wait on each other: torch reference runs are several times
    slower than with one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
