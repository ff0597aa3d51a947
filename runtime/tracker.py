"""The streaming SAM2 tracker: drives the stage graphs frame by frame through any backend.

It reproduces SAM2VideoPredictor's loop (sam2 1.1.0): conditioning frames plus the most recent
non-conditioning frames selected exactly as ``_prepare_memory_conditioned_features`` does, temporal
encodings, object pointers with their temporal encoding, object-score/occlusion handling, multimask
choice on prompted frames, several objects, new objects and correction clicks on later frames —
while holding memory bounded in video length: non-conditioning frames are evicted as soon as no
later frame can select them, and frames are read one at a time.

Two APIs share one engine:

* SAM2-style, over a video: ``init_state(video)``, ``add_new_points_or_box``, ``add_new_mask``,
  ``propagate_in_video`` (yields ``(frame_idx, obj_ids, video_res_logits)`` like SAM2);
* streaming, for robotics loops: ``track(frame, prompts)`` → :class:`TrackResult`, and
  ``refine(obj_id, ...)`` to correct the frame just tracked.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from .backends.base import Backend, infer_rows
from .config import NO_OBJ_SCORE
from .preprocess import points_to_model, preprocess_frame
from .specs import IMAGE_ENCODER, MASK_DECODER, MEMORY_ATTENTION, MEMORY_ENCODER, ROUTER
from .state import (
    FrameFeatures,
    FrameOutput,
    MaskBoxes,
    ObjectState,
    PendingMemory,
    PointPrompt,
    StageTimes,
    VideoState,
)
from .errors import UserError

if TYPE_CHECKING:
    from .router import TokenSelector

# SAM2 clamps previous mask logits fed back with correction clicks to avoid rare numerical issues.
PREV_LOGITS_CLAMP = 32.0


class TrackerError(UserError, ValueError):
    """A call the tracker cannot honour (bad prompt, unknown object, frame out of range)."""


@dataclass
class TrackerOptions:
    """Loop options. ``None`` means: the model config's (i.e. SAM2VideoPredictor's) value."""

    keep_ratio: float = 1.0  # fraction of tokens that go through memory attention (1.0: SAM2)
    min_kept: int = 0  # floor on the number of kept tokens
    prune_cond_frames: bool = False  # prune prompted frames too (SAM2 never does)
    memory_tokens: str = "kept"  # "kept": a frame writes only its kept tokens; "all": every token
    fill_hole_area: int | None = None
    non_overlap_masks: bool | None = None
    add_all_frames_to_correct_as_cond: bool | None = None
    max_cond_frames_in_attn: int | None = None
    profile_stages: bool = True  # per-stage wall-clock times (synchronizes GPU backends)
    # GPU path (defaults keep the reference behaviour):
    k_multiple: int = 1  # round the kept count up to a multiple of this (few shapes: CUDA graphs reuse)
    device_results: bool = False  # TrackResult logits/scores stay backend arrays: no host sync
    # resize/normalize on the backend's device (ops.preprocess_frames); None: wherever the ops can
    device_preprocess: bool | None = None
    # Encoder work that follows what is tracked (backends with a region encoder: torch). None: every
    # frame is encoded whole (SAM2). An int m: a frame is encoded on the rectangle of the encoder's
    # alignment units around every object's mask on the stream's previous frame, grown by m units;
    # outside it the previous frame's encoder features are reused (an approximation: J&F decides).
    # Prompted frames, frames after a lost object and the first frame are encoded whole.
    encoder_region: int | None = None
    encoder_refresh: int = 0  # with encoder_region: encode whole every this many frames (0: never)
    # with encoder_region: the rectangle follows the masks this many encoded frames before the last
    # (0: the last frame's). 1 lets a step be issued while the one before computes (in flight)
    # without waiting for its masks: on a GPU the steps overlap (another approximation: J&F decides).
    encoder_lag: int = 0

    def __post_init__(self):
        if not 0.0 < self.keep_ratio <= 1.0:
            raise TrackerError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}")
        if self.k_multiple < 1:
            raise TrackerError(f"k_multiple must be >= 1, got {self.k_multiple}")
        if self.memory_tokens not in ("kept", "all"):
            raise TrackerError(f"memory_tokens must be 'kept' or 'all', got {self.memory_tokens!r}")
        if self.encoder_region is not None and (isinstance(self.encoder_region, bool) or self.encoder_region < 0):
            raise TrackerError(f"encoder_region must be None or a margin >= 0 (units), got {self.encoder_region!r}")
        if self.encoder_refresh < 0:
            raise TrackerError(f"encoder_refresh must be >= 0, got {self.encoder_refresh}")
        if isinstance(self.encoder_lag, bool) or not isinstance(self.encoder_lag, int) or self.encoder_lag < 0:
            raise TrackerError(f"encoder_lag must be an int >= 0, got {self.encoder_lag!r}")


def tracker_setup(
    backend: Backend,
    *,
    keep: float = 1.0,
    text: str | None = None,
    texts: str | Path | None = None,
    router: str | Path | None = None,
    selector: str = "router",
    seed: int = 0,
    **options: Any,
) -> "tuple[TrackerOptions, TokenSelector | None]":
    """The options and token selector of a tracker over ``backend`` (see :meth:`SAM2Tracker.from_backend`):
    a selector only when pruning (``keep < 1``; ``selector`` "router", "random" or "grid", ``seed``
    the random one's); a router file is checked against the backend either way."""
    from .router import check_router_file, make_selector, read_router_file

    if text is not None and texts is None:
        raise TrackerError("text needs texts (an .npz of text embeddings from fastsam2-export text)")
    opts = TrackerOptions(keep_ratio=keep, **options)
    if keep < 1.0:
        return opts, make_selector(backend, selector, seed=seed, text=text, texts_path=texts, weights_path=router)
    if router is not None:
        check_router_file(read_router_file(router), router, backend.router_weights,
                          f"the {backend.name} backend runs")
    return opts, None


@dataclass
class Prompt:
    """A prompt in video pixel coordinates: points (+labels 1 positive / 0 negative), a box
    (x0, y0, x1, y1), or a binary mask [H, W]."""

    points: Any = None
    labels: Any = None
    box: Any = None
    mask: Any = None


@dataclass
class TrackResult:
    """Masks of every object on one frame, at video resolution."""

    frame_idx: int
    obj_ids: list[int]
    logits: np.ndarray  # [O, H, W] float32 mask logits (a device tensor with device_results)
    object_scores: dict[int, float] = field(default_factory=dict)  # 0-d tensors with device_results
    kept_tokens: dict[int, int] = field(default_factory=dict)
    ms: float = 0.0

    @property
    def masks(self) -> dict[int, np.ndarray]:
        """{obj_id: bool [H, W]}."""
        return {oid: self.logits[i] > 0 for i, oid in enumerate(self.obj_ids)}


def finite_logits(logits: np.ndarray, frame_idx: int) -> np.ndarray:
    """``logits`` (host) unchanged, or a TrackerError: NaN logits threshold to "no object", so they
    must never pass as masks."""
    if not np.isfinite(logits).all():
        raise TrackerError(f"frame {frame_idx}: the model produced NaN/inf mask logits (corrupt weights or engine?)")
    return logits


def rgb_frame(frame: Any) -> np.ndarray:
    """``frame`` as an array, checked to be RGB [H, W, 3] (:class:`TrackerError` otherwise)."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise TrackerError(f"frames must be RGB arrays [H, W, 3], got shape {frame.shape}")
    return frame


@dataclass
class _Job:
    """One object to track on one frame of one session."""

    state: VideoState
    obj: ObjectState
    feats: FrameFeatures


@dataclass
class _Decoded:
    low_res_masks: Any
    obj_ptr: Any
    object_score_logits: Any


class SAM2Tracker:
    """SAM2's video loop over a :class:`~fastsam2.runtime.backends.base.Backend`.

    ``router`` (optional): a :class:`~fastsam2.runtime.router.TokenSelector` giving the kept token
    indices [k] int64 when ``keep_ratio < 1``; without one, pruning is refused.
    """

    def __init__(
        self,
        backend: Backend,
        options: TrackerOptions | None = None,
        router: TokenSelector | None = None,
    ):
        self.backend = backend
        self.config = backend.config
        self.ops = backend.ops
        self.options = options or TrackerOptions()
        self.router = router
        if self.options.keep_ratio < 1.0 and router is None:
            raise TrackerError("keep_ratio < 1 needs a token router (see fastsam2.runtime.router)")
        min_keep = backend.limits.get("min_keep_ratio", 0.0)
        if self.options.keep_ratio < min_keep - 1e-9:
            raise TrackerError(
                f"keep_ratio {self.options.keep_ratio} is below {min_keep:.3f}, the lowest the {backend.name} "
                "backend's graphs take (TensorRT profile minimum); use a higher keep ratio or rebuild"
            )
        cfg, opt = self.config, self.options
        self.fill_hole_area = cfg.fill_hole_area if opt.fill_hole_area is None else opt.fill_hole_area
        self.non_overlap_masks = (
            cfg.non_overlap_masks if opt.non_overlap_masks is None else opt.non_overlap_masks
        )
        self.add_all_frames_to_correct_as_cond = (
            cfg.add_all_frames_to_correct_as_cond
            if opt.add_all_frames_to_correct_as_cond is None
            else opt.add_all_frames_to_correct_as_cond
        )
        self.max_cond_frames_in_attn = (
            cfg.max_cond_frames_in_attn
            if opt.max_cond_frames_in_attn is None
            else opt.max_cond_frames_in_attn
        )
        cap = backend.limits.get("max_cond_frames_in_attn")
        if cap is not None and (self.max_cond_frames_in_attn == -1 or self.max_cond_frames_in_attn > cap):
            raise TrackerError(
                f"max_cond_frames_in_attn {self.max_cond_frames_in_attn} exceeds the {cap} conditioning "
                f"frames the {backend.name} backend's memory attention profile holds"
            )
        ops = self.ops
        consts = backend.constants
        C = cfg.hidden_dim
        self._no_mem_embed = ops.asarray(
            np.asarray(consts["no_mem_embed"], np.float32).reshape(1, C, 1, 1)
        )
        self._no_obj_ptr = ops.asarray(np.asarray(consts["no_obj_ptr"], np.float32).reshape(1, C))
        self._all_idx = ops.arange(cfg.num_tokens).reshape(1, -1)  # [1, HW]: every token kept
        HM = cfg.mask_size
        self._no_points = (
            ops.asarray(np.zeros((1, 1, 2), np.float32)),
            ops.asarray(np.full((1, 1), -1, np.int32)),
        )
        self._no_mask = ops.asarray(np.zeros((1, 1, HM, HM), np.float32))
        self._flag = {v: ops.asarray(np.asarray([v], np.float32)) for v in (0.0, 1.0)}
        # objects per stage call (None: all that fit one call); TensorRT engines cap it at their profile
        self.max_batch = backend.limits.get("max_batch")
        self.times = StageTimes()
        self._stream: VideoState | None = None
        self._consts: dict[tuple, Any] = {}
        can_preprocess = getattr(ops, "preprocess_frames", None) is not None
        if self.options.device_preprocess and not can_preprocess:
            raise TrackerError(f"device_preprocess: the {backend.name} backend's ops cannot preprocess")
        self.device_preprocess = can_preprocess if self.options.device_preprocess is None else self.options.device_preprocess
        if self.options.encoder_region is not None and backend.region_encoder is None:
            raise TrackerError(f"encoder_region: the {backend.name} backend's image encoder computes whole frames "
                               "only (export the graphs with fastsam2-export --encoder-region, or use the torch backend)")

    @classmethod
    def from_backend(
        cls,
        backend: Backend,
        *,
        keep: float = 1.0,
        text: str | None = None,
        texts: str | Path | None = None,
        router: str | Path | None = None,
        selector: str = "router",
        seed: int = 0,
        **options: Any,
    ) -> "SAM2Tracker":
        """A tracker over ``backend`` keeping the fraction ``keep`` of the frame's tokens (1.0: SAM2).

        ``router``: the router .safetensors the backend runs (a different or broken file is refused,
        see :func:`~fastsam2.runtime.router.make_router`); ``text``: the object's description, a row of
        ``texts`` (an .npz of ``fastsam2-export text``); ``options``: any :class:`TrackerOptions`
        field (``fill_hole_area=0``, ``memory_tokens="all"``, ...). ``selector``: the tokens kept by
        the router (default), or "random" / "grid" baselines (``seed``: the random one's).
        """
        opts, chosen = tracker_setup(backend, keep=keep, text=text, texts=texts, router=router,
                                     selector=selector, seed=seed, **options)
        return cls(backend, opts, router=chosen)

    def _const(self, x: np.ndarray) -> Any:
        """A small host array as a backend array, uploaded once per distinct value (no per-frame copy)."""
        key = (x.dtype.str, x.shape, x.tobytes())
        arr = self._consts.get(key)
        if arr is None:
            if len(self._consts) > 4096:
                self._consts.clear()
            arr = self._consts[key] = self.ops.asarray(x)
        return arr

    # ------------------------------------------------------------------------------------------
    # stage calls
    def _run(self, graph: str, feed: dict[str, Any]) -> dict[str, Any]:
        return self._run_rows(graph, [feed])[0]

    def _run_rows(self, graph: str, feeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One-row feeds of ``graph`` run in batches of equal shapes (:func:`infer_rows`)."""
        runner = self.backend.runners[graph]
        return self._timed(graph, infer_rows, runner, feeds, self.ops.cat, self.max_batch)

    def _timed(self, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, its wall-clock time added to ``times[stage]`` when profiling (synchronized)."""
        if not self.options.profile_stages:
            return fn(*args)
        t0 = time.perf_counter()
        out = fn(*args)
        self.ops.synchronize()
        self.times.add(stage, (time.perf_counter() - t0) * 1e3)
        return out

    def encode_image(self, image: np.ndarray, frame_idx: int) -> FrameFeatures:
        """RGB uint8 [H,W,3] → :class:`FrameFeatures` (image encoder outputs)."""
        return self.encode_images([(image, frame_idx)])[0]

    def encode_images(
        self, frames: list[tuple[np.ndarray, int]], states: list[VideoState] | None = None,
        whole: list[bool] | None = None,
    ) -> list[FrameFeatures]:
        """[(RGB uint8 [H,W,3], frame index)] → their :class:`FrameFeatures`, encoded in batches.

        ``states``: the session of each frame, for ``TrackerOptions.encoder_region`` (without it
        frames are encoded whole); ``whole[i]``: frame i must be encoded whole (it is prompted)."""
        regions = self.options.encoder_region is not None and states is not None
        t0 = time.perf_counter()
        # on a rectangle only the pixels it reads are preprocessed; choosing it is counted here
        rects = self._regions(frames, states, whole or [False] * len(frames)) if regions else None
        windows = [None if r is None else self.backend.region_encoder.pixel_window(r) for r in rects] \
            if rects is not None else [None] * len(frames)
        xs = self._preprocess([im for im, _ in frames], windows)
        if self.options.profile_stages:
            self.ops.synchronize()
            self.times.add("preprocess", (time.perf_counter() - t0) * 1e3)
        if rects is not None:
            return self._timed(IMAGE_ENCODER, self._encode_regions, frames, xs, states, rects)
        outs = self._run_rows(IMAGE_ENCODER, [{"image": x} for x in xs])
        return [
            FrameFeatures(t, out["vision_feats"], out["fpn_s0"], out["fpn_s1"])
            for (_, t), out in zip(frames, outs)
        ]

    def _preprocess(self, images: list[np.ndarray], windows: list[tuple[int, int, int, int] | None]) -> list[Any]:
        """RGB uint8 [H,W,3] frames → normalized float32 [1,3,S,S] each on the backend's device, or
        only rows y0:y1, columns x0:x1 of it where ``windows[i]`` is (y0, y1, x0, x1)."""
        cfg = self.config
        if self.device_preprocess:  # frames of one size resized as one batch
            return self.ops.preprocess_frames(images, cfg.image_size, cfg.img_mean, cfg.img_std, windows)
        xs = []
        for im, win in zip(images, windows):
            x = preprocess_frame(im, cfg.image_size, cfg.img_mean, cfg.img_std)
            if win is not None:
                x = np.ascontiguousarray(x[:, :, win[0]:win[1], win[2]:win[3]])
            xs.append(self.ops.asarray(x))
        return xs

    def _regions(self, frames: list[tuple[np.ndarray, int]], states: list[VideoState], whole: list[bool]) -> list[Any]:
        """The rectangle each frame is encoded on (None: whole): around the union of its session's
        objects' masks on the encoded frame ``encoder_lag`` frames before the last one (the oldest
        kept, early in a session), when every object has one there. A session appearing twice in
        one call (not done by the tracker's own loops) is encoded whole.

        The boxes of every session's last frame are computed in one batch where the masks are and
        start their way to the host behind the work issued so far (:meth:`_issue_boxes`); only the
        boxes used here are waited for: with a lag of 1 those of a step that has already finished."""
        enc, opt = self.backend.region_encoder, self.options
        scale = self.config.image_size / self.config.mask_size
        self._issue_boxes(states)
        rects: list[Any] = []
        seen: set[int] = set()
        for (_, t), st, w in zip(frames, states, whole):
            due = bool(opt.encoder_refresh) and st.encoder_whole_idx is not None \
                and abs(t - st.encoder_whole_idx) >= opt.encoder_refresh
            entry = st.encoder_boxes[0] if st.encoder_boxes else None
            usable = not w and not due and st.encoder_cache is not None and id(st) not in seen \
                and entry is not None and entry.boxes is not None and entry.obj_ids == tuple(st.objects)
            seen.add(id(st))
            if not usable:
                rects.append(None)
                continue
            entry.ready.synchronize()
            union = None
            for b in self.ops.to_numpy(entry.boxes):
                if b[0] >= 0:
                    union = b if union is None else (min(union[0], b[0]), min(union[1], b[1]),
                                                     max(union[2], b[2]), max(union[3], b[3]))
            # None: whole (every object lost: look everywhere)
            rects.append(None if union is None else enc.rect_for(
                tuple(float(v) * scale for v in union), opt.encoder_region, entry.rect, edge_px=scale))
        return rects

    def _issue_boxes(self, states: list[VideoState]) -> None:
        """Start the boxes of every object's mask on each session's last encoded frame on their way
        to the host (one batched computation, one copy), and keep the last ``encoder_lag + 1``
        frames' per session. A frame encoded again (a prompt) replaces its entry."""
        issued: list[tuple[MaskBoxes, int, int]] = []  # entry, its first box, its object count
        masks: list[Any] = []
        seen: set[int] = set()
        for st in states:
            if st.cached is None or id(st) in seen:
                continue
            seen.add(id(st))
            f = st.cached.frame_idx
            outs = [obj.output_at(f) for obj in st.objects.values()]
            entry = MaskBoxes(f, st.encoder_rect, tuple(st.objects), None)
            if outs and None not in outs:
                issued.append((entry, len(masks), len(outs)))
                masks.extend(o.pred_masks for o in outs)
            if st.encoder_boxes and st.encoder_boxes[-1].frame_idx == f:
                st.encoder_boxes.pop()
            st.encoder_boxes.append(entry)
            while len(st.encoder_boxes) > self.options.encoder_lag + 1:
                st.encoder_boxes.popleft()
        if not masks:
            return
        boxes = self.ops.to_host_async(self.ops.mask_boxes(self.ops.cat(masks)))
        ready = self.ops.marker()
        for entry, i, n in issued:
            entry.boxes, entry.ready = boxes[i:i + n], ready

    def _encode_regions(
        self, frames: list[tuple[np.ndarray, int]], xs: list[Any], states: list[VideoState], rects: list[Any]
    ) -> list[FrameFeatures]:
        """Frames' pixels (``xs``: whole, or the window of their rectangle ``rects[i]``) → features."""
        caches = [st.encoder_cache if r is not None else None for st, r in zip(states, rects)]
        (fpn0, fpn1, feats), cache = self.backend.region_encoder.encode(xs, rects, caches)
        out = []
        for i, ((_, t), st, r) in enumerate(zip(frames, states, rects)):
            st.encoder_cache, st.encoder_rect = cache[i], r
            st.encoder_area += self.backend.region_encoder.area(r)
            st.encoder_frames += 1
            if r is None:
                st.encoder_whole_idx = t
            out.append(FrameFeatures(t, feats[i:i + 1], fpn0[i:i + 1], fpn1[i:i + 1], whole=r is None))
        return out

    def _decoder_feed(
        self,
        pix_feat: Any,
        feats: FrameFeatures,
        points: PointPrompt | None,
        mask_input: Any,
        multimask: bool,
    ) -> dict[str, Any]:
        """The mask decoder's one-row feed: pix_feat [1,C,H,W], the frame's FPN levels, clicks
        (model-input pixels) or SAM2's padding point, an optional low-res mask prompt [1,1,HM,WM]."""
        ops = self.ops
        if points is None:
            coords, labels = self._no_points
        else:
            coords = ops.asarray(points.coords[None].astype(np.float32))
            labels = ops.asarray(points.labels[None].astype(np.int32))
        return {
            "pix_feat": pix_feat,
            "fpn_s0": feats.fpn_s0,
            "fpn_s1": feats.fpn_s1,
            "point_coords": coords,
            "point_labels": labels,
            "mask_input": self._no_mask if mask_input is None else mask_input,
            "has_mask_input": self._flag[0.0 if mask_input is None else 1.0],
            "multimask_output": self._flag[1.0 if multimask else 0.0],
        }

    def _decode(self, *args: Any) -> _Decoded:
        """One object's mask decoder call (arguments of :meth:`_decoder_feed`)."""
        out = self._run(MASK_DECODER, self._decoder_feed(*args))
        return _Decoded(out["low_res_masks"], out["obj_ptr"], out["object_score_logits"])

    def _use_multimask(self, is_init_cond_frame: bool, num_points: int) -> bool:
        cfg = self.config
        return (
            cfg.multimask_output_in_sam
            and (is_init_cond_frame or cfg.multimask_output_for_tracking)
            and cfg.multimask_min_pt_num <= num_points <= cfg.multimask_max_pt_num
        )

    def _fill_holes(self, masks: Any) -> Any:
        if self.fill_hole_area <= 0:
            return masks
        from .postprocess import fill_holes

        return self.ops.asarray(fill_holes(self.ops.to_numpy(masks), self.fill_hole_area))

    def _encode_memories(self, entries: list[tuple[Any, Any, Any, bool, Any]]) -> list[Any]:
        """Packed memory [1,K,Cm] of each (vision_feats [1,C,H,W], mask logits [1,1,HM,WM], object
        score [1,1], binarize, kept_idx [1,K]), the memory encoder run in batches."""
        feeds = [
            {
                "vision_feats": feats_vision,
                "mask_logits": mask_logits,
                "object_score_logits": score,
                "binarize": self._flag[1.0 if binarize else 0.0],
                "kept_idx": kept,
            }
            for feats_vision, mask_logits, score, binarize, kept in entries
        ]
        return [self.ops.pack_memory(out["memory"]) for out in self._run_rows(MEMORY_ENCODER, feeds)]

    def flush_memory(self, state: VideoState) -> None:
        """Encode the memory of every prompted frame still pending (SAM2's propagation preflight)."""
        self._flush(list(state.objects.values()))

    def _flush(self, objs: list[ObjectState]) -> None:
        """Encode the pending memories of ``objs`` (all of them in batched memory-encoder calls)."""
        todo = [out for obj in objs for out in (*obj.cond.values(), *obj.recent.values()) if out.pending]
        if not todo:
            return
        entries = [
            (o.pending.vision_feats, o.pending.mask_logits, o.object_score_logits, o.pending.binarize,
             o.pending.kept_idx)
            for o in todo
        ]
        for out, memory in zip(todo, self._encode_memories(entries)):
            out.memory = memory
            out.memory_pos_idx = out.pending.kept_idx
            out.pending = None

    # ------------------------------------------------------------------------------------------
    # memory selection (SAM2Base._prepare_memory_conditioned_features, forward direction)
    def _select_cond(self, frame_idx: int, cond: dict[int, FrameOutput]):
        limit = self.max_cond_frames_in_attn
        if limit == -1 or len(cond) <= limit:
            return cond, {}
        if limit < 2:
            raise TrackerError("max_cond_frames_in_attn must be -1 or >= 2")
        selected: dict[int, FrameOutput] = {}
        before = max((t for t in cond if t < frame_idx), default=None)
        if before is not None:
            selected[before] = cond[before]
        after = min((t for t in cond if t >= frame_idx), default=None)
        if after is not None:
            selected[after] = cond[after]
        rest = sorted((t for t in cond if t not in selected), key=lambda t: abs(t - frame_idx))
        for t in rest[: limit - len(selected)]:
            selected[t] = cond[t]
        unselected = {t: v for t, v in cond.items() if t not in selected}
        return selected, unselected

    def _memory_frames(self, frame_idx: int) -> list[tuple[int, int]]:
        """[(t_pos, frame index)] of the non-conditioning memory slots for ``frame_idx``."""
        n, r = self.config.num_maskmem, self.config.memory_temporal_stride_for_eval
        slots = []
        for t_pos in range(1, n):
            t_rel = n - t_pos
            if t_rel == 1:
                prev = frame_idx - 1
            else:
                prev = ((frame_idx - 2) // r) * r - (t_rel - 2) * r
            slots.append((t_pos, prev))
        return slots

    def _max_ptrs(self, state: VideoState) -> int:
        m = self.config.max_obj_ptrs_in_encoder
        return m if state.num_frames is None else min(state.num_frames, m)

    def _gather_memory(self, state: VideoState, obj: ObjectState, frame_idx: int) -> dict[str, Any]:
        """Memory attention's inputs for ``obj`` on ``frame_idx`` but the frame's own tokens, one row:
        memory [1,M,Cm], memory_pos_idx / memory_tpos_idx [1,M], obj_ptrs [1,P,C], obj_ptr_tpos [1,P]."""
        ops, cfg = self.ops, self.config
        selected, unselected = self._select_cond(frame_idx, obj.cond)
        entries: list[tuple[int, FrameOutput]] = [(0, out) for out in selected.values()]
        for t_pos, prev in self._memory_frames(frame_idx):
            out = obj.recent.get(prev)
            if out is None:
                out = unselected.get(prev)
            if out is not None:
                entries.append((t_pos, out))
        mem, pos_idx, tpos_idx = [], [], []
        for t_pos, out in entries:
            if out.memory is None:
                raise TrackerError(f"memory of frame {out.frame_idx} is not encoded (internal error)")
            mem.append(ops.unpack_memory(out.memory))
            pos_idx.append(out.memory_pos_idx)
            tpos_idx.append(ops.full((1, out.memory_tokens), cfg.num_maskmem - t_pos - 1, "int64"))
        # object pointers: selected conditioning frames (only past ones in eval), then up to
        # max_ptrs-1 preceding frames
        max_ptrs = self._max_ptrs(state)
        ptr_cond = selected
        if cfg.only_obj_ptrs_in_the_past_for_eval:
            ptr_cond = {t: o for t, o in selected.items() if t <= frame_idx}
        ptrs: list[tuple[int, Any]] = [
            ((frame_idx - t) if cfg.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t), o.obj_ptr)
            for t, o in ptr_cond.items()
        ]
        for t_diff in range(1, max_ptrs):
            t = frame_idx - t_diff
            if t < 0 or (state.num_frames is not None and t >= state.num_frames):
                break
            out = obj.recent.get(t, unselected.get(t))
            if out is not None:
                ptrs.append((t_diff, out.obj_ptr))
        t_diff_max = max(max_ptrs - 1, 1)
        tpos = np.asarray([[p for p, _ in ptrs]], np.float32) / np.float32(t_diff_max)  # [1, P]
        C = cfg.hidden_dim
        obj_ptrs = (
            ops.cat([p for _, p in ptrs], axis=0).reshape(1, len(ptrs), C)
            if ptrs
            else self._const(np.zeros((1, 0, C), np.float32))
        )
        return {
            "memory": ops.cat(mem, axis=1),
            "memory_pos_idx": ops.cat(pos_idx, axis=1),
            "memory_tpos_idx": ops.cat(tpos_idx, axis=1),
            "obj_ptrs": obj_ptrs,
            "obj_ptr_tpos": self._const(tpos),
        }

    def _evict(self, state: VideoState, obj: ObjectState, next_frame: int) -> None:
        """Drop non-conditioning frames that no frame from ``next_frame`` on can select."""
        keep = {prev for _, prev in self._memory_frames(next_frame)}
        keep.update(next_frame - d for d in range(1, self._max_ptrs(state)))
        for t in [t for t in obj.recent if t not in keep]:
            del obj.recent[t]
        for t in [t for t in obj.points if t not in obj.cond and t not in obj.recent]:
            del obj.points[t]

    # ------------------------------------------------------------------------------------------
    # per-object steps
    def _kept_count(self) -> int:
        """K, the kept tokens of a pruned frame (the same for every object)."""
        opt, n = self.options, self.config.num_tokens
        k = max(math.ceil(opt.keep_ratio * n), opt.min_kept, 1)
        return min(n, -(-k // opt.k_multiple) * opt.k_multiple)

    def _kept_rows(self, jobs: list[_Job], prompted: bool) -> list[Any]:
        """Kept token positions [1,K] per job: every token at keep 1.0 (and on prompted frames unless
        ``prune_cond_frames``), else the router's top K for each object, all objects in one call."""
        opt = self.options
        if opt.keep_ratio >= 1.0 or (prompted and not opt.prune_cond_frames):
            return [self._all_idx] * len(jobs)
        k = self._kept_count()
        return self._timed(ROUTER, self.router.select, [(j.obj, j.feats) for j in jobs], k)

    def _condition(self, jobs: list[_Job], kept: list[Any]) -> list[Any]:
        """Memory attention for each job (objects with equal K, M, P batched): pix_feat [1,C,H,W]."""
        self._flush([j.obj for j in jobs])
        feeds = [
            {"vision_feats": j.feats.vision_feats, "kept_idx": k,
             **self._gather_memory(j.state, j.obj, j.feats.frame_idx)}
            for j, k in zip(jobs, kept)
        ]
        return [out["pix_feat"] for out in self._run_rows(MEMORY_ATTENTION, feeds)]

    def _track_objects(self, jobs: list[_Job]) -> None:
        """Non-prompted frames (SAM2's track_step) of several objects — of one frame, or of several
        streams' frames: memory attention, mask decoder and memory encoder each run on batches of
        objects whose inputs have equal shapes. Row by row the same arithmetic as one object at a time."""
        kept = self._kept_rows(jobs, prompted=False)
        pix = self._condition(jobs, kept)
        multimask = self._use_multimask(False, 0)
        feeds = [self._decoder_feed(p, j.feats, None, None, multimask) for p, j in zip(pix, jobs)]
        decs = self._run_rows(MASK_DECODER, feeds)
        mem_idx = kept if self.options.memory_tokens == "kept" else [self._all_idx] * len(jobs)
        memories = self._encode_memories([
            (j.feats.vision_feats, d["low_res_masks"], d["object_score_logits"], False, m)
            for j, d, m in zip(jobs, decs, mem_idx)
        ])
        for j, d, k, m, memory in zip(jobs, decs, kept, mem_idx, memories):
            j.obj.recent[j.feats.frame_idx] = FrameOutput(
                frame_idx=j.feats.frame_idx,
                pred_masks=self._fill_holes(d["low_res_masks"]),
                obj_ptr=d["obj_ptr"],
                object_score_logits=d["object_score_logits"],
                is_cond=False,
                memory=memory,
                memory_pos_idx=m,
                kept_tokens=int(k.shape[-1]),
            )

    def _prompt_object(
        self,
        state: VideoState,
        obj: ObjectState,
        feats: FrameFeatures,
        points: PointPrompt | None = None,
        mask: np.ndarray | None = None,
    ) -> FrameOutput:
        """A frame the user prompted: SAM on the frame (first prompt) or a correction (frame already
        tracked: memory-conditioned, with the previous logits as mask input)."""
        t = feats.frame_idx
        is_init = t not in obj.tracked
        is_cond = is_init or self.add_all_frames_to_correct_as_cond or t in obj.cond
        prev = obj.output_at(t)
        if mask is not None and self.config.use_mask_input_as_output_without_sam:
            low, ptr, score = self._mask_as_output(feats, mask)
            kept_count = 0
        else:
            if mask is not None:
                raise TrackerError("mask prompts need use_mask_input_as_output_without_sam configs")
            prev_logits = None
            if prev is not None:
                prev_logits = self.ops.clip(prev.pred_masks, -PREV_LOGITS_CLAMP, PREV_LOGITS_CLAMP)
            if is_init:
                pix = self.ops.add(feats.vision_feats, self._no_mem_embed)
                kept_count = 0
            else:
                job = [_Job(state, obj, feats)]
                kept = self._kept_rows(job, prompted=True)
                pix = self._condition(job, kept)[0]
                kept_count = int(kept[0].shape[-1])
            n_pts = 0 if points is None else int(points.labels.shape[0])
            dec = self._decode(pix, feats, points, prev_logits, self._use_multimask(is_init, n_pts))
            low, ptr, score = dec.low_res_masks, dec.obj_ptr, dec.object_score_logits
        pred = self._fill_holes(low)
        mem_idx = self._all_idx
        if self.options.prune_cond_frames and self.options.memory_tokens == "kept" and not is_init:
            mem_idx = self._kept_rows([_Job(state, obj, feats)], prompted=True)[0]
        out = FrameOutput(
            frame_idx=t,
            pred_masks=pred,
            obj_ptr=ptr,
            object_score_logits=score,
            is_cond=is_cond,
            pending=PendingMemory(
                feats.vision_feats, pred, self.config.binarize_mask_from_pts_for_mem_enc, mem_idx
            ),
            kept_tokens=kept_count,
        )
        if is_cond:
            obj.cond[t] = out
            obj.recent.pop(t, None)
        else:
            obj.recent[t] = out
        return out

    def _mask_as_output(self, feats: FrameFeatures, mask: np.ndarray):
        """SAM2's _use_mask_as_output for a mask prompt [H,W] bool at video resolution."""
        from .postprocess import resize_bilinear_antialias

        cfg, ops = self.config, self.ops
        S, HM = cfg.image_size, cfg.mask_size
        m = np.asarray(mask, dtype=np.float32)[None, None]
        if m.shape[-2:] != (S, S):
            m = (resize_bilinear_antialias(m, (S, S)) >= 0.5).astype(np.float32)
        high = m * 20.0 - 10.0
        low = resize_bilinear_antialias(high, (HM, HM)).astype(np.float32)
        # the decoder makes the object pointer from the mask, downsampled by SAM2's mask_downsample
        w = np.asarray(self.backend.constants["mask_downsample_weight"], np.float32)[0, 0]
        b = np.float32(np.asarray(self.backend.constants["mask_downsample_bias"]).reshape(-1)[0])
        blocks = m[0, 0].reshape(HM, S // HM, HM, S // HM)
        md = (np.einsum("iajb,ab->ij", blocks, w) + b).astype(np.float32)[None, None]
        dec = self._decode(feats.vision_feats, feats, None, ops.asarray(md), False)
        present = bool(m.any())
        ptr = dec.obj_ptr if present else self._no_obj_ptr
        score = ops.asarray(np.full((1, 1), 10.0 if present else -10.0, np.float32))
        return ops.asarray(low), ptr, score

    # ------------------------------------------------------------------------------------------
    # outputs
    def _video_res(self, state: VideoState, frame_idx: int, to_host: bool = True) -> np.ndarray:
        """All objects' logits on ``frame_idx`` at video resolution [O,1,H,W] (NO_OBJ if absent);
        ``to_host=False``: a backend array, without a host synchronization."""
        ops, HM = self.ops, self.config.mask_size
        masks = []
        for obj in state.objects.values():
            out = obj.output_at(frame_idx)
            masks.append(out.pred_masks if out is not None else ops.full((1, 1, HM, HM), NO_OBJ_SCORE))
        if not masks:
            return np.zeros((0, 1, state.video_height, state.video_width), np.float32)
        res = ops.resize_bilinear(ops.cat(masks, axis=0), (state.video_height, state.video_width))
        if self.non_overlap_masks:
            res = ops.non_overlapping(res)
        if not to_host:
            return res
        return finite_logits(ops.to_numpy(res), frame_idx)

    def memory_bytes(self, state: VideoState) -> int:
        """Bytes held by the memory bank (memory tokens, masks, pointers) of ``state``."""
        return sum(o.memory_bytes(self.ops.nbytes) for o in state.objects.values())

    # ------------------------------------------------------------------------------------------
    # SAM2-style API over a video
    def init_state(self, video: Any, *, on_bad_frame: str = "stop") -> VideoState:
        """Open ``video`` (folder of JPEG/PNG, video file, stream URL, or a FrameSource) lazily."""
        from .frames import FrameSource, open_frames

        source = video if isinstance(video, FrameSource) else open_frames(video, on_bad_frame=on_bad_frame)
        return VideoState(
            video_height=source.height,
            video_width=source.width,
            num_frames=source.num_frames,
            source=source,
        )

    def _features(
        self, state: VideoState, frame_idx: int, image: np.ndarray | None = None, whole: bool = False
    ) -> FrameFeatures:
        cached = state.cached
        # a prompted frame encoded on a rectangle is encoded again whole, where it can be read again
        if cached is not None and cached.frame_idx == frame_idx and (cached.whole or not whole or image is None
                                                                     and state.source is None):
            return cached
        if image is None:
            if state.source is None:
                raise TrackerError(f"frame {frame_idx} is not available in a streaming session")
            if state.num_frames is not None and not 0 <= frame_idx < state.num_frames:
                raise TrackerError(f"frame {frame_idx} is outside the video (0..{state.num_frames - 1})")
            image = state.source.get(frame_idx).image
        state.cached = self.encode_images([(image, frame_idx)], [state], [whole])[0]
        return state.cached

    def _object(self, state: VideoState, obj_id: int) -> ObjectState:
        if not isinstance(obj_id, (int, np.integer)) or isinstance(obj_id, bool):
            raise TrackerError(f"object ids are integers, got {obj_id!r}")
        obj = state.objects.get(int(obj_id))
        if obj is None:
            obj = state.objects[int(obj_id)] = ObjectState(int(obj_id))
        return obj

    def _point_prompt(
        self,
        state: VideoState,
        points: Any,
        labels: Any,
        box: Any,
        normalize_coords: bool = True,
    ) -> PointPrompt:
        h, w = state.video_height, state.video_width
        if (points is None) != (labels is None):
            raise TrackerError("points and labels must be provided together")
        if points is None and box is None:
            raise TrackerError("at least one of points or box must be provided")
        pts = np.zeros((0, 2), np.float32) if points is None else np.asarray(points, np.float32).reshape(-1, 2)
        lab = np.zeros((0,), np.int32) if labels is None else np.asarray(labels).reshape(-1).astype(np.int32)
        if pts.shape[0] != lab.shape[0]:
            raise TrackerError(f"{pts.shape[0]} points but {lab.shape[0]} labels")
        if box is not None:
            b = np.asarray(box, np.float32).reshape(-1)
            if b.shape != (4,):
                raise TrackerError(f"a box is (x0, y0, x1, y1), got {box!r}")
            if b[2] <= b[0] or b[3] <= b[1]:
                raise TrackerError(f"box {tuple(b.tolist())} is empty (need x0 < x1 and y0 < y1)")
            pts = np.concatenate([b.reshape(2, 2), pts], axis=0)
            lab = np.concatenate([np.asarray([2, 3], np.int32), lab])
        if normalize_coords:
            outside = (pts[:, 0] < 0) | (pts[:, 0] > w) | (pts[:, 1] < 0) | (pts[:, 1] > h)
            if outside.any():
                x, y = pts[int(np.argmax(outside))]
                raise TrackerError(f"prompt point ({x:g}, {y:g}) is outside the {w}x{h} frame")
            pts = points_to_model(pts, (h, w), self.config.image_size)
        else:
            pts = pts * np.float32(self.config.image_size)
        return PointPrompt(pts.astype(np.float32), lab)

    def add_new_points_or_box(
        self,
        state: VideoState,
        frame_idx: int,
        obj_id: int,
        points: Any = None,
        labels: Any = None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
        box: Any = None,
    ) -> tuple[int, list[int], np.ndarray]:
        """Add clicks / a box for ``obj_id`` on ``frame_idx`` (pixel coordinates of the video).

        Returns ``(frame_idx, obj_ids, logits [O,1,H,W])`` like SAM2VideoPredictor.
        """
        prompt = Prompt(points=points, labels=labels, box=box)
        self._apply_prompt(state, obj_id, frame_idx, prompt, clear_old_points, normalize_coords)
        return frame_idx, state.obj_ids, self._video_res(state, frame_idx)

    def add_new_mask(self, state: VideoState, frame_idx: int, obj_id: int, mask: Any) -> tuple[int, list[int], np.ndarray]:
        """Add a binary mask [H,W] (any size; resized like SAM2) for ``obj_id`` on ``frame_idx``."""
        self._apply_prompt(state, obj_id, frame_idx, Prompt(mask=mask))
        return frame_idx, state.obj_ids, self._video_res(state, frame_idx)

    def remove_object(self, state: VideoState, obj_id: int) -> list[int]:
        """Forget ``obj_id`` (its prompts, memory and pointers); returns the remaining object ids.

        Objects do not share memory, so the others are unaffected (SAM2VideoPredictor.remove_object
        re-runs them only because it stores all objects in one batch)."""
        if obj_id not in state.objects:
            raise TrackerError(f"no object {obj_id} (objects: {state.obj_ids})")
        del state.objects[obj_id]
        return state.obj_ids

    def set_profiling(self, enabled: bool) -> StageTimes:
        """Turn per-stage timing on or off and start a fresh :class:`StageTimes` (returned)."""
        self.options.profile_stages = enabled
        self.times = StageTimes()
        return self.times

    def _check_prompt_frame(self, obj: ObjectState, frame_idx: int) -> None:
        if frame_idx in obj.tracked and obj.output_at(frame_idx) is None:
            raise TrackerError(
                f"frame {frame_idx} was tracked for object {obj.obj_id} but has left the bounded "
                "memory window; corrections are possible on the frames still in memory"
            )

    def propagate_in_video(
        self,
        state: VideoState,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
    ) -> Iterator[tuple[int, list[int], np.ndarray]]:
        """Track every object forward; yields ``(frame_idx, obj_ids, logits [O,1,H,W])``."""
        if not state.objects:
            raise TrackerError("no prompts given: add points, a box or a mask first")
        for obj in state.objects.values():
            if not obj.cond:
                raise TrackerError(f"object {obj.obj_id} has no prompt on any frame")
        self.flush_memory(state)
        if start_frame_idx is None:
            start_frame_idx = min(t for o in state.objects.values() for t in o.cond)
        n = state.num_frames
        if max_frame_num_to_track is None:
            max_frame_num_to_track = n if n is not None else 1 << 62
        end = start_frame_idx + max_frame_num_to_track
        if n is not None:
            end = min(end, n - 1)
        frames = self._iter_frames(state, start_frame_idx, end)
        for frame_idx, image in frames:
            self.step_frames([(state, self._features(state, frame_idx, image))])
            yield frame_idx, state.obj_ids, self._video_res(state, frame_idx)

    def _iter_frames(self, state: VideoState, start: int, end: int) -> Iterator[tuple[int, np.ndarray | None]]:
        source = state.source
        if source is None:
            raise TrackerError("propagate_in_video needs a session opened with init_state(video)")
        if hasattr(source, "iter_from"):
            for frame in source.iter_from(start):
                if frame.index > end:
                    break
                yield frame.index, frame.image
            return
        for frame in source:
            if frame.index < start:
                continue
            if frame.index > end:
                break
            yield frame.index, frame.image

    def step_frames(self, frames: list[tuple[VideoState, FrameFeatures]]) -> None:
        """One frame of each session ``(state, its frame's features)``: every object not prompted on
        its frame is tracked — all objects of all sessions batched stage by stage — then memory
        that no later frame can select is evicted. Sessions share nothing but the calls."""
        jobs = [
            _Job(state, obj, feats)
            for state, feats in frames
            for obj in state.objects.values()
            if feats.frame_idx not in obj.cond
        ]
        if jobs:
            self._track_objects(jobs)
        for state, feats in frames:
            for obj in state.objects.values():
                obj.tracked.add(feats.frame_idx)
                self._evict(state, obj, feats.frame_idx + 1)

    # ------------------------------------------------------------------------------------------
    # streaming API
    def reset(self) -> None:
        """Forget the streaming session (objects, memory, frame counter)."""
        self._stream = None

    @property
    def stream_state(self) -> VideoState | None:
        return self._stream

    def track(self, frame: np.ndarray, prompts: dict[int, Prompt] | None = None) -> TrackResult:
        """Segment every object on the next frame of a stream.

        ``frame``: RGB uint8 [H,W,3]. ``prompts``: {obj_id: Prompt} given on this frame (a new
        object, or a re-initialisation of an existing one). Returns the masks at frame resolution.
        """
        frame = rgb_frame(frame)
        if self._stream is None:
            self._stream = VideoState(*frame.shape[:2])
        if not self._stream.objects and not prompts:
            raise TrackerError("no object to track: pass prompts={obj_id: Prompt(...)} on a frame")
        return self.track_streams([(self._stream, frame, prompts)])[0]

    def track_streams(
        self, items: list[tuple[VideoState, np.ndarray, dict[int, Prompt] | None]]
    ) -> list[TrackResult]:
        """The next frame of each of several streaming sessions ``(state, RGB uint8 [H,W,3],
        {obj_id: Prompt} or None)``, batched: one image-encoder call for all frames, then every
        object of every session through the per-object stages together (:meth:`step_frames`).
        A session without objects has its frame encoded and counted, nothing tracked. Returns one
        :class:`TrackResult` per item; ``ms`` is the whole batch's time."""
        t0 = time.perf_counter()
        frames = []
        for state, frame, _ in items:
            frame = rgb_frame(frame)
            if frame.shape[:2] != (state.video_height, state.video_width):
                raise TrackerError(
                    f"frame size {frame.shape[1]}x{frame.shape[0]} differs from the stream's "
                    f"{state.video_width}x{state.video_height}"
                )
            frames.append((frame, state.last_frame_idx + 1))
        feats = self.encode_images(frames, [state for state, _, _ in items], [bool(p) for _, _, p in items])
        for (state, _, prompts), f in zip(items, feats):
            state.cached = f
            for obj_id, prompt in (prompts or {}).items():
                self._apply_prompt(state, obj_id, f.frame_idx, prompt)
        self._flush([obj for state, _, _ in items for obj in state.objects.values()])
        self.step_frames([(state, f) for (state, _, _), f in zip(items, feats) if state.objects])
        for (state, _, _), f in zip(items, feats):
            state.last_frame_idx = f.frame_idx
        return [self._result(state, f.frame_idx, t0) for (state, _, _), f in zip(items, feats)]

    def refine(
        self,
        obj_id: int,
        points: Any = None,
        labels: Any = None,
        box: Any = None,
        mask: Any = None,
        clear_old_points: bool = True,
    ) -> TrackResult:
        """Correct ``obj_id`` on the frame just tracked (clicks, a box or a mask)."""
        state = self._stream
        if state is None or state.last_frame_idx < 0:
            raise TrackerError("refine() corrects the last tracked frame: call track() first")
        if obj_id not in state.objects:
            raise TrackerError(f"unknown object {obj_id}; objects: {state.obj_ids}")
        t0 = time.perf_counter()
        t = state.last_frame_idx
        prompt = Prompt(points=points, labels=labels, box=box, mask=mask)
        self._apply_prompt(state, obj_id, t, prompt, clear_old_points=clear_old_points)
        return self._result(state, t, t0)

    def _apply_prompt(
        self,
        state: VideoState,
        obj_id: int,
        frame_idx: int,
        prompt: Prompt,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
    ) -> None:
        """Run ``prompt`` for ``obj_id`` on ``frame_idx`` (SAM on the frame, or a correction)."""
        if not isinstance(prompt, Prompt):
            raise TrackerError(f"prompts are fastsam2.runtime.tracker.Prompt objects, got {type(prompt).__name__}")
        # validate everything before the object exists: a bad prompt must not leave a ghost object
        if prompt.mask is not None:
            if prompt.points is not None or prompt.box is not None:
                raise TrackerError("give either a mask or points/box for one object, not both")
            mask = np.asarray(prompt.mask)
            if mask.ndim != 2:
                raise TrackerError(f"a mask prompt is a 2-D array, got shape {mask.shape}")
            points = None
        else:
            if prompt.box is not None and not clear_old_points:
                raise TrackerError("a box must come before any point: use clear_old_points=True")
            mask = None
            points = self._point_prompt(state, prompt.points, prompt.labels, prompt.box, normalize_coords)
        existing = state.objects.get(obj_id)
        if existing is not None:
            self._check_prompt_frame(existing, frame_idx)
        feats = self._features(state, frame_idx, whole=True)
        obj = self._object(state, obj_id)
        if mask is not None:
            self._prompt_object(state, obj, feats, mask=mask.astype(bool))
            obj.points.pop(frame_idx, None)
            return
        old = None if clear_old_points else obj.points.get(frame_idx)
        if old is not None:
            points = PointPrompt(
                np.concatenate([old.coords, points.coords]), np.concatenate([old.labels, points.labels])
            )
        self._prompt_object(state, obj, feats, points=points)
        obj.points[frame_idx] = points

    def _result(self, state: VideoState, t: int, t0: float) -> TrackResult:
        on_host = not self.options.device_results
        logits = self._video_res(state, t, to_host=on_host)[:, 0]
        scores, kept = {}, {}
        for obj in state.objects.values():
            out = obj.output_at(t)
            if out is not None:
                if on_host:
                    scores[obj.obj_id] = float(self.ops.to_numpy(out.object_score_logits).reshape(-1)[0])
                else:
                    scores[obj.obj_id] = out.object_score_logits.reshape(-1)[0]
                kept[obj.obj_id] = out.kept_tokens
        return TrackResult(t, state.obj_ids, logits, scores, kept, (time.perf_counter() - t0) * 1e3)
