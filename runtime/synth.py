"""Generated videos with exact ground truth: moving shapes over photographs and procedural textures.

Every clip is fixed by its seed: ``make_clip(seed, split=..., index=...)`` draws everything from one
``np.random.default_rng`` seeded by (seed, split, index), so the same arguments give the same pixels on
any machine. A clip holds 1-3 annotated *targets* (ids 1..K) and unannotated *distractors*, each sharing
a target's colour or shape. Shapes (circle, ellipse, rectangle, triangle, star, ring, cross, blob) are
filled with a solid colour, stripes, a checker or value noise; they translate (velocity plus jitter),
scale, rotate and drift in colour and brightness; they occlude one another by depth order and leave and
re-enter the frame. The background is a crop of the bundled sample photographs
(``runtime/data/sample``) or a procedural texture (gradient, value noise, stripes), panned slightly;
the whole frame gets a lighting change and, in some clips, blur.

The annotation of frame t is the id of the *visible* target at each pixel (0: background or a
distractor): exactly the pixels where that target's colour was written before the global lighting and
blur. Frame 0 shows every target with at least :data:`MIN_FIRST_FRAME_AREA` of the image, so a tracker
can be prompted there.

Splits: ``train`` (moderate) and ``hard`` (held out: more distractors sharing a target's colour and
shape, faster motion and spin, more occluders crossing the targets, longer default clips).

numpy and PIL only: it runs in the runtime install and in data-loader worker processes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import UsageError

GENERATOR_VERSION = 1
SPLITS = ("train", "hard")
DEFAULT_FRAMES = {"train": 8, "hard": 24}
MIN_SIZE = 64
MAX_SIZE = 4096  # 48 MiB an RGB frame; much larger sides exhaust memory before a frame is written
MAX_TARGETS = 3
MIN_FIRST_FRAME_AREA = 0.003
"""Fraction of the image each target covers (visible) in frame 0, at least."""
JPEG_QUALITY = 95
SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "sample"

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 60),
    "blue": (35, 75, 215),
    "yellow": (240, 215, 40),
    "orange": (245, 135, 25),
    "purple": (135, 50, 185),
    "pink": (245, 125, 185),
    "cyan": (40, 200, 215),
    "white": (245, 245, 245),
    "black": (22, 22, 22),
    "brown": (125, 80, 40),
    "gray": (128, 128, 128),
}
SHAPES = ("circle", "ellipse", "rectangle", "triangle", "star", "ring", "cross", "blob")
TEXTURES = ("solid", "stripes", "checker", "noise")
_SPLIT_CODE = {"train": 0, "hard": 1}
_NOISE_TILE = 64  # a power of two: tile coordinates wrap with a bit mask
_NOISE_LEVELS = 16


@dataclass(frozen=True)
class SynthClip:
    """One generated clip.

    frames: (T, H, W, 3) uint8 RGB. masks: (T, H, W) uint8 object ids (0 background, 1..K the
    annotated targets; only the visible part of each). labels: {object id: "<colour> <shape>"}.
    """

    frames: np.ndarray
    masks: np.ndarray
    labels: dict[int, str]
    name: str


@dataclass(frozen=True)
class SplitParams:
    """What distinguishes a split. Lengths are fractions of the image's shorter side (per frame for
    speeds), angles radians; (lo, hi) pairs are uniform ranges."""

    distractors: tuple[int, int]       # count, inclusive
    p_same_both: float                 # a distractor copies a target's colour AND shape
    radius: tuple[float, float]
    speed: tuple[float, float]
    jitter: float
    scale_rate: float                  # |d log scale / frame| at most
    spin: float                        # |rotation per frame| at most
    drift: float                       # |brightness change per frame| at most
    exit_margin: float                 # how far past the border a centre may travel
    p_cross: float                     # per target: an occluder crosses it mid-clip
    cross_frames: tuple[float, float]  # frames an occluder takes to pass over a target
    p_photo: float                     # background from the sample photographs
    p_blur: float
    max_blur: float                    # radius in pixels at 512 px
    light: float                       # amplitude of the global gain change
    pan: float                         # camera pan speed


_SPLIT_PARAMS = {
    "train": SplitParams(distractors=(1, 3), p_same_both=0.0, radius=(0.06, 0.15), speed=(0.004, 0.018),
                         jitter=0.002, scale_rate=0.03, spin=0.08, drift=0.015, exit_margin=0.15,
                         p_cross=0.3, cross_frames=(2, 4), p_photo=0.5, p_blur=0.3, max_blur=1.2, light=0.12, pan=0.004),
    "hard": SplitParams(distractors=(3, 6), p_same_both=0.3, radius=(0.05, 0.13), speed=(0.012, 0.04),
                        jitter=0.004, scale_rate=0.05, spin=0.2, drift=0.025, exit_margin=0.3,
                        p_cross=0.8, cross_frames=(4, 10), p_photo=0.5, p_blur=0.5, max_blur=2.0, light=0.25, pan=0.008),
}


def split_params(split: str) -> SplitParams:
    """The :class:`SplitParams` of ``split`` ("train" or "hard")."""
    _check_split(split)
    return _SPLIT_PARAMS[split]


# -- shapes -----------------------------------------------------------------------------------------
def _ellipse(n: int, aspect: float) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(t), aspect * np.sin(t)], axis=1)


def _outline(rng: np.random.Generator, shape: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(outer polygon, hole polygon or None) in units of the object's radius, centred at 0: (N, 2) x, y."""
    if shape == "circle":
        return _ellipse(48, 1.0), None
    if shape == "ellipse":
        return _ellipse(48, rng.uniform(0.45, 0.75)), None
    if shape == "rectangle":
        a = rng.uniform(0.4, 1.0)
        return np.array([[-1, -a], [1, -a], [1, a], [-1, a]], dtype=np.float64) * 0.85, None
    if shape == "triangle":
        t = np.pi / 2 + np.array([0, 2, 4]) * np.pi / 3 + rng.uniform(-0.25, 0.25, 3)
        return np.stack([np.cos(t), np.sin(t)], axis=1), None
    if shape == "star":
        n = 5
        t = np.arange(2 * n) * np.pi / n
        r = np.where(np.arange(2 * n) % 2 == 0, 1.0, rng.uniform(0.42, 0.55))
        return np.stack([r * np.cos(t), r * np.sin(t)], axis=1), None
    if shape == "ring":
        return _ellipse(48, 1.0), _ellipse(40, 1.0) * rng.uniform(0.45, 0.62)
    if shape == "cross":
        w = rng.uniform(0.28, 0.4)
        pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w),
               (-1, -w), (-w, -w)]
        return np.array(pts, dtype=np.float64), None
    if shape == "blob":
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        r = np.ones_like(t)
        for k in (2, 3, 4):
            r += rng.uniform(0.05, 0.22) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
        r /= r.max()
        return np.stack([r * np.cos(t), r * np.sin(t)], axis=1), None
    raise ValueError(f"unknown shape {shape!r}")


@dataclass(eq=False)
class _Object:
    obj_id: int                     # 0: a distractor (drawn, not annotated)
    shape: str
    colour: str
    rgb: np.ndarray                 # (3,) float, base colour
    rgb2: np.ndarray                # (3,) float, the texture's second colour
    texture: str
    tex_freq: float                 # stripes / checker cells per radius
    tex_angle: float
    noise: np.ndarray | None        # (_NOISE_TILE, _NOISE_TILE) int32 shade index in [0, _NOISE_LEVELS)
    radius: float                   # pixels
    outer: np.ndarray
    hole: np.ndarray | None
    pos: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))   # (T, 2) centre x, y (world)
    scale: np.ndarray = field(default_factory=lambda: np.zeros(0))     # (T,)
    angle: np.ndarray = field(default_factory=lambda: np.zeros(0))     # (T,)
    gain: np.ndarray = field(default_factory=lambda: np.zeros(0))      # (T,) brightness
    shift: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (T, 3) colour offset

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"


def _new_object(rng: np.random.Generator, obj_id: int, shape: str, colour: str, radius: float) -> _Object:
    rgb = np.clip(np.array(COLOURS[colour], dtype=np.float64) + rng.uniform(-12, 12, 3), 0, 255)
    texture = str(rng.choice(TEXTURES, p=[0.4, 0.2, 0.2, 0.2]))
    # The second colour is a shade of the first, so "<colour>" stays the right name.
    if rng.random() < 0.5 or colour == "white":
        rgb2 = rgb * rng.uniform(0.35, 0.65)
    else:
        rgb2 = rgb + (255 - rgb) * rng.uniform(0.35, 0.6)
    noise = None
    if texture == "noise":
        coarse = rng.random((8, 8)).astype(np.float32)
        fine = _upsample(coarse, _NOISE_TILE, _NOISE_TILE)
        noise = np.minimum(fine * _NOISE_LEVELS, _NOISE_LEVELS - 1).astype(np.int32)
    outer, hole = _outline(rng, shape)
    return _Object(obj_id=obj_id, shape=shape, colour=colour, rgb=rgb, rgb2=rgb2, texture=texture,
                   tex_freq=float(rng.uniform(1.5, 4.0)), tex_angle=float(rng.uniform(0, np.pi)),
                   noise=noise, radius=radius, outer=outer, hole=hole)


def _upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """A float [h, w] grid in [0, 1] resized smoothly to [height, width] (value noise)."""
    from PIL import Image

    im = Image.fromarray(np.round(grid * 255).astype(np.uint8))
    return np.asarray(im.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0


# -- motion -----------------------------------------------------------------------------------------
def _trajectory(rng: np.random.Generator, start: np.ndarray, frames: int, speed: float, jitter: float,
                lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(T, 2) centres: constant velocity with random acceleration and jitter, reflected at lo/hi."""
    a = rng.uniform(0, 2 * np.pi)
    vel = speed * np.array([np.cos(a), np.sin(a)])
    pos = np.empty((frames, 2))
    p = start.astype(np.float64).copy()
    for t in range(frames):
        pos[t] = p
        vel = vel + rng.normal(0, jitter * 0.5, 2)
        p = p + vel + rng.normal(0, jitter, 2)
        for ax in range(2):
            if p[ax] < lo[ax]:
                p[ax], vel[ax] = 2 * lo[ax] - p[ax], -vel[ax]
            elif p[ax] > hi[ax]:
                p[ax], vel[ax] = 2 * hi[ax] - p[ax], -vel[ax]
    return pos


def _animate(rng: np.random.Generator, obj: _Object, frames: int, params: SplitParams, unit: float,
             start: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    speed = rng.uniform(*params.speed) * unit
    obj.pos = _trajectory(rng, start, frames, speed, params.jitter * unit, lo, hi)
    rate = rng.uniform(-params.scale_rate, params.scale_rate)
    wobble = np.cumsum(rng.normal(0, params.scale_rate * 0.3, frames))
    log_scale = rate * np.arange(frames) + wobble - wobble[0]
    # An object's radius never grows past a quarter of the short side, nor below a third of its own.
    top = np.log(max(0.25 * unit / obj.radius, 1.0))
    obj.scale = np.exp(np.clip(log_scale, np.log(0.33), top))
    obj.angle = rng.uniform(0, 2 * np.pi) + rng.uniform(-params.spin, params.spin) * np.arange(frames)
    t = np.arange(frames)
    obj.gain = np.clip(1 + rng.uniform(-params.drift, params.drift) * t, 0.6, 1.4)
    obj.shift = np.clip(rng.uniform(-1.5, 1.5, 3)[None, :] * t[:, None], -30, 30)


# -- drawing ----------------------------------------------------------------------------------------
def _pixels(frame: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 frame viewed as (H, W) 3-byte items: one masked copy writes whole pixels,
    about three times faster than a copy through an (H, W, 1) mask."""
    return frame.view("V3")[..., 0]


def _draw(obj: _Object, t: int, pixels: np.ndarray | None, ids: np.ndarray, pan: np.ndarray) -> int:
    """Paint ``obj`` at frame ``t`` over ``pixels`` (a frame seen through :func:`_pixels`; None: ids
    only) and ``ids`` (H, W uint8: its id where painted); returns the pixels painted inside the frame."""
    from PIL import Image, ImageDraw

    height, width = ids.shape
    s = obj.radius * obj.scale[t]
    a = obj.angle[t]
    cx, cy = obj.pos[t] - pan
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])  # row vectors: p @ rot
    outer = obj.outer @ rot * s + (cx, cy)
    lo, hi = outer.min(axis=0), outer.max(axis=0)
    x0, y0 = max(math.floor(lo[0]), 0), max(math.floor(lo[1]), 0)
    x1, y1 = min(math.ceil(hi[0]) + 1, width), min(math.ceil(hi[1]) + 1, height)
    if x1 <= x0 or y1 <= y0:
        return 0
    sprite = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(sprite)
    draw.polygon((outer - (x0, y0)).ravel().tolist(), fill=1)
    if obj.hole is not None:
        hole = obj.hole @ rot * s + (cx - x0, cy - y0)
        draw.polygon(hole.ravel().tolist(), fill=0)
    mask = np.asarray(sprite).view(bool)
    area = int(np.count_nonzero(mask))
    if not area:
        return 0
    np.copyto(ids[y0:y1, x0:x1], np.uint8(obj.obj_id), where=mask)
    if pixels is None:
        return area
    colour = np.clip(obj.rgb * obj.gain[t] + obj.shift[t], 0, 255)
    region = pixels[y0:y1, x0:x1]
    if obj.texture == "solid":
        np.copyto(region, np.round(colour).astype(np.uint8).view("V3")[0], where=mask)
    else:
        colour2 = np.clip(obj.rgb2 * obj.gain[t] + obj.shift[t], 0, 255)
        index, levels = _texture_index(obj, a, s, cx - x0, cy - y0, mask.shape)
        shades = np.linspace(0.0, 1.0, levels)[:, None]
        palette = np.round(colour + (colour2 - colour) * shades).astype(np.uint8)
        np.copyto(region, palette.view("V3")[:, 0][index], where=mask)
    return area


def _texture_index(obj: _Object, a: float, s: float, cx: float, cy: float,
                   shape: tuple[int, int]) -> tuple[np.ndarray, int]:
    """(index [h, w] into ``levels`` shades from the first colour to the second, levels) over a sprite
    of ``shape``, in the object's own rotated and scaled coordinates so the texture moves, turns and
    grows with it."""
    dx = (np.arange(shape[1], dtype=np.float32) + np.float32(0.5 - cx))[None, :]
    dy = (np.arange(shape[0], dtype=np.float32) + np.float32(0.5 - cy))[:, None]
    c, sn = math.cos(a) / s, math.sin(a) / s
    if obj.texture == "stripes":
        ca, sa = math.cos(obj.tex_angle) * obj.tex_freq, math.sin(obj.tex_angle) * obj.tex_freq
        # d = (u cos + v sin) * freq with u = dx c + dy sn, v = dy c - dx sn
        d = dx * np.float32(c * ca - sn * sa) + dy * np.float32(sn * ca + c * sa)
        return np.floor(d).astype(np.int32) & 1, 2
    f = obj.tex_freq if obj.texture == "checker" else _NOISE_TILE / 4
    u = dx * np.float32(c * f) + dy * np.float32(sn * f)
    v = dy * np.float32(c * f) - dx * np.float32(sn * f)
    if obj.texture == "checker":
        return (np.floor(u).astype(np.int32) + np.floor(v).astype(np.int32)) & 1, 2
    iu = np.floor(u).astype(np.int32) & (_NOISE_TILE - 1)
    iv = np.floor(v).astype(np.int32) & (_NOISE_TILE - 1)
    return obj.noise[iv, iu], _NOISE_LEVELS


# -- backgrounds ------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _sample_photo(path: Path):
    """A decoded sample photograph (PIL RGB), decoded once per process (24 files, ~37 MB in all)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def sample_photos() -> list[Path]:
    """The bundled photographs backgrounds are cropped from (package data of fastsam2.runtime)."""
    return sorted(SAMPLE_DIR.glob("*.jpg"))


def _photo_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    from PIL import Image

    photos = sample_photos()
    if not photos:
        raise FileNotFoundError(f"no sample photographs in {SAMPLE_DIR} (package data missing)")
    im = _sample_photo(photos[int(rng.integers(len(photos)))])
    pw, ph = im.size
    # The largest crop of the output's aspect, then 45-100 % of it, anywhere in the photograph.
    zoom = min(pw / width, ph / height) * rng.uniform(0.45, 1.0)
    cw, ch = width * zoom, height * zoom
    left, top = rng.uniform(0, pw - cw), rng.uniform(0, ph - ch)
    crop = im.resize((width, height), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(crop)


def _procedural_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A gradient, optionally with value noise and soft stripes; computed at half size and resized
    (every part is smooth at that scale), which keeps it a few ms."""
    from PIL import Image

    h, w = (height + 1) // 2, (width + 1) // 2
    yy = (np.arange(h, dtype=np.float32) / h)[:, None]
    xx = (np.arange(w, dtype=np.float32) / w)[None, :]
    a = rng.uniform(0, 2 * np.pi)
    g = xx * np.float32(np.cos(a)) + yy * np.float32(np.sin(a))
    g = (g - g.min()) / max(float(g.max() - g.min()), 1e-6)
    c0, c1 = rng.uniform(20, 235, 3).astype(np.float32), rng.uniform(20, 235, 3).astype(np.float32)
    out = c0 + (c1 - c0) * g[..., None]
    kind = rng.random()
    if kind < 0.7:  # value noise, one or two octaves
        cells = int(rng.integers(3, 12))
        noise = _upsample(rng.random((cells, cells)).astype(np.float32), h, w)
        if rng.random() < 0.5:
            fine = _upsample(rng.random((cells * 4, cells * 4)).astype(np.float32), h, w)
            noise = 0.7 * noise + 0.3 * fine
        c2 = rng.uniform(20, 235, 3).astype(np.float32)
        out += (c2 - out) * (np.float32(rng.uniform(0.3, 0.8)) * noise[..., None])
    if kind > 0.5:  # soft stripes
        b = rng.uniform(0, np.pi)
        period = rng.uniform(0.04, 0.2)
        phase = (xx * np.float32(np.cos(b)) + yy * np.float32(np.sin(b))) * np.float32(2 * np.pi / period)
        bands = 0.5 + 0.5 * np.sin(phase)
        c3 = rng.uniform(20, 235, 3).astype(np.float32)
        out += (c3 - out) * (np.float32(rng.uniform(0.2, 0.5)) * bands[..., None])
    small = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    return np.asarray(small.resize((width, height), Image.Resampling.BILINEAR))


def _pan(rng: np.random.Generator, frames: int, margin: int, speed: float) -> np.ndarray:
    """(T, 2) integer window offsets (x, y) in [0, 2 * margin], moving at ``speed`` px/frame."""
    a = rng.uniform(0, 2 * np.pi)
    v = speed * rng.uniform(0.3, 1.0) * np.array([np.cos(a), np.sin(a)])
    p = margin + rng.uniform(-margin / 2, margin / 2, 2)
    out = np.empty((frames, 2), dtype=np.int64)
    for t in range(frames):
        out[t] = np.round(p)
        p = p + v
        for ax in range(2):
            if not 0 <= p[ax] <= 2 * margin:
                v[ax] = -v[ax]
                p[ax] = np.clip(p[ax], 0, 2 * margin)
    return out


# -- clips ------------------------------------------------------------------------------------------
def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")


def _check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        hw = (int(size), int(size))
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size):
        hw = (int(size[0]), int(size[1]))
    else:
        raise UsageError(f"size is an int or (height, width), got {size!r}")
    if min(hw) < MIN_SIZE:
        raise UsageError(f"size must be at least {MIN_SIZE} pixels, got {hw[0]}x{hw[1]}")
    if max(hw) > MAX_SIZE:
        raise UsageError(f"size must be at most {MAX_SIZE} pixels, got {hw[0]}x{hw[1]}")
    return hw


def _check_count(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise UsageError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def clip_rng(seed: int, split: str, index: int | None = None) -> np.random.Generator:
    """The generator of one clip, derived from (seed, split, index)."""
    entropy = [int(seed), _SPLIT_CODE[split]] + ([] if index is None else [int(index)])
    return np.random.default_rng(np.random.SeedSequence(entropy))


def _sample_objects(rng: np.random.Generator, params: SplitParams, frames: int, height: int,
                    width: int) -> list[_Object]:
    """Targets and distractors with their motion, in depth order (first drawn first)."""
    unit = float(min(height, width))
    n_targets = int(rng.integers(1, MAX_TARGETS + 1))
    names = list(COLOURS)
    colours = [names[i] for i in rng.choice(len(names), n_targets, replace=False)]
    targets = [
        _new_object(rng, i + 1, str(rng.choice(SHAPES)), colours[i], rng.uniform(*params.radius) * unit)
        for i in range(n_targets)
    ]
    distractors = []
    for _ in range(int(rng.integers(params.distractors[0], params.distractors[1] + 1))):
        ref = targets[int(rng.integers(n_targets))]
        u = rng.random()
        if u < params.p_same_both:
            shape, colour = ref.shape, ref.colour
        elif u < params.p_same_both + (1 - params.p_same_both) / 2:
            shape = str(rng.choice([s for s in SHAPES if s != ref.shape]))
            colour = ref.colour
        else:
            shape = ref.shape
            colour = str(rng.choice([c for c in names if c != ref.colour]))
        distractors.append(_new_object(rng, 0, shape, colour, rng.uniform(*params.radius) * unit))

    size = np.array([width, height], dtype=np.float64)
    lo, hi = -params.exit_margin * size, (1 + params.exit_margin) * size
    for obj in targets:
        _animate(rng, obj, frames, params, unit, rng.uniform(0.2, 0.8, 2) * size, lo, hi)
    for obj in distractors:
        _animate(rng, obj, frames, params, unit, rng.uniform(0.0, 1.0, 2) * size, lo, hi)

    order: list[_Object] = [*targets, *distractors]
    order = [order[i] for i in rng.permutation(len(order))]
    # Occluders: another object passes over a target mid-clip (moved just above it in depth).
    if frames > 1:
        for target in targets:
            if rng.random() >= params.p_cross:
                continue
            others = [o for o in order if o is not target]
            if not others:
                continue
            occ = others[int(rng.integers(len(others)))]
            t_c = int(rng.integers(1, frames))
            # It follows the target and drifts across it: centre on centre at t_c, apart by the sum
            # of both radii about cross_frames / 2 frames before and after.
            a = rng.uniform(0, 2 * np.pi)
            rel = 2 * (target.radius + occ.radius) / rng.uniform(*params.cross_frames)
            steps = (np.arange(frames) - t_c)[:, None]
            occ.pos = target.pos + steps * rel * np.array([np.cos(a), np.sin(a)])
            order.remove(occ)
            order.insert(order.index(target) + 1, occ)
    return order


def _first_frame_ok(order: list[_Object], height: int, width: int) -> bool:
    """Every target visible in frame 0 with MIN_FIRST_FRAME_AREA of the image and half its own area."""
    ids = np.zeros((height, width), dtype=np.uint8)
    drawn = {}
    for obj in order:
        area = _draw(obj, 0, None, ids, np.zeros(2))
        if obj.obj_id:
            drawn[obj.obj_id] = area
    visible = np.bincount(ids.ravel(), minlength=MAX_TARGETS + 1)
    floor = MIN_FIRST_FRAME_AREA * height * width
    return all(visible[i] >= max(floor, 0.5 * area) for i, area in drawn.items())


@dataclass(eq=False)
class _Scene:
    """Everything a clip is drawn from: the background, camera, objects (depth order) and effects."""

    height: int
    width: int
    background: np.ndarray          # (H + 2m, W + 2m, 3) uint8
    pan: np.ndarray                 # (T, 2) int window offsets x, y
    objects: list[_Object]          # back to front
    gain: np.ndarray                # (T, 3) float32 per-channel gain of the light and colour cast
    bias: np.ndarray                # (3,) float32
    blur: list[tuple[str, float] | None]  # per frame: (kind, radius) or None

    @property
    def frames(self) -> int:
        return len(self.pan)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def _scene(seed: int, split: str, frames: int, height: int, width: int, index: int | None) -> _Scene:
    params = _SPLIT_PARAMS[split]
    rng = clip_rng(seed, split, index)
    unit = float(min(height, width))

    margin = max(4, int(np.ceil(params.pan * unit * 3)))
    bg_h, bg_w = height + 2 * margin, width + 2 * margin
    if rng.random() < params.p_photo:
        background = _photo_background(rng, bg_h, bg_w)
    else:
        background = _procedural_background(rng, bg_h, bg_w)
    pan = _pan(rng, frames, margin, params.pan * unit)

    for _ in range(200):
        objects = _sample_objects(rng, params, frames, height, width)
        if _first_frame_ok(objects, height, width):
            break
    else:  # pragma: no cover - the ranges above make this practically unreachable
        raise RuntimeError(f"no layout with every target visible in frame 0 (seed {seed}, {split})")

    # The light changes over time; a colour cast (white balance, exposure) holds for the clip.
    amp, phase, period = rng.uniform(0, params.light), rng.uniform(0, 2 * np.pi), rng.uniform(6, 30)
    light = 1 + amp * np.sin(2 * np.pi * np.arange(frames) / period + phase)
    cast = rng.uniform(0.8, 1.15) * rng.uniform(0.92, 1.08, 3)
    gain = (light[:, None] * cast[None, :]).astype(np.float32)
    bias = (rng.uniform(-12, 12, 3) + 0.5).astype(np.float32)  # + 0.5: the uint8 cast truncates
    blur: list[tuple[str, float] | None] = [None] * frames
    if rng.random() < params.p_blur:
        # PIL's Gaussian costs ~3 box blurs (~10 ms at 512 px): the cheaper box is the common kind.
        kind = "gaussian" if rng.random() < 1 / 3 else "box"
        base = rng.uniform(0.3, 1.0) * params.max_blur * unit / 512
        # Blur comes and goes within a blurred clip (a camera refocusing, a shake).
        on = rng.random(frames) < 0.5
        radius = base * rng.uniform(0.5, 1.5, frames)
        blur = [(kind, float(r)) if o and (kind == "gaussian" or r >= 0.5) else None
                for o, r in zip(on, radius)]
    return _Scene(height=height, width=width, background=background, pan=pan, objects=objects,
                  gain=gain, bias=bias, blur=blur)


def _render(scene: _Scene, t: int, frame: np.ndarray, ids: np.ndarray) -> None:
    """Draw frame ``t`` before lighting and blur: ``frame`` (H, W, 3 uint8) and ``ids`` (H, W uint8,
    zeroed) are written in place."""
    ox, oy = scene.pan[t]
    frame[...] = scene.background[oy:oy + scene.height, ox:ox + scene.width]
    offset = (scene.pan[t] - scene.pan[0]).astype(np.float64)  # objects live in the world, not the view
    pixels = _pixels(frame)
    for obj in scene.objects:
        _draw(obj, t, pixels, ids, offset)


def _apply_effects(scene: _Scene, t: int, frame: np.ndarray, scratch: np.ndarray) -> None:
    """Lighting (per-channel gain and bias) and blur of frame ``t``, in place; ``scratch`` is a float32
    buffer of the frame's shape."""
    from PIL import Image, ImageFilter

    # Rows of W * 3 values: a per-channel (3,) operand would make numpy's inner loop 3 long (~5x slower).
    rows = frame.reshape(scene.height, scene.width * 3)
    work = scratch.reshape(rows.shape)
    np.multiply(rows, np.tile(scene.gain[t], scene.width), out=work)
    work += np.tile(scene.bias, scene.width)
    np.clip(work, 0, 255, out=work)
    np.copyto(rows, work, casting="unsafe")
    if scene.blur[t] is not None:
        kind, radius = scene.blur[t]
        blur = ImageFilter.GaussianBlur(radius) if kind == "gaussian" else ImageFilter.BoxBlur(radius)
        frame[...] = np.asarray(Image.fromarray(frame).filter(blur))


def make_clip(seed: int, *, split: str = "train", frames: int | None = None,
              size: int | tuple[int, int] = 512, index: int | None = None) -> SynthClip:
    """Generate one clip, fixed by (seed, split, index).

    frames: clip length (default: 8 for train, 24 for hard). size: side of a square frame or
    (height, width). index: the clip's number in a data set (part of its seed and its name:
    ``<split>_<index:05d>``, else ``<split>_seed<seed>``).
    Returns a :class:`SynthClip` with frames (T, H, W, 3) uint8 and masks (T, H, W) uint8.
    """
    _check_split(split)
    frames = DEFAULT_FRAMES[split] if frames is None else _check_count("frames", frames, 1)
    height, width = _check_size(size)
    seed = _check_seed(seed)
    if index is not None:
        index = _check_count("index", index, 0)
    scene = _scene(seed, split, frames, height, width, index)
    out_frames = np.empty((frames, height, width, 3), dtype=np.uint8)
    out_masks = np.zeros((frames, height, width), dtype=np.uint8)
    scratch = np.empty((height, width, 3), dtype=np.float32)
    for t in range(frames):
        _render(scene, t, out_frames[t], out_masks[t])
        _apply_effects(scene, t, out_frames[t], scratch)
    targets = sorted((o for o in scene.objects if o.obj_id), key=lambda o: o.obj_id)
    name = f"{split}_{index:05d}" if index is not None else f"{split}_seed{seed}"
    return SynthClip(frames=out_frames, masks=out_masks, labels={o.obj_id: o.label for o in targets},
                     name=name)


# -- data sets --------------------------------------------------------------------------------------
def write_clip(clip: SynthClip, root: Path) -> None:
    """Write one clip into the DAVIS folders under ``root``: JPEGImages/<name>/00000.jpg ... (quality
    :data:`JPEG_QUALITY`) and Annotations/<name>/00000.png ... (indexed, DAVIS palette, pixel = id)."""
    from PIL import Image

    from .output import save_indexed_png

    images = root / "JPEGImages" / clip.name
    annos = root / "Annotations" / clip.name
    images.mkdir(parents=True, exist_ok=True)
    annos.mkdir(parents=True, exist_ok=True)
    for t in range(clip.frames.shape[0]):
        Image.fromarray(clip.frames[t]).save(images / f"{t:05d}.jpg", quality=JPEG_QUALITY)
        save_indexed_png(annos / f"{t:05d}.png", clip.masks[t])


def write_dataset(out: Path, *, videos: int, frames: int | None, seed: int, split: str = "train",
                  size: int | tuple[int, int] = 512, overwrite: bool = False) -> Path:
    """Generate ``videos`` clips into ``out`` (DAVIS layout, read by ``fastsam2 eval --run``), atomically.

    Clip i is ``make_clip(seed, split=split, frames=frames, size=size, index=i)``, named
    ``<split>_<i:05d>``. Besides the frames and annotations, ``labels.json`` ({video: {id: label}}) and
    ``meta.json`` (generator version, arguments). Frames are JPEG (lossy); annotations are exact.
    Returns ``out``.
    """
    from .manifest import fastsam2_version
    from .outdir import atomic_output_dir

    _check_split(split)
    videos = _check_count("videos", videos, 1)
    # eval scores frames 1..T-2 of a DAVIS sequence, so a data set clip has at least 3.
    frames = DEFAULT_FRAMES[split] if frames is None else _check_count("frames", frames, 3)
    height, width = _check_size(size)
    seed = _check_seed(seed)
    labels: dict[str, dict[str, str]] = {}
    with atomic_output_dir(out, overwrite=overwrite, kind="synth") as tmp:
        for i in range(videos):
            clip = make_clip(seed, split=split, frames=frames, size=(height, width), index=i)
            write_clip(clip, tmp)
            labels[clip.name] = {str(k): v for k, v in clip.labels.items()}
        (tmp / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
        meta = {
            "generator": "fastsam2.runtime.synth", "generator_version": GENERATOR_VERSION,
            "fastsam2_version": fastsam2_version(), "seed": int(seed), "split": split,
            "videos": videos, "frames": frames, "height": height, "width": width,
            "jpeg_quality": JPEG_QUALITY,
            "clip": "make_clip(seed, split=split, frames=frames, size=(height, width), index=i)",
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return Path(out)
