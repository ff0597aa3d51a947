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
from fastsam2.runtime.config import (
    CONFIG_NAMES,
    SAM2_CONFIGS,
    SHIPPED_MODELS,
    ModelConfig,
    canonical_config_name,
    is_config_path,
    resolve_model,
    shipped_config_path,
)
from fastsam2.runtime.errors import UsageError, UserError, one_line
from fastsam2.runtime.manifest import file_sha256

__all__ = ["CONFIG_NAMES", "ModelLoadError", "build_sam2", "load_checkpoint", "model_config", "resolve_config"]


class ModelLoadError(UserError, ValueError):
    """A config name or checkpoint the user gave cannot be used (one-line message)."""


@dataclass(frozen=True)
class ConfigEntry:
    name: str  # what the model records as its config_name
    hydra_config: str | None  # path inside the sam2 package's hydra search path (named configs)
    checkpoint_name: str  # the official file name, for messages
    yaml_path: Path | None = None  # a config given as a file


def resolve_config(config: str) -> ConfigEntry:
    """The entry of a config name, alias, shipped model name or YAML path (one-line error if unknown)."""
    try:
        if config in SHIPPED_MODELS:
            config = str(shipped_config_path(config))
        name = canonical_config_name(config)
    except UsageError as e:
        raise ModelLoadError(str(e)) from None
    if is_config_path(config):
        path = Path(config)
        if not path.is_file():
            raise ModelLoadError(f"config file not found: {config}")
        return ConfigEntry(name, None, f"{name}.safetensors", path)
    hydra_config, checkpoint_name, _ = SAM2_CONFIGS[name]
    return ConfigEntry(name, hydra_config, checkpoint_name)


RANDOM_INIT = "random-init"


def warn_random_weights(config_name: str) -> None:
    bar = "!" * 78
    print(
        f"{bar}\n!! fastsam2: NO CHECKPOINT for {config_name!r}: SAM2 is RANDOMLY INITIALISED.\n"
        f"!! Masks are meaningless; timings are real. Pass --checkpoint PATH for real results.\n{bar}",
        file=sys.stderr,
    )


def build_sam2(
    config: str | None,
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

    ``config`` is a name of :data:`CONFIG_NAMES` (aliases included) or a path to a sam2 config YAML
    (loaded with OmegaConf, given the same overrides); None means ``tiny``, or the config of a shipped
    model named as ``checkpoint`` (``"synthetic"``). ``checkpoint`` is an official ``.pt``, a
    ``.safetensors`` state dict, a shipped model's name, or None (random weights).

    ``image_size`` overrides the config's 1024 (e.g. 512 for fast CPU tests; weights are shared, the
    RoPE tables and position encodings follow the grid). ``object_score_bias`` adds to the
    object-score head's last bias: with random weights that head mostly says "no object" and SAM2
    then blanks every mask, so tests and demos use a positive bias to get non-trivial masks.
    """
    import torch
    from hydra import compose
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import sam2  # noqa: F401  (initialises sam2's hydra config search path)

    try:
        config, checkpoint = resolve_model(config, None if checkpoint is None else str(checkpoint))
    except UsageError as e:
        raise ModelLoadError(str(e)) from None
    entry = resolve_config(config)
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
    if entry.yaml_path is None:
        cfg = compose(config_name=entry.hydra_config, overrides=overrides)
    else:
        cfg = load_config_file(entry.yaml_path, overrides)
    OmegaConf.resolve(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = instantiate(cfg.model, _recursive_=True)
        except InstantiationException as e:  # a user's .yaml whose model: is not a SAM2 model
            if entry.yaml_path is None:
                raise
            why = one_line(e.__cause__ or e)
            raise ModelLoadError(f"config {entry.yaml_path} does not build a SAM2 model: {why}") from None
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


def load_config_file(path: Path, overrides: list[str]):
    """A sam2 config YAML (``model:`` with hydra ``_target_`` entries) with hydra-style ``++key=value``
    overrides applied, as :func:`hydra.compose` would for a named config."""
    import yaml
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = OmegaConf.load(path)
    except (OSError, yaml.YAMLError, OmegaConfBaseException, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"cannot read config {path}: {reason}") from None
    model = cfg.get("model") if isinstance(cfg, DictConfig) else None
    if not isinstance(model, DictConfig) or "_target_" not in model:
        raise ModelLoadError(f"config {path} has no 'model:' section with a _target_ (not a sam2 config)")
    try:
        for item in overrides:
            key, value = item.lstrip("+").split("=", 1)
            OmegaConf.update(cfg, key, yaml.safe_load(value), force_add=True)
    except (OmegaConfBaseException, ValueError, TypeError) as e:
        raise ModelLoadError(f"config {path}: cannot apply {item!r}: {e}") from None
    return cfg


def read_state_dict(checkpoint: str | Path) -> dict:
    """The state dict of an official SAM2 ``.pt`` (``{"model": ...}``) or a ``.safetensors`` file
    (stored fp16/bf16 tensors come back as float32)."""
    import torch

    path = Path(checkpoint)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
            return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelLoadError(f"cannot read checkpoint {checkpoint}: {type(e).__name__}: {reason}") from None
    state = data.get("model") if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise ModelLoadError(
            f"checkpoint {checkpoint} is not an official SAM2 checkpoint (no 'model' state dict)"
        )
    return state


def load_checkpoint(model, checkpoint: str | Path, config_name: str) -> None:
    """Load an official SAM2 ``.pt`` or a ``.safetensors`` state dict into ``model``; any mismatch is
    one error naming the config."""
    import torch

    state = read_state_dict(checkpoint)
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
    by_shape = {(96, 12): "tiny", (96, 16): "small", (112, 24): "base_plus", (144, 48): "large", (48, 7): "synthetic"}
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
    from .encoder_region import trunk_alignment, trunk_levels

    trunk = model.image_encoder.trunk
    channels, scales = trunk_levels(trunk)
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
        patch_stride=int(trunk.patch_embed.proj.stride[0]),
        patch_kernel=int(trunk.patch_embed.proj.kernel_size[0]),
        patch_padding=int(trunk.patch_embed.proj.padding[0]),
        trunk_channels=channels,
        trunk_scales=scales,
        encoder_align=trunk_alignment(trunk),
        add_all_frames_to_correct_as_cond=getattr(model, "add_all_frames_to_correct_as_cond", False),
    )
