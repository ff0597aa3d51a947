"""SAM2 split into export-friendly torch stages that wrap the official ``sam2`` submodules.

Every stage takes and returns plain tensors named by its :mod:`fastsam2.runtime.specs` graph spec,
has no data-dependent Python branches, no complex tensors and no ``repeat_interleave``; options
(multimask, mask prompt, binarization) are tensors selected with ``torch.where`` so one graph serves
every call. Constant tables (position encodings, RoPE cos/sin) are buffers gathered by a per-token
position index, so the same graphs run on any number of tokens: the full 64x64 grid or the tokens a
router kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastsam2.runtime.config import FILL_MODES, NO_OBJ_SCORE
from fastsam2.runtime.specs import (
    IMAGE_ENCODER,
    MASK_DECODER,
    MEMORY_ATTENTION,
    MEMORY_ENCODER,
    GraphSpec,
    graph_specs,
)



def _stage_specs(model) -> dict[str, GraphSpec]:
    from .models import model_config

    return graph_specs(model_config(model).spec_dims())


class GatheredRoPE(nn.Module):
    """SAM2's axial rotary encoding in real arithmetic, gathered by token position.

    SAM2 rotates interleaved channel pairs (2i, 2i+1) by complex multiplication with
    ``compute_axial_cis`` (x frequencies for the first half of the pairs, y for the second). Here the
    same table is stored as cos/sin [H*W, D/2] buffers and indexed by each token's grid position, so
    it works for any subset of tokens, in any order, and exports without complex tensors.
    """

    def __init__(self, head_dim: int, feat_size: int, theta: float):
        super().__init__()
        from sam2.modeling.position_encoding import compute_axial_cis

        cis = compute_axial_cis(dim=head_dim, end_x=feat_size, end_y=feat_size, theta=theta)
        self.register_buffer("cos", cis.real.contiguous(), persistent=False)
        self.register_buffer("sin", cis.imag.contiguous(), persistent=False)

    def table(self, pos_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [B, 1, N, D/2] for tokens at grid positions pos_idx [B, N] (one row per batch
        item; gathered once per call, broadcast over heads)."""
        return self.cos[pos_idx].unsqueeze(-3), self.sin[pos_idx].unsqueeze(-3)

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [B, heads, N, D] rotated pairwise by the angles of ``table`` → [B, heads, N, D]."""
        pairs = x.float().unflatten(-1, (-1, 2))
        x0, x1 = pairs[..., 0], pairs[..., 1]
        out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
        return out.flatten(-2).type_as(x)

    def forward(self, x: torch.Tensor, pos_idx: torch.Tensor) -> torch.Tensor:
        """x [B, heads, N, D] float, pos_idx [B, N] int64 grid positions → rotated x [B, heads, N, D]."""
        return self.rotate(x, *self.table(pos_idx))


def _rope_attention(
    attn,
    q: torch.Tensor,
    q_rope: tuple[torch.Tensor, torch.Tensor],
    k: torch.Tensor,
    v: torch.Tensor,
    k_rope: tuple[torch.Tensor, torch.Tensor],
    k_extra: torch.Tensor | None = None,
    v_extra: torch.Tensor | None = None,
) -> torch.Tensor:
    """sam2 RoPEAttention's forward with explicit positions: q [B,Nq,C], k/v [B,Nk,Ck] rotated by
    their (cos, sin) tables; k_extra/v_extra [B,Ne,Ck] are appended unrotated (SAM2's object
    pointers, its ``num_k_exclude_rope``). Projections are per token, so projecting the two parts
    separately equals projecting their concatenation."""
    heads = attn.num_heads
    qh = attn._separate_heads(attn.q_proj(q), heads)
    kh = attn._separate_heads(attn.k_proj(k), heads)
    vh = attn._separate_heads(attn.v_proj(v), heads)
    qh = GatheredRoPE.rotate(qh, *q_rope)
    kh = GatheredRoPE.rotate(kh, *k_rope)
    if k_extra is not None:
        kh = torch.cat((kh, attn._separate_heads(attn.k_proj(k_extra), heads)), dim=2)
        vh = torch.cat((vh, attn._separate_heads(attn.v_proj(v_extra), heads)), dim=2)
    out = F.scaled_dot_product_attention(qh, kh, vh)
    return attn.out_proj(attn._recombine_heads(out))


class MemoryAttentionCore(nn.Module):
    """SAM2's MemoryAttention on any token subset, batch-first.

    Inputs: curr [B,K,C] current-frame tokens, curr_pos [B,K,C] their sine encoding, curr_pos_idx
    [B,K] grid positions; memory [B,M,Cm] spatial memory, memory_pos [B,M,Cm] (spatial + temporal
    encoding), memory_pos_idx [B,M]; ptr [B,Q,Cm] object-pointer tokens, ptr_pos [B,Q,Cm]. Every
    batch row is one object with its own tokens, memory and positions.
    Output: [B,K,C], after the final LayerNorm.
    """

    def __init__(self, memory_attention, feat_size: int):
        super().__init__()
        self.ma = memory_attention
        layer = memory_attention.layers[0]
        for attn in (layer.self_attn, layer.cross_attn_image):
            if not hasattr(attn, "compute_cis"):
                raise ValueError("memory attention without RoPE is not a SAM2 config")
        if layer.cross_attn_image.rope_k_repeat is not True:
            raise ValueError("SAM2 cross-attention is expected to repeat RoPE over memory frames")
        self.self_rope = self._rope_for(layer.self_attn, feat_size)
        self.cross_rope = self._rope_for(layer.cross_attn_image, feat_size)

    @staticmethod
    def _rope_for(attn, feat_size: int) -> GatheredRoPE:
        theta = attn.compute_cis.keywords["theta"]
        return GatheredRoPE(attn.internal_dim // attn.num_heads, feat_size, theta)

    def forward(
        self,
        curr: torch.Tensor,
        curr_pos: torch.Tensor,
        curr_pos_idx: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        memory_pos_idx: torch.Tensor,
        ptr: torch.Tensor,
        ptr_pos: torch.Tensor,
    ) -> torch.Tensor:
        # RoPE angles depend only on positions: gather them once for all layers
        self_rope = self.self_rope.table(curr_pos_idx)
        cross_q_rope = self.cross_rope.table(curr_pos_idx)
        cross_k_rope = self.cross_rope.table(memory_pos_idx)
        output = curr
        if self.ma.pos_enc_at_input:
            output = output + 0.1 * curr_pos
        for layer in self.ma.layers:
            # self-attention (SAM2's _forward_sa)
            tgt2 = layer.norm1(output)
            q = k = tgt2 + curr_pos if layer.pos_enc_at_attn else tgt2
            output = output + _rope_attention(layer.self_attn, q, self_rope, k, tgt2, self_rope)
            # cross-attention to memories and object pointers (SAM2's _forward_ca)
            tgt2 = layer.norm2(output)
            q = tgt2 + curr_pos if layer.pos_enc_at_cross_attn_queries else tgt2
            if layer.pos_enc_at_cross_attn_keys:
                k_mem, k_ptr = memory + memory_pos, ptr + ptr_pos
            else:
                k_mem, k_ptr = memory, ptr
            output = output + _rope_attention(
                layer.cross_attn_image, q, cross_q_rope, k_mem, memory, cross_k_rope, k_ptr, ptr
            )
            # MLP
            tgt2 = layer.norm3(output)
            output = output + layer.linear2(layer.activation(layer.linear1(tgt2)))
        return self.ma.norm(output)


def _sine_table(position_encoding, channels: int, feat_size: int) -> torch.Tensor:
    """A PositionEmbeddingSine evaluated on the feature grid, as [H*W, channels]."""
    pe = position_encoding(torch.zeros(1, channels, feat_size, feat_size))
    return pe[0].flatten(1).transpose(0, 1).contiguous().float()


def rope_positions(kept_idx: torch.Tensor) -> torch.Tensor:
    """Grid positions [B,K] int64 that the kept tokens are rotated by in memory attention: their own
    positions in the full grid, whichever subset was kept. Giving pruned tokens their rank among the
    kept ones instead (0..K-1) still runs and still tracks at keep 1.0, yet loses the object once
    pruning starts; the accuracy tests replace this function to show that they catch that."""
    return kept_idx


def gather_tokens(tokens: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """tokens [B,N,C] at per-row positions idx [B,K] → [B,K,C] (a GatherElements)."""
    return torch.gather(tokens, 1, _token_index(idx, tokens))


def _token_index(idx: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """idx [B,K] → [B,K,C] for GatherElements/ScatterElements over tokens [B,N,C]. Broadcast by an
    addition, not expand(-1, -1, C), which exports as shape arithmetic that ONNX shape inference
    (and the TensorRT activation estimate built on it) cannot follow."""
    return idx.unsqueeze(-1) + torch.zeros_like(tokens[:, :1, :], dtype=torch.int64)


class MemoryAttentionStage(nn.Module):
    """Graph ``memory_attention``: memory-condition the kept tokens, fill back the dense grid.

    vision_feats [B,C,H,W]; kept_idx [B,K]; memory [B,M,Cm]; memory_pos_idx [B,M]; memory_tpos_idx
    [B,M] (index into maskmem_tpos_enc); obj_ptrs [B,P,C]; obj_ptr_tpos [B,P] (signed distance
    divided by max_obj_ptrs-1) → pix_feat [B,C,H,W]. Each batch row is one object (its own kept
    tokens, memory and pointers; K, M and P shared by the rows of one call).

    Tokens not in ``kept_idx`` are filled with ``fill``: "norm" = the unconditioned tokens (with the
    input position term) through memory attention's final LayerNorm, i.e. its output if every layer
    were the identity; "no_mem" = the tokens plus SAM2's no-memory embedding, what the decoder sees
    on prompted frames. With every token kept the fill is overwritten everywhere.
    """

    spec_name = MEMORY_ATTENTION

    def __init__(self, model, fill: str = "norm"):
        super().__init__()
        if fill not in FILL_MODES:
            raise ValueError(f"fill must be one of {FILL_MODES}, got {fill!r}")
        self.fill = fill
        self.spec = _stage_specs(model)[MEMORY_ATTENTION]
        fs = model.image_size // model.backbone_stride
        self.feat_size = fs
        self.hidden_dim, self.mem_dim = model.hidden_dim, model.mem_dim
        self.core = MemoryAttentionCore(model.memory_attention, fs)
        self.register_buffer(
            "curr_pos_table",
            _sine_table(model.image_encoder.neck.position_encoding, model.hidden_dim, fs),
            persistent=False,
        )
        self.register_buffer(
            "memory_pos_table",
            _sine_table(model.memory_encoder.position_encoding, model.mem_dim, fs),
            persistent=False,
        )
        self.maskmem_tpos_enc = model.maskmem_tpos_enc  # [num_maskmem, 1, 1, Cm] parameter
        self.no_mem_embed = model.no_mem_embed  # [1, 1, C]
        self.obj_ptr_tpos_proj = model.obj_ptr_tpos_proj
        self.add_tpos_enc_to_obj_ptrs = model.add_tpos_enc_to_obj_ptrs
        self.tpos_dim = model.hidden_dim if model.proj_tpos_enc_in_obj_ptrs else model.mem_dim

    def pointer_tokens(
        self, obj_ptrs: torch.Tensor, obj_ptr_tpos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Object pointers [B,P,C], distances [B,P] → tokens [B,P*C/Cm,Cm] and their encoding
        [B,P*C/Cm,Cm] (SAM2 splits each pointer into C/Cm memory-width tokens that share one temporal
        encoding)."""
        from sam2.modeling.sam2_utils import get_1d_sine_pe

        B = obj_ptrs.shape[0]
        split = self.hidden_dim // self.mem_dim
        if self.add_tpos_enc_to_obj_ptrs:
            pos = self.obj_ptr_tpos_proj(get_1d_sine_pe(obj_ptr_tpos, dim=self.tpos_dim))
        else:
            pos = obj_ptr_tpos.unsqueeze(-1).expand(-1, -1, self.mem_dim) * 0.0
        tokens = obj_ptrs.reshape(B, -1, self.mem_dim)
        pos = pos.unsqueeze(2).expand(-1, -1, split, -1).reshape(B, -1, self.mem_dim)
        return tokens, pos

    def forward(
        self,
        vision_feats: torch.Tensor,
        kept_idx: torch.Tensor,
        memory: torch.Tensor,
        memory_pos_idx: torch.Tensor,
        memory_tpos_idx: torch.Tensor,
        obj_ptrs: torch.Tensor,
        obj_ptr_tpos: torch.Tensor,
    ) -> torch.Tensor:
        B, C, H, W = vision_feats.shape
        tokens = vision_feats.flatten(2).transpose(1, 2)  # [B, HW, C]
        curr = gather_tokens(tokens, kept_idx)
        curr_pos = self.curr_pos_table[kept_idx]
        tpos = self.maskmem_tpos_enc.reshape(-1, self.mem_dim)
        memory_pos = self.memory_pos_table[memory_pos_idx] + tpos[memory_tpos_idx]
        ptr, ptr_pos = self.pointer_tokens(obj_ptrs, obj_ptr_tpos)
        attended = self.core(
            curr, curr_pos, rope_positions(kept_idx), memory, memory_pos, memory_pos_idx, ptr, ptr_pos
        )
        if self.fill == "norm":
            dense = self.core.ma.norm(tokens + 0.1 * self.curr_pos_table.unsqueeze(0))
        else:
            dense = tokens + self.no_mem_embed
        dense = torch.scatter(dense, 1, _token_index(kept_idx, dense), attended)
        return dense.transpose(1, 2).reshape(B, C, H, W)


class ImageEncoderStage(nn.Module):
    """Graph ``image_encoder``: normalized image [B,3,S,S] → fpn_s0 [B,C/8,4H,4W], fpn_s1
    [B,C/4,2H,2W] (already projected by the decoder's conv_s0/conv_s1, as SAM2's forward_image
    does) and vision_feats [B,C,H,W].

    SAM2's neck also returns sine position encodings; they depend only on the grid size, so the
    graphs that need them hold them as constant tables instead of moving them every frame (see
    :meth:`position_encodings` for the torch tensors).
    """

    spec_name = IMAGE_ENCODER

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.spec = _stage_specs(model)[IMAGE_ENCODER]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model.forward_image(image)
        fpn = out["backbone_fpn"]
        return fpn[0], fpn[1], fpn[2]

    @torch.no_grad()
    def position_encodings(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The three levels' sine position encodings for ``image`` (the neck's vision_pos_enc)."""
        return self.model.forward_image(image)["vision_pos_enc"]


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x [B,N,...] indexed per batch row by idx [B] → [B,1,...] (a GatherElements, TRT-friendly)."""
    shape = (x.shape[0], 1, *x.shape[2:])
    index = idx.reshape(-1, *([1] * (x.dim() - 1))).expand(shape)
    return torch.gather(x, 1, index)


class MaskDecoderStage(nn.Module):
    """Graph ``mask_decoder``: SAM2's prompt encoder + mask decoder + object-pointer head.

    Inputs (see the spec): memory-conditioned pix_feat, the two projected high-res levels, point
    prompts (SAM2 appends its padding point inside), an optional low-res mask prompt selected by
    ``has_mask_input``, and ``multimask_output``. Outputs the mask SAM2 would choose (best of three by
    predicted IoU when multimask, else the single-mask token with SAM2's stability fallback), its IoU,
    the object pointer (with SAM2's no-object handling), the object-score logit, and all three
    multimask candidates and their IoUs.
    """

    spec_name = MASK_DECODER

    def __init__(self, model):
        super().__init__()
        self.prompt_encoder = model.sam_prompt_encoder
        self.decoder = model.sam_mask_decoder
        self.obj_ptr_proj = model.obj_ptr_proj
        self.no_obj_ptr = model.no_obj_ptr
        self.spec = _stage_specs(model)[MASK_DECODER]
        self.register_buffer(
            "image_pe", self.prompt_encoder.get_dense_pe().detach().clone(), persistent=False
        )
        dec = self.decoder
        if not (model.pred_obj_scores and dec.pred_obj_scores):
            raise ValueError("SAM2 configs without object scores are not supported")
        self.dynamic_multimask = bool(dec.dynamic_multimask_via_stability)
        self.use_multimask_token_for_obj_ptr = bool(dec.use_multimask_token_for_obj_ptr)

    def _predict_masks(
        self, image_embeddings, sparse, dense, high_res_features
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # sam2 MaskDecoder.predict_masks with repeat_image=False, image_pe broadcast by expand
        dec = self.decoder
        output_tokens = torch.cat(
            [dec.obj_score_token.weight, dec.iou_token.weight, dec.mask_tokens.weight], dim=0
        )
        output_tokens = output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1)
        tokens = torch.cat((output_tokens, sparse), dim=1)
        src = image_embeddings + dense
        pos_src = self.image_pe.expand(src.shape[0], -1, -1, -1)
        b, c, h, w = src.shape
        hs, src = dec.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 1, :]
        mask_tokens_out = hs[:, 2 : 2 + dec.num_mask_tokens, :]
        src = src.transpose(1, 2).reshape(b, c, h, w)
        dc1, ln1, act1, dc2, act2 = dec.output_upscaling
        feat_s0, feat_s1 = high_res_features
        upscaled = act1(ln1(dc1(src) + feat_s1))
        upscaled = act2(dc2(upscaled) + feat_s0)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)],
            dim=1,
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        iou_pred = dec.iou_prediction_head(iou_token_out)
        object_score_logits = dec.pred_obj_score_head(hs[:, 0, :])
        return masks, iou_pred, mask_tokens_out, object_score_logits

    def forward(
        self,
        pix_feat: torch.Tensor,
        fpn_s0: torch.Tensor,
        fpn_s1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        multimask_output: torch.Tensor,
    ):
        pe = self.prompt_encoder
        sparse = pe._embed_points(point_coords, point_labels, pad=True)
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(pix_feat)
        dense = torch.where(
            has_mask_input.reshape(-1, 1, 1, 1) > 0.5, pe._embed_masks(mask_input), no_mask
        )
        masks, ious, mask_tokens, object_score_logits = self._predict_masks(
            pix_feat, sparse, dense, [fpn_s0, fpn_s1]
        )
        multi_masks, multi_ious = masks[:, 1:], ious[:, 1:]
        best = torch.argmax(multi_ious, dim=-1)
        best_multi_mask = _take(multi_masks, best)
        best_multi_iou = _take(multi_ious, best)
        single_token = mask_tokens[:, 0]
        if self.use_multimask_token_for_obj_ptr:
            multi_token = _take(mask_tokens[:, 1:], best)[:, 0]
        else:
            multi_token = single_token
        if self.dynamic_multimask:
            # sam2 MaskDecoder._dynamic_multimask_via_stability
            dec = self.decoder
            single_logits = masks[:, 0:1].flatten(-2)
            area_i = torch.sum(single_logits > dec.dynamic_multimask_stability_delta, dim=-1).float()
            area_u = torch.sum(single_logits > -dec.dynamic_multimask_stability_delta, dim=-1).float()
            stability = torch.where(area_u > 0, area_i / area_u, 1.0)
            is_stable = stability >= dec.dynamic_multimask_stability_thresh  # [B,1]
            single_mask = torch.where(is_stable[..., None, None], masks[:, 0:1], best_multi_mask)
            single_iou = torch.where(is_stable, ious[:, 0:1], best_multi_iou)
        else:
            single_mask, single_iou = masks[:, 0:1], ious[:, 0:1]
        multi = multimask_output.reshape(1, 1) > 0.5
        low_res_mask = torch.where(multi[..., None, None], best_multi_mask, single_mask)
        iou = torch.where(multi, best_multi_iou, single_iou)
        token = torch.where(multi, multi_token, single_token)
        # object presence: SAM2 blanks absent objects' masks and swaps in the no-object pointer
        is_obj = object_score_logits > 0  # [B,1]
        low_res_mask = torch.where(is_obj[..., None, None], low_res_mask, NO_OBJ_SCORE)
        multi_masks = torch.where(is_obj[..., None, None], multi_masks, NO_OBJ_SCORE)
        lam = is_obj.float()
        obj_ptr = lam * self.obj_ptr_proj(token) + (1 - lam) * self.no_obj_ptr
        return low_res_mask, iou, obj_ptr, object_score_logits, multi_masks, multi_ious


class MemoryEncoderStage(nn.Module):
    """Graph ``memory_encoder``: frame features + low-res mask logits → memory tokens [B,K,Cm].

    As SAM2's _encode_new_memory: the logits are upsampled to the image size, binarized (frames the
    user clicked, when the config says so) or passed through a sigmoid, scaled/biased, fused with the
    features; frames predicted to have no object get the no-object spatial embedding. Only the tokens
    at ``kept_idx`` [B,K] (per row) are returned, so a pruned frame writes a smaller memory. The memory's position
    encoding is a constant table held by the memory-attention graph.
    """

    spec_name = MEMORY_ENCODER

    def __init__(self, model):
        super().__init__()
        self.memory_encoder = model.memory_encoder
        self.image_size = model.image_size
        self.scale = float(model.sigmoid_scale_for_mem_enc)
        self.bias = float(model.sigmoid_bias_for_mem_enc)
        self.no_obj_embed_spatial = model.no_obj_embed_spatial
        self.spec = _stage_specs(model)[MEMORY_ENCODER]

    def forward(
        self,
        vision_feats: torch.Tensor,
        mask_logits: torch.Tensor,
        object_score_logits: torch.Tensor,
        binarize: torch.Tensor,
        kept_idx: torch.Tensor,
    ) -> torch.Tensor:
        high_res = F.interpolate(
            mask_logits, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        mask = torch.where(
            binarize.reshape(-1, 1, 1, 1) > 0.5, (high_res > 0).float(), torch.sigmoid(high_res)
        )
        if self.scale != 1.0:
            mask = mask * self.scale
        if self.bias != 0.0:
            mask = mask + self.bias
        enc = self.memory_encoder
        # sam2 MemoryEncoder.forward with skip_mask_sigmoid=True, without its constant pos encoding
        x = enc.pix_feat_proj(vision_feats) + enc.mask_downsampler(mask)
        x = enc.out_proj(enc.fuser(x))
        if self.no_obj_embed_spatial is not None:
            absent = 1.0 - (object_score_logits > 0).float()  # [B,1]
            x = x + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        return gather_tokens(x.flatten(2).transpose(1, 2), kept_idx)


def build_stages(model, *, fill: str = "norm") -> dict[str, nn.Module]:
    """The four SAM2 stages of ``model`` (the router is added by the pruning code), in eval mode."""
    stages = {
        IMAGE_ENCODER: ImageEncoderStage(model),
        MEMORY_ATTENTION: MemoryAttentionStage(model, fill=fill),
        MASK_DECODER: MaskDecoderStage(model),
        MEMORY_ENCODER: MemoryEncoderStage(model),
    }
    for stage in stages.values():
        stage.eval()
    return stages


def model_constants(model) -> dict[str, "object"]:
    """Small tensors the tracker loop needs outside the graphs, as host numpy arrays."""
    return {
        "no_mem_embed": model.no_mem_embed.detach().reshape(-1).cpu().float().numpy(),
        "no_obj_ptr": model.no_obj_ptr.detach().reshape(-1).cpu().float().numpy(),
        "mask_downsample_weight": model.mask_downsample.weight.detach().cpu().float().numpy(),
        "mask_downsample_bias": model.mask_downsample.bias.detach().cpu().float().numpy(),
    }
