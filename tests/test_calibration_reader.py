import numpy as np
import pytest

from fastsam2.calibration.reader import (
    CalibrationDataReader,
    DirectoryCalibrationReader,
    FeedRecorder,
)
from fastsam2.runtime.backends.base import StageError, StageRunner
from fastsam2.runtime.specs import SpecDims, graph_specs

SPEC = graph_specs(SpecDims(image_size=64))["memory_encoder"]  # 4x4 grid, 16x16 masks


class EchoRunner(StageRunner):
    def __init__(self):
        super().__init__(SPEC)
        self.seen = 0
        self.activations = 0

    def activate_impl(self):
        self.activations += 1

    def infer_impl(self, feed):
        self.seen += 1
        k = feed["kept_idx"].shape[1]
        return {"memory": np.zeros((feed["vision_feats"].shape[0], k, 64), np.float32)}


def _feed(i, k=3):
    return {
        "vision_feats": np.full((1, 256, 4, 4), i, np.float32),
        "mask_logits": np.zeros((1, 1, 16, 16), np.float32),
        "object_score_logits": np.zeros((1, 1), np.float32),
        "binarize": np.zeros((1,), np.float32),
        "kept_idx": np.arange(k, dtype=np.int64)[None],
    }


def test_recorder_saves_every_nth_bounded_and_delegates(tmp_path):
    inner = EchoRunner()
    rec = FeedRecorder(inner, tmp_path, max_feeds=2, every=2)
    with rec:
        for i in range(7):
            out = rec.infer(_feed(i))
            assert out["memory"].shape == (1, 3, 64)
    assert inner.seen == 7 and inner.activations == 1 and not inner.is_active
    files = sorted((tmp_path / "memory_encoder").glob("*.npz"))
    assert [f.name for f in files] == ["00000.npz", "00001.npz"]

    reader = DirectoryCalibrationReader(tmp_path, "memory_encoder")
    assert isinstance(reader, CalibrationDataReader)
    first = reader.get_next()
    assert set(first) == set(SPEC.input_names)
    assert first["vision_feats"][0, 0, 0, 0] == 0 and first["kept_idx"].dtype == np.int64
    assert reader.get_next()["vision_feats"][0, 0, 0, 0] == 2  # every 2nd call
    assert reader.get_next() is None
    reader.rewind()
    assert reader.get_next()["vision_feats"][0, 0, 0, 0] == 0


def test_recorder_converts_torch_tensors(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is needed to check tensor conversion")
    rec = FeedRecorder(EchoRunner(), tmp_path)
    feed = {k: torch.from_numpy(v) for k, v in _feed(5).items()}
    feed["vision_feats"].requires_grad_(False)
    # The wrapped runner receives the tensors unchanged; the file holds numpy arrays.
    rec.infer(feed)
    data = DirectoryCalibrationReader(tmp_path, "memory_encoder").get_next()
    assert isinstance(data["vision_feats"], np.ndarray) and data["vision_feats"][0, 0, 0, 0] == 5


def test_recorder_continues_numbering(tmp_path):
    FeedRecorder(EchoRunner(), tmp_path).infer(_feed(0))
    FeedRecorder(EchoRunner(), tmp_path).infer(_feed(1))
    assert len(DirectoryCalibrationReader(tmp_path, "memory_encoder")) == 2


def test_recorder_keeps_spec_checks(tmp_path):
    rec = FeedRecorder(EchoRunner(), tmp_path)
    bad = _feed(0)
    bad["vision_feats"] = bad["vision_feats"][:, :128]
    with pytest.raises(StageError, match="vision_feats: axis 1 is 128"):
        rec.infer(bad)


def test_empty_or_missing_directory_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="No data is collected for 'memory_encoder'"):
        DirectoryCalibrationReader(tmp_path, "memory_encoder")
    (tmp_path / "memory_encoder").mkdir()
    with pytest.raises(ValueError, match="No data is collected"):
        DirectoryCalibrationReader(tmp_path, "memory_encoder")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="max_feeds"):
        FeedRecorder(EchoRunner(), tmp_path, max_feeds=0)
    with pytest.raises(ValueError, match="every"):
        FeedRecorder(EchoRunner(), tmp_path, every=0)
