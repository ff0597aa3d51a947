"""The model facts the tracker needs, as plain data (no torch): read from a SAM2 model at build or
export time, written into an export's manifest.json, and read back by torch-free runtimes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from .specs import SpecDims

# SAM2's placeholder score for "object absent" mask logits.
NO_OBJ_SCORE = -1024.0
# what memory attention puts in place of pruned tokens (an export option, recorded in its manifest)
FILL_MODES = ("norm", "no_mem")


@dataclass(frozen=True)
class ModelConfig:
    """The subset of SAM2Base / SAM2VideoPredictor hyper-parameters that drive the video loop."""

    config_name: str = "tiny"
    image_size: int = 1024
    backbone_stride: int = 16
    hidden_dim: int = 256
    mem_dim: int = 64
    num_maskmem: int = 7
    max_obj_ptrs_in_encoder: int = 16
    memory_temporal_stride_for_eval: int = 1
    max_cond_frames_in_attn: int = -1
    use_obj_ptrs_in_encoder: bool = True
    add_tpos_enc_to_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    only_obj_ptrs_in_the_past_for_eval: bool = True
    directly_add_no_mem_embed: bool = True
    multimask_output_in_sam: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    multimask_output_for_tracking: bool = True
    binarize_mask_from_pts_for_mem_enc: bool = True
    use_mask_input_as_output_without_sam: bool = True
    pred_obj_scores: bool = True
    # SAM2VideoPredictor options (build_sam2_video_predictor's defaults)
    fill_hole_area: int = 8
    non_overlap_masks: bool = False
    add_all_frames_to_correct_as_cond: bool = False
    img_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    img_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @property
    def feat_size(self) -> int:
        return self.image_size // self.backbone_stride

    @property
    def num_tokens(self) -> int:
        return self.feat_size**2

    @property
    def mask_size(self) -> int:
        return 4 * self.feat_size

    def spec_dims(self, text_dim: int = 512) -> SpecDims:
        return SpecDims(
            image_size=self.image_size,
            backbone_stride=self.backbone_stride,
            hidden_dim=self.hidden_dim,
            mem_dim=self.mem_dim,
            text_dim=text_dim,
            num_maskmem=self.num_maskmem,
        )

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown} (written by a newer fastsam2?)")
        data = dict(data)
        for key in ("img_mean", "img_std"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)
