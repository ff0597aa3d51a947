"""The torch side of encoder regions: the trunk's alignment unit and the three region stages.

:class:`fastsam2.runtime.encoder_region.RegionEncoder` drives the stages (module docstring there:
what is exact and what is approximate); here they are defined once, for the torch backend and for
``fastsam2-export --encoder-region`` alike.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from fastsam2.runtime.specs import ENCODER_EMBED, ENCODER_HEAD, ENCODER_TRUNK, GraphSpec


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


def trunk_levels(trunk: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(channels, token-grid scale) of each level Hiera ``trunk`` returns (its stage ends)."""
    if not getattr(trunk, "return_interm_layers", True):
        raise ValueError("encoder regions need the trunk's intermediate levels (return_interm_layers)")
    channels, scales, scale = [], [], 1
    for i, blk in enumerate(trunk.blocks):
        if blk.q_stride:
            scale *= blk.q_stride[0]
        if i in trunk.stage_ends:
            channels.append(int(blk.dim_out))
            scales.append(scale)
    return tuple(channels), tuple(scales)


def _specs(model) -> dict[str, GraphSpec]:
    from .stages import _stage_specs

    return _stage_specs(model)


class EncoderEmbedStage(nn.Module):
    """image [B,3,S,S] → tokens [B,S/p,S/p,C0]: Hiera's patch embedding plus its position embedding."""

    def __init__(self, model):
        super().__init__()
        self.trunk = model.image_encoder.trunk
        self.spec = _specs(model)[ENCODER_EMBED]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.trunk.patch_embed(image)
        return x + self.trunk._get_pos_embed(x.shape[1:3])


class EncoderTrunkStage(nn.Module):
    """tokens [B,h,w,C0] (a unit-aligned rectangle of the embedded frame) → the trunk's levels
    level_i [B,C_i,h/s_i,w/s_i]: Hiera's blocks, without its embeddings."""

    compile_dynamic = False  # compiled: one graph per rectangle shape (few: rectangles are whole units)

    def __init__(self, model):
        super().__init__()
        self.trunk = model.image_encoder.trunk
        trunk_levels(self.trunk)  # refuses a trunk without its intermediate levels
        self.spec = _specs(model)[ENCODER_TRUNK]

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, outs = tokens, []
        for i, blk in enumerate(self.trunk.blocks):
            x = blk(x)
            if i in self.trunk.stage_ends:
                outs.append(x.permute(0, 3, 1, 2))
        return tuple(outs)


class EncoderHeadStage(nn.Module):
    """The trunk's levels of whole frames → (fpn_s0, fpn_s1, vision_feats), as ``image_encoder``:
    SAM2's FPN neck and the mask decoder's conv_s0 / conv_s1."""

    def __init__(self, model):
        super().__init__()
        enc = model.image_encoder
        self.neck, self.scalp = enc.neck, enc.scalp
        self.conv_s0, self.conv_s1 = model.sam_mask_decoder.conv_s0, model.sam_mask_decoder.conv_s1
        self.spec = _specs(model)[ENCODER_HEAD]
        if len(self.spec.inputs) != 4:
            raise ValueError(f"encoder regions take Hiera's four levels, this trunk returns {len(self.spec.inputs)}")

    def forward(self, level0: torch.Tensor, level1: torch.Tensor, level2: torch.Tensor, level3: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features, _ = self.neck([level0, level1, level2, level3])
        if self.scalp > 0:
            features = features[: -self.scalp]
        return self.conv_s0(features[0]), self.conv_s1(features[1]), features[-1]


def region_stages(model) -> dict[str, nn.Module]:
    """The three region stages of ``model`` by graph name, in eval mode (they share its weights)."""
    stages = {ENCODER_EMBED: EncoderEmbedStage(model), ENCODER_TRUNK: EncoderTrunkStage(model),
              ENCODER_HEAD: EncoderHeadStage(model)}
    for stage in stages.values():
        stage.eval()
    return stages
