"""TensorRT optimization profiles derived from the graph specs and the model config.

A profile is data: ``{input name: (min, opt, max)}``. Nothing here is written per graph: every input's
shapes come from its spec shape, with each named dynamic axis (``runtime/specs.py`` symbols BATCH,
KEPT, MEMORY, POINTERS, POINTS) replaced by the symbol's (min, opt, max) from :func:`symbol_ranges`.

Sizes, for the default 1024 px model (H*W = 64*64 = 4096 tokens, num_maskmem=7,
max_obj_ptrs_in_encoder=16, min_keep=0.1, max_cond_frames=4, max_points=16, max_batch=1):

==========  ===================  ========================  ========================
symbol      min                  opt desktop / edge         max desktop / edge
==========  ===================  ========================  ========================
batch       1                    1 / 1                      max_batch
kept        ceil(0.1*4096)=410   0.5*4096=2048 / 0.3*4096   4096
memory      410 (1 frame)        1 prompted frame (all tokens) + 6 frames at opt keep 10 frames / 8 frames
            (16384 / 11470)      (40960 / 32768)
pointers    1                    16 / 16                    19 / 17
points      1                    1                          16
region      32                   144                        256
==========  ===================  ========================  ========================

``region`` (rows and columns of the encoder trunk's rectangle, in patch tokens): every side a
unit-aligned rectangle can have (``specs.region_token_sizes``), from the smallest to the whole grid.

Memory frames: SAM2 attends to ``num_maskmem - 1`` recent non-conditioning frames plus the
conditioning frames. "desktop" allows ``max_cond_frames`` (4) conditioning frames: (7 - 1 + 4) frames
of up to H*W tokens each. "edge" (Jetson Orin, 8-64 GB shared memory) caps the conditioning frames
in attention at :data:`EDGE_MAX_COND_FRAMES` (2): (7 - 1 + 2) * 4096 = 32768 memory tokens, which
keeps the memory-attention cross-attention activations at 4/5 of the desktop size; the tracker must
then set ``max_cond_frames_in_attn`` to 2 (read it from :func:`symbol_ranges` / ``ProfileLimits``).
Pointers: up to ``max_obj_ptrs_in_encoder - 1`` past frames plus the conditioning frames.
Points: the user's points (a box counts as two points with labels 2/3). SAM2's
``PromptEncoder._embed_points`` appends its one padding point (label -1) inside the graph when no box
tensor is given, which is always the case here, so the graph input carries the user's count and a
tracking frame without prompts feeds one point with label -1, as SAM2's ``_forward_sam_heads`` does:
hence min 1, opt 1 (most frames are tracking frames).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple

from ..config import ModelConfig
from ..specs import BATCH, KEPT, MEMORY, POINTERS, POINTS, GraphSpec, region_axes

KINDS = ("desktop", "edge")
# Fraction of the H*W tokens kept by the router at the profile's opt shape.
OPT_KEEP = {"desktop": 0.5, "edge": 0.3}
# Conditioning frames that memory attention may see on the edge (Jetson Orin) profile.
EDGE_MAX_COND_FRAMES = 2

Shape = tuple[int, ...]


class ShapeTuple(NamedTuple):
    """min / opt / max shapes of one input."""

    min: Shape
    opt: Shape
    max: Shape


class Profile:
    """One optimization profile: an ordered ``{input name: ShapeTuple(min, opt, max)}``.

    ``Profile().add("memory", (1, 410, 64), (1, 16384, 64), (1, 40960, 64))``; :meth:`add` validates
    ranks and ``min <= opt <= max`` per axis and returns ``self`` so calls chain.
    """

    def __init__(self, shapes: Iterable[tuple[str, Iterable]] | None = None):
        self._shapes: OrderedDict[str, ShapeTuple] = OrderedDict()
        for name, (lo, opt, hi) in shapes or ():
            self.add(name, lo, opt, hi)

    def add(self, name: str, min: Iterable[int], opt: Iterable[int], max: Iterable[int]) -> "Profile":
        lo, mid, hi = tuple(int(d) for d in min), tuple(int(d) for d in opt), tuple(int(d) for d in max)
        if not (len(lo) == len(mid) == len(hi)):
            raise ValueError(f"profile input {name!r}: ranks differ: min {lo}, opt {mid}, max {hi}")
        for axis, (a, b, c) in enumerate(zip(lo, mid, hi)):
            if a < 0 or not (a <= b <= c):
                raise ValueError(
                    f"profile input {name!r}: axis {axis} needs 0 <= min <= opt <= max, "
                    f"got min {lo}, opt {mid}, max {hi}"
                )
        self._shapes[name] = ShapeTuple(lo, mid, hi)
        return self

    def __getitem__(self, name: str) -> ShapeTuple:
        return self._shapes[name]

    def __contains__(self, name: object) -> bool:
        return name in self._shapes

    def __iter__(self) -> Iterator[str]:
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Profile) and list(self.items()) == list(other.items())

    def items(self):
        return self._shapes.items()

    def shapes(self, which: str) -> dict[str, Shape]:
        """{input name: shape} for ``which`` in ("min", "opt", "max")."""
        if which not in ShapeTuple._fields:
            raise ValueError(f"which must be one of {ShapeTuple._fields}, got {which!r}")
        return {name: getattr(t, which) for name, t in self._shapes.items()}

    def to_json(self) -> dict[str, dict[str, list[int]]]:
        return {n: {"min": list(t.min), "opt": list(t.opt), "max": list(t.max)} for n, t in self.items()}

    @classmethod
    def from_json(cls, data: dict) -> "Profile":
        return cls((n, (v["min"], v["opt"], v["max"])) for n, v in data.items())

    def __repr__(self) -> str:
        body = ", ".join(f"{n}: min={t.min} opt={t.opt} max={t.max}" for n, t in self.items())
        return f"Profile({body})"


@dataclass(frozen=True)
class ProfileLimits:
    """(min, opt, max) of every dynamic-axis symbol, plus the frame counts they were derived from
    (the tracker must keep its memory bank within ``max_memory_frames``)."""

    ranges: dict[str, tuple[int, int, int]]
    max_memory_frames: int
    max_cond_frames: int


def symbol_ranges(
    config: ModelConfig,
    *,
    kind: str = "desktop",
    min_keep: float = 0.1,
    max_cond_frames: int = 4,
    max_points: int = 16,
    max_batch: int = 1,
) -> ProfileLimits:
    """(min, opt, max) of each dynamic-axis symbol for ``config`` (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not 0.0 < min_keep <= 1.0:
        raise ValueError(f"min_keep must be in (0, 1], got {min_keep}")
    for name, value in (("max_cond_frames", max_cond_frames), ("max_points", max_points), ("max_batch", max_batch)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    hw = config.num_tokens
    keep_min = math.ceil(min_keep * hw)
    keep_opt = min(hw, max(keep_min, round(OPT_KEEP[kind] * hw)))
    cond = max_cond_frames if kind == "desktop" else min(max_cond_frames, EDGE_MAX_COND_FRAMES)
    recent = config.num_maskmem - 1
    max_frames = recent + cond
    # Steady state: one conditioning frame with every token (prompted frames are not pruned) plus
    # all recent frames at the opt keep ratio.
    max_ptrs = cond + config.max_obj_ptrs_in_encoder - 1
    opt_ptrs = min(max_ptrs, config.max_obj_ptrs_in_encoder)
    ranges = {
        BATCH: (1, 1, max_batch),
        KEPT: (keep_min, keep_opt, hw),
        MEMORY: (keep_min, hw + recent * keep_opt, max_frames * hw),
        POINTERS: (1, opt_ptrs, max_ptrs),
        POINTS: (1, 1, max_points),
    }
    # the encoder trunk on a rectangle: from its smallest side to the whole grid, opt the middle side
    sides = config.spec_dims().region_sides
    side = (sides[0], sides[len(sides) // 2], sides[-1])
    axes = [region_axes(v, v, config.spec_dims()) for v in side]
    ranges.update({sym: (axes[0][sym], axes[1][sym], axes[2][sym]) for sym in axes[0]})
    return ProfileLimits(ranges=ranges, max_memory_frames=max_frames, max_cond_frames=cond)


def profiles_for(
    spec: GraphSpec,
    config: ModelConfig,
    *,
    kind: str = "desktop",
    min_keep: float = 0.1,
    max_cond_frames: int = 4,
    max_points: int = 16,
    max_batch: int = 1,
) -> list[Profile]:
    """The optimization profiles of one graph: one profile covering every input of ``spec``.

    Fixed inputs get min = opt = max; every dynamic axis takes its symbol's range.
    """
    limits = symbol_ranges(
        config,
        kind=kind,
        min_keep=min_keep,
        max_cond_frames=max_cond_frames,
        max_points=max_points,
        max_batch=max_batch,
    )
    unknown = sorted(spec.symbols() - set(limits.ranges))
    if unknown:
        raise ValueError(f"{spec.name}: no profile range for dynamic axes {unknown}")
    lo = {s: r[0] for s, r in limits.ranges.items()}
    mid = {s: r[1] for s, r in limits.ranges.items()}
    hi = {s: r[2] for s, r in limits.ranges.items()}
    profile = Profile()
    for t in spec.inputs:
        profile.add(t.name, t.concrete(lo), t.concrete(mid), t.concrete(hi))
    check_profiles_cover(spec, [profile])
    return [profile]


def profile_problems(spec: GraphSpec, profiles: list[Profile]) -> list[str]:
    """Every way ``profiles`` fail to cover ``spec``'s inputs (empty when they do)."""
    if not profiles:
        dynamic = [t.name for t in spec.inputs if t.dynamic_axes]
        return [f"no optimization profile; dynamic inputs {dynamic} are uncovered"] if dynamic else []
    problems = []
    for i, profile in enumerate(profiles):
        where = f"profile {i}"
        uncovered = [t.name for t in spec.inputs if t.dynamic_axes and t.name not in profile]
        if uncovered:
            problems.append(f"{where}: uncovered dynamic inputs {uncovered}")
        unknown = [n for n in profile if n not in spec.input_names]
        if unknown:
            problems.append(f"{where}: inputs {unknown} are not inputs of {spec.name}")
        for t in spec.inputs:
            if t.name not in profile:
                continue
            shapes = profile[t.name]
            if len(shapes.min) != len(t.shape):
                problems.append(f"{where}: {t.name} has rank {len(shapes.min)}, spec shape is {t.shape}")
                continue
            for axis, want in enumerate(t.shape):
                if isinstance(want, int) and {shapes.min[axis], shapes.opt[axis], shapes.max[axis]} != {want}:
                    problems.append(
                        f"{where}: {t.name} axis {axis} is fixed at {want} in the spec, "
                        f"profile has min {shapes.min}, opt {shapes.opt}, max {shapes.max}"
                    )
        # One symbol, one range within a profile: TensorRT would reject mismatched K between inputs.
        seen: dict[str, tuple[tuple[int, int, int], str]] = {}
        for t in spec.inputs:
            if t.name not in profile or len(profile[t.name].min) != len(t.shape):
                continue
            shapes = profile[t.name]
            for axis, sym in t.dynamic_axes.items():
                rng = (shapes.min[axis], shapes.opt[axis], shapes.max[axis])
                if sym in seen and seen[sym][0] != rng:
                    problems.append(
                        f"{where}: {sym} is {seen[sym][0]} in {seen[sym][1]} but {rng} in {t.name}"
                    )
                seen.setdefault(sym, (rng, t.name))
    return problems


def check_profiles_cover(spec: GraphSpec, profiles: list[Profile]) -> None:
    """Raise ValueError listing every dynamic input of ``spec`` that ``profiles`` leave uncovered
    (and any fixed axis a profile gets wrong)."""
    problems = profile_problems(spec, profiles)
    if problems:
        raise ValueError(f"{spec.name}: optimization profiles do not cover the spec: " + "; ".join(problems))
