"""Encoder work that follows what is tracked: Hiera's trunk on a window-aligned rectangle.

Pruning after the encoder leaves the encoder whole, and at batch the encoder is most of a step. A
tracked object usually covers a small part of the frame, and the frame changes little between
steps; :class:`RegionEncoder` computes the trunk only on a rectangle around where the objects were
and keeps the rest of its feature maps from the stream's previous frame.

What is exact and what is approximate:

* The rectangle is aligned to the trunk's *alignment unit* (:func:`trunk_alignment`): a multiple of
  every windowed block's window span and of every pooling stride, so each windowed attention inside
  the rectangle sees exactly the window (and the zero padding at the frame's border) it sees in the
  whole-frame pass. Patch embedding and position embedding are computed on the whole frame and
  cropped, so the crop's inputs are exact.
* Global-attention blocks attend within the rectangle only, and outside the rectangle the feature
  maps are those of the stream's last encoded frame: both are approximations, judged by J&F
  (``bench/encoder_region_jf.py``).
* A frame without a rectangle (``None``: a prompted frame, a lost object, a refresh, a rectangle that
  covers the frame) runs the same blocks on the whole frame and equals the image-encoder stage.

The FPN neck and the decoder's high-resolution projections run on the whole (partly reused) maps;
they are a small share of the encoder.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, ContextManager, Sequence

import torch

Rect = tuple[int, int, int, int]  # rows r0:r1, columns c0:c1, in alignment units (end exclusive)


def trunk_alignment(trunk: Any) -> int:
    """Patch-embedding tokens (the first stage's grid) that every windowed block's window span and
    every pooling stride of Hiera ``trunk`` divides: rectangles aligned to it partition each block's
    windows exactly."""
    align, scale = 1, 1
    for blk in trunk.blocks:
        if blk.window_size > 0:  # a pooling block's windows are on its input grid
            align = math.lcm(align, blk.window_size * scale)
        if blk.q_stride:
            scale *= blk.q_stride[0]
    return math.lcm(align, scale)


class RegionEncoder:
    """SAM2's image encoder (trunk, neck, the decoder's high-res projections) on rectangles.

    ``context`` is entered around every call (the stage runner's autocast and GPU kernels), so that a
    frame without a rectangle computes what the ``image_encoder`` stage computes.
    """

    def __init__(self, model: Any, context: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
                 compile: bool = False):
        enc = model.image_encoder
        self.model, self.trunk, self.neck, self.scalp = model, enc.trunk, enc.neck, enc.scalp
        if not getattr(self.trunk, "return_interm_layers", True):
            raise ValueError("encoder regions need the trunk's intermediate levels (return_interm_layers)")
        self.context = context
        self.align = trunk_alignment(self.trunk)
        self.stride = int(self.trunk.patch_embed.proj.stride[0])
        self.tokens = model.image_size // self.stride
        self.grid = -(-self.tokens // self.align)  # units per side (the last may be partial)
        self.unit_px = self.align * self.stride
        # compiled: one graph per rectangle shape (a few: rectangles are whole units)
        self._run_levels = torch.compile(self._levels, dynamic=False) if compile else self._levels
        self._run_embed = torch.compile(self._embed, dynamic=False) if compile else self._embed
        self._run_head = torch.compile(self._head, dynamic=False) if compile else self._head
        if compile:
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)

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

    def _tokens(self, rect: Rect) -> tuple[int, int, int, int]:
        r0, r1, c0, c1 = rect
        a, n = self.align, self.tokens
        return r0 * a, min(r1 * a, n), c0 * a, min(c1 * a, n)

    def _levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Hiera's blocks on x [B,h,w,C] (position-embedded tokens) → the stage-end maps, NCHW."""
        outs = []
        for i, blk in enumerate(self.trunk.blocks):
            x = blk(x)
            if i in self.trunk.stage_ends:
                outs.append(x.permute(0, 3, 1, 2))
        return outs

    def _embed(self, image: torch.Tensor) -> torch.Tensor:
        x = self.trunk.patch_embed(image)
        return x + self.trunk._get_pos_embed(x.shape[1:3])

    def _head(self, levels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features, _ = self.neck(levels)
        if self.scalp > 0:
            features = features[: -self.scalp]
        fpn0, fpn1, feats = features[0], features[1], features[-1]
        if self.model.use_high_res_features_in_sam:
            fpn0 = self.model.sam_mask_decoder.conv_s0(fpn0)
            fpn1 = self.model.sam_mask_decoder.conv_s1(fpn1)
        return fpn0.float(), fpn1.float(), feats.float()

    @torch.no_grad()
    def encode(
        self, image: torch.Tensor, rects: Sequence[Rect | None], caches: Sequence[list[torch.Tensor] | None]
    ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], list[list[torch.Tensor]]]:
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
        with self.context():
            x = self._run_embed(image)
            levels: list[list[torch.Tensor] | None] = [None] * len(rects)
            # one call per rectangle shape: equal shapes batch
            groups: dict[tuple[int, int] | None, list[int]] = {}
            for b, rect in enumerate(rects):
                key = None
                if rect is not None:
                    t0, t1, u0, u1 = self._tokens(rect)
                    key = (t1 - t0, u1 - u0)
                groups.setdefault(key, []).append(b)
            for key, members in groups.items():
                if key is None:
                    outs = self._run_levels(x[members])
                    for j, b in enumerate(members):
                        levels[b] = [o[j:j + 1] for o in outs]
                    continue
                crops = []
                for b in members:
                    t0, t1, u0, u1 = self._tokens(rects[b])
                    crops.append(x[b, t0:t1, u0:u1])
                outs = self._run_levels(torch.stack(crops))
                for j, b in enumerate(members):
                    t0, t1, u0, u1 = self._tokens(rects[b])
                    cache = caches[b]
                    for lvl, o in enumerate(outs):
                        s = self.tokens // cache[lvl].shape[-1]
                        cache[lvl][0, :, t0 // s:t1 // s, u0 // s:u1 // s] = o[j].to(cache[lvl].dtype)
                    levels[b] = cache
            stacked = [torch.cat([lv[i] for lv in levels], 0) for i in range(len(levels[0]))]
            out = self._run_head(stacked)
        return out, levels  # type: ignore[return-value]
