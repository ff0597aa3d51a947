"""Tracking state as typed objects (SAM2 keeps it in an 18-key ``inference_state`` dict).

Arrays are whatever the backend's ops use (numpy on the host, torch tensors on a device).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

Array = Any


@dataclass
class FrameFeatures:
    """Image-encoder outputs of one frame, shared by all objects on that frame."""

    frame_idx: int
    vision_feats: Array  # [1,C,H,W]
    fpn_s0: Array  # [1,C/8,4H,4W]
    fpn_s1: Array  # [1,C/4,2H,2W]
    whole: bool = True  # False: encoded on a rectangle, reusing an earlier frame's features elsewhere


@dataclass
class PendingMemory:
    """What the memory encoder needs for a frame whose memory is not encoded yet.

    SAM2 encodes the memory of user-interacted frames only when propagation starts, so that several
    clicks on one frame cost one encoding; this holds the inputs until then.
    """

    vision_feats: Array  # [1,C,H,W]
    mask_logits: Array  # [1,1,HM,WM] low-res logits
    binarize: bool
    kept_idx: Array  # [1,K] int64 positions written to memory


@dataclass
class FrameOutput:
    """One object's result on one frame: SAM2's compact per-frame output plus its memory entry."""

    frame_idx: int
    pred_masks: Array  # [1,1,HM,WM] low-res mask logits (after hole filling), what users see
    obj_ptr: Array  # [1,C]
    object_score_logits: Array  # [1,1]
    is_cond: bool
    memory: Array | None = None  # [1,K,Cm] packed (bf16) memory tokens, None until encoded
    memory_pos_idx: Array | None = None  # [1,K] int64 grid positions of the memory tokens
    pending: PendingMemory | None = None
    kept_tokens: int = 0  # tokens that went through memory attention on this frame (0: none)

    @property
    def memory_tokens(self) -> int:
        return 0 if self.memory_pos_idx is None else int(self.memory_pos_idx.shape[-1])


@dataclass
class IntervalSet:
    """Frame indices as merged closed intervals: 'was this frame tracked' in O(#passes) memory."""

    spans: list[list[int]] = field(default_factory=list)

    def add(self, i: int) -> None:
        for span in self.spans:
            if span[0] - 1 <= i <= span[1] + 1:
                span[0], span[1] = min(span[0], i), max(span[1], i)
                break
        else:
            self.spans.append([i, i])
        self.spans.sort()
        merged: list[list[int]] = []
        for s in self.spans:
            if merged and s[0] <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], s[1])
            else:
                merged.append(s)
        self.spans = merged

    def __contains__(self, i: int) -> bool:
        return any(a <= i <= b for a, b in self.spans)


@dataclass
class PointPrompt:
    """Point prompts of one object on one frame, in model-input coordinates (SAM2's point_inputs)."""

    coords: Any  # host numpy [N,2] float32
    labels: Any  # host numpy [N] int32


@dataclass
class ObjectState:
    """Everything the tracker keeps for one object."""

    obj_id: int
    cond: dict[int, FrameOutput] = field(default_factory=dict)  # prompted frames, kept
    recent: dict[int, FrameOutput] = field(default_factory=dict)  # tracked frames, evicted
    tracked: IntervalSet = field(default_factory=IntervalSet)
    points: dict[int, PointPrompt] = field(default_factory=dict)  # clicks per prompted frame
    text_embedding: Any = None  # host numpy [D] CLIP text embedding for the router, or None
    text: str | None = None

    def output_at(self, frame_idx: int) -> FrameOutput | None:
        out = self.cond.get(frame_idx)
        return out if out is not None else self.recent.get(frame_idx)

    def memory_bytes(self, nbytes) -> int:
        total = 0
        for out in (*self.cond.values(), *self.recent.values()):
            for a in (out.memory, out.pred_masks, out.obj_ptr):
                if a is not None:
                    total += nbytes(a)
        return total


@dataclass
class MaskBoxes:
    """The bounding boxes of every object's mask on one encoded frame, on their way to the host
    (TrackerOptions.encoder_region: the rectangle of a later frame is chosen from them)."""

    frame_idx: int
    rect: Any  # the rectangle that frame was encoded on (None: whole)
    obj_ids: tuple[int, ...]  # the session's objects then, in order
    boxes: Array | None  # host int64 [N,4] for those objects (x0, y0, x1, y1 in mask pixels, -1: empty),
    # valid once ``ready`` is reached; None: some object had no mask on that frame
    ready: Any = None  # a marker after the copy (ops.marker())


@dataclass
class VideoState:
    """A tracking session: the video's size, its objects (in insertion order) and a feature cache."""

    video_height: int
    video_width: int
    num_frames: int | None = None  # None for live streams
    objects: dict[int, ObjectState] = field(default_factory=dict)
    cached: FrameFeatures | None = None
    source: Any = None  # a FrameSource for the offline API
    last_frame_idx: int = -1  # streaming: index of the last frame passed to track()
    # TrackerOptions.encoder_region: the image encoder's outputs on the last encoded frame (fpn_s0,
    # fpn_s1, vision_feats: the backend's region encoder reuses them outside a frame's rectangle)
    # and the index of the last frame encoded whole
    encoder_cache: Any = None
    encoder_whole_idx: int | None = None
    encoder_rect: Any = None  # the rectangle the last encoded frame was computed on (None: whole)
    encoder_area: float = 0.0  # the shares of a frame the trunk computed, summed over encoded frames
    encoder_frames: int = 0  # frames encoded through the region encoder
    # the masks' boxes of the last encoder_lag + 1 encoded frames, oldest first
    encoder_boxes: deque[MaskBoxes] = field(default_factory=deque)

    @property
    def encoder_share(self) -> float | None:
        """The mean share of a frame's tokens the trunk computed (1.0: whole frames); None without
        encoder regions."""
        return self.encoder_area / self.encoder_frames if self.encoder_frames else None

    @property
    def obj_ids(self) -> list[int]:
        return list(self.objects)


@dataclass
class StageTimes:
    """Accumulated milliseconds per stage (for reports)."""

    ms: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, ms: float) -> None:
        self.ms[name] = self.ms.get(name, 0.0) + ms
        self.calls[name] = self.calls.get(name, 0) + 1
