"""The model facts the tracker needs, as plain data (no torch): read from a SAM2 model at build or
export time, written into an export's manifest.json, and read back by torch-free runtimes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .errors import UsageError
from .specs import SpecDims

# Every SAM2 config fastsam2 builds by name: canonical name -> (file in sam2's hydra search path, the
# official checkpoint's file name, aliases). Read by the torch side (building) and by torch-free
# runtimes (comparing a --config with an export's manifest).
_SIZES = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}
SAM2_CONFIGS: dict[str, tuple[str, str, tuple[str, ...]]] = {}
for _size, _short in _SIZES.items():
    SAM2_CONFIGS[_size] = (
        f"configs/sam2.1/sam2.1_hiera_{_short}.yaml", f"sam2.1_hiera_{_size}.pt",
        (f"sam2.1-{_size}", f"sam2.1_hiera_{_short}", f"sam2.1_hiera_{_size}"),
    )
    SAM2_CONFIGS[f"sam2.0-{_size}"] = (
        f"configs/sam2/sam2_hiera_{_short}.yaml", f"sam2_hiera_{_size}.pt",
        (f"sam2_hiera_{_short}", f"sam2_hiera_{_size}"),
    )
CONFIG_ALIASES: dict[str, str] = {a: name for name, (_, _, aliases) in SAM2_CONFIGS.items() for a in aliases}

# Models shipped inside the package (runtime/data/models/NAME.yaml + NAME.safetensors): a name given
# as --checkpoint selects the weights and brings its config along.
SHIPPED_MODELS_DIR = Path(__file__).resolve().parent / "data" / "models"
SHIPPED_MODELS = ("synthetic",)
CONFIG_NAMES = (*SAM2_CONFIGS, *CONFIG_ALIASES, *SHIPPED_MODELS)
CHECKPOINT_HELP = (
    f"an official SAM2 .pt, a .safetensors state dict, or a shipped model's name ({', '.join(SHIPPED_MODELS)}: "
    "its config comes with it); default: RANDOM weights"
)
_CONFIG_SUFFIXES = (".yaml", ".yml")


def is_config_path(config: str) -> bool:
    """Whether ``--config`` names a YAML file rather than a config of the table."""
    return config.endswith(_CONFIG_SUFFIXES) or "/" in config or "\\" in config


def shipped_config_path(name: str) -> Path:
    return SHIPPED_MODELS_DIR / f"{name}.yaml"


def shipped_weights_path(name: str) -> Path:
    return SHIPPED_MODELS_DIR / f"{name}.safetensors"


def canonical_config_name(config: str) -> str:
    """The name a model built from ``config`` records (manifest ``config_name``): an alias gives its
    config (``sam2.1-tiny`` -> ``tiny``), a YAML path its file stem (the shipped
    ``.../synthetic.yaml`` -> ``synthetic``). Raises :class:`UsageError` for an unknown name."""
    if is_config_path(config):
        return Path(config).stem
    if config in SAM2_CONFIGS or config in SHIPPED_MODELS:
        return config
    if config in CONFIG_ALIASES:
        return CONFIG_ALIASES[config]
    raise UsageError(
        f"unknown config {config!r}; choose one of: {', '.join((*SAM2_CONFIGS, *SHIPPED_MODELS))} "
        "(or an alias such as sam2.1-tiny, sam2.1_hiera_t), or a path to a sam2 config .yaml"
    )


def resolve_model(config: str | None, checkpoint: str | None) -> tuple[str, str | None]:
    """``(config, checkpoint_path)`` for a command's ``--config``/``--checkpoint``.

    A shipped model's name as ``checkpoint`` selects its weights and config (``--config`` may be
    omitted or name the same config); otherwise ``config`` defaults to ``tiny`` and ``checkpoint`` is a
    file path or None. Names are checked, files are not opened; one-line :class:`UsageError` on a
    bad name or a missing file.
    """
    if checkpoint is not None and checkpoint in SHIPPED_MODELS:
        if config is not None and canonical_config_name(config) != checkpoint:
            raise UsageError(
                f"--checkpoint {checkpoint} comes with its own config; drop --config {config} "
                f"(or pass --config {checkpoint})"
            )
        weights = shipped_weights_path(checkpoint)
        if not weights.is_file():
            raise UsageError(
                f"--checkpoint {checkpoint}: this fastsam2 has no {weights.name} (see {weights.with_suffix('.md').name} "
                "beside it: train it with python -m fastsam2.tools.train_sam2)"
            )
        return str(shipped_config_path(checkpoint)), str(weights)
    if config is None:
        config = "tiny"
    if config in SHIPPED_MODELS:
        config = str(shipped_config_path(config))
    elif is_config_path(config):
        if not Path(config).is_file():
            raise UsageError(f"--config: file not found: {config}")
    else:
        canonical_config_name(config)
    if checkpoint is not None and not Path(checkpoint).is_file():
        shipped = ", ".join(SHIPPED_MODELS)
        raise UsageError(f"--checkpoint: file not found: {checkpoint} (or name a shipped model: {shipped})")
    return config, checkpoint


def same_config(given: str, recorded: str) -> bool:
    """Whether a user's ``--config`` names the config an export recorded (aliases count)."""

    def canonical(name: str) -> str:
        try:
            return canonical_config_name(name)
        except UsageError:  # a custom config's recorded stem
            return name

    return canonical(given) == canonical(recorded)


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
    # Hiera's trunk, for encoder regions (see SpecDims)
    patch_stride: int = 4
    patch_kernel: int = 7
    patch_padding: int = 3
    trunk_channels: tuple[int, ...] = (96, 192, 384, 768)
    trunk_scales: tuple[int, ...] = (1, 2, 4, 8)
    encoder_align: int = 56

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
            patch_stride=self.patch_stride,
            patch_kernel=self.patch_kernel,
            patch_padding=self.patch_padding,
            trunk_channels=self.trunk_channels,
            trunk_scales=self.trunk_scales,
            encoder_align=self.encoder_align,
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
        for key in ("img_mean", "img_std", "trunk_channels", "trunk_scales"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)
