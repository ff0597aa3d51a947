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
    """image [B,3,p*h+k-p,p*w+k-p] (the frame's pixels under an h x w rectangle of patch tokens,
    with the halo the patch embedding reads: ``SpecDims.region_pixels``), rows [B,h], cols [B,w]
    (the rectangle's token rows and columns in the frame's grid) → tokens [B,h,w,C0]: Hiera's patch
    embedding plus its position embedding at those tokens."""

    compile_dynamic = False  # compiled: one graph per rectangle shape

    def __init__(self, model):
        super().__init__()
        from sam2.modeling.backbones.utils import PatchEmbed

        trunk = model.image_encoder.trunk
        conv = trunk.patch_embed.proj
        # the same convolution without its padding (the crop holds it: zeros beyond the frame),
        # through sam2's PatchEmbed so that the GPU path's matmul form applies to it too
        self.patch = PatchEmbed(conv.kernel_size, conv.stride, (0, 0), conv.in_channels, conv.out_channels)
        self.patch.proj.weight, self.patch.proj.bias = conv.weight, conv.bias
        self.tokens = model.image_size // conv.stride[0]
        with torch.no_grad():  # the whole frame's position embedding, one row per token
            pos = trunk._get_pos_embed((self.tokens, self.tokens))
        self.register_buffer("pos", pos.reshape(self.tokens * self.tokens, -1), persistent=False)
        self.spec = _specs(model)[ENCODER_EMBED]

    def forward(self, image: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        x = self.patch(image)
        return x + self.pos[rows[:, :, None] * self.tokens + cols[:, None, :]]


class EncoderTrunkStage(nn.Module):
    """tokens [B,h,w,C0] (a unit-aligned rectangle of the frame, embedded) → the trunk's levels
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


def neck_is_local(neck: Any) -> bool:
    """Whether SAM2's FPN ``neck`` maps each position of its levels on its own: 1x1 lateral
    convolutions and nearest top-down upsampling (every SAM2 config), so that it runs on a
    unit-aligned rectangle of the levels exactly as on the whole frame."""
    pointwise = all(m.kernel_size == (1, 1) for m in neck.modules() if isinstance(m, nn.Conv2d))
    return pointwise and (neck.fpn_interp_model == "nearest" or not list(neck.fpn_top_down_levels))


class EncoderHeadStage(nn.Module):
    """The trunk's levels level_i [B,C_i,h/s_i,w/s_i] (a whole frame or a unit-aligned rectangle of
    it) → (fpn_s0 [B,C/8,h,w], fpn_s1 [B,C/4,h/2,w/2], vision_feats [B,C,h/4,w/4]), as
    ``image_encoder`` on a whole frame: SAM2's FPN neck and the mask decoder's conv_s0 / conv_s1."""

    compile_dynamic = False  # compiled: one graph per rectangle shape, as the trunk

    def __init__(self, model):
        super().__init__()
        enc = model.image_encoder
        if not neck_is_local(enc.neck):
            raise ValueError("encoder regions need SAM2's FPN neck with 1x1 convolutions and nearest upsampling")
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
