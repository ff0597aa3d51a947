"""Objects batched through the per-object stages equal the same objects run one at a time.

``infer_rows`` groups one-row feeds by shape (no padding), so a batched call computes row by row
what the single calls compute; the tracker batches every object of a frame (and of several
sessions) through the router, memory attention, mask decoder and memory encoder.
"""

from __future__ import annotations

import numpy as np
import pytest
from tolerances import network_atol

from fastsam2.runtime.backends.base import StageRunner, infer_rows
from fastsam2.runtime.ops import NumpyOps
from fastsam2.runtime.specs import MEMORY_ATTENTION, MEMORY_ENCODER, graph_specs
from fastsam2.runtime.tracker import Prompt, SAM2Tracker, TrackerOptions

pytestmark = pytest.mark.usefixtures("single_thread")


class RecordingRunner(StageRunner):
    """Memory encoder stand-in: output row = its kept_idx as floats; records every call's batch."""

    def __init__(self):
        super().__init__(graph_specs()[MEMORY_ENCODER])
        self.calls: list[int] = []

    def infer_impl(self, feed):
        self.calls.append(feed["kept_idx"].shape[0])
        k = feed["kept_idx"]
        return {"memory": np.repeat(k[..., None].astype(np.float32), 64, axis=-1)}


def test_infer_rows_groups_equal_shapes_and_keeps_order():
    spec = graph_specs()[MEMORY_ENCODER]
    rng = np.random.default_rng(0)
    flag = np.zeros(1, np.float32)
    feeds = []
    for k in (5, 7, 5, 5, 7):  # two shape groups, interleaved
        feed = spec.sample({"batch": 1, "kept_tokens": k}, rng)
        feed["binarize"] = flag
        feeds.append(feed)
    runner = RecordingRunner()
    out = infer_rows(runner, feeds, NumpyOps().cat, max_batch=2)
    # K=5: rows 0,2,3 in chunks of 2 + 1; K=7: rows 1,4 in one call
    assert sorted(runner.calls) == [1, 2, 2]
    for feed, row in zip(feeds, out):
        assert row["memory"].shape == (1, feed["kept_idx"].shape[1], 64)
        np.testing.assert_array_equal(row["memory"][..., 0], feed["kept_idx"].astype(np.float32))


def _run(tracker: SAM2Tracker, frames: list[np.ndarray]) -> dict[int, np.ndarray]:
    """Three objects: two on frame 0, a third added on frame 3 (its memory and pointer counts differ
    from the others' until its window fills: separate groups), a negative click on frame 5."""
    tracker.reset()
    out = {}
    for t, image in enumerate(frames):
        prompts = None
        if t == 0:
            prompts = {1: Prompt(points=[[480, 300]], labels=[1]), 2: Prompt(box=[100, 100, 300, 400])}
        elif t == 3:
            prompts = {3: Prompt(box=[600, 150, 900, 450])}
        out[t] = tracker.track(image, prompts).logits
        if t == 5:
            out[t] = tracker.refine(1, points=[[470, 250]], labels=[0], clear_old_points=False).logits
    return out


@pytest.mark.parametrize("keep", [1.0, 0.5])
def test_batched_objects_equal_one_at_a_time(tiny512, bedroom, keep):
    from fastsam2.export.torch_backend import build_torch_backend
    from fastsam2.runtime.frames import open_frames
    from fastsam2.runtime.router import make_router

    with open_frames(str(bedroom)) as src:
        frames = [f.image for f, _ in zip(src, range(10))]
    backend = build_torch_backend(tiny512)
    runner = backend.runners[MEMORY_ATTENTION]
    infer_impl = runner.infer_impl
    batches: list[int] = []

    def counted(feed):  # the batch of every memory-attention call
        batches.append(int(feed["kept_idx"].shape[0]))
        return infer_impl(feed)

    runner.infer_impl = counted
    results, calls = [], []
    for max_batch in (None, 1):
        router = make_router(backend) if keep < 1 else None
        tracker = SAM2Tracker(backend, TrackerOptions(keep_ratio=keep, fill_hole_area=0), router=router)
        tracker.max_batch = max_batch
        if router is not None:
            router.max_batch = max_batch
        batches.clear()
        results.append(_run(tracker, frames))
        calls.append(list(batches))
    batched, single = results
    # one at a time: one row per call; batched: objects 1 and 2 share calls, object 3 (its own
    # memory and pointer counts until its window fills) runs beside them
    assert set(calls[1]) == {1} and max(calls[0]) >= 2 and sum(calls[0]) == sum(calls[1]), calls
    for t in batched:
        a, b = single[t], batched[t]
        assert a.shape == b.shape
        for i in range(a.shape[0]):
            assert 0.001 < (a[i] > 0).mean() < 0.999, f"frame {t} object {i}: trivial mask"
        assert np.abs(a - b).max() <= network_atol(a), (t, float(np.abs(a - b).max()))
