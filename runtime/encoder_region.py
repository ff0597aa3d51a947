"""Encoder work that follows what is tracked: Hiera's trunk on a unit-aligned rectangle of a frame.

Pruning after the encoder leaves the encoder whole, and at batch the encoder is most of a step. A
tracked object usually covers a small part of the frame, and the frame changes little between
steps; :class:`RegionEncoder` runs the trunk and the head only on a rectangle around where the
objects were and keeps the rest of the encoder's outputs from the stream's previous frame.

It drives three graphs (``runtime/specs.py``: ``REGION_GRAPHS``) through any backend's runners, so
the torch, ONNX Runtime and TensorRT backends share it: ``encoder_embed`` (patch + position
embedding of a rectangle of the frame), ``encoder_trunk`` (Hiera's blocks on a rectangle of those tokens,
dynamic rows and columns) and ``encoder_head`` (the FPN neck and the decoder's high-res projections
of the trunk's levels on the same rectangle). Together, on a whole frame, they compute what
``image_encoder`` does.

What is exact and what is approximate:

* The rectangle is aligned to the trunk's *alignment unit* (``ModelConfig.encoder_align``, from
  :func:`fastsam2.export.encoder_region.trunk_alignment`): a multiple of every windowed block's window
  span and of every pooling stride, so each windowed attention inside the rectangle sees exactly the
  window (and the zero padding at the frame's border) it sees in the whole-frame pass. The patch
  embedding reads the rectangle's pixels plus the few its kernel reaches beyond them, and the
  position embedding is the whole frame's at the rectangle's tokens, so the trunk's inputs are exact.
  Only those pixels (:meth:`RegionEncoder.pixel_window`) need resizing and normalizing.
* The head maps each position on its own (1x1 convolutions, nearest top-down upsampling:
  :func:`fastsam2.export.encoder_region.neck_is_local`), so on the rectangle it computes what it
  would compute there on the whole frame.
* Global-attention blocks attend within the rectangle only, and outside the rectangle the encoder's
  outputs are those of the stream's last encoded frame: both are approximations, judged by J&F
  (``bench/RESULTS.md``, "Encoder regions: J&F"). A stream keeps one frame's outputs (tiny at
  1024 px: 4.2 M values).
* A frame without a rectangle (``None``: a prompted frame, a lost object, a refresh, a rectangle that
  covers the frame) runs the same blocks on the whole frame and equals the image-encoder stage.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from .config import ModelConfig
from .specs import ENCODER_EMBED, ENCODER_HEAD, ENCODER_TRUNK, REGION_GRAPHS, region_units

Rect = tuple[int, int, int, int]  # rows r0:r1, columns c0:c1, in alignment units (end exclusive)
Features = tuple[Any, Any, Any]  # fpn_s0, fpn_s1, vision_feats of one frame [1,...] (or a batch)


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
        self.dims = config.spec_dims()
        self.align = config.encoder_align
        self.stride = config.patch_stride
        self.tokens = config.image_size // self.stride
        self.side = config.image_size
        self.grid = region_grid(config)
        self.unit_px = self.align * self.stride
        # the head's outputs, each at the scale of the trunk level it comes from
        self.outputs = self.head.spec.output_names
        self.scales = dict(zip(self.outputs, config.trunk_scales))

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

    def pixel_window(self, rect: Rect | None) -> tuple[int, int, int, int]:
        """The pixels of the (resized, S x S) frame the patch embedding reads for ``rect`` (None:
        the whole frame): rows y0:y1, columns x0:x1, clipped to the frame."""
        return self._window((0, self.tokens, 0, self.tokens) if rect is None else self.token_span(rect))[1]

    def _window(self, span: tuple[int, int, int, int]) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
        """Token span t0:t1, u0:u1 → (the first pixel (y0, x0) of its crop, which may lie in the
        padding, and the crop's rows/columns inside the frame (y0:y1, x0:x1))."""
        t0, t1, u0, u1 = span
        dims, side = self.dims, self.side
        y0, x0 = dims.region_first_pixel(t0), dims.region_first_pixel(u0)
        y1, x1 = y0 + dims.region_pixels(t1 - t0), x0 + dims.region_pixels(u1 - u0)
        return (y0, x0), (max(y0, 0), min(y1, side), max(x0, 0), min(x1, side))

    def _embed(self, images: Sequence[Any], members: list[int], spans: list[tuple[int, int, int, int]]) -> Any:
        """Patch + position embedding of frame b (``images[b]``, see :meth:`encode`) on its token
        span, for each b of ``members`` (spans of one shape) → tokens [n,h,w,C0]: each crop holds the
        pixels the patch embedding reads for its tokens, zeros beyond the frame (where the whole
        frame's padding is)."""
        t0, t1, u0, u1 = spans[0]
        dims, side = self.dims, self.side
        ph, pw = dims.region_pixels(t1 - t0), dims.region_pixels(u1 - u0)
        crops = self.ops.full((len(members), images[members[0]].shape[1], ph, pw), 0.0)
        for j, b in enumerate(members):
            (y0, x0), (ya, yb, xa, xb) = self._window(spans[j])
            image = images[b]
            h, w = image.shape[-2:]
            if (h, w) == (side, side):
                src = image[0, :, ya:yb, xa:xb]
            elif (h, w) == (yb - ya, xb - xa):
                src = image[0]
            else:
                raise ValueError(f"frame {b}: pixels of {h} x {w}: neither the frame ({side} x {side}) nor "
                                 f"its rectangle's window ({yb - ya} x {xb - xa})")
            self.ops.paste(crops[j:j + 1], src, slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))
        rows = np.stack([np.arange(s[0], s[1]) for s in spans]).astype(np.int64)
        cols = np.stack([np.arange(s[2], s[3]) for s in spans]).astype(np.int64)
        return self.embed.infer({"image": crops, "rows": self.ops.asarray(rows), "cols": self.ops.asarray(cols)})["tokens"]

    def _features(self, images: Sequence[Any], members: list[int], spans: list[tuple[int, int, int, int]]
                  ) -> dict[str, Any]:
        """The three graphs on the token span of each frame b of ``members`` (spans of one shape)."""
        return self.head.infer(self.trunk.infer({"tokens": self._embed(images, members, spans)}))

    def encode(self, images: Sequence[Any], rects: Sequence[Rect | None], caches: Sequence[Features | None]
               ) -> tuple[Features, list[Features]]:
        """B frames' normalized pixels → ((fpn_s0 [B,C/8,4H,4W], fpn_s1 [B,C/4,2H,2W], vision_feats
        [B,C,H,W]) as float32, each frame's own (fpn_s0, fpn_s1, vision_feats) [1,...] to pass back as
        its stream's ``caches`` entry on the next frame).

        ``images[b]``: frame b [1,3,S,S], or, when it has a rectangle, only the pixels the rectangle
        reads, ``pixel_window(rects[b])`` of it [1,3,y1-y0,x1-x0] (so only they need preprocessing).
        ``rects[b]`` None: frame b is encoded whole. Otherwise the three graphs run on its rectangle
        only, and ``caches[b]`` (what this method returned for that stream's last frame) supplies the
        rest. Nothing passed in is written to: the returned maps are new arrays.
        """
        n = len(rects)
        if n != len(images) or len(caches) != n:
            raise ValueError(f"{len(images)} frames, {n} rectangles, {len(caches)} caches")
        for b, rect in enumerate(rects):
            if rect is not None and caches[b] is None:
                raise ValueError(f"frame {b}: a rectangle needs the stream's last features (cache)")
        # one call of each graph per rectangle shape: equal shapes batch
        whole_span = (0, self.tokens, 0, self.tokens)
        spans = [whole_span if r is None else self.token_span(r) for r in rects]
        groups: dict[tuple[int, int] | None, list[int]] = {}
        for b, rect in enumerate(rects):
            t0, t1, u0, u1 = spans[b]
            groups.setdefault(None if rect is None else (t1 - t0, u1 - u0), []).append(b)
        whole = groups.pop(None, [])
        if len(whole) == n:  # every frame whole: the head's outputs as they are
            out = self._features(images, whole, spans)
            feats = tuple(out[name] for name in self.outputs)
            return feats, [tuple(f[b:b + 1] for f in feats) for b in range(n)]
        base: list[Features] = list(caches)  # type: ignore[arg-type]
        if whole:
            out = self._features(images, whole, [spans[b] for b in whole])
            for j, b in enumerate(whole):
                base[b] = tuple(out[name][j:j + 1] for name in self.outputs)
        # the rectangles' features are pasted into a copy of the stream's last ones
        feats = tuple(self.ops.cat([base[b][i] for b in range(n)]) if n > 1 else self.ops.copy(base[0][i])
                      for i in range(len(self.outputs)))
        for members in groups.values():
            out = self._features(images, members, [spans[b] for b in members])
            for j, b in enumerate(members):
                t0, t1, u0, u1 = spans[b]
                for f, name in zip(feats, self.outputs):
                    s = self.scales[name]
                    self.ops.paste(f[b:b + 1], out[name][j], slice(t0 // s, t1 // s), slice(u0 // s, u1 // s))
        return feats, [tuple(f[b:b + 1] for f in feats) for b in range(n)]
