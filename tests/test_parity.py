"""The fastsam2 tracker equals the official SAM2VideoPredictor when nothing is pruned.

Same random weights (fixed seed, fp32, CPU), same real frames, two objects (one point, one box), a
correction click on a later frame and a new object after that; both the SAM2-style API and the
streaming API are compared frame by frame on the video-resolution mask logits.
"""

from __future__ import annotations

import numpy as np
import pytest
from tolerances import network_atol
import torch

from fastsam2.export.torch_backend import build_torch_backend
from fastsam2.runtime.tracker import Prompt, SAM2Tracker, TrackerOptions

# max |Δ| on mask logits, every frame, every object: rounding between two fp32 runs of the same
# network, relative to the logits' magnitude (tests/tolerances.py; measured 2.7e-7).
POINT = [[480.0, 300.0]]
BOX = [100.0, 100.0, 300.0, 400.0]
CLICK = [[520.0, 260.0]]  # correction for object 1
NEW_BOX = [600.0, 150.0, 900.0, 450.0]  # object 3, added later
CORRECT_AT, NEW_AT = 10, 15


def official_run(model, video: str) -> dict[int, np.ndarray]:
    out = {}
    with torch.inference_mode():
        state = model.init_state(video)
        model.add_new_points_or_box(state, 0, 1, points=POINT, labels=[1])
        model.add_new_points_or_box(state, 0, 2, box=BOX)
        for t, _, m in model.propagate_in_video(state, max_frame_num_to_track=CORRECT_AT):
            out[t] = m.numpy()
        _, _, m = model.add_new_points_or_box(
            state, CORRECT_AT, 1, points=CLICK, labels=[0], clear_old_points=True
        )
        out[CORRECT_AT] = m.numpy()
        for t, _, m in model.propagate_in_video(
            state, start_frame_idx=CORRECT_AT + 1, max_frame_num_to_track=NEW_AT - CORRECT_AT - 2
        ):
            out[t] = m.numpy()
        model.add_new_points_or_box(state, NEW_AT, 3, box=NEW_BOX)
        for t, _, m in model.propagate_in_video(state, start_frame_idx=NEW_AT):
            out[t] = m.numpy()
    return out


def fastsam2_offline(tracker: SAM2Tracker, video: str) -> dict[int, np.ndarray]:
    out = {}
    state = tracker.init_state(video)
    tracker.add_new_points_or_box(state, 0, 1, points=POINT, labels=[1])
    tracker.add_new_points_or_box(state, 0, 2, box=BOX)
    for t, _, m in tracker.propagate_in_video(state, max_frame_num_to_track=CORRECT_AT):
        out[t] = m
    _, _, out[CORRECT_AT] = tracker.add_new_points_or_box(state, CORRECT_AT, 1, points=CLICK, labels=[0])
    for t, _, m in tracker.propagate_in_video(
        state, start_frame_idx=CORRECT_AT + 1, max_frame_num_to_track=NEW_AT - CORRECT_AT - 2
    ):
        out[t] = m
    tracker.add_new_points_or_box(state, NEW_AT, 3, box=NEW_BOX)
    for t, _, m in tracker.propagate_in_video(state, start_frame_idx=NEW_AT):
        out[t] = m
    return out


def fastsam2_streaming(tracker: SAM2Tracker, video: str) -> dict[int, np.ndarray]:
    from fastsam2.runtime.frames import open_frames

    out = {}
    tracker.reset()
    for frame in open_frames(video):
        t = frame.index
        prompts = {}
        if t == 0:
            prompts = {1: Prompt(points=POINT, labels=[1]), 2: Prompt(box=BOX)}
        elif t == NEW_AT:
            prompts = {3: Prompt(box=NEW_BOX)}
        res = tracker.track(frame.image, prompts)
        if t == CORRECT_AT:
            res = tracker.refine(1, points=CLICK, labels=[0])
        out[t] = res.logits[:, None]
    return out


def assert_equal_runs(ref: dict, ours: dict, n_frames: int) -> float:
    assert sorted(ref) == list(range(n_frames)) and sorted(ours) == sorted(ref)
    worst = 0.0
    for t in range(n_frames):
        a, b = ref[t], ours[t]
        assert a.shape == b.shape, (t, a.shape, b.shape)
        present = (a > -1000).reshape(a.shape[0], -1).all(axis=1)
        # every object the official predictor segments must have a non-trivial mask
        for i in np.flatnonzero(present):
            frac = (a[i] > 0).mean()
            assert 0.001 < frac < 0.999, f"frame {t} object {i}: trivial mask ({frac:.4f})"
        worst = max(worst, float(np.abs(a - b).max()))
        assert np.abs(a - b).max() <= network_atol(a), f"frame {t}: max |Δ| {np.abs(a - b).max():.2e}"
    # objects 1 and 2 are present on every frame, object 3 from NEW_AT on
    assert ref[0].shape[0] == 2 and ref[n_frames - 1].shape[0] == 3
    return worst


@pytest.fixture(scope="module")
def official_512(tiny512, clip25):
    return official_run(tiny512, str(clip25))


@pytest.fixture(scope="module")
def tracker_512(tiny512):
    backend = build_torch_backend(tiny512)
    # The official predictor skips hole filling when sam2's CUDA extension is missing (as here).
    return SAM2Tracker(backend, TrackerOptions(fill_hole_area=0))


def test_offline_api_equals_official(official_512, tracker_512, clip25):
    worst = assert_equal_runs(official_512, fastsam2_offline(tracker_512, str(clip25)), 25)
    print(f"offline API: max |Δ| over 25 frames = {worst:.2e}")


def test_streaming_api_equals_official(official_512, tracker_512, clip25):
    worst = assert_equal_runs(official_512, fastsam2_streaming(tracker_512, str(clip25)), 25)
    print(f"streaming API: max |Δ| over 25 frames = {worst:.2e}")


def test_correction_changed_the_mask(official_512):
    # the correction click is a negative click: it must change object 1's mask on that frame
    before = official_512[CORRECT_AT - 1][0] > 0
    after = official_512[CORRECT_AT][0] > 0
    assert (before != after).mean() > 0.001


def test_memory_bank_is_bounded(tracker_512, clip25):
    fastsam2_streaming(tracker_512, str(clip25))
    state = tracker_512.stream_state
    for obj in state.objects.values():
        # non-conditioning frames kept: at most the pointer window (15) of the last frames
        assert len(obj.recent) <= 15
        assert min(obj.recent) >= 24 - 15
        assert all(out.memory is not None for out in obj.recent.values())


def two_object_parity(config: str, frames_src, n: int, tmp_path, **build) -> float:
    """Point + box on frame 0, propagate through n frames with the official predictor and with
    fastsam2 (same weights); asserts non-trivial masks and max |Δ| ≤ network_atol on every frame."""
    import shutil

    from fastsam2.export.models import build_sam2

    for f in sorted(frames_src.glob("*.jpg"))[:n]:
        shutil.copy(f, tmp_path / f.name)
    model = build_sam2(config, object_score_bias=5.0, quiet=True, **build)
    with torch.inference_mode():
        state = model.init_state(str(tmp_path))
        model.add_new_points_or_box(state, 0, 1, points=POINT, labels=[1])
        model.add_new_points_or_box(state, 0, 2, box=BOX)
        ref = {t: m.numpy() for t, _, m in model.propagate_in_video(state)}
    tracker = SAM2Tracker(build_torch_backend(model), TrackerOptions(fill_hole_area=0))
    st = tracker.init_state(str(tmp_path))
    tracker.add_new_points_or_box(st, 0, 1, points=POINT, labels=[1])
    tracker.add_new_points_or_box(st, 0, 2, box=BOX)
    ours = {t: m for t, _, m in tracker.propagate_in_video(st)}
    assert sorted(ours) == list(range(n))
    worst = 0.0
    for t in ours:
        assert 0.001 < (ref[t] > 0).mean() < 0.999, (config, t)
        worst = max(worst, float(np.abs(ref[t] - ours[t]).max()))
        assert np.abs(ref[t] - ours[t]).max() <= network_atol(ref[t]), (config, t)
    return worst


def test_full_resolution_1024(bedroom, tmp_path):
    """One parity test at SAM2's real 1024 input (64x64 grid, full RoPE table), on 4 frames."""
    worst = two_object_parity("tiny", bedroom, 4, tmp_path, seed=1)
    print(f"1024: max |Δ| over 4 frames = {worst:.2e}")


@pytest.mark.parametrize("config", ["sam2.0-tiny", "small"])
def test_other_configs_equal_official(config, clip25, tmp_path):
    """SAM 2.0 (no pointer temporal encoding, no spatial no-object embedding) and another 2.1 size,
    at 256 to stay cheap: 18 frames so the memory window and pointer window are both exceeded."""
    two_object_parity(config, clip25, 18, tmp_path, image_size=256, seed=2)
