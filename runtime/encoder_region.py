"""Encoder work that follows what is tracked: Hiera's trunk on a unit-aligned rectangle of a frame.

Pruning after the encoder leaves the encoder whole, and at batch the encoder is most of a step. A
tracked object usually covers a small part of the frame, and the frame changes little between
steps; :class:`RegionEncoder` runs the trunk only on a rectangle around where the objects were and
keeps the rest of its feature maps from the stream's previous frame.

It drives three graphs (``runtime/specs.py``: ``REGION_GRAPHS``) through any backend's runners, so
the torch, ONNX Runtime and TensorRT backends share it: ``encoder_embed`` (patch + position
embedding of the whole frame), ``encoder_trunk`` (Hiera's blocks on a rectangle of those tokens,
dynamic rows and columns) and ``encoder_head`` (the FPN neck and the decoder's high-res projections
of the reassembled levels). Together, on a whole frame, they compute what ``image_encoder`` does.

What is exact and what is approximate:

* The rectangle is aligned to the trunk's *alignment unit* (``ModelConfig.encoder_align``, from
  :func:`fastsam2.export.encoder_region.trunk_alignment`): a multiple of every windowed block's window
  span and of every pooling stride, so each windowed attention inside the rectangle sees exactly the
  window (and the zero padding at the frame's border) it sees in the whole-frame pass. Patch and
  position embedding are computed on the whole frame and cropped, so the crop's inputs are exact.
* Global-attention blocks attend within the rectangle only, and outside the rectangle the feature
  maps are those of the stream's last encoded frame: both are approximations, judged by J&F
  (``bench/RESULTS.md``, "Encoder regions: J&F").
* A frame without a rectangle (``None``: a prompted frame, a lost object, a refresh, a rectangle that
  covers the frame) runs the same blocks on the whole frame and equals the image-encoder stage.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from .config import ModelConfig
from .specs import ENCODER_EMBED, ENCODER_HEAD, ENCODER_TRUNK, REGION_GRAPHS, region_units

Rect = tuple[int, int, int, int]  # rows r0:r1, columns c0:c1, in alignment units (end exclusive)


def has_region_graphs(runners: Mapping[str, Any]) -> bool:
    """Whether ``runners`` hold the three graphs :class:`RegionEncoder` drives."""
    return all(name in runners for name in REGION_GRAPHS)


def region_grid(config: ModelConfig) -> int:
    """Alignment units per side of the frame's patch-token grid (the last may be partial)."""
    return region_units(config.image_size // config.patch_stride, config.encoder_align)


class RegionEncoder:
    """SAM2's image encoder on rectangles, over a backend's ``encoder_embed`` / ``encoder_trunk`` /
    ``encoder_head`` runners and its array ``ops`` (numpy or torch arrays alike)."""

    def __init__(self, runners: Mapping[str, Any], ops: Any, config: ModelConfig):
        missing = [n for n in REGION_GRAPHS if n not in runners]
        if missing:
            raise ValueError(f"encoder regions need the graphs {list(REGION_GRAPHS)}; missing {missing}")
        self.embed, self.trunk, self.head = (runners[n] for n in (ENCODER_EMBED, ENCODER_TRUNK, ENCODER_HEAD))
        self.ops = ops
        self.align = config.encoder_align
        self.stride = config.patch_stride
        self.tokens = config.image_size // self.stride
        self.grid = region_grid(config)
        self.unit_px = self.align * self.stride
        self.levels = self.trunk.spec.output_names
        self.scales = dict(zip(self.levels, config.trunk_scales))

    def rect_for(self, box: tuple[float, float, float, float], margin: int, previous: Rect | None = None,
                 edge_px: float = 0.0) -> Rect | None:
        """The unit-aligned rectangle covering ``box`` (x0, y0, x1, y1 in input pixels, x1/y1
        exclusive) grown by ``margin`` units on each side; None when it covers the whole frame.

        ``previous``: the rectangle the box's frame was encoded on. Where the box reaches within
        ``edge_px`` of one of its inner sides, the object may go on into features that were reused,
        so the rectangle takes one more unit beyond that side."""
        x0, y0, x1, y1 = box
        u, g = self.unit_px, self.grid
        r0, c0 = max(0, int(y0 // u) - margin), max(0, int(x0 // u) - margin)
        r1, c1 = min(g, -(-int(math.ceil(y1)) // u) + margin), min(g, -(-int(math.ceil(x1)) // u) + margin)
        if previous is not None:
            p0, p1, q0, q1 = previous
            side = self.tokens * self.stride
            if p0 > 0 and y0 < p0 * u + edge_px:
                r0 = min(r0, p0 - 1)
            if p1 < g and y1 > min(p1 * u, side) - edge_px:
                r1 = max(r1, p1 + 1)
            if q0 > 0 and x0 < q0 * u + edge_px:
                c0 = min(c0, q0 - 1)
            if q1 < g and x1 > min(q1 * u, side) - edge_px:
                c1 = max(c1, q1 + 1)
        if r1 <= r0 or c1 <= c0 or (r0, c0, r1, c1) == (0, 0, g, g):
            return None
        return r0, r1, c0, c1

    def area(self, rect: Rect | None) -> float:
        """The share of the frame's patch tokens the trunk computes on ``rect`` (None: whole, 1.0)."""
        if rect is None:
            return 1.0
        t0, t1, u0, u1 = self.token_span(rect)
        return (t1 - t0) * (u1 - u0) / self.tokens ** 2

    def token_span(self, rect: Rect) -> tuple[int, int, int, int]:
        """``rect`` in patch tokens: rows t0:t1, columns u0:u1."""
        r0, r1, c0, c1 = rect
        a, n = self.align, self.tokens
        return r0 * a, min(r1 * a, n), c0 * a, min(c1 * a, n)

    def encode(self, image: Any, rects: Sequence[Rect | None], caches: Sequence[list[Any] | None]
               ) -> tuple[tuple[Any, Any, Any], list[list[Any]]]:
        """image [B,3,S,S] (normalized) → ((fpn_s0 [B,C/8,4H,4W], fpn_s1 [B,C/4,2H,2W], vision_feats
        [B,C,H,W]) as float32, the trunk levels to pass back as ``caches`` on the next frame).

        ``rects[b]`` None: frame b is encoded whole. Otherwise only its rectangle is, and
        ``caches[b]`` (the levels this method returned for that stream's last frame) supplies the
        rest; it is updated in place.
        """
        if len(rects) != image.shape[0] or len(caches) != image.shape[0]:
            raise ValueError(f"{image.shape[0]} frames, {len(rects)} rectangles, {len(caches)} caches")
        for b, rect in enumerate(rects):
            if rect is not None and caches[b] is None:
                raise ValueError(f"frame {b}: a rectangle needs the stream's last levels (cache)")
        x = self.embed.infer({"image": image})["tokens"]  # [B, T, T, C0]
        levels: list[list[Any] | None] = [None] * len(rects)
        # one trunk call per rectangle shape: equal shapes batch
        groups: dict[tuple[int, int] | None, list[int]] = {}
        for b, rect in enumerate(rects):
            key = None
            if rect is not None:
                t0, t1, u0, u1 = self.token_span(rect)
                key = (t1 - t0, u1 - u0)
            groups.setdefault(key, []).append(b)
        for key, members in groups.items():
            if key is None:
                outs = self.trunk.infer({"tokens": x if len(members) == len(rects) else x[members]})
                for j, b in enumerate(members):
                    levels[b] = [outs[n][j:j + 1] for n in self.levels]
                continue
            spans = [self.token_span(rects[b]) for b in members]
            crops = self.ops.cat([x[b:b + 1, t0:t1, u0:u1] for b, (t0, t1, u0, u1) in zip(members, spans)])
            outs = self.trunk.infer({"tokens": crops})
            for j, (b, (t0, t1, u0, u1)) in enumerate(zip(members, spans)):
                cache = caches[b]
                for lvl, name in enumerate(self.levels):
                    s = self.scales[name]
                    self.ops.paste(cache[lvl], outs[name][j], slice(t0 // s, t1 // s), slice(u0 // s, u1 // s))
                levels[b] = cache
        stacked = {n: self.ops.cat([lv[i] for lv in levels]) for i, n in enumerate(self.levels)}
        out = self.head.infer(stacked)
        return (out["fpn_s0"], out["fpn_s1"], out["vision_feats"]), levels  # type: ignore[return-value]
