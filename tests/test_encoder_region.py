"""Encoder regions (``export/encoder_region.py``, ``TrackerOptions.encoder_region``): frames encoded
whole equal the image-encoder stage; a rectangle is exact wherever only windowed attention reaches
(checked on a trunk without global blocks) and reuses the previous levels elsewhere; the tracker
encodes prompted, first and refresh frames whole and the rest on rectangles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tolerances import magnitude, reduction_atol

from fastsam2.export.encoder_region import trunk_alignment
from fastsam2.export.models import build_sam2
from fastsam2.export.torch_backend import build_torch_backend
from fastsam2.runtime.synth import make_clip
from fastsam2.runtime.tracker import Prompt, SAM2Tracker, TrackerError, TrackerOptions


def _frames(x):
    """A batch [B,3,S,S] → each frame's pixels [1,3,S,S] (what RegionEncoder.encode takes)."""
    return [x[b:b + 1] for b in range(x.shape[0])]


@pytest.fixture(scope="module")
def synthetic():
    return build_sam2("synthetic", "synthetic", quiet=True)


@pytest.fixture(scope="module")
def windowed_only():
    """The synthetic architecture at 1024 px (4 x 4 units) without its global-attention block."""
    return build_sam2("synthetic", None, image_size=1024, quiet=True, seed=3,
                      hydra_overrides=["++model.image_encoder.trunk.global_att_blocks=[]"])


def test_alignment_tiles_every_window_and_pooling():
    tiny = build_sam2("tiny", None, image_size=512, quiet=True)
    # tiny: windows 8, 4 (x2), 14 (x4), 7 (x8) first-stage tokens -> 56 (224 px)
    assert trunk_alignment(tiny.image_encoder.trunk) == 56
    syn = build_sam2("synthetic", None, quiet=True)
    assert trunk_alignment(syn.image_encoder.trunk) == 64  # windows 8, 4 (x2), 16 (x4)


def test_whole_frames_equal_the_image_encoder_stage(synthetic):
    backend = build_torch_backend(synthetic)
    x = torch.randn(2, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    ref = backend.runners["image_encoder"].infer({"image": x})
    enc = backend.region_encoder
    (fpn0, fpn1, feats), cache = enc.encode(_frames(x), [None, None], [None, None])
    for ours, name in ((fpn0, "fpn_s0"), (fpn1, "fpn_s1"), (feats, "vision_feats")):
        assert torch.equal(ours, ref[name]), name
    assert all(torch.equal(c[2], feats[b:b + 1]) for b, c in enumerate(cache))
    # a rectangle covering the frame computes the same thing through the crop path, and leaves the
    # cache it was given as it was
    g = enc.grid
    before = [[t.clone() for t in c] for c in cache]
    (_, _, feats2), _ = enc.encode(_frames(x), [(0, g, 0, g)] * 2, cache)
    assert torch.equal(feats2, feats)
    assert all(torch.equal(a, b) for c, k in zip(cache, before) for a, b in zip(c, k))


def test_a_rectangle_needs_only_its_window_of_pixels(synthetic):
    """RegionEncoder.encode given only pixel_window(rect) of a frame equals it given the whole frame
    (interior, corner and border windows, the crop's halo partly outside the frame); any other size
    is refused."""
    enc = build_torch_backend(synthetic).region_encoder  # 512 px, 2 x 2 units
    gen = torch.Generator().manual_seed(2)
    x_old, x_new = torch.randn(3, 3, 512, 512, generator=gen), torch.randn(3, 3, 512, 512, generator=gen)
    _, cache = enc.encode(_frames(x_old), [None] * 3, [None] * 3)
    rects = [(0, 1, 0, 1), (1, 2, 0, 2), None]
    windows = [enc.pixel_window(r) for r in rects]
    assert windows[0][0] == 0 and windows[0][1] < 512 and windows[1][1] == 512 and windows[2] == (0, 512, 0, 512)
    crops = [x_new[b:b + 1, :, y0:y1, x0:x1] for b, (y0, y1, x0, x1) in enumerate(windows)]
    full, _ = enc.encode(_frames(x_new), rects, cache)
    part, _ = enc.encode(crops, rects, cache)
    assert all(torch.equal(a, b) for a, b in zip(full, part))
    with pytest.raises(ValueError, match="neither the frame"):
        enc.encode([crops[0][..., :-1, :]] + crops[1:], rects, cache)


def _encoder_err(enc, x_new, rect, cache):
    """x_new's encoder outputs on rect over cache, and those of x_new encoded whole."""
    _, whole = enc.encode(_frames(x_new), [None], [None])
    _, part = enc.encode(_frames(x_new), [rect], [cache])
    return whole[0], part[0]


def _inside(enc, x, rect):
    """The part of x [1,C,h,w] (an encoder output at any scale) that ``rect`` covers."""
    s = enc.tokens // x.shape[-1]
    t0, t1, u0, u1 = (v // s for v in enc.token_span(rect))
    return x[..., t0:t1, u0:u1]


def test_a_rectangle_is_exact_where_only_windows_reach(windowed_only):
    enc = build_torch_backend(windowed_only).region_encoder
    assert enc.grid == 4
    gen = torch.Generator().manual_seed(1)
    x_old, x_new = torch.randn(1, 3, 1024, 1024, generator=gen), torch.randn(1, 3, 1024, 1024, generator=gen)
    _, old = enc.encode(_frames(x_old), [None], [None])
    rect = (1, 3, 2, 4)  # rows 1-2, columns 2-3 (touching the right border)
    whole, part = _encoder_err(enc, x_new, rect, old[0])
    for name, w, p, o in zip(("fpn_s0", "fpn_s1", "vision_feats"), whole, part, old[0]):
        atol = reduction_atol(magnitude(w.numpy()), terms=4 * w.shape[1])
        inside = (_inside(enc, p, rect) - _inside(enc, w, rect)).abs().max().item()
        assert inside <= atol, f"{name}: inside the rectangle {inside:.3g} > {atol:.3g}"
        outside = p.clone()
        _inside(enc, outside, rect)[...] = _inside(enc, o, rect)
        assert torch.equal(outside, o), f"{name}: outside the rectangle is not the previous frame's"
        assert not torch.equal(_inside(enc, p, rect), _inside(enc, o, rect)), f"{name}: the rectangle was not pasted"

    # teeth: the same check with rectangles off the window grid by half a unit fails
    enc.align //= 2
    rect = (3, 5, 5, 7)
    whole, part = _encoder_err(enc, x_new, rect, old[0])
    w, p = whole[2], part[2]
    atol = reduction_atol(magnitude(w.numpy()), terms=4 * w.shape[1])
    assert (_inside(enc, p, rect) - _inside(enc, w, rect)).abs().max().item() > 10 * atol


def test_the_head_on_a_rectangle_needs_a_pointwise_neck(synthetic, monkeypatch):
    from fastsam2.export.encoder_region import EncoderHeadStage, neck_is_local

    neck = synthetic.image_encoder.neck
    assert neck_is_local(neck)
    # teeth: bilinear top-down upsampling mixes neighbours across the rectangle's side
    monkeypatch.setattr(neck, "fpn_interp_model", "bilinear")
    assert not neck_is_local(neck)
    with pytest.raises(ValueError, match="nearest upsampling"):
        EncoderHeadStage(synthetic)


def test_rect_for_grows_by_the_margin_and_covers_whole_frames(synthetic):
    enc = build_torch_backend(synthetic).region_encoder  # 512 px, 256-px units, 2 x 2
    assert enc.rect_for((10, 20, 100, 120), 0) == (0, 1, 0, 1)
    assert enc.rect_for((300, 20, 400, 120), 0) == (0, 1, 1, 2)
    assert enc.rect_for((10, 20, 100, 120), 1) is None  # grown to the whole frame
    assert enc.rect_for((200, 200, 300, 300), 0) is None  # straddles all four units
    # an object reaching the side of the rectangle its frame was computed on: one more unit there
    assert enc.rect_for((10, 20, 254, 120), 0, previous=(0, 1, 0, 1), edge_px=4) == (0, 1, 0, 2)
    assert enc.rect_for((10, 20, 240, 120), 0, previous=(0, 1, 0, 1), edge_px=4) == (0, 1, 0, 1)
    assert enc.rect_for((300, 258, 400, 300), 0, previous=(1, 2, 1, 2), edge_px=4) == (0, 2, 1, 2)
    assert enc.area(None) == 1.0 and enc.area((0, 1, 0, 1)) == 0.25 and enc.area((0, 2, 1, 2)) == 0.5


def test_the_tracker_encodes_on_rectangles_and_whole_where_it_must(synthetic):
    clip = make_clip(5, split="hard", frames=7, size=512, index=0)
    mask = clip.masks[0] == 1
    assert mask.any()
    runs = {}
    for region, refresh in ((None, 0), (0, 0), (0, 3)):
        backend = build_torch_backend(synthetic)
        calls = []
        encode = backend.region_encoder.encode
        backend.region_encoder.encode = lambda x, rects, caches: calls.append(list(rects)) or encode(x, rects, caches)
        tracker = SAM2Tracker(backend, TrackerOptions(fill_hole_area=0, encoder_region=region,
                                                      encoder_refresh=refresh))
        masks = []
        for t, frame in enumerate(clip.frames):
            res = tracker.track(frame, {1: Prompt(mask=mask)} if t == 0 else None)
            masks.append(res.masks[1])
        runs[(region, refresh)] = (calls, masks)
    calls, masks = runs[(None, 0)]
    assert calls == [] and all(m.any() for m in masks[:3])
    calls, masks = runs[(0, 0)]
    assert calls[0] == [None], "the prompted first frame is encoded whole"
    assert all(c[0] is not None for c in calls[1:3]), f"tracked frames use rectangles: {calls}"
    calls, _ = runs[(0, 3)]
    assert calls[3] == [None], f"refresh every 3 frames: {calls}"
    # the session's encoder share: each frame's share of the patch tokens its rectangle holds
    enc = backend.region_encoder
    shares = [enc.area(c[0]) for c in calls]
    assert shares[0] == shares[3] == 1.0 and all(0 < s < 1 for s in shares[1:3])
    assert tracker.stream_state.encoder_frames == len(calls)
    assert tracker.stream_state.encoder_share == pytest.approx(sum(shares) / len(shares))


def test_streams_in_one_step_each_get_the_rectangle_of_their_own_masks(synthetic):
    """The rectangles of a batched step come from one box computation over every object of every
    stream: each stream gets the rectangle around the union of its own objects' masks."""
    from fastsam2.runtime.streams import MultiStreamTracker

    clip = make_clip(5, split="hard", frames=1, size=512, index=0)
    tracker = MultiStreamTracker(build_torch_backend(synthetic), TrackerOptions(fill_hole_area=0, encoder_region=0))
    # four streams with 1, 2, 2 and 1 objects, tracked one (prompted) frame
    objects = {"a": (1,), "b": (1, 2), "c": (1, 2), "d": (1,)}
    tracker.step({s: clip.frames[0] for s in objects},
                 {s: {o: Prompt(mask=clip.masks[0] == o) for o in objs} for s, objs in objects.items()})
    hm = tracker.tracker.config.mask_size
    q = hm // 2  # the 2 x 2 grid's units in mask pixels

    def blob(r, c):  # mask logits with a blob inside unit (r, c), or none (r is None)
        m = np.full((1, 1, hm, hm), -5.0, np.float32)
        if r is not None:
            m[..., r * q + 10:r * q + 30, c * q + 12:c * q + 40] = 3.0
        return torch.from_numpy(m)

    placed = {"a": [(0, 0)], "b": [(0, 1), (1, 1)], "c": [(None, None), (1, 0)], "d": [(None, None)]}
    states = [tracker.streams[s] for s in objects]
    for s, st in zip(objects, states):
        for obj, (r, c) in zip(st.objects.values(), placed[s]):
            obj.output_at(st.cached.frame_idx).pred_masks = blob(r, c)
    frames = [(clip.frames[0], st.cached.frame_idx + 1) for st in states]
    rects = tracker.tracker._regions(frames, states, [False] * 4)
    # a: its unit; b: the union of two units of column 1; c: its one found object; d: lost, whole
    assert rects == [(0, 1, 0, 1), (0, 2, 1, 2), (1, 2, 0, 1), None]
    assert [tracker.tracker._regions([f], [st], [False])[0] for f, st in zip(frames, states)] == rects
    assert tracker.tracker._regions(frames, states, [False, True, False, False])[1] is None  # prompted: whole


def test_with_a_lag_the_rectangle_follows_older_masks_and_waits_only_for_them(synthetic, monkeypatch):
    """encoder_lag=1: frame t's rectangle comes from the masks of frame t-2, and choosing it waits
    only for those boxes (a step issued behind the one still computing does not wait for it)."""
    clip = make_clip(5, split="hard", frames=4, size=512, index=0)
    hm = build_torch_backend(synthetic).config.mask_size
    q = hm // 2  # the 2 x 2 grid's units in mask pixels

    def blob(r, c):
        m = torch.full((1, 1, hm, hm), -5.0)
        m[..., r * q + 10:r * q + 30, c * q + 12:c * q + 40] = 3.0
        return m

    rects = {}
    for lag in (0, 1):
        backend = build_torch_backend(synthetic)
        waited, calls = [], []

        class Marker:
            def __init__(self, n):
                self.n = n

            def synchronize(self):
                waited.append(self.n)

            def query(self):
                return True

        issued = iter(range(100))
        monkeypatch.setattr(backend.ops, "marker", lambda: Marker(next(issued)))
        encode = backend.region_encoder.encode
        backend.region_encoder.encode = lambda x, r, c: calls.append(list(r)) or encode(x, r, c)
        tracker = SAM2Tracker(backend, TrackerOptions(fill_hole_area=0, encoder_region=0, encoder_lag=lag))
        tracker.track(clip.frames[0], {1: Prompt(mask=clip.masks[0] == 1)})
        st = tracker.stream_state
        st.objects[1].output_at(0).pred_masks = blob(0, 0)
        tracker.track(clip.frames[1])
        st.objects[1].output_at(1).pred_masks = blob(1, 1)
        waited.clear()
        tracker.track(clip.frames[2])
        rects[lag] = calls[-1][0]
        # the boxes of frame 0 were issued before marker 0, those of frame 1 before marker 1
        assert waited == [1 - lag], f"lag {lag}: waited for {waited}"
        assert len(st.encoder_boxes) == lag + 1
    assert rects[0] == (1, 2, 1, 2), "lag 0: frame 1's masks"
    assert rects[1] == (0, 1, 0, 1), "lag 1: frame 0's masks"

    # an object added after the frame the boxes come from: that frame says nothing of it, so whole
    backend = build_torch_backend(synthetic)
    calls = []
    encode = backend.region_encoder.encode
    backend.region_encoder.encode = lambda x, r, c: calls.append(list(r)) or encode(x, r, c)
    tracker = SAM2Tracker(backend, TrackerOptions(fill_hole_area=0, encoder_region=0, encoder_lag=1))
    tracker.track(clip.frames[0], {1: Prompt(mask=clip.masks[0] == 1)})
    st = tracker.stream_state
    st.objects[1].output_at(0).pred_masks = blob(0, 0)
    tracker.track(clip.frames[1], {2: Prompt(mask=clip.masks[1] == 2)})
    for obj in st.objects.values():
        obj.output_at(1).pred_masks = blob(0, 0)
    tracker.track(clip.frames[2])
    tracker.track(clip.frames[3])
    assert calls[2] == [None], f"frame 0's boxes know nothing of object 2: {calls}"
    assert calls[3] == [(0, 1, 0, 1)], f"frame 1's boxes hold both objects: {calls}"
    with pytest.raises(TrackerError, match="encoder_lag"):
        TrackerOptions(encoder_region=0, encoder_lag=-1)


def test_backends_without_a_region_encoder_refuse(synthetic):
    backend = build_torch_backend(synthetic)
    backend.region_encoder = None
    with pytest.raises(TrackerError, match="whole frames"):
        SAM2Tracker(backend, TrackerOptions(encoder_region=1))
    with pytest.raises(TrackerError, match="encoder_region"):
        TrackerOptions(encoder_region=-1)
    with pytest.raises(TrackerError, match="encoder_refresh"):
        TrackerOptions(encoder_region=1, encoder_refresh=-2)


def test_track_records_the_encoder_region(tmp_path):
    import json

    from PIL import Image

    from fastsam2.tools import cli

    clip = make_clip(6, split="hard", frames=4, size=512, index=1)
    frames = tmp_path / "clip"
    frames.mkdir()
    for t, f in enumerate(clip.frames):
        Image.fromarray(f).save(frames / f"{t:05d}.jpg")
    ys, xs = np.nonzero(clip.masks[0] == 1)
    out = tmp_path / "out"
    code = cli.main(["track", "--checkpoint", "synthetic", "--video", str(frames), "--point",
                     f"{int(xs.mean())},{int(ys.mean())}", "--encoder-region", "0", "--encoder-refresh", "2",
                     "--encoder-lag", "1",
                     "--no-overlay", "--threads", "1", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert (report["encoder_region"], report["encoder_refresh"], report["encoder_lag"]) == (0, 2, 1)
    # frames 0 and 2 whole (the prompt, the refresh), 1 and 3 on rectangles: less than all, more than half
    assert 0.5 < report["encoder_share"] < 1.0
    assert len(list((out / "masks").rglob("*.png"))) == 4


def test_a_prompt_on_a_frame_encoded_on_a_rectangle_re_encodes_it_whole(synthetic, tmp_path):
    from PIL import Image

    clip = make_clip(5, split="hard", frames=4, size=512, index=0)
    for t, f in enumerate(clip.frames):
        Image.fromarray(f).save(tmp_path / f"{t:05d}.png")
    backend = build_torch_backend(synthetic)
    calls = []
    encode = backend.region_encoder.encode
    backend.region_encoder.encode = lambda x, rects, caches: calls.append(list(rects)) or encode(x, rects, caches)
    tracker = SAM2Tracker(backend, TrackerOptions(fill_hole_area=0, encoder_region=0))
    state = tracker.init_state(str(tmp_path))
    tracker.add_new_mask(state, 0, 1, clip.masks[0] == 1)
    for _ in tracker.propagate_in_video(state, 0, 2):
        pass
    assert calls[-1][0] is not None and not state.cached.whole, f"frame 2 was encoded on a rectangle: {calls}"
    tracker.add_new_points_or_box(state, 2, 1, points=np.array([[10.0, 10.0]]), labels=np.array([0]))
    assert calls[-1] == [None] and state.cached.whole and state.cached.frame_idx == 2


# -- the region graphs exported (fastsam2-export --encoder-region) ---------------------------------

@pytest.fixture(scope="module")
def tiny256():
    """tiny at 256 px: 64 x 64 patch tokens over 56-token units, so rectangles are 8, 56 or 64 tokens
    a side and the trunk's 14- and 7-token windows pad on some of them and not on others."""
    return build_sam2("tiny", None, image_size=256, quiet=True, object_score_bias=5.0)


@pytest.fixture(scope="module")
def region_graphs(tiny256, tmp_path_factory):
    from fastsam2.export.onnx_export import export_graphs

    out = tmp_path_factory.mktemp("region") / "graphs"
    # validation runs the trunk graph at every side a rectangle can have (export/validate.py)
    manifest = export_graphs(tiny256, out, encoder_region=True, validate=True)
    assert {"encoder_embed", "encoder_trunk", "encoder_head"} <= set(manifest.graphs)
    return out


def test_the_exported_region_graphs_compute_what_the_torch_stages_do(tiny256, region_graphs):
    from fastsam2.runtime.backends.ort import load_ort_backend

    ours = load_ort_backend(region_graphs).region_encoder
    ref = build_torch_backend(tiny256).region_encoder
    assert ours is not None and (ours.grid, ours.align) == (ref.grid, ref.align) == (2, 56)
    gen = torch.Generator().manual_seed(4)
    x_old, x_new = torch.randn(2, 3, 256, 256, generator=gen), torch.randn(2, 3, 256, 256, generator=gen)
    out_ref, c_ref = ref.encode(_frames(x_old), [None, None], [None, None])
    out_ort, c_ort = ours.encode(_frames(x_old.numpy()), [None, None], [None, None])
    atol = reduction_atol(magnitude(out_ref[2].numpy()), terms=4096)
    assert all(np.abs(a - b.numpy()).max() <= atol for a, b in zip(out_ort, out_ref))
    # wide, tall and corner rectangles (one per frame: two trunk and head calls of different shapes)
    for rects in (((0, 1, 0, 2), (1, 2, 0, 2)), ((0, 2, 1, 2), (1, 2, 1, 2))):
        out_ref, c_ref = ref.encode(_frames(x_new), list(rects), c_ref)
        out_ort, c_ort = ours.encode(_frames(x_new.numpy()), list(rects), c_ort)
        for name, a, b in zip(("fpn_s0", "fpn_s1", "vision_feats"), out_ort, out_ref):
            assert np.abs(a - b.numpy()).max() <= atol, (name, rects)
        for a, b in zip(c_ort[1], c_ref[1]):
            assert np.abs(a - b.numpy()).max() <= atol, rects


def test_ort_tracks_on_rectangles_from_the_exported_graphs(region_graphs):
    from fastsam2.runtime.backends.ort import load_ort_backend

    clip = make_clip(7, split="hard", frames=5, size=256, index=0)
    mask = clip.masks[0] == 1
    backend = load_ort_backend(region_graphs)
    calls = []
    encode = backend.region_encoder.encode
    backend.region_encoder.encode = lambda x, rects, caches: calls.append(list(rects)) or encode(x, rects, caches)
    tracker = SAM2Tracker(backend, TrackerOptions(fill_hole_area=0, encoder_region=0))
    masks = [tracker.track(f, {1: Prompt(mask=mask)} if t == 0 else None).masks[1] for t, f in enumerate(clip.frames)]
    assert calls[0] == [None] and any(c[0] is not None for c in calls[1:]), calls
    assert all(m.any() for m in masks), "random weights biased to 'object present' give non-empty masks"


def test_a_trunk_traced_at_an_aligned_side_fails_validation(tiny256, tmp_path, monkeypatch):
    """Hiera pads a window only where the side needs it, and a trace keeps the branch it saw: traced
    at whole units (no padding) the graph breaks on the partial last unit, and the export's
    validation says so instead of writing it."""
    import fastsam2.runtime.specs as specs
    from fastsam2.export.onnx_export import export_graphs
    from fastsam2.export.validate import ValidationError

    monkeypatch.setattr(specs, "region_trace_sizes", lambda tokens, align: (align, align))
    with pytest.raises(ValidationError, match="encoder_trunk at .*ONNX Runtime failed"):
        export_graphs(tiny256, tmp_path / "graphs", encoder_region=True, validate=True)
    assert not (tmp_path / "graphs").exists()


def test_track_on_ort_with_encoder_region_from_the_command_line(region_graphs, tmp_path):
    import json

    from PIL import Image

    from fastsam2.tools import cli

    clip = make_clip(8, split="hard", frames=3, size=256, index=0)
    (tmp_path / "clip").mkdir()
    for t, f in enumerate(clip.frames):
        Image.fromarray(f).save(tmp_path / "clip" / f"{t:05d}.png")
    ys, xs = np.nonzero(clip.masks[0] == 1)
    out = tmp_path / "out"
    assert cli.main(["track", "--backend", "ort", "--graphs", str(region_graphs), "--video", str(tmp_path / "clip"),
                     "--point", f"{int(xs.mean())},{int(ys.mean())}", "--encoder-region", "0", "--no-overlay",
                     "--threads", "1", "--out", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["encoder_region"] == 0
    assert len(list((out / "masks").rglob("*.png"))) == 3
