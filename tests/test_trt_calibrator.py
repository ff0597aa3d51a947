import numpy as np
import pytest

from fastsam2.calibration.reader import ListCalibrationReader as ListReader

from fastsam2.export.trt.calibrator import (
    CalibrationError,
    FeedQueue,
    calibration_shapes,
    read_cache,
)
from fastsam2.runtime.outdir import write_bytes_atomic
from fastsam2.runtime.specs import SpecDims, graph_specs

SPEC = graph_specs(SpecDims(image_size=64))["memory_encoder"]


def _feed(i, k=3):
    return {
        "vision_feats": np.full((1, 256, 4, 4), i, np.float32),
        "mask_logits": np.zeros((1, 1, 16, 16), np.float32),
        "object_score_logits": np.zeros((1, 1), np.float32),
        "binarize": np.zeros((1,), np.float32),
        "kept_idx": np.arange(k, dtype=np.int64)[None],
    }


def test_calibration_shapes_picks_most_common_and_rewinds():
    reader = ListReader([_feed(0, k=5), _feed(1, k=3), _feed(2, k=3)])
    shapes = calibration_shapes(reader, SPEC)
    assert shapes["kept_idx"] == (1, 3) and shapes["vision_feats"] == (1, 256, 4, 4)
    assert reader.i == 0


def test_feed_queue_orders_by_names_and_skips_other_shapes():
    reader = ListReader([_feed(0, k=5), _feed(1, k=3), _feed(2, k=3)])
    q = FeedQueue(reader, SPEC, calibration_shapes(reader, SPEC))
    names = ["kept_idx", "vision_feats", "binarize", "mask_logits", "object_score_logits"]
    first = q.next_batch(names)
    assert first[0].shape == (1, 3) and first[1][0, 0, 0, 0] == 1  # feed 0 (k=5) skipped
    assert q.next_batch(names)[1][0, 0, 0, 0] == 2
    assert q.next_batch(names) is None
    assert (q.used, q.skipped) == (2, 1)
    q.rewind()
    assert q.used == 0 and q.next_batch(names) is not None


def test_feed_queue_errors_name_the_problem():
    reader = ListReader([_feed(0)])
    q = FeedQueue(reader, SPEC, calibration_shapes(reader, SPEC))
    with pytest.raises(CalibrationError, match=r"inputs \['image'\] that memory_encoder's spec"):
        q.next_batch(["image"])
    broken = _feed(0)
    del broken["binarize"]
    q = FeedQueue(ListReader([broken]), SPEC, {})
    with pytest.raises(CalibrationError, match=r"feed 0 lacks inputs \['binarize'\]"):
        q.next_batch(SPEC.input_names)
    wrong = _feed(0)
    wrong["kept_idx"] = wrong["kept_idx"].astype(np.int32)
    with pytest.raises(CalibrationError, match="kept_idx: dtype int32"):
        calibration_shapes(ListReader([wrong]), SPEC)


def test_no_usable_feed_is_an_error():
    with pytest.raises(CalibrationError, match="No data is collected"):
        calibration_shapes(ListReader([]), SPEC)
    q = FeedQueue(ListReader([_feed(0, k=5)]), SPEC, {"kept_idx": (1, 3)})
    with pytest.raises(CalibrationError, match="none of 1 feeds has the calibration shapes"):
        q.next_batch(SPEC.input_names)


def test_cache_roundtrip_atomic(tmp_path):
    path = tmp_path / "sub" / "memory_encoder.calib"
    assert read_cache(path) is None and read_cache(None) is None
    write_bytes_atomic(path, b"TRT-1001-EntropyCalibration2\n")
    assert read_cache(path) == b"TRT-1001-EntropyCalibration2\n"
    assert [p.name for p in path.parent.iterdir()] == ["memory_encoder.calib"]  # no temp left
    path.write_bytes(b"")
    assert read_cache(path) is None  # an empty cache means: calibrate again
