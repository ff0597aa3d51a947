"""Building SAM2 models by config name with the official ``sam2`` package (used, never copied).

Checkpoints are the official ``.pt`` files (``{"model": state_dict}``) loaded from a local path.
Without a checkpoint the model is randomly initialised and :func:`build_sam2` says so loudly:
masks are then meaningless (that is what tests and demos on machines without weights use).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from fastsam2.runtime.args import image_size_problem
from fastsam2.runtime.config import ModelConfig
from fastsam2.runtime.manifest import file_sha256
from fastsam2.runtime.errors import UserError


class ModelLoadError(UserError, ValueError):
    """A config name or checkpoint the user gave cannot be used (one-line message)."""


@dataclass(frozen=True)
class ConfigEntry:
    name: str
    hydra_config: str  # path inside the sam2 package's hydra search path
    checkpoint_name: str  # the official file name, for messages


_SIZES = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}
CONFIGS: dict[str, ConfigEntry] = {}
for _size, _short in _SIZES.items():
    CONFIGS[_size] = ConfigEntry(
        _size, f"configs/sam2.1/sam2.1_hiera_{_short}.yaml", f"sam2.1_hiera_{_size}.pt"
    )
    CONFIGS[f"sam2.1-{_size}"] = CONFIGS[_size]
    CONFIGS[f"sam2.0-{_size}"] = ConfigEntry(
        f"sam2.0-{_size}", f"configs/sam2/sam2_hiera_{_short}.yaml", f"sam2_hiera_{_size}.pt"
    )
CONFIG_NAMES = tuple(CONFIGS)


def resolve_config(name: str) -> ConfigEntry:
    try:
        return CONFIGS[name]
    except KeyError:
        raise ModelLoadError(
            f"unknown config {name!r}; choose one of: {', '.join(CONFIG_NAMES)}"
        ) from None


RANDOM_INIT = "random-init"


def warn_random_weights(config_name: str) -> None:
    bar = "!" * 78
    print(
        f"{bar}\n!! fastsam2: NO CHECKPOINT for {config_name!r}: SAM2 is RANDOMLY INITIALISED.\n"
        f"!! Masks are meaningless; timings are real. Pass --checkpoint PATH for real results.\n{bar}",
        file=sys.stderr,
    )


def build_sam2(
    config: str,
    checkpoint: str | Path | None = None,
    *,
    device: str = "cpu",
    image_size: int | None = None,
    seed: int = 0,
    object_score_bias: float | None = None,
    quiet: bool = False,
    hydra_overrides: list[str] | None = None,
):
    """Build the official ``SAM2VideoPredictor`` for ``config`` (eval mode, on ``device``).

    ``image_size`` overrides the config's 1024 (e.g. 512 for fast CPU tests; weights are shared, the
    RoPE tables and position encodings follow the grid). ``object_score_bias`` adds to the
    object-score head's last bias: with random weights that head mostly says "no object" and SAM2
    then blanks every mask, so tests and demos use a positive bias to get non-trivial masks.
    """
    import torch
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import sam2  # noqa: F401  (initialises sam2's hydra config search path)

    entry = resolve_config(config)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise ModelLoadError(f"checkpoint not found: {checkpoint}")
    # The same overrides as sam2.build_sam.build_sam2_video_predictor, so that equal weights give
    # an equal predictor.
    overrides = [
        "++model._target_=sam2.sam2_video_predictor.SAM2VideoPredictor",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
        "++model.binarize_mask_from_pts_for_mem_enc=true",
        "++model.fill_hole_area=8",
    ]
    if image_size is not None:
        problem = image_size_problem(image_size)
        if problem:
            raise ModelLoadError(problem)
        overrides.append(f"++model.image_size={image_size}")
        fs = image_size // 16
        for layer in ("self_attention", "cross_attention"):
            overrides.append(f"++model.memory_attention.layer.{layer}.feat_sizes=[{fs},{fs}]")
    overrides += hydra_overrides or []
    cfg = compose(config_name=entry.hydra_config, overrides=overrides)
    OmegaConf.resolve(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = instantiate(cfg.model, _recursive_=True)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, entry.name)
    elif not quiet:
        warn_random_weights(entry.name)
    if object_score_bias:
        head = model.sam_mask_decoder.pred_obj_score_head
        last = head.layers[-1] if hasattr(head, "layers") else head
        with torch.no_grad():
            last.bias.add_(object_score_bias)
    model = model.to(device).eval()
    model.fastsam2_config_name = entry.name
    model.fastsam2_weights = RANDOM_INIT if checkpoint is None else file_sha256(checkpoint)
    return model


def load_checkpoint(model, checkpoint: str | Path, config_name: str) -> None:
    """Load an official SAM2 ``.pt`` into ``model``; any mismatch is one error naming the config."""
    import torch

    try:
        data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise ModelLoadError(f"cannot read checkpoint {checkpoint}: {type(e).__name__}: {e}") from e
    state = data.get("model") if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise ModelLoadError(
            f"checkpoint {checkpoint} is not an official SAM2 checkpoint (no 'model' state dict)"
        )
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or mismatched:
        guess = guess_config(state)
        hint = f" (it looks like {guess!r})" if guess and guess != config_name else ""
        parts = []
        if mismatched:
            k = mismatched[0]
            parts.append(
                f"{len(mismatched)} shape mismatches, e.g. {k}: checkpoint "
                f"{tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            )
        if missing:
            parts.append(f"{len(missing)} missing keys, e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[0]}")
        raise ModelLoadError(
            f"checkpoint {Path(checkpoint).name} does not fit config {config_name!r}{hint}: "
            + "; ".join(parts)
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ModelLoadError(
            f"checkpoint {Path(checkpoint).name} has NaN or infinite values in {len(bad)} tensors, "
            f"e.g. {bad[0]} (a corrupt or diverged checkpoint)"
        )
    model.load_state_dict(state, strict=True)


def guess_config(state: dict) -> str | None:
    """Name the SAM2.1 size whose trunk matches a checkpoint's state dict, if any."""
    embed = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if embed is None:
        return None
    dim = int(embed.shape[0])
    depth = 1 + max(
        (int(k.split(".")[3]) for k in state if k.startswith("image_encoder.trunk.blocks.")),
        default=-1,
    )
    by_shape = {(96, 12): "tiny", (96, 16): "small", (112, 24): "base_plus", (144, 48): "large"}
    return by_shape.get((dim, depth))


def model_config(model, config_name: str | None = None) -> ModelConfig:
    """The runtime's :class:`ModelConfig` read off a built ``SAM2VideoPredictor``."""
    unsupported = []
    if not model.use_obj_ptrs_in_encoder:
        unsupported.append("use_obj_ptrs_in_encoder=False")
    if not model.use_high_res_features_in_sam:
        unsupported.append("use_high_res_features_in_sam=False")
    if model.num_maskmem < 1:
        unsupported.append("num_maskmem=0")
    if not model.pred_obj_scores or not model.fixed_no_obj_ptr or model.soft_no_obj_ptr:
        unsupported.append("object-score variant other than SAM2's released configs")
    if model.non_overlap_masks_for_mem_enc:
        unsupported.append("non_overlap_masks_for_mem_enc=True")
    if not model.directly_add_no_mem_embed:
        unsupported.append("directly_add_no_mem_embed=False")
    if unsupported:
        raise ModelLoadError(f"unsupported SAM2 variant: {', '.join(unsupported)}")
    return ModelConfig(
        config_name=config_name or getattr(model, "fastsam2_config_name", "custom"),
        image_size=model.image_size,
        backbone_stride=model.backbone_stride,
        hidden_dim=model.hidden_dim,
        mem_dim=model.mem_dim,
        num_maskmem=model.num_maskmem,
        max_obj_ptrs_in_encoder=model.max_obj_ptrs_in_encoder,
        memory_temporal_stride_for_eval=model.memory_temporal_stride_for_eval,
        max_cond_frames_in_attn=model.max_cond_frames_in_attn,
        use_obj_ptrs_in_encoder=model.use_obj_ptrs_in_encoder,
        add_tpos_enc_to_obj_ptrs=model.add_tpos_enc_to_obj_ptrs,
        use_signed_tpos_enc_to_obj_ptrs=model.use_signed_tpos_enc_to_obj_ptrs,
        only_obj_ptrs_in_the_past_for_eval=model.only_obj_ptrs_in_the_past_for_eval,
        directly_add_no_mem_embed=model.directly_add_no_mem_embed,
        multimask_output_in_sam=model.multimask_output_in_sam,
        multimask_min_pt_num=model.multimask_min_pt_num,
        multimask_max_pt_num=model.multimask_max_pt_num,
        multimask_output_for_tracking=model.multimask_output_for_tracking,
        binarize_mask_from_pts_for_mem_enc=model.binarize_mask_from_pts_for_mem_enc,
        use_mask_input_as_output_without_sam=model.use_mask_input_as_output_without_sam,
        pred_obj_scores=model.pred_obj_scores,
        fill_hole_area=getattr(model, "fill_hole_area", 0),
        non_overlap_masks=getattr(model, "non_overlap_masks", False),
        add_all_frames_to_correct_as_cond=getattr(model, "add_all_frames_to_correct_as_cond", False),
    )
