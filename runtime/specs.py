"""Export specs: the one place where each graph's tensor names, dtypes and dynamic axes exist.

Export (torch -> ONNX), validation, every runtime backend and the TensorRT optimization profiles all
read these objects; nothing else spells a tensor name. Pure Python: importable without numpy, torch,
onnxruntime or tensorrt.

Shapes are tuples whose entries are either an int (a fixed size) or a str (a named dynamic axis).
Symbols that depend on the model config (``S`` image size, ``H``/``W`` feature grid, ...) are resolved
by :func:`graph_specs` from a :class:`SpecDims`, so that every spec carries concrete fixed sizes.
Each input also declares its allowed *values* (:class:`Values`: token indices below H*W, 0/1 flags,
pixel coordinates in the model input, ...), so that :meth:`GraphSpec.sample` is the one generator of
valid inputs for tracing, validation, calibration warm-up and engine checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Dim = int | str

# Named dynamic axes (the symbols that ONNX dynamic_axes and TensorRT profiles use).
BATCH = "batch"  # objects (or images) processed in one call; every per-object input has this axis
KEPT = "kept_tokens"  # K: current-frame tokens that go through memory attention / are written to memory
MEMORY = "memory_tokens"  # M: spatial memory tokens from the memory bank
POINTERS = "object_pointers"  # P: object pointers from other frames
POINTS = "num_points"  # N: point prompts (box corners count as two points)
# The encoder on a rectangle (TrackerOptions.encoder_region): its rows / columns of patch tokens; a
# trunk level at scale s has region_rows_s rows (region_rows at scale 1), and the image crop the
# patch embedding reads region_rows_px rows (SpecDims.region_pixels).
REGION_ROWS = "region_rows"
REGION_COLS = "region_cols"


def region_symbol(axis: str, scale: int) -> str:
    """The dynamic-axis name of ``axis`` (REGION_ROWS / REGION_COLS) on a trunk level at ``scale``."""
    return axis if scale == 1 else f"{axis}_{scale}"


def region_pixels_symbol(axis: str) -> str:
    """The dynamic-axis name of the pixels the patch embedding reads for ``axis``'s tokens."""
    return f"{axis}_px"


def region_axes(rows: int, cols: int, dims: "SpecDims") -> dict[str, int]:
    """{symbol: size} of every region axis of a ``rows`` x ``cols``-token rectangle: at each level
    scale, and in pixels with the patch embedding's halo (:meth:`SpecDims.region_pixels`)."""
    axes = {region_symbol(axis, s): side // s for axis, side in ((REGION_ROWS, rows), (REGION_COLS, cols))
            for s in dims.trunk_scales}
    axes.update({region_pixels_symbol(axis): dims.region_pixels(side)
                 for axis, side in ((REGION_ROWS, rows), (REGION_COLS, cols))})
    return axes


def region_units(tokens: int, align: int) -> int:
    """Alignment units per side of a ``tokens``-wide patch grid (the last may be partial)."""
    return -(-tokens // align)


def region_token_sizes(tokens: int, align: int) -> list[int]:
    """Every side (in patch tokens) a unit-aligned rectangle of a ``tokens``-wide grid can have: whole
    units, and the spans that end at the grid's last (possibly partial) unit; ascending."""
    units = region_units(tokens, align)
    return sorted({min(k * align, tokens) for k in range(1, units + 1)}
                  | {tokens - r0 * align for r0 in range(units)})


def region_trace_sizes(tokens: int, align: int) -> tuple[int, int]:
    """(rows, cols) to trace the trunk at: two different sides, the least aligned (smallest
    ``gcd`` with the unit) first, so that a windowed block that pads at some side pads in the trace
    too (a traced ``if pad > 0`` keeps only the branch it saw); validation runs every side."""
    import math

    sizes = sorted(region_token_sizes(tokens, align), key=lambda s: (math.gcd(s, align), -s))
    return sizes[0], sizes[1] if len(sizes) > 1 else sizes[0]


@dataclass(frozen=True)
class Values:
    """The values a tensor may hold.

    ``real``: any finite number (sampled standard normal); ``uniform``: [low, high); ``ints``: integers
    in [low, high); ``indices``: distinct integers in [low, high), ascending along the last axis (a
    token selection per batch row);
    ``choice``: one of ``choices`` (sampled cycling through all of them, so that a batch of
    ``len(choices)`` or more exercises every one).
    """

    kind: str = "real"
    low: float = 0.0
    high: float = 0.0
    choices: tuple[float, ...] = ()

    def sample(self, shape: tuple[int, ...], dtype: str, rng: Any):
        """A numpy array of ``shape``/``dtype`` holding allowed values (``rng``: numpy Generator)."""
        import numpy as np

        n = int(np.prod(shape)) if shape else 1
        if self.kind == "real":
            if not dtype.startswith("float"):
                raise ValueError(f"no allowed values declared for integer input of dtype {dtype}")
            x = rng.standard_normal(n)
        elif self.kind == "uniform":
            x = self.low + rng.random(n) * (self.high - self.low)
        elif self.kind == "ints":
            x = rng.integers(int(self.low), int(self.high), n)
        elif self.kind == "indices":
            per_row = shape[-1] if shape else 1
            if per_row > self.high - self.low:
                raise ValueError(f"cannot draw {per_row} distinct indices from [{self.low:g}, {self.high:g})")
            rows = [np.sort(rng.permutation(int(self.high - self.low))[:per_row]) for _ in range(n // max(per_row, 1))]
            x = (np.concatenate(rows) if rows else np.zeros(0, np.int64)) + int(self.low)
        elif self.kind == "choice":
            x = np.asarray(self.choices)[(np.arange(n) + int(rng.integers(len(self.choices)))) % len(self.choices)]
        else:
            raise ValueError(f"unknown value kind {self.kind!r}")
        return np.ascontiguousarray(x.reshape(shape).astype(dtype))


REAL = Values()
FLAG = Values("choice", choices=(0.0, 1.0))


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output: dtype (numpy name), shape with named dynamic axes, allowed values."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    values: Values = field(default=REAL, compare=False)

    @property
    def dynamic_axes(self) -> dict[int, str]:
        """{axis index: symbol} for the dynamic axes, the form torch.onnx.export wants."""
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def concrete(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """The shape with every dynamic axis replaced from ``sizes`` (KeyError if one is missing)."""
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)

    def check(self, shape: tuple[int, ...], dtype: str) -> str | None:
        """Why an array of ``shape``/``dtype`` does not fit this spec, or None if it does."""
        if dtype != self.dtype:
            return f"{self.name}: dtype {dtype}, expected {self.dtype}"
        if len(shape) != len(self.shape):
            return f"{self.name}: rank {len(shape)} {tuple(shape)}, expected {self.shape}"
        for axis, (got, want) in enumerate(zip(shape, self.shape)):
            if isinstance(want, int) and got != want:
                return f"{self.name}: axis {axis} is {got}, expected {want} (shape {tuple(shape)})"
        return None


@dataclass(frozen=True)
class GraphSpec:
    """A graph's interface: ordered inputs and outputs, and the validation tolerance per output."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    atol: dict[str, float] = field(default_factory=dict)
    # Sizes of dynamic axes used to make dummy inputs for tracing; never 1, so that no axis is frozen.
    trace_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def input(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(f"{self.name} has no input {name!r}; inputs: {self.input_names}")

    def output(self, name: str) -> TensorSpec:
        for t in self.outputs:
            if t.name == name:
                return t
        raise KeyError(f"{self.name} has no output {name!r}; outputs: {self.output_names}")

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """{tensor name: {axis: symbol}} over inputs and outputs (torch.onnx.export's format)."""
        out = {}
        for t in (*self.inputs, *self.outputs):
            if t.dynamic_axes:
                out[t.name] = t.dynamic_axes
        return out

    def sample(self, sizes: dict[str, int] | None = None, rng: Any = None, *,
               shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, Any]:
        """Valid numpy inputs {name: array}: dynamic axes from ``sizes`` (default ``trace_sizes``)
        or each input's shape from ``shapes`` (e.g. a TensorRT profile's opt shapes), values from its
        :class:`Values` (``rng``: a numpy Generator, default seed 0). An integer input that declares
        no values is an error, so a new spec must say what its indices may be."""
        import numpy as np

        rng = np.random.default_rng(0) if rng is None else rng
        sizes = self.trace_sizes if sizes is None else sizes
        feed = {}
        for t in self.inputs:
            shape = tuple(shapes[t.name]) if shapes is not None else t.concrete(sizes)
            try:
                feed[t.name] = t.values.sample(shape, t.dtype, rng)
            except ValueError as e:
                raise ValueError(f"{self.name}: input {t.name!r}: {e}") from None
        return feed

    def io_problems(self, io: dict[str, tuple[str, str | None]], where: str) -> list[str]:
        """Every difference between a graph's or engine's IO, {name: ("input"|"output", dtype or None)},
        and this spec: missing and undeclared names per kind, and dtypes (where given)."""
        problems = []
        for mode, tensors in (("input", self.inputs), ("output", self.outputs)):
            want = {t.name: t.dtype for t in tensors}
            got = {n: d for n, (m, d) in io.items() if m == mode}
            missing = [n for n in want if n not in got]
            extra = [n for n in got if n not in want]
            if missing:
                problems.append(f"{where} {mode}s missing {missing} (spec {mode}s: {list(want)})")
            if extra:
                problems.append(f"{where} {mode}s {extra} are not in the spec (spec {mode}s: {list(want)})")
            for name, dtype in got.items():
                if name in want and dtype is not None and dtype != want[name]:
                    problems.append(f"{mode} {name}: dtype {dtype} in the {where}, spec says {want[name]}")
        return problems

    def symbols(self) -> set[str]:
        return {d for t in (*self.inputs, *self.outputs) for d in t.shape if isinstance(d, str)}

    def check_feed(self, feed: dict[str, tuple[tuple[int, ...], str]]) -> list[str]:
        """Every problem with a feed given as {name: (shape, dtype)}: missing/unknown names, shapes."""
        problems = []
        missing = [n for n in self.input_names if n not in feed]
        unknown = [n for n in feed if n not in self.input_names]
        if missing:
            problems.append(f"missing inputs {missing}")
        if unknown:
            problems.append(f"unknown inputs {unknown}")
        for t in self.inputs:
            if t.name in feed:
                why = t.check(*feed[t.name])
                if why:
                    problems.append(why)
        # A symbol must have one size across all inputs of one call.
        seen: dict[str, tuple[int, str]] = {}
        for t in self.inputs:
            if t.name not in feed:
                continue
            shape = feed[t.name][0]
            for axis, d in enumerate(t.shape):
                if isinstance(d, str) and axis < len(shape):
                    if d in seen and seen[d][0] != shape[axis]:
                        problems.append(
                            f"{d} is {seen[d][0]} in {seen[d][1]} but {shape[axis]} in {t.name}"
                        )
                    seen.setdefault(d, (shape[axis], t.name))
        return problems


@dataclass(frozen=True)
class SpecDims:
    """Config-dependent fixed sizes that the specs are resolved with."""

    image_size: int = 1024
    backbone_stride: int = 16
    hidden_dim: int = 256
    mem_dim: int = 64
    text_dim: int = 512
    num_maskmem: int = 7  # rows of SAM2's maskmem_tpos_enc table (memory_tpos_idx < this)
    # Hiera's trunk: patch-embedding stride, channels and token-grid scale of each level it returns,
    # and the alignment unit of encoder regions in patch tokens (export/encoder_region.py)
    patch_stride: int = 4
    patch_kernel: int = 7
    patch_padding: int = 3
    trunk_channels: tuple[int, ...] = (96, 192, 384, 768)
    trunk_scales: tuple[int, ...] = (1, 2, 4, 8)
    encoder_align: int = 56

    @property
    def feat_size(self) -> int:
        return self.image_size // self.backbone_stride

    def region_pixels(self, tokens: int) -> int:
        """Pixels the patch embedding reads for ``tokens`` consecutive tokens (a stride each, plus
        the rest of the last one's kernel): the side of a rectangle's image crop."""
        return self.patch_stride * tokens + self.patch_kernel - self.patch_stride

    def region_first_pixel(self, token: int) -> int:
        """The first pixel the patch embedding reads for ``token`` (negative: in its padding)."""
        return self.patch_stride * token - self.patch_padding

    @property
    def mask_size(self) -> int:
        """Side of SAM's low-resolution mask logits (4x the feature grid)."""
        return 4 * self.feat_size

    @property
    def patch_tokens(self) -> int:
        """Side of the trunk's first token grid (image size / patch stride)."""
        return self.image_size // self.patch_stride

    @property
    def region_sides(self) -> list[int]:
        """Every side (patch tokens) an encoder-region rectangle can have (:func:`region_token_sizes`)."""
        return region_token_sizes(self.patch_tokens, self.encoder_align)


IMAGE_ENCODER = "image_encoder"
ROUTER = "router"
MEMORY_ATTENTION = "memory_attention"
MASK_DECODER = "mask_decoder"
MEMORY_ENCODER = "memory_encoder"
GRAPH_NAMES = (IMAGE_ENCODER, ROUTER, MEMORY_ATTENTION, MASK_DECODER, MEMORY_ENCODER)
REQUIRED_GRAPHS = (IMAGE_ENCODER, MEMORY_ATTENTION, MASK_DECODER, MEMORY_ENCODER)  # the router is optional
# The image encoder in three graphs, for frames encoded on a rectangle (TrackerOptions.encoder_region):
# patch + position embedding of any unit-aligned rectangle of the frame's tokens, the trunk's blocks
# on those tokens, and the neck + the decoder's high-res projections of the trunk's levels on that
# rectangle. Optional (fastsam2-export --encoder-region); on a whole frame they compute what
# IMAGE_ENCODER computes.
ENCODER_EMBED = "encoder_embed"
ENCODER_TRUNK = "encoder_trunk"
ENCODER_HEAD = "encoder_head"
REGION_GRAPHS = (ENCODER_EMBED, ENCODER_TRUNK, ENCODER_HEAD)


def graph_specs(dims: SpecDims = SpecDims()) -> dict[str, GraphSpec]:
    """All graph specs of a model with the given fixed sizes, keyed by graph name."""
    S, C, Cm = dims.image_size, dims.hidden_dim, dims.mem_dim
    H = W = dims.feat_size
    HM = WM = dims.mask_size
    f32, i64, i32 = "float32", "int64", "int32"
    B, K, M, P, N = BATCH, KEPT, MEMORY, POINTERS, POINTS
    tokens = Values("indices", 0, H * W)  # distinct grid positions, ascending

    image_encoder = GraphSpec(
        name=IMAGE_ENCODER,
        inputs=(TensorSpec("image", f32, (B, 3, S, S)),),
        outputs=(
            # FPN levels 0 and 1 already projected by the mask decoder's conv_s0 / conv_s1,
            # as SAM2's forward_image does, so that the decoder never recomputes them.
            TensorSpec("fpn_s0", f32, (B, C // 8, 4 * H, 4 * W)),
            TensorSpec("fpn_s1", f32, (B, C // 4, 2 * H, 2 * W)),
            TensorSpec("vision_feats", f32, (B, C, H, W)),
        ),
        atol={"fpn_s0": 1e-3, "fpn_s1": 1e-3, "vision_feats": 1e-3},
        trace_sizes={B: 2},
    )
    router = GraphSpec(
        name=ROUTER,
        inputs=(
            TensorSpec("vision_feats", f32, (B, C, H, W)),
            # CLIP text embedding already projected to the visual width (zeros: no text).
            TensorSpec("projected_text", f32, (B, C)),
            TensorSpec("prev_mask_logits", f32, (B, 1, HM, WM)),
        ),
        outputs=(TensorSpec("token_scores", f32, (B, H * W)),),
        atol={"token_scores": 1e-5},
        trace_sizes={B: 2},
    )
    memory_attention = GraphSpec(
        name=MEMORY_ATTENTION,
        inputs=(
            TensorSpec("vision_feats", f32, (B, C, H, W)),
            # Grid positions (row-major index into H*W) of the tokens that attend to memory, per
            # object: objects batched in one call keep different tokens (same count K).
            TensorSpec("kept_idx", i64, (B, K), tokens),
            TensorSpec("memory", f32, (B, M, Cm)),
            TensorSpec("memory_pos_idx", i64, (B, M), Values("ints", 0, H * W)),
            # Index into SAM2's maskmem_tpos_enc table for each memory token.
            TensorSpec("memory_tpos_idx", i64, (B, M), Values("ints", 0, dims.num_maskmem)),
            TensorSpec("obj_ptrs", f32, (B, P, C)),
            # Signed temporal distance of each pointer, already divided by (max pointers - 1).
            TensorSpec("obj_ptr_tpos", f32, (B, P), Values("uniform", -1.0, 1.0)),
        ),
        outputs=(TensorSpec("pix_feat", f32, (B, C, H, W)),),
        atol={"pix_feat": 2e-3},
        trace_sizes={B: 2, K: 3 * W + 5, M: 2 * H * W + 7, P: 3},
    )
    mask_decoder = GraphSpec(
        name=MASK_DECODER,
        inputs=(
            TensorSpec("pix_feat", f32, (B, C, H, W)),
            TensorSpec("fpn_s0", f32, (B, C // 8, 4 * H, 4 * W)),
            TensorSpec("fpn_s1", f32, (B, C // 4, 2 * H, 2 * W)),
            # Point prompts in model-input pixels (0..S); labels 1 pos, 0 neg, 2/3 box corners, -1 pad.
            TensorSpec("point_coords", f32, (B, N, 2), Values("uniform", 0.0, S)),
            TensorSpec("point_labels", i32, (B, N), Values("choice", choices=(-1, 0, 1, 2, 3))),
            TensorSpec("mask_input", f32, (B, 1, HM, WM)),
            TensorSpec("has_mask_input", f32, (B,), FLAG),
            TensorSpec("multimask_output", f32, (1,), FLAG),
        ),
        outputs=(
            TensorSpec("low_res_masks", f32, (B, 1, HM, WM)),
            TensorSpec("iou_scores", f32, (B, 1)),
            TensorSpec("obj_ptr", f32, (B, C)),
            TensorSpec("object_score_logits", f32, (B, 1)),
            TensorSpec("low_res_multimasks", f32, (B, 3, HM, WM)),
            TensorSpec("multimask_iou_scores", f32, (B, 3)),
        ),
        atol={
            "low_res_masks": 2e-3,
            "iou_scores": 1e-4,
            "obj_ptr": 1e-4,
            "object_score_logits": 1e-4,
            "low_res_multimasks": 2e-3,
            "multimask_iou_scores": 1e-4,
        },
        trace_sizes={B: 2, N: 3},
    )
    memory_encoder = GraphSpec(
        name=MEMORY_ENCODER,
        inputs=(
            TensorSpec("vision_feats", f32, (B, C, H, W)),
            TensorSpec("mask_logits", f32, (B, 1, HM, WM)),
            TensorSpec("object_score_logits", f32, (B, 1)),
            # 1.0 where the mask came from user clicks and SAM2 binarizes it for the memory.
            TensorSpec("binarize", f32, (B,), FLAG),
            TensorSpec("kept_idx", i64, (B, K), tokens),
        ),
        outputs=(TensorSpec("memory", f32, (B, K, Cm)),),
        atol={"memory": 1e-3},
        trace_sizes={B: 2, K: 3 * W + 5},
    )
    T, C0 = dims.patch_tokens, dims.trunk_channels[0]
    levels = list(zip(dims.trunk_channels, dims.trunk_scales))
    level_names = [f"level{i}" for i in range(len(levels))]
    encoder_outputs = image_encoder.outputs
    rows, cols = region_trace_sizes(T, dims.encoder_align)
    region_trace = {B: 2, **region_axes(rows, cols, dims)}
    encoder_embed = GraphSpec(
        name=ENCODER_EMBED,
        inputs=(
            # the frame's pixels under a rectangle of tokens, with the patch embedding's halo (its
            # padding before the first token, zeros beyond the frame: SpecDims.region_pixels)
            TensorSpec("image", f32, (B, 3, *(region_pixels_symbol(a) for a in (REGION_ROWS, REGION_COLS)))),
            # the rectangle's token rows and columns in the frame's grid (its position embedding)
            TensorSpec("rows", i64, (B, REGION_ROWS), Values("ints", 0, T)),
            TensorSpec("cols", i64, (B, REGION_COLS), Values("ints", 0, T)),
        ),
        # patch-embedded tokens plus Hiera's position embedding, channels last as its blocks take them
        outputs=(TensorSpec("tokens", f32, (B, REGION_ROWS, REGION_COLS, C0)),),
        atol={"tokens": 1e-4},
        trace_sizes=region_trace,
    )
    encoder_trunk = GraphSpec(
        name=ENCODER_TRUNK,
        inputs=(TensorSpec("tokens", f32, (B, REGION_ROWS, REGION_COLS, C0)),),
        outputs=tuple(
            TensorSpec(n, f32, (B, c, region_symbol(REGION_ROWS, sc), region_symbol(REGION_COLS, sc)))
            for n, (c, sc) in zip(level_names, levels)
        ),
        atol={n: 2e-3 for n in level_names},
        trace_sizes={B: 2, REGION_ROWS: rows, REGION_COLS: cols},
    )
    # the head is pointwise but for the neck's nearest top-down upsampling (one level to the next),
    # so it runs on the trunk's rectangle as well as on whole frames; its outputs are at the scales
    # of the first three levels (image_encoder's fpn_s0, fpn_s1, vision_feats on a whole frame)
    region = [tuple(region_symbol(a, sc) for a in (REGION_ROWS, REGION_COLS)) for _, sc in levels]
    encoder_head = GraphSpec(
        name=ENCODER_HEAD,
        inputs=tuple(TensorSpec(n, f32, (B, c, *hw)) for n, (c, _), hw in zip(level_names, levels, region)),
        outputs=tuple(TensorSpec(t.name, t.dtype, (*t.shape[:2], *hw)) for t, hw in zip(encoder_outputs, region)),
        atol=dict(image_encoder.atol),
        trace_sizes=region_trace,
    )
    return {
        s.name: s for s in (image_encoder, router, memory_attention, mask_decoder, memory_encoder,
                            encoder_embed, encoder_trunk, encoder_head)
    }
