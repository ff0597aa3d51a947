"""The token router (default weights prune sensibly) and pruned propagation through the tracker."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tolerances import magnitude, reduction_atol
import torch

from fastsam2.export.router import CUES, TokenRouter, load_router, save_router, token_targets
from fastsam2.export.torch_backend import build_torch_backend
from fastsam2.runtime.router import RouterError, make_router, read_router_file
from fastsam2.runtime.specs import MEMORY_ATTENTION, ROUTER
from fastsam2.runtime.tracker import Prompt, SAM2Tracker, TrackerError, TrackerOptions

H = W = 32  # image_size 512


def square_logits(y0, y1, x0, x1, size=4 * H) -> torch.Tensor:
    m = torch.full((1, 1, size, size), -8.0)
    m[..., 4 * y0 : 4 * y1, 4 * x0 : 4 * x1] = 8.0
    return m


def top_k(scores: torch.Tensor, k: int) -> set[int]:
    return set(torch.topk(scores[0], k).indices.tolist())


def test_default_router_keeps_dilated_previous_mask_and_band():
    router = TokenRouter(image_size=512).eval()
    torch.manual_seed(0)
    feats = torch.randn(1, 256, H, W)
    prev = square_logits(10, 16, 12, 20)  # 6x8 tokens
    with torch.no_grad():
        scores = router(feats, torch.zeros(1, 256), prev)
    assert scores.shape == (1, H * W)
    # a softmax over H*W float32 terms sums to 1 up to one ulp per term (tests/tolerances.py)
    assert abs(float(scores.sum()) - 1.0) <= reduction_atol(1.0, H * W, safety=1.0)
    near = set()
    for y in range(10 - 2, 16 + 2):
        for x in range(12 - 2, 20 + 2):
            near.add(y * W + x)
    # the object dilated by 2 tokens (10x12 = 120 tokens) survives at keep 0.3 (308 tokens) ...
    assert near <= top_k(scores, math.ceil(0.3 * H * W))
    # ... and even when K is just the dilated area, it is exactly that area
    assert top_k(scores, len(near)) == near


def test_text_relevance_ranks_matching_tokens_first():
    router = TokenRouter(image_size=512).eval()
    torch.manual_seed(1)
    feats = torch.randn(1, 256, H, W) * 0.1
    text = torch.randn(256)
    feats[0, :, 3:6, 20:25] += text[:, None, None]  # 15 tokens look like the text
    no_prev = torch.full((1, 1, 4 * H, 4 * W), -1024.0)  # object absent last frame
    with torch.no_grad():
        with_text = router(feats, text[None], no_prev)
    matching = {y * W + x for y in range(3, 6) for x in range(20, 25)}
    assert matching <= top_k(with_text, 20)
    cues = router.cues(feats, text[None], no_prev)
    assert cues.shape == (1, len(CUES), H * W)
    assert cues[0, CUES.index("relevance")].max() > 0.9
    assert torch.all(cues[0, CUES.index("near")] == 0)


def test_token_targets_cover_mask_and_margin():
    t = token_targets(square_logits(5, 7, 5, 7), feat_size=H, radius=1)
    on = set(torch.nonzero(t[0]).flatten().tolist())
    assert on == {y * W + x for y in range(4, 8) for x in range(4, 8)}


def test_router_file_round_trip(tmp_path, tiny512):
    from fastsam2.calibration.projection import fit_text_projection

    router = TokenRouter.for_model(tiny512)
    with torch.no_grad():
        router.mlp[2].weight.mul_(2.0)
    rng = np.random.default_rng(0)
    proj = fit_text_projection(rng.normal(size=(40, 512)), rng.normal(size=(40, 256)), ridge=1.0)
    path = tmp_path / "router.safetensors"
    save_router(path, router, proj)
    loaded = load_router(path, tiny512)
    for a, b in zip(router.mlp.parameters(), loaded.mlp.parameters()):
        assert torch.equal(a, b)
    weights = read_router_file(path)
    t = rng.normal(size=512).astype(np.float32)
    ref = proj.apply(t)  # a 512-term matrix-vector product evaluated by another code path
    np.testing.assert_allclose(weights.project(t), ref, rtol=0, atol=reduction_atol(magnitude(ref), 512))
    with pytest.raises(RouterError, match="not found"):
        read_router_file(tmp_path / "nope.safetensors")


class Spy:
    """Wraps a runner and records the feeds' shapes."""

    def __init__(self, runner):
        self.runner, self.feeds = runner, []
        self.spec = runner.spec

    def infer(self, feed):
        self.feeds.append({k: tuple(v.shape) for k, v in feed.items()})
        return self.runner.infer(feed)

    def deactivate(self):
        self.runner.deactivate()


def run_frames(tracker, clip, n):
    from fastsam2.runtime.frames import open_frames

    tracker.reset()
    results = []
    for frame in open_frames(str(clip)):
        if frame.index >= n:
            break
        p = {1: Prompt(points=[[480, 300]], labels=[1]), 2: Prompt(box=[100, 100, 300, 400])} if frame.index == 0 else None
        results.append(tracker.track(frame.image, p))
    return results


def test_pruned_propagation_shrinks_attention_and_memory(tiny512, clip25):
    backend = build_torch_backend(tiny512)
    router = make_router(backend)
    spy = backend.runners[MEMORY_ATTENTION] = Spy(backend.runners[MEMORY_ATTENTION])
    tracker = SAM2Tracker(backend, TrackerOptions(keep_ratio=0.3, fill_hole_area=0), router=router)
    results = run_frames(tracker, clip25, 9)
    K = math.ceil(0.3 * H * W)
    assert all(r.kept_tokens == {1: K, 2: K} for r in results[1:])
    assert results[0].kept_tokens == {1: 0, 2: 0}  # prompted frames are not pruned (nor attended)
    last = spy.feeds[-1]
    assert last["kept_idx"] == (2, K)  # both objects in one call
    # memory: the prompted frame with every token + 6 pruned frames with K tokens each
    assert last["memory"] == (2, H * W + 6 * K, 64)
    state = tracker.stream_state
    for obj in state.objects.values():
        assert all(o.memory_tokens == K for o in obj.recent.values())
        assert all(o.memory_tokens == H * W for o in obj.cond.values())
    for r in results:
        for m in r.masks.values():
            assert 0.0 < m.mean() < 1.0


def test_memory_tokens_all_option(tiny512, clip25):
    backend = build_torch_backend(tiny512)
    tracker = SAM2Tracker(backend, TrackerOptions(keep_ratio=0.5, memory_tokens="all", fill_hole_area=0),
                          router=make_router(backend))
    run_frames(tracker, clip25, 3)
    for obj in tracker.stream_state.objects.values():
        assert all(o.memory_tokens == H * W for o in obj.recent.values())
        assert all(o.kept_tokens == H * W // 2 for o in obj.recent.values())


def test_keep_one_never_calls_the_router(tiny512, clip25):
    backend = build_torch_backend(tiny512)

    class ExplodingSelector:
        def select(self, obj, feats, k):
            raise AssertionError("router called at keep_ratio 1.0")

    tracker = SAM2Tracker(backend, TrackerOptions(keep_ratio=1.0, fill_hole_area=0), router=ExplodingSelector())
    results = run_frames(tracker, clip25, 3)
    assert results[-1].kept_tokens == {1: H * W, 2: H * W}
    assert ROUTER not in tracker.times.calls  # the router stage never ran


def test_pruning_without_router_is_refused(tiny512):
    with pytest.raises(TrackerError, match="router"):
        SAM2Tracker(build_torch_backend(tiny512), TrackerOptions(keep_ratio=0.5))
    with pytest.raises(TrackerError, match="keep_ratio"):
        TrackerOptions(keep_ratio=0.0)


def test_bad_prompt_leaves_no_ghost_object(tiny512, clip25):
    from fastsam2.runtime.frames import open_frames

    tracker = SAM2Tracker(build_torch_backend(tiny512), TrackerOptions(fill_hole_area=0))
    frame = next(iter(open_frames(str(clip25)))).image
    with pytest.raises(TrackerError, match="outside the 960x540 frame"):
        tracker.track(frame, {1: Prompt(points=[[2000, 10]], labels=[1])})
    assert tracker.stream_state.objects == {}
    with pytest.raises(TrackerError, match="2-D"):
        tracker.track(frame, {1: Prompt(mask=np.zeros((2, 3, 4), bool))})
    res = tracker.track(frame, {1: Prompt(mask=np.ones((540, 960), bool))})  # the stream goes on
    assert res.obj_ids == [1] and res.masks[1].mean() > 0.5
