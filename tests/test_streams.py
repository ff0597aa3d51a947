"""Several streams in one tracker: each stream equals a tracker of its own; the stages run batched
across streams; streams join, leave and stall without disturbing the others."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
from tolerances import network_atol

from fastsam2.runtime.specs import IMAGE_ENCODER, MEMORY_ATTENTION
from fastsam2.runtime.streams import MultiStreamTracker
from fastsam2.runtime.tracker import Prompt, SAM2Tracker, TrackerError, TrackerOptions

pytestmark = pytest.mark.usefixtures("single_thread")

N = 8


@pytest.fixture(scope="module")
def backend():
    from fastsam2.export.models import build_sam2
    from fastsam2.export.torch_backend import build_torch_backend

    model = build_sam2("tiny", image_size=256, object_score_bias=5.0, quiet=True, seed=0)
    return build_torch_backend(model)


@pytest.fixture(scope="module")
def clips(bedroom):
    from fastsam2.runtime.frames import open_frames

    with open_frames(str(bedroom)) as src:
        frames = [f.image for f, _ in zip(src, range(120))]
    return {"a": frames[:N], "b": frames[100:100 + N], "c": frames[50:50 + N]}


PROMPTS = {
    "a": {0: {1: Prompt(points=[[480, 300]], labels=[1])}, 3: {2: Prompt(box=[100, 100, 300, 400])}},
    "b": {0: {1: Prompt(box=[600, 150, 900, 450])}},
    "c": {0: {5: Prompt(points=[[300, 200]], labels=[1])}},  # joins on the third step
}


def _batches(runner) -> list[int]:
    """Record the batch size of every call of ``runner``."""
    calls: list[int] = []
    infer_impl = runner.infer_impl

    def counted(feed):
        calls.append(int(next(iter(feed.values())).shape[0]))
        return infer_impl(feed)

    runner.infer_impl = counted
    return calls


def _single(backend, frames, prompts, start=0) -> dict[int, np.ndarray]:
    tracker = SAM2Tracker(backend, TrackerOptions(keep_ratio=0.5, fill_hole_area=0), router=_router(backend))
    out = {}
    for t, image in enumerate(frames):
        if t < start:
            continue
        out[t] = tracker.track(image, prompts.get(t - start)).logits
    return out


def _router(backend):
    from fastsam2.runtime.router import make_router

    return make_router(backend)


def _check(a: np.ndarray, b: np.ndarray, where: str) -> None:
    assert a.shape == b.shape, where
    for i in range(a.shape[0]):
        assert 0.001 < (a[i] > 0).mean() < 0.999, f"{where} object {i}: trivial mask"
    assert np.abs(a - b).max() <= network_atol(a), (where, float(np.abs(a - b).max()))


def test_streams_equal_their_own_trackers_and_run_batched(backend, clips):
    encoder_calls = _batches(backend.runners[IMAGE_ENCODER])
    attention_calls = _batches(backend.runners[MEMORY_ATTENTION])
    mst = MultiStreamTracker(backend, TrackerOptions(keep_ratio=0.5, fill_hole_area=0), router=_router(backend))
    got: dict[str, dict[int, np.ndarray]] = {s: {} for s in clips}
    for t in range(N):
        frames = {"a": clips["a"][t], "b": clips["b"][t]}
        if t >= 2:
            frames["c"] = clips["c"][t]
        prompts = {s: PROMPTS[s][t - (2 if s == "c" else 0)] for s in frames
                   if t - (2 if s == "c" else 0) in PROMPTS[s]}
        for s, res in mst.step(frames, prompts).items():
            got[s][t] = res.logits
        if t == 5:
            assert mst.remove_object("a", 2) == [1]
    for name in (IMAGE_ENCODER, MEMORY_ATTENTION):
        del backend.runners[name].infer_impl  # the runner's own method again
    encoder_batches, attention_batches = list(encoder_calls), list(attention_calls)
    assert max(encoder_batches) == 3, encoder_batches  # one encoder call per step for all streams
    assert max(attention_batches) >= 2, attention_batches  # objects of different streams together
    assert len(encoder_batches) == N
    # each stream equals a tracker of its own (stream a loses object 2 after frame 5 there too)
    ref_a = _single_with_removal(backend, clips["a"])
    ref_b = _single(backend, clips["b"], PROMPTS["b"])
    ref_c = _single(backend, clips["c"], PROMPTS["c"], start=2)
    for s, ref in (("a", ref_a), ("b", ref_b), ("c", ref_c)):
        assert sorted(got[s]) == sorted(ref)
        for t in ref:
            _check(ref[t], got[s][t], f"stream {s} frame {t}")


def _single_with_removal(backend, frames):
    tracker = SAM2Tracker(backend, TrackerOptions(keep_ratio=0.5, fill_hole_area=0), router=_router(backend))
    out = {}
    for t, image in enumerate(frames):
        out[t] = tracker.track(image, PROMPTS["a"].get(t)).logits
        if t == 5:
            tracker.remove_object(tracker.stream_state, 2)
    return out


def test_stream_errors_are_one_line(backend, clips):
    mst = MultiStreamTracker(backend, TrackerOptions(fill_hole_area=0))
    with pytest.raises(TrackerError, match="without a frame in this step"):
        mst.step({"a": clips["a"][0]}, {"z": {1: Prompt(box=[1, 1, 50, 50])}})
    with pytest.raises(TrackerError, match="no stream 'q'"):
        mst.remove_stream("q")
    res = mst.step({"a": clips["a"][0]})  # a stream without objects yet: encoded, nothing tracked
    assert res["a"].obj_ids == [] and res["a"].logits.shape[0] == 0
    with pytest.raises(TrackerError, match="frame size"):
        mst.step({"a": clips["a"][1][:100]})


def test_serve_keeps_going_when_a_stream_stalls_or_fails(backend, clips):
    mst = MultiStreamTracker(backend, TrackerOptions(fill_hole_area=0))
    released = threading.Event()
    done = {"a": 0}

    def stalled():  # one frame, then nothing until stream a has finished all of its frames
        yield clips["b"][0]
        released.wait(timeout=120)
        yield clips["b"][1]

    def broken():
        yield clips["c"][0]
        raise OSError("camera unplugged")

    seen: dict[str, list[int]] = {"a": [], "b": [], "c": []}

    def on_result(sid, res, latency):
        assert latency >= 0
        seen[sid].append(res.frame_idx)
        if sid == "a":
            done["a"] += 1
            if done["a"] == N:
                released.set()

    prompts = {s: {1: Prompt(box=[100, 100, 300, 400])} for s in ("a", "b", "c")}
    stats = mst.serve({"a": clips["a"], "b": stalled(), "c": broken()}, on_result, prompts)
    assert released.is_set(), "stream a could not finish while stream b stalled"
    assert seen["a"] == list(range(N)), "a recorded source loses no frame"
    assert seen["b"] == [0, 1] and seen["c"] == [0]
    assert stats.errors == {"c": "OSError: camera unplugged"} and stats.frames == N + 3
    assert max(stats.batch_sizes) >= 2 and stats.dropped == {"a": 0, "b": 0, "c": 0}


class _DeviceLikeMarker:
    """A marker that, like a CUDA event of a step still computing, is reached only when waited on."""

    def __init__(self):
        self.reached = False

    def query(self) -> bool:
        return self.reached

    def synchronize(self) -> None:
        self.reached = True


@pytest.mark.parametrize("device_like", [True, False], ids=["device-markers", "host-markers"])
def test_serve_issues_the_next_step_before_delivering_results(backend, clips, device_like):
    """in_flight=N: with steps still computing (device-like markers), step t's results are delivered
    once N later steps are issued; done steps (host markers) are delivered at once. Results reach
    on_result as host arrays (device results are copied behind their own step), equal for any N."""
    runs = {}
    for in_flight in (0, 1, 2):
        mst = MultiStreamTracker(backend, TrackerOptions(fill_hole_area=0, device_results=True))
        if device_like:
            mst.tracker.ops = copy.copy(mst.tracker.ops)
            mst.tracker.ops.marker = _DeviceLikeMarker
        log: list[str] = []
        step = mst.step

        def logged(*a, **kw):
            log.append("step")
            return step(*a, **kw)

        mst.step = logged
        got: dict[str, list] = {"a": [], "b": []}

        def on_result(sid, res, latency):
            assert isinstance(res.logits, np.ndarray) and all(isinstance(v, float) for v in res.object_scores.values())
            log.append("result")
            got[sid].append((res.frame_idx, res.logits))

        prompts = {s: {1: Prompt(box=[100, 100, 300, 400])} for s in ("a", "b")}
        stats = mst.serve({"a": clips["a"][:4], "b": clips["b"][:4]}, on_result, prompts, in_flight=in_flight)
        assert stats.frames == 8 and [t for t, _ in got["a"]] == [0, 1, 2, 3] == [t for t, _ in got["b"]]
        steps_before_first_result = log.index("result")
        assert steps_before_first_result == (min(in_flight + 1, stats.steps) if device_like else 1), log
        runs[in_flight] = got
    for in_flight in (1, 2):
        for sid in ("a", "b"):
            for (_, x), (_, y) in zip(runs[0][sid], runs[in_flight][sid]):
                assert (x > 0).any() and np.array_equal(x, y)


def test_serve_refuses_a_negative_depth(backend, clips):
    with pytest.raises(TrackerError, match="in_flight"):
        MultiStreamTracker(backend).serve({"a": clips["a"][:1]}, lambda *a: None, in_flight=-1)
